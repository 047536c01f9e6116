"""The LLM client's connections: HTTP/1.1 keep-alive pool under `AsyncOpenAI`.

`UpstreamPool` is an httpx2 transport, so the SDK still builds every request, maps
HTTP errors and timeouts, and our code keeps talking to one shared `AsyncOpenAI`
client. Underneath, each connection is an `asyncio.Protocol` with httptools' C parser
(the one uvicorn serves with): a streamed response costs one callback per socket read
and one future per wait. Under httpx's own pool (httpcore, anyio, h11) the relay
spent 100-170 us of CPU per token in all at 500 streams; over this one, 64-84 us
(docs/benchmarks.md). The relay reads the body straight
from `Body`, which the response carries in its extensions (httpcore exposes its
socket the same way).

What it does not do, because an LLM endpoint does not need it: HTTP/2, proxies,
pipelining, request bodies streamed in parts, 1xx responses other than being skipped.

Timeouts come per request from httpx2 (`connect`, `read`, `pool`): `read` is the
longest silence allowed while a response is awaited or streamed, watched by one timer
per connection that is re-armed only when it fires, not per chunk.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx2

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
