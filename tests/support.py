"""Test helpers: a real server on loopback, and a WebSocket client speaking the protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import uvicorn
from websockets.sync.client import ClientConnection, connect

from loadtest.llm_sim import SimConfig
from loadtest.llm_sim import create_app as create_sim
from server import protocol
from server.app import create_app
from server.settings import Settings, proxy_options
from server.store.audit import AuditLog, prepare


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ADMIN_PASSWORD = "admin-password-for-tests"
ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """`arena up` or `arena serve` as an OS process, on a loopback port of its own, its
    output in `log`: what fault tests start, stop, kill and read."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", command, "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )

    def wait_for(self, path: str, timeout: float) -> None:
        """Until `path` answers 200; raises with the log's tail if the process exits or
        the time runs out (the process is then killed)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"arena exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise RuntimeError(f"arena: {path} not 200 in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def terminate(self) -> float:
        """SIGTERM; the seconds it took to exit (killed, and infinite, after 10)."""
        start = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            return float("inf")
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class FakeClock:
    """Server time that tests move by hand (rounds last minutes; tests take seconds)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def running_server(
    settings: Settings, clock: Callable[[], float] = time.time
) -> Iterator[str]:
    """Serve `settings` on a free loopback port in a thread; yield the base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, clock=clock), host="127.0.0.1", port=port, log_level="warning",
        ws_max_size=settings.max_frame_bytes * 4, lifespan="on", ws_per_message_deflate=False,
        loop="asyncio",  # uvloop warns about sockets still open when a test thread stops
        **proxy_options(settings),  # as `arena up` (server/cli.py) serves it
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    # The server listens once its case library and matchers are built; the first server of
    # a session also embeds the intent bank (about a minute of CPU on a busy two-core host;
    # later ones read it from the data folder's cache).
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def own_schema(settings: Settings, name: str) -> Iterator[Settings]:
    """`settings` with a PostgreSQL schema and Redis key prefix of their own (the schema is
    dropped afterwards). For modules that practise a case or leave rounds unpublished: a
    round whose results are not published reserves its case, which then is not open to
    practice, so such modules must not share a database with each other."""
    own = msgspec.structs.replace(
        settings, database_schema=f"{settings.database_schema}_{name}",
        redis_prefix=f"{settings.redis_prefix}{name}:",
    )
    try:
        yield own
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(settings.database_url)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {own.database_schema} CASCADE")
            finally:
                await conn.close()

        # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
        dropper = threading.Thread(target=asyncio.run, args=(drop(),))
        dropper.start()
        dropper.join()


class Client:
    """A protocol client for tests: `request` sends, `expect` reads until a message type."""

    def __init__(self, base_url: str) -> None:
        # websockets 17 wants connect() used as a context manager; enter it here.
        self._cm = connect(
            base_url.replace("http", "ws", 1) + "/ws", open_timeout=10, max_size=2**22
        )
        self.ws: ClientConnection = self._cm.__enter__()
        self.received: list[protocol.ServerMsg] = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)

    def send_raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def request(self, type_: str, id: str | None = None, **fields: Any) -> str:
        rid = id or uuid.uuid4().hex[:8]
        self.ws.send(msgspec.json.encode({"type": type_, "id": rid, **fields}).decode())
        return rid

    def recv(self, timeout: float = 10) -> protocol.ServerMsg:
        msg = protocol.decode_server(self.ws.recv(timeout=timeout))
        self.received.append(msg)
        return msg

    def expect(self, type_: str, timeout: float = 10) -> Any:
        """Read messages until one of `type_` arrives; return it."""
        return self.until(lambda msg: msg.__struct_config__.tag == type_, timeout, type_)

    def hello(
        self, name: str = "测试学员", token: str = "", since: dict[str, int] | None = None,
        epoch: dict[str, str] | None = None,
    ) -> protocol.Welcome:
        fields: dict[str, Any] = {"v": protocol.PROTOCOL_VERSION, "name": name}
        if token:
            fields["token"] = token
        if since:
            fields["since"] = since
        if epoch:
            fields["epoch"] = epoch  # the epoch each `since` number counts in
        self.request("hello", **fields)
        return self.expect("welcome")  # type: ignore[no-any-return]

    def until(self, check: Callable[[Any], bool], timeout: float = 10,
              wanted: str = "a message") -> Any:
        """Read messages until `check(msg)` holds; return that message. On a timeout, say
        what did arrive meanwhile (an `error` reply is the usual reason one never comes)."""
        end = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                msg = self.recv(max(0.01, end - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no {wanted} in {timeout:.0f} s; arrived meanwhile: "
                                   f"{seen[-8:] or 'nothing'}") from None
            if check(msg):
                return msg
            seen.append(msgspec.json.encode(msg).decode()[:200])

    def answer(self, text: str) -> tuple[str, protocol.AnswerEnd, int]:
        """Ask and collect the streamed answer: (text, end message, number of deltas)."""
        self.request("ask", text=text)
        self.expect("answer_start")
        parts: list[str] = []
        while True:
            msg = self.recv()
            if isinstance(msg, protocol.AnswerDelta):
                parts.append(msg.text)
            elif isinstance(msg, protocol.AnswerEnd):
                return "".join(parts), msg, len(parts)


def pg_snapshot(database_url: str) -> str:
    """What PostgreSQL's sessions are doing (waits, open transactions, held advisory locks):
    for a test's failure message when a request that needs it never completes."""
    async def run() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT pid, state, wait_event_type, wait_event,"
                " now() - xact_start AS xact_age, left(query, 120) AS query"
                " FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle'")
            locks = await conn.fetch(
                "SELECT pid, locktype, objid, granted FROM pg_locks"
                " WHERE locktype = 'advisory'")
        finally:
            await conn.close()
        return f"sessions: {[dict(r) for r in rows]}; advisory locks: {[dict(r) for r in locks]}"

    out: list[str] = []
    worker = threading.Thread(target=lambda: out.append(asyncio.run(run())))
    worker.start()
    worker.join(10)
    return out[0] if out else "no snapshot"


def warm_up(url: str, case_id: str = "r8c3vn", timeout: float = 180) -> None:
    """Play one practice round to its score, waiting as long as the server's matching process
    needs to load (seconds of CPU at nice 19, longer on a busy machine), so a module's tests
    on a server of its own meet a warm one, as they would the session's."""
    with Client(url) as c:
        c.hello("预热")
        c.request("start_practice", case_id=case_id)
        c.expect("practice_started")
        c.answer("哪里不舒服？")
        c.request("submit", diagnosis="预热")
        c.expect("scored", timeout=timeout)


# ---------------------------------------------------------------- the LLM simulator, for real

FAST = SimConfig(ttft_ms=2, itl_ms=1)


def _http(url: str, body: object | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as resp:
        return json.loads(resp.read())


class Sim:
    """Control of the running simulator, through its /sim endpoints."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.base_url = f"{root}/v1"

    def configure(self, **changes: object) -> None:
        _http(f"{self.root}/sim/config", changes)

    def reset(self) -> None:
        self.configure(**msgspec.structs.asdict(FAST))
        _http(f"{self.root}/sim/reset", {})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = _http(f"{self.root}/sim/stats")
        return result

    def wait_for(self, what: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not what(stats := self.stats()):
            assert time.monotonic() < deadline, f"simulator never got there: {stats}"
            time.sleep(0.02)


@contextmanager
def running_sim(config: SimConfig = FAST) -> Iterator[str]:
    """The OpenAI-compatible simulator on a free loopback port; yields its root URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config_ = uvicorn.Config(
        create_sim(config), log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config_)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="llm-sim")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


# ---------------------------------------------------------------- the HTTP API, for rounds


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body
        self.code = body.get("code") if isinstance(body, dict) else None


class Api:
    """The organizer/judge/contestant HTTP API (docs/protocol.md) over real HTTP."""

    def __init__(self, base_url: str, token: str = "") -> None:
        self.base_url = base_url
        self.token = token

    def call(self, method: str, path: str, body: object | None = None,
             content: bytes | None = None) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        data = content
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
                if resp.headers.get_content_type() == "application/json":
                    return json.loads(raw)
                return raw.decode("utf-8")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            raise ApiError(exc.code, parsed) from None

    @classmethod
    def login(cls, base_url: str, user: str = "admin", password: str = ADMIN_PASSWORD) -> Api:
        token = cls(base_url).call("POST", "/api/login", {"username": user, "password": password})
        return cls(base_url, token["token"])

    def join(self, code: str) -> dict[str, Any]:
        result: dict[str, Any] = Api(self.base_url).call("POST", "/api/join", {"code": code})
        return result

    def action(self, round_id: str, action: str, reason: str = "", **fields: Any) -> Any:
        body = {"request_id": uuid.uuid4().hex, "reason": reason, **fields}
        return self.call("POST", f"/api/rounds/{round_id}/{action}", body)


def make_round(
    api: Api, people: int = 2, case_id: str = "r8c3vn", **rules: Any
) -> tuple[str, str, list[dict[str, Any]]]:
    """A competition with `people` on its roster and one draft round: (cid, rid, roster)."""
    cid = api.call("POST", "/api/competitions", {"title": f"测试赛事 {uuid.uuid4().hex[:4]}"})["id"]
    lines = ["姓名,学校,队伍,邮箱"] + [
        f"选手{i},医学院{i % 2},第{i % 2}队,p{i}-{cid}@example.com" for i in range(1, people + 1)
    ]
    api.call("POST", f"/api/competitions/{cid}/roster", content="\n".join(lines).encode())
    rules = {"case_id": case_id, "duration_s": 600, "countdown_s": 0, **rules}
    new_round = {"title": "第一场", "rules": rules}
    rid = api.call("POST", f"/api/competitions/{cid}/rounds", new_round)["id"]
    roster = api.call("GET", f"/api/competitions/{cid}/roster")
    return cid, rid, roster


@contextlib.asynccontextmanager
async def fresh_log(settings: Settings) -> AsyncIterator[tuple[AuditLog, asyncpg.Connection]]:
    """A schema of its own (tampering must not touch the shared one), migrated by the
    owner; yields the app role's log and an owner (superuser) connection."""
    schema = f"{settings.database_schema}_{uuid.uuid4().hex[:6]}"
    app = msgspec.structs.replace(settings, database_schema=schema)
    await prepare(settings.database_url, schema, settings.database_app_user)
    audit = await AuditLog.open(app.app_database_url, schema)
    owner = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
    try:
        yield audit, owner
    finally:
        await audit.close()
        await owner.execute(f"DROP SCHEMA {schema} CASCADE")
        await owner.close()
