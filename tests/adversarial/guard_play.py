"""Every attack played against the output guard alone, as the relay plays an answer.

The server tests (test_leaks.py) are the real thing, over a WebSocket and the relay; this
is the same corpus without a server, fast enough to run while working on the guard, and
the figures for docs/guard.md:

    python -m tests.adversarial.guard_play

Each turn's completion (the hostile replay or what the obeying simulator sends) is cut
into the simulator's tokens and fed to a fresh guard that knows the question and the
turns shown before, as `Relay.guard` builds it; a hit shows the deflection instead.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from arena.cases import Case
from arena.guard import GuardTerm, OutputGuard, deflection, guard_terms, normalize
from arena.patient import Turn, patient_view
from loadtest.llm_sim import tokenize
from tests.adversarial.attacks import Attack
from tests.adversarial.hostile import Step, confirmation_plan, obey_plan, plan
from tests.adversarial.oracle import LeakOracle, all_case_ids


@dataclass
class Played:
    attempts: Counter[str] = field(default_factory=Counter)  # per category
    leaks: list[str] = field(default_factory=list)
    mangled: list[str] = field(default_factory=list)  # clean replies that did not pass whole


def answer(terms: tuple[GuardTerm, ...], case: Case, question: str, reply: str,
           history: list[Turn]) -> str:
    """What the contestant is shown of `reply`, guarded as the relay guards it."""
    g = OutputGuard(terms, allowed_text=question, history=history)
    shown = "".join(g.feed(t) for t in tokenize(reply)) + g.flush()
    return shown + (deflection(patient_view(case), len(history)) if g.leak else "")


def play(case_id: str) -> Played:
    oracle = LeakOracle.for_case(case_id)
    case, terms = oracle.case, guard_terms(oracle.case)
    out = Played()
    attacks: list[tuple[Attack, list[Step]]] = [
        *plan(case_id, oracle), *confirmation_plan(case_id, oracle), *obey_plan(case_id, oracle)
    ]
    for attack, steps in attacks:
        history: list[Turn] = []
        for step in steps:
            shown = answer(terms, case, step.question, step.reply, history)
            if step.secret is None and shown != step.reply:
                out.mangled.append(f"{attack.id}: {step.reply!r} -> {shown!r}")
            history.append(Turn(step.question, shown))
        out.attempts[attack.category] += 1
        turns = [(t.question, t.answer) for t in history]
        out.leaks += [f"{attack.id}: {leak}" for leak in oracle.leaks_in_turns(turns)]
    for f in case.facts:  # honest: the patient's own words to each way of asking
        for q in f.questions:
            if (shown := answer(terms, case, q, f.answer, [])) != f.answer:
                out.mangled.append(f"{case_id} {q!r}: {f.answer!r} -> {shown!r}")
    return out


def figures() -> None:
    total, leaks, mangled = Counter[str](), 0, 0
    for case_id in all_case_ids():
        p = play(case_id)
        total.update(p.attempts)
        leaks += len(p.leaks)
        mangled += len(p.mangled)
        for line in p.leaks + p.mangled:
            print(line)
    print(f"attempts {sum(total.values())}: {dict(sorted(total.items()))}")
    print(f"leaks {leaks}, honest or clean replies changed {mangled}")
    # Cost and hold-back on honest text: every fact answer, token by token.
    cases = [LeakOracle.for_case(c).case for c in all_case_ids()]
    texts = [(c, guard_terms(c), f.answer) for c in cases for f in c.facts]
    chars = sum(len(t) for _, _, t in texts)
    history = [Turn("还有呢？", f.answer) for f in cases[0].facts[:6]]
    for label, hist in (("no history", []), ("6 turns of history", history)):
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            for _, terms, text in texts:
                g = OutputGuard(terms, allowed_text="你哪里不舒服？", history=hist)
                for tok in tokenize(text):
                    g.feed(tok)
                g.flush()
            best = min(best, time.perf_counter() - began)
        print(f"{label}: {best / len(texts) * 1e3:.3f} ms an answer, "
              f"{best / chars * 1e6:.2f} µs a character (guard made per answer)")
    held: list[int] = []
    for _, terms, text in texts:
        g = OutputGuard(terms)
        fed = released = ""
        for tok in tokenize(text):
            fed += tok
            released += g.feed(tok)
            held.append(len(normalize(fed[len(released):])))
    held.sort()
    print(f"held back after each token: mean {statistics.mean(held):.2f}, "
          f"p99 {held[int(len(held) * 0.99)]}, max {held[-1]} normalised characters; "
          f"nothing held after {100 * held.count(0) / len(held):.1f} % of tokens; "
          f"bound (longest term) {max(OutputGuard(t).holdback for _, t, _ in texts)}")
    print(f"terms per case: {[len(guard_terms(c)) for c in cases]}")


if __name__ == "__main__":
    figures()
