"""The bus: channels with sequence numbers and bounded history, across processes.

Principle 5, across processes. A publisher (any server process, or the CLI) runs
one Lua script that increments the channel's sequence number, appends the message
to the channel's Redis stream (capped at `history` entries) and publishes it, so
the three can never disagree.

Each channel also has an epoch, as in Centrifugo: a random id made by the same
script when it finds no sequence counter, that is when the channel starts or Redis
lost it (a flush, a restart without persistence, an eviction). Sequence numbers only
mean something within one epoch: after a loss the counter restarts at 1 and the
numbers a client holds name messages of a stream that is gone. The script writes the
epoch into every message body (`"epoch":"…"`), so a client learns it from what it
receives without any per-connection work, and gives it back when it reconnects.

Every process listens on one pattern subscription and hands each message to the
local connections following that channel; the message body is encoded once, and
each connection splices in its own `seq` and `t` (hub.Connection.send_body).

A client that reconnects, to this process or another, says the last channel
sequence number it saw, and its epoch; `replay` returns what it missed from the
stream, or a `Gap` when the epoch is not the channel's current one or the gap is
older than the history (the client is told to reload the state). A position without
an epoch (an old client) is replayed by number alone, as before epochs existed.

Boards are not history channels: each board message is the whole board with a
version number, so only the latest matters (`publish_latest`).

Each process also subscribes to a channel of its own name (`instance`), so any
process can tell at once whether another is still alive (`alive`): Redis drops a
dead process's subscriptions as soon as its connection closes, even after SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import redis.asyncio as redis

log = logging.getLogger("arena.bus")

# KEYS: seq counter, epoch, stream, pub/sub channel. ARGV: body, history length, a fresh
# epoch (made by the caller: script randomness is not random on every server version).
# A missing counter starts a new epoch, and drops whatever stream survived without it
# (its entry ids would be above the restarted counter, so XADD would refuse them).
# The stream entry id is the sequence number itself, so XRANGE by seq is exact.
_PUBLISH = """
local epoch = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  epoch = false
end
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
end
local seq = redis.call('INCR', KEYS[1])
local body = ARGV[1]
if string.sub(body, 1, 1) == '{' then
  local sep = ','
  if string.sub(body, 2, 2) == '}' then sep = '' end
  body = '{"epoch":"' .. epoch .. '"' .. sep .. string.sub(body, 2)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'b', body)
redis.call('PUBLISH', KEYS[4], seq .. '|' .. body)
return seq
"""

Handler = Callable[[str, int, str], None]  # channel, cseq (0 = latest-only), body
Missed = list[tuple[int, str]]  # (cseq, body) in order


class Gap(msgspec.Struct, frozen=True):
    """Why missed messages cannot be replayed: the client must reload the state."""

    reason: Literal["epoch", "trimmed"]  # another stream than the client's; history too short


_EPOCH_HEAD = '{"epoch":"'


def _epoch_of(body: str) -> str:
    """The epoch the publish script wrote at the head of a body ("" before epochs)."""
    if not body.startswith(_EPOCH_HEAD):
        return ""
    return body[len(_EPOCH_HEAD):body.find('"', len(_EPOCH_HEAD))]


class Bus:
    def __init__(self, client: redis.Redis, prefix: str, *, history: int = 500) -> None:
        self.r = client
        self.prefix = prefix
        self.history = history
        self.instance = uuid.uuid4().hex  # this process, for `alive`
        self._script = client.register_script(_PUBLISH)
        self._handlers: dict[str, set[Handler]] = {}
        # The last (epoch, cseq) handed to this process's followers of each history channel:
        # where a catch-up starts after a lost subscription, and what it must not repeat.
        self._last: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._ready = asyncio.Event()

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.prefix}{kind}:{channel}"

    async def start(self) -> None:
        """Subscribe to every channel of this deployment; returns once subscribed."""
        self._task = asyncio.create_task(self._listen(), name="bus-listener")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        # Resubscribes with a pause if Redis goes away, then catches up from the history on
        # what was published meanwhile: connected clients do not replay until they reconnect,
        # so a message the listener missed would otherwise be a silent gap for them.
        pattern = self._key("ch", "*")
        start = len(self._key("ch", ""))
        while True:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                await pubsub.subscribe(self._key("proc", self.instance))
                if self._ready.is_set():
                    # Subscribed first: what is published during the catch-up waits in the
                    # subscription, and what the catch-up already delivered is skipped.
                    await self._catch_up()
                self._ready.set()
                while True:
                    # A bounded wait, not timeout=None: older redis-py applies the command
                    # timeout (store.live) to a blocking read, so a channel quiet for 5 s
                    # would read as a lost subscription.
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg["type"] != "pmessage":
                        continue
                    self._deliver(msg["channel"][start:].decode(), msg["data"])
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except (OSError, redis.RedisError) as exc:
                log.warning("bus subscription lost (%r); resubscribing", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.5)

    async def _catch_up(self) -> None:
        """Deliver what this process's followers missed while the subscription was down."""
        for channel, (epoch, seq) in list(self._last.items()):
            missed = await self.replay(channel, seq, epoch)
            if missed == Gap(reason="epoch"):
                # Redis lost the channel: every message of its new stream is news here.
                missed = await self.replay(channel, 0)
            if isinstance(missed, Gap):
                log.warning("bus: %s lost messages beyond its history while resubscribing",
                            channel)
                continue
            log.info("bus: %s caught up on %d messages after resubscribing",
                     channel, len(missed))
            for cseq, body in missed:
                self._dispatch(channel, cseq, body)

    def _deliver(self, channel: str, data: bytes) -> None:
        if channel not in self._handlers:
            return
        head, _, raw = data.partition(b"|")
        # Text frames carry str: decode once here, not once per connection.
        self._dispatch(channel, int(head), raw.decode())

    def _dispatch(self, channel: str, cseq: int, body: str) -> None:
        handlers = self._handlers.get(channel)
        if not handlers:
            return
        if cseq:
            epoch = _epoch_of(body)
            last = self._last.get(channel)
            if last is not None and last[0] == epoch and cseq <= last[1]:
                return  # a catch-up delivered it already
            self._last[channel] = (epoch, cseq)
        for handler in list(handlers):
            try:
                handler(channel, cseq, body)
            except Exception:
                log.exception("bus handler for %s failed", channel)

    def subscribe(self, channel: str, handler: Handler) -> Callable[[], None]:
        """Call `handler` for each message on `channel` in this process; returns unsubscribe."""
        self._handlers.setdefault(channel, set()).add(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(channel)
            if handlers is not None:
                handlers.discard(handler)
                if not handlers:
                    del self._handlers[channel]
                    self._last.pop(channel, None)

        return unsubscribe

    async def publish(self, channel: str, body: bytes) -> int:
        """Publish with a sequence number, the channel's epoch and history; return the number."""
        seq = await self._script(
            keys=[self._key("seq", channel), self._key("epoch", channel),
                  self._key("hist", channel), self._key("ch", channel)],
            args=[body, self.history, uuid.uuid4().hex[:12]],
        )
        return int(seq)

    async def publish_latest(self, channel: str, body: bytes) -> None:
        """Publish a whole-state message (cseq 0) and keep it as the channel's latest."""
        async with self.r.pipeline(transaction=False) as p:
            p.set(self._key("latest", channel), body)
            p.publish(self._key("ch", channel), b"0|" + body)
            await p.execute()

    async def latest(self, channel: str) -> str | None:
        data: Any = await self.r.get(self._key("latest", channel))
        return None if data is None else str(data.decode())

    async def alive(self, instance: str) -> bool:
        """Whether the process named `instance` is running (its listener is subscribed)."""
        counts: Any = await self.r.pubsub_numsub(self._key("proc", instance))
        return bool(counts and counts[0][1])

    async def position(self, channel: str) -> tuple[str, int]:
        """The channel's (epoch, last sequence number); ("", 0) before its first message."""
        async with self.r.pipeline(transaction=True) as p:
            p.get(self._key("epoch", channel))
            p.get(self._key("seq", channel))
            epoch, seq = await p.execute()
        return (epoch.decode() if epoch else ""), int(seq or 0)

    async def replay(self, channel: str, since: int, epoch: str = "") -> Missed | Gap:
        """Messages after `since` in `epoch`, or the Gap that makes the client reload.

        An empty `epoch` (a client from before epochs) is taken to be the current one, and
        only a counter that went backwards betrays a loss, as it did before epochs.
        """
        async with self.r.pipeline(transaction=True) as p:
            p.get(self._key("epoch", channel))
            p.get(self._key("seq", channel))
            # At most `history` + 1 entries are ever needed; the read is bounded either way.
            p.xrange(self._key("hist", channel), min=f"{since + 1}-0", count=self.history + 1)
            current, last_raw, entries = await p.execute()
        if epoch and epoch != (current.decode() if current else ""):
            return Gap(reason="epoch")
        last = int(last_raw or 0)
        if since > last:  # the counter went backwards: Redis lost its data
            return Gap(reason="epoch")
        if since == last:
            return []
        if last - since > self.history:
            # Trimming is approximate (MAXLEN ~ keeps whole stream nodes); the promise is
            # `history` messages, so a longer gap reloads whatever the stream still holds.
            return Gap(reason="trimmed")
        out: Missed = [(int(eid.split(b"-")[0]), fields[b"b"].decode()) for eid, fields in entries]
        if not out or out[0][0] != since + 1 or out[-1][0] != last:
            return Gap(reason="trimmed")
        return out
