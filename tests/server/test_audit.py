"""The audit log against real PostgreSQL: migrations recorded once, history append-only."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest

from server import cli
from server.settings import Settings
from server.store import chain
from server.store.audit import AuditLog
from tests.support import fresh_log


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


# ---- the app role and the hash chain --------------------------------------------------


def _verify(settings: Settings, schema: str, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATABASE_SCHEMA", schema)
    capsys.readouterr()
    code = cli.main(["audit", "verify", *args])
    return code, capsys.readouterr().out


async def _some_events(audit: AuditLog) -> list[int]:
    ids = await asyncio.gather(*(
        audit.append(round_id=f"r{i % 2}", attempt_id=f"r{i % 2}.p{i % 3}", actor="student:李",
                     kind="asked", payload={"turn": i, "text": f"问题 {i}"})
        for i in range(12)
    ))
    return [i for i in ids if i is not None]


def test_the_app_role_can_only_append_to_and_read_the_log(settings: Settings) -> None:
    async def run() -> None:
        async with fresh_log(settings) as (audit, owner):
            conn = audit.pool
            assert await conn.fetchval("SELECT current_user") == settings.database_app_user
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname ="
                                           " current_user")
            first = await audit.append(round_id="r", attempt_id=None, actor="organizer:a",
                                       kind="note", payload={"n": 1})
            assert first is not None
            assert [e.id for e in await audit.events(round_id="r")] == [first]
            for sql in ("UPDATE events SET kind = 'forged'", "DELETE FROM events",
                        "TRUNCATE events", "ALTER TABLE events DISABLE TRIGGER USER",
                        "SELECT * FROM events_chain", "SET session_replication_role = replica",
                        "DROP TABLE events"):
                with pytest.raises((asyncpg.InsufficientPrivilegeError,
                                    asyncpg.UndefinedObjectError)):
                    await conn.execute(sql)
            # A hash or id the app makes up is replaced by the chain's own.
            await conn.execute(
                "INSERT INTO events (id, round_id, actor, kind, payload, prev_hash, hash)"
                " VALUES (1, 'r', 'x', 'note', '{}'::jsonb, '\\x00', '\\x00')")
            rows = await owner.fetch("SELECT id, prev_hash, hash FROM events ORDER BY id")
            assert rows[1]["id"] > first and rows[1]["prev_hash"] == rows[0]["hash"]
            assert len(rows[1]["hash"]) == 32
            # The other tables are the app's to use (accounts, rosters ...), not to own.
            assert await owner.fetchval("SELECT tableowner FROM pg_tables WHERE tablename ="
                                        " 'accounts' AND schemaname = current_schema()"
                                        ) != settings.database_app_user
            await conn.execute("INSERT INTO secrets (name, value) VALUES ('t', '\\x01')")
            await conn.execute("DELETE FROM secrets WHERE name = 't'")

    asyncio.run(run())


# Each edits the log through a superuser connection with the append-only trigger off.
TAMPERING = {
    "update": "UPDATE events SET payload = payload || '{{\"text\": \"改过\"}}' WHERE id = {mid}",
    "delete": "DELETE FROM events WHERE id = {mid}",
    "swap": "UPDATE events SET payload = CASE id WHEN {mid} THEN (SELECT payload FROM events"
            " WHERE id = {nxt}) ELSE (SELECT payload FROM events WHERE id = {mid}) END"
            " WHERE id IN ({mid}, {nxt})",
    "reorder": "UPDATE events SET id = -1 WHERE id = {mid};"
               " UPDATE events SET id = {mid} WHERE id = {nxt};"
               " UPDATE events SET id = {nxt} WHERE id = -1",
    "delete_newest": "DELETE FROM events WHERE id = {last}",
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_audit_verify_finds_every_kind_of_tampering(
    settings: Settings, how: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def tamper() -> tuple[str, list[int]]:
        async with fresh_log(settings) as (audit, owner):
            schema = await owner.fetchval("SELECT current_schema()")
            ids = sorted(await _some_events(audit))
            code, out = await asyncio.to_thread(
                _verify, settings, schema, capsys, monkeypatch)
            assert code == 0 and "intact" in out and f"{len(ids)} events" in out, out
            mid, nxt, last = ids[5], ids[6], ids[-1]
            async with owner.transaction():
                await owner.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
                await owner.execute(TAMPERING[how].format(mid=mid, nxt=nxt, last=last))
                await owner.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
            code, out = await asyncio.to_thread(
                _verify, settings, schema, capsys, monkeypatch)
            assert code == 1, out
            code_round, out_round = await asyncio.to_thread(
                _verify, settings, schema, capsys, monkeypatch, "--round", "r1")
            return out + out_round, [mid, nxt, last, code_round]

    out, (mid, nxt, last, code_round) = asyncio.run(tamper())
    expected = {"update": f"event {mid}'s content", "delete": f"event {nxt} does not link",
                "swap": f"event {mid}'s content", "reorder": f"event {mid}'s content",
                "delete_newest": f"names event {last}"}[how]
    assert expected in out, out
    assert code_round == 1  # ids[5] and ids[6] are in different rounds: both see it


def test_appends_from_several_connections_form_one_unbroken_chain(settings: Settings) -> None:
    async def run() -> None:
        async with fresh_log(settings) as (audit, owner):
            schema = await owner.fetchval("SELECT current_schema()")
            other = await AuditLog.open(
                msgspec.structs.replace(settings, database_schema=schema).app_database_url,
                schema)
            try:
                # Two processes' worth of pools, batched appends and lone transactions
                # interleaved: the lock in the trigger must put them in one order.
                async def lone(i: int) -> None:
                    async with other.locked(f"k{i}") as conn:
                        await other.append(round_id="r2", attempt_id=None, actor="system",
                                           kind="note", payload={"i": i}, conn=conn)

                await asyncio.gather(
                    *(_some_events(audit) for _ in range(20)),
                    *(_some_events(other) for _ in range(20)),
                    *(lone(i) for i in range(40)),
                )
            finally:
                await other.close()
            report = await chain.verify(owner)
            assert report.ok and report.checked == 40 * 12 + 40, report.problems
            ids = [r["id"] for r in await owner.fetch("SELECT id FROM events ORDER BY id")]
            head = await owner.fetchrow("SELECT last_id, hash FROM events_chain")
            assert head["last_id"] == ids[-1] and head["hash"].hex() == report.head

    asyncio.run(run())
