"""Who may practise a case, as the event log records it (migration 004 says why no table).

Two reads: the organizer's last `case_visibility` event for each case, and the rounds
whose results are not published yet, with the case each uses. Folding them into a
case's access is server.services.library's. `db` is an asyncpg pool, or the
connection of the transaction that holds the case's lock.
"""

from __future__ import annotations

import asyncpg

Db = asyncpg.Pool | asyncpg.Connection

# Rounds not yet published, by case: a round's case is in its round_created payload.
_RESERVED = """
SELECT c.payload->'rules'->>'case_id' AS case_id, c.round_id
FROM events c
WHERE c.kind = 'round_created' AND c.attempt_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM events p WHERE p.round_id = c.round_id
                  AND p.kind = 'results_published' AND p.attempt_id IS NULL)
ORDER BY c.id
"""
# The organizer's last word on each case.
_VISIBILITY = """
SELECT DISTINCT ON (payload->>'case_id') payload->>'case_id' AS case_id,
       payload->>'visibility' AS visibility, actor,
       extract(epoch FROM created_at)::float8 AS at
FROM events
WHERE kind = 'case_visibility' AND attempt_id IS NULL
ORDER BY payload->>'case_id', id DESC
"""


async def latest_visibility(db: Db) -> list[asyncpg.Record]:
    """The last visibility event of each case: case_id, visibility, actor, at (epoch s)."""
    rows: list[asyncpg.Record] = await db.fetch(_VISIBILITY)
    return rows


async def unpublished_rounds(db: Db) -> list[asyncpg.Record]:
    """case_id, round_id of each round whose results are not published, oldest first."""
    rows: list[asyncpg.Record] = await db.fetch(_RESERVED)
    return rows
