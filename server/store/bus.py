"""The bus: channels with sequence numbers and bounded history, across processes.

Principle 5, across processes. A publisher (any server process, or the CLI) runs
one Lua script that increments the channel's sequence number, appends the message
to the channel's Redis stream (capped at `history` entries) and publishes it, so
the three can never disagree. Every process listens on one pattern subscription
and hands each message to the local connections following that channel; the
message body is encoded once, and each connection splices in its own `seq` and
`t` (hub.Connection.send_body).

A client that reconnects, to this process or another, says the last channel
sequence number it saw; `replay` returns what it missed from the stream, or None
when the gap is older than the history (the client is told to reload the state).

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
from typing import Any

import redis.asyncio as redis

log = logging.getLogger("arena.bus")

# KEYS: seq counter, stream, pub/sub channel. ARGV: body, history length.
# The stream entry id is the sequence number itself, so XRANGE by seq is exact.
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'b', ARGV[1])
redis.call('PUBLISH', KEYS[3], seq .. '|' .. ARGV[1])
return seq
"""

Handler = Callable[[str, int, str], None]  # channel, cseq (0 = latest-only), body


class Bus:
    def __init__(self, client: redis.Redis, prefix: str, *, history: int = 500) -> None:
        self.r = client
        self.prefix = prefix
        self.history = history
        self.instance = uuid.uuid4().hex  # this process, for `alive`
        self._script = client.register_script(_PUBLISH)
        self._handlers: dict[str, set[Handler]] = {}
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
        # Reconnects with a pause if Redis goes away; messages published meanwhile are
        # recovered by clients through `replay` (they see a gap in cseq).
        pattern = self._key("ch", "*")
        start = len(self._key("ch", ""))
        while True:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                await pubsub.subscribe(self._key("proc", self.instance))
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(timeout=None)
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

    def _deliver(self, channel: str, data: bytes) -> None:
        handlers = self._handlers.get(channel)
        if not handlers:
            return
        head, _, raw = data.partition(b"|")
        cseq = int(head)
        # Text frames carry str: decode once here, not once per connection.
        body = raw.decode()
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

        return unsubscribe

    async def publish(self, channel: str, body: bytes) -> int:
        """Publish with a sequence number and history; return the sequence number."""
        seq = await self._script(
            keys=[self._key("seq", channel), self._key("hist", channel), self._key("ch", channel)],
            args=[body, self.history],
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

    async def last_seq(self, channel: str) -> int:
        return int(await self.r.get(self._key("seq", channel)) or 0)

    async def replay(self, channel: str, since: int) -> list[tuple[int, str]] | None:
        """Messages after `since`, or None if some of them are no longer in the history."""
        last = await self.last_seq(channel)
        if since > last:  # the counter went backwards: Redis lost its data
            return None
        if since == last:
            return []
        if last - since > self.history:
            # Trimming is approximate (MAXLEN ~ keeps whole stream nodes); the promise is
            # `history` messages, so a longer gap reloads whatever the stream still holds.
            return None
        entries: Any = await self.r.xrange(self._key("hist", channel), min=f"{since + 1}-0")
        out: list[tuple[int, str]] = [
            (int(eid.split(b"-")[0]), fields[b"b"].decode()) for eid, fields in entries
        ]
        if not out or out[0][0] != since + 1:
            return None
        return out
