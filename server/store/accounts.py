"""Account and roster rows: staff logins (`accounts`) and contestants with their join codes.

Only the rows: hashing passwords, drawing codes and deciding who may sign in are
server.services.accounts's. `db` is an asyncpg pool (or a connection the caller holds).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from arena.roster import RosterRow

Db = asyncpg.Pool | asyncpg.Connection

# A contestant row as read back: `redeemed` rather than when, which nobody shows.
CONTESTANT_COLUMNS = (
    "id, competition_id, name, school, team, email, join_code, redeemed_at IS NOT NULL AS redeemed"
)


# --- staff accounts ------------------------------------------------------------------------


async def add_account(
    db: Db, username: str, role: str, display_name: str, password_hash: str
) -> bool:
    """Create an account; False when the username is taken."""
    try:
        await db.execute(
            "INSERT INTO accounts (username, role, display_name, password_hash)"
            " VALUES ($1, $2, $3, $4)",
            username, role, display_name, password_hash,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def set_password_hash(db: Db, username: str, password_hash: str) -> bool:
    """Replace an account's hash; False for an unknown username."""
    status = await db.execute(
        "UPDATE accounts SET password_hash = $2 WHERE username = $1", username, password_hash
    )
    return status != "UPDATE 0"


async def account(db: Db, username: str) -> asyncpg.Record | None:
    """role, display_name and password_hash of an account; None for an unknown username."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT role, display_name, password_hash FROM accounts WHERE username = $1",
        username,
    )
    return row


async def count_accounts(db: Db, role: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM accounts WHERE role = $1", role))


# --- contestants ---------------------------------------------------------------------------


async def add_contestants(
    pool: asyncpg.Pool, competition_id: str, ids: list[str], rows: list[RosterRow],
    next_code: Callable[[], str], tries: int,
) -> dict[str, str] | None:
    """Insert `rows` under `ids`, each with a code from `next_code`, all or none, in one
    transaction; return {id: code}. None for an unknown competition.

    A code already taken (by anyone, in any competition) is skipped and that row takes
    the next one; RuntimeError when rows are still without a code after `tries` rounds.
    """
    assigned: dict[str, str] = {}
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM competitions WHERE id = $1", competition_id):
            return None
        pending = list(range(len(rows)))
        for _ in range(tries):
            if not pending:
                break
            batch = [(i, next_code()) for i in pending]
            # One statement per round trip: 5,000 rows in one go; DO NOTHING
            # drops only the rows whose code is taken, and they go again.
            inserted = await conn.fetch(
                "INSERT INTO contestants (id, competition_id, name, school, team, email,"
                " join_code)"
                " SELECT i, $1, n, s, t, e, c FROM unnest($2::text[], $3::text[],"
                " $4::text[], $5::text[], $6::text[], $7::text[]) AS u(i, n, s, t, e, c)"
                " ON CONFLICT (join_code) DO NOTHING RETURNING id, join_code",
                competition_id,
                [ids[i] for i, _ in batch], [rows[i].name for i, _ in batch],
                [rows[i].school for i, _ in batch], [rows[i].team for i, _ in batch],
                [rows[i].email for i, _ in batch], [c for _, c in batch],
            )
            assigned.update((r["id"], r["join_code"]) for r in inserted)
            pending = [i for i in pending if ids[i] not in assigned]
        if pending:
            raise RuntimeError("join codes keep colliding: is the code source random?")
    return assigned


async def contestants(db: Db, competition_id: str) -> list[asyncpg.Record]:
    """The roster of a competition (CONTESTANT_COLUMNS), by name."""
    found: list[asyncpg.Record] = await db.fetch(
        f"SELECT {CONTESTANT_COLUMNS} FROM contestants WHERE competition_id = $1"
        " ORDER BY name, school, id",
        competition_id,
    )
    return found


async def contestant(db: Db, contestant_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {CONTESTANT_COLUMNS} FROM contestants WHERE id = $1", contestant_id
    )
    return row


async def redeem(db: Db, code: str) -> asyncpg.Record | None:
    """Mark the code's contestant redeemed and return it; None when the code is unknown or
    already redeemed. One UPDATE both checks and marks, so of two racing exactly one wins."""
    row: asyncpg.Record | None = await db.fetchrow(
        "UPDATE contestants SET redeemed_at = now()"
        " WHERE join_code = $1 AND redeemed_at IS NULL"
        f" RETURNING {CONTESTANT_COLUMNS}",
        code,
    )
    return row


async def code_taken(db: Db, code: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM contestants WHERE join_code = $1", code))


async def unredeem(db: Db, contestant_id: str) -> None:
    await db.execute("UPDATE contestants SET redeemed_at = NULL WHERE id = $1", contestant_id)


async def set_code(db: Db, contestant_id: str, code: str) -> bool:
    """Bind a new, unredeemed code; False for an unknown contestant. A code already taken
    raises asyncpg.UniqueViolationError."""
    status = await db.execute(
        "UPDATE contestants SET join_code = $2, redeemed_at = NULL WHERE id = $1",
        contestant_id, code,
    )
    return status != "UPDATE 0"
