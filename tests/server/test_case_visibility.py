"""Who may practise a case: contest reservation, draft and contest-only cases, release after
publication, and no answer-key material in practice before the student's own submission.

Over real HTTP and WebSocket against real PostgreSQL and Valkey, in a schema of this
module's own (its rounds reserve cases, which must not touch other modules' practice).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from arena.cases import load_case
from arena.secrecy import answer_terms, find_terms
from server.cli import main
from server.settings import Settings
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    ApiError,
    Client,
    make_round,
    own_schema,
    running_server,
    warm_up,
)

CASES = Path(__file__).resolve().parents[2] / "cases"
CASE = "k4p9wq"  # reserved by a round in these tests
OTHER = "m2x7hd"  # made a draft, then contest-only


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Iterator[Settings]:
    with own_schema(settings, "visibility") as own:
        yield own


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(settings) as url:
        warm_up(url, case_id="r8c3vn")  # not a case these tests reserve
        yield url


def _listed(url: str, token: str = "") -> dict[str, Any]:
    return {c["id"]: c for c in Api(url, token).call("GET", "/api/cases")}


def _practise(url: str, case_id: str, token: str = "") -> Any:
    """Start a practice of `case_id` (as staff with `token`); the reply message."""
    with Client(url) as c:
        if token:
            c.request("hello", v=1, token=token, practice=True)
            c.expect("welcome")
        else:
            c.hello("李同学")
        c.request("start_practice", case_id=case_id)
        return c.until(lambda m: _type(m) in ("practice_started", "error"))


def _type(msg: Any) -> str:
    return str(msg.__struct_config__.tag)


def _visibility(org: Api, case_id: str, visibility: str) -> Any:
    return org.call("POST", f"/api/cases/{case_id}/visibility", {"visibility": visibility})


def _events(settings: Settings, kind: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema}
        )
        try:
            rows = await conn.fetch(
                "SELECT actor, payload::text AS payload FROM events WHERE kind = $1 ORDER BY id",
                kind,
            )
        finally:
            await conn.close()
        return [{"actor": r["actor"], **json.loads(r["payload"])} for r in rows]

    return asyncio.run(run())


def test_a_contest_case_is_hidden_from_students_until_published_and_released(
    server: str, settings: Settings
) -> None:
    org = Api.login(server)
    assert CASE in _listed(server) and _type(_practise(server, CASE)) == "practice_started"

    _visibility(org, CASE, "contest")
    _, rid, roster = make_round(org, people=1, case_id=CASE)

    # Reserved: neither listed nor playable for a student, over HTTP or WebSocket.
    assert CASE not in _listed(server)
    reply = _practise(server, CASE)
    assert _type(reply) == "error" and reply.code == "case_unavailable" and "练习" in reply.message
    # A forged or expired token is no token: the student's list.
    assert CASE not in _listed(server, "not-a-token")
    # Staff still see it, with the round that reserves it, and may open it.
    staff = _listed(server, org.token)[CASE]
    assert staff["reserved_by"] == [rid] and staff["practice_open"] is False
    assert staff["visibility"] == "contest" and staff["set_by"] == "organizer:admin"
    assert _type(_practise(server, CASE, org.token)) == "practice_started"
    # `practice: true` makes nobody but staff a practising student: a contestant stays one.
    contestant = org.join(roster[0]["join_code"])["token"]
    reply = _practise(server, CASE, contestant)
    assert _type(reply) == "error" and reply.code == "forbidden"

    # Releasing it while the round is unpublished is refused.
    with pytest.raises(ApiError) as refused:
        _visibility(org, CASE, "practice")
    assert refused.value.status == 409 and refused.value.code == "case_reserved"

    for action, reason in (("open", ""), ("start", ""), ("end", "测试结束"), ("publish", "")):
        org.action(rid, action, reason)
    # Published, but contest-only until the organizer releases it.
    assert CASE not in _listed(server)
    assert _practise(server, CASE).code == "case_unavailable"
    released = _visibility(org, CASE, "practice")
    assert released["practice_open"] is True and released["reserved_by"] == []
    assert CASE in _listed(server)
    assert _type(_practise(server, CASE)) == "practice_started"

    changes = [e for e in _events(settings, "case_visibility") if e["case_id"] == CASE]
    assert [(e["visibility"], e["actor"]) for e in changes] == [
        ("contest", "organizer:admin"), ("practice", "organizer:admin")]


def test_draft_and_contest_only_cases_are_invisible_to_students(server: str) -> None:
    org = Api.login(server)
    for visibility in ("draft", "contest"):
        _visibility(org, OTHER, visibility)
        assert OTHER not in _listed(server)
        assert _practise(server, OTHER).code == "case_unavailable"
        assert _listed(server, org.token)[OTHER]["visibility"] == visibility
        assert _type(_practise(server, OTHER, org.token)) == "practice_started"
    # A judge is staff too: every case, with its visibility.
    org.call("POST", "/api/accounts", {"username": "judge_vis", "password": "判题密码-123456",
                                       "role": "judge"})
    judge = Api.login(server, "judge_vis", "判题密码-123456")
    assert _listed(server, judge.token)[OTHER]["visibility"] == "contest"
    assert _type(_practise(server, OTHER, judge.token)) == "practice_started"
    _visibility(org, OTHER, "practice")
    assert OTHER in _listed(server)


def test_the_console_sets_visibility_through_the_api(
    server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARENA_URL", server)
    monkeypatch.setenv("ARENA_PASSWORD", ADMIN_PASSWORD)
    assert main(["cases", "visibility", OTHER, "draft"]) == 0
    assert json.loads(capsys.readouterr().out)["visibility"] == "draft"
    assert OTHER not in _listed(server)
    assert main(["cases", "list"]) == 0
    listed = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed[OTHER]["visibility"] == "draft" and listed[OTHER]["practice_open"] is False
    assert main(["cases", "visibility", OTHER, "practice"]) == 0
    assert OTHER in _listed(server)


def test_only_an_organizer_sets_visibility_and_only_to_a_known_value(server: str) -> None:
    org = Api.login(server)
    with pytest.raises(ApiError) as anonymous:
        Api(server).call("POST", f"/api/cases/{OTHER}/visibility", {"visibility": "practice"})
    assert anonymous.value.status == 401
    with pytest.raises(ApiError) as bad:
        _visibility(org, OTHER, "public")
    assert bad.value.status == 400 and bad.value.code == "bad_request"
    with pytest.raises(ApiError) as unknown:
        _visibility(org, "no_such_case", "practice")
    assert unknown.value.status == 404 and unknown.value.code == "case_not_found"


def test_practice_shows_no_answer_key_before_the_students_own_submission(server: str) -> None:
    case = load_case((CASES / "r8c3vn.json").read_bytes())
    terms = answer_terms(case)
    listed = json.dumps(Api(server).call("GET", "/api/cases"), ensure_ascii=False)
    assert not find_terms(listed, terms)
    with Client(server) as c:
        c.hello()
        c.request("start_practice", case_id=case.id)
        started = c.expect("practice_started")
        text, _, _ = c.answer("哪里不舒服？")
        assert text
        shown = json.dumps([msgspec.to_builtins(m) for m in c.received], ensure_ascii=False)
        leaked = find_terms(shown, terms)
        assert not leaked, leaked
        assert started.menu and all(not hasattr(m, "result") for m in started.menu)

        c.request("submit", diagnosis="急性下壁心肌梗死", differentials=["主动脉夹层"])
        scored = c.expect("scored")
    key = scored.key
    assert key is not None and key.diagnosis == case.answer_key.diagnosis.name
    assert key.teaching_points == list(case.answer_key.teaching_points) and key.teaching_points
    assert key.differentials == [d.name for d in case.answer_key.differentials]


def test_a_round_on_a_case_open_to_practice_warns_the_organizer(server: str) -> None:
    # Last in this module: its rounds stay unpublished and reserve both cases.
    org = Api.login(server)
    cid = org.call("POST", "/api/competitions", {"title": "预警测试"})["id"]
    _visibility(org, OTHER, "contest")
    quiet = org.call("POST", f"/api/competitions/{cid}/rounds",
                     {"title": "正式场", "rules": {"case_id": OTHER, "duration_s": 600}})
    assert "warning" not in quiet
    warned = org.call("POST", f"/api/competitions/{cid}/rounds",
                      {"title": "练过的病例", "rules": {"case_id": "r8c3vn", "duration_s": 600}})
    assert "学生可能已练过并看过答案" in warned["warning"]
    assert "r8c3vn" not in _listed(server)  # and from now on it is hidden from practice


def test_a_round_draws_an_unseen_contest_case(server: str) -> None:
    """A drawn case comes only from cases set to contest, of the specialty asked for, and
    never one an earlier round of the competition used; when none is left, the organizer is
    told why in words."""
    org = Api.login(server, "admin", ADMIN_PASSWORD)
    _visibility(org, "m2x7hd", "contest")  # 急诊内科
    _visibility(org, "k4p9wq", "draft")  # 普通外科: not drawable while a draft
    _visibility(org, "r8c3vn", "draft")
    cid = org.call("POST", "/api/competitions", {"title": "抽题赛"})["id"]

    def draw(**filters: str) -> Any:
        body = {"title": "抽题场", "rules": {"case_id": "", "duration_s": 600},
                "draw": filters}
        return org.call("POST", f"/api/competitions/{cid}/rounds", body)

    first = draw()
    assert first["drawn"] and first["case_title"] == load_case(
        (CASES / "m2x7hd.json").read_bytes()).title
    with pytest.raises(ApiError) as used_up:
        draw()  # the only contest case is used by this competition's first round
    assert "已在本赛事的其他场次用过" in str(used_up.value.body)
    with pytest.raises(ApiError) as none:
        draw(specialty="普通外科")
    assert "没有符合条件的比赛病例" in str(none.value.body)
    _visibility(org, "k4p9wq", "contest")
    second = draw(specialty="普通外科", difficulty="medium")
    rounds = {r["id"]: r["case_id"] for c in org.call("GET", "/api/competitions")
              for r in c["rounds"] if c["id"] == cid}
    assert rounds == {first["id"]: "m2x7hd", second["id"]: "k4p9wq"}
    with pytest.raises(ApiError):
        draw(difficulty="impossible")  # no such difficulty: nothing matches
