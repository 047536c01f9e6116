"""Evaluation of diagnosis scoring on the hand-written set in tests/scoring_eval/.

Each row is (key_name, key_icd10, answer, expected verdict), written from clinical
knowledge, not from the rules. `tune.tsv` is the part the rules were tuned on;
`holdout.tsv` was written first and not looked at while tuning (principle 11);
`fresh.tsv` was written after the rules were frozen, outside the terminology's
vocabulary on purpose (docs/scoring.md says what each measures).
The key is the bare name and ICD-10 code (no case synonyms), so the shared
terminology does all the work.

Printed per part: rows, diagnoses, agreement (verdict == expected), false-correct
(scored "correct" where a judge would not: the number that must be 0), and the
disagreements with --show.

    .venv/bin/python -m loadtest.scoring_eval [--show] [--part tune]
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from arena.cases import Diagnosis
from arena.scoring import judge_against

SETS = Path(__file__).resolve().parents[1] / "tests" / "scoring_eval"
PARTS = ("tune", "holdout", "fresh")
VERDICTS = ("correct", "partial", "needs_judge", "wrong")


@dataclass(frozen=True)
class Row:
    key_name: str
    key_icd10: str
    answer: str
    expected: str


@dataclass
class Report:
    part: str
    rows: int = 0
    agree: int = 0
    false_correct: list[tuple[Row, str]] = field(default_factory=list)
    misses: list[tuple[Row, str, str]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    must_not_be_correct: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def agreement(self) -> float:
        return self.agree / self.rows if self.rows else 0.0


def load(part: str) -> list[Row]:
    with (SETS / f"{part}.tsv").open(encoding="utf-8", newline="") as f:
        rows = [Row(r["key_name"], r["key_icd10"], r["answer"], r["expected"])
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    bad = [r for r in rows if r.expected not in VERDICTS]
    if bad:
        raise ValueError(f"{part}.tsv: unknown expected verdict in {bad[0]}")
    return rows


def evaluate(part: str) -> Report:
    report = Report(part)
    for row in load(part):
        verdict, why = judge_against(row.answer, Diagnosis(name=row.key_name,
                                                           icd10=row.key_icd10))
        report.rows += 1
        report.keys.add(row.key_name)
        report.must_not_be_correct += row.expected != "correct"
        report.confusion[(row.expected, verdict)] += 1
        if verdict == row.expected:
            report.agree += 1
        else:
            report.misses.append((row, verdict, why))
            if verdict == "correct":
                report.false_correct.append((row, why))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--show", action="store_true", help="print every disagreement")
    ap.add_argument("--part", choices=PARTS, action="append",
                    help="evaluate only this part (tuning looks at tune alone)")
    args = ap.parse_args()
    for part in args.part or PARTS:
        r = evaluate(part)
        print(f"{part}: {r.rows} rows over {len(r.keys)} diagnoses, "
              f"{r.must_not_be_correct} must not be correct; agreement {r.agree}/{r.rows} "
              f"= {r.agreement:.1%}; false-correct {len(r.false_correct)}")
        print("  expected -> scored: " + ", ".join(
            f"{e}->{v} {n}" for (e, v), n in sorted(r.confusion.items()) if e != v))
        if args.show:
            for row, verdict, why in r.misses:
                print(f"  {row.key_name} | {row.answer} | expected {row.expected}, "
                      f"scored {verdict}: {why}")


if __name__ == "__main__":
    main()
