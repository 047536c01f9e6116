"""`arena audit verify`, `arena rescore ROUND`, `arena replay ROUND`: checks an auditor runs.

They read PostgreSQL directly (DATABASE_URL, or the embedded server under DATA_DIR as
`arena up` runs it), never through a running server, print a report in Chinese and
English, and exit 1 on any tampering or difference (0 when all is as recorded, 2 when
there is nothing to check).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from server.services.library import Library
from server.services.replay import replay, rescore
from server.settings import Settings, from_env
from server.store import chain
from server.store.audit import AuditLog, Event
from server.store.embedded import EmbeddedServices


@contextlib.asynccontextmanager
async def _log(settings: Settings, url: str) -> AsyncIterator[AuditLog]:
    # The owner's URL: verification reads the chain head, which the app role cannot.
    audit = await AuditLog.open(url, settings.database_schema, max_size=2)
    try:
        yield audit
    finally:
        await audit.close()


def _run(work: Callable[[Settings, AuditLog], Awaitable[int]]) -> int:
    settings = from_env()
    embedded = EmbeddedServices(settings.data_dir)
    try:
        url = settings.database_url or embedded.postgres_url()

        async def go() -> int:
            async with _log(settings, url) as audit:
                return await work(settings, audit)

        return asyncio.run(go())
    finally:
        embedded.stop()


async def _round_events(audit: AuditLog, round_id: str) -> list[Event]:
    events = await audit.events(round_id=round_id)
    if not events:
        print(f"没有这个场次的事件 (no events for round {round_id!r})", file=sys.stderr)
    return events


def cmd_verify(args: argparse.Namespace) -> int:
    async def work(settings: Settings, audit: AuditLog) -> int:
        async with audit.pool.acquire() as conn:
            report = await chain.verify(conn, args.round)
        where = f"round {args.round}" if args.round else "the whole log"
        for p in report.problems:
            print(f"✗ {p.message}")
        if report.ok:
            print(f"✓ 哈希链完整 (hash chain intact): {report.checked} events checked ({where});"
                  f" head {report.head or '-'} at event {report.last_id}")
            return 0 if report.checked else 2
        print(f"{len(report.problems)} 处问题 (problems) in {report.checked} events ({where})")
        return 1

    return _run(work)


def _library(settings: Settings) -> Library:
    # BM25 only: scoring reads the recorded matches, so embeddings would only cost seconds.
    return Library.load(settings.cases_dir, None)


def _show(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def cmd_rescore(args: argparse.Namespace) -> int:
    async def work(settings: Settings, audit: AuditLog) -> int:
        events = await _round_events(audit, args.round)
        if not events:
            return 2
        report = rescore(events, _library(settings), settings, settings.engine)
        for d in report.differences:
            print(f"✗ {d.attempt_id} (event {d.event_id}) {d.what}: "
                  f"recorded {_show(d.recorded)}, now {_show(d.now)}")
        for d in report.notes:
            print(f"! {d.attempt_id} (event {d.event_id}) {d.what}: "
                  f"recorded {_show(d.recorded)}, now {_show(d.now)}")
        verdict = "无差异 (no differences)" if not report.differences else (
            f"{len(report.differences)} 处差异 (differences)")
        print(f"round {args.round}: {report.scored} 份提交重新评分"
              f" (submissions rescored), {verdict}")
        return 1 if report.differences else 0

    return _run(work)


def cmd_replay(args: argparse.Namespace) -> int:
    async def work(settings: Settings, audit: AuditLog) -> int:
        events = await _round_events(audit, args.round)
        if not events:
            return 2
        report = replay(events, _library(settings))
        for d in report.differences:
            print(f"✗ {d}")
        if not report.published:
            return 2
        if report.differences:
            print(f"round {args.round}: 重建的排行榜与发布的不同"
                  f" (the board rebuilt from the log differs from the published one)")
            return 1
        print(f"✓ round {args.round}: 由事件日志重建的排行榜与发布的一致"
              f" (the board rebuilt from the event log equals the published one): "
              f"{report.rows} rows")
        return 0

    return _run(work)


def add_parsers(sub: Any) -> None:
    audit = sub.add_parser("audit", help="event log checks")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="walk the event log's hash chain; report any edit, deletion, reordering")
    verify.add_argument("--round", help="only the stretch of the chain spanning this round")
    verify.set_defaults(fn=cmd_verify)
    p = sub.add_parser("rescore", help="score a round's submissions again; report differences")
    p.add_argument("round")
    p.set_defaults(fn=cmd_rescore)
    p = sub.add_parser("replay", help="rebuild a round's board from the log; compare with the "
                       "published one")
    p.add_argument("round")
    p.set_defaults(fn=cmd_replay)

