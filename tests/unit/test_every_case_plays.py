"""Every case plays end to end, the way a student would play it, with the scripted patient.

For every case of the library (cases/): one question per history-taking intent
from the shared bank, each answered in words with no answer-key term in them; every exam
and test ordered; then the key submitted, and a wrong answer on the same work-up. The key
must score above the wrong answer, and the wrong answer must not be called correct.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arena.attempt import Answered, Attempt
from arena.cases import Case, load_case
from arena.guard import OutputGuard, guard_terms
from arena.intents import INTENTS, bank
from arena.matching import QuestionMatcher
from arena.patient import ScriptedPatient, patient_view
from arena.scoring import score
from arena.secrecy import leaks

ROOT = Path(__file__).resolve().parents[2]
PATHS = sorted((ROOT / "cases").glob("*.json"))
WRONG = "上呼吸道感染"  # a diagnosis no case here has, nor a differential of the key


def _questions() -> list[str]:
    """The first paraphrase of each intent in the shared bank (none is a case's own)."""
    first: dict[str, str] = {}
    for row in bank():
        first.setdefault(row.intent, row.text)
    return [first[i] for i in INTENTS if i in first]


QUESTIONS = _questions()


def _case(path: Path) -> Case:
    return load_case(path.read_bytes(), str(path))


def test_the_set_is_large_enough_to_mean_something() -> None:
    assert len(PATHS) >= 39 and len(QUESTIONS) >= 40


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_the_case_plays_end_to_end(path: Path) -> None:
    case = _case(path)
    assert leaks(case) == [], "the case shows its answer key before play"
    names = {case.answer_key.diagnosis.name, *(d.name for d in case.answer_key.differentials)}
    assert WRONG not in names
    matcher = QuestionMatcher(case.facts, None)
    patient = ScriptedPatient(patient_view(case), matcher)
    attempt = Attempt(case, matcher, started_at=0.0)
    terms = guard_terms(case)  # once per case, as the relay keeps them
    now = 1.0
    for question in QUESTIONS:
        asked = attempt.ask(question, now)
        attempt.apply(asked)
        reply = patient.reply(question, attempt.transcript)
        assert reply.text.strip(), question
        guard = OutputGuard(terms, allowed_text=question)
        shown = guard.feed(reply.text) + guard.flush()
        assert guard.leak is None, f"{question} -> {reply.text} names {guard.leak}"
        assert shown == reply.text
        attempt.apply(attempt.matched(asked.turn, attempt.match(asked.turn)))
        attempt.apply(attempt.answered(asked.turn, Answered(
            turn=asked.turn, text=reply.text, status="ok", engine="scripted")))
        now += 10
    for item in (*case.exams, *case.tests):
        placed, got = attempt.order(item.id, now)
        attempt.apply(placed)
        assert got.result.strip(), item.id
    assert len(attempt.ordered_ids) == len(case.exams) + len(case.tests)
    assert any(q.fact_ids for q in attempt.questions), "no question reached a fact"

    key = case.answer_key
    right = attempt.submit(key.diagnosis.name, [d.name for d in key.differentials[:3]],
                           "", now)
    good = score(case, attempt.questions, attempt.ordered_ids, right.submission())
    wrong = attempt.submit(WRONG, [], "", now)
    bad = score(case, attempt.questions, attempt.ordered_ids, wrong.submission())
    assert good.verdict == "correct", good
    assert bad.verdict != "correct", bad
    assert good.total > bad.total, (good.total, bad.total)
