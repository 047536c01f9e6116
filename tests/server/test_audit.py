"""The audit log against real PostgreSQL: migrations recorded once, history append-only."""

from __future__ import annotations

import asyncio
from typing import Any

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



def test_appends_waiting_together_are_one_commit_and_each_gets_its_own_answer(
    settings: Settings,
) -> None:
    async def run() -> None:
        audit = await AuditLog.open(settings.database_url, settings.database_schema)
        try:
            await audit.migrate()

            def one(i: int, request_id: str | None, payload: object = None) -> Any:
                return audit.append(
                    round_id="rb", attempt_id=f"ab{i % 3}", actor="student:王", kind="asked",
                    payload={"i": i} if payload is None else payload, request_id=request_id,
                )

            # 300 appends issued together: one INSERT, one transaction. Every 10th repeats
            # a request id ("dup", unique per attempt), so only the first per attempt counts.
            results = await asyncio.gather(
                *(one(i, "dup" if i % 10 == 0 else None) for i in range(300))
            )
            for i, r in enumerate(results):
                assert (r is None) == (i % 10 == 0 and i >= 30), (i, r)
            stored = {
                e.id: e.payload["i"] for a in ("ab0", "ab1", "ab2")
                for e in await audit.events(attempt_id=a)
            }
            # Each id is the row that call wrote, and ids ascend in the order of the calls.
            assert all(stored[r] == i for i, r in enumerate(results) if r is not None)
            ids = [r for r in results if r is not None]
            assert ids == sorted(ids) and len(stored) == len(ids) == 273
            commits = await audit.pool.fetchval(
                "SELECT count(DISTINCT xmin::text) FROM events WHERE id = ANY($1::bigint[])", ids
            )
            assert commits == 1

            # A row that cannot be written fails alone; the rest of its batch is written.
            bad = await asyncio.gather(
                *(one(i, None, {"x": object()} if i == 1005 else None) for i in range(1000, 1010)),
                return_exceptions=True,
            )
            assert isinstance(bad[5], asyncpg.DataError)
            assert all(isinstance(r, int) for j, r in enumerate(bad) if j != 5)
        finally:
            await audit.close()

    asyncio.run(run())
