from __future__ import annotations

import msgspec
import pytest

from arena.attempt import (
    Answered,
    Asked,
    Attempt,
    AttemptEvent,
    Matched,
    Submitted,
    decode_attempt_event,
    event_kind,
)
from arena.errors import (
    AlreadySubmitted,
    BadRequest,
    DeadlinePassed,
    RoundNotRunning,
    TurnInProgress,
    UnknownOrder,
)
from arena.matching import QuestionMatcher
from tests.unit.sample import sample_case


def make(deadline: float | None = None) -> Attempt:
    case = sample_case()
    return Attempt(case, QuestionMatcher(case.facts), started_at=100.0, deadline=deadline)


def do(a: Attempt, event: AttemptEvent) -> AttemptEvent:
    """Apply what was decided, as the server does once the event is durable."""
    a.apply(event)
    return event


def test_question_is_matched_after_it_is_recorded_and_blocks_until_answered() -> None:
    a = make()
    asked = do(a, a.ask("胸口痛多久了？", now=101))
    assert isinstance(asked, Asked)
    assert asked.turn == 1 and asked.fact_ids is None and a.unmatched == [1]
    matched = do(a, a.matched(1, a.match(1)))
    assert isinstance(matched, Matched)
    assert "onset" in matched.fact_ids and a.unmatched == []
    assert "onset" in a.asked_fact_ids
    with pytest.raises(TurnInProgress):
        a.ask("还有别的吗", now=102)
    do(a, a.answered(1, Answered(turn=1, text="两个小时", status="ok", engine="scripted")))
    assert [t.answer for t in a.transcript] == ["两个小时"]
    assert a.ask("抽烟吗", now=103).turn == 2


def test_deciding_changes_nothing_until_the_event_is_applied() -> None:
    # Principle 10: what the log refused never happened, so there is nothing to take back.
    a = make()
    a.ask("胸口痛多久了？", now=101)
    a.order("ecg", now=102)
    a.submit("心肌梗死", [], "", now=103)
    assert a.questions == [] and a.pending_turn is None
    assert a.orders == [] and a.submission is None and a.submissions_left == 1
    sub = do(a, a.submit("心肌梗死", [], "", now=104))
    assert a.submission is not None and a.submission.at == 104
    assert isinstance(sub, Submitted)


def test_the_same_fold_rebuilds_an_attempt_from_its_log() -> None:
    live = make()
    log: list[tuple[str, dict[str, object], float]] = []
    for event in (live.ask("抽烟吗？", now=101),):
        do(live, event)
        log.append((event_kind(event), msgspec.to_builtins(event), 101.0))
    for event in (live.answered(1, Answered(turn=1, text="抽", status="ok", engine="llm")),
                  live.matched(1, live.match(1)), live.order("ecg", now=103)[0],
                  live.submit("心肌梗死", ["主动脉夹层"], "", now=104)):
        do(live, event)
        log.append((event_kind(event), msgspec.to_builtins(event), 105.0))
    log.append(("scored", {"total": 1}, 105.0))  # not an attempt event: ignored
    rebuilt = make().rebuild(log)
    assert rebuilt.questions == live.questions and rebuilt.transcript == live.transcript
    assert rebuilt.orders == live.orders and rebuilt.submission == live.submission
    assert rebuilt.submissions_left == 0 and decode_attempt_event("scored", {}) is None


def test_failed_answer_stays_out_of_the_transcript() -> None:
    a = make()
    do(a, a.ask("胸口痛多久了？", now=101))
    do(a, a.answered(
        1, Answered(turn=1, text="两个", status="failed", engine="llm", error="timeout")))
    assert a.transcript == [] and a.pending_turn is None


def test_bad_questions_are_refused() -> None:
    a = make()
    with pytest.raises(BadRequest):
        a.ask("   ", now=101)
    with pytest.raises(BadRequest):
        a.ask("痛" * 501, now=101)


def test_orders_come_from_the_case_and_unknown_ones_are_refused() -> None:
    a = make()
    placed, item = a.order("ecg", now=101)
    assert placed.kind == "test" and "ST" in item.result
    do(a, placed)
    do(a, a.order("ecg", now=102)[0])
    assert a.ordered_ids == ["ecg"]
    with pytest.raises(UnknownOrder):
        a.order("mri_brain", now=103)


def test_submit_once_and_nothing_after() -> None:
    a = make()
    do(a, a.submit("心肌梗死", ["主动脉夹层"], "胸痛+ST抬高", now=110))
    with pytest.raises(AlreadySubmitted):
        a.submit("心肌梗死", [], "", now=111)
    with pytest.raises(RoundNotRunning):
        a.ask("还痛吗", now=112)
    with pytest.raises(BadRequest):
        make().submit("  ", [], "", now=110)


def test_deadline_is_enforced_with_the_injected_clock() -> None:
    a = make(deadline=200.0)
    do(a, a.ask("胸口痛多久了？", now=199.9))
    with pytest.raises(DeadlinePassed):
        a.order("ecg", now=200.1)
    with pytest.raises(DeadlinePassed):
        a.submit("心肌梗死", [], "", now=200.1)


def test_a_follow_up_is_matched_against_the_turn_before_it() -> None:
    a = make()
    do(a, a.ask("抽烟吗？", now=101))
    do(a, a.answered(1, Answered(turn=1, text="抽", status="ok", engine="llm")))
    do(a, a.ask("一天几根？", now=102))
    # Matched in turn order, as the server's background matcher does.
    do(a, a.matched(1, a.match(1)))
    assert a.topic(2) == a.questions[0].fact_ids
    assert a.matched(2, a.match(2)).fact_ids[:1] == ("smoking",)


def test_replay_reads_matches_from_either_event() -> None:
    old, new = make(), make()
    # Logs from before matching moved out of `ask` carry the facts in "asked".
    old.replay("asked", {"turn": 1, "text": "抽烟吗", "fact_ids": ["smoking"]}, at=101)
    assert old.questions[0].fact_ids == ("smoking",) and old.unmatched == []
    new.replay("asked", {"turn": 1, "text": "抽烟吗"}, at=101)
    assert new.unmatched == [1]
    new.replay("matched", {"turn": 1, "fact_ids": ["smoking"]}, at=101.2)
    assert new.questions[0].fact_ids == ("smoking",) and new.unmatched == []
