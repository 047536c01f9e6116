"""Verifying the event log's hash chain (`arena audit verify`).

Each event stores `hash = sha256(prev_hash || canonical text)`, where the canonical
text is every column but the hashes (migration 003 computes it in a trigger, under a
lock, as events are appended). This module recomputes that from the stored columns,
independently of the database's own functions, and reports every event whose content
no longer matches its hash (an edit), whose link does not name the event before it
(a deletion, an insertion or a reordering), and a chain head that is not the last
event (the newest events deleted).

A superuser who rewrites every hash after an edit, and the head too, produces a chain
that verifies: compare `head` with a value kept outside the database (the one
`arena audit verify` printed earlier, e.g. right after results were published) to
catch that. Nothing here keeps such a copy automatically.
"""

from __future__ import annotations

import hashlib
from typing import Any  # a connection or a pool's proxy of one

import asyncpg
import msgspec

# The canonical text, built here from the columns rather than by the database's
# events_canonical(), so a replaced function cannot vouch for edited rows. Must stay
# byte-identical to events_canonical() in migration 003.
_ROWS = (
    "SELECT id, round_id, prev_hash, hash, jsonb_build_array(id, round_id, attempt_id, actor,"
    " kind, request_id, (extract(epoch FROM created_at) * 1000000)::bigint, payload)::text"
    " AS canonical FROM events WHERE id >= $1 AND id <= $2 ORDER BY id"
)


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    event_id: int
    round_id: str
    what: str  # "edited", "link", "head"
    message: str  # Chinese first, English second


class Report(msgspec.Struct, kw_only=True):
    checked: int = 0
    first_id: int | None = None
    last_id: int | None = None
    head: str = ""  # hex of the last event's hash: keep it elsewhere to detect rewrites
    problems: list[Problem] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def link(prev_hash: bytes, canonical: str) -> bytes:
    """The hash an event with this canonical text must carry after `prev_hash`."""
    return hashlib.sha256(prev_hash + canonical.encode("utf-8")).digest()


async def verify(conn: Any, round_id: str | None = None) -> Report:
    """Walk the chain (all of it, or the stretch that spans `round_id`'s events).

    For a round, the stretch runs from the event before its first to the event after
    its last, so a deleted first or last event of the round is caught by its neighbour.
    One snapshot throughout: appends meanwhile are neither half seen nor mistaken for a
    head that does not match.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _verify(conn, round_id)


async def _verify(conn: Any, round_id: str | None) -> Report:
    report = Report()
    lo, hi = 0, 2**63 - 1
    if round_id is not None:
        span = await conn.fetchrow(
            "SELECT min(id) AS lo, max(id) AS hi FROM events WHERE round_id = $1", round_id
        )
        if span is None or span["lo"] is None:
            return report
        before = await conn.fetchval("SELECT max(id) FROM events WHERE id < $1", span["lo"])
        after = await conn.fetchval("SELECT min(id) FROM events WHERE id > $1", span["hi"])
        lo, hi = before or span["lo"], after or span["hi"]
    expected: bytes | None = None if round_id is not None else b""
    last: asyncpg.Record | None = None
    async for row in conn.cursor(_ROWS, lo, hi, prefetch=2000):
        report.checked += 1
        report.first_id = row["id"] if report.first_id is None else report.first_id
        prev, stored = bytes(row["prev_hash"]), bytes(row["hash"])
        if expected is not None and prev != expected:
            report.problems.append(Problem(
                event_id=row["id"], round_id=row["round_id"], what="link",
                message=f"事件 {row['id']} 的前一哈希与前一条事件不符：其前有事件被删除、插入或调换"
                        f" (event {row['id']} does not link to the event before it: an event"
                        " before it was deleted, inserted or reordered)",
            ))
        if link(prev, row["canonical"]) != stored:
            report.problems.append(Problem(
                event_id=row["id"], round_id=row["round_id"], what="edited",
                message=f"事件 {row['id']} 的内容与其哈希不符：已被修改"
                        f" (event {row['id']}'s content does not match its hash: edited)",
            ))
        expected, last = stored, row
    if last is not None:
        report.last_id, report.head = last["id"], bytes(last["hash"]).hex()
    head = await conn.fetchrow("SELECT last_id, hash FROM events_chain")
    # Always, also for one round: the newest events deleted can be anyone's.
    if head is not None:
        newest = await conn.fetchrow("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
        actual = (newest["id"], bytes(newest["hash"])) if newest else (0, b"")
        if actual != (head["last_id"], bytes(head["hash"])):
            report.problems.append(Problem(
                event_id=head["last_id"], round_id="", what="head",
                message=f"链头记录的最后事件 {head['last_id']} 不是日志中最后一条：最新的事件被删除"
                        f" (the chain head names event {head['last_id']}, which is not the last"
                        " event in the log: the newest events were deleted)",
            ))
    return report
