"""Leaderboard fan-out: how long until every client has a board change, and memory per socket.

Usage (from the repository root, after `make test` or `make up` created .venv):

    .venv/bin/python -m loadtest.fanout_bench --clients 5000 --processes 1
    .venv/bin/python -m loadtest.fanout_bench --clients 5000 --processes 2
    .venv/bin/python -m loadtest.fanout_bench --clients 5000 --root /tmp/base  # another tree

It starts real server processes (`arena serve`) on the embedded PostgreSQL and
Valkey (or DATABASE_URL / REDIS_URL when set), prepares a running round with a
few contestants, connects N spectator WebSockets (split evenly over the
processes), then makes board changes (a contestant orders a test: progress moves,
the board is recomputed and pushed) and records, for each board version, when
each client received it against the server time stamped in the message (`at`,
same host, same clock). "All clients" latency is the slowest client per change.

The baseline, in the same run: a naive broadcast server (one process, a loop of
`await websocket.send_text` to every client) pushing the very board message the
arena sent last (without the per-connection seq/t) to the same number of clients,
measured the same way; both report server CPU per change (from /proc). Memory per idle
connection is the growth of the server processes' RSS divided by the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

ROOT = Path(__file__).resolve().parent.parent
_AT = re.compile(rb'"at":([0-9.]+)')
_VERSION = re.compile(rb'"version":([0-9]+)')


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, body: object | None = None, token: str = "", raw: bytes | None = None
          ) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.2)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis URLs: from the environment, or embedded in a temp folder."""
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        yield os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
        return
    from server.store.embedded import EmbeddedServices

    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        embedded = EmbeddedServices(Path(tmp))
        try:
            yield embedded.postgres_url(), embedded.redis_url()
        finally:
            embedded.stop()


@contextlib.contextmanager
def processes(
    n: int, db: str, redis_url: str, root: Path = ROOT
) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis_url,
           "DATABASE_SCHEMA": f"bench_{run}", "REDIS_PREFIX": f"bench{run}:",
           "ADMIN_PASSWORD": "bench-admin-password", "CASES_DIR": str(root / "cases"),
           "DATA_DIR": tempfile.mkdtemp(prefix="fanout-data-"), "SCRIPTED_CHUNK_MS": "0"}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    log = open(os.path.join(env["DATA_DIR"], "server.log"), "ab")  # noqa: SIM115
    try:
        for _ in range(n):
            port = _free_port()
            p = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
                env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=log,
            )
            procs.append((f"http://127.0.0.1:{port}", p))
            _wait_http(f"http://127.0.0.1:{port}/healthz")  # one at a time: migrations
        yield procs
    finally:
        for _, p in procs:
            p.send_signal(signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
        shutil.rmtree(env["DATA_DIR"], ignore_errors=True)


def prepare(base: str, contestants: int) -> tuple[str, str, list[str]]:
    """A running round with a roster: (round id, spectator token, contestant tokens)."""
    token = _http(f"{base}/api/login", {"username": "admin",
                                        "password": "bench-admin-password"})["token"]
    cid = _http(f"{base}/api/competitions", {"title": "扇出基准"}, token)["id"]
    csv = "姓名,学校\n" + "\n".join(f"选手{i},医学院" for i in range(contestants))
    _http(f"{base}/api/competitions/{cid}/roster", token=token, raw=csv.encode())
    rules = {"case_id": "r8c3vn", "duration_s": 3600, "countdown_s": 0}
    rid = _http(f"{base}/api/competitions/{cid}/rounds", {"title": "基准", "rules": rules},
                token)["id"]
    for action in ("open", "start"):
        _http(f"{base}/api/rounds/{rid}/{action}", {"request_id": uuid.uuid4().hex}, token)
    roster = _http(f"{base}/api/competitions/{cid}/roster", token=token)
    tokens = [_http(f"{base}/api/join", {"code": p["join_code"]})["token"] for p in roster]
    spectator = _http(f"{base}/api/rounds/{rid}/spectator", {}, token)["token"]
    return rid, spectator, tokens


class _Listener(WSListener):
    def __init__(self, owner: Clients) -> None:
        self.owner = owner
        self.welcomed = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = time.time() * 1000
        data = frame.get_payload_as_bytes()
        v, at = _VERSION.search(data), _AT.search(data)
        if v and at:
            self.owner.sample = data
            self.owner.latency.setdefault(int(v.group(1)), []).append(now - float(at.group(1)))
        elif not self.welcomed.done() and b'"welcome"' in data:
            self.welcomed.set_result(None)


class Clients:
    """N WebSocket clients that record, per board version, each one's receive time.

    picows (a C-level client) keeps the load generator's own cost small next to the
    server's, since both share one host.
    """

    def __init__(self) -> None:
        self.transports: list[Any] = []
        self.latency: dict[int, list[float]] = {}
        # The last board seen: the baseline pushes these very bytes, so both arms' clients
        # parse the same message (the `at` field comes after the board).
        self.sample = b""

    async def connect(self, urls: list[str], n: int, token: str = "",
                      tokens: list[str] | None = None) -> None:
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with sem:
                transport, listener = await ws_connect(
                    lambda: _Listener(self), urls[i % len(urls)], websocket_handshake_timeout=60
                )
                tok = tokens[i] if tokens else token
                if tok:
                    transport.send(WSMsgType.TEXT, json.dumps(
                        {"type": "hello", "id": "h", "v": 1, "token": tok}).encode())
                    assert isinstance(listener, _Listener)
                    await asyncio.wait_for(listener.welcomed, 60)
                self.transports.append(transport)

        await asyncio.gather(*(one(i) for i in range(n)))

    def send(self, i: int, msg: dict[str, Any]) -> None:
        self.transports[i % len(self.transports)].send(WSMsgType.TEXT, json.dumps(msg).encode())

    async def close(self) -> None:
        for t in self.transports:
            t.disconnect()
        await asyncio.gather(*(t.wait_disconnected() for t in self.transports),
                             return_exceptions=True)


def summarize(name: str, latency: dict[int, list[float]], n: int) -> dict[str, float]:
    complete = {v: xs for v, xs in latency.items() if len(xs) >= n}
    if os.environ.get("FANOUT_DEBUG"):
        print({v: len(xs) for v, xs in sorted(latency.items())})
    all_have = [max(xs) for xs in complete.values()]
    # The first client's latency is the cost before the broadcast starts (for arena:
    # computing the board and the Redis hop); last minus first is the broadcast itself.
    first = [min(xs) for xs in complete.values()]
    deliveries = [x for xs in complete.values() for x in xs]
    out = {"changes": len(complete), "incomplete": len(latency) - len(complete),
           "all_p50": _pct(all_have, 50), "all_p99": _pct(all_have, 99),
           "all_max": max(all_have, default=float("nan")), "first_p50": _pct(first, 50),
           "each_p50": _pct(deliveries, 50), "each_p99": _pct(deliveries, 99)}
    print(f"{name:<28} changes={out['changes']:<3} incomplete={out['incomplete']:<2} "
          f"all-clients p50={out['all_p50']:7.1f} ms p99={out['all_p99']:7.1f} ms "
          f"max={out['all_max']:7.1f} ms | first client p50={out['first_p50']:6.1f} ms"
          f" | per-delivery p50={out['each_p50']:6.1f} "
          f"p99={out['each_p99']:6.1f} ms", flush=True)
    return out


async def bench_arena(args: argparse.Namespace) -> tuple[dict[str, float], float, int, bytes]:
    with services() as (db, redis_url), \
            processes(args.processes, db, redis_url, args.root) as procs:
        bases = [b for b, _ in procs]
        _, spectator, tokens = prepare(bases[0], args.contestants)
        urls = [b.replace("http", "ws", 1) + "/ws" for b in bases]
        players = Clients()
        await players.connect(urls[:1], len(tokens), tokens=tokens)
        await asyncio.sleep(2)
        rss_before = sum(rss_kb(p.pid) for _, p in procs)
        clients = Clients()
        t0 = time.monotonic()
        await clients.connect(urls, args.clients, spectator)
        print(f"connected {args.clients} clients to {len(urls)} process(es) in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        await asyncio.sleep(3)
        rss_after = sum(rss_kb(p.pid) for _, p in procs)
        per_conn = (rss_after - rss_before) * 1024 / args.clients
        clients.latency.clear()
        cpu_before = sum(cpu_s(p.pid) for _, p in procs)
        items = ["exam_general", "exam_jvp", "exam_heart", "exam_lung", "exam_abdomen",
                 "test_ecg", "test_hs_ctni", "test_cbc", "test_chem", "test_coag", "test_lipids",
                 "test_echo", "test_cxr"]
        for i in range(args.changes):
            item = items[(i // len(tokens)) % len(items)]
            players.send(i, {"type": "order", "id": uuid.uuid4().hex, "item_id": item})
            await asyncio.sleep(args.gap)
        await asyncio.sleep(2)
        cpu = sum(cpu_s(p.pid) for _, p in procs) - cpu_before
        await clients.close()
        await players.close()
        stats = summarize(f"arena, {args.processes} process(es)", clients.latency, args.clients)
        stats["cpu_ms_per_change"] = cpu * 1000 / args.changes
        print(f"  server CPU per change: {stats['cpu_ms_per_change']:.1f} ms", flush=True)
        return stats, per_conn, rss_after - rss_before, clients.sample


# ---- the naive baseline -----------------------------------------------------------------


def naive_server(port: int) -> None:
    """One process; broadcast = a loop awaiting each client's send, the obvious approach."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    clients: set[WebSocket] = set()

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        clients.add(ws)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            clients.discard(ws)

    async def broadcast(request: Request) -> Response:
        body = await request.body()
        at = time.time() * 1000
        text = body.decode().replace('"at":0', f'"at":{at:.1f}', 1)
        for ws in list(clients):
            with contextlib.suppress(Exception):
                await ws.send_text(text)
        return Response("ok")

    app = Starlette(routes=[WebSocketRoute("/ws", ws_endpoint),
                            Route("/broadcast", broadcast, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def bench_naive(args: argparse.Namespace, sample: bytes) -> tuple[dict[str, float], float]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.fanout_bench", "--naive-server",
                             str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}/broadcast", data=b"{}"), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        rss_before = rss_kb(proc.pid)
        clients = Clients()
        await clients.connect([f"ws://127.0.0.1:{port}/ws"], args.clients)
        await asyncio.sleep(3)
        per_conn = (rss_kb(proc.pid) - rss_before) * 1024 / args.clients
        # The arena's board message without the per-connection seq/t, `at` zeroed for the
        # server to stamp, and the version counting up.
        template = re.sub(rb'^\{"seq":[0-9]+,"t":[0-9.]+,', b"{", sample)
        template = _AT.sub(b'"at":0', template, count=1)
        loop = asyncio.get_running_loop()

        def push(body: bytes) -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/broadcast", data=body)
            urllib.request.urlopen(req, timeout=60).close()

        cpu_before = cpu_s(proc.pid)
        for v in range(1, args.changes + 1):
            body = _VERSION.sub(b'"version":%d' % v, template, count=1)
            await loop.run_in_executor(None, push, body)
            await asyncio.sleep(args.gap)
        await asyncio.sleep(2)
        cpu = cpu_s(proc.pid) - cpu_before
        await clients.close()
        stats = summarize("naive loop, 1 process", clients.latency, args.clients)
        stats["cpu_ms_per_change"] = cpu * 1000 / args.changes
        print(f"  server CPU per change: {stats['cpu_ms_per_change']:.1f} ms", flush=True)
        return stats, per_conn
    finally:
        proc.terminate()
        proc.wait(15)


async def main_async(args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} cores; clients={args.clients} changes={args.changes}",
          flush=True)
    arena, per_conn, grown, sample = await bench_arena(args)
    print(f"board message: {len(sample)} bytes", flush=True)
    naive, naive_conn = await bench_naive(args, sample)
    print(f"memory per idle connection: arena {per_conn / 1024:.1f} KB "
          f"({grown / 1024:.1f} MB for {args.clients}), naive {naive_conn / 1024:.1f} KB",
          flush=True)
    ratio = arena["all_p99"] / naive["all_p99"] if naive["all_p99"] else float("nan")
    print(f"ratio arena/naive, all-clients p99: {ratio:.2f}", flush=True)
    print(json.dumps({"arena": arena, "naive": naive, "kb_per_conn": per_conn / 1024,
                      "naive_kb_per_conn": naive_conn / 1024,
                      "median_all_ratio": statistics.median([ratio])}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--contestants", type=int, default=20)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.7, help="seconds between changes")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the project tree whose server is measured (e.g. a previous "
                             "commit's `git worktree`); the clients and baseline are this one's")
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        naive_server(args.naive_server)
        return
    import uvloop  # the clients need a fast loop too, or they measure themselves

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
