"""Token signing keys and revocations, as kept: PostgreSQL first, a Redis cache in front.

Keys (`token_keys`) and revocations (`revoked_tokens` by jti, `token_subjects` by
generation) are rows in PostgreSQL, so every process shares them and none is lost.
`RevocationCache` is the copy in Redis that every request reads (one round trip);
its `loaded` marker says the copy is whole, and is gone when Redis lost its data.
What a token is and when it is refused is server.services.tokens's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import asyncpg
import redis.asyncio as redis

Db = asyncpg.Pool | asyncpg.Connection

_KEYS_LOCK = 0x61726B79  # advisory lock: two processes starting at once make one key
_ACTIVE = "SELECT kid, secret FROM token_keys WHERE retired_at IS NULL ORDER BY created_at, kid"


# --- signing keys --------------------------------------------------------------------------


async def add_key(db: Db, kid: str, secret: bytes) -> None:
    await db.execute("INSERT INTO token_keys (kid, secret) VALUES ($1, $2)", kid, secret)


async def retire_key(db: Db, kid: str) -> bool:
    """Retire a key; False for an unknown or already retired one."""
    status = await db.execute(
        "UPDATE token_keys SET retired_at = now() WHERE kid = $1 AND retired_at IS NULL", kid
    )
    return status != "UPDATE 0"


async def all_keys(db: Db) -> list[asyncpg.Record]:
    """Every key, oldest first: kid, created_at, retired_at (NULL while in use)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT kid, created_at, retired_at FROM token_keys ORDER BY created_at, kid"
    )
    return rows


async def active_keys(
    pool: asyncpg.Pool, first: Callable[[], tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """(kid, secret) of every key not retired, oldest first; when there is none, the key
    `first()` makes is added (once, however many processes start together) and returned."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_ACTIVE)
        if not rows:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEYS_LOCK)
            rows = await conn.fetch(_ACTIVE)
            if not rows:
                await conn.execute(
                    "INSERT INTO token_keys (kid, secret) VALUES ($1, $2)", *first()
                )
                rows = await conn.fetch(_ACTIVE)
    return [(r["kid"], bytes(r["secret"])) for r in rows]


# --- revocations ---------------------------------------------------------------------------


async def revoke(db: Db, jti: str, subject: str, expires_at: float) -> None:
    """Record a revoked token (idempotent)."""
    await db.execute(
        "INSERT INTO revoked_tokens (jti, subject, expires_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (jti) DO NOTHING",
        jti, subject, expires_at,
    )


async def next_generation(db: Db, subject: str) -> int:
    """Move the subject's generation on by one (from 0); return the new one."""
    generation = await db.fetchval(
        "INSERT INTO token_subjects (subject, generation) VALUES ($1, 1)"
        " ON CONFLICT (subject) DO UPDATE SET generation = token_subjects.generation + 1"
        " RETURNING generation",
        subject,
    )
    return int(generation)


async def live_revocations(
    db: Db, now: float
) -> tuple[list[tuple[str, float]], list[tuple[str, int]]]:
    """([(jti, expires_at)] of revoked tokens not yet expired at `now`,
    [(subject, generation)] of every subject ever revoked)."""
    revoked = await db.fetch(
        "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1", now
    )
    subjects = await db.fetch("SELECT subject, generation FROM token_subjects")
    return ([(r["jti"], r["expires_at"]) for r in revoked],
            [(r["subject"], r["generation"]) for r in subjects])


class RevocationCache:
    """The revocations in Redis, under `prefix`: one key per revoked jti (expiring with
    the token), one per subject's generation, and the `loaded` marker."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix

    def _revoked_key(self, jti: str) -> str:
        return f"{self.prefix}revoked:{jti}"

    def _generation_key(self, subject: str) -> str:
        return f"{self.prefix}gen:{subject}"

    async def revoke(self, jti: str, ttl: int) -> None:
        await self.r.set(self._revoked_key(jti), 1, ex=ttl)

    async def set_generation(self, subject: str, generation: int) -> None:
        await self.r.set(self._generation_key(subject), generation)

    async def read(self, jti: str, subject: str) -> tuple[bool, bool, int]:
        """(whether the cache is whole, whether `jti` is revoked, the subject's generation)
        in one round trip."""
        keys = [f"{self.prefix}loaded", self._revoked_key(jti), self._generation_key(subject)]
        loaded, revoked, generation = await self.r.mget(keys)
        return loaded is not None, revoked is not None, int(generation or 0)

    async def fill(
        self, revoked: list[tuple[str, float]], subjects: list[tuple[str, int]], now: float
    ) -> None:
        """Write what `live_revocations` read, then mark the cache whole."""
        async with self.r.pipeline(transaction=False) as p:
            for jti, expires_at in revoked:
                p.set(self._revoked_key(jti), 1, ex=max(1, math.ceil(expires_at - now)))
            for subject, generation in subjects:
                # NX: a reissue that raced ahead of this refill already wrote a newer one.
                p.set(self._generation_key(subject), generation, nx=True)
            p.set(f"{self.prefix}loaded", 1)
            await p.execute()
