"""Who may do what, checked cell by cell through the real server.

The expected matrices are written out here from docs/protocol.md (the role table under
"Competitions" and the HTTP API table), never taken from `server.wire.access`: a test that
read the server's own table could not fail. Every WebSocket message type is sent by
every role, and every HTTP route is called as every role; a refused request must be
refused with the right code and a Chinese message, and must change nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server import protocol
from server.services.accounts import Claims
from server.services.accounts import Role as TokenRole
from server.services.tokens import Signer
from server.settings import Settings
from server.wire import api
from tests.support import ADMIN_PASSWORD, Api, Client, FakeClock, make_round

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

ROLES = ("student", "contestant", "judge", "organizer", "spectator")
TOKEN_ROLES: tuple[TokenRole, ...] = ("contestant", "judge", "organizer", "spectator")
CASE_ID = "r8c3vn"
STUDENT_NAME = f"权限测试{uuid.uuid4().hex[:6]}"  # every test connection's hello name

# docs/protocol.md, "Which client messages each role may send". Written out by hand.
ALLOWED: dict[str, frozenset[str]] = {
    "hello": frozenset(ROLES),
    "ping": frozenset(ROLES),
    "start_practice": frozenset({"student"}),
    "ask": frozenset({"student", "contestant"}),
    "order": frozenset({"student", "contestant"}),
    "submit": frozenset({"student", "contestant"}),
    "watch": frozenset({"judge", "organizer"}),
    "open_transcript": frozenset({"judge", "organizer"}),
    "adjudicate": frozenset({"judge"}),
    "override": frozenset({"judge"}),
}

# One valid-shaped example of every client message (ids need not exist). `hello` is the
# handshake; here it is only sent a second time, which must be refused.
EXAMPLES: dict[str, dict[str, Any]] = {
    "hello": {"v": protocol.PROTOCOL_VERSION, "name": "再次握手"},
    # A real case: were a contestant's start_practice let through, it would write events.
    "start_practice": {"case_id": CASE_ID},
    "ask": {"text": "哪里不舒服？"},
    "order": {"item_id": "test_ecg"},
    "submit": {"diagnosis": "急性下壁心肌梗死", "differentials": ["主动脉夹层"],
               "reasoning": "胸痛伴下壁导联 ST 段抬高"},
    "ping": {"client_time": 1.0},
    "watch": {"round_id": "no-such-round", "since": 0},
    "open_transcript": {"attempt_id": "no-such-round.no-such-person"},
    "adjudicate": {"attempt_id": "no-such-round.no-such-person", "verdict": "correct",
                   "reason": "诊断正确"},
    "override": {"attempt_id": "no-such-round.no-such-person", "section": "diagnosis",
                 "line": 0, "points": 1.0, "reason": "酌情给分"},
}
MESSAGES = [t for t in EXAMPLES if t != "hello"]

# Codes an allowed request must never get: an authorization refusal, or a crash.
NOT_FOR_ALLOWED = {"forbidden", "unauthorized", "token_expired", "hello_required", "internal"}

ANYONE = frozenset({"anyone"})
# docs/protocol.md, "HTTP API": who may call each route. Written out by hand.
HTTP_WHO: dict[str, frozenset[str]] = {
    "POST /api/login": ANYONE,
    "POST /api/join": ANYONE,
    "POST /api/logout": frozenset(TOKEN_ROLES),
    # Not in the docs' table (see test_every_route_is_documented); the organizer console
    # (server/console.py) is its only caller.
    "POST /api/accounts": frozenset({"organizer"}),
    "GET /api/me": frozenset(TOKEN_ROLES),
    "GET /api/cases": ANYONE,
    "POST /api/cases/{case}/visibility": frozenset({"organizer"}),
    "GET /api/competitions": frozenset({"organizer", "judge"}),
    "POST /api/competitions": frozenset({"organizer"}),
    "POST /api/competitions/{cid}/rounds": frozenset({"organizer"}),
    "POST /api/competitions/{cid}/roster": frozenset({"organizer"}),
    "GET /api/competitions/{cid}/roster": frozenset({"organizer"}),
    "GET /api/competitions/{cid}/roster.csv": frozenset({"organizer"}),
    "POST /api/contestants/{pid}/reissue": frozenset({"organizer"}),
    "GET /api/rounds/{rid}": frozenset({"organizer", "judge"}),
    "POST /api/rounds/{rid}/{action}": frozenset({"organizer"}),
    "POST /api/rounds/{rid}/spectator": frozenset({"organizer"}),
    "GET /api/rounds/{rid}/review": frozenset({"organizer", "judge"}),
    "GET /api/rounds/{rid}/audit": frozenset({"organizer"}),
    "GET /api/rounds/{rid}/export": frozenset({"organizer"}),
}

# Who calls: no header at all, a student (who has no token: an empty bearer), every token
# role, a forged token and an expired one.
CALLERS = ("anonymous", "student", *TOKEN_ROLES, "forged", "expired")

_HAN = re.compile(r"[\u4e00-\u9fff]")


def _chinese(text: str) -> bool:
    return bool(_HAN.search(text))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------------------- the world


def _db(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema}
        )
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _signer(settings: Settings) -> Signer:
    """A signer holding the server's own keys, read from the `token_keys` table."""
    rows = _db(settings, "SELECT kid, secret FROM token_keys WHERE retired_at IS NULL"
                         " ORDER BY created_at, kid")
    assert rows
    return Signer({r["kid"]: bytes(r["secret"]) for r in rows}, rows[-1]["kid"])


@dataclass
class World:
    org: Api
    judge: Api
    judge_user: str
    cid: str
    rid: str  # a draft round: contestants wait in it, so nothing they send can play
    roster: list[dict[str, Any]]
    tokens: dict[str, str]  # role -> token; "" for a student
    used_code: str  # a join code already redeemed
    expired: str  # an organizer token signed with the server's key, expired

    def actors(self) -> list[str]:
        """Every actor name the roles in `tokens` would leave in the events table."""
        return ["organizer:admin", f"judge:{self.judge_user}",
                f"contestant:{self.roster[0]['id']}", f"student:{STUDENT_NAME}"]


@pytest.fixture(scope="module")
def world(server: str, settings: Settings, clock: FakeClock) -> World:
    org = Api.login(server)
    judge_user = f"judge-{uuid.uuid4().hex[:8]}"
    org.call("POST", "/api/accounts", {"username": judge_user, "password": "judge-password",
                                       "role": "judge", "display_name": "权限评委"})
    judge = Api.login(server, judge_user, "judge-password")
    cid, rid, roster = make_round(org, people=3)
    joined = org.join(roster[0]["join_code"])
    spectator = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    expired = _signer(settings).issue(
        Claims(role="organizer", sub="admin", name="admin", exp=clock.now - 60)
    )
    return World(
        org=org, judge=judge, judge_user=judge_user, cid=cid, rid=rid, roster=roster,
        tokens={"student": "", "contestant": joined["token"], "judge": judge.token,
                "organizer": org.token, "spectator": spectator},
        used_code=roster[0]["join_code"], expired=expired,
    )


def _last_event_id(settings: Settings) -> int:
    return int(_db(settings, "SELECT coalesce(max(id), 0) AS m FROM events")[0]["m"])


def _new_events(settings: Settings, since: int, rounds: list[str], actors: list[str]
                ) -> list[str]:
    """Events written after `since` by these actors or in these rounds (other test
    modules' servers may still be finishing their own work meanwhile)."""
    rows = _db(
        settings,
        "SELECT kind, actor, round_id FROM events WHERE id > $1"
        " AND (round_id = ANY($2::text[]) OR actor = ANY($3::text[])"
        "      OR split_part(coalesce(attempt_id, ''), '.', 1) = ANY($2::text[]))"
        " ORDER BY id",
        since, rounds, actors,
    )
    return [f"{r['kind']} by {r['actor']} in {r['round_id']}" for r in rows]


def _send(c: Client, type_: str, **fields: Any) -> protocol.ServerMsg | None:
    """Send one request; the reply that names it (`re`), or None if it got none.

    A ping follows as a fence: the server handles a connection's frames in order, so
    any reply to the request comes before the fence's, and a request that some session
    silently ignores shows up as None at once instead of as a timeout.
    """
    rid = c.request(type_, **(fields or EXAMPLES[type_]))
    fence = c.request("ping", client_time=0.0)
    reply: protocol.ServerMsg | None = None
    while True:
        msg = c.recv(timeout=10)
        re_ = getattr(msg, "re", None)
        if re_ == fence:
            return reply
        if re_ == rid and reply is None:
            reply = msg


def _describe(msg: protocol.ServerMsg | None) -> str:
    if msg is None:
        return "no reply"
    if isinstance(msg, protocol.Error):
        return f"error {msg.code} ({msg.message})"
    return str(msg.__struct_config__.tag)


def _is_forbidden(msg: protocol.ServerMsg | None) -> bool:
    return (isinstance(msg, protocol.Error) and msg.code == "forbidden"
            and _chinese(msg.message) and bool(msg.message_en))


# ------------------------------------------------------------------- the tables themselves


def test_examples_and_matrix_cover_every_client_message() -> None:
    # A new message type fails here until it has an example and a row in the matrix.
    types = {str(t.__struct_config__.tag) for t in protocol.CLIENT_MESSAGE_TYPES}
    assert set(EXAMPLES) == types
    assert set(ALLOWED) == types
    for type_, fields in EXAMPLES.items():  # every example decodes as that type
        frame = json.dumps({"type": type_, "id": "x", **fields})
        decoded = protocol.decode_client(frame, 32 * 1024)
        assert decoded.__struct_config__.tag == type_


def test_http_table_covers_every_route() -> None:
    routes = {
        f"{method} {route.path}"
        for route in api.ROUTES
        for method in (route.methods or ())
        if method != "HEAD"
    }
    assert routes == set(HTTP_WHO)
    assert set(HTTP_WHO) == set(_HTTP_CALLS)


def _docs_section(title: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def test_role_matrix_is_the_documented_one() -> None:
    section = _docs_section("Which client messages each role may send")
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| type |"))
    roles = [c.strip() for c in header.strip("|").split("|")][1:]
    assert tuple(roles) == ROLES
    documented: dict[str, frozenset[str]] = {}
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        who = frozenset(r for r, mark in zip(roles, cells[1:], strict=True) if mark == "✓")
        for type_ in re.findall(r"`([a-z_]+)`", cells[0]):
            documented[type_] = who
    assert documented == ALLOWED


def _documented_routes() -> dict[str, frozenset[str]]:
    section = _docs_section("## HTTP API (JSON")
    out: dict[str, frozenset[str]] = {}
    for m in re.finditer(r"^\| `(GET|POST) ([^`]+)` \| ([^|]+) \|", section, re.M):
        method, path, who = m.group(1), m.group(2), m.group(3).strip()
        key = f"{method} {_normalized(path)}"
        if who == "anyone":
            out[key] = ANYONE
        elif who == "any token":
            out[key] = frozenset(TOKEN_ROLES)
        else:
            out[key] = frozenset(r.strip() for r in who.split(","))
    return out


def _normalized(key: str) -> str:
    return re.sub(r"\{[a-z]+\}", "{}", key)


def test_http_table_is_the_documented_one() -> None:
    documented = _documented_routes()
    assert documented, "the HTTP API table was not found in docs/protocol.md"
    mine = {_normalized(k): v for k, v in HTTP_WHO.items()}
    for key, who in documented.items():
        assert mine.get(key) == who, key


def test_every_route_is_documented() -> None:
    documented = _documented_routes()
    assert {_normalized(k) for k in HTTP_WHO} <= set(documented)


# ------------------------------------------------------------------ WebSocket: the matrix


@pytest.mark.parametrize("role", ROLES)
def test_message_matrix(server: str, settings: Settings, world: World, role: str) -> None:
    """Every message type as `role`: forbidden exactly where the docs say, nothing changed."""
    problems: list[str] = []
    forbidden = [t for t in MESSAGES if role not in ALLOWED[t]]
    allowed = [t for t in MESSAGES if role in ALLOWED[t]]
    with Client(server) as c:
        welcome = c.hello(name=STUDENT_NAME, token=world.tokens[role])
        assert welcome.role == role
        mark = _last_event_id(settings)
        for type_ in forbidden:
            reply = _send(c, type_)
            if not _is_forbidden(reply):
                problems.append(f"{role} {type_}: expected forbidden, got {_describe(reply)}")
        # Refused means nothing happened: not one event for this round or these people.
        written = _new_events(settings, mark, [world.rid, "no-such-round"], world.actors())
        assert written == [], f"forbidden messages from a {role} wrote {written}"
        for type_ in allowed:
            reply = _send(c, type_)
            if reply is None or (
                isinstance(reply, protocol.Error) and reply.code in NOT_FOR_ALLOWED
            ):
                problems.append(f"{role} {type_}: allowed, got {_describe(reply)}")
        # The connection is still usable, and a second hello is refused for every role.
        again = _send(c, "hello", **EXAMPLES["hello"], token=world.tokens[role])
        if not (isinstance(again, protocol.Error) and again.code == "bad_request"
                and _chinese(again.message)):
            problems.append(f"{role} second hello: expected bad_request, got {_describe(again)}")
        assert sum(isinstance(m, protocol.Welcome) for m in c.received) == 1
        assert isinstance(_send(c, "ping"), protocol.Pong)
    assert not problems, "\n".join(problems)


def test_spectator_may_only_ping(server: str, settings: Settings, world: World) -> None:
    with Client(server) as s:
        welcome = s.hello(token=world.tokens["spectator"])
        assert (welcome.role, welcome.round_id) == ("spectator", world.rid)
        mark = _last_event_id(settings)
        for type_ in MESSAGES:
            reply = _send(s, type_)
            if type_ == "ping":
                assert isinstance(reply, protocol.Pong)
            else:
                assert _is_forbidden(reply), (type_, _describe(reply))
                assert isinstance(reply, protocol.Error)
                assert "观众" in reply.message
        # A spectator's submit (or anything else) leaves no trace in the database.
        assert _new_events(settings, mark, [world.rid], world.actors()) == []
        assert _db(settings, "SELECT id FROM events WHERE id > $1 AND actor LIKE 'spectator%'",
                   mark) == []


def _scored(settings: Settings, attempt_id: str) -> list[tuple[str, str]]:
    rows = _db(settings, "SELECT kind, payload::text AS payload FROM events"
               " WHERE attempt_id = $1 ORDER BY id", attempt_id)
    return [(r["kind"], r["payload"]) for r in rows]


def _total(events: list[tuple[str, str]]) -> float:
    cards = [json.loads(p) for k, p in events if k == "scored"]
    return float(cards[-1]["total"])


def test_only_a_judge_changes_a_score(server: str, settings: Settings, world: World) -> None:
    """A contestant (or organizer, or spectator) ruling on a real submitted attempt is
    refused and the score stays; the judge's same ruling then goes through."""
    org = world.org
    _, rid, roster = make_round(org, people=1)
    token = org.join(roster[0]["join_code"])["token"]
    spectator = org.call("POST", f"/api/rounds/{rid}/spectator")["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    with Client(server) as a, Client(server) as o, Client(server) as s, Client(server) as j:
        a.hello(token=token)
        play: protocol.PlayState = a.expect("play_state")
        aid = play.attempt_id
        a.request("submit", diagnosis="心绞痛", differentials=[], reasoning="胸痛")
        a.expect("submit_ack")
        before = _scored(settings, aid)
        assert [k for k, _ in before] == ["attempt_started", "submitted", "scored"]
        o.hello(token=org.token)
        s.hello(token=spectator)
        rulings: dict[str, dict[str, Any]] = {
            "adjudicate": {"attempt_id": aid, "verdict": "correct", "reason": "我认为是对的"},
            "override": {"attempt_id": aid, "section": "diagnosis", "line": 0, "points": 40,
                         "reason": "给我满分"},
        }
        for client in (a, o, s):
            for type_, fields in rulings.items():
                reply = _send(client, type_, **fields)
                assert _is_forbidden(reply), (type_, _describe(reply))
        assert _scored(settings, aid) == before  # no ruling, no new card

        j.hello(token=world.judge.token)
        ack = _send(j, "adjudicate", **(rulings["adjudicate"] | {"reason": "评委复核"}))
        assert isinstance(ack, protocol.Ack), _describe(ack)
    after = _scored(settings, aid)
    assert [k for k, _ in after][len(before):] == ["adjudicated", "scored"]
    assert _total(after) > _total(before)  # the same ruling does change the score


# ------------------------------------------------------------ WebSocket: tokens and rounds


def test_wrong_tokens_get_unauthorized_and_no_welcome(server: str, world: World) -> None:
    genuine = world.tokens["contestant"]
    header, payload, sig = genuine.split(".")
    kid = json.loads(_unb64(header))["kid"]
    forged_role = Signer({kid: b"o" * 32}, kid).issue(
        Claims(role="organizer", sub="admin", exp=2e10))
    claims = json.loads(_unb64(payload))
    claims["role"] = "organizer"
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"
    other_sig = world.tokens["judge"].split(".")[2]
    bad = ["garbage", "a.b", "a.b.c", genuine + "x", f"{header}.{payload}.{other_sig}",
           tampered, forged_role, "令牌.签名.x", "x" * 2048]
    with Client(server) as c:
        for token in bad:
            reply = _send(c, "hello", v=protocol.PROTOCOL_VERSION, token=token)
            assert isinstance(reply, protocol.Error), (token[:20], _describe(reply))
            assert reply.code == "unauthorized" and _chinese(reply.message), token[:20]
        assert not any(isinstance(m, protocol.Welcome) for m in c.received)
        # Still not signed in: anything but hello is refused as before the handshake.
        for type_ in ("ping", "watch", "adjudicate", "ask"):
            reply = _send(c, type_)
            assert isinstance(reply, protocol.Error) and reply.code == "hello_required"


def test_expired_tokens(server: str, settings: Settings, world: World, clock: FakeClock) -> None:
    signer = _signer(settings)
    bound: dict[str, Any] = {"competition_id": world.cid, "round_id": world.rid}
    with Client(server) as c:
        for role in TOKEN_ROLES:
            extra = bound if role in ("contestant", "spectator") else {}
            sub = world.roster[1]["id"] if role == "contestant" else f"{role}-x"
            token = signer.issue(Claims(role=role, sub=sub, exp=clock.now - 1, **extra))
            reply = _send(c, "hello", v=protocol.PROTOCOL_VERSION, token=token)
            assert isinstance(reply, protocol.Error), (role, _describe(reply))
            assert reply.code == "token_expired" and _chinese(reply.message), role
        assert not any(isinstance(m, protocol.Welcome) for m in c.received)
        # The key is the server's: a token signed the same way, not yet expired, works.
        fresh = signer.issue(Claims(role="judge", sub=world.judge_user, exp=clock.now + 60))
        welcome = _send(c, "hello", v=protocol.PROTOCOL_VERSION, token=fresh)
        assert isinstance(welcome, protocol.Welcome) and welcome.role == "judge"


def test_contestant_in_an_ended_round(server: str, world: World) -> None:
    """Both one who joined before the end and one who joins after can connect and see
    the round, but asking, ordering and submitting are refused as not running."""
    org = world.org
    _, rid, roster = make_round(org, people=2)
    early = org.join(roster[0]["join_code"])["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    org.action(rid, "end", reason="提前结束")
    late = org.join(roster[1]["join_code"])["token"]
    for token in (early, late):
        with Client(server) as c:
            welcome = c.hello(token=token)
            assert (welcome.role, welcome.round_id) == ("contestant", rid)
            state: protocol.RoundState = c.expect("round_state")
            assert state.clock.status == "ended"
            for type_ in ("ask", "order", "submit"):
                reply = _send(c, type_)
                assert isinstance(reply, protocol.Error), (type_, _describe(reply))
                assert reply.code == "round_not_running", (type_, _describe(reply))
                assert "结束" in reply.message and reply.message_en
            for type_ in ("adjudicate", "watch"):  # and judges' messages are still forbidden
                assert _is_forbidden(_send(c, type_))


# ------------------------------------------------------------------------- HTTP: the matrix


@dataclass
class Call:
    path: str
    body: Any = None  # JSON
    content: bytes | None = None  # raw


# How each route is called. POST bodies are deliberately incomplete where a route would
# otherwise change something, so an allowed organizer gets a 400 and nothing changes.
_HTTP_CALLS: dict[str, Callable[[World], Call]] = {
    "POST /api/login": lambda w: Call("/api/login", {"username": "admin",
                                                     "password": ADMIN_PASSWORD}),
    "POST /api/join": lambda w: Call("/api/join", {"code": w.used_code}),
    "POST /api/logout": lambda w: Call("/api/logout", {}),
    "POST /api/accounts": lambda w: Call("/api/accounts", {}),
    "GET /api/me": lambda w: Call("/api/me"),
    "GET /api/cases": lambda w: Call("/api/cases"),
    "POST /api/cases/{case}/visibility": lambda w: Call(
        f"/api/cases/{CASE_ID}/visibility", {}),
    "GET /api/competitions": lambda w: Call("/api/competitions"),
    "POST /api/competitions": lambda w: Call("/api/competitions", {}),
    "POST /api/competitions/{cid}/rounds": lambda w: Call(
        f"/api/competitions/{w.cid}/rounds", {}),
    "POST /api/competitions/{cid}/roster": lambda w: Call(
        f"/api/competitions/{w.cid}/roster", content="姓名,学校\n缺列\n".encode()),
    "GET /api/competitions/{cid}/roster": lambda w: Call(f"/api/competitions/{w.cid}/roster"),
    "GET /api/competitions/{cid}/roster.csv": lambda w: Call(
        f"/api/competitions/{w.cid}/roster.csv"),
    "POST /api/contestants/{pid}/reissue": lambda w: Call(
        f"/api/contestants/{w.roster[2]['id']}/reissue"),
    "GET /api/rounds/{rid}": lambda w: Call(f"/api/rounds/{w.rid}"),
    "POST /api/rounds/{rid}/{action}": lambda w: Call(f"/api/rounds/{w.rid}/pause", {}),
    "POST /api/rounds/{rid}/spectator": lambda w: Call(f"/api/rounds/{w.rid}/spectator"),
    "GET /api/rounds/{rid}/review": lambda w: Call(f"/api/rounds/{w.rid}/review"),
    "GET /api/rounds/{rid}/audit": lambda w: Call(f"/api/rounds/{w.rid}/audit"),
    "GET /api/rounds/{rid}/export": lambda w: Call(f"/api/rounds/{w.rid}/export"),
}


def _authorization(world: World, caller: str) -> str | None:
    if caller == "anonymous":
        return None
    if caller == "student":
        return "Bearer "  # a student has no token
    if caller == "forged":
        return "Bearer " + Signer({"k": b"f" * 32}, "k").issue(
            Claims(role="organizer", sub="admin", exp=2e10))
    if caller == "expired":
        return "Bearer " + world.expired
    return "Bearer " + world.tokens[caller]


def _http(base: str, method: str, call: Call, authorization: str | None
          ) -> tuple[int, Any]:
    headers: dict[str, str] = {}
    if authorization is not None:
        headers["authorization"] = authorization
    data = call.content
    if call.body is not None:
        data = json.dumps(call.body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(base + call.path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw


def _expected(who: frozenset[str], caller: str) -> str:
    """'ok' (anything but 401/403), '401' or '403'."""
    if who == ANYONE:
        return "ok"
    if caller in ("anonymous", "student", "forged", "expired"):
        return "401"
    return "ok" if caller in who else "403"


def _throwaway(settings: Settings, world: World, clock: FakeClock, caller: str) -> str:
    """A fresh token of `caller`'s role, for a route that signs its caller out."""
    if caller not in TOKEN_ROLES:
        return _authorization(world, caller) or ""
    bound = {"competition_id": world.cid, "round_id": world.rid}
    extra = bound if caller in ("contestant", "spectator") else {}
    sub = {"contestant": world.roster[0]["id"], "judge": world.judge_user,
           "organizer": "admin"}.get(caller, "screen-x")
    token = _signer(settings).issue(
        Claims(role=caller, sub=sub, exp=clock.now + 600, **extra))  # type: ignore[arg-type]
    return "Bearer " + token


@pytest.mark.parametrize("route", list(HTTP_WHO))
def test_http_matrix(server: str, settings: Settings, world: World, clock: FakeClock,
                     route: str) -> None:
    method = route.split(" ", 1)[0]
    call = _HTTP_CALLS[route](world)
    problems: list[str] = []
    for caller in CALLERS:
        expected = _expected(HTTP_WHO[route], caller)
        authorization = (_throwaway(settings, world, clock, caller)
                         if route == "POST /api/logout" else _authorization(world, caller))
        status, body = _http(server, method, call, authorization)
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message", "") if isinstance(body, dict) else ""
        if expected == "ok":
            good = status not in (401, 403)
        elif expected == "401":
            want = "token_expired" if caller == "expired" else "unauthorized"
            good = status == 401 and code == want and _chinese(message)
        else:
            good = status == 403 and code == "forbidden" and _chinese(message)
        if not good:
            problems.append(f"{route} as {caller}: expected {expected}, got {status} {body!r}")
    assert not problems, "\n".join(problems)
