"""What can be checked of deploy/ without a Docker engine: YAML parses, nginx accepts the config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yml")), ids=lambda p: p.name)
def test_compose_files_parse(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert "api" in doc["services"]
    for name, svc in doc["services"].items():
        assert "image" in svc or "build" in svc, name


@pytest.mark.skipif(shutil.which("nginx") is None, reason="Debian's nginx is not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    site = (DEPLOY / "nginx" / "arena.conf").read_text().replace("server api:8000",
                                                                 "server 127.0.0.1:8000")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp {\n"
        f"access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};\n"
        f"fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};\n"
        f"{site.replace('listen 80;', 'listen 127.0.0.1:18080;')}\n}}\n"
    )
    result = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
