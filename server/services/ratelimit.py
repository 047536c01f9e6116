"""Rate limits that hold across every server process: counted in Redis by `limits`.

Each limit is a `limits` rule ("10/minute") from settings, counted in a moving window
under the app's Redis prefix, so two processes behind one load balancer share one
count. What is limited, and keyed by what (settings.py documents the numbers):

- sign-in failures per client address and per client address + username, and join-code
  failures per client address: only wrong answers count, so a classroom behind one NAT
  address redeeming 200 right codes at once is never refused, while guessing stops
  after a few tries (the check runs before the password hash, so a locked-out address
  costs no scrypt time either);
- account creation per organizer;
- questions (`ask`) per contestant or practice connection: each may start an LLM
  generation; practice questions also per client address, since reconnecting starts a
  new connection's allowance.

A refusal is `RateLimited` (HTTP 429 with Retry-After; a WebSocket error reply), and
counted in `arena_rate_limited_total{limit}`.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as redis
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from arena.errors import RateLimited
from server import metrics
from server.settings import Settings


class RateLimiter:
    """The named limits of one deployment, on its Redis connection pool."""

    def __init__(self, client: redis.Redis, prefix: str, settings: Settings) -> None:
        # The storage shares the app's pool: no second set of connections to Redis.
        storage = RedisStorage(
            "redis://", implementation="redispy", key_prefix=f"{prefix}limits",
            connection_pool=client.connection_pool,  # type: ignore[arg-type]  # typed too narrowly
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self.rules: dict[str, RateLimitItem] = {
            "login": parse(settings.login_limit),
            "login_address": parse(settings.login_address_limit),
            "join": parse(settings.join_limit),
            "account": parse(settings.account_limit),
            "ask": parse(settings.ask_limit),
            "practice_address": parse(settings.practice_address_ask_limit),
        }

    async def hit(self, name: str, *key: str) -> None:
        """Count one attempt against limit `name` for `key`; RateLimited if over it."""
        rule = self.rules[name]
        if not await self._limiter.hit(rule, name, *key):
            await self._refuse(name, rule, key)

    async def check(self, name: str, *key: str) -> None:
        """RateLimited if limit `name` is already used up for `key`; counts nothing.

        For limits on failures: check before the attempt, `hit` after a failed one.
        """
        rule = self.rules[name]
        if not await self._limiter.test(rule, name, *key):
            await self._refuse(name, rule, key)

    async def _refuse(self, name: str, rule: RateLimitItem, key: tuple[str, ...]) -> None:
        metrics.RATE_LIMITED.labels(name).inc()
        stats = await self._limiter.get_window_stats(rule, name, *key)
        # `limits` stamps its windows with the wall clock; so must the wait we announce.
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"操作过于频繁，请 {wait} 秒后再试。",
            f"Too many attempts; please try again in {wait} s.",
            retry_after=wait,
        )
