"""The leaderboard (排行榜): ranking with stated tie-breaks, live and frozen views.

Order, in full (the same rule on every screen, so a judge can explain any row):

1. Scored entries first, by score, highest first.
2. Equal scores: less play time used wins (`elapsed_s` ascending; pauses are
   not play time; an unknown time counts as the worst).
3. Still equal: lower test cost wins (`cost_yuan` ascending).
4. Entries equal on all three share a rank, standard competition ranking
   ("1, 2, 2, 4"), and are listed by name.
5. Unscored entries follow with no rank, by progress (questions + orders,
   most first), then by name. A submission still waiting for its score counts
   as submitted but is unranked until scored.

Before results are published the public board shows progress only
(`progress_view`: no score, no rank, an order that does not depend on scores),
unless the round's rules choose open scoring; then it is the live board, and
during the freeze (封榜) the public board hides every result submitted at or
after the freeze: such an entry is "pending", listed as if it had not
submitted yet (a resubmission hides the earlier score too). The reveal (揭榜)
unfreezes pending entries one at a time from the bottom of the board upward,
ending at the live board. Pure functions: the caller passes the entries and
the freeze time (`Round.freeze_at()`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

import msgspec


class Entry(msgspec.Struct, kw_only=True, frozen=True):
    """One attempt as the board needs it; the server keeps it current."""

    attempt_id: str
    name: str
    team: str = ""
    school: str = ""
    score: float | None = None  # None until scored
    submitted_at: float | None = None  # server time of the latest submission
    elapsed_s: float | None = None  # play time used at submission, pauses excluded
    cost_yuan: float = 0.0
    questions: int = 0
    orders: int = 0
    last_action: float = 0.0


class Row(msgspec.Struct, kw_only=True, frozen=True):
    rank: int | None  # None for unscored and pending rows
    attempt_id: str
    name: str
    team: str
    school: str
    score: float | None  # None when unscored or pending
    submitted: bool
    pending: bool  # submitted during the freeze; result hidden on the public board
    elapsed_s: float | None
    cost_yuan: float  # shown because it breaks ties
    questions: int
    orders: int
    last_action: float


class Board(msgspec.Struct, kw_only=True, frozen=True):
    rows: tuple[Row, ...]
    frozen: bool
    # True for the progress board: no row carries a score or a rank (see progress_view).
    progress_only: bool = False


class RevealStep(msgspec.Struct, kw_only=True, frozen=True):
    """One entry unfrozen during the reveal, and the board right after it."""

    attempt_id: str
    name: str
    score: float | None
    board: Board


def _tie_key(e: Entry) -> tuple[float, float, float]:
    assert e.score is not None
    elapsed = math.inf if e.elapsed_s is None else e.elapsed_s
    return (-e.score, elapsed, e.cost_yuan)


def _row(e: Entry, rank: int | None, pending: bool) -> Row:
    return Row(
        rank=rank, attempt_id=e.attempt_id, name=e.name, team=e.team, school=e.school,
        score=None if pending else e.score,
        submitted=e.submitted_at is not None or e.score is not None, pending=pending,
        elapsed_s=e.elapsed_s, cost_yuan=e.cost_yuan, questions=e.questions,
        orders=e.orders, last_action=e.last_action,
    )


def _rows(entries: Iterable[Entry], hidden: Collection[str] = ()) -> tuple[Row, ...]:
    """Rank `entries`, treating those whose attempt_id is in `hidden` as pending."""
    items = list(entries)
    if len({e.attempt_id for e in items}) != len(items):
        raise ValueError("duplicate attempt_id on the leaderboard")
    scored = [e for e in items if e.score is not None and e.attempt_id not in hidden]
    scored_ids = {e.attempt_id for e in scored}
    rest = [e for e in items if e.attempt_id not in scored_ids]
    # attempt_id last only makes the order total when two entries share a name.
    scored.sort(key=lambda e: (_tie_key(e), e.name, e.attempt_id))
    rest.sort(key=lambda e: (-(e.questions + e.orders), e.name, e.attempt_id))
    rows: list[Row] = []
    current, previous = 0, None
    for position, e in enumerate(scored, start=1):
        key = _tie_key(e)
        if key != previous:
            current, previous = position, key
        rows.append(_row(e, current, pending=False))
    rows += [_row(e, None, pending=e.attempt_id in hidden) for e in rest]
    return tuple(rows)


def rank(entries: Iterable[Entry]) -> tuple[Row, ...]:
    """The live order. Scored entries first: score descending, then elapsed_s ascending
    (None worst), then cost_yuan ascending; entries equal on all three share a rank
    ("1, 2, 2, 4") and are listed by name. Unscored entries follow with rank None, by
    questions + orders descending, then name. attempt_ids must be unique."""
    return _rows(entries)


def live_view(entries: Iterable[Entry]) -> Board:
    """Everything visible, for judges (and for everyone once results are published)."""
    return Board(rows=_rows(entries), frozen=False)


def progress_view(entries: Iterable[Entry]) -> Board:
    """The public board before results are published (unless the round opts into open
    scoring): progress only. Every row has rank None, score None and pending False, and
    the order never depends on a score: questions + orders descending, then name, then
    attempt_id. attempt_ids must be unique."""
    items = list(entries)
    if len({e.attempt_id for e in items}) != len(items):
        raise ValueError("duplicate attempt_id on the leaderboard")
    items.sort(key=lambda e: (-(e.questions + e.orders), e.name, e.attempt_id))
    rows = tuple(
        msgspec.structs.replace(_row(e, None, pending=False), score=None) for e in items
    )
    return Board(rows=rows, frozen=False, progress_only=True)


def _pending_ids(entries: Iterable[Entry], freeze_at: float) -> set[str]:
    return {e.attempt_id for e in entries
            if e.submitted_at is not None and e.submitted_at >= freeze_at}


def frozen_view(entries: Iterable[Entry], freeze_at: float) -> Board:
    """The public board during the freeze: an entry whose (latest) submission is at or
    after `freeze_at` is pending: score hidden, ranked as if it had not submitted."""
    items = list(entries)
    return Board(rows=_rows(items, _pending_ids(items, freeze_at)), frozen=True)


def reveal_steps(
    entries: Iterable[Entry], freeze_at: float, *, one_by_one: int | None = None
) -> list[RevealStep]:
    """The reveal, ICPC-style: starting from the frozen board, unfreeze the lowest
    pending row, re-rank, repeat. Each step carries the board after it; the last board
    equals `live_view(entries)` (frozen=False). No pending entries: no steps.
    `freeze_at` = -inf reveals every submitted entry (a round whose public board showed
    progress only). With `one_by_one` = k >= 1 and more than k pending entries, a first
    step (attempt_id "", name "", score None) unfreezes at once every pending entry that
    ends outside the top k pending of the final order, so a round of hundreds makes
    k + 1 boards, not hundreds."""
    items = list(entries)
    by_id = {e.attempt_id: e for e in items}
    hidden = _pending_ids(items, freeze_at)
    steps: list[RevealStep] = []
    if one_by_one is not None and 0 < one_by_one < len(hidden):
        final = [r.attempt_id for r in _rows(items) if r.attempt_id in hidden]
        hidden = set(final[:one_by_one])
        steps.append(RevealStep(
            attempt_id="", name="", score=None,
            board=Board(rows=_rows(items, hidden), frozen=True),
        ))
    rows = _rows(items, hidden)
    while hidden:
        lowest = next(r for r in reversed(rows) if r.pending)
        hidden.discard(lowest.attempt_id)
        rows = _rows(items, hidden)
        e = by_id[lowest.attempt_id]
        steps.append(RevealStep(
            attempt_id=e.attempt_id, name=e.name, score=e.score,
            board=Board(rows=rows, frozen=bool(hidden)),
        ))
    return steps
