"""A turn: one question, its answer streamed token by token, and a durable result.

Practice and contest sessions both ask through a `Turn`; what differs between them
(the clock check, whether the scripted patient may stand in, the progress row) is
passed in, not overridden.

The answer starts while the question is written to PostgreSQL, so the model's time
to first token hides the write; nothing is shown until the write has succeeded, and
if it fails the answer is cancelled (closing the upstream stream) and the attempt is
as it was. When the answer ends, its result is recorded; if PostgreSQL is away at
that moment the turn keeps retrying in the background and the contestant is told,
so a question can be asked again as soon as PostgreSQL is back: no turn is left
pending for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from arena.attempt import Answered
from arena.errors import DuplicateRequest, TurnInProgress
from server import protocol
from server.patient.llm import LLMFailure
from server.patient.relay import Frames
from server.sessions.client import Report
from server.sessions.context import Context
from server.sessions.journal import Journal

log = logging.getLogger("arena.turn")

ANSWERING_TTL_S = 30  # how long "this attempt is being answered" outlives a silent process
CLOSE_RECORD_S = 3.0  # how long closing waits to record an interrupted answer
RETRY_MAX_S = 5.0  # the longest pause between tries to record an answer's result


class Turn:
    def __init__(
        self, ctx: Context, journal: Journal, send: Callable[[protocol.ServerMsg], None],
        report: Report, *, fallback_ok: Callable[[], bool],
        on_change: Callable[[], Awaitable[None]], mark_answering: bool = False,
    ) -> None:
        self.ctx = ctx
        self.journal = journal
        self.send = send
        self.report = report
        self.fallback_ok = fallback_ok
        self.on_change = on_change
        # A contest marks in Redis which process answers, so a rejoin elsewhere can tell.
        self.mark_answering = mark_answering
        self._task: asyncio.Task[None] | None = None
        self._partial: list[str] = []
        self._queue_notice: protocol.AnswerQueued | None = None
        self._asked_at = 0.0
        self._recording = False  # the answer has ended; its result waits for PostgreSQL
        self._engine_shown = ctx.engine.name  # the engine the contestant believes answers

    @property
    def partial(self) -> str:
        """What the contestant has seen of the answer in flight."""
        return "".join(self._partial)

    @property
    def streaming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def ask(self, msg: protocol.Ask, now: float) -> None:
        attempt = self.journal.attempt
        if self._recording:
            raise TurnInProgress(
                "上一个回答还没有保存（服务暂时不可用），恢复后即可继续提问。",
                "The last answer is not saved yet (a service is away); ask again shortly.",
            )
        if self.streaming:
            raise TurnInProgress(
                "病人还在回答上一个问题，请稍候。", "The patient is still answering."
            )
        asked = attempt.ask(msg.text, now)  # decides; the attempt changes once it is durable
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._partial = []
        self._queue_notice = None
        self._asked_at = time.perf_counter()
        fallback_ok = self.fallback_ok()
        task = self._task = asyncio.create_task(
            self._answer(asked.turn, asked.text, durable, fallback_ok)
        )
        try:
            if not await self.journal.record(asked, msg.id):
                raise DuplicateRequest(  # a retry of a question already asked: say so
                    "这个问题已经收到，不会重复提问。", "This question was already asked."
                )
        except BaseException:
            # The answer waits on `durable` before it shows anything: fail that wait too, so
            # the answer ends even where its cancellation is lost on the way (a lost one kept
            # this `await task`, and with it the connection and a SIGTERM, waiting for good).
            durable.cancel()
            task.cancel()  # closes the upstream request the answer may have opened
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        self.journal.match_later([asked.turn], after=task)
        self.send(protocol.AnswerStart(re=msg.id, turn=asked.turn))
        durable.set_result(None)
        if self._queue_notice is not None:
            self.send(self._queue_notice)
            self._queue_notice = None
        await self.on_change()

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

    async def _answer(
        self, turn: int, question: str, durable: asyncio.Future[None], fallback_ok: bool
    ) -> None:
        if self.mark_answering:
            with contextlib.suppress(Exception):  # a hint for rejoins, not a requirement
                await self.ctx.live.mark_answering(
                    self.journal.attempt_id, ANSWERING_TTL_S, self.ctx.bus.instance)
        try:
            answer, end = await self._stream(turn, question, durable, fallback_ok)
            await self._record(answer)
            self.send(end)
        finally:
            if self.mark_answering:
                with contextlib.suppress(Exception):
                    await self.ctx.live.clear_answering(self.journal.attempt_id)

    async def _stream(
        self, turn: int, question: str, durable: asyncio.Future[None], fallback_ok: bool
    ) -> tuple[Answered, protocol.AnswerEnd]:
        """Stream the patient's answer to the contestant; returns its result and last frame."""
        attempt = self.journal.attempt
        gen = self.ctx.engine.generate(
            key=self.journal.attempt_id, case=attempt.case,
            view=self.ctx.library.view(attempt.case.id), history=list(attempt.transcript),
            question=question, seed=turn, fallback_ok=fallback_ok,
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
                    # Awaited even when done: a cancelled `durable` (the question was not
                    # recorded) must end the answer, not let it show.
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
        await durable  # ask() cancels it and this task if the question could not be recorded
        frames.flush()
        text = self.partial
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
            return answer, protocol.AnswerEnd(
                turn=turn, status="ok", tokens_in=answer.tokens_in,
                tokens_out=answer.tokens_out, ttft_ms=finished.ttft_ms,
            )
        kind = failure.kind if failure else "dropped"
        zh = failure.message_zh if failure else "病人的回答中断了，请重新提问。"
        en = failure.message_en if failure else "The answer was cut off; ask again."
        answer = Answered(
            turn=turn, text=text, status="failed", engine=gen.engine.name, error=kind,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return answer, protocol.AnswerEnd(
            turn=turn, status="failed", code=f"llm_{kind}", message=zh, message_en=en
        )

    async def _record(self, answer: Answered) -> None:
        """Record the answer's result, retrying while PostgreSQL is away: until it is in the
        log the turn stays open, and the contestant cannot ask the next question."""
        pause, told = 0.25, False
        self._recording = True
        try:
            while True:
                try:
                    await self.journal.record(
                        self.journal.attempt.answered(answer.turn, answer), None)
                    break
                except Exception as exc:
                    if not told:  # the answer was shown; say once that it is not saved yet
                        self.report(exc, None)
                        told = True
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_S)
        finally:
            self._recording = False
        with contextlib.suppress(Exception):
            await self.on_change()

    def adopt(self, answer: Answered) -> None:
        """An answer the replaced process streamed and recorded: show it and close the turn."""
        a = self.journal.attempt
        if self.streaming or a.pending_turn != answer.turn:
            return
        a.apply(answer)  # already durable: the other process recorded it
        self.send(protocol.AnswerDelta(turn=answer.turn, text=answer.text))
        self.send(protocol.AnswerEnd(turn=answer.turn, status=answer.status))

    async def interrupted(self, error: str) -> None:
        """Close a turn left pending in the log by a process that is gone."""
        a = self.journal.attempt
        if a.pending_turn is not None and not self.streaming:
            await self.journal.record(a.answered(a.pending_turn, Answered(
                turn=a.pending_turn, text="", status="failed", engine=self.ctx.engine.name,
                error=error,
            )), None)

    async def close(self) -> None:
        """Stop an answer in flight (closing the upstream stream) and record it as failed."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        a = self.journal.attempt
        if a.pending_turn is None:
            return
        answer = Answered(
            turn=a.pending_turn, text=self.partial, status="failed", engine=self.ctx.engine.name,
            error="disconnected",
        )
        try:  # bounded: closing must not hang on PostgreSQL (a rejoin closes it otherwise)
            await asyncio.wait_for(
                self.journal.record(a.answered(a.pending_turn, answer), None), CLOSE_RECORD_S)
        except Exception:
            log.exception("could not record the interrupted answer")
