"""Test helpers: a real server on loopback, and a WebSocket client speaking the protocol."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import uvicorn
from websockets.sync.client import ClientConnection, connect

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
