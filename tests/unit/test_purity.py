"""arena/ is the Sans-I/O core: no event loop, sockets, services or clock."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "asyncio", "redis", "asyncpg", "minio", "openai", "httpx", "httpx2", "time", "socket",
    "websockets", "starlette", "uvicorn", "random", "datetime", "server",
}
ARENA = Path(__file__).resolve().parents[2] / "arena"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_arena_imports_no_io_or_clock() -> None:
    files = sorted(ARENA.glob("*.py"))
    assert len(files) >= 6
    offenders = {f.name: sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_itself_catches_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom asyncio import sleep\n")
    assert imported_modules(bad) & FORBIDDEN == {"time", "asyncio"}
