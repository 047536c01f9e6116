"""The output guard's cost per question and per token, with and without earlier turns.

The relay builds one `OutputGuard` per answer and feeds it every token; since it reads
the answers already shown (a diagnosis spelled a letter per answer), building one costs
more the longer the history. The baseline in the same run is the guard without history.

    .venv/bin/python -m loadtest.guard_bench [--case r8c3vn] [--runs 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from arena.cases import load_case
from arena.guard import OutputGuard, guard_terms
from arena.patient import Turn
from loadtest.llm_sim import DEFAULT_REPLY, tokenize

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ("胸口痛多久了？", "疼痛往哪里放射？", "以前有高血压吗？")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="r8c3vn")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    case = load_case((ROOT / "cases" / f"{args.case}.json").read_bytes(), args.case)
    terms = guard_terms(case)
    tokens = tokenize(DEFAULT_REPLY)
    history = [Turn(q, DEFAULT_REPLY) for q in QUESTIONS]
    print(f"case {args.case}: {len(terms)} guard terms; {len(tokens)} tokens per answer")
    for turns in (0, 1, 3):
        shown = history[:turns]
        start = time.perf_counter()
        for _ in range(args.runs):
            OutputGuard(terms, allowed_text=QUESTIONS[-1], history=shown)
        build = (time.perf_counter() - start) / args.runs
        start = time.perf_counter()
        for _ in range(args.runs):
            guard = OutputGuard(terms, allowed_text=QUESTIONS[-1], history=shown)
            for token in tokens:
                guard.feed(token)
            guard.flush()
        whole = (time.perf_counter() - start) / args.runs
        print(f"{turns} earlier turns: new guard {build * 1e6:7.1f} us, "
              f"per token {(whole - build) / len(tokens) * 1e6:5.2f} us")


if __name__ == "__main__":
    main()
