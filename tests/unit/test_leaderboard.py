from __future__ import annotations

import math

import msgspec
import pytest

from arena.leaderboard import (
    Board,
    Entry,
    Row,
    frozen_view,
    live_view,
    progress_view,
    rank,
    reveal_steps,
)


def e(attempt_id: str, score: float | None = None, *, at: float | None = None,
      elapsed: float | None = 300.0, cost: float = 0.0, q: int = 0, o: int = 0,
      name: str | None = None) -> Entry:
    if score is not None and at is None:
        at = 100.0
    return Entry(attempt_id=attempt_id, name=name or attempt_id, score=score, submitted_at=at,
                 elapsed_s=elapsed if at is not None else None, cost_yuan=cost, questions=q,
                 orders=o)


def order(rows: tuple[Row, ...]) -> list[str]:
    return [r.attempt_id for r in rows]


def ranks(rows: tuple[Row, ...]) -> list[int | None]:
    return [r.rank for r in rows]


def test_scored_first_by_score_then_unscored() -> None:
    rows = rank([e("c", 70.0), e("u", q=3), e("a", 90.0), e("b", 80.0)])
    assert order(rows) == ["a", "b", "c", "u"]
    assert ranks(rows) == [1, 2, 3, None]
    assert rows[0].score == 90.0 and rows[0].submitted and not rows[0].pending
    assert not rows[3].submitted and rows[3].score is None


def test_equal_score_less_play_time_wins() -> None:
    rows = rank([e("slow", 80.0, elapsed=500.0), e("fast", 80.0, elapsed=200.0),
                 e("unknown", 80.0, elapsed=None)])
    assert order(rows) == ["fast", "slow", "unknown"] and ranks(rows) == [1, 2, 3]


def test_equal_score_and_time_lower_cost_wins() -> None:
    rows = rank([e("dear", 80.0, cost=900.0), e("cheap", 80.0, cost=120.0)])
    assert order(rows) == ["cheap", "dear"] and ranks(rows) == [1, 2]


def test_score_beats_time_and_cost() -> None:
    rows = rank([e("fast", 79.99, elapsed=10.0, cost=0.0), e("good", 80.0, elapsed=999.0,
                                                               cost=5000.0)])
    assert order(rows) == ["good", "fast"]


def test_full_ties_share_a_rank_and_are_listed_by_name() -> None:
    rows = rank([e("4", 60.0, name="丁"), e("2b", 80.0, name="乙"), e("1", 90.0, name="甲"),
                 e("2a", 80.0, name="丙")])
    assert ranks(rows) == [1, 2, 2, 4]
    assert [r.name for r in rows] == ["甲", "丙", "乙", "丁"]  # 丙 U+4E19 sorts before 乙 U+4E59


def test_unscored_by_progress_then_name() -> None:
    rows = rank([e("x", q=1, o=1, name="Xu"), e("y", q=5, name="Yang"),
                 e("a", q=0, o=2, name="An"), e("s", at=150.0, q=1, name="Sun")])
    assert order(rows) == ["y", "a", "x", "s"]
    assert ranks(rows) == [None] * 4
    waiting = rows[3]  # submitted, waiting for its score: submitted but unranked
    assert waiting.submitted and waiting.rank is None and waiting.score is None


def test_duplicate_attempts_are_refused() -> None:
    with pytest.raises(ValueError):
        rank([e("a", 1.0), e("a", 2.0)])


def test_live_view_shows_everything() -> None:
    board = live_view([e("a", 90.0, at=650.0), e("b", 80.0, at=100.0)])
    assert board == Board(rows=rank([e("a", 90.0, at=650.0), e("b", 80.0, at=100.0)]),
                          frozen=False)
    assert not any(r.pending for r in board.rows)


FREEZE = 590.0
ENTRIES = [
    e("early", 70.0, at=300.0, q=4, o=2),
    e("late_top", 95.0, at=600.0, q=9, o=3),   # post-freeze, best score
    # Scored 60 at 400, resubmitted at 650: the entry carries the latest, so all of it hides.
    e("resub", 85.0, at=650.0, q=6, o=1),
    e("late_low", 40.0, at=FREEZE, q=2, o=0),  # exactly at the freeze counts as after it
    e("before", 80.0, at=589.9, q=5, o=5),
    e("playing", q=3, o=0),
]


def test_frozen_view_hides_results_submitted_during_the_freeze() -> None:
    board = frozen_view(ENTRIES, FREEZE)
    assert board.frozen
    assert order(board.rows) == ["before", "early", "late_top", "resub", "playing", "late_low"]
    assert ranks(board.rows) == [1, 2, None, None, None, None]
    pending = {r.attempt_id for r in board.rows if r.pending}
    assert pending == {"late_top", "resub", "late_low"}
    for r in board.rows:
        if r.pending:
            assert r.score is None and r.rank is None and r.submitted
    assert next(r for r in board.rows if r.attempt_id == "playing").submitted is False


def test_reveal_goes_bottom_up_and_ends_at_the_live_board() -> None:
    steps = reveal_steps(ENTRIES, FREEZE)
    assert [s.attempt_id for s in steps] == ["late_low", "resub", "late_top"]
    assert [s.score for s in steps] == [40.0, 85.0, 95.0]
    assert [s.board.frozen for s in steps] == [True, True, False]
    first = steps[0].board
    assert order(first.rows) == ["before", "early", "late_low", "late_top", "resub", "playing"]
    assert ranks(first.rows) == [1, 2, 3, None, None, None]
    assert steps[-1].board == live_view(ENTRIES)
    assert order(steps[-1].board.rows)[:4] == ["late_top", "resub", "before", "early"]


def test_each_reveal_step_unfreezes_the_lowest_pending_row() -> None:
    board = frozen_view(ENTRIES, FREEZE)
    for step in reveal_steps(ENTRIES, FREEZE):
        lowest = [r.attempt_id for r in board.rows if r.pending][-1]
        assert step.attempt_id == lowest
        board = step.board


def test_nothing_to_reveal_without_submissions_in_the_freeze() -> None:
    entries = [e("a", 50.0, at=10.0), e("b", q=1)]
    assert reveal_steps(entries, FREEZE) == []
    assert frozen_view(entries, FREEZE).rows == live_view(entries).rows


def test_progress_view_shows_no_score_and_never_orders_by_one() -> None:
    entries = [e("top", 95.0, q=1), e("low", 10.0, q=4, o=1), e("mid", 50.0, q=1),
               e("idle"), e("busy", q=2, o=3, name="busy")]
    board = progress_view(entries)
    assert board.progress_only and not board.frozen
    assert all(r.score is None and r.rank is None and not r.pending for r in board.rows)
    assert order(board.rows) == ["busy", "low", "mid", "top", "idle"]  # progress, then name
    assert [r.submitted for r in board.rows] == [False, True, True, True, False]
    # The same progress with other scores gives the same board: nothing to infer.
    swapped = [msgspec.structs.replace(x, score=100.0 - (x.score or 0)) if x.score else x
               for x in entries]
    assert progress_view(swapped) == board
    assert not live_view(entries).progress_only
    with pytest.raises(ValueError):
        progress_view([e("a"), e("a")])


def test_reveal_from_a_progress_board_reveals_every_submission() -> None:
    entries = [e("a", 90.0, q=1), e("b", 40.0, q=5), e("c", q=9)]
    steps = reveal_steps(entries, -math.inf)
    assert [s.attempt_id for s in steps] == ["a", "b"]  # the lowest pending row first
    assert steps[0].board.frozen and not steps[-1].board.frozen
    assert steps[-1].board == live_view(entries)


def test_a_long_reveal_unfreezes_all_but_the_top_at_once() -> None:
    entries = [e(f"p{i:02d}", float(i), q=i % 3) for i in range(15)] + [e("idle")]
    steps = reveal_steps(entries, -math.inf, one_by_one=4)
    assert len(steps) == 5 and steps[0].attempt_id == ""
    first = {r.attempt_id: r for r in steps[0].board.rows}
    # Everyone who ends outside the top four is revealed at once; the top four stay hidden.
    assert {a for a, r in first.items() if r.pending} == {"p14", "p13", "p12", "p11"}
    assert first["p10"].score == 10.0 and first["p10"].rank == 1 and first["p00"].rank == 11
    # Then the lowest pending row first (pending rows sit by progress, not by score).
    assert [s.attempt_id for s in steps[1:]] == ["p12", "p13", "p14", "p11"]
    assert steps[-1].board == live_view(entries)
    assert reveal_steps(entries, -math.inf, one_by_one=20) == reveal_steps(entries, -math.inf)
