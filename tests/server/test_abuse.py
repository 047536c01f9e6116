"""Abuse and bad input, through a real server with real limits.

Rate limits (counted in Redis), token revocation, oversized and deeply nested bodies and
frames, control characters, CSV formulas, security headers, the WebSocket Origin
allow-list and access logs. Each test names what it guards; every refusal must come with
its own code and a Chinese message, and leave the connection usable.

Client addresses are told apart with X-Forwarded-For, which this module's server believes
from loopback (FORWARDED_ALLOW_IPS, as for nginx on the same host), so one test's lock-out
never blocks another's.
"""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from server import protocol
from server.settings import Settings
from server.wire import errors
from server.wire.edge import redact
from tests.support import Api, Client, make_round, own_schema, running_server

ORIGIN = "https://arena.example.edu"


@pytest.fixture(scope="module")
def strict(settings: Settings) -> Iterator[Settings]:
    with own_schema(settings, f"abuse{uuid.uuid4().hex[:6]}") as own:
        yield msgspec.structs.replace(
            own, embeddings=False, login_limit="3/minute", login_address_limit="5/minute",
            join_limit="4/minute", account_limit="2/minute", ask_limit="3/minute",
            practice_address_ask_limit="5/minute",
            allowed_origins=f"{ORIGIN}, https://screen.example.edu/",
            max_body_bytes=64 * 1024, forwarded_allow_ips="127.0.0.1",
        )


@pytest.fixture(scope="module")
def server(strict: Settings) -> Iterator[str]:
    with running_server(strict) as url:
        yield url


def _call(base: str, method: str, path: str, body: object = None, *, address: str = "",
          token: str = "", content: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, headers) of one HTTP request, errors included."""
    headers = {"content-type": "application/json"}
    if address:
        headers["x-forwarded-for"] = address
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = content if content is not None else (
        None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            status, raw, hdrs = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, hdrs = exc.code, exc.read(), dict(exc.headers)
    try:
        return status, json.loads(raw), {k.lower(): v for k, v in hdrs.items()}
    except ValueError:
        return status, raw.decode("utf-8", "replace"), {k.lower(): v for k, v in hdrs.items()}


def _chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _limited(status: int, body: Any, headers: dict[str, str]) -> bool:
    return (status == 429 and body["code"] == "rate_limited" and "秒后再试" in body["message"]
            and int(headers["retry-after"]) >= 1)


def _events(settings: Settings, attempt_id: str) -> list[str]:
    async def run() -> list[str]:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema})
        try:
            rows = await conn.fetch("SELECT kind FROM events WHERE attempt_id = $1 ORDER BY id",
                                    attempt_id)
        finally:
            await conn.close()
        return [r["kind"] for r in rows]

    return asyncio.run(run())


def _running(org: Api, people: int = 1) -> tuple[str, list[dict[str, Any]]]:
    _, rid, roster = make_round(org, people=people)
    org.action(rid, "open")
    org.action(rid, "start")
    return rid, roster


# ------------------------------------------------------------------------- rate limits


def test_failed_sign_ins_lock_out_an_address_and_username(server: str) -> None:
    wrong = {"username": "admin", "password": "not-the-password"}
    for _ in range(3):
        status, body, _ = _call(server, "POST", "/api/login", wrong, address="10.0.0.1")
        assert status == 401 and body["code"] == "unauthorized"
    # Locked out: now even the right password is refused from there, saying how long.
    right = {"username": "admin", "password": "admin-password-for-tests"}
    status, body, headers = _call(server, "POST", "/api/login", right, address="10.0.0.1")
    assert _limited(status, body, headers), (status, body)
    assert body["message_en"].startswith("Too many attempts")
    # Another address, and another username from the same address, are not locked out.
    status, _, _ = _call(server, "POST", "/api/login", right, address="10.0.0.2")
    assert status == 200
    status, body, _ = _call(server, "POST", "/api/login",
                            {"username": "someone", "password": "whatever-pass"},
                            address="10.0.0.1")
    assert status == 401
    metrics = _call(server, "GET", "/metrics")[1]
    assert 'arena_rate_limited_total{limit="login"}' in metrics


def test_failed_sign_ins_across_usernames_lock_out_the_address(server: str) -> None:
    for i in range(5):  # five names, one wrong password each: spraying, not guessing
        status, _, _ = _call(server, "POST", "/api/login",
                             {"username": f"user{i}", "password": "wrong-password"},
                             address="10.0.1.1")
        assert status == 401
    status, body, headers = _call(server, "POST", "/api/login",
                                  {"username": "user9", "password": "wrong-password"},
                                  address="10.0.1.1")
    assert _limited(status, body, headers)


def test_wrong_join_codes_lock_out_an_address_but_right_ones_never_count(server: str) -> None:
    org = Api.login(server)
    _, _, roster = make_round(org, people=6)
    codes = [p["join_code"] for p in roster]
    # A classroom behind one address: five right codes in a row are never counted...
    for code in codes[:5]:
        status, body, _ = _call(server, "POST", "/api/join", {"code": code},
                                address="10.0.2.1")
        assert status == 200, body
    # ...while wrong (or already used) ones are, and then the address must wait.
    for bad in ("ZZZZ-ZZZZ", "2345-6789", codes[0], "nonsense"):
        status, body, _ = _call(server, "POST", "/api/join", {"code": bad}, address="10.0.2.2")
        assert status in (403, 409), body
    status, body, headers = _call(server, "POST", "/api/join", {"code": codes[5]},
                                  address="10.0.2.2")
    assert _limited(status, body, headers)
    status, body, _ = _call(server, "POST", "/api/join", {"code": codes[5]},
                            address="10.0.2.3")
    assert status == 200, body


def test_account_creation_is_limited_per_organizer(server: str) -> None:
    org = Api.login(server)
    statuses = []
    for _ in range(3):
        name = f"judge-{uuid.uuid4().hex[:6]}"
        status, body, headers = _call(
            server, "POST", "/api/accounts",
            {"username": name, "password": "judge-password", "role": "judge"},
            token=org.token)
        statuses.append(status)
    assert statuses[:2] == [201, 201]
    assert _limited(status, body, headers)


def test_questions_are_limited_per_contestant_across_reconnects(server: str,
                                                                strict: Settings) -> None:
    org = Api.login(server)
    _, roster = _running(org)
    token = org.join(roster[0]["join_code"])["token"]
    with Client(server) as c:
        c.hello(token=token)
        c.expect("play_state")
        for _ in range(2):
            _, end, _ = c.answer("哪里不舒服？")
            assert end.status == "ok"
    with Client(server) as c:  # a new connection does not start a new allowance
        c.hello(token=token)
        play: protocol.PlayState = c.expect("play_state")
        _, end, _ = c.answer("疼了多久了？")
        assert end.status == "ok"
        rid = c.request("ask", text="还有哪里不舒服？")
        err = c.until(lambda m: isinstance(m, protocol.Error))
        assert (err.re, err.code) == (rid, "rate_limited") and "秒后再试" in err.message
        assert isinstance(_ping(c), protocol.Pong)  # still connected
    assert _events(strict, play.attempt_id).count("asked") == 3


def test_practice_questions_are_limited_per_address_across_reconnects(server: str) -> None:
    # 3 per connection, 5 per address: a student reconnecting for a fresh allowance is
    # still stopped by the address's count. (The module's rounds reserve r8c3vn.)
    asked = 0
    for _ in range(2):
        with Client(server) as c:
            c.hello("李同学")
            c.request("start_practice", case_id="k4p9wq")
            c.expect("practice_started")
            for _ in range(3 if asked == 0 else 2):
                _, end, _ = c.answer("哪里不舒服？")
                assert end.status == "ok"
                asked += 1
            if asked == 5:
                rid = c.request("ask", text="还有哪里不舒服？")
                err = c.until(lambda m: isinstance(m, protocol.Error))
                assert (err.re, err.code) == (rid, "rate_limited")
                assert isinstance(_ping(c), protocol.Pong)  # still connected


def _ping(c: Client) -> protocol.ServerMsg:
    fence = c.request("ping", client_time=0.0)
    msg: protocol.ServerMsg = c.until(lambda m: getattr(m, "re", None) == fence)
    return msg


# ------------------------------------------------------------------- tokens: revocation


def test_logout_revokes_that_token_everywhere(server: str) -> None:
    org, other = Api.login(server), Api.login(server)
    assert org.call("GET", "/api/me")["sub"] == "admin"
    assert org.call("POST", "/api/logout", {}) == {"ok": True}
    status, body, _ = _call(server, "GET", "/api/me", token=org.token)
    assert status == 401 and body["code"] == "unauthorized" and "重新登录" in body["message"]
    with Client(server) as c:
        c.request("hello", v=protocol.PROTOCOL_VERSION, token=org.token)
        err = c.expect("error")
        assert err.code == "unauthorized"
        assert c.hello(token=other.token).role == "organizer"  # the other session stays
    assert other.call("GET", "/api/me")["sub"] == "admin"


def test_reissuing_a_join_code_signs_out_the_old_device(server: str) -> None:
    org = Api.login(server)
    _, roster = _running(org)
    person = roster[0]
    old = org.join(person["join_code"])["token"]
    with Client(server) as c:
        assert c.hello(token=old).role == "contestant"
    new_code = org.call("POST", f"/api/contestants/{person['id']}/reissue")["join_code"]
    with Client(server) as c:
        c.request("hello", v=protocol.PROTOCOL_VERSION, token=old)
        assert c.expect("error").code == "unauthorized"
    assert _call(server, "GET", "/api/me", token=old)[0] == 401
    new = org.join(new_code)["token"]
    with Client(server) as c:
        assert c.hello(token=new).role == "contestant"


# -------------------------------------------------------------------- bodies and frames


def test_oversized_bodies_are_refused_before_authentication(server: str) -> None:
    big = json.dumps({"title": "x" * (80 * 1024)}).encode()
    # No token at all: the size is refused (413), not the missing sign-in (401).
    status, body, _ = _call(server, "POST", "/api/competitions", content=big)
    assert status == 413 and body["code"] == "payload_too_large" and _chinese(body["message"])
    small = json.dumps({"title": "x" * (60 * 1024)}).encode()
    assert _call(server, "POST", "/api/competitions", content=small)[0] == 401

    host, port = server.removeprefix("http://").split(":")
    # A Content-Length over the limit is answered before a byte of the body is sent.
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("POST", "/api/login")
    conn.putheader("content-length", str(10**9))
    conn.endheaders()
    resp = conn.getresponse()  # times out if the server waits for the body
    assert resp.status == 413 and json.loads(resp.read())["code"] == "payload_too_large"
    conn.close()

    # Without Content-Length (chunked), counted as it arrives.
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    conn.putrequest("POST", "/api/login")
    conn.putheader("transfer-encoding", "chunked")
    conn.putheader("content-type", "application/json")
    conn.endheaders()
    chunk = b'{"username": "admin", "password": "' + b"p" * 8192
    try:
        for _ in range(16):  # 128 KiB, twice the limit
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may answer and close before the rest is sent
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["code"] == "payload_too_large"
    conn.close()


def test_deeply_nested_bodies_are_bad_requests(server: str) -> None:
    for depth in (40, 5000):
        nested = '{"username": "admin", "password": ' + "[" * depth + "]" * depth + "}"
        status, body, _ = _call(server, "POST", "/api/login", content=nested.encode())
        assert status == 400 and body["code"] == "bad_request", (depth, status, body)
        assert "嵌套" in body["message"]


def test_bad_frames_get_error_replies_and_the_connection_stays(server: str) -> None:
    with Client(server) as c:
        c.hello()
        cases = [
            ('{"type": "ping", "id": "big", "pad": "' + "x" * 40_000 + '"}', "frame_too_large"),
            ('{"type": "ping", "id": "d1", "x": ' + "[" * 33 + "]" * 33 + "}", "too_deep"),
            # Deeper than msgspec itself can recurse: this used to end the connection.
            ('{"type": "ping", "id": "d2", "x": ' + "[" * 3000 + "]" * 3000 + "}", "too_deep"),
            ('{"type": "ping", "id": "d3", "x": ' + "{\"a\":" * 20 + "1" + "}" * 20 + "}",
             "bad_message"),
            ('{"type": "ping", "id": "s", "x": "' + "[" * 100 + '"}', "bad_message"),
        ]
        for frame, code in cases:
            c.send_raw(frame)
            err = c.expect("error")
            assert err.code == code and _chinese(err.message), (code, err)
            assert isinstance(_ping(c), protocol.Pong)


def test_control_characters_are_bad_requests_naming_the_field(server: str,
                                                              strict: Settings) -> None:
    org = Api.login(server)
    _, roster = _running(org)
    token = org.join(roster[0]["join_code"])["token"]
    with Client(server) as c:
        c.hello(token=token)
        play: protocol.PlayState = c.expect("play_state")
        before = _events(strict, play.attempt_id)
        sent: list[tuple[str, dict[str, Any], str]] = [
            ("ask", {"text": "哪里痛\x00"}, "text"),
            ("ask", {"text": "\x1b[31m红色"}, "text"),
            ("submit", {"diagnosis": "急性心肌梗死", "differentials": ["心绞痛", "夹层\x07"],
                        "reasoning": ""}, "differentials[1]"),
        ]
        for type_, fields, field in sent:
            rid = c.request(type_, **fields)
            err = c.until(lambda m: isinstance(m, protocol.Error))
            assert (err.re, err.code) == (rid, "bad_request"), err
            assert field in err.message and "控制字符" in err.message
        assert _events(strict, play.attempt_id) == before  # nothing reached the log
        _, end, _ = c.answer("哪里痛？\n什么时候开始的？\t")  # newline and tab are fine
        assert end.status == "ok"
    status, body, _ = _call(server, "POST", "/api/competitions", {"title": "赛事\x00"},
                            token=org.token)
    assert status == 400 and body["code"] == "bad_request" and "title" in body["message"]
    status, body, _ = _call(server, "POST", "/api/login",
                            {"username": "ad\x00min", "password": "x" * 10}, address="10.0.3.1")
    assert status == 400 and body["code"] == "bad_request" and "username" in body["message"]
    # A NUL in a path reaches PostgreSQL, whose refusal is the request's fault, not a 500.
    for path in ("/api/rounds/a%00b", "/api/competitions/a%00b/roster"):
        status, body, _ = _call(server, "GET", path, token=org.token)
        assert status == 400 and body["code"] == "bad_request" and "NUL" in body["message"]


def test_text_postgres_refuses_is_a_bad_request_not_unavailable() -> None:
    # The backstop for any path the field check misses: PostgreSQL's own refusal.
    err = errors.ws_error(asyncpg.CharacterNotInRepertoireError("invalid byte sequence"), "r1")
    assert err.code == "bad_request" and "NUL" in err.message


# -------------------------------------------------------------------------------- exports


def test_roster_csv_export_neutralises_formulas(server: str) -> None:
    org = Api.login(server)
    cid = org.call("POST", "/api/competitions", {"title": "公式测试"})["id"]
    names = ['=HYPERLINK("http://evil.example","点我")', "+1+2", "-3", "@SUM(A1)",
             " =1+1", "张三"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["姓名", "学校"])
    writer.writerows([n, "医学院"] for n in names)
    org.call("POST", f"/api/competitions/{cid}/roster", content=out.getvalue().encode())
    text = org.call("GET", f"/api/competitions/{cid}/roster.csv").lstrip("\ufeff")
    exported = {row[0] for row in list(csv.reader(io.StringIO(text)))[1:]}
    # Cells are trimmed on import, so " =1+1" arrives as "=1+1".
    assert exported == {"'=HYPERLINK(\"http://evil.example\",\"点我\")", "'+1+2", "'-3",
                        "'@SUM(A1)", "'=1+1", "张三"}

    bad = "姓名,学校\n张\x01三,医学院\n".encode()
    status, body, _ = _call(server, "POST", f"/api/competitions/{cid}/roster", content=bad,
                            token=org.token)
    assert status == 400 and "控制字符" in body["problems"][0]


# -------------------------------------------------------- headers, origins and logs


def test_every_response_has_security_headers(server: str) -> None:
    for path in ("/", "/play.html", "/api/me", "/healthz", "/no-such-page"):
        _, _, headers = _call(server, "GET", path)
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src 'self'" in csp and "unsafe" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_websocket_origin_allow_list(server: str) -> None:
    ws_url = server.replace("http", "ws", 1) + "/ws"
    evil = Origin("https://evil.example")
    with pytest.raises(InvalidStatus) as info, connect(ws_url, origin=evil, open_timeout=10):
        pass
    assert info.value.response.status_code == 403
    for origin in (Origin(ORIGIN), Origin("https://screen.example.edu"), None):
        with connect(ws_url, origin=origin, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "hello", "id": "h", "v": protocol.PROTOCOL_VERSION}))
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"


def test_tokens_and_codes_never_reach_the_access_log(server: str) -> None:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    handler = Keep()
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    try:
        secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2ln"
        _call(server, "GET", f"/screen.html?k={secret}")
        _call(server, "GET", f"/play.html?x=1&token={secret}&code=K7PX-3QMA")
        ws_url = server.replace("http", "ws", 1) + f"/ws?token={secret}"
        with connect(ws_url, origin=Origin(ORIGIN), open_timeout=10):
            pass
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    logged = "\n".join(lines)
    assert "/screen.html?k=***" in logged and "token=***&code=***" in logged, logged
    assert "/ws?token=***" in logged, logged
    assert secret not in logged and "K7PX" not in logged


def test_redact() -> None:
    assert redact("GET /screen.html?k=abc.def&x=1") == "GET /screen.html?k=***&x=1"
    assert redact("/a?code=K7PX-3QMA#f") == "/a?code=***#f"
    assert redact("/a?kind=x&book=2") == "/a?kind=x&book=2"  # only those names, whole
