"""Run the locust competition scenario end to end: simulator, server, round, locust, summary.

Why a script and not a Makefile target: the run needs a sequence with bounded waits
(the server is ready only once PostgreSQL, Valkey and the LLM answer), a round
prepared through the HTTP API like an organizer would, a plan handed to locust, the
CPU each part used (server, simulator and locust share the machine, so the load
generator's own cost belongs in the report), and everything it started stopped again,
killed if it does not stop in time.

    .venv/bin/python -m loadtest.run_locust --contestants 300 --spectators 1000 \\
        --spawn-rate 50 --run-time 5m --processes 2

With DATABASE_URL and REDIS_URL set, the server is `arena serve` against them
(ARENA_PASSWORD is the organizer `admin`'s password there); otherwise `arena up`
starts embedded PostgreSQL and Valkey under a temporary DATA_DIR, removed afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_seconds(text: str) -> int:
    """Locust's run-time spelling (90, 90s, 5m, 1h30m) in seconds."""
    total, number = 0, ""
    for ch in text.strip():
        if ch.isdigit():
            number += ch
        elif ch in "hms" and number:
            total += int(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
        else:
            raise ValueError(f"cannot read run time {text!r}")
    return total + int(number or 0)


class Api:
    """The organizer's HTTP API, just enough to prepare a round."""

    def __init__(self, base: str, token: str = "") -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: object | None = None,
             content: bytes | None = None) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        data = content
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        elif content is not None:
            headers["content-type"] = "text/csv"
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None


def prepare(base: str, password: str, contestants: int, codes: int, duration_s: int,
            case_id: str) -> tuple[str, str, list[str]]:
    """A competition with `codes` people on its roster and one running round:
    (round id, spectator token, join codes)."""
    login = Api(base).call("POST", "/api/login", {"username": "admin", "password": password})
    api = Api(base, login["token"])
    cid = api.call("POST", "/api/competitions", {"title": f"压力测试 {time.strftime('%H:%M')}"})
    cid = cid["id"]
    lines = ["姓名,学校,队伍,邮箱"] + [
        f"选手{i:04d},第{i % 12 + 1}医学院,第{i % 60 + 1}队,load{i}-{cid}@example.com"
        for i in range(1, codes + 1)
    ]
    api.call("POST", f"/api/competitions/{cid}/roster", content="\n".join(lines).encode())
    rules = {"case_id": case_id, "duration_s": duration_s, "countdown_s": 0,
             "board_visible": True, "max_submissions": 1}
    rid = api.call("POST", f"/api/competitions/{cid}/rounds",
                   {"title": "压力测试场", "rules": rules})["id"]
    for action in ("open", "start"):
        api.call("POST", f"/api/rounds/{rid}/{action}",
                 {"request_id": uuid.uuid4().hex, "reason": "load test"})
    spectator = api.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    roster = api.call("GET", f"/api/competitions/{cid}/roster")
    return rid, spectator, [p["join_code"] for p in roster]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read()[:300].decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s: {last}")


def stop(proc: subprocess.Popen[bytes], name: str, timeout: float = 30) -> None:
    """SIGTERM (the server then stops its embedded services), SIGKILL the group if stuck."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {timeout:.0f} s; killing it", file=sys.stderr)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class CpuMeter:
    """CPU seconds used by a process and its descendants (locust workers), and by processes
    whose command line names `folder` (PostgreSQL daemonizes away from `arena up`)."""

    def __init__(self, pid: int, folder: str = "") -> None:
        self.root = psutil.Process(pid)
        self.folder = folder
        self.seen: dict[int, float] = {}

    def sample(self) -> float:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        if self.folder:
            for p in psutil.process_iter(["cmdline"]):
                if any(self.folder in part for part in p.info["cmdline"] or ()):
                    procs.append(p)
        for p in procs:
            try:
                t = p.cpu_times()
                self.seen[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return sum(self.seen.values())


class Prober(threading.Thread):
    """GET /healthz once a second: its latency is the server's event-loop lag, roughly,
    which every request waits out once per await."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="healthz-probe")
        self.url = url
        self.samples: list[float] = []
        self.failed = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as resp:
                    resp.read()
                self.samples.append((time.perf_counter() - started) * 1000)
            except OSError:
                self.failed += 1

    def report(self) -> str:
        ordered = sorted(self.samples) or [float("nan")]

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

        return (f"GET /healthz once a second: {len(self.samples)} ok, {self.failed} failed; "
                f"p50 {pct(50):.0f} ms, p95 {pct(95):.0f} ms, p99 {pct(99):.0f} ms, "
                f"max {ordered[-1]:.0f} ms")


def scrape(url: str) -> list[str]:
    """The server's own counters of trouble: slow clients, error replies, failed answers."""
    wanted = ("arena_ws_slow_clients_total", "arena_ws_errors_total", "arena_llm_errors_total",
              "arena_ws_messages_out_total", "arena_ws_messages_in_total",
              "arena_llm_ttft_seconds_sum", "arena_llm_ttft_seconds_count")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    except OSError as exc:
        return [f"(could not read {url}: {exc})"]
    return [line for line in text.splitlines() if line.startswith(wanted)]


def summarize(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_stats.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    print(f"\n{'type':<5} {'name':<16} {'requests':>9} {'failures':>9} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for r in rows:
        print(f"{r['Type']:<5} {r['Name']:<16} {r['Request Count']:>9} {r['Failure Count']:>9} "
              f"{r['50%']:>8} {r['95%']:>8} {r['99%']:>8} {float(r['Max Response Time']):>8.0f}")
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        with open(failures, encoding="utf-8") as f:
            for r in csv.DictReader(f):
                print(f"failure: {r['Name']}: {r['Error']} × {r['Occurrences']}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run_locust", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contestants", type=int, default=300)
    parser.add_argument("--spectators", type=int, default=1000)
    parser.add_argument("--spawn-rate", type=float, default=50)
    parser.add_argument("--run-time", default="5m")
    parser.add_argument("--processes", type=int, default=1, help="locust worker processes")
    parser.add_argument("--case", default="r8c3vn")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--out", default="artifacts/locust", help="folder for CSVs and logs")
    args = parser.parse_args(argv)
    classes: list[str] = []
    if args.spectators == 0:
        classes = ["ContestantUser"]  # locust runs only the classes named, all of them
    elif args.spectators * 3 != args.contestants * 10:
        # The user classes weigh 300:1000; other mixes need fixed counts in the locustfile.
        parser.error("contestants:spectators must be 3:10 (the locustfile's weights), "
                     "or --spectators 0")

    run_s = parse_seconds(args.run_time)
    users = args.contestants + args.spectators
    spawn_s = users / args.spawn_rate
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    port, sim_port = args.port or free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    external = bool(os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
    password = os.environ.get("ARENA_PASSWORD") or secrets.token_urlsafe(12)

    with ExitStack() as stack:
        data_dir = Path(tempfile.mkdtemp(prefix="arena-locust-"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        env = {
            **os.environ, "LLM_BASE_URL": f"http://127.0.0.1:{sim_port}/v1", "PORT": str(port),
            "HOST": "127.0.0.1", "DATA_DIR": str(data_dir), "CASES_DIR": str(ROOT / "cases"),
            "ADMIN_PASSWORD": password, "PYTHONUNBUFFERED": "1",
        }

        def start(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
            log = open(out / f"{name}.log", "wb")  # noqa: SIM115 - closed by the stack
            stack.callback(log.close)
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            stack.callback(stop, proc, name)
            return proc

        sim = start("llm_sim", [sys.executable, "-m", "loadtest.llm_sim", "--port", str(sim_port),
                                "--ttft-ms", "100", "--itl-ms", "20"])
        server = start("server", [str(BIN / "arena"), "serve" if external else "up"])
        wait_ready(f"http://127.0.0.1:{sim_port}/v1/models", sim, 30)
        wait_ready(f"{base}/readyz", server, 120)
        print(f"server {base} ({'external' if external else 'embedded'} services), "
              f"simulator :{sim_port} (TTFT 100 ms, ITL 20 ms)", flush=True)

        # Twice the contestants on the roster: worker i takes every N-th code, and locust
        # does not split a user class exactly evenly between workers.
        codes_needed = args.contestants * (2 if args.processes > 1 else 1)
        rid, spectator, codes = prepare(base, password, args.contestants, codes_needed,
                                        int(spawn_s + run_s + 600), args.case)
        now = time.time()
        plan = {"host": base, "round_id": rid, "spectator_token": spectator, "codes": codes,
                "processes": args.processes,
                # Submit near the end, after the last users have had time to play.
                "submit_from": now + spawn_s + (run_s - spawn_s) * 0.8,
                "submit_until": now + spawn_s + (run_s - spawn_s) * 0.92}
        plan_path = out / "plan.json"
        plan_path.write_text(json.dumps(plan), encoding="utf-8")
        print(f"round {rid}: {len(codes)} on the roster, started", flush=True)

        prefix = out / "run"
        cmd = [str(BIN / "locust"), "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
               "-u", str(users), "-r", str(args.spawn_rate), "-t", args.run_time,
               "--csv", str(prefix), "--host", base, "--stop-timeout", "5", "--only-summary"]
        if args.processes > 1:
            cmd += ["--processes", str(args.processes)]
        cmd += classes
        print("$ " + " ".join(cmd), flush=True)
        env["ARENA_PLAN"] = str(plan_path)
        meters = {"server (+ PostgreSQL, Valkey)": CpuMeter(server.pid, str(data_dir)),
                  "llm simulator": CpuMeter(sim.pid)}
        before = {k: m.sample() for k, m in meters.items()}
        wall0 = time.monotonic()
        prober = Prober(f"{base}/healthz")
        prober.start()
        locust = start("locust", cmd)
        meters["locust"] = CpuMeter(locust.pid)
        before["locust"] = 0.0
        machine0 = psutil.cpu_times()
        limit = run_s + spawn_s + 180
        while locust.poll() is None:
            for m in meters.values():
                m.sample()  # children come and go; remember each one's last figure
            if time.monotonic() - wall0 > limit:
                print(f"locust still running after {limit:.0f} s; stopping it", file=sys.stderr)
                stop(locust, "locust", 20)
                break
            time.sleep(2)
        wall = time.monotonic() - wall0
        prober.done.set()
        server_metrics = scrape(f"{base}/metrics")
        cpu = {k: m.sample() - before[k] for k, m in meters.items()}
        machine1 = psutil.cpu_times()
        busy = sum(machine1) - sum(machine0) - (machine1.idle - machine0.idle)
        print(f"\nlocust exited with {locust.returncode} after {wall:.0f} s; "
              f"{len(Path(f'{prefix}_stats.csv').read_text().splitlines()) - 1} stats rows")
        rows = summarize(prefix)
        print(f"\nCPU over the run ({os.cpu_count()} cores, {wall:.0f} s wall):")
        for name, seconds in cpu.items():
            print(f"  {name:<30} {seconds:8.1f} s  ({seconds / wall * 100:5.1f} % of one core)")
        share = busy / wall * 100
        print(f"  {'whole machine (busy)':<30} {busy:8.1f} s  ({share:5.1f} % of one core)")
        other = busy - sum(cpu.values())
        print(f"  {'everything else (kernel, other)':<30} {other:8.1f} s  "
              f"({other / wall * 100:5.1f} % of one core)")
        print(f"\nserver loop lag: {prober.report()}")
        print("\nserver counters (/metrics):")
        for line in server_metrics:
            print(f"  {line}")
        total = next((r for r in rows if r["Name"] == "Aggregated"), None)
        failed = int(total["Failure Count"]) if total else -1
        return 0 if failed == 0 and locust.returncode in (0, 1) else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
