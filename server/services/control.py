"""Rounds as the server runs them: commands made durable, then announced to every process.

`arena.rounds.Round` decides what is legal; this module makes it durable and
shared. A command (open, start, pause, …) runs in a transaction that holds a lock
on the round, replays the round's events from PostgreSQL, applies the command and
appends the new event, so two organizers or two processes can never act on a
stale state. Only then is it announced on the round's channel, and every process
(this one included) reloads the round from PostgreSQL when it hears it.

A ticker ends rounds whose time is up (idempotently: any process may try) and
re-announces the board when the freeze window begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

from arena.errors import ArenaError, BadRequest, NotFound
from arena.rounds import (
    ROUND_EVENT_KINDS,
    Candidate,
    Draw,
    Round,
    RoundEvent,
    RoundRules,
    decode_round_event,
    draw_case,
)
from server import protocol
from server.services.library import Library, case_access
from server.store import competitions
from server.store.audit import AuditLog
from server.store.bus import Bus

log = logging.getLogger("arena.rounds")

Action = Literal["open", "start", "pause", "resume", "extend", "end", "publish"]
ACTIONS: tuple[Action, ...] = ("open", "start", "pause", "resume", "extend", "end", "publish")

RoundListener = Callable[[Round, int, str], Awaitable[None]]


def round_channel(round_id: str) -> str:
    return f"round:{round_id}"


class RoundService:
    def __init__(
        self, audit: AuditLog, bus: Bus, library: Library, clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.audit = audit
        self.bus = bus
        self.library = library
        self.clock = clock
        self.rng = rng or random.Random()  # draws cases; injected where a test must know
        self._rounds: dict[str, Round] = {}
        self._titles: dict[str, str] = {}
        self._listeners: dict[str, set[RoundListener]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._queue: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        # Called for each followed round every tick (boards, players waiting for the start).
        self.on_tick: list[Callable[[Round, float], None]] = []
        # The board as it stands (set by Boards): recorded with the publication, so that
        # `arena replay` can compare the log's own fold with what was published.
        self.final_board: Callable[[str], Awaitable[object]] | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._refresher(), name="round-refresher"),
            asyncio.create_task(self._ticker(), name="round-ticker"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()

    # ---- reading -------------------------------------------------------------------------

    async def load(self, round_id: str, conn: Any = None) -> Round:
        """The round as PostgreSQL knows it now."""
        events = await self.audit.round_events(round_id, ROUND_EVENT_KINDS, conn)
        if not events:
            raise NotFound("场次不存在。", f"No round {round_id!r}.")
        return Round.replay(decode_round_event(e.kind, e.payload) for e in events)

    async def get(self, round_id: str) -> Round:
        """The round from this process's cache, loading (and following) it on first use."""
        cached = self._rounds.get(round_id)
        if cached is not None:
            return cached
        loaded = await self.load(round_id)
        self._follow(round_id)
        return self._rounds.setdefault(round_id, loaded)

    def cached(self, round_id: str) -> Round | None:
        return self._rounds.get(round_id)

    async def competition_title(self, competition_id: str) -> str:
        if competition_id not in self._titles:
            title = await competitions.title(self.audit.pool, competition_id)
            self._titles[competition_id] = title or ""
        return self._titles[competition_id]

    async def state(self, round_id: str, *, contestant_id: str | None = None, change: str = "",
                    reason: str = "") -> protocol.RoundState:
        rnd = await self.get(round_id)
        return protocol.RoundState(
            ch=round_channel(round_id), round_id=round_id, title=rnd.title,
            competition_title=await self.competition_title(rnd.event_id),
            clock=rnd.snapshot(self.clock(), contestant_id),
            board_visible=rnd.rules.board_visible, time_counts=rnd.rules.time_counts,
            freeze_s=rnd.rules.freeze_s, change=change, reason=reason,
        )

    # ---- following -----------------------------------------------------------------------

    def listen(self, round_id: str, listener: RoundListener) -> Callable[[], None]:
        """Call `listener(round, cseq, body)` after each announced change, round reloaded."""
        self._follow(round_id)
        self._listeners.setdefault(round_id, set()).add(listener)
        return lambda: self._listeners.get(round_id, set()).discard(listener)

    def _follow(self, round_id: str) -> None:
        if round_id not in self._unsubscribe:
            self._unsubscribe[round_id] = self.bus.subscribe(
                round_channel(round_id),
                lambda ch, cseq, body: self._queue.put_nowait((round_id, cseq, body)),
            )

    async def _refresher(self) -> None:
        # One task, in order: reload the round, then tell this process's listeners.
        while True:
            round_id, cseq, body = await self._queue.get()
            try:
                rnd = await self.load(round_id)
                self._rounds[round_id] = rnd
                for listener in list(self._listeners.get(round_id, ())):
                    await listener(rnd, cseq, body)
            except Exception:
                log.exception("refreshing round %s failed", round_id)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = self.clock()
            for rnd in list(self._rounds.values()):
                try:
                    if rnd.status == "running" and rnd.phase(now) == "over":
                        await self.command(
                            rnd.round_id, "end", actor="system", request_id="time-up",
                        )
                    for callback in self.on_tick:
                        callback(rnd, now)
                except ArenaError:
                    pass  # another process ended it first
                except Exception:
                    log.exception("round ticker failed for %s", rnd.round_id)

    # ---- commands ------------------------------------------------------------------------

    async def create(
        self, competition_id: str, title: str, rules: RoundRules, *, actor: str,
        draw: Draw | None = None,
    ) -> Round:
        """A new round in draft; given `draw`, its case is drawn (see `arena.rounds.Draw`)."""
        title = title.strip()
        if not title or len(title) > 80:
            raise BadRequest("场次名称不能为空，且不超过 80 字。", "Round title 1..80 chars.")
        if draw is not None:
            rules = msgspec.structs.replace(
                rules, case_id=await self._draw(competition_id, draw))
        self.library.get(rules.case_id)  # CaseNotFound for a case the library lacks
        round_id = uuid.uuid4().hex[:12]
        rnd, created = Round.create(
            round_id, rules, event_id=competition_id, title=title, now=self.clock()
        )
        async with self.audit.locked(round_id) as conn:
            if not await competitions.exists(conn, competition_id):
                raise NotFound("赛事不存在。", f"No competition {competition_id!r}.")
            await competitions.add_round(conn, round_id, competition_id, title)
            await self.audit.append(
                round_id=round_id, attempt_id=None, actor=actor, kind="round_created",
                payload=created, conn=conn,
            )
        return rnd

    async def _draw(self, competition_id: str, draw: Draw) -> str:
        access = await case_access(self.audit.pool, list(self.library.cases))
        candidates = [Candidate(c.id, c.specialty, c.difficulty)
                      for c in self.library.cases.values()
                      if access[c.id].visibility == "contest"]
        used = [(await self.get(rid)).rules.case_id
                for rid in await competitions.round_ids(self.audit.pool, competition_id)]
        return draw_case(candidates, draw, used, self.rng.choice)

    async def command(
        self, round_id: str, action: str, *, actor: str, request_id: str, reason: str = "",
        seconds: int = 0, contestant_id: str | None = None,
    ) -> Round:
        """Apply an organizer's action durably, then announce it; return the new round."""
        if action not in ACTIONS:
            raise BadRequest(f"未知操作：{action}", f"Unknown action {action!r}.")
        if action in ("pause", "extend", "end") and actor != "system" and not reason.strip():
            raise BadRequest("请填写原因。", "A reason is required.")
        async with self.audit.locked(round_id) as conn:
            if await competitions.applied(conn, round_id, request_id):
                # A retry (the console resends after a network error): already applied,
                # so the same success and nothing new.
                return await self.load(round_id, conn)
            rnd = await self.load(round_id, conn)
            now = self.clock()
            event = self._apply(
                rnd, action, now, reason, seconds, contestant_id, system=actor == "system"
            )
            payload = msgspec.to_builtins(event)
            payload.setdefault("reason", reason)
            if reason and payload["reason"] != reason:
                # RoundEnded.reason says who ended it; the organizer's words go beside it.
                payload["note"] = reason
            if action == "publish" and self.final_board is not None:
                payload["board"] = msgspec.to_builtins(await self.final_board(round_id))
            await self.audit.append(
                round_id=round_id, attempt_id=None, actor=actor,
                kind=payload["type"], payload=payload, request_id=request_id, conn=conn,
            )
        self._rounds[round_id] = rnd
        await self.announce(round_id, change=str(payload["type"]), reason=reason)
        return rnd

    @staticmethod
    def _apply(rnd: Round, action: str, now: float, reason: str, seconds: int,
               contestant_id: str | None, *, system: bool) -> RoundEvent:
        if action == "open":
            return rnd.open_lobby(now)
        if action == "start":
            return rnd.start(now)
        if action == "pause":
            return rnd.pause(now, reason)
        if action == "resume":
            return rnd.resume(now)
        if action == "extend":
            return rnd.extend(now, seconds, contestant_id or None, reason)
        if action == "end":
            # Only the server's own ticker ends a round for time; an organizer ends it early.
            return rnd.end(now, "time" if system else "organizer")
        return rnd.publish(now)

    async def announce(self, round_id: str, *, change: str = "", reason: str = "") -> int:
        state = await self.state(round_id, change=change, reason=reason)
        return await self.bus.publish(round_channel(round_id), protocol.encode(state))
