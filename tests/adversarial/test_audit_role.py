"""The audit log against its own server: what the app role (arena_app) can do to history.

tests/server/test_audit.py checks the plain rights (no UPDATE, DELETE, TRUNCATE, ALTER,
no chain head). These are the sideways attempts: objects of the app role's own that the
chain's SECURITY DEFINER triggers might resolve instead of the real ones, and a forged
event slipped into the middle of the chain by someone who can bypass the triggers.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.settings import Settings
from server.store import chain
from server.store.audit import AuditLog
from tests.support import fresh_log


async def _append(audit: AuditLog, n: int) -> None:
    for i in range(n):
        await audit.append(round_id="r", attempt_id="r.p", actor="student:李", kind="asked",
                           payload={"turn": i, "text": f"问题 {i}"})


def test_temporary_tables_of_the_app_role_cannot_stand_in_for_the_chain(
    settings: Settings,
) -> None:
    """A temporary table is searched before the schema unless the search path names
    pg_temp: the triggers, running as the owner, would then read the app role's own
    `events` (choosing the previous hash) and update its own `events_chain` (leaving the
    real head behind). The chain must stay intact whatever the app role creates."""

    async def run() -> tuple[chain.Report, bytes, bytes]:
        async with fresh_log(settings) as (audit, owner):
            await _append(audit, 3)
            async with audit.pool.acquire() as conn:
                # The app role may create temporary tables (PUBLIC has TEMP by default).
                await conn.execute(
                    "CREATE TEMP TABLE events (id bigint, hash bytea);"
                    " INSERT INTO events VALUES (9223372036854775807, '\\xdeadbeef');"
                    " CREATE TEMP TABLE events_chain (one boolean, last_id bigint, hash bytea);"
                    " INSERT INTO events_chain VALUES (true, 0, '\\x')")
                schema = await owner.fetchval("SELECT current_schema()")
                await conn.execute(
                    f"INSERT INTO {schema}.events (round_id, attempt_id, actor, kind, payload)"
                    " VALUES ('r', 'r.p', 'student:李', 'asked', '{\"turn\": 9}'::jsonb)")
            report = await chain.verify(owner)
            last = await owner.fetchval("SELECT hash FROM events ORDER BY id DESC LIMIT 1")
            head = await owner.fetchval("SELECT hash FROM events_chain")
            return report, bytes(last), bytes(head)

    report, last, head = asyncio.run(run())
    assert report.ok, report
    assert head == last


def test_verify_catches_a_forged_event_inserted_in_the_middle(settings: Settings) -> None:
    """Someone who can bypass the triggers (a superuser) moves the later events up by one
    id and slips a forged event into the gap, with a hash that is right for its own
    content and its predecessor: the event after it no longer links."""

    async def run() -> tuple[chain.Report, int]:
        async with fresh_log(settings) as (audit, owner):
            await _append(audit, 6)
            ids = [r["id"] for r in await owner.fetch("SELECT id FROM events ORDER BY id")]
            forged = ids[3]
            prev = bytes(await owner.fetchval("SELECT hash FROM events WHERE id = $1", ids[2]))
            async with owner.transaction():
                await owner.execute("SET LOCAL session_replication_role = replica")
                for i in reversed(ids[3:]):
                    await owner.execute("UPDATE events SET id = id + 1 WHERE id = $1", i)
                created = await owner.fetchval("SELECT now()")
                canonical = await owner.fetchval(
                    "SELECT events_canonical($1, 'r', 'r.p', 'student:李', 'submitted', NULL,"
                    " '{\"diagnosis\": \"伪造\"}'::jsonb, $2)", forged, created)
                await owner.execute(
                    "INSERT INTO events (id, round_id, attempt_id, actor, kind, payload,"
                    " created_at, prev_hash, hash) VALUES ($1, 'r', 'r.p', 'student:李',"
                    " 'submitted', '{\"diagnosis\": \"伪造\"}'::jsonb, $2, $3, $4)",
                    forged, created, prev, chain.link(prev, canonical))
            return await chain.verify(owner), forged + 1

    report, after = asyncio.run(run())
    # The event after the forgery does not link (the moved events also fail their hashes,
    # which cover the id, and the head names the old last id).
    found = [(p.event_id, p.what) for p in report.problems]
    assert (after, "link") in found and (after - 1, "edited") not in found, report


def test_the_app_role_cannot_call_the_chains_functions_or_rewind_its_ids(
    settings: Settings,
) -> None:
    """The SECURITY DEFINER functions run only as triggers, and the id sequence moves only
    forward (a gap in ids is harmless: the chain links by hash, not by id)."""

    async def run() -> chain.Report:
        async with fresh_log(settings) as (audit, owner):
            await _append(audit, 2)
            async with audit.pool.acquire() as conn:
                for sql in ("SELECT events_chain_link()", "SELECT events_chain_head()",
                            "SELECT setval('events_id_seq', 1)",
                            "ALTER FUNCTION events_chain_link() SET search_path = pg_temp",
                            "CREATE FUNCTION sha256(bytea) RETURNS bytea LANGUAGE sql"
                            " AS 'SELECT $1'"):
                    with pytest.raises(asyncpg.PostgresError):
                        await conn.execute(sql)
            await _append(audit, 1)
            return await chain.verify(owner)

    assert asyncio.run(run()).ok
