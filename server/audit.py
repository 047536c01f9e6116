"""The audit log: an append-only event table in PostgreSQL, the source of truth.

Principle 3: acknowledge only what is durable. Callers await `append` before
they reply to the client; Redis live state can always be rebuilt from here.
Migrations are the SQL files in server/migrations, applied in name order under
an advisory lock (several processes may start at once) and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import msgspec

log = logging.getLogger("arena.audit")

_MIGRATION_LOCK = 0x41524E41  # "ARNA": one migrator at a time across processes
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Event(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    round_id: str
    attempt_id: str | None
    actor: str
    kind: str
    request_id: str | None
    payload: dict[str, Any]
    at: float = 0.0  # when it was appended, seconds since the epoch (database clock)


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("server") / "migrations"
    files = sorted(
        (f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


class AuditLog:
    """Appends and reads events through one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, url: str, schema: str = "public", *, max_size: int = 10) -> AuditLog:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        if schema != "public":
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=max_size, server_settings={"search_path": schema},
            init=_init_connection,
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> list[str]:
        """Apply pending migrations in order; return the names applied now."""
        applied_now: list[str] = []
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                rows = await conn.fetch("SELECT version FROM schema_migrations")
                done = {r["version"] for r in rows}
                for version, sql in _migrations():
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version) VALUES ($1)", version
                        )
                    log.info("applied migration %s", version)
                    applied_now.append(version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return applied_now

    async def append(
        self,
        *,
        round_id: str,
        attempt_id: str | None,
        actor: str,
        kind: str,
        payload: Any,
        request_id: str | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> int | None:
        """Append one event; return its id, or None if this request id was already applied."""
        return await (conn or self.pool).fetchval(
            "INSERT INTO events (round_id, attempt_id, actor, kind, request_id, payload)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (round_id, attempt_id, kind, request_id) WHERE request_id IS NOT NULL"
            " DO NOTHING RETURNING id",
            round_id, attempt_id, actor, kind, request_id, payload,
        )

    @contextlib.asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[Any]:
        """A transaction holding a lock on `key` (a round or an attempt id) until commit.

        Commands that read history and then append (a round transition, a judge's
        override) run inside it, so two processes cannot both act on a stale state.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
            yield conn

    async def round_events(
        self, round_id: str, kinds: frozenset[str], conn: asyncpg.Connection | None = None
    ) -> list[Event]:
        """Events of a round whose kind is in `kinds`, in order."""
        rows = await (conn or self.pool).fetch(
            "SELECT * FROM events WHERE round_id = $1 AND kind = ANY($2::text[]) ORDER BY id",
            round_id, list(kinds),
        )
        return [_event(r) for r in rows]

    async def append_many(self, rows: list[dict[str, Any]]) -> None:
        """Append several events atomically (all or none)."""
        async with self.pool.acquire() as conn, conn.transaction():
            for r in rows:
                await conn.execute(
                    "INSERT INTO events (round_id, attempt_id, actor, kind, request_id, payload)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    r["round_id"], r.get("attempt_id"), r["actor"], r["kind"],
                    r.get("request_id"), r["payload"],
                )

    async def events(self, *, round_id: str | None = None, attempt_id: str | None = None
                     ) -> list[Event]:
        """Events of a round or an attempt, in the order they were appended."""
        if attempt_id is not None:
            rows = await self.pool.fetch(
                "SELECT * FROM events WHERE attempt_id = $1 ORDER BY id", attempt_id
            )
        else:
            rows = await self.pool.fetch(
                "SELECT * FROM events WHERE round_id = $1 ORDER BY id", round_id
            )
        return [_event(r) for r in rows]

    async def check(self) -> str | None:
        try:
            await self.pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


def _event(row: asyncpg.Record) -> Event:
    return Event(
        id=row["id"], round_id=row["round_id"], attempt_id=row["attempt_id"], actor=row["actor"],
        kind=row["kind"], request_id=row["request_id"], payload=row["payload"],
        at=row["created_at"].timestamp(),
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out through msgspec: structs encode directly, no json.dumps detour.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: msgspec.json.encode(v).decode(), decoder=msgspec.json.decode,
    )
