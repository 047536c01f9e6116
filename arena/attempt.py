"""An attempt: one contestant's play of one case, from opening to submission.

The attempt records what happened (questions with the facts they matched,
orders, the submission) and refuses what the rules do not allow. It never
reads a clock: every method takes `now` (seconds, server time) from the caller.

Decide, then persist, then apply (principle 10): `ask`, `order`, `submit`,
`matched` and `answered` only decide: they check the request against the state
and return the domain event without changing anything. The server makes the
event durable and only then calls `apply`, the one fold of the attempt's log,
which is also what rebuilds an attempt from PostgreSQL (`replay`, `rebuild`).
So memory never runs ahead of the log and nothing is ever taken back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from arena.cases import Case, Orderable
from arena.catalogue import Catalogue, catalogue
from arena.errors import (
    AlreadySubmitted,
    BadRequest,
    DeadlinePassed,
    RoundNotRunning,
    TurnInProgress,
    UnknownOrder,
)
from arena.matching import QuestionMatcher
from arena.patient import Turn

MAX_QUESTION_CHARS = 500
MAX_DIAGNOSIS_CHARS = 200
MAX_REASONING_CHARS = 4000
MAX_DIFFERENTIALS = 10


class Question(msgspec.Struct, frozen=True, kw_only=True):
    turn: int
    text: str
    # None until the question is matched (`Attempt.matched`): matching embeds the text,
    # milliseconds of CPU that the patient's answer does not wait for.
    fact_ids: tuple[str, ...] | None
    at: float


class Ordered(msgspec.Struct, frozen=True, kw_only=True):
    item_id: str  # the case's item (what scoring reads) or a catalogue entry's id
    kind: Literal["exam", "test"]
    at: float
    menu_id: str  # the menu's id of what was ordered
    name: str
    result: str
    abnormal: bool
    cost_yuan: float


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    diagnosis: str
    differentials: tuple[str, ...] = ()
    reasoning: str = ""
    at: float = 0.0


# Domain events: what the server appends to the audit log.
class Asked(msgspec.Struct, frozen=True, tag="asked", kw_only=True):
    turn: int
    text: str
    at: float = 0.0  # server time of the question (older logs: the event's own time)
    # Logs written before matching moved out of `ask` carry the facts here.
    fact_ids: tuple[str, ...] | None = None


class Matched(msgspec.Struct, frozen=True, tag="matched", kw_only=True):
    """The facts a question asked about, as the matcher read it (scoring counts these)."""

    turn: int
    fact_ids: tuple[str, ...]


class Answered(msgspec.Struct, frozen=True, tag="answered", kw_only=True):
    turn: int
    text: str
    status: Literal["ok", "failed"]
    engine: str
    tokens_in: int = 0
    tokens_out: int = 0
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    error: str = ""
    # The kind of answer-key term the output guard stopped ("diagnosis", ...), if any:
    # the text is what the contestant saw, which ends with the patient's deflection.
    guard: str = ""


class OrderPlaced(msgspec.Struct, frozen=True, tag="ordered", kw_only=True):
    item_id: str
    kind: Literal["exam", "test"]
    result: str
    at: float = 0.0  # server time of the order (older logs: the event's own time)
    # Name and flag as the contestant saw them, so a judge reads the log without the case.
    name: str = ""
    abnormal: bool = False
    # What the contestant clicked or typed into (a catalogue entry; "" in older logs, where
    # the menu was the case's own items) and what it cost (None in older logs: the item's).
    menu_id: str = ""
    cost_yuan: float | None = None


class Submitted(msgspec.Struct, frozen=True, tag="submitted", kw_only=True):
    diagnosis: str
    differentials: tuple[str, ...]
    reasoning: str
    at: float = 0.0  # server time of the submission

    def submission(self, at: float = 0.0) -> Submission:
        """What scoring reads: the submission this event makes the current one."""
        return Submission(diagnosis=self.diagnosis, differentials=self.differentials,
                          reasoning=self.reasoning, at=self.at or at)


# The events of an attempt's log that change the attempt; `apply` folds them.
AttemptEvent = Asked | Matched | Answered | OrderPlaced | Submitted
_EVENT_TYPES: dict[str, Any] = {
    "asked": Asked, "matched": Matched, "answered": Answered, "ordered": OrderPlaced,
    "submitted": Submitted,
}


def decode_attempt_event(kind: str, payload: dict[str, Any]) -> AttemptEvent | None:
    """The attempt event stored as (`kind`, `payload`); None for a kind that does not change
    an attempt (started, scored, a ruling). msgspec.ValidationError for a payload that does
    not fit its kind."""
    typ = _EVENT_TYPES.get(kind)
    if typ is None:
        return None
    event: AttemptEvent = msgspec.convert(payload, typ)
    return event


def event_kind(event: AttemptEvent) -> str:
    """The kind an event is stored under in the log (its tag)."""
    return str(type(event).__struct_config__.tag)


class Attempt:
    """State of one contestant's attempt at a case; `deadline` None means untimed."""

    def __init__(
        self,
        case: Case,
        matcher: QuestionMatcher,
        *,
        started_at: float,
        deadline: float | None = None,
        max_submissions: int = 1,
    ) -> None:
        self.case = case
        self.matcher = matcher
        self.started_at = started_at
        self.deadline = deadline
        self.max_submissions = max_submissions
        self.submissions = 0
        self.questions: list[Question] = []
        self.transcript: list[Turn] = []
        self.answers: dict[int, Answered] = {}
        self.orders: list[Ordered] = []
        self.submission: Submission | None = None
        self._pending_turn: int | None = None

    @property
    def submissions_left(self) -> int:
        return max(0, self.max_submissions - self.submissions)

    def _check_open(self, now: float) -> None:
        if self.submission is not None and self.submissions_left == 0:
            raise RoundNotRunning("你已提交诊断，本场已结束。", "You have already submitted.")
        if self.deadline is not None and now > self.deadline:
            raise DeadlinePassed("时间已到，不能再进行操作。", "Time is up.")

    def ask(self, text: str, now: float) -> Asked:
        """Decide a question; once applied, its answer must be applied before the next one."""
        self._check_open(now)
        text = text.strip()
        if not text:
            raise BadRequest("问题不能为空。", "The question is empty.")
        if len(text) > MAX_QUESTION_CHARS:
            raise BadRequest(
                f"问题太长（最多 {MAX_QUESTION_CHARS} 字）。",
                f"Question too long (max {MAX_QUESTION_CHARS} characters).",
            )
        if self._pending_turn is not None:
            raise TurnInProgress(
                "病人还在回答上一个问题，请稍候。", "The patient is still answering."
            )
        return Asked(turn=len(self.questions) + 1, text=text, at=now)

    def topic(self, turn: int) -> tuple[str, ...]:
        """The facts the question before `turn` covered: what a follow-up ("多久了？") is
        about. Match questions in turn order, so that one is known."""
        before = self.questions[turn - 2] if turn >= 2 else None
        return (before.fact_ids or ()) if before else ()

    def match(self, turn: int) -> tuple[str, ...]:
        """The facts question `turn` asks about. Reads only: safe to run off the event
        loop while the answer streams; `matched` then records the result."""
        q = self.questions[turn - 1]
        return tuple(m.fact_id for m in self.matcher.match(q.text, topic=self.topic(turn)))

    def matched(self, turn: int, fact_ids: tuple[str, ...]) -> Matched:
        """Decide the match of question `turn` (from `match`, run wherever is convenient)."""
        if not 0 < turn <= len(self.questions):
            raise BadRequest("没有这个问题。", f"No question {turn}.")
        return Matched(turn=turn, fact_ids=fact_ids)

    @property
    def unmatched(self) -> list[int]:
        """Turns still to be matched (e.g. the process that took them stopped first)."""
        return [q.turn for q in self.questions if q.fact_ids is None]

    def answered(self, turn: int, answer: Answered) -> Answered:
        """Decide the answer that closes the pending turn."""
        if self._pending_turn != turn or answer.turn != turn:
            raise BadRequest("没有等待回答的问题。", f"Turn {turn} is not pending.")
        return answer

    def order(self, item_id: str, now: float, menu: Catalogue | None = None
              ) -> tuple[OrderPlaced, Orderable]:
        """Order an exam or test from the menu (`menu`, the shared catalogue by default):
        the case's result where it has one, else the catalogue's normal one, at once."""
        self._check_open(now)
        resolved = (menu or catalogue()).resolve(self.case, item_id)
        if resolved is None:
            raise UnknownOrder(
                "没有这项检查。", f"No item {item_id!r} on the menu.", item_id=item_id
            )
        item = resolved.item
        placed = OrderPlaced(
            item_id=item.id, kind=resolved.kind, result=item.result, name=item.name,
            abnormal=item.abnormal, at=now, menu_id=resolved.menu_id,
            cost_yuan=item.cost_yuan,
        )
        return placed, item

    def submit(
        self, diagnosis: str, differentials: list[str], reasoning: str, now: float
    ) -> Submitted:
        """Decide a submission; once the round's allowance is used up, another is refused.

        A later submission (where the rules allow several) replaces the earlier one.
        """
        if self.submissions_left == 0:
            raise AlreadySubmitted("你已经提交过诊断，不能重复提交。", "Already submitted.")
        self._check_open(now)
        diagnosis = diagnosis.strip()
        if not diagnosis:
            raise BadRequest("请填写主要诊断。", "The primary diagnosis is empty.")
        if len(diagnosis) > MAX_DIAGNOSIS_CHARS or len(reasoning) > MAX_REASONING_CHARS:
            raise BadRequest("诊断或诊断依据过长。", "Diagnosis or reasoning too long.")
        diffs = tuple(d.strip() for d in differentials if d.strip())
        if len(diffs) > MAX_DIFFERENTIALS:
            raise BadRequest(
                f"鉴别诊断最多 {MAX_DIFFERENTIALS} 项。",
                f"At most {MAX_DIFFERENTIALS} differentials.",
            )
        return Submitted(
            diagnosis=diagnosis, differentials=diffs, reasoning=reasoning.strip(), at=now
        )

    def apply(self, event: AttemptEvent, at: float = 0.0) -> None:
        """Fold one durable event into the attempt: the only method that changes it.

        Used live (after the event is in the log) and to rebuild from the log alike, so it
        applies without the clock or deadline checks, which ran when the event was decided.
        `at` is the log's time of the event, for events stored before they carried their own.
        """
        if isinstance(event, Asked):
            if event.turn != len(self.questions) + 1:
                return  # already folded (a duplicate delivery of the same event)
            self.questions.append(Question(
                turn=event.turn, text=event.text, fact_ids=event.fact_ids, at=event.at or at))
            self._pending_turn = event.turn
        elif isinstance(event, Matched):
            if 0 < event.turn <= len(self.questions):
                q = self.questions[event.turn - 1]
                self.questions[event.turn - 1] = msgspec.structs.replace(
                    q, fact_ids=event.fact_ids)
        elif isinstance(event, Answered):
            if self._pending_turn != event.turn:
                return  # a turn already closed (by this process or the one it replaced)
            self._pending_turn = None
            self.answers[event.turn] = event
            if event.status == "ok":
                self.transcript.append(Turn(self.questions[event.turn - 1].text, event.text))
        elif isinstance(event, OrderPlaced):
            if event.item_id not in self.ordered_ids:
                cost = event.cost_yuan
                if cost is None:
                    own = self.case.orderable(event.item_id)
                    cost = own.cost_yuan if own else 0.0
                self.orders.append(Ordered(
                    item_id=event.item_id, kind=event.kind, at=event.at or at,
                    menu_id=event.menu_id or event.item_id, name=event.name,
                    result=event.result, abnormal=event.abnormal, cost_yuan=cost))
        else:
            self.submission = event.submission(at)
            self.submissions += 1

    def replay(self, kind: str, payload: dict[str, Any], at: float) -> None:
        """Fold one stored event (`kind`, `payload`) back in; other kinds are ignored."""
        event = decode_attempt_event(kind, payload)
        if event is not None:
            self.apply(event, at)

    def rebuild(self, log: Iterable[tuple[str, dict[str, Any], float]]) -> Attempt:
        """Fold a whole log of (kind, payload, at) into this fresh attempt; returns it."""
        for kind, payload, at in log:
            self.replay(kind, payload, at)
        return self

    @property
    def pending_turn(self) -> int | None:
        return self._pending_turn

    @property
    def asked_fact_ids(self) -> set[str]:
        return {f for q in self.questions for f in q.fact_ids or ()}

    @property
    def ordered_ids(self) -> list[str]:
        return [o.item_id for o in self.orders]
