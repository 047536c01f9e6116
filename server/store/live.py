"""Live state in Redis/Valkey: round status, per-contestant progress, leaderboards.

Everything here is derived from the audit log and can be rebuilt from it; it
exists so boards and progress are cheap to read by every process. Keys carry
the configured prefix so several deployments (or test runs) share one server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import redis.asyncio as redis

from arena.leaderboard import Entry


class Progress(msgspec.Struct, kw_only=True):
    name: str = ""
    team: str = ""
    school: str = ""
    questions: int = 0
    orders: int = 0
    submitted: bool = False
    score: float | None = None
    last_action: float = 0.0  # server time, seconds
    submitted_at: float | None = None
    elapsed_s: float | None = None  # play time used at submission
    cost_yuan: float = 0.0

    def entry(self, attempt_id: str) -> Entry:
        return Entry(
            attempt_id=attempt_id, name=self.name, team=self.team, school=self.school,
            score=self.score, submitted_at=self.submitted_at, elapsed_s=self.elapsed_s,
            cost_yuan=self.cost_yuan, questions=self.questions, orders=self.orders,
            last_action=self.last_action,
        )


_progress = msgspec.json.Decoder(Progress)

COMMAND_TIMEOUT_S = 5.0

# Sets a counter to `ARGV[1]` (now, in ms) if it does not exist, then increments it. After
# Redis loses its data the board version restarts above every version sent before, so
# clients that ignore older boards never ignore the rebuilt ones.
_NEXT_VERSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('INCR', KEYS[1])
"""


class _ProgressWriter:
    """Progress rows written together: one round trip per batch of waiting writes.

    Every question, order and answer rewrites its contestant's row; 500 contestants
    asking at once would be 500 round trips, each a few tens of microseconds of the
    event loop. While one batch is being written the next collects, a later row for
    the same contestant replacing an earlier one (rows are whole snapshots, written in
    order), and every caller still waits until its row, or a newer one, is stored.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._rows: dict[str, dict[str, bytes]] = {}  # key -> attempt id -> row
        self._waiting: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    def add(self, key: str, attempt_id: str, row: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rows.setdefault(key, {})[attempt_id] = row
        self._waiting.append(fut)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return fut

    async def _write_all(self) -> None:
        try:
            while self._rows:
                rows, waiting = self._rows, self._waiting
                self._rows, self._waiting = {}, []
                try:
                    async with self.r.pipeline(transaction=False) as p:
                        for key, mapping in rows.items():
                            p.hset(key, mapping=mapping)  # type: ignore[arg-type]
                        await p.execute()
                except Exception as exc:
                    for fut in waiting:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for fut in waiting:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._writer = None


class LiveState:
    def __init__(self, client: redis.Redis, prefix: str = "arena:") -> None:
        self.r = client
        self.prefix = prefix
        self._next_version = client.register_script(_NEXT_VERSION)
        self._progress = _ProgressWriter(client)

    @classmethod
    def open(cls, url: str, prefix: str = "arena:") -> LiveState:
        # A blocking pool: a burst (hundreds of clients joining at once) waits for a free
        # connection instead of failing with "too many connections".
        # Every command gives up after COMMAND_TIMEOUT_S: a stalled Redis (stopped, or gone
        # without a reset) fails the request with a clear error instead of holding a turn
        # for good. (redis-py 8 defaults to 5 s as well; older versions wait forever.)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=20, health_check_interval=30,
            socket_timeout=COMMAND_TIMEOUT_S, socket_connect_timeout=COMMAND_TIMEOUT_S,
        )
        return cls(redis.Redis(connection_pool=pool), prefix)

    async def close(self) -> None:
        # A pool we built ourselves is not closed by Redis.aclose(); close it explicitly.
        await self.r.aclose(close_connection_pool=True)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def start_round(self, round_id: str, fields: dict[str, str | float]) -> None:
        await self.r.hset(self.key("round", round_id), mapping=dict(fields))  # type: ignore[arg-type]

    async def set_progress(self, round_id: str, attempt_id: str, progress: Progress) -> None:
        key = self.key("round", round_id, "progress")
        await self._progress.add(key, attempt_id, msgspec.json.encode(progress))

    async def progress(self, round_id: str) -> dict[str, Progress]:
        raw: dict[Any, Any] = await self.r.hgetall(self.key("round", round_id, "progress"))
        return {k.decode(): _progress.decode(v) for k, v in raw.items()}

    async def entries(self, round_id: str) -> list[Entry]:
        return [p.entry(a) for a, p in (await self.progress(round_id)).items()]

    async def restore_progress(self, round_id: str, progress: dict[str, Progress]) -> None:
        """Write rebuilt progress rows, keeping any row written since (it is newer: players
        write their row after the event is durable), and mark the round as built."""
        key = self.key("round", round_id, "progress")
        async with self.r.pipeline(transaction=True) as p:
            for attempt_id, row in progress.items():
                p.hsetnx(key, attempt_id, msgspec.json.encode(row))
            p.set(self.key("round", round_id, "built"), 1)
            await p.execute()

    async def is_built(self, round_id: str) -> bool:
        """False when the round's live state was never built here or Redis lost it."""
        return bool(await self.r.exists(self.key("round", round_id, "built")))

    async def claim_rebuild(self, round_id: str) -> bool:
        """One process rebuilds at a time; the claim expires in case that process dies."""
        return bool(await self.r.set(self.key("round", round_id, "rebuilding"), 1, nx=True, ex=10))

    async def next_board_version(self, round_id: str, now_ms: int) -> int:
        return int(await self._next_version(
            keys=[self.key("round", round_id, "board_version")], args=[now_ms]
        ))

    async def mark_answering(self, attempt_id: str, ttl_s: int, owner: str) -> None:
        """Say that this attempt's answer is being streamed by process `owner`."""
        await self.r.set(self.key("answering", attempt_id), owner, ex=ttl_s)

    async def clear_answering(self, attempt_id: str) -> None:
        await self.r.delete(self.key("answering", attempt_id))

    async def answering(self, attempt_id: str) -> str | None:
        """The process streaming this attempt's answer (it may have died since), or None."""
        owner: Any = await self.r.get(self.key("answering", attempt_id))
        return None if owner is None else bytes(owner).decode()

    async def post_score(self, board: str, member: str, score: float) -> tuple[int, int]:
        """Put `member` on a leaderboard (sorted set); return (rank from 1, board size)."""
        key = self.key("board", board)
        async with self.r.pipeline(transaction=True) as p:
            p.zadd(key, {member: score})
            p.zrevrank(key, member)
            p.zcard(key)
            result: list[Any] = await p.execute()
        _, rank, size = result
        return int(rank) + 1, int(size)

    async def check(self) -> str | None:
        try:
            await self.r.ping()
        except (OSError, redis.RedisError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None
