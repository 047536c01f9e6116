"""Score cards as the event log holds them, read for judges' rulings and their queue.

An attempt's current card is its last `scored` event; a ruling appends a new one, so
the log always explains every card. `db` is an asyncpg pool, or the connection of
the transaction that holds the attempt's lock (`AuditLog.locked`), so a ruling reads
the card it replaces under that lock.
"""

from __future__ import annotations

from typing import Any

import asyncpg

Db = asyncpg.Pool | asyncpg.Connection


async def current_card(db: Db, attempt_id: str) -> dict[str, Any] | None:
    """The payload of the attempt's last `scored` event; None before anything is scored."""
    rows = await db.fetch(
        "SELECT payload FROM events WHERE attempt_id = $1 AND kind = 'scored'"
        " ORDER BY id DESC LIMIT 1", attempt_id,
    )
    return rows[0]["payload"] if rows else None


async def contestant_name(db: Db, attempt_id: str) -> str | None:
    """The name the attempt started under (its `attempt_started` event)."""
    name: str | None = await db.fetchval(
        "SELECT payload->>'name' FROM events WHERE attempt_id = $1"
        " AND kind = 'attempt_started' ORDER BY id LIMIT 1", attempt_id,
    )
    return name


async def latest_per_attempt(db: Db, round_id: str) -> list[asyncpg.Record]:
    """For each attempt of the round, its last `scored`, `submitted` and `attempt_started`
    event (those it has): attempt_id, kind, id, payload."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT DISTINCT ON (attempt_id, kind) attempt_id, kind, id, payload FROM events"
        " WHERE round_id = $1 AND kind IN ('scored', 'submitted', 'attempt_started')"
        " ORDER BY attempt_id, kind, id DESC", round_id,
    )
    return rows
