"""Shared fixtures: real PostgreSQL and Redis/Valkey, and a real server on loopback.

With DATABASE_URL / REDIS_URL unset, the embedded PostgreSQL and Valkey from the
wheels are started in a temporary folder. With them set (as `make test` does in
its second pass), the same tests run against those servers; each run works in
its own schema and key prefix so runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis

from server.settings import Settings, from_env
from server.store.embedded import EmbeddedServices
from tests.support import ADMIN_PASSWORD, FakeClock, Sim, running_server, running_sim

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data = tmp_path_factory.mktemp("data")
    embedded = EmbeddedServices(data)
    run = uuid.uuid4().hex[:8]
    try:
        s = from_env(
            data_dir=data,
            cases_dir=ROOT / "cases",
            database_url=os.environ.get("DATABASE_URL") or embedded.postgres_url(),
            redis_url=os.environ.get("REDIS_URL") or embedded.redis_url(),
            database_schema=f"test_{run}",
            redis_prefix=f"test{run}:",
            llm_base_url="",
            scripted_chunk_ms=2.0,
            s3_endpoint="",
            admin_password=ADMIN_PASSWORD,
            # The adversarial suite asks hundreds of questions a minute on one connection;
            # tests/server/test_abuse.py checks the real limits on servers of its own.
            ask_limit="100000/minute", practice_address_ask_limit="100000/minute",
            # Case documents are embedded once for both passes of `make test` and later runs.
            embedding_dir=str(ROOT / ".cache" / "embeddings"),
        )
        yield s
        if os.environ.get("DATABASE_URL"):
            asyncio.run(_drop_schema(s))
        if os.environ.get("REDIS_URL"):
            _drop_keys(s)
    finally:
        embedded.stop()


def _drop_keys(s: Settings) -> None:
    r = redis.Redis.from_url(s.redis_url)
    try:
        for key in r.scan_iter(match=f"{s.redis_prefix}*", count=500):
            r.delete(key)
    finally:
        r.close()


async def _drop_schema(s: Settings) -> None:
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute(f"DROP SCHEMA {s.database_schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[str]:
    """Base URL of a real server (scripted patient) for the whole session."""
    with running_server(settings) as url:
        yield url


@pytest.fixture
def fetch_events(settings: Settings):  # type: ignore[no-untyped-def]
    """Read the audit log straight from PostgreSQL, as an auditor would."""

    def fetch(attempt_id: str) -> list[dict[str, object]]:
        async def run() -> list[dict[str, object]]:
            conn = await asyncpg.connect(
                settings.database_url, server_settings={"search_path": settings.database_schema}
            )
            try:
                rows = await conn.fetch(
                    "SELECT kind, request_id, payload::text AS payload FROM events"
                    " WHERE attempt_id = $1 ORDER BY id", attempt_id,
                )
            finally:
                await conn.close()
            return [
                {"kind": r["kind"], "request_id": r["request_id"],
                 "payload": msgspec.json.decode(r["payload"])}
                for r in rows
            ]

        return asyncio.run(run())

    return fetch


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    """A clock the module's server and its tests share, moved by hand."""
    return FakeClock()


@pytest.fixture(scope="module")
def server(settings: Settings, clock: FakeClock) -> Iterator[str]:
    """A real server of the module's own, on the module's fake clock."""
    with running_server(settings, clock) as url:
        yield url


@pytest.fixture(scope="session")
def sim_root() -> Iterator[str]:
    """Root URL of the OpenAI-compatible LLM simulator, shared by the session."""
    with running_sim() as root:
        yield root


@pytest.fixture
def sim(sim_root: str) -> Sim:
    """The simulator, reset to fast defaults with zeroed counters."""
    s = Sim(sim_root)
    s.reset()
    return s


@pytest.fixture(scope="module")
def llm_server(settings: Settings, sim_root: str) -> Iterator[str]:
    """A server whose patient is the LLM simulator, with short timeouts (one per module)."""
    llm_settings = msgspec.structs.replace(
        settings, llm_base_url=f"{sim_root}/v1", llm_read_timeout=2.0, llm_connect_timeout=2.0
    )
    with running_server(llm_settings) as url:
        yield url
