"""Benchmark: restart of `arena up` to ready, and to the first scored submission.

Each run starts `arena up` (embedded PostgreSQL and Valkey, data already there from a
first start that is not counted) and measures, from the moment the process is spawned:

- listening: the first `/healthz` 200;
- ready: the first `/readyz` 200 (PostgreSQL, Valkey, the patient engine, and the
  matching process having loaded the case library);
- first scored, eager: a student who connects as soon as the server accepts
  connections, asks one question and submits; the time until `scored` arrives. A
  submission waits until its questions are matched, so this is what a contestant
  pays for the matching process still loading;
- eager submit to scored: the same student's time from `submit` to `scored` alone (the
  first submission after a restart);
- submit to scored after ready: a second student who starts once `/readyz` says ready
  (while the eager one may still wait); the time from `submit` to `scored` alone.

`--cases N` serves a library of N cases instead of the tree's `cases/`: those, the
library, and copies of them to make up N,
each with a new id and one fact's answer changed (so each has its own facts hash and
embedding cache file; the copies share most texts, so a cold cache embeds less than N
distinct cases would).

Then the server is stopped (SIGTERM, or SIGKILL with --kill, which makes the next start
deal with the orphaned services) and started again. With embeddings, each tree runs twice
in turn: "warm", keeping the fact-document embeddings that earlier starts cached under
DATA_DIR/embeddings, and "cold", with that folder deleted before every start (the first
start after a case changed, or a new data folder). The same runs with EMBEDDINGS=0
(BM25 only) are one baseline in the same run; `--baseline DIR` is another: a tree of
this project (e.g. the previous commit, `git archive HEAD | tar -x -C DIR`) run with
this venv, restarted in turn with this one so both see the same machine load.

    .venv/bin/python -m loadtest.startup_bench [--runs 3] [--kill] [--baseline DIR] [--cases N]
        [--warm-only]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import psutil
from websockets.sync.client import connect

from server import protocol
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTING_NAMES = {f.name.upper() for f in msgspec.structs.fields(Settings)}
CASE = "r8c3vn"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def _practice(base: str, timeout: float) -> float:
    """One practice to its score; the seconds from `submit` to `scored`."""
    with connect(base.replace("http", "ws", 1) + "/ws", open_timeout=10) as ws:
        def send(type_: str, **fields: Any) -> None:
            ws.send(msgspec.json.encode({"type": type_, "id": os.urandom(4).hex(), **fields}))

        def until(tag: str) -> Any:
            end = time.monotonic() + timeout
            while True:
                msg = protocol.decode_server(ws.recv(timeout=max(0.01, end - time.monotonic())))
                if msg.__struct_config__.tag == tag:
                    return msg

        send("hello", v=protocol.PROTOCOL_VERSION, name="基准")
        until("welcome")
        send("start_practice", case_id=CASE)
        until("practice_started")
        send("ask", text="胸口疼多久了？")
        until("answer_end")
        began = time.perf_counter()
        send("submit", diagnosis="急性下壁心肌梗死", differentials=["主动脉夹层"])
        until("scored")
        return time.perf_counter() - began


def _kill_leftovers(data: Path) -> None:
    """Kill servers still running on `data` (a baseline tree without the orphan fix,
    stopped by SIGKILL, leaves its Valkeys behind)."""
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            name, cmd = p.info["name"] or "", " ".join(p.info["cmdline"] or [])
            if (name == "postgres" and str(data) in cmd) or (
                    name.startswith("valkey") and p.cwd().startswith(str(data))):
                p.kill()
        except psutil.Error:
            pass


def make_library(root: Path, n: int, folder: Path) -> Path:
    """`n` valid cases in `folder` (see the module docstring)."""
    sources = sorted((root / "cases").glob("*.json"))
    for path in sources[:n]:
        shutil.copy(path, folder)
    for i in range(n - min(n, len(sources))):
        case = msgspec.json.decode(sources[i % len(sources)].read_bytes())
        case["id"] = f"bench{i:03d}"
        case["facts"][0]["answer"] += f"（{i}）"
        (folder / f"bench{i:03d}.json").write_bytes(msgspec.json.encode(case))
    return folder


class Run:
    def __init__(
        self, root: Path, data: Path, embeddings: bool, cold: bool = False,
        cases: Path | None = None,
    ) -> None:
        self.root = root
        self.cold = cold
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items()
                    if k.upper() not in SETTING_NAMES and k != "XDG_RUNTIME_DIR"}
        self.env.update(DATA_DIR=str(data), CASES_DIR=str(cases or root / "cases"),
                        EMBEDDINGS="1" if embeddings else "0", ADMIN_PASSWORD="bench-password")
        self.data = data
        self.log = data / "up.log"

    def once(self, kill: bool, timeout: float = 180) -> dict[str, float]:
        if self.cold:
            shutil.rmtree(self.data / "embeddings", ignore_errors=True)
        t0 = time.perf_counter()
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "up", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            )
        out: dict[str, float] = {}
        try:
            deadline = t0 + timeout
            while _status(self.base + "/healthz") != 200:
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(self.log.read_text(errors="replace")[-3000:])
                time.sleep(0.01)
            out["listening"] = time.perf_counter() - t0

            def eager() -> None:
                took = _practice(self.base, timeout)
                out["first scored, eager"] = time.perf_counter() - t0
                out["eager submit to scored"] = took

            student = threading.Thread(target=eager)
            student.start()
            while _status(self.base + "/readyz") != 200:
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(self.log.read_text(errors="replace")[-3000:])
                time.sleep(0.01)
            out["ready"] = time.perf_counter() - t0
            # At once, not after the eager student: what /readyz promises a load balancer.
            out["submit to scored after ready"] = _practice(self.base, timeout)
            student.join(timeout)
        finally:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            proc.wait(30)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kill", action="store_true", help="stop with SIGKILL, not SIGTERM")
    ap.add_argument("--root", type=Path, default=ROOT, help="the project tree to run")
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="another tree, restarted in turn with --root (same machine load)")
    ap.add_argument("--warm-only", action="store_true",
                    help="with embeddings, skip the cold-cache restarts")
    ap.add_argument("--cases", type=int, default=0,
                    help="serve this many cases (see the module docstring)")
    args = ap.parse_args()
    roots = [r.resolve() for r in (args.root, *args.baseline)]
    library: Path | None = None
    if args.cases:
        library = make_library(args.root, args.cases, Path(tempfile.mkdtemp(
            prefix="startup-bench-cases-")))
    cases = len(list((library or args.root / "cases").glob("*.json")))
    print(f"{cases} cases, {args.runs} restarts each, trees in turn, stopped by "
          f"{'SIGKILL' if args.kill else 'SIGTERM'}; seconds, median (min-max)")
    for embeddings in (True, False):
        colds = (True, False) if embeddings and not args.warm_only else (False,)
        variants = [(root, cold) for root in roots for cold in colds]
        with contextlib.ExitStack() as stack:
            runs = [Run(root, Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="startup-bench-"))), embeddings, cold, library)
                for root, cold in variants]
            for run in runs:  # runs before the folder is removed
                stack.callback(_kill_leftovers, run.data)
            for run in runs:
                # First start: initdb, migrations, admin account, and the embedding cache,
                # the intent bank's included (minutes of CPU on a busy 2-core machine).
                run.once(kill=False, timeout=900)
            results: list[list[dict[str, float]]] = [[] for _ in runs]
            for _ in range(args.runs):
                for run, got in zip(runs, results, strict=True):
                    got.append(run.once(args.kill))
            if args.kill:  # the last orphans: one more start adopts them, SIGTERM stops all
                for run in runs:
                    run.once(kill=False)
            for (root, cold), got in zip(variants, results, strict=True):
                cache = (" cold cache" if cold else " warm cache") if embeddings else ""
                print(f"EMBEDDINGS={int(embeddings)}{cache}  {root}")
                for key in got[0]:
                    xs = [r[key] for r in got]
                    print(f"  {key:30s} {statistics.median(xs):7.3f}  "
                          f"({min(xs):.3f}-{max(xs):.3f})")
    if library is not None:
        shutil.rmtree(library, ignore_errors=True)


if __name__ == "__main__":
    main()
