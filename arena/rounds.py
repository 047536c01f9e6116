"""A round (场次): an explicit state machine with a server-owned clock.

    draft ──open_lobby──▶ lobby ──start──▶ running ◀──resume── paused
                            │                │  └────pause─────▶ │
                            └──end──▶ ended ◀┴──────end──────────┘
                                        └──publish──▶ published

Commands validate, build a domain event, apply it and return it; the server
appends the event to the audit log before acknowledging. `Round.replay` folds
the log back into the same state, so Postgres stays the source of truth.
An illegal command raises `IllegalTransition` and leaves the state untouched.

The clock never reads time: every query takes `now` (seconds, server time).
Play time is wall time since `starts_at` minus `paused_total`; a pause during
the countdown moves `starts_at` instead. A contestant's allowance is
`duration_s + extension_all + extensions[contestant]`. Time is up at the first
instant `now >= deadline`, which is also the instant `remaining` reaches 0.
Arithmetic is plain float subtraction: exact for the binary fractions the
server's clock yields in tests, within a microsecond for epoch timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import msgspec

from arena.errors import BadRequest, DeadlinePassed, IllegalTransition, RoundNotRunning
from arena.scoring import Weights

Status = Literal["draft", "lobby", "running", "paused", "ended", "published"]
Phase = Literal["draft", "lobby", "countdown", "running", "paused", "over", "ended", "published"]

MAX_EXTENSION_S = 3600


class RoundRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the organizer chose for a round; `check_rules` says what is out of range."""

    case_id: str
    duration_s: int = 1200
    weights: Weights = Weights()
    # Remaining time adds a time section to the score; scoring reads time_fraction_left.
    time_counts: bool = False
    time_points: float = 10.0
    # The public board freezes (封榜) in the last freeze_s seconds; 0 = never.
    freeze_s: int = 0
    board_visible: bool = True
    countdown_s: int = 10
    # A later submission replaces the earlier one.
    max_submissions: int = 1
    fallback_scripted: bool = True
    # Contestants, spectators and the public board see scores while the round runs.
    # Off by default: with several submissions allowed a visible score is an oracle.
    open_scoring: bool = False
    # Show the order menu; off, contestants type what they order (nothing to pick from).
    order_menu: bool = True


def check_rules(rules: RoundRules) -> list[str]:
    """Every problem with `rules`, in Chinese; an empty list means the rules are usable."""
    problems: list[str] = []
    if not rules.case_id.strip():
        problems.append("请选择病例。")
    if not 60 <= rules.duration_s <= 14400:
        problems.append("比赛时长须在 60 到 14400 秒之间。")
    if not 0 <= rules.countdown_s <= 120:
        problems.append("倒计时须在 0 到 120 秒之间。")
    if not 1 <= rules.max_submissions <= 5:
        problems.append("每人提交次数须在 1 到 5 次之间。")
    if rules.freeze_s < 0 or rules.freeze_s >= rules.duration_s:
        problems.append("封榜时长须不小于 0 且小于比赛时长。")
    if not 0 <= rules.time_points <= 1000:
        problems.append("用时得分须在 0 到 1000 分之间。")
    w = rules.weights
    sections = (w.diagnosis, w.differentials, w.checklist, w.red_flags, w.tests)
    if any(not 0 <= x <= 1000 for x in (*sections, w.unnecessary_penalty)):
        problems.append("各项评分权重须在 0 到 1000 之间。")
    if not 0 <= w.partial_share <= 1:
        problems.append("部分正确诊断的得分比例须在 0 到 1 之间。")
    return problems


class Draw(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An organizer's request to draw the round's case at random instead of naming it:
    from the cases set to contest, of this specialty and difficulty ("" = any), that no
    earlier round of the competition used."""

    specialty: str = ""
    difficulty: str = ""


class Candidate(msgspec.Struct, frozen=True):
    """What a draw needs to know of a case."""

    case_id: str
    specialty: str
    difficulty: str


def draw_case(
    candidates: Sequence[Candidate], draw: Draw, used: Iterable[str],
    choose: Callable[[Sequence[str]], str],
) -> str:
    """The id of a case drawn by `choose` (randomness, injected: `random.Random().choice`)
    from `candidates` that match `draw` and are not in `used`. Raises BadRequest, in
    words the organizer can act on, when none is left."""
    used_ids = set(used)
    matching = [c for c in candidates
                if (not draw.specialty or c.specialty == draw.specialty)
                and (not draw.difficulty or c.difficulty == draw.difficulty)]
    unseen = sorted(c.case_id for c in matching if c.case_id not in used_ids)
    if unseen:
        return choose(unseen)  # sorted first: the same seed draws the same case
    if matching:
        raise BadRequest(
            "符合条件的比赛病例都已在本赛事的其他场次用过，请放宽条件或把更多病例设为“仅比赛”。",
            "Every matching contest case was used by an earlier round of this competition.",
        )
    raise BadRequest(
        "没有符合条件的比赛病例：请在病例列表中把病例设为“仅比赛”，或放宽专科和难度。",
        "No case set to contest matches this specialty and difficulty.",
    )


# Domain events: kind in the audit log = the tag, payload = the struct.
class RoundCreated(msgspec.Struct, frozen=True, tag="round_created", kw_only=True):
    round_id: str
    event_id: str
    title: str
    rules: RoundRules
    at: float


class LobbyOpened(msgspec.Struct, frozen=True, tag="lobby_opened", kw_only=True):
    at: float


class RoundStarted(msgspec.Struct, frozen=True, tag="round_started", kw_only=True):
    at: float
    starts_at: float  # at + countdown_s: the moment play begins, the same for everyone


class RoundPaused(msgspec.Struct, frozen=True, tag="round_paused", kw_only=True):
    at: float
    reason: str = ""


class RoundResumed(msgspec.Struct, frozen=True, tag="round_resumed", kw_only=True):
    at: float


class RoundExtended(msgspec.Struct, frozen=True, tag="round_extended", kw_only=True):
    at: float
    seconds: int
    contestant_id: str | None = None  # None: everyone
    reason: str = ""


class RoundEnded(msgspec.Struct, frozen=True, tag="round_ended", kw_only=True):
    at: float
    reason: Literal["organizer", "time"] = "organizer"


class ResultsPublished(msgspec.Struct, frozen=True, tag="results_published", kw_only=True):
    at: float


RoundEvent = (
    RoundCreated | LobbyOpened | RoundStarted | RoundPaused | RoundResumed | RoundExtended
    | RoundEnded | ResultsPublished
)
_EVENT_TYPES: dict[str, type[Any]] = {
    "round_created": RoundCreated, "lobby_opened": LobbyOpened,
    "round_started": RoundStarted, "round_paused": RoundPaused,
    "round_resumed": RoundResumed, "round_extended": RoundExtended,
    "round_ended": RoundEnded, "results_published": ResultsPublished,
}
ROUND_EVENT_KINDS: frozenset[str] = frozenset(_EVENT_TYPES)


def decode_round_event(kind: str, payload: dict[str, Any]) -> RoundEvent:
    """The event stored as (`kind`, `payload`); raises ValueError for an unknown kind and
    msgspec.ValidationError for a payload that does not fit it."""
    typ = _EVENT_TYPES.get(kind)
    if typ is None:
        raise ValueError(f"not a round event kind: {kind!r}")
    event: RoundEvent = msgspec.convert(payload, typ)
    return event


class RoundClock(msgspec.Struct, frozen=True, kw_only=True):
    """What a client needs to draw the clock; `at` is the server time it was taken."""

    at: float
    status: Status
    phase: Phase
    starts_at: float | None
    deadline: float | None
    remaining_s: float
    paused: bool
    frozen: bool
    freeze_at: float | None
    duration_s: int
    extension_s: int  # global + this contestant's personal extensions


_STATUS_ZH: dict[str, str] = {
    "draft": "场次尚未开放", "lobby": "场次正在候场", "running": "比赛正在进行",
    "paused": "比赛已暂停", "ended": "场次已结束", "published": "成绩已发布",
}
_COMMAND: dict[str, tuple[str, str]] = {
    "open_lobby": ("开放候场", "open the lobby of"), "start": ("开始", "start"),
    "pause": ("暂停", "pause"), "resume": ("继续", "resume"), "extend": ("延时", "extend"),
    "end": ("结束", "end"), "publish": ("发布成绩", "publish the results of"),
}


class Round:
    """One round's state, changed only by `apply`; see the module docstring for the clock."""

    def __init__(
        self, round_id: str, rules: RoundRules, *, event_id: str = "", title: str = ""
    ) -> None:
        self.round_id = round_id
        self.event_id = event_id
        self.title = title
        self.rules = rules
        self.status: Status = "draft"
        self.created_at: float | None = None
        self.lobby_at: float | None = None
        self.started_at: float | None = None  # when the organizer pressed start
        self.starts_at: float | None = None  # when play begins (after the countdown)
        self.paused_at: float | None = None  # set while paused (kept if ended while paused)
        self.paused_total = 0.0  # play-time pauses only; countdown pauses move starts_at
        self.pauses: list[tuple[float, float]] = []  # (paused_at, length) of play-time pauses
        self.extension_all = 0
        self.extensions: dict[str, int] = {}
        # Once the board has frozen, a later global extension must not reopen it.
        self.freeze_pinned: float | None = None
        self.ended_at: float | None = None
        self.end_reason: Literal["organizer", "time"] | None = None
        self.published_at: float | None = None

    @classmethod
    def create(
        cls, round_id: str, rules: RoundRules, *, event_id: str, title: str, now: float
    ) -> tuple[Round, RoundCreated]:
        """A new draft round; BadRequest lists every problem `check_rules` finds."""
        problems = check_rules(rules)
        if problems:
            raise BadRequest(
                "比赛规则有误：" + "".join(problems), "invalid round rules",
                problems=problems,
            )
        event = RoundCreated(round_id=round_id, event_id=event_id, title=title, rules=rules,
                             at=now)
        rnd = cls(round_id, rules, event_id=event_id, title=title)
        rnd.apply(event)
        return rnd, event

    @classmethod
    def replay(cls, events: Iterable[RoundEvent]) -> Round:
        """Fold a round's log, oldest first; the first event must be RoundCreated."""
        it = iter(events)
        first = next(it, None)
        if not isinstance(first, RoundCreated):
            raise ValueError("a round's event log must begin with round_created")
        rnd = cls(first.round_id, first.rules, event_id=first.event_id, title=first.title)
        rnd.apply(first)
        for event in it:
            rnd.apply(event)
        return rnd

    def apply(self, event: RoundEvent) -> None:
        """Fold one event. It trusts the event: commands validated it when it was made."""
        match event:
            case RoundCreated():
                self.round_id, self.event_id = event.round_id, event.event_id
                self.title, self.rules, self.created_at = event.title, event.rules, event.at
            case LobbyOpened():
                self.status, self.lobby_at = "lobby", event.at
            case RoundStarted():
                self.status, self.started_at, self.starts_at = "running", event.at, event.starts_at
            case RoundPaused():
                self.status, self.paused_at = "paused", event.at
            case RoundResumed():
                assert self.paused_at is not None and self.starts_at is not None
                length = event.at - self.paused_at
                if self.paused_at < self.starts_at:
                    self.starts_at += length  # paused in the countdown: play starts later
                else:
                    self.paused_total += length
                    self.pauses.append((self.paused_at, length))
                self.status, self.paused_at = "running", None
            case RoundExtended():
                if event.contestant_id is None:
                    if self.freeze_pinned is None and self.frozen(event.at):
                        self.freeze_pinned = self.freeze_at()
                    self.extension_all += event.seconds
                else:
                    cid = event.contestant_id
                    self.extensions[cid] = self.extensions.get(cid, 0) + event.seconds
            case RoundEnded():
                self.status, self.ended_at, self.end_reason = "ended", event.at, event.reason
            case ResultsPublished():
                self.status, self.published_at = "published", event.at
            case _:
                raise TypeError(f"not a round event: {event!r}")

    def _require(self, command: str, *allowed: Status) -> None:
        if self.status not in allowed:
            zh, en = _COMMAND[command]
            raise IllegalTransition(
                f"{_STATUS_ZH[self.status]}，不能{zh}。",
                f"Cannot {en} a round that is {self.status}.",
                status=self.status, command=command,
            )

    def open_lobby(self, now: float) -> LobbyOpened:
        """draft -> lobby: contestants may join and wait."""
        self._require("open_lobby", "draft")
        event = LobbyOpened(at=now)
        self.apply(event)
        return event

    def start(self, now: float) -> RoundStarted:
        """lobby -> running; play begins after the rules' countdown."""
        self._require("start", "lobby")
        event = RoundStarted(at=now, starts_at=now + self.rules.countdown_s)
        self.apply(event)
        return event

    def pause(self, now: float, reason: str = "") -> RoundPaused:
        """running -> paused; every clock stops (in the countdown, the start moves back)."""
        self._require("pause", "running")
        event = RoundPaused(at=now, reason=reason)
        self.apply(event)
        return event

    def resume(self, now: float) -> RoundResumed:
        """paused -> running; every deadline moves back by the length of the pause."""
        self._require("resume", "paused")
        assert self.paused_at is not None
        if now < self.paused_at:
            raise BadRequest("恢复时间早于暂停时间。", "Resume is earlier than the pause.")
        event = RoundResumed(at=now)
        self.apply(event)
        return event

    def extend(
        self, now: float, seconds: int, contestant_id: str | None = None, reason: str = ""
    ) -> RoundExtended:
        """Add 1..3600 s to everyone (contestant_id None) or to one contestant, on top
        of the global extensions. Allowed while running or paused."""
        self._require("extend", "running", "paused")
        whole = isinstance(seconds, int) and not isinstance(seconds, bool)
        if not whole or not 1 <= seconds <= MAX_EXTENSION_S:
            raise BadRequest(
                f"延时须为 1 到 {MAX_EXTENSION_S} 秒的整数。",
                f"An extension is 1..{MAX_EXTENSION_S} whole seconds.",
            )
        if contestant_id is not None and not contestant_id:
            raise BadRequest("请指定延时的选手。", "Empty contestant id.")
        event = RoundExtended(at=now, seconds=seconds, contestant_id=contestant_id,
                              reason=reason)
        self.apply(event)
        return event

    def end(self, now: float, reason: Literal["organizer", "time"] = "organizer") -> RoundEnded:
        """running/paused -> ended, or lobby -> ended (a cancelled round). reason "time"
        is refused until every deadline has passed, so a timer that fires after a fresh
        extension cannot cut it short."""
        self._require("end", "lobby", "running", "paused")
        if reason not in ("organizer", "time"):
            raise BadRequest("结束原因无效。", f"Unknown end reason {reason!r}.")
        if reason == "time" and self.phase(now) != "over":
            raise IllegalTransition(
                "比赛时间尚未用完，不能按时结束。", "Time is not up yet.", status=self.status,
                command="end",
            )
        event = RoundEnded(at=now, reason=reason)
        self.apply(event)
        return event

    def publish(self, now: float) -> ResultsPublished:
        """ended -> published: results and the full board become public."""
        self._require("publish", "ended")
        event = ResultsPublished(at=now)
        self.apply(event)
        return event

    # Clocks: pure functions of the state and `now`.

    def _allowance(self, contestant_id: str | None) -> int:
        personal = self.extensions.get(contestant_id, 0) if contestant_id is not None else 0
        return self.rules.duration_s + self.extension_all + personal

    def _stopped_at(self) -> float | None:
        """When the play clock stopped: at the pause, else at the end; None if it runs."""
        return self.paused_at if self.paused_at is not None else self.ended_at

    def elapsed(self, now: float) -> float:
        """Seconds of play so far, excluding the countdown and pauses; never negative."""
        if self.starts_at is None:
            return 0.0
        stopped = self._stopped_at()
        t = now if stopped is None else min(now, stopped)
        return max(0.0, t - self.starts_at - self.paused_total)

    def deadline(self, contestant_id: str | None = None) -> float | None:
        """Server time at which this contestant's time is up (None: global); None unless
        running, because while paused or ended the clock is stopped."""
        if self.status != "running" or self.starts_at is None:
            return None
        return self.starts_at + self.paused_total + self._allowance(contestant_id)

    def remaining(self, now: float, contestant_id: str | None = None) -> float:
        """Seconds left, >= 0: the full allowance before play, frozen while paused."""
        return max(0.0, self._allowance(contestant_id) - self.elapsed(now))

    def auto_end_at(self) -> float | None:
        """When the last contestant's deadline passes; None unless running."""
        base = self.deadline()
        if base is None:
            return None
        return base + max(self.extensions.values(), default=0)

    def phase(self, now: float) -> Phase:
        """The status, refined: "countdown" before play begins; "over" once every
        deadline has passed and the server has yet to record RoundEnded(reason="time")."""
        if self.status != "running":
            return self.status
        assert self.starts_at is not None
        if now < self.starts_at:
            return "countdown"
        end = self.auto_end_at()
        if end is not None and now >= end:
            return "over"
        return "running"

    def check_play(self, contestant_id: str, now: float) -> None:
        """Refuse a contestant's action unless the round is in play and their time is left."""
        phase = self.phase(now)
        if phase in ("draft", "lobby"):
            raise RoundNotRunning("比赛尚未开始。", "The round has not started.", phase=phase)
        if phase == "countdown":
            raise RoundNotRunning("倒计时中，请稍候。", "The countdown is running.", phase=phase)
        if phase == "paused":
            raise RoundNotRunning("比赛已暂停，计时已停止。", "The round is paused.", phase=phase)
        if phase in ("ended", "published"):
            raise RoundNotRunning("比赛已结束。", "The round has ended.", phase=phase)
        deadline = self.deadline(contestant_id)
        if deadline is not None and now >= deadline:
            raise DeadlinePassed("你的作答时间已到。", "Your time is up.", deadline=deadline)

    def freeze_at(self) -> float | None:
        """Server time the public board froze, or will freeze if the clock keeps running.
        None if freeze_s is 0, play has not started, or the clock stopped (pause or end)
        before the freeze point. Pauses that came before the freeze push it back; the
        value stays known after the end, so reveal_steps can use it."""
        if self.rules.freeze_s == 0 or self.starts_at is None:
            return None
        if self.freeze_pinned is not None:
            return self.freeze_pinned
        t = self.starts_at + self._allowance(None) - self.rules.freeze_s
        for paused_at, length in self.pauses:
            if paused_at < t:
                t += length
        stopped = self._stopped_at()
        if stopped is not None and stopped < t:
            return None
        return t

    def scores_public(self) -> bool:
        """Whether contestants, spectators and the public board may see scores, verdicts
        and ranks by score: after publication, or all along when the rules choose open
        scoring. Judges and organizers always may."""
        return self.status == "published" or self.rules.open_scoring

    def hidden_from(self) -> float | None:
        """Server time from which submissions' results were kept off the public board,
        where the reveal starts: -inf without open scoring (no score was ever public),
        else `freeze_at()` (None: nothing was hidden)."""
        return self.freeze_at() if self.rules.open_scoring else -math.inf

    def frozen(self, now: float) -> bool:
        """Whether the public board is frozen: once the global remaining time is within
        freeze_s (paused or ended inside the window too), until results are published."""
        if self.rules.freeze_s == 0 or self.starts_at is None or self.status == "published":
            return False
        return self.freeze_pinned is not None or self.remaining(now) <= self.rules.freeze_s

    def time_fraction_left(self, contestant_id: str, now: float) -> float:
        """Share of this contestant's allowance still left, 0..1 (for the time section)."""
        allowance = self._allowance(contestant_id)
        return min(1.0, max(0.0, self.remaining(now, contestant_id) / allowance))

    def snapshot(self, now: float, contestant_id: str | None = None) -> RoundClock:
        """The clock as one contestant (or, with None, a judge or spectator) sees it."""
        return RoundClock(
            at=now, status=self.status, phase=self.phase(now), starts_at=self.starts_at,
            deadline=self.deadline(contestant_id),
            remaining_s=self.remaining(now, contestant_id), paused=self.status == "paused",
            frozen=self.frozen(now), freeze_at=self.freeze_at(),
            duration_s=self.rules.duration_s,
            extension_s=self._allowance(contestant_id) - self.rules.duration_s,
        )
