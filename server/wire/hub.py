"""The WebSocket hub: one endpoint, a bounded send queue and a sender task per connection.

Principle 5: nothing awaits a slow client. `Connection.send` stamps the message
with the connection's next sequence number and the server time, then puts it in
the connection's bounded queue without waiting; a sender task drains the queue
into the socket. A client whose queue fills is told to resync and closed,
so it can never stall the others.

Most sends need no task at all: when nothing is queued for a connection, the frame
is written at once (`_write_now`), which is what lets one process push a board to
thousands of sockets quickly. Only a socket whose buffer is full gets a sender
task, which finishes that frame and drains the queue behind it. So thousands of
idle spectators cost a deque each rather than a parked task and an asyncio.Queue,
which keeps memory per idle socket within budget (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from arena.errors import BadRequest
from server import metrics, protocol
from server.services.accounts import Claims
from server.services.control import round_channel
from server.services.tokens import revoked_token, subject_of
from server.sessions.contest import Player, Players
from server.sessions.context import Context
from server.sessions.practice import Practice
from server.sessions.watch import Watcher
from server.store.bus import Bus, Gap
from server.wire import access
from server.wire.errors import ws_error

log = logging.getLogger("arena.hub")

CLOSE_SLOW = 4008  # application close code: the client fell too far behind


class Connection:
    __slots__ = ("clock", "epochs", "id", "limit", "overflowed", "pending", "seq", "signed_out",
                 "task", "ws")

    def __init__(self, ws: WebSocket, queue_size: int, clock: Callable[[], float]) -> None:
        self.ws = ws
        self.id = uuid.uuid4().hex[:12]
        self.clock = clock
        self.seq = 0
        self.limit = queue_size
        # Text frames, ready to send; None: close after what came before.
        self.pending: deque[str | None] = deque()
        self.task: asyncio.Task[None] | None = None
        self.overflowed = False
        self.signed_out = False  # its token was revoked: it is being closed
        self.epochs: dict[str, str] = {}  # channel -> the epoch of the client's `since`

    def report(self, exc: BaseException, re: str | None) -> None:
        """Send the error reply for `exc` (worded by the one table in `errors`)."""
        self.send(ws_error(exc, re))

    def send(self, msg: protocol.ServerMsg) -> None:
        """Queue a message for this client; never blocks."""
        if self.overflowed:
            return
        self.seq += 1
        msg.seq, msg.t = self.seq, round(self.clock() * 1000, 1)
        self._put(protocol.encode(msg).decode())

    def _put(self, data: str | None) -> None:
        if self.task is None and data is not None:
            self._write_now(data)
            return
        if len(self.pending) >= self.limit:
            self._overflow()
            return
        self.pending.append(data)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    def _write_now(self, data: str) -> None:
        """Write a frame without a task when the socket can take it, else start the sender.

        uvicorn's send only suspends when the transport has paused writing (the
        client is not reading). So the send coroutine is stepped by hand: if it
        finishes, the frame is written and no task was created (the common case,
        worth a third of a 5,000-socket broadcast's CPU); if it suspends, a sender
        task finishes it and drains whatever is queued behind it.
        """
        coro = self.ws.send_text(data)
        try:
            blocked_on = coro.send(None)
        except StopIteration:
            metrics.MESSAGES_OUT.inc()
            return
        except (OSError, RuntimeError, WebSocketDisconnect):
            self.overflowed = True  # the client went away; the receive loop sees the close
            return
        self.task = asyncio.get_running_loop().create_task(
            self._drain(_resume(coro, blocked_on))
        )

    def send_body(self, body: str, cseq: int = 0) -> None:
        """Queue a message encoded once for many clients, splicing in seq, t (and cseq).

        `body` is an encoded ServerMessage whose seq, t and cseq were left at their
        defaults, which msgspec omits, so prefixing the fields keeps the JSON valid.
        """
        if self.overflowed:
            return
        self.seq += 1
        head = f'{{"seq":{self.seq},"t":{self.clock() * 1000:.1f},'
        if cseq:
            head += f'"cseq":{cseq},'
        self._put(head + body[1:])

    def follow(self, bus: Bus, channel: str) -> Callable[[], None]:
        """Forward every message on a history channel; returns the unsubscribe."""
        return bus.subscribe(channel, lambda ch, cseq, body: self.send_body(body, cseq))

    def follow_latest(self, bus: Bus, channel: str) -> Callable[[], None]:
        """Forward whole-state messages (boards): only the newest matters to a client."""
        return bus.subscribe(channel, lambda ch, cseq, body: self.send_body(body))

    async def replay(self, bus: Bus, channel: str, since: int, epoch: str | None = None) -> None:
        """Send what the client missed on `channel` since `since`, or tell it to reload.

        `since` counts in `epoch`, by default the one the client named for the channel at
        hello; a stream restarted since (Redis lost it) is never replayed as its sequel.
        """
        missed = await bus.replay(channel, since, self.epochs.get(channel, "")
                                  if epoch is None else epoch)
        if isinstance(missed, Gap):
            self.send(protocol.Reload(channel=channel) if missed.reason == "trimmed" else
                      protocol.Reload(channel=channel, reason="epoch changed",
                                      message="实时数据已重建，已重新加载最新状态。"))
            return
        for cseq, body in missed:
            self.send_body(body, cseq)

    def close_soon(self) -> None:
        """Close after what is queued has been sent (used when a newer tab takes over)."""
        self._put(None)

    def _overflow(self) -> None:
        self.overflowed = True
        metrics.SLOW_CLIENTS.inc()
        # Drop the backlog for the resync notice, then the sentinel that closes the socket.
        self.pending.clear()
        self.seq += 1
        notice = protocol.Resync(reason="send queue full", seq=self.seq, t=self.clock() * 1000)
        self.pending.extend((protocol.encode(notice).decode(), None))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self, unfinished: Awaitable[None] | None = None) -> None:
        try:
            if unfinished is not None:
                await unfinished
                metrics.MESSAGES_OUT.inc()
            while self.pending:
                data = self.pending.popleft()
                if data is None:
                    self.overflowed = True  # nothing more goes out on this socket
                    await self.ws.close(CLOSE_SLOW)
                    return
                await self.ws.send_text(data)
                metrics.MESSAGES_OUT.inc()
        except (OSError, RuntimeError, WebSocketDisconnect):
            # The client went away mid-send; the endpoint's receive loop sees the close.
            self.overflowed = True
            self.pending.clear()
        finally:
            self.task = None

    async def aclose(self) -> None:
        """Stop sending (the socket is gone)."""
        self.pending.clear()
        task = self.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError, WebSocketDisconnect):
                await task


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, None], blocked_on: Any
) -> Generator[Any, Any, None]:
    """Finish `coro`, which was stepped by hand and suspended waiting on `blocked_on`.

    Yielding that future parks the awaiting task exactly as the coroutine asked;
    once it resolves, `yield from` resumes the coroutine where it stopped.
    """
    try:
        yield blocked_on
    except BaseException:
        coro.close()
        raise
    yield from coro


Session = Practice | Player | Watcher

SIGNOUT_CHANNEL = "signout"


class SignedIn:
    """The open connections of people who said hello with a token, in this process.

    A token is checked at `hello`; a sign-out (logout, a reissued join code) published on
    SIGNOUT_CHANNEL by any process ends the connections it already opened, so a phone
    whose seat was taken back cannot go on playing on the socket it has.
    """

    def __init__(self, bus: Bus) -> None:
        self._claims: dict[Connection, Claims] = {}
        bus.subscribe(SIGNOUT_CHANNEL, self._heard)

    def add(self, conn: Connection, claims: Claims) -> None:
        self._claims[conn] = claims

    def discard(self, conn: Connection) -> None:
        self._claims.pop(conn, None)

    def _heard(self, channel: str, cseq: int, body: str) -> None:
        out = msgspec.json.decode(body, type=_Signout)
        for conn, claims in list(self._claims.items()):
            if subject_of(claims) != out.subject:
                continue
            if claims.jti == out.jti or claims.gen < out.generation:
                del self._claims[conn]
                conn.signed_out = True
                conn.report(revoked_token(), None)
                conn.close_soon()


class _Signout(msgspec.Struct, kw_only=True):
    subject: str
    jti: str = ""  # one token signed out
    generation: int = 0  # every token of the subject older than this


async def sign_out(res: Context, claims: Claims | None = None, *, subject: str = "",
                   generation: int = 0) -> None:
    """End the open connections of one token (`claims`: logout) or of every token of
    `subject` older than `generation` (a reissued join code), in every process."""
    out = (_Signout(subject=subject_of(claims), jti=claims.jti) if claims is not None
           else _Signout(subject=subject, generation=generation))
    await res.bus.publish_latest(SIGNOUT_CHANNEL, msgspec.json.encode(out))


def origin_allowed(ws: WebSocket, allowed: str) -> bool:
    """Whether the handshake's Origin is in `allowed` (comma-separated; empty = any).

    Browsers always send Origin on a WebSocket handshake, and a page on another site
    cannot forge it; a non-browser client without one is let through (it could claim any).
    """
    origins = {o.strip().rstrip("/").lower() for o in allowed.split(",") if o.strip()}
    origin = ws.headers.get("origin")
    return not origins or origin is None or origin.rstrip("/").lower() in origins


async def endpoint(ws: WebSocket) -> None:
    res: Context = ws.app.state.context
    players: Players = ws.app.state.players
    signed_in: SignedIn = ws.app.state.signed_in
    if not origin_allowed(ws, res.settings.allowed_origins):
        metrics.REQUESTS_REFUSED.labels("ws_origin").inc()
        await ws.close(1008)  # before accept: the server answers the handshake with 403
        return
    await ws.accept()
    conn = Connection(ws, res.settings.send_queue_size, res.clock)
    metrics.CONNECTIONS.inc()
    session: Session | None = None
    role: protocol.Role = "student"
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            if conn.signed_out:
                continue  # being closed: nothing it sends runs any more
            raw = frame.get("text") or frame.get("bytes") or b""
            try:
                msg = protocol.decode_client(
                    raw, res.settings.max_frame_bytes, res.settings.max_json_depth
                )
            except protocol.FrameError as exc:
                conn.send(ws_error(exc, exc.re))
                continue
            metrics.MESSAGES_IN.labels(type(msg).__name__).inc()
            try:
                if session is None:
                    session, role = await _handshake(conn, res, players, signed_in, msg)
                    continue
                access.check_message(role, msg)
                if isinstance(msg, protocol.Hello):
                    raise BadRequest("已经握手过了。", "Already said hello.")
                if isinstance(msg, protocol.Ping):
                    conn.send(protocol.Pong(re=msg.id, client_time=msg.client_time))
                    continue
                if isinstance(msg, protocol.Ask):
                    # Each question may start a generation: limited per the session's keys.
                    client = conn.ws.client
                    address = client.host if client else "unknown"
                    for name, key in session.rate_keys(conn.id, address):
                        await res.limiter.hit(name, key)
                await session.handle(msg)
            except Exception as exc:  # every failure of a request becomes an error reply
                conn.send(ws_error(exc, msg.id))
    except WebSocketDisconnect:
        pass
    finally:
        metrics.CONNECTIONS.dec()
        if session is not None:
            # Practice stops any answer in flight (closing the upstream stream); a contestant
            # keeps theirs for a grace period, to rejoin; a watcher stops following.
            await session.leave(conn)
        signed_in.discard(conn)
        await conn.aclose()


async def _handshake(
    conn: Connection, res: Context, players: Players, signed_in: SignedIn,
    msg: protocol.ClientMsg,
) -> tuple[Session | None, protocol.Role]:
    if not isinstance(msg, protocol.Hello):
        conn.report(protocol.FrameError(
            "hello_required", "请先发送 hello 握手消息。", "Send hello first."), msg.id)
        return None, "student"
    if msg.v != protocol.PROTOCOL_VERSION:
        conn.report(protocol.FrameError(
            "bad_version",
            f"协议版本不兼容（服务器为 {protocol.PROTOCOL_VERSION}），请刷新页面。",
            f"Protocol version {msg.v} unsupported; server speaks {protocol.PROTOCOL_VERSION}.",
        ), msg.id)
        return None, "student"
    if not msg.token:
        conn.send(protocol.Welcome(
            re=msg.id, v=protocol.PROTOCOL_VERSION, conn_id=conn.id, engine=res.engine.name,
        ))
        return Practice(res, conn.send, conn.report, name=msg.name.strip() or "匿名学员"), "student"
    claims = await res.tokens.verify(msg.token)  # Unauthorized (revoked too), TokenExpired
    conn.epochs = {ch: e for ch, e in msg.epoch.items() if ch in msg.since}
    signed_in.add(conn, claims)
    welcome = protocol.Welcome(
        re=msg.id, v=protocol.PROTOCOL_VERSION, conn_id=conn.id, engine=res.engine.name,
        role=claims.role, name=claims.name, round_id=claims.round_id,
    )
    if msg.practice and claims.role in access.STAFF:
        conn.send(welcome)
        staff = f"{claims.role}:{claims.sub}"
        return Practice(res, conn.send, conn.report, name=claims.name, staff=staff), "student"
    if claims.role == "contestant":
        player = await players.join(claims)
        welcome.round_id = player.round_id
        conn.send(welcome)
        await player.attach(conn, msg.since)
        return player, "contestant"
    watcher = Watcher(res, conn, claims)
    conn.send(welcome)
    if claims.role == "spectator":
        await watcher.watch(claims.round_id, msg.since.get(round_channel(claims.round_id), 0))
    return watcher, claims.role
