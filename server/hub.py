"""The WebSocket hub: one endpoint, a bounded send queue and a sender task per connection.

Principle 5: nothing awaits a slow client. `Connection.send` stamps the message
with the connection's next sequence number and the server time, then puts it in
the connection's bounded queue without waiting; a sender task drains the queue
into the socket. A client whose queue fills is told to resync and closed,
so it can never stall the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from server import metrics, protocol
from server.errors import ws_error
from server.practice import Practice
from server.resources import Resources

log = logging.getLogger("arena.hub")

CLOSE_SLOW = 4008  # application close code: the client fell too far behind


class Connection:
    def __init__(self, ws: WebSocket, queue_size: int, clock: Callable[[], float]) -> None:
        self.ws = ws
        self.id = uuid.uuid4().hex[:12]
        self.clock = clock
        self.seq = 0
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=queue_size)
        self.overflowed = False

    def send(self, msg: protocol.ServerMsg) -> None:
        """Queue a message for this client; never blocks."""
        if self.overflowed:
            return
        self.seq += 1
        msg.seq, msg.t = self.seq, round(self.clock() * 1000, 1)
        try:
            self.queue.put_nowait(protocol.encode(msg))
        except asyncio.QueueFull:
            self._overflow()

    def _overflow(self) -> None:
        self.overflowed = True
        metrics.SLOW_CLIENTS.inc()
        # Make room for the resync notice, then the sentinel that closes the socket.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.seq += 1
        notice = protocol.Resync(reason="send queue full", seq=self.seq, t=self.clock() * 1000)
        self.queue.put_nowait(protocol.encode(notice))
        self.queue.put_nowait(None)

    async def sender(self) -> None:
        while True:
            data = await self.queue.get()
            if data is None:
                await self.ws.close(CLOSE_SLOW)
                return
            await self.ws.send_text(data.decode())
            metrics.MESSAGES_OUT.inc()


async def endpoint(ws: WebSocket) -> None:
    res: Resources = ws.app.state.resources
    await ws.accept()
    conn = Connection(ws, res.settings.send_queue_size, res.clock)
    metrics.CONNECTIONS.inc()
    sender = asyncio.create_task(conn.sender(), name=f"sender-{conn.id}")
    practice: Practice | None = None
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            raw = frame.get("text") or frame.get("bytes") or b""
            try:
                msg = protocol.decode_client(raw, res.settings.max_frame_bytes)
            except protocol.FrameError as exc:
                conn.send(ws_error(exc, exc.re))
                continue
            metrics.MESSAGES_IN.labels(type(msg).__name__).inc()
            if practice is None:
                practice = _handshake(conn, res, msg)
                continue
            if isinstance(msg, protocol.Hello):
                conn.send(protocol.Error(
                    re=msg.id, code="bad_request", message="已经握手过了。",
                    message_en="Already said hello.",
                ))
                continue
            if isinstance(msg, protocol.Ping):
                conn.send(protocol.Pong(re=msg.id, client_time=msg.client_time))
                continue
            try:
                await practice.handle(msg)
            except Exception as exc:  # every failure of a request becomes an error reply
                conn.send(ws_error(exc, msg.id))
    except WebSocketDisconnect:
        pass
    finally:
        metrics.CONNECTIONS.dec()
        if practice is not None:
            # The contestant left: stop any answer in flight, which closes the upstream stream.
            await practice.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError, WebSocketDisconnect):
            await sender


def _handshake(conn: Connection, res: Resources, msg: protocol.ClientMsg) -> Practice | None:
    if not isinstance(msg, protocol.Hello):
        conn.send(protocol.Error(
            re=msg.id, code="hello_required", message="请先发送 hello 握手消息。",
            message_en="Send hello first.",
        ))
        return None
    if msg.v != protocol.PROTOCOL_VERSION:
        conn.send(protocol.Error(
            re=msg.id, code="bad_version",
            message=f"协议版本不兼容（服务器为 {protocol.PROTOCOL_VERSION}），请刷新页面。",
            message_en=f"Protocol version {msg.v} unsupported; server speaks "
            f"{protocol.PROTOCOL_VERSION}.",
        ))
        return None
    conn.send(protocol.Welcome(
        re=msg.id, v=protocol.PROTOCOL_VERSION, conn_id=conn.id, engine=res.engine.name,
    ))
    return Practice(res, conn.send, name=msg.name.strip() or "匿名学员")
