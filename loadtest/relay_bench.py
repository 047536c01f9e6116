"""Patient relay: what the server adds to first token and between tokens at N concurrent streams.

Usage (from the repository root, after `make test` or `make up` created .venv):

    .venv/bin/python -m loadtest.relay_bench --streams 500 --ttft-ms 100 --itl-ms 20

It starts the LLM simulator (`loadtest.llm_sim`, its own process; a reply of
`--tokens` tokens) and one `arena serve` with the llm engine pointed at it, on
the embedded PostgreSQL and Valkey (or DATABASE_URL / REDIS_URL when set), with
the LLM connection pool sized for the streams. Two arms run against the same
simulator in the same run, on the same schedule (every stream asks at the same
moment, or spread over `--stagger-ms`):

- through the server: N WebSocket clients (picows) each say hello, start a
  practice and `ask`; per stream, TTFT is ask sent -> first `answer_delta`
  received, ITL every gap between consecutive `answer_delta` frames.
- direct: the same N streams straight to the simulator's
  `/v1/chat/completions` (the body the server last sent, `stream: true`) over
  pre-connected raw sockets with a hand-written HTTP/1.1 request; TTFT is
  request sent -> first read carrying a content token, ITL every gap between
  reads carrying content tokens.

With `--against REF_OR_DIR` a third arm runs a second server from another tree: a
git ref of this repository (exported with `git archive`, the checkout untouched) or a
directory. Both servers run at once on the same PostgreSQL and Valkey (each in a
schema and key prefix of its own), each with its own clients; their rounds alternate
with the direct arm against the same simulator, so an A/B of two versions of the
server (a change against the commit before it, or two implementations of one part)
is measured on the same machine at the same moments, and printed with the direct
baseline of the same run. Each server runs its own tree's code and cases.

The server matches each question for scoring in a niced child process after the
answer has started (server/patient/pool.py); after the through-server arm the bench
waits until that backlog is empty (`arena_background_backlog` on /metrics) so it
does not run into the next arm, and reports the child's CPU (during and after the
arm) and the time it needed after the arm separately: it is not the relay's cost.

Server-added latency is the through-server percentile minus the direct one (p50
vs p50, p99 vs p99). CPU per relayed chunk is the server process's CPU time
(utime + stime from /proc) during its arm over the `answer_delta` frames it
sent; the baseline is the simulator's CPU per token during the direct arm.

The clients (loadtest/relay_clients.py) run in `--client-procs` worker processes
(uvloop; picows for the WebSockets, an asyncio.Protocol for HTTP: both read callbacks,
no per-chunk coroutine) so the load generator's own event-loop queueing stays small,
and the arms never run at the same time: each repeat runs every arm once, each repeat
starting with a different one. Workers report their own CPU per chunk per arm, to show
the client cost is comparable between the arms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import msgspec

from loadtest.fanout_bench import ROOT, _free_port, _http, _pct, _wait_http, services
from loadtest.llm_sim import DEFAULT_REPLY, tokenize
from loadtest.relay_clients import Workers

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_cpu_seconds(pid: int) -> float:
    """CPU of every process descended from `pid` (the server's matching process)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    total, todo = 0.0, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                todo.append(child)
                with suppress(OSError, ValueError, IndexError):
                    total += cpu_seconds(child)
    return total


def drain_background(base: str, limit_s: float = 300.0) -> None:
    """Wait until the server has matched every question (arena_background_backlog 0)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("arena_background_backlog ") and float(line.split()[1]) == 0:
                    return
        time.sleep(0.1)
    raise TimeoutError("the server's background matching did not drain")


def reply_of(tokens: int) -> str:
    """A patient reply the simulator splits into exactly `tokens` tokens."""
    pieces: list[str] = []
    while len(pieces) < tokens:
        pieces += tokenize(DEFAULT_REPLY)
    text = "".join(pieces[:tokens])
    assert len(tokenize(text)) == tokens
    return text


# The client side (students on WebSockets, direct SSE readers, the worker processes that
# run them) is loadtest/relay_clients.py.


@contextmanager
def simulator(
    args: argparse.Namespace, reply: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.llm_sim", "--port", str(port),
         "--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms), "--reply", reply],
        cwd=ROOT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models")
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def server_env(sim_port: int, streams: int) -> dict[str, str]:
    """LLM settings for `arena serve`: pointed at the simulator, every cap above `streams`."""
    from server.settings import Settings

    env = {"LLM_BASE_URL": f"http://127.0.0.1:{sim_port}/v1", "LLM_MODEL": "patient",
           "LLM_READ_TIMEOUT": "120", "LLM_CONNECT_TIMEOUT": "30",
           # Each stream asks every round; the question limits (which still cost their Redis
           # round trips here, as in production) must never refuse one.
           "ASK_LIMIT": "1000000/minute", "PRACTICE_ADDRESS_ASK_LIMIT": "1000000/minute"}
    # Whatever concurrency caps the server has when this runs must not be what is measured.
    cap = re.compile(r"llm_max_connections|concurren|max_streams|max_answers|in_?flight")
    for f in msgspec.structs.fields(Settings):
        if cap.search(f.name) and isinstance(f.default, int) and not isinstance(f.default, bool):
            env[f.name.upper()] = str(max(f.default, 2 * streams))
    return env


def schedule(n: int, stagger_ms: float) -> list[float]:
    return [i * stagger_ms / 1000 / n for i in range(n)]


def split(xs: list[Any], k: int) -> list[list[Any]]:
    return [xs[i::k] for i in range(k)]


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": _pct(values, 50), "p99": _pct(values, 99), "n": len(values)}


class Arm:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ttft: list[float] = []
        self.start: list[float] = []
        self.relay: list[float] = []
        self.gaps: list[float] = []
        # Per token j: arrival since the request minus the nominal TTFT + j x ITL.
        self.late: list[float] = []
        self.frames = 0
        self.tokens = 0
        self.streams = 0
        self.failed: list[str] = []
        self.server_cpu = 0.0  # seconds, server process (through-server arm only)
        # The server's matching process (questions matched for scoring): its CPU during
        # and after the arm, and how long it needed after the arm to catch up.
        self.background_cpu = 0.0
        self.background_s = 0.0
        self.sim_cpu = 0.0
        self.client_cpu = 0.0

    def add(self, results: list[dict[str, Any]], reply: str | None, ttft_ms: float,
            itl_ms: float) -> None:
        for r in results:
            self.client_cpu += r["cpu"]
            for s in r["streams"]:
                self.streams += 1
                bad = s["error"] or (reply is not None and s.get("text") != reply)
                if bad:
                    self.failed.append(s["error"] or f"text differs: {s.get('text')!r}"[:200])
                    continue
                self.ttft.append(s["ttft"])
                if s["start"] is not None:
                    self.start.append(s["start"])
                    self.relay.append(s["relay"])
                self.gaps += s["gaps"]
                self.late += [t - ttft_ms - j * itl_ms for j, t in enumerate(s["token_times"])]
                self.frames += s["frames"]
                self.tokens += s["tokens"]

    def report(self) -> dict[str, Any]:
        return {"ttft_ms": stats(self.ttft), "itl_ms": stats(self.gaps),
                "token_lateness_ms": stats(self.late),
                "ask_to_answer_start_ms": stats(self.start) if self.start else None,
                "answer_start_to_first_delta_ms": stats(self.relay) if self.relay else None,
                "streams": self.streams, "failed": len(self.failed), "frames": self.frames,
                "tokens": self.tokens, "server_cpu_s": self.server_cpu,
                "background_cpu_s": self.background_cpu, "background_s": self.background_s,
                "sim_cpu_s": self.sim_cpu, "client_cpu_s": self.client_cpu, "name": self.name}


@contextmanager
def checkout(spec: str) -> Iterator[tuple[Path, str]]:
    """A tree to run a server from, and its label: a directory as it is, or a git ref of
    this repository exported (`git archive`, which leaves the checkout untouched) into a
    temporary folder."""
    if Path(spec).is_dir():
        yield Path(spec).resolve(), spec
        return
    commit = subprocess.run(["git", "rev-parse", "--short", spec], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="relay-ab-") as tmp:
        archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {commit} failed")
        yield Path(tmp), f"{spec} ({commit})"


@contextmanager
def serve(root: Path, db: str, redis_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One `arena serve` running the code and the cases of the tree at `root`, on a
    PostgreSQL schema and a Redis prefix of its own; the LLM settings come from os.environ."""
    run_id = uuid.uuid4().hex[:8]
    data = tempfile.mkdtemp(prefix="relay-data-")
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis_url,
           "DATABASE_SCHEMA": f"bench_{run_id}", "REDIS_PREFIX": f"bench{run_id}:",
           "ADMIN_PASSWORD": "bench-admin-password", "CASES_DIR": str(root / "cases"),
           "DATA_DIR": data, "SCRIPTED_CHUNK_MS": "0"}
    port = _free_port()
    log_path = os.path.join(data, "server.log")
    with open(log_path, "ab") as log:
        # Run from `root`, so `-m server.cli` imports that tree's code, not the installed one.
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
                                env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=log)
        try:
            try:
                # A loaded machine can take minutes to start a server that loads a model.
                _wait_http(f"http://127.0.0.1:{port}/healthz", timeout=300)
            except RuntimeError:
                tail = Path(log_path).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the server from {root} did not start:\n{tail}") from None
            yield f"http://127.0.0.1:{port}", proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(data, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    reply = reply_of(args.tokens)
    offsets = schedule(args.streams, args.stagger_ms)
    k = args.client_procs
    idx = split(list(range(args.streams)), k)
    offs = [[offsets[i] for i in part] for part in idx]
    timeout = 60 + args.streams * 0.2
    arms = {"direct": Arm("direct to simulator"), "server": Arm("through server")}
    with ExitStack() as stack:
        sim_port, sim = stack.enter_context(simulator(args, reply))
        db, redis_url = stack.enter_context(services())
        env = server_env(sim_port, args.streams)
        os.environ.update(env)
        servers = {"server": stack.enter_context(serve(ROOT, db, redis_url))}
        if args.against:
            # Started one after the other: both run migrations at start-up.
            root, label = stack.enter_context(checkout(args.against))
            servers["against"] = stack.enter_context(serve(root, db, redis_url))
            arms["server"].name = "through server (tree)"
            arms["against"] = Arm(f"through server @ {label}")
        print(f"simulator pid {sim.pid} on port {sim_port}; "
              + "; ".join(f"{arms[key].name}: pid {p.pid} at {base}"
                          for key, (base, p) in servers.items())
              + f"; LLM settings: {env}", flush=True)
        workers = Workers(k)
        stack.callback(workers.close)
        for key, (base, _) in servers.items():
            t = time.monotonic()
            url = base.replace("http", "ws", 1) + "/ws"
            workers.call("ws_connect", [(key, url, len(p), args.same_question) for p in idx])
            print(f"{args.streams} students connected to {arms[key].name} and practising in "
                  f"{time.monotonic() - t:.1f} s", flush=True)
        sim_url = f"http://127.0.0.1:{sim_port}"

        def server_round(key: str, arm: Arm | None) -> None:
            base, server = servers[key]
            c0, s0 = cpu_seconds(server.pid), cpu_seconds(sim.pid)
            b0 = children_cpu_seconds(server.pid)
            start = time.time() + 0.3
            res = workers.call("ws_round", [(key, start, o, timeout, reply) for o in offs])
            c1, s1 = cpu_seconds(server.pid), cpu_seconds(sim.pid)
            t1 = time.monotonic()
            drain_background(base)  # so it does not run into the next arm
            if arm is not None:
                arm.add(res, reply, args.ttft_ms, args.itl_ms)
                arm.server_cpu += c1 - c0
                arm.sim_cpu += s1 - s0
                arm.background_cpu += children_cpu_seconds(server.pid) - b0
                arm.background_s += time.monotonic() - t1

        def direct_round(arm: Arm | None) -> None:
            body = msgspec.json.encode(_http(f"{sim_url}/sim/stats")["last_request"])
            workers.call("direct_connect",
                         [("127.0.0.1", sim_port, len(p), body) for p in idx])
            s0 = cpu_seconds(sim.pid)
            start = time.time() + 0.3
            res = workers.call("direct_round", [(start, o, timeout, reply) for o in offs])
            s1 = cpu_seconds(sim.pid)
            if arm is not None:
                arm.add(res, None, args.ttft_ms, args.itl_ms)
                arm.sim_cpu += s1 - s0

        def one_round(name: str, arm: Arm | None) -> None:
            if name == "direct":
                direct_round(arm)
            else:
                server_round(name, arm)

        names = list(arms)
        for _ in range(args.warmup):  # opens the servers' pools, warms every path
            for name in [*servers, "direct"]:  # direct replays a server's last request
                one_round(name, None)
        for r in range(args.repeat):
            # Each round starts with a different arm, so none always runs first or last.
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                one_round(name, arms[name])
                time.sleep(args.pause)
            print(f"round {r + 1}/{args.repeat} done ({' -> '.join(order)})", flush=True)
    return {name: arm.report() | {"failures": arm.failed[:5]} for name, arm in arms.items()}


_TARGETS = {"ttft_p50_ms": 5.0, "ttft_p99_ms": 20.0, "itl_p50_ms": 0.5, "itl_p99_ms": 2.0,
            "token_lateness_p50_ms": 0.5, "token_lateness_p99_ms": 2.0}


def _per(cpu_s: float, n: int) -> float:
    return cpu_s / n * 1e6 if n else float("nan")


def show_server(srv: dict[str, Any], dr: dict[str, Any]) -> dict[str, Any]:
    """One through-server arm against the direct baseline of the same run."""
    def diff(key: str, p: str) -> float:
        return float(srv[key][p] - dr[key][p])

    added = {"ttft_p50_ms": diff("ttft_ms", "p50"), "ttft_p99_ms": diff("ttft_ms", "p99"),
             "itl_p50_ms": diff("itl_ms", "p50"), "itl_p99_ms": diff("itl_ms", "p99"),
             "token_lateness_p50_ms": diff("token_lateness_ms", "p50"),
             "token_lateness_p99_ms": diff("token_lateness_ms", "p99")}
    coalesce = srv["tokens"] / srv["frames"] if srv["frames"] else float("nan")
    print(f"\n{srv['name']}: server-added (minus direct; 'late' = each token's arrival since "
          "the request minus the nominal TTFT + j x ITL):")
    for k, v in added.items():
        verdict = "met" if v <= _TARGETS[k] else "NOT met"
        if k.startswith("itl") and coalesce > 1.05:
            verdict += " (frames coalesce tokens: compare token lateness)"
        print(f"  {k:<24}{v:>+10.3f}   target <= {_TARGETS[k]}: {verdict}")
    if srv["ask_to_answer_start_ms"]:
        st = srv["ask_to_answer_start_ms"]
        rl = srv["answer_start_to_first_delta_ms"]
        print(f"  TTFT split: ask -> answer_start (question durable in PostgreSQL) "
              f"p50 {st['p50']:.2f} / p99 {st['p99']:.2f} ms; answer_start -> first delta "
              f"p50 {rl['p50']:.2f} / p99 {rl['p99']:.2f} ms")
    srv_token = _per(srv["server_cpu_s"], srv["tokens"])
    srv_frame = _per(srv["server_cpu_s"], srv["frames"])
    sim_token = _per(dr["sim_cpu_s"], dr["tokens"])
    print(f"  frames vs tokens: {srv['frames']} answer_delta frames for {srv['tokens']} tokens "
          f"({coalesce:.2f} tokens per frame); direct: {dr['frames']} reads for "
          f"{dr['tokens']} tokens")
    print(f"  CPU per relayed chunk (upstream token): server {srv_token:.1f} us "
          f"({srv_frame:.1f} us per frame sent; {srv['server_cpu_s']:.2f} s in all); baseline "
          f"simulator {sim_token:.1f} us per token in the direct arm "
          f"({_per(srv['sim_cpu_s'], srv['tokens']):.1f} us during this arm); "
          f"ratio {srv_token / sim_token:.1f}x")
    print(f"  matching the questions for scoring (the server's niced child process, not in the "
          f"figures above): {srv['background_cpu_s']:.2f} s of CPU; it needed "
          f"{srv['background_s']:.2f} s after the arm to catch up")
    print(f"  client CPU per token (load generator): direct "
          f"{_per(dr['client_cpu_s'], dr['tokens']):.1f} us, this arm "
          f"{_per(srv['client_cpu_s'], srv['tokens']):.1f} us")
    return {"added": added, "server_us_per_token": srv_token, "server_us_per_frame": srv_frame,
            "client_us_per_token": _per(srv["client_cpu_s"], srv["tokens"]),
            "tokens_per_frame": coalesce}


def show(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    dr = out["direct"]
    print(f"\nmachine: {os.cpu_count()} cores; streams={args.streams} ttft={args.ttft_ms} ms "
          f"itl={args.itl_ms} ms tokens={args.tokens} repeat={args.repeat} "
          f"stagger={args.stagger_ms} ms same_question={args.same_question} "
          f"client processes={args.client_procs} against={args.against}")
    width = max(22, *(len(a["name"]) + 2 for a in out.values()))
    print(f"{'ms':<{width}}{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50':>9}{'ITL p99':>9}"
          f"{'late p50':>9}{'late p99':>9}{'streams':>8}{'failed':>7}{'frames':>8}{'tokens':>8}")
    for a in out.values():
        print(f"{a['name']:<{width}}{a['ttft_ms']['p50']:>10.2f}{a['ttft_ms']['p99']:>10.2f}"
              f"{a['itl_ms']['p50']:>9.3f}{a['itl_ms']['p99']:>9.3f}"
              f"{a['token_lateness_ms']['p50']:>9.3f}{a['token_lateness_ms']['p99']:>9.3f}"
              f"{a['streams']:>8}{a['failed']:>7}{a['frames']:>8}{a['tokens']:>8}")
    summary: dict[str, Any] = {
        "streams": args.streams, "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms,
        "tokens": args.tokens, "repeat": args.repeat, "stagger_ms": args.stagger_ms,
        "same_question": args.same_question, "against": args.against,
        "sim_us_per_token": _per(dr["sim_cpu_s"], dr["tokens"]),
        "client_us_per_token": {"direct": _per(dr["client_cpu_s"], dr["tokens"])},
    }
    for key, a in out.items():
        summary[key] = {k: v for k, v in a.items() if k != "failures"}
        if key != "direct":
            figures = show_server(a, dr)
            summary["client_us_per_token"][key] = figures.pop("client_us_per_token")
            if key == "server":
                summary |= figures  # the keys earlier runs recorded
            else:
                summary[key] |= figures
    if "against" in out:
        mine, theirs = summary["server_us_per_token"], summary["against"]["server_us_per_token"]
        print(f"\nA/B, server CPU per relayed token: {out['server']['name']} {mine:.1f} us, "
              f"{out['against']['name']} {theirs:.1f} us: the latter spends "
              f"{(theirs - mine) / mine * 100:+.1f} % against the former")
        summary["against_cpu_change_pct"] = (theirs - mine) / mine * 100
    for a in out.values():
        if a["failures"]:
            print(f"{a['name']} failures (first 5): {a['failures']}")
    print(json.dumps(summary), flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per reply")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds of every arm")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds of every arm")
    parser.add_argument("--stagger-ms", type=float, default=0.0,
                        help="spread the asks evenly over this window (0: all at once)")
    parser.add_argument("--same-question", action="store_true",
                        help="ask one text every time (the server's matcher caches it)")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between arms")
    parser.add_argument("--against", metavar="REF_OR_DIR",
                        help="a second server under test, run from this git ref (exported "
                             "with git archive) or directory, alternating with this tree's "
                             "server in the same run against the same simulator")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the direct arm replays the server's request")
    show(args, run(args))


if __name__ == "__main__":
    main()
