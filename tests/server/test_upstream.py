"""server.patient.upstream against a hand-written HTTP/1.1 server on loopback: the connection
pool, which meets what real endpoints sometimes do (close kept-alive connections, stall
mid-body, end a body by closing the connection), and the answer's server-sent events as
proxies and other servers may frame them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest

from server.patient.upstream import Broken, Chunk, Upstream, UpstreamPool
from server.settings import Settings

# Starts what it needs itself (or needs no service): the external pass skips it.
pytestmark = pytest.mark.own_services

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Endpoint:
    """Counts connections and requests; `handler` answers each request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.closed = asyncio.Event()  # a client closed its connection

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                await self.handler(reader, writer, self.requests)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def endpoint(handler: Handler) -> AsyncIterator[tuple[Endpoint, httpx2.AsyncClient]]:
    ep = Endpoint(handler)
    server = await asyncio.start_server(ep.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(max_connections=2)
    client = httpx2.AsyncClient(
        transport=pool, base_url=f"http://127.0.0.1:{port}",
        timeout=httpx2.Timeout(1.0, pool=0.2),
    )
    try:
        async with asyncio.timeout(10):
            yield ep, client
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


def chunked(*parts: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    writer.write(chunked(b"data: one\n\n", b"data: two\n\n"))
    await writer.drain()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_finished_response_leaves_its_connection_for_the_next_request() -> None:
    async def main() -> None:
        async with endpoint(ok) as (ep, client):
            for _ in range(3):
                r = await client.post("/v1/chat/completions", content=b"{}")
                assert r.status_code == 200 and r.content == b"data: one\n\ndata: two\n\n"
            assert (ep.connections, ep.requests) == (1, 3)

    run(main())


def test_a_kept_alive_connection_the_endpoint_closed_is_replaced_not_failed() -> None:
    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 2:  # the keep-alive race: the endpoint drops the reused connection
            writer.close()
            return
        await ok(reader, writer, n)

    async def main() -> None:
        async with endpoint(flaky) as (ep, client):
            assert (await client.post("/x", content=b"a")).status_code == 200
            assert (await client.post("/x", content=b"b")).status_code == 200
            # the second request went again on a fresh connection, unseen by the caller
            assert (ep.connections, ep.requests) == (2, 3)

    run(main())


def test_a_fresh_connection_closed_without_a_response_is_an_error() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.close()

    async def main() -> None:
        async with endpoint(rude) as (ep, client):
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.post("/x", content=b"a")
            assert ep.requests == 1  # not sent again: the endpoint may have acted on it

    run(main())


def test_bodies_framed_by_length_or_by_closing_are_read_whole() -> None:
    async def sized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        else:  # HTTP/1.0 style: no length, the body ends with the connection
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close")
            writer.close()
        await writer.drain()

    async def main() -> None:
        async with endpoint(sized) as (_, client):
            assert (await client.get("/a")).content == b"hello"
            assert (await client.get("/b")).content == b"until close"

    run(main())


def test_silence_mid_body_is_a_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        async with endpoint(stall) as (_, client):
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(httpx2.ReadTimeout):
                async with client.stream("POST", "/x", timeout=0.3) as r:
                    async for _ in r.aiter_bytes():
                        pass
            assert 0.25 < loop.time() - began < 2.0

    run(main())


def test_closing_a_response_early_closes_its_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:  # until the client goes away
            writer.write(b"6\r\ntoken \r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main() -> None:
        async with endpoint(endless) as (ep, client):
            async with client.stream("POST", "/x") as r:
                async for _ in r.aiter_bytes():
                    break
            await asyncio.wait_for(ep.closed.wait(), 2)  # the endpoint saw it at once
            pool = client._transport
            assert isinstance(pool, UpstreamPool) and pool.open_connections == 0

    run(main())


def test_when_every_connection_is_busy_a_request_waits_then_times_out() -> None:
    gate = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"ok")
        await writer.drain()

    async def main() -> None:
        async with endpoint(held) as (_, client):
            first = [await client.send(client.build_request("GET", "/"), stream=True)
                     for _ in range(2)]  # both connections of the pool
            with pytest.raises(httpx2.PoolTimeout):
                await client.get("/")
            gate.set()
            for r in first:
                assert await r.aread() == b"ok"
                await r.aclose()
            assert (await client.get("/")).content == b"ok"  # a connection is free again

    run(main())


def test_an_endpoint_that_is_not_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused

        async def main() -> None:
            async with httpx2.AsyncClient(transport=UpstreamPool(max_connections=1)) as client:
                with pytest.raises(httpx2.ConnectError):
                    await client.get(f"http://127.0.0.1:{port}/")

        run(main())


# ---------------------------------------------------------------- the answer's events


def sse(*parts: bytes) -> Handler:
    """An endpoint answering every request with these body parts, one HTTP chunk each."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.005)  # separate reads on the client's side
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handler


async def chunks_from(handler: Handler) -> tuple[list[Chunk], Broken | None]:
    ep = Endpoint(handler)
    server = await asyncio.start_server(ep.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(Settings(llm_base_url=f"http://127.0.0.1:{port}/v1",
                                 llm_read_timeout=1.0), temperature=0.0)
    got: list[Chunk] = []
    try:
        stream = await upstream.open(upstream.request([{"role": "user", "content": "?"}]))
        try:
            async for chunk in stream.chunks():
                got.append(chunk)
        except Broken as exc:
            return got, exc
        finally:
            await stream.close()
        return got, None
    finally:
        await upstream.aclose()
        await asyncio.wait_for(ep.closed.wait(), 2)  # the handler is done with the socket
        server.close()
        await server.wait_closed()


def texts(chunks: list[Chunk]) -> list[str | None]:
    return [c.choices[0].delta.content if c.choices and c.choices[0].delta else None
            for c in chunks]


def test_events_split_across_reads_and_written_with_crlf_decode_whole() -> None:
    one = b'data: {"choices":[{"delta":{"content":"\xe8\x83\xb8"}}]}'
    two = b'data: {"choices":[{"delta":{"content":"\xe7\x97\x9b"},"finish_reason":"stop"}]}'
    handler = sse(
        b": keep-alive\r\n\r\n",  # a comment: no event
        one[:17], one[17:] + b"\r\n\r\n" + two[:9],  # events cut mid-JSON and mid-field
        two[9:] + b"\r\n\r\n",
        b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    )

    got, broken = asyncio.run(chunks_from(handler))

    assert broken is None
    assert texts(got) == ["胸", "痛", None]
    assert got[1].choices[0].finish_reason == "stop"
    assert got[2].usage is not None and got[2].usage.prompt_tokens == 7


def test_an_error_event_after_http_200_breaks_the_stream_with_its_message() -> None:
    handler = sse(
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
        b'event: error\ndata: {"error":{"message":"engine dead"}}\n\n',
    )

    got, broken = asyncio.run(chunks_from(handler))

    assert texts(got) == ["a"]
    assert broken is not None and broken.kind == "stream_error"
    assert broken.detail == "engine dead"


def test_a_chunk_that_is_not_json_breaks_the_stream() -> None:
    got, broken = asyncio.run(chunks_from(sse(b"data: {not json\n\n")))

    assert got == [] and broken is not None and broken.kind == "stream_error"
