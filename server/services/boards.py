"""Leaderboards: coalesced, whole-state pushes, and the rebuild of live state.

A change (a submission, a judge's override, progress) only `touch`es the round;
within `interval` the board is computed once from Redis and published whole, with
a version that only grows, in two views: `live` (scores, ranks) for judges and
organizers, and `public` for contestants and spectators: progress only until results
are published, unless the round's rules choose open scoring (then the live board,
frozen in the freeze window). However many changes arrive,
each round gets at most 1/interval pushes per second per process, and a client
that ignores lower versions can never be shown an older board.

Redis holds nothing that PostgreSQL does not: when a round's live state is missing
(never built here, or Redis lost it), `ensure_built` folds the round's events from
the audit log back into progress rows before the board is computed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from arena import leaderboard
from arena.attempt import Attempt
from arena.rounds import Round
from server import protocol
from server.services.control import RoundService
from server.services.library import Library
from server.store.audit import AuditLog, Event
from server.store.bus import Bus
from server.store.live import LiveState, Progress

log = logging.getLogger("arena.boards")


def board_channel(round_id: str, view: str) -> str:
    return f"board:{round_id}:{view}"


class Boards:
    def __init__(
        self, audit: AuditLog, live: LiveState, bus: Bus, rounds: RoundService,
        library: Library, clock: Callable[[], float], *, interval: float = 0.25,
    ) -> None:
        self.audit = audit
        self.live = live
        self.bus = bus
        self.rounds = rounds
        self.library = library
        self.clock = clock
        self.interval = interval
        self._pending: set[str] = set()
        self._shown: dict[str, tuple[bool, bool]] = {}  # (frozen, scores public) per round
        self._tasks: set[asyncio.Task[None]] = set()
        self._first: dict[str, asyncio.Future[None]] = {}
        rounds.on_tick.append(self._on_tick)
        rounds.final_board = self.final_board

    def touch(self, round_id: str) -> None:
        """Something on this round's board changed; publish it soon, once."""
        if round_id in self._pending:
            return
        self._pending.add(round_id)
        asyncio.get_running_loop().call_later(self.interval, self._fire, round_id)

    def _fire(self, round_id: str) -> None:
        task = asyncio.create_task(self.publish(round_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_tick(self, rnd: Round, now: float) -> None:
        # The public view changes when the freeze window opens or results are published
        # (progress only -> scores), without any contestant's action.
        shown = (rnd.frozen(now), rnd.scores_public())
        if self._shown.setdefault(rnd.round_id, shown) != shown:
            self._shown[rnd.round_id] = shown
            self.touch(rnd.round_id)

    async def publish(self, round_id: str) -> None:
        self._pending.discard(round_id)
        try:
            await self.ensure_built(round_id)
            rnd = await self.rounds.get(round_id)
            now = self.clock()
            entries = await self.live.entries(round_id)
            version = await self.live.next_board_version(round_id, int(now * 1000))
            public = live_board = leaderboard.live_view(entries)
            freeze_at = rnd.freeze_at()
            if not rnd.scores_public():
                # No score oracle: before publication the public sees progress only.
                public = leaderboard.progress_view(entries)
            elif rnd.frozen(now) and freeze_at is not None:
                public = leaderboard.frozen_view(entries, freeze_at)
            for view, board in (("live", live_board), ("public", public)):
                ch = board_channel(round_id, view)
                msg = protocol.BoardUpdate(
                    ch=ch, round_id=round_id, version=version, view=view,  # type: ignore[arg-type]
                    board=board, joined=len(entries), at=round(now * 1000, 1),
                )
                await self.bus.publish_latest(ch, protocol.encode(msg))
        except Exception:
            log.exception("publishing the board of %s failed", round_id)

    async def latest(self, round_id: str, view: str) -> str | None:
        """The last board published in this view, computing one if there is none."""
        ch = board_channel(round_id, view)
        body = await self.bus.latest(ch)
        if body is None:
            # Single flight: hundreds of watchers arriving at once cause one computation.
            flight = self._first.get(round_id)
            if flight is None:
                flight = self._first[round_id] = asyncio.ensure_future(self.publish(round_id))
                flight.add_done_callback(lambda _: self._first.pop(round_id, None))
            await asyncio.shield(flight)
            body = await self.bus.latest(ch)
        return body

    async def final_board(self, round_id: str) -> leaderboard.Board:
        """The live board as it stands, everything visible: what publication reveals."""
        await self.ensure_built(round_id)
        return leaderboard.live_view(await self.live.entries(round_id))

    async def ensure_built(self, round_id: str) -> None:
        if await self.live.is_built(round_id):
            return
        if await self.live.claim_rebuild(round_id):
            await self.rebuild(round_id)

    async def rebuild(self, round_id: str) -> dict[str, Progress]:
        """Fold the round's events from PostgreSQL into progress rows and store them."""
        rnd = await self.rounds.get(round_id)
        events = await self.audit.events(round_id=round_id)
        progress = fold_progress(events, self.library, rnd)
        await self.live.restore_progress(round_id, progress)
        log.info("rebuilt live state of round %s: %d attempts", round_id, len(progress))
        return progress


def attempt_progress(attempt: Attempt, row: Progress) -> Progress:
    """`row` with the counts that come from the attempt itself: what the one fold of its
    log (`Attempt.apply`) says, live or rebuilt alike."""
    sub = attempt.submission
    row.questions = len(attempt.questions)
    row.orders = len(attempt.orders)
    row.cost_yuan = round(sum(o.cost_yuan for o in attempt.orders), 2)
    row.submitted = sub is not None
    row.submitted_at = sub.at if sub else None
    return row


def fold_progress(events: list[Event], library: Library, rnd: Round) -> dict[str, Progress]:
    """Progress rows as the live state would hold them after these events."""
    case = library.get(rnd.rules.case_id)
    rows: dict[str, Progress] = {}
    attempts: dict[str, Attempt] = {}
    for e in events:
        if e.attempt_id is None:
            continue
        p = rows.setdefault(e.attempt_id, Progress())
        attempt = attempts.get(e.attempt_id)
        if attempt is None:
            attempt = attempts[e.attempt_id] = Attempt(
                case, library.matchers[case.id], started_at=rnd.starts_at or 0.0,
                max_submissions=rnd.rules.max_submissions)
        p.last_action = max(p.last_action, e.at)
        if e.kind == "attempt_started":
            p.name = str(e.payload.get("name", ""))
            p.team = str(e.payload.get("team", ""))
            p.school = str(e.payload.get("school", ""))
            p.last_action = 0.0
        elif e.kind == "submitted":
            elapsed = e.payload.get("elapsed_s")
            p.elapsed_s = float(elapsed) if elapsed is not None else None
        elif e.kind == "scored":
            p.score = float(e.payload["total"])
        attempt.replay(e.kind, e.payload, e.at)
    return {aid: attempt_progress(attempts[aid], row) for aid, row in rows.items()}
