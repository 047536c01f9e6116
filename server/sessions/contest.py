"""A contestant in a timed round: the practice flow, bound to the round's clock and rules,
surviving refreshes, lost networks and a dead server process.

The attempt is rebuilt from the audit log whenever a contestant (re)connects to a
process that does not already hold it, so a rejoin anywhere shows exactly what was
durable: transcript, orders, submission, time left. An answer still streaming in
this process when the contestant drops keeps streaming for `REJOIN_GRACE_S`; a
contestant back in time sees the text so far and the rest live. If the process
that was answering died, the turn is recorded as interrupted and can be asked again.

Everything a contestant does is also published on the attempt's channel, so judges
see transcripts live and another process holding the same attempt stays in step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import msgspec

from arena import leaderboard
from arena.attempt import Answered, Attempt
from arena.errors import NotFound, RoundNotRunning
from arena.rounds import Round
from arena.scoring import score
from server import protocol
from server.services.accounts import Claims
from server.services.boards import attempt_progress, board_channel
from server.services.control import round_channel
from server.services.library import describe_patient
from server.services.replay import score_versions, scored_payload
from server.sessions.client import Client
from server.sessions.context import Context
from server.sessions.journal import Journal, attempt_channel
from server.sessions.practice import menu, place_order
from server.sessions.turn import Turn
from server.store import competitions
from server.store.live import Progress

log = logging.getLogger("arena.player")

REJOIN_GRACE_S = 15.0  # an answer keeps streaming this long after the contestant drops


def attempt_id_for(round_id: str, contestant_id: str) -> str:
    return f"{round_id}.{contestant_id}"


class Player:
    """One contestant's play of a round, on whichever connection they are on now."""

    def __init__(self, res: Context, claims: Claims, rnd: Round) -> None:
        self.res = res
        self.name = claims.name
        self.journal: Journal | None = None
        self.turn: Turn | None = None
        self.claims = claims
        self.contestant_id = claims.sub
        self.round_id = rnd.round_id
        self.attempt_id = attempt_id_for(rnd.round_id, claims.sub)
        self.conn: Client | None = None
        self.team = ""
        self.school = ""
        self._play_sent = False
        self._grace: asyncio.TimerHandle | None = None
        self._stop: list[Any] = []
        self._card: dict[str, Any] | None = None
        self._submit_ids: set[str] = set()  # request ids of submissions already applied
        self._background: set[asyncio.Task[None]] = set()

    @property
    def actor(self) -> str:
        return f"contestant:{self.contestant_id}"

    def rate_keys(self, conn_id: str, address: str) -> list[tuple[str, str]]:
        """The limits a question counts against: this contestant, across reconnects and
        processes."""
        return [("ask", f"contestant:{self.contestant_id}")]

    async def handle(self, msg: protocol.ClientMsg) -> None:
        if isinstance(msg, protocol.Ask):
            await self._require_turn().ask(msg, self._now())
        elif isinstance(msg, protocol.Order):
            await place_order(self._require_journal(), msg, self._now(), self.send)
            await self._progress()
        elif isinstance(msg, protocol.Submit):
            await self.submit(msg)

    def _require_journal(self) -> Journal:
        if self.journal is None:
            raise RoundNotRunning("比赛尚未开始。", "The attempt is not loaded.")
        return self.journal

    def _require_turn(self) -> Turn:
        if self.turn is None:
            raise RoundNotRunning("比赛尚未开始。", "The attempt is not loaded.")
        return self.turn

    def _require(self) -> Attempt:
        return self._require_journal().attempt

    def send(self, msg: protocol.ServerMsg) -> None:
        if self.conn is not None:
            self.conn.send(msg)

    def _report(self, exc: BaseException, re: str | None) -> None:
        if self.conn is not None:
            self.conn.report(exc, re)

    def _round(self) -> Round:
        rnd = self.res.rounds.cached(self.round_id)
        if rnd is None:
            raise NotFound("场次不存在。", "Round not loaded.")
        return rnd

    def _now(self) -> float:
        now = self.res.clock()
        self._round().check_play(self.contestant_id, now)
        return now

    # ---- lifecycle -----------------------------------------------------------------------

    async def enter(self) -> None:
        """Record that this contestant entered (once), then rebuild the attempt from the log."""
        person = await self.res.roster.get(self.contestant_id)
        self.team, self.school = person.team, person.school
        rnd = self._round()
        case = self.res.library.get(rnd.rules.case_id)
        first = await self.res.audit.append(
            round_id=self.round_id, attempt_id=self.attempt_id, actor=self.actor,
            kind="attempt_started", request_id="enter",
            payload={"contestant_id": self.contestant_id, "name": self.name, "team": self.team,
                     "school": self.school, "engine": self.res.engine.name},
        )
        attempt = Attempt(
            case, self.res.library.matchers[case.id], started_at=rnd.starts_at or 0.0,
            max_submissions=rnd.rules.max_submissions,
        )
        events = await self.res.audit.events(attempt_id=self.attempt_id)
        attempt.rebuild((e.kind, e.payload, e.at) for e in events)
        cards = [e.payload for e in events if e.kind == "scored"]
        self._submit_ids = {e.request_id for e in events
                            if e.kind == "submitted" and e.request_id}
        self.journal = journal = Journal(
            self.res, attempt, round_id=self.round_id, attempt_id=self.attempt_id,
            actor=self.actor, publish=True,
        )
        self.turn = turn = Turn(
            self.res, journal, self.send, self._report,
            fallback_ok=lambda: self._round().rules.fallback_scripted,
            on_change=self._progress, mark_answering=True,
        )
        # Questions whose match was never recorded (a process stopped in between); a
        # duplicate "matched" from a process still at it is harmless: matching is pure.
        journal.match_later(attempt.unmatched)
        self._card = cards[-1] if cards else None
        self._stop.append(self.res.bus.subscribe(attempt_channel(self.attempt_id), self._heard))
        self._stop.append(self.res.rounds.listen(self.round_id, self._round_changed))
        if attempt.pending_turn is not None and not await self._answered_elsewhere():
            # The process that was answering is gone: close the turn so it can be asked again.
            await turn.interrupted("interrupted")
        if first is not None or not await self.res.live.is_built(self.round_id):
            await self._progress()

    async def _answered_elsewhere(self) -> bool:
        """Whether a live process is still streaming this attempt's pending answer. A process
        killed mid-answer leaves its mark in Redis for a while, but not its subscription."""
        owner = await self.res.live.answering(self.attempt_id)
        return owner is not None and await self.res.bus.alive(owner)

    async def attach(self, conn: Client, since: dict[str, int]) -> None:
        """Show this contestant everything, on a new connection."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        old, self.conn = self.conn, conn
        if old is not None and old is not conn:
            old.send(protocol.Resync(
                reason="replaced", message="你已在另一个页面登录，此页面已断开。"))
            old.close_soon()
        rnd = self._round()
        ch = round_channel(self.round_id)
        if ch in since:
            await conn.replay(self.res.bus, ch, since[ch])
        conn.send(await self._state())
        self._play_sent = False
        self._maybe_play(rnd)
        if rnd.rules.board_visible:
            public = board_channel(self.round_id, "public")
            self._stop.append(conn.follow_latest(self.res.bus, public))
            body = await self.res.boards.latest(self.round_id, "public")
            if body is not None:
                conn.send_body(body)
        if rnd.status == "published":
            await self._send_results()

    async def leave(self, conn: Client) -> None:
        self.detach(conn)

    def detach(self, conn: Client) -> None:
        """The connection closed; an answer in flight gets a grace period to be picked up."""
        if self.conn is not conn:
            return
        self.conn = None
        if self.turn is not None and self.turn.streaming:
            self._grace = asyncio.get_running_loop().call_later(
                REJOIN_GRACE_S, lambda: self._spawn(self.close())
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def idle(self) -> bool:
        return self.conn is None and (self.turn is None or not self.turn.streaming)

    def stop(self) -> None:
        for stop in self._stop:
            stop()
        self._stop.clear()
        if self.journal is not None:
            self.journal.stop()

    async def close(self) -> None:
        """Stop an answer in flight (closing the upstream stream) and record it as failed."""
        if self.turn is not None:
            await self.turn.close()

    # ---- messages to the contestant ------------------------------------------------------

    async def _state(self, change: str = "", reason: str = "") -> protocol.RoundState:
        state = await self.res.rounds.state(
            self.round_id, contestant_id=self.contestant_id, change=change, reason=reason
        )
        # A personal view: not part of the channel's sequence (the client tracks those).
        state.cseq = 0
        return state

    def _maybe_play(self, rnd: Round) -> None:
        if self._play_sent or rnd.status in ("draft", "lobby") or rnd.starts_at is None:
            return
        if rnd.status == "running" and rnd.phase(self.res.clock()) == "countdown":
            return  # the case stays hidden until the countdown ends; the ticker retries
        self._play_sent = True
        self.send(self.play_state())

    def play_state(self) -> protocol.PlayState:
        a = self._require()
        case, o = a.case, a.case.opening
        rules = self._round().rules
        transcript = []
        for q in a.questions:
            answer = a.answers.get(q.turn)
            if answer is None:
                transcript.append(protocol.TranscriptTurn(
                    turn=q.turn, question=q.text,
                    answer=self.turn.partial if self.turn else "", status="pending"))
            else:
                transcript.append(protocol.TranscriptTurn(
                    turn=q.turn, question=q.text, answer=answer.text, status=answer.status))
        orders = []
        for ordered in a.orders:
            orders.append(protocol.OrderedItem(
                item_id=ordered.menu_id, name=ordered.name, kind=ordered.kind,
                result=ordered.result, abnormal=ordered.abnormal, cost_yuan=ordered.cost_yuan))
        sub = a.submission
        return protocol.PlayState(
            round_id=self.round_id, attempt_id=self.attempt_id, case_id=case.id,
            title=case.title, patient=describe_patient(case),
            chief_complaint=o.chief_complaint, statement=o.statement,
            appearance=o.appearance, vitals=o.vitals,
            menu=menu(case) if rules.order_menu else [], typed_orders=not rules.order_menu,
            transcript=transcript,
            orders=orders, submitted=sub is not None, submissions_left=a.submissions_left,
            diagnosis=sub.diagnosis if sub else "",
            differentials=list(sub.differentials) if sub else [],
            reasoning=sub.reasoning if sub else "",
            score=self._open_score(),
        )

    def _open_score(self) -> protocol.ScoreSummary | None:
        """The latest submission's score, only where the round's rules choose open scoring:
        otherwise nothing about a score reaches the contestant before publication."""
        if self._card is None or not self._round().rules.open_scoring:
            return None
        return protocol.ScoreSummary(
            total=float(self._card["total"]), max_total=float(self._card["max_total"]),
            verdict=str(self._card["verdict"]),
        )

    def _ack(self, re: str) -> protocol.SubmitAck:
        attempt = self._require()
        score = self._open_score()
        ack = protocol.SubmitAck(re=re, submissions_left=attempt.submissions_left, score=score)
        if score is not None:
            ack.message = "已提交，得分如下。"
        return ack

    async def _round_changed(self, rnd: Round, cseq: int, body: str) -> None:
        if self.conn is not None:
            state = await self._state()
            changed = protocol.decode_server(body)
            if isinstance(changed, protocol.RoundState):
                state.change, state.reason = changed.change, changed.reason
                state.epoch = changed.epoch  # the stream the number counts in
            state.cseq = cseq  # it stands for the channel message it personalises
            self.conn.send(state)
            self._maybe_play(rnd)
        if rnd.status in ("ended", "published"):
            await self.close()  # the round is over: stop any answer (closes the upstream)
        if rnd.status == "published":
            self.res.boards.touch(self.round_id)  # the public board now shows scores
            await self._send_results()

    def tick(self, rnd: Round) -> None:
        self._maybe_play(rnd)

    async def _send_results(self) -> None:
        if self._card is None or self.conn is None:
            return
        # Only after publication, and only this contestant's own card: the latest
        # submission's score and, with it, the answer key.
        rows = leaderboard.rank(await self.res.live.entries(self.round_id))
        mine = next((r for r in rows if r.attempt_id == self.attempt_id), None)
        self.send(protocol.Results(
            round_id=self.round_id, card=msgspec.convert(self._card, protocol.ScoreCard),
            rank=mine.rank if mine else None, of=len(rows),
            key=protocol.answer_key_view(self._require().case),
        ))

    def _heard(self, channel: str, cseq: int, body: str) -> None:
        """Entries on this attempt's channel: another process's answer, a judge's change."""
        msg = protocol.decode_server(body)
        if not isinstance(msg, protocol.TranscriptLive):
            return
        kind, payload = msg.entry.kind, msg.entry.payload
        if kind == "answered" and self.turn is not None:
            # Answered by the process we replaced (our own answers are folded already).
            self.turn.adopt(msgspec.convert(payload, Answered))
        elif kind == "scored" and msg.card is not None:
            self._card = msgspec.to_builtins(msg.card)
            if self._round().status == "published":
                self._spawn(self._send_results())

    # ---- actions -------------------------------------------------------------------------

    async def _progress(self) -> None:
        a = self._require()
        rnd = self._round()
        sub = a.submission
        row = attempt_progress(a, Progress(
            name=self.name, team=self.team, school=self.school,
            score=float(self._card["total"]) if self._card else None,
            # Entering is not an action (as in boards.fold_progress, which rebuilds this row).
            last_action=self.res.clock() if a.questions or a.orders or sub else 0.0,
            elapsed_s=rnd.elapsed(sub.at) if sub else None,
        ))
        await self.res.live.set_progress(self.round_id, self.attempt_id, row)
        self.res.boards.touch(self.round_id)

    async def submit(self, msg: protocol.Submit) -> None:
        journal = self._require_journal()
        attempt = journal.attempt
        if msg.id in self._submit_ids:  # a retry of a submission already applied
            self.send(self._ack(msg.id))
            return
        rnd = self._round()
        await journal.matched()
        now = self._now()
        submitted = attempt.submit(msg.diagnosis, msg.differentials, msg.reasoning, now)
        rules = rnd.rules
        card = score(
            attempt.case, attempt.questions, attempt.ordered_ids, submitted.submission(),
            rules.weights, time_points=rules.time_points if rules.time_counts else 0.0,
            time_fraction_left=rnd.time_fraction_left(self.contestant_id, now),
        )
        payload = dict(msgspec.to_builtins(submitted), elapsed_s=rnd.elapsed(now))
        versions = score_versions(
            self.res.settings, self.res.library, attempt.case.id, self.res.engine.name)
        if await journal.record_submission(
            submitted, payload, scored_payload(card, versions), card, msg.id
        ):
            # The latest submission's card replaces the earlier one's; the ack carries no
            # score unless the round has open scoring.
            self._card = msgspec.to_builtins(card)
            await self._progress()
        self._submit_ids.add(msg.id)
        self.send(self._ack(msg.id))


class Players:
    """The contestants this process serves, by attempt; a rejoin here reuses the live one."""

    def __init__(self, res: Context) -> None:
        self.res = res
        self._by_attempt: dict[str, Player] = {}
        res.rounds.on_tick.append(self._tick)

    async def current_round(self, competition_id: str) -> Round:
        """The round a contestant of this competition plays now: the newest one that is
        open (lobby onwards); if none has opened yet, the newest draft, to wait in."""
        ids = await competitions.round_ids(self.res.audit.pool, competition_id)
        if not ids:
            raise RoundNotRunning("赛事还没有场次，请稍后再进入。", "No rounds yet.")
        rounds = [await self.res.rounds.get(r) for r in ids]
        return next((r for r in rounds if r.status != "draft"), rounds[0])

    async def join(self, claims: Claims) -> Player:
        rnd = await self.current_round(claims.competition_id)
        aid = attempt_id_for(rnd.round_id, claims.sub)
        player = self._by_attempt.get(aid)
        if player is None:
            player = Player(self.res, claims, rnd)
            await player.enter()
            self._by_attempt[aid] = player
        return player

    def _forget_idle(self) -> None:
        # A detached player with nothing streaming is rebuilt from the log on its next
        # join, so what it shows can never be staler than PostgreSQL.
        for aid, player in list(self._by_attempt.items()):
            if player.idle:
                player.stop()
                del self._by_attempt[aid]

    def _tick(self, rnd: Round, now: float) -> None:
        for player in self._by_attempt.values():
            if player.round_id == rnd.round_id:
                player.tick(rnd)
        if int(now) % 5 == 0:
            self._forget_idle()
