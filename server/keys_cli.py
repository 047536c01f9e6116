"""`arena keys list|add|retire KID`: rotate the keys that sign tokens (server/tokens.py).

Rotation without signing anyone out: `arena keys add`, then, once the old key's tokens
may go (or at once, if it leaked), `arena keys retire OLD_KID`. Running servers pick up
either change within a minute. Reads PostgreSQL directly (DATABASE_URL, or the embedded
server under DATA_DIR as `arena up` runs it), migrated by the server or `arena migrate`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
from collections.abc import Awaitable, Callable

import asyncpg

from arena.errors import NotFound
from server.services import tokens
from server.settings import from_env
from server.store.audit import AuditLog
from server.store.embedded import EmbeddedServices


def _run(work: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    settings = from_env()
    embedded = EmbeddedServices(settings.data_dir)
    try:
        url = settings.database_url or embedded.postgres_url()

        async def go() -> int:
            audit = await AuditLog.open(url, settings.database_schema, max_size=1)
            try:
                return await work(audit.pool)
            finally:
                await audit.close()

        return asyncio.run(go())
    finally:
        embedded.stop()


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def cmd_list(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        keys = await tokens.list_keys(pool)
        active = [k for k, _, retired in keys if retired is None]
        for kid, created, retired in keys:
            state = f"停用 retired {_when(retired)}" if retired else (
                "签名中 signing" if kid == active[-1] else "仅验证 verifying")
            print(f"{kid}  {_when(created)}  {state}")
        return 0

    return _run(work)


def cmd_add(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        print(await tokens.add_key(pool))
        return 0

    return _run(work)


def cmd_retire(args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        try:
            await tokens.retire_key(pool, args.kid)
        except NotFound as exc:
            print(f"{exc.message_zh} ({exc.message_en})")
            return 1
        print(f"已停用 retired: {args.kid}")
        return 0

    return _run(work)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="token signing keys: list, add (rotate), retire")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("list", help="every key and its state").set_defaults(fn=cmd_list)
    keys_sub.add_parser("add", help="add a signing key (rotation)").set_defaults(fn=cmd_add)
    retire = keys_sub.add_parser("retire", help="stop accepting tokens signed by a key")
    retire.add_argument("kid")
    retire.set_defaults(fn=cmd_retire)
