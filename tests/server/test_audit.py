"""The audit log against real PostgreSQL: migrations recorded once, history append-only."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.audit import AuditLog
from server.settings import Settings


def test_migrations_are_recorded_and_events_cannot_be_rewritten(settings: Settings) -> None:
    async def run() -> None:
        audit = await AuditLog.open(settings.database_url, settings.database_schema)
        try:
            await audit.migrate()
            assert await audit.migrate() == []  # already applied: nothing twice
            first = await audit.append(round_id="r1", attempt_id="a1", actor="student:李",
                                       kind="submitted", payload={"d": "x"}, request_id="q1")
            again = await audit.append(round_id="r1", attempt_id="a1", actor="student:李",
                                       kind="submitted", payload={"d": "y"}, request_id="q1")
            assert first is not None and again is None  # the retry is applied once
            stored = await audit.events(attempt_id="a1")
            assert [(e.request_id, e.payload) for e in stored] == [("q1", {"d": "x"})]
            for sql in ("UPDATE events SET kind = 'forged'", "DELETE FROM events"):
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    await audit.pool.execute(sql)
            assert [e.kind for e in await audit.events(attempt_id="a1")] == ["submitted"]
        finally:
            await audit.close()

    asyncio.run(run())
