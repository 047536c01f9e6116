"""Watchers: judges and organizers following rounds and transcripts, spectators a screen.

A watcher only reads: it follows a round's channel (clock and status changes,
recovering missed ones from the channel history), the round's board in its view
(live, with scores, for staff; public for spectators: progress only until results are
published, unless the round has open scoring) and, for staff, one transcript at a time.
Judges' rulings come in here and go to `judging`.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from arena import leaderboard
from arena.errors import NotFound
from arena.scoring import ScoreCard
from server import protocol
from server.services.accounts import Claims
from server.services.boards import board_channel
from server.services.control import round_channel
from server.sessions import judging
from server.sessions.client import Client
from server.sessions.context import Context
from server.sessions.journal import attempt_channel

# The reveal animates this many places one by one; the rest of the board (every hidden
# result outside them) is revealed in one step, so `reveal` stays small in a large round.
REVEAL_ONE_BY_ONE = 10


class Watcher:
    def __init__(self, res: Context, conn: Client, claims: Claims) -> None:
        self.res = res
        self.conn = conn
        self.claims = claims
        self.view = "public" if claims.role == "spectator" else "live"
        self._round: list[Callable[[], None]] = []
        self._transcript: list[Callable[[], None]] = []

    async def handle(self, msg: protocol.ClientMsg) -> None:
        if isinstance(msg, protocol.Watch):
            await self.watch(msg.round_id, msg.since)
        elif isinstance(msg, protocol.OpenTranscript):
            await self.open_transcript(msg.attempt_id)
        elif isinstance(msg, protocol.Adjudicate | protocol.Override):
            await judging.rule(self.res, self.claims.sub, msg, self.claims.name)
            self.conn.send(protocol.Ack(re=msg.id))

    async def watch(self, round_id: str, since: int = 0) -> None:
        """Follow one round (a new watch replaces the previous one)."""
        rnd = await self.res.rounds.get(round_id)  # NotFound for an unknown round
        self.close()
        conn, bus = self.conn, self.res.bus
        ch = round_channel(rnd.round_id)
        self._round.append(conn.follow(bus, ch))
        if since:
            await conn.replay(bus, ch, since)
        state = await self.res.rounds.state(round_id)
        state.epoch, state.cseq = await bus.position(ch)
        conn.send(state)
        self._round.append(conn.follow_latest(bus, board_channel(round_id, self.view)))
        body = await self.res.boards.latest(round_id, self.view)
        if body is not None:
            conn.send_body(body)
        if rnd.status == "published" and self.claims.role == "spectator":
            await self._reveal(round_id)
        self._round.append(self.res.rounds.listen(round_id, self._changed))

    async def _changed(self, rnd: object, cseq: int, body: str) -> None:
        msg = protocol.decode_server(body)
        if not (isinstance(msg, protocol.RoundState) and msg.change == "results_published"):
            return
        # The public board now shows scores: have it republished (coalesced per process).
        self.res.boards.touch(msg.round_id)
        if self.claims.role == "spectator":
            await self._reveal(msg.round_id)

    async def _reveal(self, round_id: str) -> None:
        rnd = await self.res.rounds.get(round_id)
        entries = await self.res.live.entries(round_id)
        # From the board the public last saw: progress only (every result hidden) unless
        # the round had open scoring, then the frozen board.
        hidden_from = rnd.hidden_from()
        steps = (
            [s.board for s in leaderboard.reveal_steps(
                entries, hidden_from, one_by_one=REVEAL_ONE_BY_ONE)]
            if hidden_from is not None else []
        )
        if not steps:
            steps = [leaderboard.live_view(entries)]
        self.conn.send(protocol.Reveal(round_id=round_id, steps=steps))

    async def open_transcript(self, attempt_id: str) -> None:
        """Send one attempt's events so far, then follow its channel."""
        for stop in self._transcript:
            stop()
        self._transcript.clear()
        judging.round_of(attempt_id)
        ch = attempt_channel(attempt_id)
        # Subscribe first, then read: an entry appended in between arrives twice at worst,
        # never not at all (the client keys entries by their `at` and kind).
        self._transcript.append(self.conn.follow(self.res.bus, ch))
        events = await self.res.audit.events(attempt_id=attempt_id)
        name, card = "", None
        entries = []
        for e in events:
            if e.kind == "attempt_started":
                name = str(e.payload.get("name", ""))
            if e.kind == "scored":
                card = msgspec.convert(e.payload, ScoreCard)
            entries.append(protocol.TranscriptEntry(
                at=round(e.at * 1000, 1), kind=e.kind, actor=e.actor, payload=e.payload
            ))
        if not events:
            raise NotFound("没有这位选手的作答记录。", f"No attempt {attempt_id!r}.")
        epoch, cseq = await self.res.bus.position(ch)
        self.conn.send(protocol.Transcript(
            attempt_id=attempt_id, name=name, entries=entries, card=card,
            ch=ch, cseq=cseq, epoch=epoch,
        ))

    def close(self) -> None:
        for stop in self._round:
            stop()
        self._round.clear()

    def rate_keys(self, conn_id: str, address: str) -> list[tuple[str, str]]:
        return []  # watchers only read: they never ask the patient

    async def leave(self, conn: Client) -> None:
        self.close_all()

    def close_all(self) -> None:
        self.close()
        for stop in self._transcript:
            stop()
        self._transcript.clear()
