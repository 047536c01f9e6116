"""The client side of loadtest/relay_bench.py: students on WebSockets and direct SSE
readers, in worker processes so the load generator's own event-loop queueing stays small.

Each worker runs uvloop with picows for the WebSockets and an `asyncio.Protocol` for HTTP
(both read callbacks, no per-chunk coroutine) and reports its own CPU per chunk per arm.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import multiprocessing
import os
import time
import uuid
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any, cast

import msgspec

from loadtest.llm_sim import tokenize

CASE_ID = "r8c3vn"
QUESTION = "您哪里不舒服？什么时候开始的？"
# A content token in the simulator's SSE chunks (the role chunk has "role" first, the last "{}").
_CONTENT = b'"delta":{"content":'

class Stream:
    """One stream's observations, in the worker's perf_counter seconds."""

    __slots__ = ("arrivals", "counts", "done", "ended", "error", "payloads", "sent", "started")

    def __init__(self) -> None:
        self.sent = 0.0
        self.started = 0.0  # answer_start (server arm): the question is durable
        self.ended = 0.0
        self.arrivals: list[float] = []
        self.counts: list[int] = []  # content tokens per arrival (direct arm)
        self.payloads: list[bytes] = []
        self.error = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(self, error: str = "") -> None:
        if not self.done.done():
            self.error = error
            self.ended = time.perf_counter()
            self.done.set_result(None)

    def summary(self) -> dict[str, Any]:
        a = self.arrivals
        return {
            "ttft": (a[0] - self.sent) * 1000 if a else None,
            "start": (self.started - self.sent) * 1000 if self.started else None,
            "relay": (a[0] - self.started) * 1000 if a and self.started else None,
            "total": (self.ended - self.sent) * 1000,
            "gaps": [(y - x) * 1000 for x, y in itertools.pairwise(a)],
            "frames": len(a),
            "error": self.error,
        }


def _picows() -> tuple[Any, Any, Any, Any]:
    from picows import WSFrame, WSListener, WSMsgType, ws_connect

    return WSFrame, WSListener, WSMsgType, ws_connect


class WsClients:
    """Students on the server, one WebSocket each, one practice each, one ask per round."""

    def __init__(self) -> None:
        self.transports: list[Any] = []
        self.listeners: list[Any] = []
        self.asked = 0
        self.same_question = False

    async def connect(self, url: str, n: int, same_question: bool) -> None:
        self.same_question = same_question
        _, WSListener, WSMsgType, ws_connect = _picows()
        text = WSMsgType.TEXT

        class Listener(WSListener):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                self.stream: Stream | None = None

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                now = time.perf_counter()
                if frame.msg_type != text:
                    if frame.msg_type == WSMsgType.CLOSE:
                        transport.disconnect()
                    return
                data = frame.get_payload_as_bytes()
                s = self.stream
                head = data[:40]
                if s is not None:
                    if b'"answer_delta"' in head:
                        s.arrivals.append(now)
                        s.payloads.append(data)
                        return
                    if b'"answer_start"' in head:
                        s.started = now
                        return
                    if b'"answer_end"' in head:
                        s.payloads.append(data)
                        s.finish()
                        return
                    if b'"error"' in head:
                        s.finish(data.decode()[:200])
                        return
                if not self.reply.done():
                    self.reply.set_result(data)

            def on_ws_disconnected(self, transport: Any) -> None:
                if self.stream is not None:
                    self.stream.finish("disconnected")

        sem = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with sem:
                transport, listener = await ws_connect(Listener, url,
                                                       websocket_handshake_timeout=60)
                for msg, want in (
                    ({"type": "hello", "id": "h", "v": 1, "name": f"基准{i}"}, b'"welcome"'),
                    ({"type": "start_practice", "id": "s", "case_id": CASE_ID},
                     b'"practice_started"'),
                ):
                    listener.reply = asyncio.get_running_loop().create_future()
                    transport.send(text, json.dumps(msg).encode())
                    data = await asyncio.wait_for(listener.reply, 60)
                    if want not in data:
                        raise RuntimeError(f"expected {want!r}, got {data[:300]!r}")
                    if want == b'"welcome"' and b'"engine":"llm"' not in data:
                        raise RuntimeError(f"server is not on the llm engine: {data[:300]!r}")
                self.transports.append(transport)
                self.listeners.append(listener)

        await asyncio.gather(*(one(i) for i in range(n)))

    def streams(self) -> list[Stream]:
        out = []
        for lis in self.listeners:
            lis.stream = Stream()
            out.append(lis.stream)
        return out

    def fire(self, i: int, stream: Stream) -> None:
        _, _, WSMsgType, _ = _picows()
        self.asked += 1
        # A new question text each time, as students ask (the server matches every question
        # against the case's facts); --same-question repeats one, which the matcher caches.
        text = QUESTION if self.same_question else f"{QUESTION}（{self.asked}）"
        data = json.dumps({"type": "ask", "id": uuid.uuid4().hex, "text": text}).encode()
        stream.sent = time.perf_counter()
        self.transports[i].send(WSMsgType.TEXT, data)

    async def close(self) -> None:
        for t in self.transports:
            t.disconnect()
        await asyncio.gather(*(t.wait_disconnected() for t in self.transports),
                             return_exceptions=True)


class _Sse(asyncio.Protocol):
    """A streamed completion read off the socket: timestamps and content tokens per read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.status_ok = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        s = self.stream
        if s is None:
            return
        if not self.status_ok:
            if not data.startswith(b"HTTP/1.1 200"):
                s.finish(data[:200].decode(errors="replace"))
                return
            self.status_ok = True
        n = data.count(_CONTENT)
        if n:
            s.arrivals.append(now)
            s.counts.append(n)
        if b"data: [DONE]" in data:
            s.finish()
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.finish(f"connection lost: {exc!r}")


class DirectClients:
    """The same streams straight to the simulator: one fresh connection per stream and round."""

    def __init__(self) -> None:
        self.protocols: list[_Sse] = []
        self.request = b""

    async def connect(self, host: str, port: int, n: int, body: bytes) -> None:
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\naccept: text/event-stream\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode() + body
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(50)

        async def one() -> _Sse:
            async with sem:
                _, proto = await loop.create_connection(_Sse, host, port)
                return proto

        self.protocols = list(await asyncio.gather(*(one() for _ in range(n))))

    def streams(self) -> list[Stream]:
        out = []
        for p in self.protocols:
            p.stream = Stream()
            out.append(p.stream)
        return out

    def fire(self, i: int, stream: Stream) -> None:
        transport = self.protocols[i].transport
        assert transport is not None
        stream.sent = time.perf_counter()
        transport.write(self.request)

    async def close(self) -> None:
        for p in self.protocols:
            if p.transport is not None:
                p.transport.close()
        self.protocols = []


async def run_round(clients: WsClients | DirectClients, start_wall: float,
                    offsets: list[float], timeout: float, reply: str) -> dict[str, Any]:
    """Fire stream i at start_wall + offsets[i] (seconds); wait for every stream to end."""
    streams = clients.streams()
    cpu0 = sum(os.times()[:2])
    t0 = time.perf_counter() + (start_wall - time.time())
    for i in sorted(range(len(streams)), key=offsets.__getitem__):
        delay = t0 + offsets[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        clients.fire(i, streams[i])
    await asyncio.wait([s.done for s in streams], timeout=timeout)
    cpu = sum(os.times()[:2]) - cpu0  # before the bookkeeping below
    for s in streams:
        if not s.done.done():
            s.finish("timeout")
    out = [s.summary() for s in streams]
    # Where each reply token ends, in characters: maps a frame's text to the tokens it completes.
    ends = list(itertools.accumulate(len(t) for t in tokenize(reply)))
    for s, o in zip(streams, out, strict=True):
        if isinstance(clients, DirectClients):
            counts = s.counts
            o["tokens"] = sum(counts)
        else:
            deltas = [msgspec.json.decode(p) for p in s.payloads]
            end = deltas.pop() if deltas and deltas[-1].get("type") == "answer_end" else {}
            texts = [d.get("text", "") for d in deltas]
            o["text"] = "".join(texts)
            o["tokens"] = end.get("tokens_out", 0)
            if end.get("status") not in (None, "ok") and not o["error"]:
                o["error"] = f"answer_end {end.get('status')}: {end.get('code')}"
            cum = list(itertools.accumulate(len(t) for t in texts))
            done = [bisect.bisect_right(ends, c) for c in cum]
            counts = [b - a for a, b in zip([0, *done], done, strict=False)]
        # Each token's arrival since its request (a read or frame carrying k tokens delivers
        # all k at its arrival time): the view that coalescing cannot hide.
        o["token_times"] = [(t - s.sent) * 1000
                            for t, k in zip(s.arrivals, counts, strict=False) for _ in range(k)]
    return {"streams": out, "cpu": cpu}


async def worker_main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    ws: dict[str, WsClients] = {}  # per server under test
    direct = DirectClients()
    while True:
        cmd, args = await loop.run_in_executor(None, conn.recv)
        try:
            if cmd == "ws_connect":
                key, *rest = args
                clients = ws.setdefault(key, WsClients())
                await clients.connect(*rest)
                result: Any = len(clients.transports)
            elif cmd == "direct_connect":
                await direct.connect(*args)
                result = len(direct.protocols)
            elif cmd == "ws_round":
                key, *rest = args
                result = await run_round(ws[key], *rest)
            elif cmd == "direct_round":
                result = await run_round(direct, *args)
                await direct.close()
            elif cmd == "close":
                for clients in ws.values():
                    await clients.close()
                await direct.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(cmd)
            conn.send(("ok", result))
        except Exception as exc:
            conn.send(("error", repr(exc)))


def worker(conn: Connection) -> None:
    import uvloop  # the clients need a fast loop too, or they measure themselves

    uvloop.run(worker_main(conn))


class Workers:
    """Client processes; a command goes to all of them, each with its share of the streams."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker, args=(child,), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def call(self, cmd: str, args_per_worker: list[tuple[Any, ...]]) -> list[Any]:
        for c, args in zip(self.conns, args_per_worker, strict=True):
            c.send((cmd, args))
        out = []
        for c in self.conns:
            status, result = c.recv()
            if status != "ok":
                raise RuntimeError(f"client worker failed on {cmd}: {result}")
            out.append(result)
        return out

    def close(self) -> None:
        with suppress(Exception):
            self.call("close", [()] * len(self.conns))
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


# ---- orchestration ----------------------------------------------------------------------
