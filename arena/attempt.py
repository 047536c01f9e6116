"""An attempt: one contestant's play of one case, from opening to submission.

The attempt records what happened (questions with the facts they matched,
orders, the submission) and refuses what the rules do not allow. It never
reads a clock: every method takes `now` (seconds, server time) from the caller.
Methods return domain events, which the server persists before acknowledging.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from arena.cases import Case, Orderable
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
    item_id: str
    kind: Literal["exam", "test"]
    at: float


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    diagnosis: str
    differentials: tuple[str, ...] = ()
    reasoning: str = ""
    at: float = 0.0


# Domain events: what the server appends to the audit log.
class Asked(msgspec.Struct, frozen=True, tag="asked", kw_only=True):
    turn: int
    text: str
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
    # Name and flag as the contestant saw them, so a judge reads the log without the case.
    name: str = ""
    abnormal: bool = False


class Submitted(msgspec.Struct, frozen=True, tag="submitted", kw_only=True):
    diagnosis: str
    differentials: tuple[str, ...]
    reasoning: str
    at: float = 0.0  # server time of the submission


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
        """Record a question; the answer must follow with `answered` before the next one."""
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
        turn = len(self.questions) + 1
        self.questions.append(Question(turn=turn, text=text, fact_ids=None, at=now))
        self._pending_turn = turn
        return Asked(turn=turn, text=text)

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
        q = self.questions[turn - 1]
        self.questions[turn - 1] = msgspec.structs.replace(q, fact_ids=fact_ids)
        return Matched(turn=turn, fact_ids=fact_ids)

    @property
    def unmatched(self) -> list[int]:
        """Turns still to be matched (e.g. the process that took them stopped first)."""
        return [q.turn for q in self.questions if q.fact_ids is None]

    def answered(self, turn: int, answer: Answered) -> Answered:
        """Close the pending turn. A failed answer is kept out of the LLM's history."""
        if self._pending_turn != turn:
            raise BadRequest("没有等待回答的问题。", f"Turn {turn} is not pending.")
        self._pending_turn = None
        self.answers[turn] = answer
        if answer.status == "ok":
            self.transcript.append(Turn(self.questions[turn - 1].text, answer.text))
        return answer

    def order(self, item_id: str, now: float) -> tuple[OrderPlaced, Orderable]:
        """Order an exam or test; the result comes from the case, at once."""
        self._check_open(now)
        item = self.case.orderable(item_id)
        if item is None:
            raise UnknownOrder(
                "本病例没有这项检查。", f"This case offers no item {item_id!r}.", item_id=item_id
            )
        kind: Literal["exam", "test"] = "exam" if item in self.case.exams else "test"
        if not any(o.item_id == item_id for o in self.orders):
            self.orders.append(Ordered(item_id=item_id, kind=kind, at=now))
        placed = OrderPlaced(
            item_id=item_id, kind=kind, result=item.result, name=item.name, abnormal=item.abnormal
        )
        return placed, item

    def submit(
        self, diagnosis: str, differentials: list[str], reasoning: str, now: float
    ) -> Submitted:
        """Submit; once the round's allowance is used up, another submission is refused.

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
        self.submission = Submission(
            diagnosis=diagnosis, differentials=diffs, reasoning=reasoning.strip(), at=now
        )
        self.submissions += 1
        return Submitted(
            diagnosis=diagnosis, differentials=diffs, reasoning=reasoning.strip(), at=now
        )

    def retract(self, event: Asked | OrderPlaced | Submitted) -> None:
        """Undo an event the server could not make durable, as if it never happened."""
        if isinstance(event, Asked) and self.questions and self.questions[-1].turn == event.turn:
            self.questions.pop()
            self._pending_turn = None
        elif isinstance(event, OrderPlaced):
            self.orders = [o for o in self.orders if o.item_id != event.item_id]
        elif isinstance(event, Submitted):
            self.submission = None
            self.submissions -= 1

    def replay(self, kind: str, payload: dict[str, object], at: float) -> None:
        """Fold one recorded event back in (rebuilding an attempt from the audit log).

        Events were checked when they happened, so replay applies them without the
        clock or deadline checks; unknown kinds are ignored.
        """
        if kind == "asked":
            asked = msgspec.convert(payload, Asked)
            self.questions.append(
                Question(turn=asked.turn, text=asked.text, fact_ids=asked.fact_ids, at=at)
            )
            self._pending_turn = asked.turn
        elif kind == "matched":
            m = msgspec.convert(payload, Matched)
            if 0 < m.turn <= len(self.questions):
                self.matched(m.turn, m.fact_ids)
        elif kind == "answered":
            answer = msgspec.convert(payload, Answered)
            if self._pending_turn == answer.turn:
                self.answered(answer.turn, answer)
        elif kind == "ordered":
            placed = msgspec.convert(payload, OrderPlaced)
            if placed.item_id not in self.ordered_ids:
                self.orders.append(Ordered(item_id=placed.item_id, kind=placed.kind, at=at))
        elif kind == "submitted":
            sub = msgspec.convert(payload, Submitted)
            self.submission = Submission(
                diagnosis=sub.diagnosis, differentials=sub.differentials,
                reasoning=sub.reasoning, at=sub.at or at,
            )
            self.submissions += 1

    @property
    def pending_turn(self) -> int | None:
        return self._pending_turn

    @property
    def asked_fact_ids(self) -> set[str]:
        return {f for q in self.questions for f in q.fact_ids or ()}

    @property
    def ordered_ids(self) -> list[str]:
        return [o.item_id for o in self.orders]
