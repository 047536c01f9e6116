"""The LLM endpoint over HTTP: the one module that knows its contract.

What goes over the wire is decided here: the streamed chat-completion request, the
statuses worth another attempt, the server-sent events of the answer and the error
events among them, and the connections that carry them. server/patient/llm.py asks for
an answer (`Upstream.open`) and reads decoded `Chunk`s, or a `Broken` naming what failed.

The SDK (`AsyncOpenAI`) still builds every request and maps HTTP errors and timeouts
before a stream starts; underneath it, `UpstreamPool` is an httpx2 transport of our own
whose connections are `asyncio.Protocol`s with httptools' C parser (the one uvicorn
serves with): a streamed response costs one callback per socket read and one future per
wait. `SseStream` reads the body straight from the connection (`Body`, handed over in the
response's extensions, as httpcore exposes its socket), every byte that has arrived per
await, and decodes each event with msgspec into the few fields the relay reads. It
stays because a same-run A/B (loadtest/relay_bench.py --against a tree whose Upstream
uses the SDK's own `DefaultAioHttpClient`, the same SSE decoding; docs/benchmarks.md,
"The rebuild (issue 11)") measured 144.8 us of server CPU per relayed token over this
pool against 177.1 us over aiohttp: the SDK's transport costs 22 % more, beyond the
10 % that would keep a hand-written pool. Should that change, this pool goes.

What the pool does not do, because an LLM endpoint does not need it: HTTP/2, proxies,
pipelining, request bodies streamed in parts, 1xx responses other than being skipped.

Timeouts come per request from httpx2 (`connect`, `read`, `pool`): `read` is the
longest silence allowed while a response is awaited or streamed, watched by one timer
per connection that is re-armed only when it fires, not per chunk.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Literal, cast

import httptools
import httpx2
import msgspec
import openai

from server.settings import Settings

Origin = tuple[str, str, int]  # scheme, host, port


class _Conn(asyncio.Protocol):
    """One connection to the endpoint, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False  # taken from the idle list for the current request
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.until_close = False  # no length, not chunked: the body ends with the connection
        self.complete = False
        self.keep_alive = False
        self.received = False  # any byte of the current response
        self.chunks: list[bytes] = []
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = 0.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._request: httpx2.Request | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last = self.loop.time()
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx2.RemoteProtocolError(f"bad response from the endpoint: {exc}"))
            self.close()
            return
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and self.until_close and self.error is None:
            self.complete = True
        if not self.complete and self.error is None and self._request is not None:
            if self.head_done:
                self._fail(httpx2.ReadError("the endpoint closed the connection mid-response"))
            else:
                self._fail(httpx2.RemoteProtocolError(
                    "the endpoint closed the connection without a response"
                ))
        self._stop_timer()
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim response: the real one follows
            self.headers = []
            return
        self.status = status
        self.head_done = True
        framed = (b"content-length", b"transfer-encoding")
        self.until_close = not any(name.lower() in framed for name, _ in self.headers)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            # Asked here: once the parser has moved past the message it answers False.
            self.keep_alive = self.parser.should_keep_alive()
            self._stop_timer()

    # used by the pool and Body
    def usable(self, now: float, expiry: float) -> bool:
        return not self.closed and now - self.idle_since < expiry

    def send(self, request: httpx2.Request, payload: bytes, read_timeout: float | None) -> None:
        self._reset()
        self._request = request
        if read_timeout is not None:
            self._timeout = read_timeout
            self._last = self.loop.time()
            self._timer = self.loop.call_at(self._last + read_timeout, self._check_silence)
        assert self.transport is not None
        self.transport.write(payload)

    async def wait(self) -> None:
        """Until more of the response arrived, it ended, or it failed."""
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            if self._request is not None and isinstance(error, httpx2.RequestError):
                error.request = self._request
            self.error = error
        self._wake()

    def _check_silence(self) -> None:
        self._timer = None
        if self.complete or self.closed:
            return
        due = self._last + self._timeout
        if self.loop.time() >= due:
            self._fail(httpx2.ReadTimeout(f"no data from the endpoint for {self._timeout:g} s"))
            self.close()
        else:
            self._timer = self.loop.call_at(due, self._check_silence)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._stop_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Body(httpx2.AsyncByteStream):
    """A response body as it arrives; closing it early closes the connection, which is
    how vLLM learns to abort the request."""

    def __init__(self, pool: UpstreamPool, conn: _Conn) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn

    async def read(self) -> bytes:
        """The next bytes of the body, every byte that has arrived; b"" at its end."""
        conn = self._conn
        if conn is None:
            return b""
        while True:
            chunks = conn.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                return data
            if conn.complete:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


def _timeouts(request: httpx2.Request) -> dict[str, float | None]:
    timeout = request.extensions.get("timeout")
    return timeout if isinstance(timeout, dict) else {}


class UpstreamPool(httpx2.AsyncBaseTransport):
    """At most `max_connections` connections, kept alive between requests for
    `keepalive_expiry` seconds and reused most-recent first."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 15.0) -> None:
        self.max_connections = max(1, max_connections)
        self.keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(self.max_connections)  # connections in use
        self._idle: dict[Origin, deque[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._ssl: ssl.SSLContext | None = None

    @property
    def open_connections(self) -> int:
        return len(self._busy) + sum(len(q) for q in self._idle.values())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = _timeouts(request)
        url = request.url
        scheme = url.scheme
        origin: Origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        payload = _serialise(request, await request.aread())
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx2.PoolTimeout(
                    "no free connection to the endpoint", request=request
                ) from None
        else:
            await self._slots.acquire()
        conn: _Conn | None = None
        try:
            conn = await self._open(origin, timeouts, request)
            conn.send(request, payload, timeouts.get("read"))
            while not conn.head_done:
                error = conn.error
                if error is not None:
                    conn.close()
                    if (
                        conn.reused and not conn.received
                        and isinstance(error, httpx2.RemoteProtocolError)
                    ):
                        # The endpoint closed a kept-alive connection as we reused it: it
                        # never read this request, so a fresh connection may send it again.
                        conn = await self._open(origin, timeouts, request, fresh=True)
                        conn.send(request, payload, timeouts.get("read"))
                        continue
                    raise error
                await conn.wait()
        except BaseException:
            if conn is not None:
                conn.close()  # cancelled or failed before the response: nothing to reuse
            self._slots.release()
            raise
        self._busy.add(conn)
        return httpx2.Response(
            conn.status,
            headers=conn.headers,
            stream=(body := Body(self, conn)),
            extensions={"http_version": b"HTTP/1.1", "arena_body": body},
        )

    async def _open(
        self, origin: Origin, timeouts: dict[str, float | None], request: httpx2.Request,
        *, fresh: bool = False,
    ) -> _Conn:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        if idle and not fresh:
            now = loop.time()
            while idle:
                conn = idle.pop()
                if conn.usable(now, self.keepalive_expiry):
                    conn.reused = True
                    return conn
                conn.close()
        scheme, host, port = origin
        context = None
        if scheme == "https":
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop, origin), host, port, ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from None
        except OSError as exc:
            raise httpx2.ConnectError(
                f"cannot connect to {host}:{port}: {exc}", request=request
            ) from exc
        return conn

    def release(self, conn: _Conn) -> None:
        """A response is done with (Body.aclose): keep its connection if it can carry
        another request, else close it."""
        if conn not in self._busy:
            return
        self._busy.discard(conn)
        self._slots.release()
        if conn.complete and conn.keep_alive and not conn.closed and conn.error is None:
            conn.idle_since = conn.loop.time()
            conn._request = None
            self._idle.setdefault(conn.origin, deque()).append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _serialise(request: httpx2.Request, content: bytes) -> bytes:
    url = request.url
    target = url.raw_path or b"/"
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += (name, b": ", value, b"\r\n")
    lines += (b"\r\n", content)
    return b"".join(lines)


# ---------------------------------------------------------------- the answer, as chunks

BrokenKind = Literal["connect", "timeout", "http", "stream_error", "dropped"]

# Worth another attempt before the first token: the endpoint may be restarting or overloaded.
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Broken(Exception):
    """The endpoint could not give (the rest of) an answer: what failed, in its terms."""

    def __init__(self, kind: BrokenKind, detail: str, status: int | None = None) -> None:
        self.kind: BrokenKind = kind
        self.detail = detail
        self.status = status
        super().__init__(detail)

    @property
    def retryable(self) -> bool:
        """Whether a second request may succeed (the engine asks only before any text)."""
        if self.kind == "http":
            return self.status in _RETRY_STATUSES
        # A read timeout before the first token means an overloaded engine: a second
        # request would only add to its queue and double the contestant's wait.
        return self.kind in ("connect", "stream_error", "dropped")


def _request_broken(exc: openai.APIError) -> Broken:
    """A failure before the response started streaming."""
    if isinstance(exc.__cause__, httpx2.ConnectTimeout):
        # Unlike a slow answer, a lost connection attempt says nothing about load: retry it.
        return Broken("connect", f"connect timeout ({exc.__cause__!r})")
    if isinstance(exc, openai.APITimeoutError):
        return Broken("timeout", exc.message)
    if isinstance(exc, openai.APIConnectionError):
        return Broken("connect", f"{exc.message} ({exc.__cause__!r})")
    if isinstance(exc, openai.APIStatusError):
        return Broken("http", exc.message, exc.status_code)
    return Broken("stream_error", exc.message)


# A streamed chat completion chunk, only the fields the relay reads (msgspec skips the
# rest without building them): decoding one costs ~2 us, the SDK's path ~40 us.
class ChunkDelta(msgspec.Struct):
    content: str | None = None


class Choice(msgspec.Struct):
    delta: ChunkDelta | None = None
    finish_reason: str | None = None


class TokenDetails(msgspec.Struct):
    cached_tokens: int | None = None


class ChunkUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: TokenDetails | None = None


class Chunk(msgspec.Struct):
    choices: list[Choice] = []
    usage: ChunkUsage | None = None
    error: Any = None  # an error event after HTTP 200 (vLLM, Ollama, proxies)


_decode_chunk = msgspec.json.Decoder(Chunk).decode
_encode_body = msgspec.json.Encoder().encode


class SseStream(openai.AsyncStream[object]):
    """The response of a streamed request as decoded chunks, for the relay's hot path.

    From the first byte on, the body is split into server-sent events here and each
    decoded straight into `Chunk`. The SDK's own iterator (a line decoder, `json.loads`
    and a dict per token, then its own generators around the body) was a third of the
    relay's CPU per token.
    """

    def __init__(self, *, response: httpx2.Response, **_: object) -> None:
        self.response = response  # AsyncStream.close() closes it

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """The answer's chunks until `[DONE]`; raises Broken."""
        buf = b""
        done = False
        # UpstreamPool puts the body in the extensions: each read hands over every byte
        # that has arrived, with no iterator layers between.
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
                        raise Broken("stream_error", f"bad chunk: {exc}") from exc
                    if name == "error" or chunk.error is not None:
                        raise Broken("stream_error", _error_message(chunk.error))
                    yield chunk
        except httpx2.TimeoutException as exc:
            raise Broken("timeout", f"no data for the read timeout ({exc!r})") from exc
        except httpx2.TransportError as exc:
            raise Broken("dropped", repr(exc)) from exc
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


class Upstream:
    """The endpoint for one process: a shared `AsyncOpenAI` client over `UpstreamPool`,
    holding up to `llm_max_connections` kept-alive connections, one per concurrent stream."""

    def __init__(self, settings: Settings, *, temperature: float) -> None:
        self.model = settings.llm_model
        self._max_tokens = settings.llm_max_tokens
        self._temperature = temperature
        self._priority = settings.llm_priority
        self._check_timeout = settings.llm_connect_timeout
        # Read = the longest silence allowed between streamed chunks (and before the first).
        timeout = httpx2.Timeout(settings.llm_read_timeout, connect=settings.llm_connect_timeout)
        pool = UpstreamPool(max_connections=settings.llm_max_connections)
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            max_retries=0,  # the engine retries, and only before the first token
            timeout=timeout,
            # DefaultAsyncHttpxClient keeps the SDK's other defaults (redirects).
            http_client=openai.DefaultAsyncHttpxClient(timeout=timeout, transport=pool),
        )

    def request(self, messages: Sequence[Any]) -> bytes:
        """One answer's request body, encoded once for every attempt (msgspec is faster
        than the SDK's json.dumps)."""
        body: dict[str, object] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
        }
        if self._priority is not None:
            body["priority"] = self._priority  # vLLM --scheduling-policy priority
        return _encode_body(body)

    async def open(self, payload: bytes) -> SseStream:
        """Send the request; the response once its head has arrived. Raises Broken."""
        try:
            stream = await self._client.post(
                "/chat/completions", cast_to=object, content=payload, stream=True,
                stream_cls=SseStream,
            )
        except openai.APIError as exc:
            raise _request_broken(exc) from exc
        assert isinstance(stream, SseStream)
        return stream

    async def complete_json(
        self, messages: Sequence[Any], schema: dict[str, Any], name: str, max_tokens: int,
        timeout: float,
    ) -> str:
        """One whole (not streamed) completion constrained to the JSON `schema` through
        `response_format` (structured output, as vLLM and Ollama serve it): its text, which
        the caller still validates. Raises Broken."""
        body: dict[str, object] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self._temperature,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": name, "schema": schema}},
        }
        try:
            reply = await self._client.post(
                "/chat/completions", cast_to=object, body=body,
                options={"timeout": httpx2.Timeout(timeout, connect=self._check_timeout)})
        except openai.APIError as exc:
            raise _request_broken(exc) from exc
        try:
            content = reply["choices"][0]["message"]["content"]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise Broken("http", "no message in the completion") from None
        if not isinstance(content, str):
            raise Broken("http", "the completion's content is not text")
        return content

    async def models(self) -> list[str]:
        """The model ids the endpoint serves. Raises Broken."""
        try:
            page = await self._client.with_options(timeout=self._check_timeout).models.list()
        except openai.APIError as exc:
            raise _request_broken(exc) from exc
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self._client.close()
