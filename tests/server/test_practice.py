"""A practice round over a real WebSocket, against real PostgreSQL and Redis/Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import msgspec
import pytest
import redis

from server import protocol
from server.settings import Settings
from tests.support import Client, own_schema, running_server, warm_up


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Iterator[Settings]:
    """A database of this module's own: a round another module leaves unpublished reserves
    its case, and a reserved case is not open to practice."""
    with own_schema(settings, "practice") as own:
        yield own


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[str]:
    with running_server(settings) as url:
        warm_up(url)
        yield url


def test_a_whole_practice_round(live_server: str, settings: Settings, fetch_events) -> None:  # type: ignore[no-untyped-def]
    with Client(live_server) as c:
        welcome = c.hello("李同学")
        assert welcome.engine == "scripted" and welcome.v == protocol.PROTOCOL_VERSION
        c.request("start_practice", case_id="r8c3vn")
        started: protocol.PracticeStarted = c.expect("practice_started")
        assert started.statement and started.vitals.heart_rate > 0
        assert {m.kind for m in started.menu} == {"exam", "test"}

        text, end, deltas = c.answer("哪里不舒服？")
        assert end.status == "ok" and text and deltas > 1  # streamed, not one lump
        assert end.tokens_out > 0
        _, end2, _ = c.answer("你今年多大岁数了，家里养猫吗")
        assert end2.status == "ok"

        test_id = next(m.id for m in started.menu if m.kind == "test")
        rid = c.request("order", item_id=test_id)
        result: protocol.OrderResult = c.expect("order_result")
        assert result.re == rid and result.result

        sid = c.request("submit", diagnosis="急性下壁ST段抬高型心肌梗死",
                        differentials=["主动脉夹层", "肺栓塞"], reasoning="胸痛伴ST段抬高")
        scored: protocol.Scored = c.expect("scored")
        assert scored.re == sid and scored.card.verdict == "correct"
        assert scored.card.total >= 40 and scored.rank >= 1 and scored.of >= 1
        assert [s.key for s in scored.card.sections] == [
            "diagnosis", "differentials", "checklist", "red_flags", "tests"]

        seqs = [m.seq for m in c.received]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps, in order
        assert all(m.t > 1.6e12 for m in c.received)  # server time in ms

    logged = fetch_events(started.attempt_id)
    # Questions are matched for scoring in the background, each once, after it was asked
    # and before the submission was scored.
    kinds = [e["kind"] for e in logged]
    matched = [e["payload"]["turn"] for e in logged if e["kind"] == "matched"]
    assert matched == [1, 2] and kinds.index("matched") > kinds.index("asked")
    assert max(i for i, k in enumerate(kinds) if k == "matched") < kinds.index("submitted")
    events = [e for e in logged if e["kind"] != "matched"]
    kinds = [e["kind"] for e in events]
    assert kinds == ["practice_started", "asked", "answered", "asked", "answered", "ordered",
                     "submitted", "scored"]
    answered = events[2]["payload"]
    assert answered["status"] == "ok" and answered["text"] == text
    assert answered["tokens_out"] > 0 and answered["duration_ms"] >= 0
    assert events[6]["request_id"] == sid
    versions = events[7]["payload"]["versions"]  # what produced the score (docs/audit.md)
    assert versions["engine"] == "scripted" and len(versions["case_hash"]) == 64
    assert {"rules", "matcher", "model", "prompt"} <= versions.keys()

    r = redis.Redis.from_url(settings.redis_url)
    try:
        board = r.zrevrange(f"{settings.redis_prefix}board:practice:r8c3vn", 0, -1)
        assert started.attempt_id.encode() in board
        progress = r.hget(f"{settings.redis_prefix}round:{started.round_id}:progress",
                          started.attempt_id)
        assert progress is not None and b'"submitted":true' in progress
    finally:
        r.close()
    export = Path(settings.data_dir) / "objects" / "attempts" / f"{started.attempt_id}.json"
    assert b'"scored"' in export.read_bytes()


def _still_alive(c: Client) -> None:
    rid = c.request("ping", client_time=1.0)
    pong = c.expect("pong")
    assert pong.re == rid


def test_bad_input_gets_clear_errors_and_the_connection_stays(live_server: str) -> None:
    with Client(live_server) as c:
        c.request("ask", text="你好")
        err = c.expect("error")
        assert err.code == "hello_required" and "hello" in err.message
        c.hello()

        cases = [
            ("{not json", "bad_json"),
            ('{"type": "dance", "id": "x1"}', "unknown_type"),
            ('{"type": "ask", "id": "x2"}', "bad_message"),
            ('{"type": "ask", "id": "x3", "text": "hi", "extra": 1}', "bad_message"),
            ('{"type": "ask", "id": "x4", "text": "' + "痛" * 12000 + '"}', "frame_too_large"),
        ]
        for frame, code in cases:
            c.send_raw(frame)
            err = c.expect("error")
            assert err.code == code, frame[:40]
            assert err.message and err.message_en
            _still_alive(c)

        c.request("ask", text="哪里不舒服？")
        assert c.expect("error").code == "round_not_running"
        c.request("start_practice", case_id="no_such_case")
        assert c.expect("error").code == "case_unavailable"  # as for a hidden case

        c.request("start_practice", case_id="k4p9wq")
        c.expect("practice_started")
        c.request("order", item_id="mri_of_the_moon")
        err = c.expect("error")
        assert err.code == "unknown_order" and err.message == "没有这项检查。"
        c.request("ask", text="   ")
        assert c.expect("error").code == "bad_request"

        sid = c.request("submit", diagnosis="急性阑尾炎", differentials=["异位妊娠"])
        first = c.expect("scored")
        c.request("submit", id=sid, diagnosis="急性阑尾炎")  # a retry: applied once
        again = c.expect("scored")
        assert again.re == sid and again.card == first.card and again.rank == first.rank
        c.request("submit", diagnosis="胃肠炎")  # a new submission: refused
        err = c.expect("error")
        assert err.code == "already_submitted" and "重复提交" in err.message
        c.request("ask", text="还痛吗")
        assert c.expect("error").code == "round_not_running"
        _still_alive(c)


def test_the_largest_valid_submission_fits_in_a_frame(live_server: str) -> None:
    with Client(live_server) as c:
        c.hello()
        c.request("start_practice", case_id="m2x7hd")
        c.expect("practice_started")
        c.request("submit", diagnosis="酮" * 200, differentials=["酸" * 200] * 10,
                  reasoning="理" * 4000)
        # Scoring does not read a 200-character "diagnosis": a judge would have to.
        assert c.expect("scored").card.verdict == "needs_judge"


def test_version_mismatch_is_refused(live_server: str) -> None:
    with Client(live_server) as c:
        c.request("hello", v=99)
        err = c.expect("error")
        assert err.code == "bad_version"
        c.hello()
        _still_alive(c)


def test_retried_question_is_applied_once(live_server: str, fetch_events) -> None:  # type: ignore[no-untyped-def]
    with Client(live_server) as c:
        c.hello()
        c.request("start_practice", case_id="m2x7hd")
        started = c.expect("practice_started")
        c.request("ask", id="q-1", text="哪里不舒服？")
        c.expect("answer_end")
        c.request("ask", id="q-1", text="哪里不舒服？")
        err = c.expect("error")
        assert err.re == "q-1" and err.code == "duplicate_request"
        _still_alive(c)
    kinds = [e["kind"] for e in fetch_events(started.attempt_id)]
    assert kinds.count("asked") == 1


def test_health_readiness_metrics_and_cases(live_server: str) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(base_url=live_server) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            async with asyncio.timeout(60):  # the matching process may still be loading
                while (resp := await http.get("/readyz")).status_code == 503:
                    assert "loading" in resp.json()["matching"]
                    await asyncio.sleep(0.05)
            assert resp.json() == {"postgres": "ok", "redis": "ok", "llm": "ok",
                                   "matching": "ok", "engine": "scripted", "ready": True}
            metrics = (await http.get("/metrics")).text
            assert "arena_ws_connections" in metrics and "arena_llm_ttft_seconds" in metrics
            cards = (await http.get("/api/cases")).json()
            assert {c["id"] for c in cards} >= {"r8c3vn", "k4p9wq", "m2x7hd"}
            assert all("answer_key" not in c and c["chief_complaint"] for c in cards)
            page = await http.get("/")
            assert page.status_code == 200 and 'lang="zh-CN"' in page.text

    asyncio.run(run())


def test_a_submission_during_an_answer_counts_that_question(
    settings: Settings, fetch_events  # type: ignore[no-untyped-def]
) -> None:
    """A question is matched for scoring once its answer is over, not while it starts
    (server/sessions/journal.py); a submission made while it still streams must not be
    scored without it."""
    slow = msgspec.structs.replace(settings, scripted_chunk_ms=400.0)
    with running_server(slow) as url, Client(url) as c:
        c.hello("赵同学")
        c.request("start_practice", case_id="r8c3vn")
        started: protocol.PracticeStarted = c.expect("practice_started")
        c.request("ask", text="哪里不舒服？")
        c.expect("answer_start")
        c.expect("answer_delta")
        sid = c.request("submit", diagnosis="急性心肌梗死")
        scored: protocol.Scored = c.until(
            lambda m: isinstance(m, protocol.Scored) and m.re == sid, timeout=60)
        assert not any(isinstance(m, protocol.AnswerEnd) for m in c.received), \
            "the answer ended before the submission: nothing was shown"
        assert scored.card.total >= 0
    kinds = [(e["kind"], e["payload"].get("turn")) for e in fetch_events(started.attempt_id)]
    assert kinds.index(("matched", 1)) < kinds.index(("submitted", None)), kinds
