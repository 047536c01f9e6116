"""The patient engines: an OpenAI-compatible LLM, or the offline scripted patient.

Both stream an answer as `Delta`s followed by exactly one `Finished`, so the hub
has one code path whichever engine plays the patient. A turn that cannot be
completed raises `LLMFailure`, carrying the text already streamed and a message
the contestant can read (principle 6: degrade, don't die).

The LLM engine talks to vLLM / Ollama through one shared `AsyncOpenAI` client per
process, whose transport (server/upstream.py) keeps a connection per expected
concurrent stream. Retries happen only before the first token: once the contestant
has seen text, a retry would stream a second, different answer after it. The
upstream response is closed whenever the consumer stops (its task is cancelled or it
closes the generator), so vLLM aborts the request instead of generating for nobody.
Chunks are decoded into small structs, not SDK models: the per-token cost is what the
relay's latency targets are made of. Queueing, the circuit breaker, the fallback and
the output guard wrap these engines in server/relay.py; `make_engine` returns that
wrapper.

Metrics: `LLM_TTFT` (upstream time to first token), `LLM_ERRORS` (one per failed turn,
by kind) and `LLM_TOKENS` (directions "prompt", "cached" and "completion"), all
labelled by engine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import httpx2
import msgspec
import openai

from arena.matching import QuestionMatcher
from arena.patient import PatientView, ScriptedPatient, Turn
from arena.prompt import build_messages
from server.metrics import LLM_ERRORS, LLM_TOKENS, LLM_TTFT
from server.patient.upstream import Body, UpstreamPool
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


# Worth another attempt before the first token: the endpoint may be restarting or overloaded.
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def _request_failure(exc: openai.APIError) -> LLMFailure:
    """A failure before the response started streaming."""
    if isinstance(exc.__cause__, httpx2.ConnectTimeout):
        # Unlike a slow answer, a lost connection attempt says nothing about load: retry it.
        return LLMFailure("connect", detail=f"connect timeout ({exc.__cause__!r})")
    if isinstance(exc, openai.APITimeoutError):
        return LLMFailure("timeout", detail=exc.message)
    if isinstance(exc, openai.APIConnectionError):
        return LLMFailure("connect", detail=f"{exc.message} ({exc.__cause__!r})")
    if isinstance(exc, openai.APIStatusError):
        return LLMFailure("http", detail=exc.message, status=exc.status_code)
    return LLMFailure("stream_error", detail=exc.message)


def _retryable(failure: LLMFailure) -> bool:
    if failure.kind == "http":
        return failure.status in _RETRY_STATUSES
    # A read timeout before the first token means an overloaded engine: a second request
    # would only add to its queue and double the contestant's wait.
    return failure.kind in ("connect", "stream_error", "dropped")


# A streamed chat completion chunk, only the fields the relay reads (msgspec skips the
# rest without building them): decoding one costs ~2 us, the SDK's path ~40 us.
class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _Details | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: Any = None  # an error event after HTTP 200 (vLLM, Ollama, proxies)


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_encode_body = msgspec.json.Encoder().encode


class _Broken(Exception):
    def __init__(self, kind: FailureKind, detail: str) -> None:
        self.kind: FailureKind = kind
        super().__init__(detail)


class SseStream(openai.AsyncStream[object]):
    """The response of a streamed request as decoded chunks, for the relay's hot path.

    The SDK still sends the request and maps HTTP errors and timeouts before the
    stream starts; from the first byte on, the body is split into server-sent events
    here and each decoded straight into `_Chunk`. The SDK's own iterator (a line
    decoder, `json.loads` and a dict per token, then its own generators around the
    body) was a third of the relay's CPU per token.
    """

    def __init__(self, *, response: httpx2.Response, **_: object) -> None:
        self.response = response  # AsyncStream.close() closes it

    async def chunks(self) -> AsyncGenerator[_Chunk, None]:
        buf = b""
        done = False
        # OpenAIEngine's transport (server.patient.upstream) puts the body in the extensions: each
        # read hands over every byte that has arrived, with no iterator layers between.
        source = self.response.extensions["arena_body"]
        assert isinstance(source, Body)
        try:
            while data := await source.read():
                if done:  # the rest of the body, read so the connection can be reused
                    continue
                buf += data
                if b"\r" in buf:
                    buf = buf.replace(b"\r\n", b"\n")
                *events, buf = buf.split(b"\n\n")
                for event in events:
                    payload, name = _sse_data(event)
                    if payload is None:
                        continue
                    if payload.startswith(b"[DONE]"):
                        done = True
                        break
                    try:
                        chunk = _decode_chunk(payload)
                    except msgspec.MsgspecError as exc:
                        raise _Broken("stream_error", f"bad chunk: {exc}") from exc
                    if name == "error" or chunk.error is not None:
                        raise _Broken("stream_error", _error_message(chunk.error))
                    yield chunk
        except httpx2.TimeoutException as exc:
            raise _Broken("timeout", f"no data for the read timeout ({exc!r})") from exc
        except httpx2.TransportError as exc:
            raise _Broken("dropped", repr(exc)) from exc
        finally:
            await source.aclose()  # not left to the garbage collector (see OpenAIEngine.stream)


def _sse_data(event: bytes) -> tuple[bytes | None, str]:
    """One event's data (None: a comment or keep-alive) and its name."""
    if event.startswith(b"data:") and b"\n" not in event:  # what vLLM and Ollama send
        return event[5:].lstrip(b" "), ""
    data: list[bytes] = []
    name = ""
    for line in event.split(b"\n"):
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return (b"\n".join(data) if data else None), name


def _error_message(error: object) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message else "error event in the stream"


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
        self._model = settings.llm_model
        self._max_tokens = settings.llm_max_tokens
        # The prompt may use what the context window leaves after the longest answer;
        # beyond it older turns are summarised (arena.prompt.summary_cut).
        self._prompt_budget = settings.llm_context_tokens - settings.llm_max_tokens
        self._attempts = attempts
        self._backoff = backoff_s
        self._temperature = temperature
        self._clock = clock
        self._check_timeout = settings.llm_connect_timeout
        self._priority = settings.llm_priority
        # Read = the longest silence allowed between streamed chunks (and before the first).
        timeout = httpx2.Timeout(settings.llm_read_timeout, connect=settings.llm_connect_timeout)
        # One shared client for the process. Its transport (server/upstream.py) holds up
        # to llm_max_connections kept-alive connections: one per concurrent stream.
        pool = UpstreamPool(max_connections=settings.llm_max_connections)
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            max_retries=0,  # we retry ourselves, and only before the first token
            timeout=timeout,
            # DefaultAsyncHttpxClient keeps the SDK's other defaults (redirects).
            http_client=openai.DefaultAsyncHttpxClient(timeout=timeout, transport=pool),
        )

    async def stream(
        self, view: PatientView, history: Sequence[Turn], question: str
    ) -> AsyncIterator[Delta | Finished]:
        body: dict[str, object] = {
            "model": self._model,
            "messages": build_messages(
                view, history, question, budget_tokens=self._prompt_budget
            ),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
        }
        if self._priority is not None:
            body["priority"] = self._priority  # vLLM --scheduling-policy priority
        # Encoded here, once for every attempt: msgspec is faster than the SDK's json.dumps.
        payload = _encode_body(body)
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                upstream = await self._client.post(
                    "/chat/completions", cast_to=object, content=payload, stream=True,
                    stream_cls=SseStream,
                )
            except openai.APIError as exc:
                failure = _request_failure(exc)
                if _retryable(failure) and attempt < self._attempts:
                    await asyncio.sleep(self._backoff * attempt)
                    continue
                LLM_ERRORS.labels(engine=self.name, kind=failure.kind).inc()
                raise failure from exc

            parts: list[str] = []
            ttft: float | None = None
            finish: str | None = None
            usage: Usage | None = None
            assert isinstance(upstream, SseStream)
            chunks = upstream.chunks()
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
            except _Broken as exc:
                failure = LLMFailure(exc.kind, partial="".join(parts), detail=str(exc))
                if parts or not _retryable(failure) or attempt >= self._attempts:
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
                await upstream.close()
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
            page = await self._client.with_options(timeout=self._check_timeout).models.list()
        except openai.APIStatusError as exc:
            return f"LLM endpoint answered HTTP {exc.status_code} to /models"
        except openai.APIError as exc:
            return f"LLM endpoint unreachable: {exc.message}"
        served = [m.id for m in page.data]
        if self._model not in served:
            return f"model {self._model!r} not served (endpoint has {served})"
        return None

    async def aclose(self) -> None:
        await self._client.close()
