"""The case editor's API over real HTTP, PostgreSQL and Valkey: create, check, save,
history, diff, try the patient, publish; organizers only; problems in Chinese.

A schema and a cases folder of this module's own: publishing writes into the folder
and sets visibilities, which other modules must not see.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from arena.cases import check_case
from server.services.authoring import Change, diff, explain
from server.services.library import check_folder
from server.settings import Settings
from server.wire import authoring
from tests.support import Api, ApiError, make_round, own_schema, running_server

CASES = Path(__file__).resolve().parents[2] / "cases"
SHIPPED = "k4p9wq"


@pytest.fixture(scope="module")
def settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Settings]:
    folder = tmp_path_factory.mktemp("authoring-cases")
    for path in CASES.glob("*.json"):
        shutil.copy(path, folder / path.name)
    with own_schema(settings, "authoring") as own:
        # BM25 without e5: the preview uses the library's matching, and loading the model
        # is not what these tests are about.
        yield msgspec.structs.replace(own, cases_dir=folder, embeddings=False)


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def org(server: str) -> Api:
    return Api.login(server)


def _shipped() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CASES / f"{SHIPPED}.json").read_text(encoding="utf-8"))
    return doc


def _refused(call: Any, status: int) -> Any:
    with pytest.raises(ApiError) as err:
        call()
    assert err.value.status == status, err.value.body
    return err.value.body


def _cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_only_organizers_use_the_editor(server: str, org: Api) -> None:
    org.call("POST", "/api/accounts", {"username": "judge_ed", "password": "judge-pass-123",
                                       "role": "judge"})
    judge = Api.login(server, "judge_ed", "judge-pass-123")
    draft = {"content": _shipped()}
    calls = [
        ("GET", "/api/authoring/cases", None), ("POST", "/api/authoring/cases", {}),
        ("GET", f"/api/authoring/cases/{SHIPPED}", None),
        ("POST", "/api/authoring/check", draft),
        ("POST", f"/api/authoring/cases/{SHIPPED}/versions", draft),
        ("POST", "/api/authoring/preview", {**draft, "question": "哪里不舒服？"}),
        ("POST", f"/api/authoring/cases/{SHIPPED}/publish",
         {"version": 1, "visibility": "practice"}),
        ("GET", "/api/authoring/meta", None),
        ("POST", "/api/authoring/draft", {"source": "55 岁男性，胸痛"}),
        ("GET", f"/api/authoring/cases/{SHIPPED}/versions", None),
        ("GET", f"/api/authoring/cases/{SHIPPED}/versions/1", None),
        ("GET", f"/api/authoring/cases/{SHIPPED}/diff?a=1&b=1", None),
    ]
    # Every route of the editor is in the list above.
    assert {(m, re.sub(r"\?.*", "", p).replace(SHIPPED, "{case}").replace("/1", "/{n}"))
            for m, p, _ in calls} == {(m, r.path) for r in authoring.ROUTES
                                      for m in r.methods or () if m != "HEAD"}
    for method, path, body in calls:
        anyone = _refused(lambda m=method, p=path, b=body: Api(server).call(m, p, b), 401)
        assert anyone["code"] == "unauthorized"
        refused = _refused(lambda m=method, p=path, b=body: judge.call(m, p, b), 403)
        assert refused["code"] == "forbidden" and "评委" in refused["message"], path
    # Nothing was saved by the refused calls.
    assert org.call("GET", f"/api/authoring/cases/{SHIPPED}")["history"] == []


def test_a_blank_case_lists_what_it_lacks_in_chinese(org: Api, settings: Settings) -> None:
    made = org.call("POST", "/api/authoring/cases", {})
    cid = made["id"]
    assert made["version"]["version"] == 1 and made["content"]["id"] == cid
    assert cid not in {p.stem for p in settings.cases_dir.glob("*.json")}  # not published
    paths = {p["path"]: p for p in made["problems"]}
    for path in ("$.answer_key.diagnosis.name", "$.answer_key.checklist", "$.tests",
                 "$.answer_key.differentials"):
        assert path in paths, sorted(paths)
        assert _cjk(paths[path]["message"]) and "有问题" not in paths[path]["message"]
    listed = {c["id"]: c for c in org.call("GET", "/api/authoring/cases")}
    assert listed[cid]["visibility"] == "draft" and listed[cid]["published"] is False
    assert listed[cid]["problems"] == len(made["problems"])
    assert listed[SHIPPED]["published"] is True and listed[SHIPPED]["version"] == 0


def test_checking_names_each_field_in_chinese(org: Api) -> None:
    doc = _shipped()
    doc["opening"]["vitals"]["heart_rate"] = 400
    doc["demographics"]["age"] = "四十"
    doc["facts"][0]["answer"] = " "
    doc["title"] = doc["answer_key"]["diagnosis"]["name"] + "一例"
    problems = {p["path"]: p["message"] for p in
                org.call("POST", "/api/authoring/check", {"content": doc})["problems"]}
    # The wrong type stops decoding, so only it is reported until it is fixed.
    assert problems == {"$.demographics.age": "应填整数，现在是文字"}
    doc["demographics"]["age"] = 40
    problems = {p["path"]: p["message"] for p in
                org.call("POST", "/api/authoring/check", {"content": doc})["problems"]}
    assert problems["$.opening.vitals.heart_rate"] == "400 超出合理范围（20–250）"
    assert problems["$.facts[0].answer"] == "不能为空"
    assert "答案关键词" in problems["$.title"]  # the secrecy lint, beside the field
    del doc["persona"]
    problems = {p["path"]: p["message"] for p in
                org.call("POST", "/api/authoring/check", {"content": doc})["problems"]}
    assert problems == {"$.persona": "缺少必填内容"}
    # The shipped case is clean.
    assert org.call("POST", "/api/authoring/check", {"content": _shipped()})["problems"] == []


def test_bad_requests_get_chinese_errors(server: str, org: Api) -> None:
    def raw(path: str, content: bytes) -> Any:
        return _refused(lambda: Api(server, org.token).call(
            "POST", path, content=content), 400)

    for body in (raw("/api/authoring/check", b"{not json"),
                 raw("/api/authoring/check", b'{"content": 3}'),
                 raw("/api/authoring/check", b'{"content": {}, "extra": 1}')):
        assert body["code"] == "bad_request" and _cjk(body["message"]), body
    other = _shipped()
    other["id"] = "zz9zz9"
    body = _refused(lambda: org.call("POST", f"/api/authoring/cases/{SHIPPED}/versions",
                                     {"content": other}), 400)
    assert SHIPPED in body["message"] and "编号" in body["message"]
    body = _refused(lambda: org.call("GET", f"/api/authoring/cases/{SHIPPED}/versions/0"), 400)
    assert "版本号" in body["message"]
    body = _refused(lambda: org.call("GET", "/api/authoring/cases/nosuch"), 404)
    assert body["code"] == "case_not_found" and "病例" in body["message"]
    body = _refused(lambda: org.call("POST", "/api/authoring/preview",
                                     {"content": {"id": "x"}, "question": "哪里不舒服？"}), 400)
    assert "无法试问" in body["message"]


def test_versions_history_and_diff(org: Api, settings: Settings) -> None:
    doc = _shipped()
    statement = doc["opening"]["statement"]
    doc["opening"]["statement"] = "医生，我肚子疼得厉害。"
    added = {"id": "f_new_ros", "category": "ros", "topic": "咳嗽", "intent": "associated",
             "subject": "咳嗽", "answer": "不咳嗽。", "negative": True}
    doc["facts"].insert(0, added)
    saved = org.call("POST", f"/api/authoring/cases/{SHIPPED}/versions",
                     {"content": doc, "note": "改开场白"})
    assert saved["version"]["version"] == 2 and saved["problems"] == []
    history = org.call("GET", f"/api/authoring/cases/{SHIPPED}/versions")
    # The first edit of a shipped case keeps its file as version 1.
    assert [(v["version"], v["note"]) for v in history] == [(1, "病例库中的原文件"),
                                                            (2, "改开场白")]
    case, _ = check_case((settings.cases_dir / f"{SHIPPED}.json").read_bytes())
    assert history[0]["content_hash"] == hashlib.sha256(msgspec.json.encode(case)).hexdigest()
    assert history[0]["content_hash"] != history[1]["content_hash"]
    assert all(len(v["content_hash"]) == 64 for v in history)
    changes = org.call("GET", f"/api/authoring/cases/{SHIPPED}/diff?a=1&b=2")["changes"]
    by_path = {c["path"]: c for c in changes}
    assert by_path["$.opening.statement"] == {
        "path": "$.opening.statement", "old": statement, "new": "医生，我肚子疼得厉害。",
        "kind": "changed"}
    # A fact inserted on top is one addition, not every fact shifted by one.
    assert by_path["$.facts[0]"]["kind"] == "added" and len(changes) == 2, changes
    assert org.call("GET", f"/api/authoring/cases/{SHIPPED}/diff?a=2&b=2")["changes"] == []
    assert org.call("GET", f"/api/authoring/cases/{SHIPPED}")["version"]["version"] == 2
    # The file is untouched until the case is published.
    assert "医生，我肚子疼得厉害" not in (settings.cases_dir / f"{SHIPPED}.json").read_text(
        encoding="utf-8")


def test_diff_pairs_items_by_id() -> None:
    old = {"facts": [{"id": "a", "answer": "1"}, {"id": "b", "answer": "2"}], "n": 1}
    new = {"facts": [{"id": "b", "answer": "3"}], "n": 1.0, "m": [1]}  # 1 == 1.0 in JSON
    assert diff(old, new) == [
        Change(path="$.facts[0].answer", old="2", new="3"),
        Change(path="$.facts[0]", old={"id": "a", "answer": "1"}, kind="removed"),
        Change(path="$.m", new=[1], kind="added"),
    ]
    assert diff({"x": True}, {"x": 1}) == [Change(path="$.x", old=True, new=1)]
    assert explain("$.x: something new").message == "有问题：something new"


def test_trying_the_draft_patient(org: Api) -> None:
    doc = _shipped()
    doc["facts"] = [f for f in doc["facts"] if f["category"] != "allergies"]
    doc["facts"].append({"id": "f_allergy_new", "category": "allergies", "topic": "过敏史",
                         "intent": "allergies", "answer": "我对青霉素过敏，打过一次起了一身疹子。"})
    reply = org.call("POST", "/api/authoring/preview",
                     {"content": doc, "question": "你对什么药过敏吗？"})
    assert "青霉素" in reply["text"] and reply["kind"] == "facts"
    assert reply["facts"] == ["过敏史"]
    refusal = org.call("POST", "/api/authoring/preview",
                       {"content": doc, "question": "你觉得你的诊断是什么？"})
    assert refusal["kind"] == "refusal"
    follow = org.call("POST", "/api/authoring/preview", {
        "content": doc, "question": "还有呢？",
        "history": [{"question": "你对什么药过敏吗？", "answer": reply["text"]}]})
    assert follow["text"] and "青霉素" not in follow["text"]


def _events(settings: Settings, kind: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema})
        try:
            rows = await conn.fetch("SELECT actor, payload::text AS p FROM events"
                                    " WHERE kind = $1 ORDER BY id", kind)
        finally:
            await conn.close()
        return [{"actor": r["actor"], **json.loads(r["p"])} for r in rows]

    return asyncio.run(run())


def test_publish_refuses_problems_then_loads_and_shows_the_case(
    server: str, org: Api, settings: Settings
) -> None:
    cid = org.call("POST", "/api/authoring/cases", {})["id"]
    refused = _refused(lambda: org.call("POST", f"/api/authoring/cases/{cid}/publish",
                                        {"version": 1, "visibility": "contest"}), 400)
    assert "问题" in refused["message"] and refused["problems"]
    assert all(_cjk(p["message"]) for p in refused["problems"])
    assert not (settings.cases_dir / f"{cid}.json").exists()

    doc = {**_shipped(), "id": cid, "title": "青年女性腹痛（新）"}
    v = org.call("POST", f"/api/authoring/cases/{cid}/versions", {"content": doc})["version"]
    published = org.call("POST", f"/api/authoring/cases/{cid}/publish",
                         {"version": v["version"], "visibility": "contest"})
    assert published["visibility"] == "contest" and published["practice_open"] is False
    assert published["content_hash"] == v["content_hash"]
    # Written whole into the folder, and the folder still checks clean.
    assert check_folder(settings.cases_dir)[settings.cases_dir / f"{cid}.json"] == []
    assert not list(settings.cases_dir.glob(".*.tmp"))
    # The running server knows it: staff see it, students do not (contest only).
    staff = {c["id"]: c for c in org.call("GET", "/api/cases")}
    assert staff[cid]["visibility"] == "contest" and staff[cid]["title"] == "青年女性腹痛（新）"
    assert cid not in {c["id"] for c in Api(server).call("GET", "/api/cases")}
    org.call("POST", f"/api/authoring/cases/{cid}/publish",
             {"version": v["version"], "visibility": "practice"})
    assert cid in {c["id"] for c in Api(server).call("GET", "/api/cases")}
    listed = {c["id"]: c for c in org.call("GET", "/api/authoring/cases")}[cid]
    assert listed["published_version"] == v["version"] and listed["visibility"] == "practice"
    assert listed["live_hash"] == v["content_hash"]
    events = [e for e in _events(settings, "case_published") if e["case_id"] == cid]
    assert [e["visibility"] for e in events] == ["contest", "practice"]
    assert events[0]["actor"] == "organizer:admin" and events[0]["content_hash"] == \
        v["content_hash"]


def test_versions_are_append_only(settings: Settings, org: Api) -> None:
    org.call("POST", "/api/authoring/cases", {})  # a row for the triggers to refuse

    async def run() -> None:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema})
        try:
            for sql in ("UPDATE case_versions SET note = 'x'", "DELETE FROM case_versions"):
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def test_a_case_a_round_uses_keeps_its_content_until_results_are_published(
    org: Api, settings: Settings
) -> None:
    make_round(org, people=1, case_id=SHIPPED)  # unpublished: it reserves the case
    before = (settings.cases_dir / f"{SHIPPED}.json").read_bytes()
    doc = _shipped()
    doc["opening"]["appearance"] = "面色苍白，蜷卧。"
    changed = org.call("POST", f"/api/authoring/cases/{SHIPPED}/versions",
                       {"content": doc})["version"]["version"]
    refused = _refused(lambda: org.call("POST", f"/api/authoring/cases/{SHIPPED}/publish",
                                        {"version": changed, "visibility": "contest"}), 409)
    assert refused["code"] == "case_reserved" and "成绩" in refused["message"]
    assert (settings.cases_dir / f"{SHIPPED}.json").read_bytes() == before
    # The very content the round plays may be published again (as contest-only), not opened.
    assert org.call("POST", f"/api/authoring/cases/{SHIPPED}/publish",
                    {"version": 1, "visibility": "contest"})["visibility"] == "contest"
    refused = _refused(lambda: org.call("POST", f"/api/authoring/cases/{SHIPPED}/publish",
                                        {"version": 1, "visibility": "practice"}), 409)
    assert refused["code"] == "case_reserved"
