"""A contest no one can game, attacked the way a medical student or a spectator would.

Each test is an attack that once worked (issue 10's red-team pass): a hidden case's id
confirmed by its error reply; a practice begun before its case was withdrawn handing out
the key; a client address chosen by a header; a signed-out device that kept playing on the
socket it already had; a join code spent by coming before the first round; a failed
service answered with a bare English 500; and /metrics naming the kind of key term the
output guard caught. The server, PostgreSQL, Valkey and the LLM simulator are real.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
import redis
from websockets.exceptions import ConnectionClosed

from server import protocol
from server.settings import Settings
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    Client,
    Sim,
    make_round,
    own_schema,
    running_server,
)

RESERVED, DRAFT = "m2x7hd", "k4p9wq"  # two of cases/; the third stays open to practice


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Iterator[Settings]:
    """A database of its own (rounds left unpublished reserve their case), low sign-in
    limits, and no forwarded-header setting: the default a deployment gets."""
    with own_schema(settings, f"secrecy{uuid.uuid4().hex[:6]}") as own:
        yield msgspec.structs.replace(
            own, embeddings=False, login_limit="3/minute", login_address_limit="4/minute",
        )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(settings) as url:
        yield url


def _post(base: str, path: str, body: object, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _practise(url: str, case_id: str) -> Any:
    with Client(url) as c:
        c.hello("好奇的同学")
        c.request("start_practice", case_id=case_id)
        return c.until(lambda m: isinstance(m, protocol.PracticeStarted | protocol.Error))


# ---------------------------------------------------------------- hidden cases


def test_a_hidden_case_gets_the_same_reply_as_one_that_does_not_exist(server: str) -> None:
    """A student who guesses or is sent a case id (`/#case=...`) learns nothing from the
    reply: a draft, a case reserved by an unpublished round and an id that names no case
    get the same code and the same words (bar the id they asked for)."""
    org = Api.login(server)
    org.call("POST", f"/api/cases/{DRAFT}/visibility", {"visibility": "draft"})
    org.call("POST", f"/api/cases/{RESERVED}/visibility", {"visibility": "contest"})
    make_round(org, people=1, case_id=RESERVED)
    listed = {c["id"] for c in Api(server).call("GET", "/api/cases")}
    assert DRAFT not in listed and RESERVED not in listed

    replies = {}
    for case_id in (DRAFT, RESERVED, "q7w3zt"):  # the last: no such case
        reply = _practise(server, case_id)
        assert isinstance(reply, protocol.Error), reply
        replies[case_id] = (reply.code, reply.message.replace(case_id, "<id>"),
                            reply.message_en.replace(case_id, "<id>"))
    assert len(set(replies.values())) == 1, replies
    code, message, _ = replies["q7w3zt"]
    assert code == "case_unavailable" and "练习" in message


def test_a_case_withdrawn_mid_practice_gives_no_key_to_a_student_already_in_it(
    server: str,
) -> None:
    """A student opens a case while it is open to practice and keeps the tab. The organizer
    then makes it contest-only and builds a round on it. The student's submission must not
    bring back the card and answer key of a case now reserved by an unpublished round."""
    case_id = "r8c3vn"
    org = Api.login(server)
    with Client(server) as c:
        c.hello("早到的同学")
        c.request("start_practice", case_id=case_id)
        c.expect("practice_started")
        org.call("POST", f"/api/cases/{case_id}/visibility", {"visibility": "contest"})
        make_round(org, people=1, case_id=case_id)
        rid = c.request("submit", diagnosis="急性下壁ST段抬高型心肌梗死", differentials=[],
                        reasoning="")
        reply = c.until(lambda m: isinstance(m, protocol.Scored | protocol.Error))
        assert isinstance(reply, protocol.Error), "the key went out with the score"
        assert reply.re == rid and reply.code == "case_unavailable"


# ---------------------------------------------------------------- client addresses


def test_a_client_cannot_choose_its_address_with_forwarded_headers(settings: Settings) -> None:
    """Sign-in failures are counted per client address. With no proxy named in the
    settings, X-Forwarded-For and X-Real-IP are a client's own words: a new address and a
    new username per guess must still run into the address's limit."""
    # Counters of its own: the lock-out of loopback must not reach the other tests.
    own = msgspec.structs.replace(settings, redis_prefix=f"{settings.redis_prefix}xff:")
    statuses = []
    with running_server(own) as url:
        for i in range(8):
            fake = f"10.{i}.{i}.{i}"
            statuses.append(_post(
                url, "/api/login", {"username": f"guess{i}", "password": "not-the-password"},
                {"x-forwarded-for": fake, "x-real-ip": fake, "forwarded": f"for={fake}"}))
    codes = [(status, body["code"]) for status, body in statuses]
    assert codes[:4] == [(401, "unauthorized")] * 4, codes
    assert codes[4:] == [(429, "rate_limited")] * 4, codes


# ---------------------------------------------------------------- signed out means out


def _running_round(org: Api) -> tuple[str, list[dict[str, Any]]]:
    _, rid, roster = make_round(org, people=1, case_id="r8c3vn")
    org.action(rid, "open")
    org.action(rid, "start")
    return rid, roster


def _signed_out(c: Client) -> None:
    """The connection is told its sign-in ended, then closed; nothing else it sends runs."""
    err = c.until(lambda m: isinstance(m, protocol.Error))
    assert err.code == "unauthorized" and "重新登录" in err.message, err
    with pytest.raises(ConnectionClosed):  # at once, or after refusing to answer this
        rid = c.request("ask", text="哪里不舒服？")
        while True:
            msg = c.recv(timeout=5)
            assert getattr(msg, "re", None) != rid, f"a signed-out socket was answered: {msg}"


def test_a_reissued_join_code_ends_the_old_devices_open_connection(server: str) -> None:
    """The organizer reissues a code to take a seat back from a lost or shared phone. The
    phone's token is refused from then on; the socket it already had must not go on
    asking, ordering and submitting in the contestant's name."""
    org = Api.login(server)
    _, roster = _running_round(org)
    person = roster[0]
    old = org.join(person["join_code"])["token"]
    with Client(server) as phone, Client(server) as other:
        assert phone.hello(token=old).role == "contestant"
        phone.expect("play_state")
        assert other.hello(token=org.token).role == "organizer"  # someone else's session
        new_code = org.call("POST", f"/api/contestants/{person['id']}/reissue")["join_code"]
        _signed_out(phone)
        other.request("ping", client_time=1.0)
        other.expect("pong")
    # The seat's new device plays on.
    with Client(server) as device:
        assert device.hello(token=org.join(new_code)["token"]).role == "contestant"
        device.expect("play_state")
        device.request("ask", text="哪里不舒服？")
        device.expect("answer_start")


def test_logging_out_ends_that_tokens_open_connections(server: str) -> None:
    """A judge signs out on the shared computer in the exam hall: the live board (with
    scores) that tab was following must stop, while the judge's other session stays."""
    org = Api.login(server)
    rid, _ = _running_round(org)
    org.call("POST", "/api/accounts", {"username": "judge_out", "password": "判题密码-123456",
                                       "role": "judge"})
    hall, office = (Api.login(server, "judge_out", "判题密码-123456") for _ in range(2))
    with Client(server) as tab, Client(server) as other:
        assert tab.hello(token=hall.token).role == "judge"
        assert other.hello(token=office.token).role == "judge"
        tab.request("watch", round_id=rid)
        tab.expect("board")
        hall.call("POST", "/api/logout", {})
        _signed_out(tab)
        other.request("watch", round_id=rid)
        other.expect("board")


def test_a_join_code_used_before_any_round_exists_is_not_spent(server: str) -> None:
    """A contestant opens the link from the invitation before the organizer has created a
    round: told to come back later, and the code must still work then (it used to be
    marked used with no token given, leaving the seat to an organizer's reissue)."""
    org = Api.login(server)
    cid = org.call("POST", "/api/competitions", {"title": "尚无场次的赛事"})["id"]
    org.call("POST", f"/api/competitions/{cid}/roster",
             content="姓名,学校,队伍,邮箱\n早来的选手,医学院,一队,early@example.com".encode())
    code = org.call("GET", f"/api/competitions/{cid}/roster")[0]["join_code"]
    status, body = _post(server, "/api/join", {"code": code}, {})
    assert status == 409 and body["code"] == "round_not_running", (status, body)
    assert "稍后" in body["message"]
    org.call("POST", f"/api/competitions/{cid}/rounds",
             {"title": "第一场", "rules": {"case_id": "r8c3vn", "duration_s": 600}})
    status, body = _post(server, "/api/join", {"code": code}, {})
    assert status == 200 and body["role"] == "contestant", (status, body)


# ---------------------------------------------------------------- a failed service


def test_sign_in_with_the_limiter_unreachable_is_refused_in_chinese(settings: Settings) -> None:
    """Redis counts the sign-in limits. When it cannot (here: the server's Redis user loses
    the right to run scripts, as `limits` does), sign-in fails closed, since an uncounted
    guess is a free one, and says so in Chinese with a 503, not a bare English 500."""
    r = redis.Redis.from_url(settings.redis_url)
    user = f"arena_t{uuid.uuid4().hex[:6]}"
    r.execute_command("ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all")
    parts = urlsplit(settings.redis_url)
    url = urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))
    own = msgspec.structs.replace(settings, redis_url=url,
                                  redis_prefix=f"{settings.redis_prefix}down:")
    try:
        with running_server(own) as base:
            body = {"username": "admin", "password": ADMIN_PASSWORD}
            assert _post(base, "/api/login", body, {})[0] == 200
            r.execute_command("ACL", "SETUSER", user, "-@scripting")
            status, reply = _post(base, "/api/login", body, {})
            assert status == 503 and reply["code"] == "unavailable", (status, reply)
            assert "服务暂时不可用" in reply["message"]
    finally:
        r.execute_command("ACL", "DELUSER", user)
        r.close()


# ---------------------------------------------------------------- public metrics


def test_public_metrics_do_not_say_which_key_term_the_guard_caught(
    llm_server: str, sim: Sim,
) -> None:
    """/metrics answers anyone. A contestant who names a guess to the model and reads
    the guard's counter by kind would learn whether the guess is the diagnosis or only a
    differential; the count of cut answers may be public, the kind of term may not."""
    sim.configure(reply="医生，我是不是下壁心梗了？", itl_ms=5)
    org = Api.login(llm_server)
    with Client(llm_server) as c:
        c.request("hello", v=protocol.PROTOCOL_VERSION, token=org.token, practice=True)
        c.expect("welcome")
        c.request("start_practice", case_id="r8c3vn")
        c.expect("practice_started")
        c.answer("我是不是下壁心梗？")
    text = Api(llm_server).call("GET", "/metrics")
    guard = [line for line in text.splitlines()
             if line.startswith("arena_llm_guard_hits_total")]
    assert guard and all("{" not in line for line in guard), guard
    assert float(guard[0].split()[-1]) >= 1
