"""A timed round through the real server: organizer, two contestants, a judge, a screen.

Server time is a FakeClock moved by the test, so a 10-minute round takes seconds;
everything else (PostgreSQL, Redis, WebSockets, HTTP) is real.
"""

from __future__ import annotations

from typing import Any

import pytest

from server import protocol
from tests.support import Api, ApiError, Client, FakeClock, make_round


def _state(c: Client, check: Any = lambda m: True, timeout: float = 10) -> protocol.RoundState:
    msg: protocol.RoundState = c.until(
        lambda m: isinstance(m, protocol.RoundState) and check(m), timeout
    )
    return msg


def _board(c: Client, check: Any, timeout: float = 10) -> protocol.BoardUpdate:
    msg: protocol.BoardUpdate = c.until(
        lambda m: isinstance(m, protocol.BoardUpdate) and check(m), timeout
    )
    return msg


def _error(c: Client, rid: str) -> protocol.Error:
    msg: protocol.Error = c.until(lambda m: isinstance(m, protocol.Error) and m.re == rid)
    return msg


def test_join_codes(server: str) -> None:
    org = Api.login(server)
    _, _, roster = make_round(org, people=1)
    code = roster[0]["join_code"]
    joined = org.join(code)
    assert joined["name"] == "选手1"
    with pytest.raises(ApiError) as used:
        org.join(code)
    assert used.value.status == 409 and used.value.code == "join_code_used"
    assert "已被使用" in used.value.body["message"]
    with pytest.raises(ApiError) as wrong:
        org.join("ZZZZ-ZZZZ")
    assert wrong.value.status == 403 and wrong.value.code == "join_code_invalid"
    # The organizer issues a new code; the old one stops working, the new one works once.
    new = org.call("POST", f"/api/contestants/{roster[0]['id']}/reissue")["join_code"]
    assert new != code
    assert org.join(new)["name"] == "选手1"


def test_a_whole_round(server: str, clock: FakeClock) -> None:
    org = Api.login(server)
    _, rid, roster = make_round(org, people=3, countdown_s=10, freeze_s=120)
    tokens = [org.join(p["join_code"])["token"] for p in roster]
    with Client(server) as a, Client(server) as b, Client(server) as c, \
            Client(server) as judge:
        wa = a.hello(token=tokens[0])
        assert (wa.role, wa.round_id) == ("contestant", rid)
        assert _state(a).clock.status == "draft"
        b.hello(token=tokens[1])
        c.hello(token=tokens[2])
        judge.hello(token=org.token)
        judge.request("watch", round_id=rid)
        _state(judge)

        # Nothing can be asked before the round runs.
        rid_ask = a.request("ask", text="哪里不舒服？")
        assert _error(a, rid_ask).code == "round_not_running"

        org.action(rid, "open")
        assert _state(a, lambda m: m.change == "lobby_opened").clock.status == "lobby"
        org.action(rid, "start")
        started = _state(a, lambda m: m.change == "round_started")
        assert started.clock.phase == "countdown"
        assert started.clock.starts_at == pytest.approx(clock.now + 10)
        ask = a.request("ask", text="哪里不舒服？")
        assert "倒计时" in _error(a, ask).message

        clock.advance(10)
        play: protocol.PlayState = a.expect("play_state")
        assert play.statement and play.transcript == [] and play.submissions_left == 1
        b.expect("play_state")
        text, end, _ = a.answer("胸口痛多久了？")
        assert end.status == "ok" and text
        a.request("order", item_id=play.menu[0].id)
        a.expect("order_result")

        # The judge's live board shows A's progress, coalesced into whole boards.
        row = _board(judge, lambda m: any(r.questions == 1 for r in m.board.rows)).board.rows
        assert {r.name for r in row} == {"选手1", "选手2", "选手3"}

        # Pause stops the clock for everyone; actions are refused with a clear reason.
        clock.advance(60)
        with pytest.raises(ApiError) as no_reason:
            org.action(rid, "pause")
        assert no_reason.value.status == 400
        pause = {"request_id": "pause-1", "reason": "网络故障"}
        org.call("POST", f"/api/rounds/{rid}/pause", pause)
        paused = _state(a, lambda m: m.change == "round_paused")
        # The console resends after a network error: the same success, applied once
        # (the audit below lists one round_paused).
        again = org.call("POST", f"/api/rounds/{rid}/pause", pause)
        assert again["clock"]["status"] == "paused"
        assert paused.reason == "网络故障" and paused.clock.paused
        left = paused.clock.remaining_s
        assert left == pytest.approx(600 - 60)
        ask = a.request("ask", text="还有哪里痛？")
        assert _error(a, ask).code == "round_not_running"
        clock.advance(300)  # a long pause costs nobody any time
        org.action(rid, "resume")
        resumed = _state(a, lambda m: m.change == "round_resumed")
        assert resumed.clock.remaining_s == pytest.approx(left)
        # An illegal transition is refused, and nothing changes.
        with pytest.raises(ApiError) as twice:
            org.action(rid, "resume")
        assert twice.value.status == 409 and "不能" in twice.value.body["message"]

        # B gets five more minutes, alone.
        org.action(rid, "extend", reason="设备故障", seconds=300,
                   contestant_id=roster[1]["id"])
        ext_a = _state(a, lambda m: m.change == "round_extended")
        ext_b = _state(b, lambda m: m.change == "round_extended")
        assert ext_b.clock.deadline == pytest.approx(ext_a.clock.deadline + 300)

        # A submits: acknowledged, no score yet; a retry is applied once; a new one refused.
        sub = a.request("submit", diagnosis="急性下壁心肌梗死", differentials=["主动脉夹层"],
                        reasoning="胸痛")
        # Scoring waits for the niced matching process, slow to start on a busy machine.
        ack: protocol.SubmitAck = a.expect("submit_ack", timeout=90)
        assert ack.re == sub and ack.submissions_left == 0 and ack.score is None
        a.request("submit", id=sub, diagnosis="急性下壁心肌梗死")
        assert a.expect("submit_ack").re == sub
        again = a.request("submit", diagnosis="心绞痛")
        assert _error(a, again).code == "already_submitted"
        scored = _board(judge, lambda m: any(r.score for r in m.board.rows)).board.rows[0]
        assert scored.name == "选手1" and scored.rank == 1 and scored.score

        # Time is up for C (and A); B still has five minutes.
        clock.advance(600 - 60 + 1)
        late = c.request("order", item_id=play.menu[1].id)
        assert _error(c, late).code == "deadline_passed"
        assert "时间已到" in c.received[-1].message  # type: ignore[union-attr]
        b.request("order", item_id=play.menu[1].id)
        b.expect("order_result")
        clock.advance(300)
        ended = _state(b, lambda m: m.change == "round_ended", timeout=15)
        assert ended.clock.status == "ended"
        late = b.request("submit", diagnosis="心肌梗死")
        assert _error(b, late).code == "round_not_running"

        org.action(rid, "publish")
        results: protocol.Results = a.expect("results")
        assert results.rank == 1 and results.of == 3 and results.card.total > 0

    audit = org.call("GET", f"/api/rounds/{rid}/audit")
    kinds = [e["kind"] for e in audit]
    assert kinds == ["round_created", "lobby_opened", "round_started", "round_paused",
                     "round_resumed", "round_extended", "round_ended", "results_published"]
    assert all(e["actor"].startswith(("organizer:", "system")) for e in audit)
    assert audit[3]["reason"] == "网络故障"


def _started(server: str, **rules: Any) -> tuple[Api, str, str]:
    """A running round of one contestant: (organizer, round id, the contestant's token)."""
    org = Api.login(server)
    _, rid, roster = make_round(org, people=1, **rules)
    token = org.join(roster[0]["join_code"])["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    return org, rid, token


def test_rejoin_restores_everything(server: str, clock: FakeClock) -> None:
    _, rid, token = _started(server)
    with Client(server) as a:
        a.hello(token=token)
        play: protocol.PlayState = a.expect("play_state")
        first, _, _ = a.answer("哪里不舒服？")
        a.request("order", item_id=play.menu[0].id)
        a.expect("order_result")
        state = [m for m in a.received if isinstance(m, protocol.RoundState)][-1]
    clock.advance(30)
    with Client(server) as again:  # a refresh: a new connection with the same token
        again.hello(token=token, since={f"round:{rid}": 1})
        back: protocol.PlayState = again.expect("play_state")
        assert [t.answer for t in back.transcript] == [first]
        assert [o.item_id for o in back.orders] == [play.menu[0].id]
        states = [m for m in again.received if isinstance(m, protocol.RoundState)]
        # Missed channel messages replayed in order (lobby_opened was 1, round_started 2),
        # then the contestant's own current clock.
        assert [(m.cseq, m.change) for m in states[:-1]] == [(2, "round_started")]
        clock_now = states[-1].clock
        assert clock_now.deadline == pytest.approx(state.clock.deadline)
        assert clock_now.remaining_s == pytest.approx(state.clock.remaining_s - 30, abs=0.5)


def test_judge_adjudicates_and_overrides(server: str, clock: FakeClock) -> None:
    org = Api.login(server)
    try:
        org.call("POST", "/api/accounts", {"username": "judge1", "password": "judge-password",
                                           "role": "judge", "display_name": "王评委"})
    except ApiError as exc:
        assert exc.code == "bad_request"  # already there from an earlier test module
    judge_api = Api.login(server, "judge1", "judge-password")
    _, rid, roster = make_round(org, people=1)
    token = org.join(roster[0]["join_code"])["token"]
    org.action(rid, "open")
    org.action(rid, "start")
    with Client(server) as a, Client(server) as judge:
        a.hello(token=token)
        a.expect("play_state")
        a.request("submit", diagnosis="下壁心梗伴右室受累可能", differentials=[])
        a.expect("submit_ack")
        judge.hello(token=judge_api.token)
        judge.request("watch", round_id=rid)
        board = _board(judge, lambda m: any(r.score is not None for r in m.board.rows))
        aid = board.board.rows[0].attempt_id
        judge.request("open_transcript", attempt_id=aid)
        tr: protocol.Transcript = judge.expect("transcript")
        assert tr.card is not None and [e.kind for e in tr.entries][:1] == ["attempt_started"]
        before = tr.card.total

        no_reason = judge.request("adjudicate", attempt_id=aid, verdict="correct", reason=" ")
        assert _error(judge, no_reason).code == "bad_request"
        ok = judge.request("adjudicate", attempt_id=aid, verdict="correct",
                           reason="下壁心梗即标准诊断")
        assert judge.expect("ack").re == ok
        live: protocol.TranscriptLive = judge.until(
            lambda m: isinstance(m, protocol.TranscriptLive) and m.card is not None)
        assert live.card is not None and live.card.verdict == "correct"
        adjudicated = live.card.total
        assert adjudicated >= before
        _board(judge, lambda m: m.board.rows[0].score == adjudicated)

        bad = judge.request("override", attempt_id=aid, section="diagnosis", line=0,
                            points=999, reason="太多")
        assert _error(judge, bad).code == "bad_request"
        judge.request("override", attempt_id=aid, section="diagnosis", line=0, points=30,
                      reason="诊断不够完整")
        judge.expect("ack")
        _board(judge, lambda m: m.board.rows[0].score == pytest.approx(adjudicated - 10))

    audit = org.call("GET", f"/api/rounds/{rid}/audit")
    rulings = [e for e in audit if e["kind"] in ("adjudicated", "overridden")]
    assert [r["actor"] for r in rulings] == ["judge:judge1", "judge:judge1"]
    assert rulings[1]["payload"]["old_points"] == 40 and rulings[1]["payload"]["new_points"] == 30


def test_typed_orders_where_the_round_hides_the_menu(server: str, clock: FakeClock) -> None:
    """With the menu hidden the contestant types what to order: words are read against the
    shared menu's names and aliases, the case's result comes back under the menu's name,
    an item the case is silent on is normal (not refused), and words naming nothing get a
    Chinese error. A rejoin shows every result again."""
    org, rid, token = _started(server, order_menu=False)
    with Client(server) as a:
        a.hello(token=token)
        play: protocol.PlayState = a.expect("play_state")
        assert play.menu == [] and play.typed_orders
        a.request("order", text="查个肌钙蛋白")
        troponin: protocol.OrderResult = a.expect("order_result")
        assert (troponin.item_id, troponin.name, troponin.abnormal) == (
            "lab.troponin", "肌钙蛋白", True)
        a.request("order", text="甲功")
        thyroid: protocol.OrderResult = a.expect("order_result")
        assert thyroid.item_id == "lab.thyroid" and not thyroid.abnormal
        assert "正常" in thyroid.result
        bad = a.request("order", text="量子纠缠检测")
        error = _error(a, bad)
        assert error.code == "unknown_order" and "没有找到“量子纠缠检测”" in error.message
    with Client(server) as again:
        again.hello(token=token)
        replayed: protocol.PlayState = again.expect("play_state")
        assert [(o.item_id, o.name) for o in replayed.orders] == [
            ("lab.troponin", "肌钙蛋白"), ("lab.thyroid", "甲状腺功能")]
        assert replayed.menu == []
    org.action(rid, "end", reason="测试结束")
