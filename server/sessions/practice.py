"""A practice round: one student, one case, untimed, on one connection.

Every request is decided by the `Attempt`, made durable and applied by the
`Journal`, mirrored into live state, and only then acknowledged; questions go
through a `Turn`, as they do in a contest.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import msgspec

from arena.attempt import Attempt
from arena.cases import Case
from arena.catalogue import catalogue
from arena.errors import DuplicateRequest, RoundNotRunning, UnknownOrder
from arena.scoring import score
from server import protocol
from server.services.boards import attempt_progress
from server.services.library import describe_patient, require_practice
from server.services.replay import score_versions, scored_payload
from server.sessions.client import Report
from server.sessions.context import Context
from server.sessions.journal import Journal
from server.sessions.turn import Turn
from server.store.live import Progress

log = logging.getLogger("arena.practice")


def menu(case: Case) -> list[protocol.MenuItem]:
    """What a contestant may order: the shared menu (arena.catalogue), never the results."""
    return [protocol.MenuItem(id=e.id, name=e.name, kind=e.kind, cost_yuan=e.cost_yuan,
                              minutes=e.minutes) for e in catalogue().menu(case)]


class Practice:
    def __init__(
        self, ctx: Context, send: Callable[[protocol.ServerMsg], None], report: Report, *,
        name: str, staff: str = "",
    ) -> None:
        self.ctx = ctx
        self.send = send
        self.report = report
        self.name = name
        # "organizer:admin" when a judge or organizer practises (they may open any case,
        # drafts and cases reserved by a round included); "" for a student.
        self.staff = staff
        self.journal: Journal | None = None
        self.turn: Turn | None = None
        self._scored: protocol.Scored | None = None

    @property
    def actor(self) -> str:
        return self.staff or f"student:{self.name}"

    def rate_keys(self, conn_id: str, address: str) -> list[tuple[str, str]]:
        """The limits a question counts against: this connection, and its address (a
        reconnect must not buy a fresh allowance of generations)."""
        return [("ask", f"conn:{conn_id}"), ("practice_address", address)]

    async def handle(self, msg: protocol.ClientMsg) -> None:
        if isinstance(msg, protocol.StartPractice):
            await self.start(msg)
        elif isinstance(msg, protocol.Ask):
            await self._require()[1].ask(msg, self.ctx.clock())
        elif isinstance(msg, protocol.Order):
            await self.order(msg)
        elif isinstance(msg, protocol.Submit):
            await self.submit(msg)

    def _require(self) -> tuple[Journal, Turn]:
        if self.journal is None or self.turn is None:
            raise RoundNotRunning(
                "还没有开始练习，请先选择病例。", "No practice round is running."
            )
        return self.journal, self.turn

    async def _progress(self) -> None:
        journal, _ = self._require()
        row = attempt_progress(journal.attempt, Progress(
            name=self.name, score=self._scored.card.total if self._scored else None,
            last_action=self.ctx.clock(),
        ))
        await self.ctx.live.set_progress(journal.round_id, journal.attempt_id, row)

    async def start(self, msg: protocol.StartPractice) -> None:
        # A student may open only a case released to practice and used by no round whose
        # results are unpublished; to them any other case does not exist.
        case = await require_practice(
            self.ctx.audit.pool, self.ctx.library, msg.case_id, staff=bool(self.staff)
        )
        await self.leave()  # a new practice abandons the previous one on this connection
        now = self.ctx.clock()
        round_id, attempt_id = uuid.uuid4().hex, uuid.uuid4().hex
        await self.ctx.audit.append(
            round_id=round_id, attempt_id=attempt_id, actor=self.actor, kind="practice_started",
            payload={"case_id": case.id, "name": self.name, "engine": self.ctx.engine.name},
            request_id=msg.id,
        )
        attempt = Attempt(case, self.ctx.library.matchers[case.id], started_at=now)
        self.journal = journal = Journal(
            self.ctx, attempt, round_id=round_id, attempt_id=attempt_id, actor=self.actor,
            publish=False,
        )
        # Practice: the scripted patient may always stand in while the LLM is down.
        self.turn = Turn(self.ctx, journal, self.send, self.report,
                         fallback_ok=lambda: True, on_change=self._progress)
        self._scored = None
        await self.ctx.live.start_round(round_id, {
            "mode": "practice", "case_id": case.id, "status": "running", "started_at": now,
        })
        await self._progress()
        o = case.opening
        self.send(protocol.PracticeStarted(
            re=msg.id, round_id=round_id, attempt_id=attempt_id, case_id=case.id,
            title=case.title, patient=describe_patient(case),
            chief_complaint=o.chief_complaint, statement=o.statement, appearance=o.appearance,
            vitals=o.vitals, menu=menu(case),
        ))

    async def order(self, msg: protocol.Order) -> None:
        journal, _ = self._require()
        await place_order(journal, msg, self.ctx.clock(), self.send)
        await self._progress()

    async def submit(self, msg: protocol.Submit) -> None:
        journal, _ = self._require()
        attempt = journal.attempt
        if self._scored is not None and self._scored.re == msg.id:
            self.send(self._scored)  # the retry of a submission already applied
            return
        # The card and the key go out with the score: not for a case that was withdrawn
        # from practice (made a draft, contest-only or reserved by a round) since it began.
        await require_practice(
            self.ctx.audit.pool, self.ctx.library, attempt.case.id, staff=bool(self.staff)
        )
        await journal.matched()
        submitted = attempt.submit(msg.diagnosis, msg.differentials, msg.reasoning,
                                   self.ctx.clock())
        card = score(attempt.case, attempt.questions, attempt.ordered_ids,
                     submitted.submission())
        versions = score_versions(
            self.ctx.settings, self.ctx.library, attempt.case.id, self.ctx.engine.name)
        if not await journal.record_submission(
            submitted, msgspec.to_builtins(submitted), scored_payload(card, versions), card,
            msg.id,
        ):
            raise DuplicateRequest("这次提交已经收到。", "Submission already received.")
        rank, of = await self.ctx.live.post_score(
            f"practice:{attempt.case.id}", journal.attempt_id, card.total
        )
        # The answer key and teaching points reach the student only now, after their own
        # submission, on their own card.
        self._scored = protocol.Scored(
            re=msg.id, card=card, rank=rank, of=of, key=protocol.answer_key_view(attempt.case)
        )
        await self._progress()
        await self._export(card)
        self.send(self._scored)

    async def _export(self, card: object) -> None:
        # The export is a copy for teachers; PostgreSQL already holds the record.
        journal, _ = self._require()
        try:
            events = await self.ctx.audit.events(attempt_id=journal.attempt_id)
            doc = {"attempt_id": journal.attempt_id, "name": self.name, "card": card,
                   "events": [{"kind": e.kind, "payload": e.payload} for e in events]}
            await self.ctx.objects.put(
                f"attempts/{journal.attempt_id}.json", msgspec.json.encode(doc),
                "application/json",
            )
        except Exception:
            log.exception("export of attempt %s failed", journal.attempt_id)

    async def leave(self, conn: object = None) -> None:
        """The student left (or started another case): stop any answer in flight, which
        closes the upstream stream, and record it as failed."""
        if self.turn is not None:
            await self.turn.close()
        if self.journal is not None:
            self.journal.stop()


async def place_order(
    journal: Journal, msg: protocol.Order, now: float, send: Callable[[protocol.ServerMsg], None]
) -> None:
    """Order an exam or test: decided, recorded, applied, then its result is shown."""
    item_id = msg.item_id
    if msg.text.strip():
        found = catalogue().find(journal.attempt.case, msg.text)
        if found is None:
            raise UnknownOrder(
                f"没有找到“{msg.text.strip()}”这项检查，请换个说法（例如：血常规、胸片、心电图）。",
                f"No exam or test is called {msg.text.strip()!r}.", text=msg.text)
        item_id = found
    placed, item = journal.attempt.order(item_id, now)
    await journal.record(placed, msg.id)  # a retried order shows the same result again
    send(protocol.OrderResult(
        re=msg.id, item_id=placed.menu_id, name=item.name, kind=placed.kind, result=item.result,
        abnormal=item.abnormal, cost_yuan=item.cost_yuan,
    ))
