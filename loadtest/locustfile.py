"""Locust scenario: one competition round at full size, over the real WebSocket protocol.

Why this shape: the unit and server tests prove each message is right; only a crowd
shows whether the hub keeps its promises when 300 contestants stream answers from the
LLM while 1,000 big screens receive every board (DESIGN.md, principle 5 and the
fan-out target). Contestants interview, order and submit like people do (thinking
between actions); spectators only listen and time each board from the server's
`at` stamp to its arrival, which is the fan-out latency a hall full of screens sees.

Locust users are greenlets, so the WebSocket client must be gevent-friendly: the
synchronous `websocket-client` on monkey-patched sockets. Each connection has a
reader greenlet that drains the socket all the time (a client that stops reading
would be told to resync, principle 5) and hands contestant replies to the action
that waits for them.

The round is prepared outside locust by `loadtest/run_locust.py`, which writes a
plan (JSON, path in ARENA_PLAN): the round, the spectator token, one join code per
contestant (each works once; with `--processes N` worker i takes codes i, i+N, ...)
and the window in which contestants submit, near the end of the run.

    ARENA_PLAN=plan.json locust -f loadtest/locustfile.py --headless -u 1300 -r 50 -t 5m
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import gevent
import msgspec
import websocket
from gevent.queue import Empty, Queue
from locust import User, between, constant, events, task

log = logging.getLogger("loadtest")

QUESTIONS = [
    "您好，哪里不舒服？", "什么时候开始的？", "疼了多长时间了？", "具体是哪个部位疼？",
    "是怎么个疼法，压着疼还是刺着疼？", "疼的时候会往别的地方放射吗？",
    "如果0到10分，现在疼痛打几分？", "是一阵一阵的还是一直疼？", "休息以后能缓解吗？",
    "深呼吸或者咳嗽的时候疼得更厉害吗？", "有没有出很多汗？", "恶心吗？吐过没有？",
    "有没有头晕，晕倒过吗？", "喘不喘，有没有呼吸困难？", "有没有心慌的感觉？",
    "以前有过类似的情况吗？", "有高血压吗？平时血压多少？", "有糖尿病吗？血糖控制得怎么样？",
    "以前做过手术吗？", "平时在吃什么药？", "有药物过敏吗？", "家里人有心脏病吗？",
    "抽烟吗？一天抽多少？", "喝酒吗？喝多少？", "最近有没有发烧？", "咳嗽吗？有没有痰？",
    "腿肿不肿？", "最近胃口怎么样，大小便正常吗？", "手脚有没有麻木没劲？",
    "这次发病前在做什么？", "最近体重有变化吗？", "睡眠怎么样？",
]
DIAGNOSES = ["急性下壁ST段抬高型心肌梗死", "急性心肌梗死", "急性阑尾炎", "糖尿病酮症酸中毒"]
DIFFERENTIALS = ["主动脉夹层", "肺栓塞", "急性心包炎", "消化性溃疡穿孔", "急性胰腺炎"]

# Seconds to wait for replies: an answer streams for about a second at the simulator's
# 100 ms TTFT and 20 ms per token; more than this is a failure, not a slow success.
REPLY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
# How long a contestant whose question timed out still waits for that answer to end.
SETTLE_TIMEOUT_S = 120.0


class Msg(msgspec.Struct):
    """What the scenario reads of a server message; msgspec skips the rest (the board)."""

    type: str = ""
    re: str | None = None
    turn: int = 0
    status: str = ""
    code: str = ""
    message_en: str = ""
    reason: str = ""
    at: float = 0.0
    menu: list[dict[str, Any]] = []
    submitted: bool = False


_decode = msgspec.json.Decoder(Msg).decode


class Plan(msgspec.Struct):
    host: str
    round_id: str
    spectator_token: str
    codes: list[str]
    processes: int = 1
    submit_from: float = 0.0  # epoch seconds: contestants submit in this window
    submit_until: float = 0.0


class WsFailure(Exception):
    """A refused or failed request, named by its protocol code so failures group by cause."""


_plan: Plan | None = None
_codes: Queue | None = None
# Set once the run is stopping: connections closed by the teardown are not failures.
_stopping = False


@events.init.add_listener
def _load_plan(environment: Any, **_: Any) -> None:
    global _plan
    path = os.environ.get("ARENA_PLAN")
    if not path:
        raise SystemExit("ARENA_PLAN is not set: prepare the round with loadtest/run_locust.py")
    with open(path, encoding="utf-8") as f:
        _plan = msgspec.json.decode(f.read(), type=Plan)


@events.test_start.add_listener
def _start_lag_probe(environment: Any, **_: Any) -> None:
    """Time how late this process's greenlets wake: what the load generator adds to every
    figure it reports (a `board` latency includes it), reported as "locust loop lag"."""
    from locust.runners import MasterRunner

    if isinstance(environment.runner, MasterRunner):
        return  # the master runs no users

    def probe() -> None:
        while not _stopping:
            started = time.perf_counter()
            gevent.sleep(0.1)
            lag = (time.perf_counter() - started - 0.1) * 1000
            environment.events.request.fire(
                request_type="LAG", name="locust loop lag", response_time=max(0.0, lag),
                response_length=0, exception=None, context={},
            )
            gevent.sleep(0.4)

    gevent.spawn(probe)


@events.test_stopping.add_listener
def _on_stopping(**_: Any) -> None:
    global _stopping
    _stopping = True


def _take_code(environment: Any) -> str | None:
    """This process's next unused join code (the worker index is known once users spawn)."""
    global _codes
    assert _plan is not None
    if _codes is None:
        index = max(0, getattr(environment.runner, "worker_index", 0))
        _codes = Queue()
        for code in _plan.codes[index :: max(1, _plan.processes)]:
            _codes.put(code)
    try:
        return _codes.get_nowait()
    except Empty:
        return None


class WsUser(User):
    """A protocol client: one WebSocket, a reader greenlet, request timing as locust events."""

    abstract = True
    token = ""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.inbox: Queue = Queue()
        self.closing = False

    # ---- reporting -----------------------------------------------------------------------

    def record(self, name: str, started: float, exc: Exception | None = None,
               length: int = 0, elapsed_ms: float | None = None, kind: str = "WS") -> None:
        ms = (time.perf_counter() - started) * 1000 if elapsed_ms is None else elapsed_ms
        self.environment.events.request.fire(
            request_type=kind, name=name, response_time=ms, response_length=length,
            exception=exc, context={},
        )

    # ---- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        assert _plan is not None
        url = _plan.host.replace("http", "ws", 1) + "/ws"
        # UTF-8 validation in websocket-client is pure Python without wsaccel: far too slow
        # for 60 KB boards several times a second; msgspec rejects bad UTF-8 anyway.
        self.ws = websocket.create_connection(
            url, timeout=CONNECT_TIMEOUT_S, skip_utf8_validation=True, enable_multithread=True
        )
        self.ws.settimeout(None)  # the reader blocks until something arrives
        self.closing = False
        self.inbox = Queue()
        self.reader = gevent.spawn(self._read, self.ws)
        self.send("hello", v=1, token=self.token)

    def send(self, type_: str, id: str | None = None, **fields: Any) -> str:
        rid = id or uuid.uuid4().hex[:12]
        assert self.ws is not None
        self.ws.send(json.dumps({"type": type_, "id": rid, **fields}, ensure_ascii=False))
        return rid

    def _read(self, ws: websocket.WebSocket) -> None:
        reason = "closed by the server"
        try:
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
                    reason = f"closed by the server (code {code})"
                    break
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                self.on_message(_decode(data), data)
        except Exception as exc:  # a reset, a timeout, a bad frame: the connection is gone
            reason = f"{type(exc).__name__}: {exc}"
        if self.closing or _stopping:
            return
        self.inbox.put(None)  # wakes an action waiting for a reply
        self.record("connection", time.perf_counter(), WsFailure(f"dropped: {reason}"))

    def on_message(self, msg: Msg, raw: bytes) -> None:
        if msg.type == "resync":
            self.record("resync", time.perf_counter(), WsFailure(f"resync: {msg.reason}"))
        self.inbox.put(msg)

    def wait_for(self, check: Any, timeout: float = REPLY_TIMEOUT_S) -> Msg:
        """The next message `check` accepts; WsFailure on an error reply, drop or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WsFailure("timeout")
            try:
                msg = self.inbox.get(timeout=left)
            except Empty:
                raise WsFailure("timeout") from None
            if msg is None:
                raise WsFailure("connection dropped")
            if msg.type == "error":
                raise WsFailure(f"{msg.code}: {msg.message_en}")
            if check(msg):
                return msg

    def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            with contextlib.suppress(Exception):  # a socket that is already gone
                self.ws.close(timeout=2)
            self.ws = None
        if self.reader is not None:
            self.reader.kill(block=False)
            self.reader = None

    def on_stop(self) -> None:
        self.close()


class ContestantUser(WsUser):
    """A medical student in the round: joins with a code, interviews, orders, submits once."""

    weight = 300
    wait_time = between(2, 6)

    def on_start(self) -> None:
        assert _plan is not None
        self.menu: list[str] = []
        self.ordered: set[str] = set()
        self.submitted = False
        self.submit_at = random.uniform(_plan.submit_from, _plan.submit_until)
        code = _take_code(self.environment)
        started = time.perf_counter()
        if code is None:
            self.record("join", started, WsFailure("no join code left"), kind="HTTP")
            self.stop_quietly()
            return
        try:
            self.token = self._join(code)
        except Exception as exc:
            self.record("join", started, _failure(exc), kind="HTTP")
            self.stop_quietly()
            return
        self.record("join", started, kind="HTTP")
        self._enter()

    def stop_quietly(self) -> None:
        # Nothing to drive without a token: idle out the run rather than spin on errors.
        self.submitted = True

    def _join(self, code: str) -> str:
        assert _plan is not None
        req = urllib.request.Request(
            _plan.host + "/api/join", data=json.dumps({"code": code}).encode(),
            headers={"content-type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S) as resp:
                token: str = json.loads(resp.read())["token"]
                return token
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise WsFailure(f"{body.get('code', exc.code)}: {body.get('message_en', '')}") from None

    def _enter(self) -> None:
        """Connect and wait for the case (play_state): what a contestant sees on entering."""
        started = time.perf_counter()
        try:
            self.connect()
            state = self.wait_for(lambda m: m.type == "play_state", CONNECT_TIMEOUT_S)
        except Exception as exc:
            self.record("enter", started, exc if isinstance(exc, WsFailure) else WsFailure(
                f"{type(exc).__name__}: {exc}"))
            self.close()
            return
        self.record("enter", started)
        self.menu = [str(item["id"]) for item in state.menu]
        self.submitted = self.submitted or state.submitted

    def _ready(self) -> bool:
        """Play on; reconnect (as a refreshed page would) after a drop."""
        if self.submitted:
            return False
        if self.ws is None or self.reader is None or self.reader.dead:
            self.close()
            if self.token:
                self._enter()
            return False
        if time.time() >= self.submit_at:
            self.submit()
            return False
        return True

    @task(3)
    def ask(self) -> None:
        if not self._ready():
            return
        started = time.perf_counter()
        try:
            rid = self.send("ask", text=random.choice(QUESTIONS))
            self.wait_for(lambda m: m.type == "answer_start" and m.re == rid)
            first = self.wait_for(lambda m: m.type in ("answer_delta", "answer_end"))
            ttft = (time.perf_counter() - started) * 1000
            end = first if first.type == "answer_end" else self.wait_for(
                lambda m: m.type == "answer_end")
            if end.status != "ok":
                raise WsFailure(f"{end.code}: {end.message_en}")
        except Exception as exc:
            self.record("ask", started, _failure(exc))
            self._settle()
            return
        self.record("ask ttft", started, elapsed_ms=ttft)
        self.record("ask", started)

    def _settle(self) -> None:
        """After a failed ask, wait (unrecorded) for the turn to end, as the page does: its
        input stays disabled until answer_end, so a question never overlaps the last one."""
        with contextlib.suppress(WsFailure):
            self.wait_for(lambda m: m.type == "answer_end", SETTLE_TIMEOUT_S)

    @task(1)
    def order(self) -> None:
        if not self._ready() or not self.menu:
            return
        fresh = [i for i in self.menu if i not in self.ordered]
        item = random.choice(fresh or self.menu)
        started = time.perf_counter()
        try:
            rid = self.send("order", item_id=item)
            self.wait_for(lambda m: m.type == "order_result" and m.re == rid)
        except Exception as exc:
            self.record("order", started, _failure(exc))
            return
        self.ordered.add(item)
        self.record("order", started)

    def submit(self) -> None:
        started = time.perf_counter()
        self.submitted = True  # once, whatever happens: a second one would be refused
        try:
            rid = self.send(
                "submit", diagnosis=random.choice(DIAGNOSES),
                differentials=random.sample(DIFFERENTIALS, 3),
                reasoning="胸痛伴大汗，心电图下壁导联ST段抬高，肌钙蛋白升高。",
            )
            self.wait_for(lambda m: m.type == "submit_ack" and m.re == rid)
        except Exception as exc:
            self.record("submit", started, _failure(exc))
            return
        self.record("submit", started)

    def on_message(self, msg: Msg, raw: bytes) -> None:
        if msg.type == "board":
            return  # contestants see the public board; only spectators time it
        super().on_message(msg, raw)


class SpectatorUser(WsUser):
    """A big screen in the hall: connects with the spectator link and only listens."""

    weight = 1000
    wait_time = constant(5)

    def on_start(self) -> None:
        assert _plan is not None
        self.token = _plan.spectator_token
        self._connect_recorded()

    def _connect_recorded(self) -> None:
        started = time.perf_counter()
        try:
            self.connect()
        except Exception as exc:
            self.record("connection", started, WsFailure(f"connect: {type(exc).__name__}: {exc}"))
            self.close()

    def on_message(self, msg: Msg, raw: bytes) -> None:
        if msg.type == "board":
            latency = time.time() * 1000 - msg.at
            self.record("board", 0.0, length=len(raw), elapsed_ms=max(0.0, latency))
        elif msg.type in ("error", "resync"):
            exc = WsFailure(f"{msg.code or msg.type}: {msg.message_en or msg.reason}")
            self.record("board", time.perf_counter(), exc)

    @task
    def watch(self) -> None:
        if self.ws is None or self.reader is None or self.reader.dead:
            self.close()
            self._connect_recorded()  # a screen reloads itself after a drop


def _failure(exc: Exception) -> Exception:
    return exc if isinstance(exc, WsFailure) else WsFailure(f"{type(exc).__name__}: {exc}")
