"""Two server processes against one PostgreSQL and one Redis, as behind a load balancer.

Each server here is a real `arena serve` OS process. Clients connect to either; what
one process does must reach the clients of the other (Redis pub/sub), a client that
reconnects to the other process must get exactly what it missed (channel sequence
numbers and history), and neither a process killed with SIGKILL nor Redis losing all
its data may lose anything that was acknowledged (PostgreSQL is the source of truth).

Separate processes cannot share a FakeClock, so server time is real here: rounds
start at once (countdown_s=0) and last minutes, and every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from arena.leaderboard import Row
from server import protocol
from server.settings import Settings
from tests.support import ADMIN_PASSWORD, Api, Client, free_port, make_round

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {f.name.upper() for f in msgspec.structs.fields(Settings)}


class Server:
    """One `arena serve` process on a loopback port, its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_healthy(self, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not healthy in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or the OOM killer."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Pair:
    """Two server processes of one deployment (same database schema and Redis prefix)."""

    def __init__(self, servers: list[Server], prefix: str) -> None:
        self.servers = servers
        self.prefix = prefix

    def ensure(self) -> tuple[Server, Server]:
        """Both processes running, restarting (in parallel) any that a test killed."""
        dead = [s for s in self.servers if not s.alive]
        for s in dead:
            s.start()
        for s in dead:
            s.wait_healthy()
        return self.servers[0], self.servers[1]

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def _pair(settings: Settings, tmp: Path, name: str, **extra: str) -> Iterator[Pair]:
    # Nothing from the caller's environment may change these processes' settings (an LLM
    # URL, a port): only what is named here, from the session's `settings`.
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    prefix = f"{settings.redis_prefix}{name}:"
    # Loopback stands for nginx on the same host: its X-Forwarded-For is believed.
    env.update(SCRIPTED_CHUNK_MS="2", FORWARDED_ALLOW_IPS="127.0.0.1")
    env.update(
        DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
        DATABASE_SCHEMA=settings.database_schema, REDIS_PREFIX=prefix,
        ADMIN_PASSWORD=ADMIN_PASSWORD, CASES_DIR=str(settings.cases_dir),
        DATA_DIR=str(settings.data_dir), EMBEDDING_DIR=str(settings.embedding_cache), **extra,
    )
    pair = Pair([Server(f"{name}-{i}", env, tmp) for i in (1, 2)], prefix)
    try:
        pair.ensure()
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def pair(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from _pair(settings, tmp_path_factory.mktemp("procs"), "main")


@pytest.fixture(scope="module")
def slow_pair(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Answers stream slowly (a kill lands mid-answer) and channels keep 3 messages."""
    yield from _pair(settings, tmp_path_factory.mktemp("procs"), "slow",
                     SCRIPTED_CHUNK_MS="200", CHANNEL_HISTORY="3")


# ---------------------------------------------------------------------------- helpers


def _state(c: Client, check: Any = lambda m: True, timeout: float = 10) -> protocol.RoundState:
    msg: protocol.RoundState = c.until(
        lambda m: isinstance(m, protocol.RoundState) and check(m), timeout
    )
    return msg


def _board(c: Client, check: Any, timeout: float = 10) -> protocol.BoardUpdate:
    msg: protocol.BoardUpdate = c.until(
        lambda m: isinstance(m, protocol.BoardUpdate) and check(m), timeout
    )
    return msg


def _rows(board: protocol.BoardUpdate) -> dict[str, Row]:
    return {r.name: r for r in board.board.rows}


def _running_round(org: Api, people: int) -> tuple[str, list[str], list[dict[str, Any]]]:
    """A started round (no countdown, ten minutes): (round id, contestant tokens, roster)."""
    _, rid, roster = make_round(org, people=people, countdown_s=0, duration_s=600)
    tokens = [org.join(p["join_code"])["token"] for p in roster]
    org.action(rid, "open")
    org.action(rid, "start")
    return rid, tokens, roster


def _judge(org: Api) -> Api:
    name = f"judge-{uuid.uuid4().hex[:6]}"
    org.call("POST", "/api/accounts", {"username": name, "password": "judge-password-1",
                                       "role": "judge", "display_name": "跨进程评委"})
    return Api.login(org.base_url, name, "judge-password-1")


def _first(c: Client, check: Any, timeout: float = 10) -> Any:
    """The first message (already read or still to come) for which `check` holds."""
    return next((m for m in c.received if check(m)), None) or c.until(check, timeout)


def _settle(c: Client, quiet: float = 0.8) -> protocol.BoardUpdate | None:
    """Read until nothing arrives for `quiet` seconds (boards coalesce every 0.25 s); return
    the newest board read, so that the next board is known to come after this point."""
    newest = None
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            msg = c.recv(quiet)
        except TimeoutError:
            return newest
        if isinstance(msg, protocol.BoardUpdate):
            newest = msg
    raise AssertionError("the server never went quiet")


def _channel_states(c: Client) -> list[tuple[int, str]]:
    return [(m.cseq, m.change) for m in c.received
            if isinstance(m, protocol.RoundState) and m.cseq]


# ---------------------------------------------------------------------------- the tests


def test_changes_on_one_process_reach_clients_of_the_other(pair: Pair) -> None:
    p1, p2 = pair.ensure()
    org = Api.login(p1.url)
    org2 = Api(p2.url, org.token)  # a token from one process is good on the other
    judge_api = _judge(org)
    rid, tokens, _ = _running_round(org, people=2)
    with Client(p1.url) as a, Client(p2.url) as b, Client(p1.url) as judge, \
            Client(p2.url) as judge2:
        a.hello(token=tokens[0])
        a.expect("play_state")
        b.hello(token=tokens[1])
        b.expect("play_state")
        judge.hello(token=judge_api.token)
        judge.request("watch", round_id=rid)
        _state(judge)
        first = _board(judge, lambda m: len(m.board.rows) == 2)

        # B submits on process 2; the judge on process 1 sees it on the next board.
        b.request("submit", diagnosis="急性胃炎", differentials=["胆囊炎"], reasoning="上腹痛")
        b.expect("submit_ack")
        scored = _board(judge, lambda m: _rows(m)["选手2"].score is not None)
        assert scored.version > first.version
        before = _rows(scored)["选手2"]
        assert before.submitted and before.rank == 1
        assert _rows(scored)["选手1"].score is None

        # A judge ruling on process 2 moves the board on process 1.
        judge2.hello(token=judge_api.token)
        aid = before.attempt_id
        judge2.request("open_transcript", attempt_id=aid)
        judge2.expect("transcript")
        ok = judge2.request("adjudicate", attempt_id=aid, verdict="correct", reason="可接受")
        assert judge2.expect("ack").re == ok
        # The entry travels through Redis and may overtake the ack: look behind, then wait.
        live: protocol.TranscriptLive = _first(
            judge2, lambda m: isinstance(m, protocol.TranscriptLive) and m.card is not None)
        assert live.card is not None and live.card.total > (before.score or 0)
        total = live.card.total
        after = _board(judge, lambda m: _rows(m)["选手2"].score == total)
        assert after.version > scored.version

        # The organizer pauses through process 2's HTTP API; A, on process 1, is told.
        org2.action(rid, "pause", reason="跨进程暂停")
        paused = _state(a, lambda m: m.change == "round_paused")
        assert paused.clock.paused and paused.reason == "跨进程暂停"
        assert paused.ch == f"round:{rid}" and paused.cseq == 3  # lobby, start, pause
        assert _state(judge, lambda m: m.change == "round_paused").cseq == 3
        late = a.request("ask", text="还疼吗？")
        err = a.until(lambda m: isinstance(m, protocol.Error) and m.re == late)
        assert err.code == "round_not_running"


def test_a_client_reconnecting_to_the_other_process_gets_exactly_what_it_missed(
    pair: Pair,
) -> None:
    p1, p2 = pair.ensure()
    org = Api.login(p1.url)
    org2 = Api(p2.url, org.token)
    rid, tokens, _ = _running_round(org, people=1)
    screen = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    ch = f"round:{rid}"
    with Client(p1.url) as spectator, Client(p1.url) as a:
        assert spectator.hello(token=screen).round_id == rid
        _state(spectator)
        a.hello(token=tokens[0])
        a.expect("play_state")
        org2.action(rid, "pause", reason="第一次暂停")
        seen = _state(spectator, lambda m: m.change == "round_paused").cseq
        assert _state(a, lambda m: m.change == "round_paused").cseq == seen == 3

    # Both are gone; the organizer keeps working, through the other process.
    org2.action(rid, "resume")
    org2.action(rid, "extend", reason="补时", seconds=120)
    org2.action(rid, "pause", reason="第二次暂停")
    missed = [(4, "round_resumed"), (5, "round_extended"), (6, "round_paused")]

    with Client(p2.url) as spectator, Client(p2.url) as a:
        spectator.hello(token=screen, since={ch: seen})
        now = _state(spectator, lambda m: m.change == "")  # the current state ends the replay
        assert now.cseq == 6 and now.clock.paused and now.clock.extension_s == 120
        assert _channel_states(spectator)[:-1] == missed
        a.hello(token=tokens[0], since={ch: seen})
        play: protocol.PlayState = a.expect("play_state")
        assert play.round_id == rid
        assert _channel_states(a) == missed
        mine = [m for m in a.received if isinstance(m, protocol.RoundState)][-1]
        assert mine.cseq == 0 and mine.clock.paused  # the personal view, after the replay
        for c in (spectator, a):
            assert not any(isinstance(m, protocol.Reload) for m in c.received)

        # And the channel goes on, from either process, without a gap.
        org.action(rid, "resume")
        assert _state(spectator, lambda m: m.change == "round_resumed").cseq == 7
        assert _state(a, lambda m: m.change == "round_resumed").cseq == 7


def test_a_gap_older_than_the_history_gets_reload_then_the_current_state(
    slow_pair: Pair,
) -> None:
    s1, s2 = slow_pair.ensure()  # CHANNEL_HISTORY=3
    org = Api.login(s1.url)
    org2 = Api(s2.url, org.token)
    rid, tokens, _ = _running_round(org, people=1)
    screen = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    ch = f"round:{rid}"
    with Client(s1.url) as spectator:
        spectator.hello(token=screen)
        seen = _state(spectator).cseq
        assert seen == 2

    # Three missed messages are still in the history: replayed.
    for action, fields in (("pause", {"reason": "一"}), ("resume", {}),
                           ("extend", {"reason": "二", "seconds": 60})):
        org2.action(rid, action, **fields)
    with Client(s2.url) as spectator:
        spectator.hello(token=screen, since={ch: seen})
        _state(spectator, lambda m: m.change == "")
        assert [c for c, _ in _channel_states(spectator)] == [3, 4, 5, 5]
        assert not any(isinstance(m, protocol.Reload) for m in spectator.received)

    # Four are not: the client is told to reload, then gets the current state.
    for action, fields in (("pause", {"reason": "三"}), ("resume", {}),
                           ("extend", {"reason": "四", "seconds": 60}),
                           ("pause", {"reason": "五"})):
        org2.action(rid, action, **fields)
    with Client(s2.url) as spectator, Client(s2.url) as a:
        spectator.hello(token=screen, since={ch: 5})
        reload: protocol.Reload = spectator.expect("reload")
        assert reload.channel == ch
        now = _state(spectator)
        assert (now.cseq, now.change) == (9, "") and now.clock.paused
        assert now.clock.extension_s == 120
        assert [c for c, _ in _channel_states(spectator)] == [9]

        a.hello(token=tokens[0], since={ch: 2})
        assert a.expect("reload").channel == ch
        mine = _state(a)
        assert mine.cseq == 0 and mine.clock.paused and mine.reason == ""
        a.expect("play_state")
        assert _channel_states(a) == []


def test_a_process_killed_while_answering_leaves_a_failed_turn_to_ask_again(
    slow_pair: Pair, fetch_events: Callable[[str], list[dict[str, Any]]],
) -> None:
    s1, s2 = slow_pair.ensure()  # answers stream in 200 ms chunks
    org = Api.login(s2.url)
    _, tokens, _ = _running_round(org, people=1)
    with Client(s1.url) as a:
        a.hello(token=tokens[0])
        play: protocol.PlayState = a.expect("play_state")
        question = "哪里不舒服？"  # a long answer: a dozen chunks, over two seconds
        a.request("ask", text=question)
        started: protocol.AnswerStart = a.expect("answer_start", timeout=15)
        shown: protocol.AnswerDelta = a.expect("answer_delta", timeout=15)
        s1.kill()
    with Client(s2.url) as a:
        a.hello(token=tokens[0])
        back: protocol.PlayState = a.expect("play_state")
        assert [(t.turn, t.question, t.status) for t in back.transcript] == [
            (started.turn, question, "failed")
        ]
        assert back.attempt_id == play.attempt_id
        text, end, _ = a.answer(question)  # asking again works
        assert end.status == "ok" and len(text) > len(shown.text)
    # Questions are matched for scoring in each server's background process, which may
    # still be loading the case library: wait for both matches.
    deadline = time.monotonic() + 60
    while True:
        events = fetch_events(play.attempt_id)
        if sum(e["kind"] == "matched" for e in events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    answered = [e["payload"] for e in events if e["kind"] == "answered"]
    assert [(p["turn"], p["status"], p["error"]) for p in answered] == [
        (1, "failed", "interrupted"), (2, "ok", ""),
    ]
    # Each question is matched once, turn 1 by whichever process got to it.
    assert Counter(e["kind"] for e in events) == {"attempt_started": 1, "asked": 2,
                                                  "matched": 2, "answered": 2}


def test_a_process_killed_mid_round_loses_nothing_acknowledged(
    pair: Pair, fetch_events: Callable[[str], list[dict[str, Any]]],
) -> None:
    p1, p2 = pair.ensure()
    org = Api.login(p2.url)
    _, tokens, _ = _running_round(org, people=1)
    with Client(p1.url) as a:
        a.hello(token=tokens[0])
        play: protocol.PlayState = a.expect("play_state")
        questions = ["哪里不舒服？", "胸口痛多久了？"]
        answers = []
        for q in questions:
            text, end, _ = a.answer(q)
            assert end.status == "ok" and text
            answers.append(text)
        ask_ids = [e.re for e in a.received if isinstance(e, protocol.AnswerStart)]
        items = [play.menu[0].id, play.menu[-1].id]
        order_ids = []
        for item in items:
            order_ids.append(a.request("order", item_id=item))
            assert a.expect("order_result").item_id == item
        p1.kill()  # everything above was acknowledged

    with Client(p2.url) as a:
        a.hello(token=tokens[0])
        back: protocol.PlayState = a.expect("play_state")
        assert [(t.question, t.answer, t.status) for t in back.transcript] == [
            (q, t, "ok") for q, t in zip(questions, answers, strict=True)
        ]
        assert [o.item_id for o in back.orders] == items
        assert not back.submitted and back.submissions_left == 1
        # Retries of acknowledged requests, now to the other process, are applied once.
        again = a.request("ask", id=ask_ids[0], text=questions[0])
        err = a.until(lambda m: isinstance(m, protocol.Error) and m.re == again)
        assert err.code == "duplicate_request"
        a.request("order", id=order_ids[0], item_id=items[0])
        assert a.expect("order_result").re == order_ids[0]
        sub = a.request("submit", diagnosis="急性下壁心肌梗死", differentials=["主动脉夹层"],
                        reasoning="胸痛伴下壁导联ST段抬高")
        ack: protocol.SubmitAck = a.expect("submit_ack")
        assert ack.re == sub and ack.submissions_left == 0

    events = fetch_events(back.attempt_id)
    assert Counter(e["kind"] for e in events) == {
        "attempt_started": 1, "asked": 2, "matched": 2, "answered": 2, "ordered": 2,
        "submitted": 1,
        "scored": 1,
    }
    by_kind = {k: [e for e in events if e["kind"] == k] for k in ("asked", "ordered")}
    assert [e["request_id"] for e in by_kind["asked"]] == ask_ids
    assert [e["payload"]["text"] for e in by_kind["asked"]] == questions
    assert [e["request_id"] for e in by_kind["ordered"]] == order_ids
    assert [e["payload"]["menu_id"] for e in by_kind["ordered"]] == items
    answered = [e["payload"] for e in events if e["kind"] == "answered"]
    assert [(p["status"], p["text"]) for p in answered] == [("ok", t) for t in answers]
    assert next(e for e in events if e["kind"] == "submitted")["request_id"] == sub


def _flush(settings: Settings, prefix: str) -> int:
    """Delete every key of this deployment (the Redis may be shared: never FLUSHALL)."""
    r = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(r.scan_iter(match=f"{prefix}*", count=500))
        for key in keys:
            r.delete(key)
        return len(keys)
    finally:
        r.close()


def test_redis_losing_everything_mid_round_loses_no_progress(
    pair: Pair, settings: Settings,
) -> None:
    p1, p2 = pair.ensure()  # restarts the process the previous test killed
    org = Api.login(p1.url)
    rid, tokens, _ = _running_round(org, people=3)
    ch = f"round:{rid}"
    with Client(p1.url) as a, Client(p2.url) as b, Client(p1.url) as c, \
            Client(p1.url) as judge:
        judge.hello(token=org.token)
        judge.request("watch", round_id=rid)
        clock = _state(judge).clock
        clock_read = time.time()  # server time is wall time here
        for client, token in ((a, tokens[0]), (b, tokens[1]), (c, tokens[2])):
            client.hello(token=token)
        play: protocol.PlayState = a.expect("play_state")
        b.expect("play_state")
        c.expect("play_state")
        for q in ("哪里不舒服？", "胸口痛多久了？"):
            assert a.answer(q)[1].status == "ok"
        a.request("order", item_id=play.menu[0].id)
        a.expect("order_result")
        assert b.answer("有没有出汗？")[1].status == "ok"
        for item in play.menu[:2]:
            b.request("order", item_id=item.id)
            b.expect("order_result")
        b.request("submit", diagnosis="急性下壁心肌梗死", differentials=[], reasoning="")
        b.expect("submit_ack")
        full = _board(judge, lambda m: (
            len(m.board.rows) == 3 and _rows(m)["选手1"].orders == 1
            and _rows(m)["选手2"].score is not None and _rows(m)["选手2"].questions == 1))
        full = _settle(judge) or full
        before = _rows(full)

        assert _flush(settings, pair.prefix) > 0
        r = redis.Redis.from_url(settings.redis_url)
        try:
            assert not r.exists(f"{pair.prefix}round:{rid}:progress")
        finally:
            r.close()

        # A contestant acts; the next board the judge sees was rebuilt from PostgreSQL.
        assert a.answer("疼痛往哪里放射？")[1].status == "ok"
        after = _board(judge, lambda m: m.version > full.version)
        rows = _rows(after)
        assert set(rows) == {"选手1", "选手2", "选手3"}
        assert (rows["选手1"].questions, rows["选手1"].orders) == (3, 1)
        for name in ("选手2", "选手3"):
            old, new = before[name], rows[name]
            same = ("attempt_id", "team", "school", "score", "submitted", "questions",
                    "orders", "rank", "elapsed_s", "cost_yuan")
            assert {f: getattr(new, f) for f in same} == {f: getattr(old, f) for f in same}
            assert new.last_action == pytest.approx(old.last_action, abs=2)
        assert rows["选手3"].last_action == 0  # entered, did nothing yet

        # The clock never lived in Redis: same deadline, the time left only ran on.
        judge.request("watch", round_id=rid)
        now = _state(judge, lambda m: m.change == "")
        assert now.clock.deadline == pytest.approx(clock.deadline)
        assert now.clock.status == "running"
        ran = clock.remaining_s - now.clock.remaining_s
        assert ran == pytest.approx(time.time() - clock_read, abs=1.0)

        # New actions work, and show on the board.
        c.request("order", item_id=play.menu[1].id)
        c.expect("order_result")
        c.request("submit", diagnosis="急性心肌梗死", differentials=[], reasoning="")
        c.expect("submit_ack")
        _board(judge, lambda m: _rows(m)["选手3"].submitted and _rows(m)["选手3"].orders == 1
               and _rows(m)["选手2"].score == before["选手2"].score)
        org.action(rid, "pause", reason="恢复后暂停")
        assert _state(a, lambda m: m.change == "round_paused").clock.paused

    # A client whose last sequence number Redis no longer knows is told to reload.
    with Client(p2.url) as judge:
        judge.hello(token=org.token)
        judge.request("watch", round_id=rid, since=2)
        assert judge.expect("reload").channel == ch


def _login_status(url: str, username: str, address: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url + "/api/login", method="POST",
        data=msgspec.json.encode({"username": username, "password": "wrong-password"}),
        headers={"content-type": "application/json", "x-forwarded-for": address},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, msgspec.json.decode(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, msgspec.json.decode(exc.read())


def test_rate_limits_hold_across_processes(pair: Pair) -> None:
    """Sign-in failures are counted once, in Redis: ten wrong passwords split across both
    processes (LOGIN_LIMIT's default, 10 per address + username) lock the name out on
    both, where a per-process count would allow twenty. The address comes from
    X-Forwarded-For, believed from loopback as from nginx (FORWARDED_ALLOW_IPS), so no other
    test is locked out."""
    p1, p2 = pair.ensure()
    name, address = f"nobody-{uuid.uuid4().hex[:6]}", f"10.9.{os.getpid() % 250}.1"
    for i in range(10):
        status, body = _login_status((p1, p2)[i % 2].url, name, address)
        assert status == 401 and body["code"] == "unauthorized", (i, status, body)
    for server in (p1, p2):
        status, body = _login_status(server.url, name, address)
        assert status == 429 and body["code"] == "rate_limited", (server.name, status, body)
        assert "秒后再试" in body["message"]
