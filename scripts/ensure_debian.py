"""Make sure the Debian packages the tests drive are present: Chromium, CJK fonts, nginx.

CI starts from a fresh clone on a machine that may lack them; installing here
keeps `make test` a single command. Never downloads a browser of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FONT_DIR = Path("/usr/share/fonts/opentype/noto")


def missing() -> list[str]:
    need = []
    if not CHROMIUM.exists():
        need.append("chromium")
    if not any(FONT_DIR.glob("NotoSansCJK*")):
        need.append("fonts-noto-cjk")
    if not Path("/usr/sbin/nginx").exists():
        need.append("nginx-light")
    return need


def main() -> int:
    need = missing()
    if not need:
        return 0
    print(f"installing Debian packages for browser tests: {' '.join(need)}", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        print("需要 root 权限安装 chromium / fonts-noto-cjk；请手动安装。", file=sys.stderr)
        return 1
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *need],
        check=True, env=env,
    )
    return 0 if not missing() else 1


if __name__ == "__main__":
    sys.exit(main())
