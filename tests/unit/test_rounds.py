from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from arena.errors import BadRequest, DeadlinePassed, IllegalTransition, RoundNotRunning
from arena.rounds import (
    ROUND_EVENT_KINDS,
    Round,
    RoundCreated,
    RoundEvent,
    RoundRules,
    Status,
    check_rules,
    decode_round_event,
)
from arena.scoring import Weights

# Play begins at 110 (start at 100 + 10 s countdown); time is up at 710; the
# public board freezes in the last 120 s, at 590.
RULES = RoundRules(case_id="stemi", duration_s=600, countdown_s=10, freeze_s=120)


def created(rules: RoundRules = RULES) -> Round:
    rnd, _ = Round.create("r1", rules, event_id="e1", title="第一场", now=0.0)
    return rnd


def running(rules: RoundRules = RULES) -> Round:
    rnd = created(rules)
    rnd.open_lobby(50.0)
    rnd.start(100.0)
    return rnd


def in_status(status: Status) -> Round:
    rnd = created()
    if status == "draft":
        return rnd
    rnd.open_lobby(50.0)
    if status == "lobby":
        return rnd
    rnd.start(100.0)
    if status == "paused":
        rnd.pause(200.0)
    if status in ("ended", "published"):
        rnd.end(300.0)
    if status == "published":
        rnd.publish(400.0)
    return rnd


COMMANDS: dict[str, Callable[[Round], object]] = {
    "open_lobby": lambda r: r.open_lobby(500.0),
    "start": lambda r: r.start(500.0),
    "pause": lambda r: r.pause(500.0, "网络故障"),
    "resume": lambda r: r.resume(500.0),
    "extend": lambda r: r.extend(500.0, 60),
    "end": lambda r: r.end(500.0),
    "publish": lambda r: r.publish(500.0),
}
LEGAL: dict[tuple[Status, str], Status] = {
    ("draft", "open_lobby"): "lobby",
    ("lobby", "start"): "running",
    ("lobby", "end"): "ended",
    ("running", "pause"): "paused",
    ("running", "extend"): "running",
    ("running", "end"): "ended",
    ("paused", "resume"): "running",
    ("paused", "extend"): "paused",
    ("paused", "end"): "ended",
    ("ended", "publish"): "published",
}
STATUSES: tuple[Status, ...] = ("draft", "lobby", "running", "paused", "ended", "published")


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_in_every_status(status: Status, command: str) -> None:
    rnd = in_status(status)
    assert rnd.status == status
    before = copy.deepcopy(vars(rnd))
    if (status, command) in LEGAL:
        event = COMMANDS[command](rnd)
        assert msgspec.json.decode(msgspec.json.encode(event))["type"] in ROUND_EVENT_KINDS
        assert rnd.status == LEGAL[status, command]
    else:
        with pytest.raises(IllegalTransition) as err:
            COMMANDS[command](rnd)
        assert vars(rnd) == before
        assert err.value.detail == {"status": status, "command": command}


def test_illegal_transition_says_where_the_round_is() -> None:
    with pytest.raises(IllegalTransition) as err:
        in_status("ended").pause(500.0)
    assert err.value.message_zh == "场次已结束，不能暂停。"
    with pytest.raises(IllegalTransition) as err:
        in_status("draft").start(500.0)
    assert err.value.message_zh == "场次尚未开放，不能开始。"


def test_start_sets_the_shared_countdown() -> None:
    rnd = running()
    assert rnd.starts_at == 110.0 and rnd.started_at == 100.0
    assert rnd.deadline() == 710.0
    assert [rnd.phase(t) for t in (109.99, 110.0, 709.99, 710.0)] == [
        "countdown", "running", "running", "over"]


def test_pauses_stop_the_clock_exactly() -> None:
    rnd = running()
    rnd.pause(200.0)
    assert rnd.remaining(200.0) == 510.0
    assert rnd.remaining(250.0) == rnd.remaining(10_000.0) == 510.0
    assert rnd.deadline() is None and rnd.phase(250.0) == "paused"
    rnd.resume(260.0)
    assert rnd.remaining(260.0) == 510.0
    assert rnd.deadline() == 770.0
    rnd.pause(300.5)
    left = rnd.remaining(300.5)
    rnd.resume(310.25)
    assert rnd.remaining(310.25) == left
    assert rnd.paused_total == 69.75 and rnd.deadline() == 779.75
    assert rnd.elapsed(400.0) == 400.0 - 110.0 - 69.75
    assert rnd.pauses == [(200.0, 60.0), (300.5, 9.75)]


def test_pause_with_epoch_timestamps_keeps_the_remaining_time() -> None:
    t0 = 1_760_000_000.123
    rnd = created()
    rnd.open_lobby(t0)
    rnd.start(t0 + 1.7)
    rnd.pause(t0 + 95.31)
    left = rnd.remaining(t0 + 95.31)
    rnd.resume(t0 + 133.077)
    assert rnd.remaining(t0 + 133.077) == pytest.approx(left, abs=1e-6)
    assert rnd.deadline() == pytest.approx(t0 + 1.7 + 10 + 600 + (133.077 - 95.31), abs=1e-6)


def test_pause_during_the_countdown_delays_the_start() -> None:
    rnd = running()
    rnd.pause(104.0)
    assert rnd.phase(120.0) == "paused" and rnd.elapsed(120.0) == 0.0
    assert rnd.remaining(120.0) == 600.0
    rnd.resume(150.0)
    assert rnd.starts_at == 156.0 and rnd.paused_total == 0.0
    assert rnd.phase(155.9) == "countdown" and rnd.phase(156.0) == "running"
    assert rnd.deadline() == 756.0


def test_global_and_personal_extensions() -> None:
    rnd = running()
    rnd.extend(200.0, 60, reason="题目勘误")
    assert rnd.deadline() == rnd.deadline("a") == 770.0
    rnd.extend(210.0, 30, contestant_id="a", reason="设备故障")
    rnd.extend(220.0, 15, contestant_id="a")
    assert rnd.deadline("a") == 815.0 and rnd.deadline("b") == 770.0
    assert rnd.remaining(300.0, "a") == rnd.remaining(300.0, "b") + 45
    assert rnd.snapshot(300.0, "a").extension_s == 105
    assert rnd.snapshot(300.0).extension_s == 60


def test_extension_while_paused_adds_to_the_stopped_clock() -> None:
    rnd = running()
    rnd.pause(200.0)
    rnd.extend(210.0, 120)
    rnd.extend(215.0, 10, contestant_id="a")
    assert rnd.remaining(230.0) == 630.0 and rnd.remaining(230.0, "a") == 640.0
    rnd.resume(260.0)
    assert rnd.deadline() == 710.0 + 60 + 120
    assert rnd.deadline("a") == 710.0 + 60 + 130


@pytest.mark.parametrize(("seconds", "contestant"), [
    (0, None), (3601, None), (-5, None), (True, None), (1.5, None), (60, ""),
])
def test_bad_extensions_are_refused(seconds: Any, contestant: str | None) -> None:
    rnd = running()
    before = copy.deepcopy(vars(rnd))
    with pytest.raises(BadRequest):
        rnd.extend(200.0, seconds, contestant_id=contestant)
    assert vars(rnd) == before


def test_check_play_at_the_boundaries() -> None:
    rnd = running()
    rnd.extend(105.0, 30, contestant_id="a")
    with pytest.raises(RoundNotRunning) as err:
        rnd.check_play("b", 109.999)
    assert err.value.message_zh == "倒计时中，请稍候。"
    rnd.check_play("b", 110.0)
    rnd.check_play("b", 709.999)
    with pytest.raises(DeadlinePassed) as late:
        rnd.check_play("b", 710.0)
    assert late.value.message_zh == "你的作答时间已到。"
    rnd.check_play("a", 710.0)
    rnd.check_play("a", 739.999)
    with pytest.raises(DeadlinePassed):
        rnd.check_play("a", 740.0)
    assert rnd.remaining(710.0, "b") == 0.0 and rnd.remaining(9999.0, "b") == 0.0
    assert rnd.phase(739.999) == "running" and rnd.phase(740.0) == "over"


@pytest.mark.parametrize(("status", "message"), [
    ("draft", "比赛尚未开始。"),
    ("lobby", "比赛尚未开始。"),
    ("paused", "比赛已暂停，计时已停止。"),
    ("ended", "比赛已结束。"),
    ("published", "比赛已结束。"),
])
def test_check_play_refuses_outside_play(status: Status, message: str) -> None:
    with pytest.raises(RoundNotRunning) as err:
        in_status(status).check_play("a", 250.0)
    assert err.value.message_zh == message


def test_auto_end_waits_for_the_largest_personal_extension() -> None:
    assert in_status("lobby").auto_end_at() is None
    rnd = running()
    rnd.extend(200.0, 30, contestant_id="a")
    rnd.extend(200.0, 90, contestant_id="b")
    assert rnd.auto_end_at() == 800.0
    assert rnd.phase(799.9) == "running" and rnd.phase(800.0) == "over"
    before = copy.deepcopy(vars(rnd))
    with pytest.raises(IllegalTransition):
        rnd.end(799.9, reason="time")
    assert vars(rnd) == before
    assert rnd.end(800.0, reason="time").reason == "time"
    assert rnd.end_reason == "time" and rnd.auto_end_at() is None


def test_a_paused_round_cannot_end_by_time() -> None:
    rnd = running()
    rnd.pause(200.0)
    assert rnd.auto_end_at() is None
    with pytest.raises(IllegalTransition):
        rnd.end(10_000.0, reason="time")
    rnd.end(10_000.0)
    assert rnd.remaining(20_000.0) == 510.0  # ended while paused: the clock stayed stopped


def test_freeze_window() -> None:
    rnd = running()
    assert rnd.freeze_at() == 590.0
    assert not rnd.frozen(589.9) and rnd.frozen(590.0) and rnd.frozen(700.0)
    rnd.pause(600.0)
    assert rnd.frozen(5000.0) and rnd.freeze_at() == 590.0
    rnd.resume(650.0)  # a pause inside the window does not move the freeze point
    assert rnd.freeze_at() == 590.0 and rnd.frozen(650.0)
    rnd.end(700.0)
    assert rnd.frozen(9999.0) and rnd.freeze_at() == 590.0
    rnd.publish(10_000.0)
    assert not rnd.frozen(10_001.0) and rnd.freeze_at() == 590.0


def test_a_pause_before_the_window_moves_the_freeze() -> None:
    rnd = running()
    rnd.pause(300.0)
    assert rnd.freeze_at() is None and not rnd.frozen(9999.0)  # clock stopped before it
    rnd.resume(400.0)
    assert rnd.freeze_at() == 690.0
    assert [rnd.frozen(t) for t in (689.9, 690.0)] == [False, True]


def test_frozen_agrees_with_freeze_at_while_running() -> None:
    rnd = running()
    rnd.pause(250.0)
    rnd.resume(275.5)
    rnd.extend(300.0, 45)
    freeze_at = rnd.freeze_at()
    assert freeze_at == 110 + 600 + 45 + 25.5 - 120
    for t in range(100, 900, 7):
        assert rnd.frozen(float(t)) == (t >= freeze_at)


def test_ending_before_the_window_never_freezes() -> None:
    rnd = running()
    rnd.end(400.0)
    assert rnd.freeze_at() is None and not rnd.frozen(9999.0)
    cancelled = in_status("lobby")
    cancelled.end(60.0)
    assert cancelled.status == "ended" and not cancelled.frozen(9999.0)


def test_no_freeze_when_freeze_s_is_zero() -> None:
    rnd = running(RoundRules(case_id="stemi", duration_s=600, freeze_s=0))
    assert rnd.freeze_at() is None and not rnd.frozen(709.0)


def test_an_extension_after_the_freeze_keeps_the_board_frozen() -> None:
    rnd = running()
    rnd.extend(650.0, 600)
    assert rnd.frozen(651.0) and rnd.freeze_at() == 590.0
    early = running()
    early.extend(300.0, 60)  # before the window: the freeze point simply moves
    assert early.freeze_at() == 650.0 and not early.frozen(640.0)


def test_time_fraction_left() -> None:
    rnd = running()
    assert rnd.time_fraction_left("a", 105.0) == 1.0
    assert rnd.time_fraction_left("a", 410.0) == 0.5
    assert rnd.time_fraction_left("a", 900.0) == 0.0
    rnd.extend(410.0, 300, contestant_id="a")
    assert rnd.time_fraction_left("a", 410.0) == 600 / 900


def test_snapshot() -> None:
    rnd = running()
    rnd.extend(200.0, 30, contestant_id="a")
    snap = rnd.snapshot(410.0, "a")
    assert msgspec.structs.asdict(snap) == {
        "at": 410.0, "status": "running", "phase": "running", "starts_at": 110.0,
        "deadline": 740.0, "remaining_s": 330.0, "paused": False, "frozen": False,
        "freeze_at": 590.0, "duration_s": 600, "extension_s": 30,
    }
    rnd.pause(420.0)
    paused = rnd.snapshot(500.0)
    assert paused.paused and paused.deadline is None and paused.remaining_s == 290.0


def play_a_whole_round() -> tuple[Round, list[RoundEvent]]:
    rnd, first = Round.create("r1", RULES, event_id="e1", title="决赛", now=0.0)
    events: list[RoundEvent] = [first]
    events.append(rnd.open_lobby(50.0))
    events.append(rnd.start(100.0))
    events.append(rnd.pause(105.0, "投影故障"))
    events.append(rnd.resume(130.0))
    events.append(rnd.extend(200.0, 40, contestant_id="a"))
    events.append(rnd.pause(300.0))
    events.append(rnd.extend(310.0, 60))
    events.append(rnd.resume(350.5))
    events.append(rnd.extend(760.0, 120))
    return rnd, events


def test_replay_reproduces_the_clock() -> None:
    live, events = play_a_whole_round()
    wire = [(msgspec.json.decode(msgspec.json.encode(e))) for e in events]
    rebuilt = Round.replay(decode_round_event(p.pop("type"), p) for p in wire)
    for now in (0.0, 120.0, 500.0, 760.0, 800.0, 1000.0, 2000.0):
        for who in (None, "a", "b"):
            assert rebuilt.snapshot(now, who) == live.snapshot(now, who)
    assert vars(rebuilt) == vars(live)
    live.end(1200.0)
    rebuilt.apply(decode_round_event("round_ended", {"at": 1200, "reason": "organizer"}))
    assert rebuilt.snapshot(1300.0, "a") == live.snapshot(1300.0, "a")


def test_replay_needs_the_creation_first() -> None:
    _, events = play_a_whole_round()
    with pytest.raises(ValueError):
        Round.replay(events[1:])
    with pytest.raises(ValueError):
        Round.replay([])


def test_event_kinds_match_the_tags() -> None:
    _, events = play_a_whole_round()
    kinds = {msgspec.json.decode(msgspec.json.encode(e))["type"] for e in events}
    assert kinds <= ROUND_EVENT_KINDS
    assert len(ROUND_EVENT_KINDS) == 8
    for kind in ROUND_EVENT_KINDS:
        assert type(decode_round_event(kind, _minimal(kind))).__struct_config__.tag == kind
    with pytest.raises(ValueError):
        decode_round_event("asked", {})
    with pytest.raises(msgspec.ValidationError):
        decode_round_event("round_extended", {"at": 1.0})


def _minimal(kind: str) -> dict[str, Any]:
    if kind == "round_created":
        return {"round_id": "r", "event_id": "e", "title": "t", "rules": {"case_id": "c"},
                "at": 0}
    if kind == "round_started":
        return {"at": 0, "starts_at": 10}
    if kind == "round_extended":
        return {"at": 0, "seconds": 30}
    return {"at": 0}


def test_check_rules() -> None:
    assert check_rules(RoundRules(case_id="stemi")) == []
    bad = RoundRules(
        case_id=" ", duration_s=30, countdown_s=121, max_submissions=6, freeze_s=30,
        time_points=-1, weights=Weights(diagnosis=-1, partial_share=1.5),
    )
    assert check_rules(bad) == [
        "请选择病例。",
        "比赛时长须在 60 到 14400 秒之间。",
        "倒计时须在 0 到 120 秒之间。",
        "每人提交次数须在 1 到 5 次之间。",
        "封榜时长须不小于 0 且小于比赛时长。",
        "用时得分须在 0 到 1000 分之间。",
        "各项评分权重须在 0 到 1000 之间。",
        "部分正确诊断的得分比例须在 0 到 1 之间。",
    ]
    assert check_rules(RoundRules(case_id="x", duration_s=14400, freeze_s=14399)) == []
    assert check_rules(RoundRules(case_id="x", duration_s=14401)) != []
    assert check_rules(RoundRules(case_id="x", duration_s=600, freeze_s=600)) != []


def test_create_refuses_bad_rules() -> None:
    with pytest.raises(BadRequest) as err:
        Round.create("r", RoundRules(case_id="x", duration_s=10), event_id="e", title="",
                     now=0.0)
    assert err.value.detail["problems"] == ["比赛时长须在 60 到 14400 秒之间。"]


def test_rules_round_trip_through_json() -> None:
    rules = RoundRules(case_id="stemi", duration_s=900, weights=Weights(diagnosis=50),
                       time_counts=True, freeze_s=60, max_submissions=3)
    assert msgspec.json.decode(msgspec.json.encode(rules), type=RoundRules) == rules
    assert msgspec.json.decode(b'{"case_id": "x"}', type=RoundRules) == RoundRules(case_id="x")
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"case_id": "x", "duration": 5}', type=RoundRules)
    event = RoundCreated(round_id="r", event_id="e", title="t", rules=rules, at=1.0)
    payload = msgspec.json.decode(msgspec.json.encode(event))
    assert decode_round_event("round_created", payload) == event


def test_scores_stay_off_the_public_board_until_publication() -> None:
    assert RoundRules(case_id="c").open_scoring is False  # off unless the rules say so
    for status in STATUSES:
        rnd = in_status(status)
        assert rnd.scores_public() == (status == "published")
        assert rnd.hidden_from() == -math.inf  # the reveal starts from the progress board
    opened = running(msgspec.structs.replace(RULES, open_scoring=True))
    assert opened.scores_public() and opened.hidden_from() == 590.0
    no_freeze = running(RoundRules(case_id="c", open_scoring=True))
    assert no_freeze.hidden_from() is None


def test_draw_case_filters_skips_used_and_follows_the_seed() -> None:
    import random

    from arena.rounds import Candidate, Draw, draw_case

    pool = [Candidate("a", "心血管内科", "easy"), Candidate("b", "心血管内科", "hard"),
            Candidate("c", "呼吸内科", "easy"), Candidate("d", "心血管内科", "easy")]
    assert draw_case(pool, Draw(specialty="心血管内科", difficulty="hard"), [],
                     random.Random(1).choice) == "b"
    drawn = {draw_case(pool, Draw(specialty="心血管内科", difficulty="easy"), ["a"],
                       random.Random(seed).choice) for seed in range(20)}
    assert drawn == {"d"}
    # Every unseen candidate can come up, and a seed always draws the same one.
    assert {draw_case(pool, Draw(), [], random.Random(s).choice) for s in range(50)} == set("abcd")
    assert draw_case(pool, Draw(), [], random.Random(7).choice) == draw_case(
        list(reversed(pool)), Draw(), [], random.Random(7).choice)
    with pytest.raises(BadRequest) as used:
        draw_case(pool, Draw(specialty="呼吸内科"), ["c"], random.Random(0).choice)
    assert "都已在本赛事" in used.value.message_zh
    with pytest.raises(BadRequest) as none:
        draw_case(pool, Draw(specialty="神经内科"), [], random.Random(0).choice)
    assert "没有符合条件" in none.value.message_zh
