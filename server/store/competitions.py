"""Competition and round rows: the tables that name them and tie rounds to competitions.

A round's state is not here: it is folded from its events (server.store.audit). These
rows only say which rounds exist, in which competition, under which title, so that a
contestant's competition finds its current round and the console lists them.

`db` is an asyncpg pool, or the connection of a transaction the caller holds (as
`AuditLog.locked` hands out), so a check and a write can share that transaction.
"""

from __future__ import annotations

import asyncpg

Db = asyncpg.Pool | asyncpg.Connection


async def add(db: Db, competition_id: str, title: str, created_by: str) -> bool:
    """Create a competition; False when the id is taken."""
    try:
        await db.execute(
            "INSERT INTO competitions (id, title, created_by) VALUES ($1, $2, $3)",
            competition_id, title, created_by,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def listing(db: Db) -> list[asyncpg.Record]:
    """Every competition, oldest first: id, title, created_by, created_at."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, title, created_by, created_at FROM competitions ORDER BY created_at, id"
    )
    return rows


async def exists(db: Db, competition_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM competitions WHERE id = $1", competition_id))


async def title(db: Db, competition_id: str) -> str | None:
    """The competition's title; None for an unknown id."""
    found: str | None = await db.fetchval(
        "SELECT title FROM competitions WHERE id = $1", competition_id
    )
    return found


async def add_round(db: Db, round_id: str, competition_id: str, title: str) -> None:
    await db.execute(
        "INSERT INTO rounds (id, competition_id, title) VALUES ($1, $2, $3)",
        round_id, competition_id, title,
    )


async def round_ids(db: Db, competition_id: str) -> list[str]:
    """The competition's rounds, newest first."""
    rows = await db.fetch(
        "SELECT id FROM rounds WHERE competition_id = $1 ORDER BY created_at DESC, id",
        competition_id,
    )
    return [r["id"] for r in rows]


async def rounds(db: Db) -> list[asyncpg.Record]:
    """Every round of every competition, oldest first: id, competition_id, title."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, competition_id, title FROM rounds ORDER BY created_at, id"
    )
    return rows


async def applied(db: Db, round_id: str, request_id: str) -> bool:
    """Whether a round command with this request id is in the log already (a retry).

    The event log's own query; it sits here, beside the round rows, because only round
    control asks it."""
    return bool(await db.fetchval(
        "SELECT 1 FROM events WHERE round_id = $1 AND attempt_id IS NULL"
        " AND request_id = $2", round_id, request_id,
    ))
