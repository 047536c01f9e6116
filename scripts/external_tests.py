"""Second pass of `make test`: the server and integration tests against external services.

The first pass uses the embedded PostgreSQL and Valkey. This one points
DATABASE_URL / REDIS_URL at real servers: the ones already set in the
environment, or else the machine's own PostgreSQL (127.0.0.1:5432, database
`test`) and Redis (127.0.0.1:6379) when they answer. Each run uses its own
schema and key prefix, so it leaves nothing behind and sees nothing stale.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        if not answers("127.0.0.1", 5432):
            print("external pass skipped: no DATABASE_URL and nothing on 127.0.0.1:5432")
            return 0
        env["DATABASE_URL"] = DEFAULT_DB
    if not env.get("REDIS_URL"):
        if not answers("127.0.0.1", 6379):
            print("external pass skipped: no REDIS_URL and nothing on 127.0.0.1:6379")
            return 0
        env["REDIS_URL"] = DEFAULT_REDIS
    print(f"external pass: DATABASE_URL={env['DATABASE_URL']} REDIS_URL={env['REDIS_URL']}",
          flush=True)
    # Modules marked own_services would run exactly as in the first pass: not again.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-m", "not own_services", "tests/server", "tests/integration"]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
