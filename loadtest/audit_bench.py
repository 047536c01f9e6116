"""Audit append throughput with and without the hash chain, in the same run.

    .venv/bin/python -m loadtest.audit_bench [--writers 500] [--events 20000] [--procs 1]

`writers` tasks per process each await `AuditLog.append` in a loop (the way
contestants' sessions do: one event durable before the next), through the group-commit
batcher. Two schemas in one PostgreSQL (DATABASE_URL, else an embedded one in a
temporary folder): `chained` has every migration (migration 003's trigger chains each
row under a lock); `baseline` is the same with the chain's triggers dropped and the id
default restored, i.e. the log as it was before. Runs alternate baseline/chained
`--rounds` times; prints events/s for each run and the medians. After each run it
checks that every acknowledged append is in the log and that the chain verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from server.store import chain
from server.store.audit import AuditLog, prepare
from server.store.embedded import EmbeddedServices

UNCHAIN = """
DROP TRIGGER events_chain_link ON events;
DROP TRIGGER events_chain_head ON events;
ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq'),
    ALTER COLUMN prev_hash DROP NOT NULL, ALTER COLUMN hash DROP NOT NULL;
"""


async def _append(url: str, schema: str, writers: int, per_writer: int
                  ) -> tuple[float, float]:
    audit = await AuditLog.open(url, schema)
    try:
        async def writer(w: int) -> None:
            for i in range(per_writer):
                await audit.append(round_id="bench", attempt_id=f"bench.{w}", actor="student:x",
                                   kind="asked", payload={"turn": i, "text": "胸口痛多久了？"})

        await audit.pool.fetchval("SELECT 1")  # connected before the clock starts
        start = time.time()  # wall clock: the span is taken across processes
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return start, time.time()
    finally:
        await audit.close()


def _process(url: str, schema: str, writers: int, per_writer: int, out: Any) -> None:
    out.put(asyncio.run(_append(url, schema, writers, per_writer)))


async def _schema(url: str, chained: bool) -> str:
    schema = f"bench_{'chain' if chained else 'base'}_{uuid.uuid4().hex[:6]}"
    await prepare(url, schema, "")
    if not chained:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await conn.execute(UNCHAIN)
        finally:
            await conn.close()
    return schema


async def _check(url: str, schema: str, chained: bool, expected: int) -> None:
    """Every acknowledged append is in the log, and the chained log verifies."""
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        got = await conn.fetchval("SELECT count(*) FROM events WHERE round_id = 'bench'")
        if got != expected:
            raise SystemExit(f"{schema}: {expected} appends acknowledged, {got} in the log")
        if chained:
            report = await chain.verify(conn)
            if report.problems:
                raise SystemExit(f"{schema}: the chain does not verify: {report.problems[:3]}")
    finally:
        await conn.close()


async def _drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


def run_once(url: str, chained: bool, writers: int, events: int, procs: int) -> float:
    schema = asyncio.run(_schema(url, chained))
    try:
        per_writer = max(1, events // (writers * procs))
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        workers = [ctx.Process(target=_process, args=(url, schema, writers, per_writer, out))
                   for _ in range(procs)]
        for p in workers:
            p.start()
        spans = [out.get() for _ in workers]
        for p in workers:
            p.join()
        elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
        asyncio.run(_check(url, schema, chained, per_writer * writers * procs))
        return per_writer * writers * procs / elapsed
    finally:
        asyncio.run(_drop(url, schema))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=500)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    embedded = EmbeddedServices(Path(tempfile.mkdtemp(prefix="audit-bench-")))
    try:
        url = os.environ.get("DATABASE_URL") or embedded.postgres_url()
        results: dict[str, list[float]] = {"baseline": [], "chained": []}
        for _ in range(args.rounds):
            for name in ("baseline", "chained"):
                rate = run_once(url, name == "chained", args.writers, args.events, args.procs)
                results[name].append(rate)
                print(f"{name:9s} {rate:9.0f} events/s", flush=True)
        base, chain = (statistics.median(results[k]) for k in ("baseline", "chained"))
        print(f"median: baseline {base:.0f}/s, chained {chain:.0f}/s ({chain / base:.2f}x);"
              f" writers {args.writers} x {args.procs} process(es), {args.events} events")
    finally:
        embedded.stop()


if __name__ == "__main__":
    main()
