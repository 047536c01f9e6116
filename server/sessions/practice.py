"""A practice round: one student, one case, untimed, on one connection.

This is where the pure `arena` core meets the services: every request is
checked by the `Attempt`, made durable in the audit log, mirrored into live
state, and only then acknowledged. An event the audit log refuses is retracted
from the attempt, so memory never runs ahead of PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Literal

import msgspec

from arena.attempt import Answered, Attempt
from arena.cases import Case, Orderable
from arena.errors import DuplicateRequest, RoundNotRunning
from arena.scoring import score
from server import protocol
from server.patient.llm import LLMFailure
from server.patient.relay import Frames
from server.resources import Resources
from server.services.library import describe_patient, require_practice
from server.services.replay import score_versions, scored_payload
from server.store.live import Progress
from server.wire.errors import ws_error

log = logging.getLogger("arena.practice")


def _menu_sections(case: Case) -> tuple[tuple[Literal["exam", "test"], list[Orderable]], ...]:
    return (("exam", case.exams), ("test", case.tests))


def menu(case: Case) -> list[protocol.MenuItem]:
    """What a contestant may order: names, costs and times, never the results."""
    return [
        protocol.MenuItem(id=i.id, name=i.name, kind=kind, cost_yuan=i.cost_yuan, minutes=i.minutes)
        for kind, items in _menu_sections(case)
        for i in items
    ]


class Practice:
    def __init__(
        self, res: Resources, send: Callable[[protocol.ServerMsg], None], *, name: str,
        staff: str = "",
    ) -> None:
        self.res = res
        self.send = send
        self.name = name
        # "organizer:admin" when a judge or organizer practises (they may open any case,
        # drafts and cases reserved by a round included); "" for a student.
        self.staff = staff
        self.round_id = ""
        self.attempt_id = ""
        self.attempt: Attempt | None = None
        self._answer_task: asyncio.Task[None] | None = None
        self._matching: asyncio.Task[None] | None = None  # the last turn's background match
        self._partial: list[str] = []
        self._scored: protocol.Scored | None = None
        self._queue_notice: protocol.AnswerQueued | None = None
        self._asked_at = 0.0
        self._fallback_ok = True
        self._engine_shown = res.engine.name  # the engine the contestant believes answers

    @property
    def actor(self) -> str:
        return self.staff or f"student:{self.name}"

    async def handle(self, msg: protocol.ClientMsg) -> None:
        if isinstance(msg, protocol.StartPractice):
            await self.start(msg)
        elif isinstance(msg, protocol.Ask):
            await self.ask(msg)
        elif isinstance(msg, protocol.Order):
            await self.order(msg)
        elif isinstance(msg, protocol.Submit):
            await self.submit(msg)

    def _require(self) -> Attempt:
        if self.attempt is None:
            raise RoundNotRunning(
                "还没有开始练习，请先选择病例。", "No practice round is running."
            )
        return self.attempt

    def _now(self) -> float:
        """The server time of a contestant's action; rounds also check their clock here."""
        return self.res.clock()

    async def _append(self, kind: str, payload: object, request_id: str | None) -> int | None:
        return await self.res.audit.append(
            round_id=self.round_id, attempt_id=self.attempt_id, actor=self.actor, kind=kind,
            payload=payload, request_id=request_id,
        )

    async def _progress(self) -> None:
        a = self._require()
        await self.res.live.set_progress(self.round_id, self.attempt_id, Progress(
            name=self.name, questions=len(a.questions), orders=len(a.orders),
            submitted=a.submission is not None,
            score=self._scored.card.total if self._scored else None,
            last_action=self.res.clock(),
        ))

    async def start(self, msg: protocol.StartPractice) -> None:
        # A student may open only a case released to practice and used by no round whose
        # results are unpublished; to them any other case does not exist.
        case = await require_practice(
            self.res.audit.pool, self.res.library, msg.case_id, staff=bool(self.staff)
        )
        await self.close()  # a new practice abandons the previous one on this connection
        now = self.res.clock()
        round_id, attempt_id = uuid.uuid4().hex, uuid.uuid4().hex
        await self.res.audit.append(
            round_id=round_id, attempt_id=attempt_id, actor=self.actor, kind="practice_started",
            payload={"case_id": case.id, "name": self.name, "engine": self.res.engine.name},
            request_id=msg.id,
        )
        self.round_id, self.attempt_id = round_id, attempt_id
        self.attempt = Attempt(case, self.res.library.matchers[case.id], started_at=now)
        self._scored = None
        await self.res.live.start_round(round_id, {
            "mode": "practice", "case_id": case.id, "status": "running", "started_at": now,
        })
        await self._progress()
        o = case.opening
        self.send(protocol.PracticeStarted(
            re=msg.id, round_id=round_id, attempt_id=attempt_id, case_id=case.id,
            title=case.title, patient=describe_patient(case),
            chief_complaint=o.chief_complaint, statement=o.statement, appearance=o.appearance,
            vitals=o.vitals, menu=menu(case),
        ))

    async def ask(self, msg: protocol.Ask) -> None:
        attempt = self._require()
        # The question is matched (for scoring) after it is recorded, in the background:
        # the answer needs only its text, so embedding it never delays the first token.
        asked = attempt.ask(msg.text, self._now())
        # The answer starts while the question is written to PostgreSQL, so the model's time
        # to first token hides the write; nothing is shown until the write has succeeded.
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._partial = []
        self._queue_notice = None
        self._asked_at = time.perf_counter()
        self._fallback_ok = self._fallback_allowed()
        task = asyncio.create_task(self._answer(asked.turn, asked.text, durable))
        try:
            if await self._append("asked", asked, msg.id) is None:
                raise DuplicateRequest(  # a retry of a question already asked: say so
                    "这个问题已经收到，不会重复提问。", "This question was already asked."
                )
        except BaseException:
            task.cancel()  # closes the upstream request the answer may have opened
            with contextlib.suppress(asyncio.CancelledError):
                await task
            attempt.retract(asked)
            raise
        self._match_later(attempt, [asked.turn])
        self._answer_task = task
        self.send(protocol.AnswerStart(re=msg.id, turn=asked.turn))
        durable.set_result(None)
        if self._queue_notice is not None:
            self.send(self._queue_notice)
            self._queue_notice = None
        await self._progress()

    def _match_later(self, attempt: Attempt, turns: list[int]) -> None:
        """Match `turns` for scoring in the background process, after those before them."""
        if not turns:
            return
        self._matching = asyncio.create_task(self._match(
            attempt, self.round_id, self.attempt_id, turns, self._matching
        ))

    async def _match(
        self, attempt: Attempt, round_id: str, attempt_id: str, turns: list[int],
        before: asyncio.Task[None] | None,
    ) -> None:
        if before is not None:
            await asyncio.wait([before])  # a follow-up is read against the turn before it
        for turn in turns:
            try:
                fact_ids = await self.res.background.match(
                    attempt.case.id, attempt.questions[turn - 1].text, attempt.topic(turn)
                )
                matched = attempt.matched(turn, fact_ids)
                await self.res.audit.append(
                    round_id=round_id, attempt_id=attempt_id, actor="system", kind="matched",
                    payload=matched, request_id=None,
                )
            except Exception:  # the turn stays unmatched and is matched again on rejoin
                log.exception("matching turn %s of attempt %s failed", turn, attempt_id)

    async def _matched(self) -> None:
        """Wait until every question so far is matched: scoring counts what they covered."""
        if self._matching is not None:
            await asyncio.wait([self._matching])

    def _fallback_allowed(self) -> bool:
        """Whether the scripted patient may stand in while the LLM is down (practice: yes)."""
        return True

    def _queued(self, turn: int, position: int, durable: asyncio.Future[None]) -> None:
        msg = protocol.AnswerQueued(turn=turn, position=position)
        if durable.done():
            self.send(msg)
        else:  # the question is not durable yet: answer_start must come first
            self._queue_notice = msg

    def _tell_engine(self, name: str) -> None:
        """Tell the contestant once when the scripted patient stands in, and when it stops."""
        if name == self._engine_shown:
            return
        self._engine_shown = name
        if name == "scripted":
            zh = "模型服务暂时不可用，病人由离线引擎扮演。"
            en = "The model service is unavailable for now; the offline patient is answering."
        else:
            zh = "模型服务已恢复，病人重新由模型扮演。"
            en = "The model service is back; the model plays the patient again."
        self.send(protocol.EngineNotice(engine=name, message=zh, message_en=en))

    async def _answer(self, turn: int, question: str, durable: asyncio.Future[None]) -> None:
        """Stream the patient's answer to the contestant, then record it (ok or failed)."""
        attempt = self._require()
        relay = self.res.engine
        view = self.res.library.view(attempt.case.id)
        gen = relay.generate(
            key=self.attempt_id, case=attempt.case, view=view, history=list(attempt.transcript),
            question=question, seed=turn, fallback_ok=self._fallback_ok,
            on_queued=lambda position: self._queued(turn, position, durable),
        )
        frames = Frames(
            lambda text: self.send(protocol.AnswerDelta(turn=turn, text=text)), self._asked_at
        )
        started = time.perf_counter()
        failure: LLMFailure | None = None
        crashed = False
        try:
            async with contextlib.aclosing(gen.texts()) as texts:
                async for text in texts:
                    if not durable.done():
                        await durable
                    if frames.engine is None:
                        frames.engine = gen.engine.name
                        self._tell_engine(gen.engine.name)
                    self._partial.append(text)
                    frames.push(text)
        except LLMFailure as exc:
            failure = exc
        except Exception:  # an engine bug must not leave the turn pending forever
            log.exception("patient engine %s failed", gen.engine.name)
            crashed = True
        if not durable.done():
            await durable  # ask() cancels this task if the question could not be recorded
        frames.flush()
        text = "".join(self._partial)
        finished = gen.finished
        if failure is None and not crashed and finished is not None:
            usage = finished.usage
            answer = Answered(
                turn=turn, text=text, status="ok", engine=gen.engine.name,
                tokens_in=usage.prompt_tokens if usage else 0,
                tokens_out=usage.completion_tokens if usage else 0,
                ttft_ms=finished.ttft_ms, duration_ms=finished.duration_ms,
                guard=gen.leak.kind if gen.leak else "",
            )
            end = protocol.AnswerEnd(
                turn=turn, status="ok", tokens_in=answer.tokens_in, tokens_out=answer.tokens_out,
                ttft_ms=finished.ttft_ms,
            )
        else:
            kind = failure.kind if failure else "dropped"
            zh = failure.message_zh if failure else "病人的回答中断了，请重新提问。"
            en = failure.message_en if failure else "The answer was cut off; ask again."
            answer = Answered(
                turn=turn, text=text, status="failed", engine=gen.engine.name, error=kind,
                duration_ms=(time.perf_counter() - started) * 1000,
            )
            end = protocol.AnswerEnd(
                turn=turn, status="failed", code=f"llm_{kind}", message=zh, message_en=en
            )
        try:
            await self._finish_turn(turn, answer)
        except Exception as exc:  # the answer was shown; say that it was not recorded
            self.send(ws_error(exc, None))
        self.send(end)

    async def _finish_turn(self, turn: int, answer: Answered) -> None:
        attempt = self._require()
        attempt.answered(turn, answer)
        self._answer_task = None
        await self._append("answered", answer, None)
        await self._progress()

    async def order(self, msg: protocol.Order) -> None:
        attempt = self._require()
        new = msg.item_id not in attempt.ordered_ids
        placed, item = attempt.order(msg.item_id, self._now())
        try:
            await self._append("ordered", placed, msg.id)
        except BaseException:
            if new:
                attempt.retract(placed)
            raise
        self.send(protocol.OrderResult(
            re=msg.id, item_id=item.id, name=item.name, kind=placed.kind, result=item.result,
            abnormal=item.abnormal, cost_yuan=item.cost_yuan,
        ))
        await self._progress()

    async def submit(self, msg: protocol.Submit) -> None:
        attempt = self._require()
        if self._scored is not None and self._scored.re == msg.id:
            self.send(self._scored)  # the retry of a submission already applied
            return
        # The card and the key go out with the score: not for a case that was withdrawn
        # from practice (made a draft, contest-only or reserved by a round) since it began.
        await require_practice(
            self.res.audit.pool, self.res.library, attempt.case.id, staff=bool(self.staff)
        )
        await self._matched()
        now = self.res.clock()
        submitted = attempt.submit(msg.diagnosis, msg.differentials, msg.reasoning, now)
        assert attempt.submission is not None
        card = score(attempt.case, attempt.questions, attempt.ordered_ids, attempt.submission)
        base = {"round_id": self.round_id, "attempt_id": self.attempt_id, "actor": self.actor}
        try:
            await self.res.audit.append_many([
                {**base, "kind": "submitted", "request_id": msg.id, "payload": submitted},
                {**base, "kind": "scored", "payload": scored_payload(card, score_versions(
                    self.res.settings, self.res.library, attempt.case.id, self.res.engine.name))},
            ])
        except BaseException:
            attempt.retract(submitted)
            raise
        rank, of = await self.res.live.post_score(
            f"practice:{attempt.case.id}", self.attempt_id, card.total
        )
        # The answer key and teaching points reach the student only now, after their own
        # submission, on their own card.
        self._scored = protocol.Scored(
            re=msg.id, card=card, rank=rank, of=of, key=protocol.answer_key_view(attempt.case)
        )
        await self._progress()
        await self._export(card)
        self.send(self._scored)

    async def _export(self, card: object) -> None:
        # The export is a copy for teachers; PostgreSQL already holds the record.
        try:
            events = await self.res.audit.events(attempt_id=self.attempt_id)
            doc = {"attempt_id": self.attempt_id, "name": self.name, "card": card,
                   "events": [{"kind": e.kind, "payload": e.payload} for e in events]}
            await self.res.objects.put(
                f"attempts/{self.attempt_id}.json", msgspec.json.encode(doc), "application/json"
            )
        except Exception:
            log.exception("export of attempt %s failed", self.attempt_id)

    async def close(self) -> None:
        """Stop an answer in flight (closing the upstream stream) and record it as failed."""
        task, self._answer_task = self._answer_task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        attempt = self.attempt
        if attempt is not None and attempt.pending_turn is not None:
            answer = Answered(
                turn=attempt.pending_turn, text="".join(self._partial), status="failed",
                engine=self.res.engine.name, error="disconnected",
            )
            try:
                await self._finish_turn(attempt.pending_turn, answer)
            except Exception:
                log.exception("could not record the interrupted answer")
