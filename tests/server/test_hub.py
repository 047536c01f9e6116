"""The hub's send path over real sockets: a client that stops reading cannot stall others.

Frames are written without a task while a socket takes them (hub.Connection._write_now)
and handed to a sender task once the socket's buffer is full. This drives both paths
with a hand-rolled WebSocket client on a raw TCP socket with a tiny receive buffer that
stops reading, which is how a phone on a dead network looks to the server.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import msgspec
import pytest

from server.settings import Settings
from tests.support import Client, running_server


@pytest.fixture(scope="module")
def small_queue_server(settings: Settings) -> Iterator[str]:
    with running_server(msgspec.structs.replace(settings, send_queue_size=8)) as url:
        yield url


def _slow_clients(base_url: str) -> float:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("arena_ws_slow_clients_total "):
                return float(line.split()[1])
    return 0.0


def _frame(text: str) -> bytes:
    """A masked client text frame."""
    data = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(data)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class RawClient:
    """Just enough WebSocket to connect, write frames, and read frames only when told to."""

    def __init__(self, base_url: str) -> None:
        u = urlsplit(base_url)
        self.sock = socket.socket()
        # A tiny receive window: the server's kernel buffer and then its transport fill fast.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.sock.settimeout(10)
        self.sock.connect((u.hostname, u.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, msg: dict[str, object]) -> None:
        self.sock.sendall(_frame(json.dumps(msg)))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """(opcode, payload) until the server's close frame (included) or EOF."""
        while True:
            try:
                b0, b1 = self._read(2)
            except ConnectionError:
                return
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)
            yield b0 & 0x0F, payload
            if b0 & 0x0F == 0x8:
                return


def test_a_client_that_stops_reading_is_told_to_resync_and_closed_without_stalling_others(
    small_queue_server: str,
) -> None:
    stalled = RawClient(small_queue_server)
    try:
        _stall_and_check(small_queue_server, stalled)
    finally:
        stalled.sock.close()


def _stall_and_check(small_queue_server: str, stalled: RawClient) -> None:
    stalled.send({"type": "hello", "v": 1, "id": "h"})
    # Every ping gets a pong; the stalled client reads none of them, so the kernel's
    # buffers and then the server's transport fill, sends start queueing, and the
    # 8-message queue overflows (seen on /metrics). How much the kernel absorbs varies.
    before = _slow_clients(small_queue_server)
    sent = 0
    stalled.sock.settimeout(2)
    try:
        while _slow_clients(small_queue_server) == before:
            assert sent < 200_000, "the server never ran out of room for a client reading nothing"
            for _ in range(2000):
                stalled.send({"type": "ping", "id": f"p{sent}", "client_time": float(sent)})
                sent += 1
            time.sleep(0.05)
    except TimeoutError:
        # Once the server has given up on this client it stops reading from it too, so
        # a write can block mid-batch; the metric below says whether that is why.
        pass
    stalled.sock.settimeout(10)
    assert _slow_clients(small_queue_server) > before

    # Meanwhile another client is served as usual: nothing waits on the stalled one.
    with Client(small_queue_server) as other:
        other.hello("旁观者")
        t0 = time.monotonic()
        pid = other.request("ping", client_time=1.0)
        pong = other.expect("pong")
        assert pong.re == pid and time.monotonic() - t0 < 5

    # Now read what the stalled client was sent: pongs in order, then resync, then close.
    pongs: list[float] = []
    resync = None
    close_code = None
    for opcode, payload in stalled.frames():
        if opcode == 0x1:
            msg = json.loads(payload)
            if msg["type"] == "pong":
                assert resync is None, "nothing is sent after the resync notice"
                pongs.append(msg["client_time"])
            elif msg["type"] == "resync":
                resync = msg
        elif opcode == 0x8:
            close_code = struct.unpack("!H", payload[:2])[0]
    assert resync is not None and resync["reason"] == "send queue full"
    assert close_code == 4008
    # What did arrive arrived in order and without gaps; the overflow was dropped.
    assert pongs == [float(i) for i in range(len(pongs))]
    assert 0 < len(pongs) < sent
