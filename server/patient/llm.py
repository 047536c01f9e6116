"""The patient engines: an OpenAI-compatible LLM, or the offline scripted patient.

Both stream an answer as `Delta`s followed by exactly one `Finished`, so the hub
has one code path whichever engine plays the patient. A turn that cannot be
completed raises `LLMFailure`, carrying the text already streamed and a message
the contestant can read (principle 6: degrade, don't die).

The LLM engine asks vLLM / Ollama for each answer through `Upstream`
(server/patient/upstream.py), the one module that knows the endpoint's HTTP contract;
this one decides what a failure means for the turn. Retries happen only before the
first token: once the contestant has seen text, a retry would stream a second,
different answer after it.
The upstream response is closed whenever the consumer stops (its task is cancelled or
it closes the generator), so vLLM aborts the request instead of generating for nobody.
Queueing, the circuit breaker, the fallback and the output guard wrap these engines in
server/patient/relay.py; `make_engine` there returns that wrapper.

Metrics: `LLM_TTFT` (upstream time to first token), `LLM_ERRORS` (one per failed turn,
by kind) and `LLM_TOKENS` (directions "prompt", "cached" and "completion"), all
labelled by engine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Literal, Protocol

import msgspec

from arena.matching import QuestionMatcher
from arena.patient import PatientView, ScriptedPatient, Turn
from arena.prompt import build_messages
from server.metrics import LLM_ERRORS, LLM_TOKENS, LLM_TTFT
from server.patient.upstream import Broken, Upstream
from server.settings import Settings


class Delta(msgspec.Struct, frozen=True):
    text: str


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None


class Finished(msgspec.Struct, frozen=True):
    finish_reason: str
    usage: Usage | None
    ttft_ms: float | None
    duration_ms: float


FailureKind = Literal[
    "connect", "timeout", "http", "stream_error", "length", "dropped", "unavailable", "busy"
]

_MESSAGES: dict[str, tuple[str, str]] = {
    "connect": (
        "病人暂时无法回答（模型服务连接失败），请稍后重试。",
        "The patient cannot answer right now (the model service is unreachable). Please retry.",
    ),
    "timeout": (
        "病人暂时无法回答（模型服务响应超时），请稍后重试。",
        "The patient cannot answer right now (the model service timed out). Please retry.",
    ),
    "http": (
        "病人暂时无法回答（模型服务返回错误），请稍后重试。",
        "The patient cannot answer right now (the model service returned an error). Please retry.",
    ),
    "stream_error": (
        "病人的回答中断了（模型服务出错），请重新提问。",
        "The patient's answer was cut off (the model service failed). Please ask again.",
    ),
    "length": (
        "病人的回答太长被截断了，请把问题问得更具体一些。",
        "The patient's answer was too long and was cut off. Please ask a narrower question.",
    ),
    "dropped": (
        "病人的回答中断了（与模型服务的连接断开），请重新提问。",
        "The patient's answer was cut off (the connection to the model service dropped). "
        "Please ask again.",
    ),
    "unavailable": (
        "病人暂时无法回答（模型服务暂时不可用），请稍后重试。",
        "The patient cannot answer right now (the model service is down for the moment). "
        "Please retry shortly.",
    ),
    "busy": (
        "病人暂时无法回答（排队的人太多），请稍后重试。",
        "The patient cannot answer right now (too many questions are waiting). Please retry.",
    ),
}
_BUSY = (
    "病人暂时无法回答（模型服务繁忙），请稍后重试。",
    "The patient cannot answer right now (the model service is busy). Please retry.",
)


class LLMFailure(Exception):
    """A patient turn that could not be completed; `partial` is what was streamed before."""

    def __init__(
        self, kind: FailureKind, *, partial: str = "", detail: str = "", status: int | None = None
    ) -> None:
        self.kind: FailureKind = kind
        self.partial = partial
        self.detail = detail
        self.status = status
        busy = status is not None and (status == 429 or status == 503)
        self.message_zh, self.message_en = _BUSY if busy else _MESSAGES[kind]
        super().__init__(f"{kind}: {detail}" if detail else kind)


class PatientEngine(Protocol):
    name: str  # "llm" or "scripted"

    def stream(
        self, view: PatientView, history: Sequence[Turn], question: str
    ) -> AsyncIterator[Delta | Finished]:
        """Deltas then exactly one Finished, or raises LLMFailure."""
        ...

    async def check(self) -> str | None:
        """None when ready, else a short reason (for /readyz)."""
        ...

    async def aclose(self) -> None: ...


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class ScriptedEngine:
    """The offline patient, streamed in small chunks so it looks and flows like the LLM."""

    name = "scripted"
    _SIZES = (2, 3, 4, 3)

    def __init__(
        self,
        settings: Settings,
        *,
        matchers: Mapping[str, QuestionMatcher] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._pause = settings.scripted_chunk_ms / 1000
        self._clock = clock
        # The case library's matchers, built once at load; scoring uses the same ones.
        self._matchers = matchers or {}
        self._patients: dict[str, ScriptedPatient] = {}

    async def _patient(self, view: PatientView) -> ScriptedPatient:
        patient = self._patients.get(view.case_id)
        if patient is None or patient.view is not view:
            matcher = self._matchers.get(view.case_id)
            # Building a matcher segments every example question (and loads jieba's
            # dictionary the first time): seconds of CPU that must not block the event loop.
            patient = await asyncio.to_thread(ScriptedPatient, view, matcher)
            self._patients[view.case_id] = patient
        return patient

    async def stream(
        self, view: PatientView, history: Sequence[Turn], question: str
    ) -> AsyncIterator[Delta | Finished]:
        start = self._clock()
        patient = await self._patient(view)
        # Matching embeds the question (milliseconds of CPU): off the event loop.
        text = (await asyncio.to_thread(patient.reply, question, history)).text
        ttft: float | None = None
        pos = 0
        for size in itertools.cycle(self._SIZES):
            if pos >= len(text):
                break
            if ttft is None:
                ttft = self._clock() - start
                LLM_TTFT.labels(engine=self.name).observe(ttft)
            else:
                await asyncio.sleep(self._pause)
            yield Delta(text[pos : pos + size])
            pos += size
        usage = Usage(prompt_tokens=len(question), completion_tokens=len(text))
        LLM_TOKENS.labels(engine=self.name, direction="prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(engine=self.name, direction="completion").inc(usage.completion_tokens)
        yield Finished(
            finish_reason="stop",
            usage=usage,
            ttft_ms=None if ttft is None else _ms(ttft),
            duration_ms=_ms(self._clock() - start),
        )

    async def check(self) -> str | None:
        return None

    async def aclose(self) -> None:
        self._patients.clear()


class OpenAIEngine:
    """The patient played by any OpenAI-compatible endpoint (vLLM, Ollama)."""

    name = "llm"

    def __init__(
        self,
        settings: Settings,
        *,
        attempts: int = 2,
        backoff_s: float = 0.25,
        temperature: float = 0.3,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        # The prompt may use what the context window leaves after the longest answer;
        # beyond it older turns are summarised (arena.prompt.summary_cut).
        self._prompt_budget = settings.llm_context_tokens - settings.llm_max_tokens
        self._attempts = attempts
        self._backoff = backoff_s
        self._clock = clock
        self._upstream = Upstream(settings, temperature=temperature)

    async def stream(
        self, view: PatientView, history: Sequence[Turn], question: str
    ) -> AsyncIterator[Delta | Finished]:
        payload = self._upstream.request(
            build_messages(view, history, question, budget_tokens=self._prompt_budget)
        )
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._upstream.open(payload)
            except Broken as exc:
                failure = LLMFailure(exc.kind, detail=exc.detail, status=exc.status)
                if exc.retryable and attempt < self._attempts:
                    await asyncio.sleep(self._backoff * attempt)
                    continue
                LLM_ERRORS.labels(engine=self.name, kind=failure.kind).inc()
                raise failure from exc

            parts: list[str] = []
            ttft: float | None = None
            finish: str | None = None
            usage: Usage | None = None
            chunks = response.chunks()
            try:
                async for chunk in chunks:
                    counted = chunk.usage
                    if counted is not None:
                        details = counted.prompt_tokens_details
                        usage = Usage(
                            prompt_tokens=counted.prompt_tokens,
                            completion_tokens=counted.completion_tokens,
                            cached_tokens=details.cached_tokens if details else None,
                        )
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    text = choice.delta.content if choice.delta is not None else None
                    if text:
                        if ttft is None:
                            ttft = self._clock() - start
                            LLM_TTFT.labels(engine=self.name).observe(ttft)
                        parts.append(text)
                        yield Delta(text)
                    if choice.finish_reason:
                        finish = choice.finish_reason
            except Broken as exc:
                failure = LLMFailure(exc.kind, partial="".join(parts), detail=exc.detail)
                if parts or not exc.retryable or attempt >= self._attempts:
                    LLM_ERRORS.labels(engine=self.name, kind=failure.kind).inc()
                    raise failure from exc
            else:
                break
            finally:
                # Runs on cancellation and on aclose() too: closing an unfinished response
                # closes its connection, which is how vLLM learns to abort the request.
                # The chunk generator is closed first, here, not left to the garbage
                # collector, which could finalize it while it runs.
                await chunks.aclose()
                await response.close()
            await asyncio.sleep(self._backoff * attempt)

        self._record_usage(usage)
        partial = "".join(parts)
        if finish == "stop":
            yield Finished(
                finish_reason=finish,
                usage=usage,
                ttft_ms=None if ttft is None else _ms(ttft),
                duration_ms=_ms(self._clock() - start),
            )
            return
        if finish == "length":
            failure = LLMFailure("length", partial=partial, detail="max_tokens reached")
        elif finish is None:
            failure = LLMFailure("dropped", partial=partial, detail="stream ended without finish")
        else:  # "abort", "error", "content_filter", ...
            failure = LLMFailure("stream_error", partial=partial, detail=f"finish_reason={finish}")
        LLM_ERRORS.labels(engine=self.name, kind=failure.kind).inc()
        raise failure

    def _record_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        LLM_TOKENS.labels(engine=self.name, direction="prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(engine=self.name, direction="completion").inc(usage.completion_tokens)
        if usage.cached_tokens:
            LLM_TOKENS.labels(engine=self.name, direction="cached").inc(usage.cached_tokens)

    async def check(self) -> str | None:
        try:
            served = await self._upstream.models()
        except Broken as exc:
            if exc.kind == "http":
                return f"LLM endpoint answered HTTP {exc.status} to /models"
            return f"LLM endpoint unreachable: {exc.detail}"
        model = self._upstream.model
        if model not in served:
            return f"model {model!r} not served (endpoint has {served})"
        return None

    async def aclose(self) -> None:
        await self._upstream.aclose()
