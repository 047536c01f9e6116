"""Live state in Redis/Valkey: round status, per-contestant progress, leaderboards.

Everything here is derived from the audit log and can be rebuilt from it; it
exists so boards and progress are cheap to read by every process. Keys carry
the configured prefix so several deployments (or test runs) share one server.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as redis


class Progress(msgspec.Struct, kw_only=True):
    name: str = ""
    questions: int = 0
    orders: int = 0
    submitted: bool = False
    score: float | None = None
    last_action: float = 0.0  # server time, seconds


class LiveState:
    def __init__(self, client: redis.Redis, prefix: str = "arena:") -> None:
        self.r = client
        self.prefix = prefix

    @classmethod
    def open(cls, url: str, prefix: str = "arena:") -> LiveState:
        return cls(redis.Redis.from_url(url, health_check_interval=30), prefix)

    async def close(self) -> None:
        await self.r.aclose()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def start_round(self, round_id: str, fields: dict[str, str | float]) -> None:
        await self.r.hset(self.key("round", round_id), mapping=dict(fields))  # type: ignore[arg-type]

    async def set_progress(self, round_id: str, attempt_id: str, progress: Progress) -> None:
        await self.r.hset(
            self.key("round", round_id, "progress"), attempt_id, msgspec.json.encode(progress)
        )

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
