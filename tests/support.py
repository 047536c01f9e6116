"""Test helpers: a real server on loopback, and a WebSocket client speaking the protocol."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import uvicorn
from websockets.sync.client import ClientConnection, connect

from loadtest.llm_sim import SimConfig
from loadtest.llm_sim import create_app as create_sim
from server import protocol
from server.app import create_app
from server.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """Serve `settings` on a free loopback port in a thread; yield the base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning",
        ws_max_size=settings.max_frame_bytes * 4, lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


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
        end = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, end - time.monotonic()))
            if msg.__struct_config__.tag == type_:
                return msg

    def hello(self, name: str = "测试学员") -> protocol.Welcome:
        self.request("hello", v=protocol.PROTOCOL_VERSION, name=name)
        return self.expect("welcome")  # type: ignore[no-any-return]

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
