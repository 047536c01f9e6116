"""Saved versions of cases (migration 007): append-only rows of whole case documents.

Only the rows: validating, hashing and diffing are server.services.authoring's. `db` is
an asyncpg pool, or the connection of a transaction the caller holds.
"""

from __future__ import annotations

from typing import Any

import asyncpg

Db = asyncpg.Pool | asyncpg.Connection

# What a history lists: everything but the document itself.
_SUMMARY = (
    "case_id, version, content_hash, problems, author, note,"
    " extract(epoch FROM created_at)::float8 AS at"
)


async def append(
    conn: asyncpg.Connection, case_id: str, content: dict[str, Any], content_hash: str,
    problems: int, author: str, note: str,
) -> asyncpg.Record:
    """Add the next version of `case_id` and return its summary row.

    The number is the last one plus one, read under a transaction-scoped lock on the
    case, so two editors saving at once get two versions, one after the other. `conn`
    must be a connection (the lock and the insert share its transaction).
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"case:{case_id}")
        row: asyncpg.Record | None = await conn.fetchrow(
            "INSERT INTO case_versions"
            " (case_id, version, content, content_hash, problems, author, note)"
            " SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6"
            " FROM case_versions WHERE case_id = $1"
            f" RETURNING {_SUMMARY}",
            case_id, content, content_hash, problems, author, note,
        )
    assert row is not None  # INSERT ... SELECT of an aggregate inserts exactly one row
    return row


async def history(db: Db, case_id: str) -> list[asyncpg.Record]:
    """Every version of a case, oldest first, without its document."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_SUMMARY} FROM case_versions WHERE case_id = $1 ORDER BY version", case_id
    )
    return rows


async def content(db: Db, case_id: str, version: int | None = None) -> asyncpg.Record | None:
    """One version's summary and `content` (the newest without `version`); None if absent."""
    if version is None:
        row: asyncpg.Record | None = await db.fetchrow(
            f"SELECT {_SUMMARY}, content FROM case_versions WHERE case_id = $1"
            " ORDER BY version DESC LIMIT 1", case_id,
        )
    else:
        row = await db.fetchrow(
            f"SELECT {_SUMMARY}, content FROM case_versions WHERE case_id = $1"
            " AND version = $2", case_id, version,
        )
    return row


async def latest(db: Db) -> list[asyncpg.Record]:
    """The newest version of every case that has one: summary and `content`."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT DISTINCT ON (case_id) {_SUMMARY}, content FROM case_versions"
        " ORDER BY case_id, version DESC"
    )
    return rows


async def published(db: Db) -> list[asyncpg.Record]:
    """The last `case_published` event of each case: case_id, version, content_hash."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT DISTINCT ON (payload->>'case_id') payload->>'case_id' AS case_id,"
        " (payload->>'version')::int AS version, payload->>'content_hash' AS content_hash"
        " FROM events WHERE kind = 'case_published' AND attempt_id IS NULL"
        " ORDER BY payload->>'case_id', id DESC"
    )
    return rows
