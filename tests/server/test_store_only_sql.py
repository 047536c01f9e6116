"""Every query to PostgreSQL and every Redis command is made in server/store/.

Read from the source (ast), not by grep: a docstring or comment that names a
statement, or a message that says SELECT, is not a query. Flagged outside store/:
a string that reads as SQL, an asyncpg query or transaction call, and a Redis command.
The `limits` package behind server/services/ratelimit.py talks to Redis on its own;
that module hands it a connection pool and makes no command itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
STORE = SERVER / "store"

# Uppercase as written in this code base; ASCII so that a CJK character is not a word
# character and `SELECT 病例` is not a statement.
_SQL = [re.compile(p, re.ASCII) for p in (
    r"\bSELECT\b[\s\S]*\bFROM\b",
    r"^\s*SELECT\s+(\d|\*|\w+\s*\()",  # SELECT 1, SELECT count(*), SELECT pg_advisory_...(
    r"\bINSERT\s+INTO\b",
    r"\bUPDATE\s+\w+\s+SET\b",
    r"\bDELETE\s+FROM\b",
    r"\bON\s+CONFLICT\b",
    r"\bWHERE\b[^\n]*\$\d",  # a parameterised condition, as in an f-string's tail
    r"\b(CREATE|ALTER|DROP|TRUNCATE)\s+(TABLE|SCHEMA|INDEX|ROLE|FUNCTION|TRIGGER|VIEW)\b",
)]
# asyncpg's query and transaction methods (a pool, a connection or a prepared statement).
_ASYNCPG = {
    "fetch", "fetchval", "fetchrow", "fetchmany", "execute", "executemany", "transaction",
    "copy_records_to_table", "copy_to_table", "copy_from_table", "copy_from_query",
}
# redis-py commands no other object here has; `publish` is left out (Bus.publish).
_REDIS = {
    "mget", "mset", "msetnx", "getdel", "getex", "setex", "setnx", "psetex", "incr", "incrby",
    "decr", "decrby", "expire", "pexpire", "persist", "hget", "hset", "hmget", "hgetall",
    "hdel", "hincrby", "hexists", "hkeys", "hvals", "hlen", "lpush", "rpush", "lpop", "rpop",
    "lrange", "ltrim", "llen", "sadd", "srem", "smembers", "sismember", "scard", "zadd",
    "zrem", "zrange", "zrangebyscore", "zrevrange", "zscore", "zcard", "zincrby", "xadd",
    "xread", "xrange", "xrevrange", "xtrim", "xlen", "pipeline", "scan_iter", "evalsha",
    "register_script", "script_load", "flushdb", "flushall", "pubsub",
}
# Commands whose names other objects share too (a dict's get, os.unlink): flagged on a
# receiver named like a client, as `self.r` or `client`; a bare `r` is a row as often.
_REDIS_COMMON = {"get", "set", "delete", "exists", "keys", "ping", "eval", "unlink"}
_CLIENT_NAMES = {"redis", "valkey", "client"}
_CLIENT_ATTRIBUTES = _CLIENT_NAMES | {"r"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _client(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _CLIENT_NAMES
    return isinstance(node, ast.Attribute) and node.attr in _CLIENT_ATTRIBUTES


def offences(source: str) -> list[str]:
    """`line: what` for each query, transaction or Redis command in `source`."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.JoinedStr):  # an f-string: its parts with {} between
            text = "".join(
                str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values
            )
            skip |= {id(v) for v in node.values}
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in skip):
            text = node.value
        if text is not None and isinstance(node, ast.expr) and any(p.search(text) for p in _SQL):
            found.append((node.lineno, f"SQL {text.strip()[:50]!r}"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in _ASYNCPG:
                found.append((node.lineno, f"asyncpg .{name}()"))
            elif name in _REDIS or (
                name in _REDIS_COMMON and _client(node.func.value)
            ):
                found.append((node.lineno, f"redis .{name}()"))
    return [f"{line}: {what}" for line, what in sorted(found)]


def test_no_sql_or_redis_command_outside_store() -> None:
    files = [p for p in sorted(SERVER.rglob("*.py")) if STORE not in p.parents]
    assert len(files) >= 20 and any(p.name == "judging.py" for p in files)
    found = {
        str(p.relative_to(SERVER)): hits
        for p in files if (hits := offences(p.read_text(encoding="utf-8")))
    }
    assert found == {}, "SQL and Redis commands belong in server/store/"


def test_store_is_where_they_are() -> None:
    # The check finds what it forbids in the modules that may hold it.
    for name in ("audit.py", "accounts.py", "keys.py", "scores.py"):
        assert offences((STORE / name).read_text(encoding="utf-8")), name


def test_the_check_itself() -> None:
    bad = '''
async def f(pool, conn, self, cols):
    await pool.fetch("SELECT id FROM rounds WHERE competition_id = $1", 1)
    x = f"SELECT {cols} FROM contestants WHERE id = $1"
    y = "UPDATE contestants SET redeemed_at = NULL"
    z = "SELECT 1"
    async with conn.transaction():
        pass
    await self.r.set("k", 1, ex=3)
    await client.mget(["a"]) or await client.get("a")
    async with self.r.pipeline(transaction=False) as p:
        p.set("k", 1)
'''
    hits = offences(bad)
    assert [h.split(":")[0] for h in hits] == [
        "3", "3", "4", "5", "6", "7", "9", "10", "10", "11"
    ], hits
    good = '''
"""One UPDATE both checks and marks; SELECT ... FROM events in prose is fine here."""
import asyncio
async def f(event: asyncio.Event, log, bus, d: dict[str, int]) -> None:
    """INSERT INTO events (...) is what store.audit does."""
    event.set()
    d.get("x")
    log.info("SELECT 病例 then press 提交")
    msg = ("请 SELECT 一个病例。", "Select a case, then update the form.")
    await bus.publish("round:1", b"{}")
    os.unlink("x")
    [r.get("k") for r in rows]
'''
    assert offences(good) == []
