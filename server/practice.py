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
from server.errors import ws_error
from server.library import describe_patient
from server.live import Progress
from server.llm import Delta, Finished, LLMFailure
from server.resources import Resources

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
        self, res: Resources, send: Callable[[protocol.ServerMsg], None], *, name: str
    ) -> None:
        self.res = res
        self.send = send
        self.name = name
        self.round_id = ""
        self.attempt_id = ""
        self.attempt: Attempt | None = None
        self._answer_task: asyncio.Task[None] | None = None
        self._partial: list[str] = []
        self._scored: protocol.Scored | None = None

    @property
    def actor(self) -> str:
        return f"student:{self.name}"

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
        case = self.res.library.get(msg.case_id)
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
        asked = attempt.ask(msg.text, self._now())
        try:
            if await self._append("asked", asked, msg.id) is None:
                attempt.retract(asked)  # a retry of a question already asked: say so
                raise DuplicateRequest(
                    "这个问题已经收到，不会重复提问。", "This question was already asked."
                )
        except BaseException:
            attempt.retract(asked)
            raise
        self.send(protocol.AnswerStart(re=msg.id, turn=asked.turn))
        await self._progress()
        self._partial = []
        self._answer_task = asyncio.create_task(self._answer(asked.turn, asked.text))

    async def _answer(self, turn: int, question: str) -> None:
        """Stream the patient's answer to the contestant, then record it (ok or failed)."""
        attempt = self._require()
        engine = self.res.engine
        started = time.perf_counter()
        finished: Finished | None = None
        failure: LLMFailure | None = None
        try:
            async for ev in engine.stream(
                self.res.library.view(attempt.case.id), list(attempt.transcript), question
            ):
                if isinstance(ev, Delta):
                    self._partial.append(ev.text)
                    self.send(protocol.AnswerDelta(turn=turn, text=ev.text))
                else:
                    finished = ev
        except LLMFailure as exc:
            failure = exc
        except Exception:  # an engine bug must not leave the turn pending forever
            log.exception("patient engine %s failed", engine.name)
            finished = None
        text = "".join(self._partial)
        if failure is None and finished is not None:
            usage = finished.usage
            answer = Answered(
                turn=turn, text=text, status="ok", engine=engine.name,
                tokens_in=usage.prompt_tokens if usage else 0,
                tokens_out=usage.completion_tokens if usage else 0,
                ttft_ms=finished.ttft_ms, duration_ms=finished.duration_ms,
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
                turn=turn, text=text, status="failed", engine=engine.name, error=kind,
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
        now = self.res.clock()
        submitted = attempt.submit(msg.diagnosis, msg.differentials, msg.reasoning, now)
        assert attempt.submission is not None
        card = score(attempt.case, attempt.questions, attempt.ordered_ids, attempt.submission)
        base = {"round_id": self.round_id, "attempt_id": self.attempt_id, "actor": self.actor}
        try:
            await self.res.audit.append_many([
                {**base, "kind": "submitted", "request_id": msg.id, "payload": submitted},
                {**base, "kind": "scored", "payload": card},
            ])
        except BaseException:
            attempt.retract(submitted)
            raise
        rank, of = await self.res.live.post_score(
            f"practice:{attempt.case.id}", self.attempt_id, card.total
        )
        self._scored = protocol.Scored(re=msg.id, card=card, rank=rank, of=of)
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
