"""The audit log: an append-only event table in PostgreSQL, the source of truth.

Principle 3: acknowledge only what is durable. Callers await `append` before
they reply to the client; Redis live state can always be rebuilt from here.
Migrations are the SQL files in server/migrations, applied in name order under
an advisory lock (several processes may start at once) and recorded.
"""

from __future__ import annotations

import asyncio
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
# A server that stops answering (frozen, or its host unreachable) refuses nothing: without
# these, a statement or a connect waits for it forever, and with them so does everything
# queued behind (a contestant's requests, a SIGTERM). A statement of this app that takes
# longer on a healthy server is itself a fault; migrations, which may wait for another
# process's, set their own limit.
COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
MIGRATION_TIMEOUT_S = 3600.0
CLOSE_TIMEOUT_S = 3.0  # closing waits this long for writes in flight, then drops them
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


Row = tuple[str, str | None, str, str, str | None, Any]  # as in _INSERT_ONE's parameters

_CONFLICT = (
    " ON CONFLICT (round_id, attempt_id, kind, request_id) WHERE request_id IS NOT NULL"
    " DO NOTHING"
)
_INSERT_ONE = (
    "INSERT INTO events (round_id, attempt_id, actor, kind, request_id, payload)"
    " VALUES ($1, $2, $3, $4, $5, $6)" + _CONFLICT + " RETURNING id"
)
# Rows go in in input order (ORDER BY ord), so their bigserial ids ascend in that order;
# a row skipped as a repeated request still uses an id, but is not returned.
_INSERT_MANY = (
    "INSERT INTO events (round_id, attempt_id, actor, kind, request_id, payload)"
    " SELECT round_id, attempt_id, actor, kind, request_id, payload FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[]"
    ") WITH ORDINALITY AS t(round_id, attempt_id, actor, kind, request_id, payload, ord)"
    " ORDER BY ord" + _CONFLICT + " RETURNING id, round_id, attempt_id, kind, request_id"
)


class _Batcher:
    """Group commit: one INSERT (one transaction) per batch of waiting appends.

    At most one batch is being written at a time; appends that arrive meanwhile form
    the next. An idle server writes a lone event at once, as a plain INSERT would,
    and 500 contestants asking at the same moment cost a handful of commits.
    """

    MAX_BATCH = 1000

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: list[tuple[Row, asyncio.Future[int | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    def add(self, row: Row) -> asyncio.Future[int | None]:
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, fut))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return fut

    async def drain(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.MAX_BATCH]
                del self._waiting[: self.MAX_BATCH]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Row, asyncio.Future[int | None]]]) -> None:
        rows = [row for row, _ in batch]
        try:
            if len(rows) == 1:
                ids: list[int | None] = [await self.pool.fetchval(_INSERT_ONE, *rows[0])]
            else:
                ids = await self._insert_many(rows)
        except Exception as exc:
            if len(rows) == 1 or _unreachable(exc):
                # PostgreSQL itself failed: one by one would fail (or time out) once per
                # row, keeping every later append waiting behind them.
                for _, fut in batch:
                    _settle(fut, exc=exc)
                return
            # One bad row must not fail the others: write them one by one instead.
            log.warning("batched append of %d events failed (%r); one by one", len(rows), exc)
            for one in batch:
                await self._write([one])
            return
        for (_, fut), event_id in zip(batch, ids, strict=True):
            _settle(fut, event_id)

    async def _insert_many(self, rows: list[Row]) -> list[int | None]:
        columns = (list(col) for col in zip(*rows, strict=True))
        returned = await self.pool.fetch(_INSERT_MANY, *columns)
        # Map the inserted rows back: by their request key where they have one (unique),
        # else in id order, which is input order, among the rows without one (never
        # skipped: only a repeated request id conflicts).
        keyed = {
            (r["round_id"], r["attempt_id"], r["kind"], r["request_id"]): r["id"]
            for r in returned if r["request_id"] is not None
        }
        plain = iter(sorted(r["id"] for r in returned if r["request_id"] is None))
        ids: list[int | None] = []
        for round_id, attempt_id, _actor, kind, request_id, _payload in rows:
            if request_id is None:
                ids.append(next(plain))
            else:
                # A request repeated within one batch: the first one wins, as one by one.
                ids.append(keyed.pop((round_id, attempt_id, kind, request_id), None))
        return ids


def _unreachable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL could not be reached, rather than a row was refused."""
    return isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
                      | asyncpg.exceptions.OperatorInterventionError)


def _settle(fut: asyncio.Future[int | None], event_id: int | None = None,
            exc: BaseException | None = None) -> None:
    if fut.done():  # the caller gave up waiting; the event is written all the same
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(event_id)


class AuditLog:
    """Appends and reads events through one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._batcher = _Batcher(pool)

    @classmethod
    async def open(
        cls, url: str, schema: str = "public", *, max_size: int = 10,
        command_timeout: float | None = COMMAND_TIMEOUT_S,
    ) -> AuditLog:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        if schema != "public":
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
            try:
                # Only when missing: the app role may not create schemas, but may use one.
                if not await conn.fetchval(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema
                ):
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=max_size, server_settings={"search_path": schema},
            init=_init_connection, timeout=CONNECT_TIMEOUT_S, command_timeout=command_timeout,
        )
        return cls(pool)

    async def close(self) -> None:
        """Write what is queued and close; bounded, so a PostgreSQL that stopped answering
        cannot hold a shutdown (what is dropped then was never acknowledged)."""
        try:
            await asyncio.wait_for(self._batcher.drain(), CLOSE_TIMEOUT_S)
            await asyncio.wait_for(self.pool.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("PostgreSQL did not answer within %s s; closing its connections",
                        CLOSE_TIMEOUT_S)
            self.pool.terminate()

    async def migrate(self, app_user: str = "", app_password: str = "") -> list[str]:
        """Apply pending migrations in order; return the names applied now.

        With `app_user`, also create that login role if missing and give it what the
        server needs and no more (see `_grant_app`). Run this as the owner of the schema.
        """
        applied_now: list[str] = []
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK,
                               timeout=MIGRATION_TIMEOUT_S)
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
                        await conn.execute(sql, timeout=MIGRATION_TIMEOUT_S)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version) VALUES ($1)", version
                        )
                    log.info("applied migration %s", version)
                    applied_now.append(version)
                if app_user:
                    await _grant_app(conn, app_user, app_password)
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
        """Append one event; return its id, or None if this request id was already applied.

        Without `conn` the event joins the next group commit: every append waiting while
        one is written goes into the following single INSERT, so a burst of questions
        costs PostgreSQL one WAL flush per batch instead of one per event (see _Batcher).
        It returns, as before, only once the event is durable.
        """
        row = (round_id, attempt_id, actor, kind, request_id, payload)
        if conn is not None:
            return await conn.fetchval(_INSERT_ONE, *row)
        return await self._batcher.add(row)

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


# What the app role may do per table. Every table not named here gets plain DML (no
# TRUNCATE); the log may only be appended to and read; the chain head is written by
# the SECURITY DEFINER trigger alone. Granted again at every start, so a table a later
# migration adds is covered without a line here.
_APP_RESTRICTED = {
    "events": "SELECT, INSERT",
    "events_chain": "",
    "schema_migrations": "SELECT",
}


async def _grant_app(conn: Any, user: str, password: str) -> None:
    """Create the app's login role if missing and give it the rights it needs, no more."""
    ident = await conn.fetchval("SELECT quote_ident($1)", user)
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
        try:
            await conn.execute(f"CREATE ROLE {ident} LOGIN")
        except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            pass  # roles are cluster-wide: another database's migrator made it just now
        except asyncpg.InsufficientPrivilegeError as exc:
            raise RuntimeError(
                f"DATABASE_URL's user may not create the app role {user!r}: create it"
                f" (CREATE ROLE {ident} LOGIN) or give that user CREATEROLE"
            ) from exc
    if password:
        await conn.execute(await conn.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', "
                                               "$1::text, $2::text)", user, password))
    schema = await conn.fetchval("SELECT quote_ident(current_schema())")
    tables = await conn.fetch(
        "SELECT quote_ident(tablename) AS q, tablename FROM pg_tables"
        " WHERE schemaname = current_schema()"
    )
    sql = [f"GRANT USAGE ON SCHEMA {schema} TO {ident}",
           f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {ident}"]
    for t in tables:
        sql.append(f"REVOKE ALL ON {t['q']} FROM {ident}")
        rights = _APP_RESTRICTED.get(t["tablename"], "SELECT, INSERT, UPDATE, DELETE")
        if rights:
            sql.append(f"GRANT {rights} ON {t['q']} TO {ident}")
    # One round trip, one transaction: a start-up cost, and never half-granted.
    await conn.execute(";\n".join(sql))


async def prepare(owner_url: str, schema: str, app_user: str, app_password: str = "") -> None:
    """As the owner: create the schema, apply migrations, set up the app role's rights."""
    owner = await AuditLog.open(owner_url, schema, max_size=1)
    try:
        await owner.migrate(app_user, app_password)
    finally:
        await owner.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out through msgspec: structs encode directly, no json.dumps detour.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: msgspec.json.encode(v).decode(), decoder=msgspec.json.decode,
    )
