"""The journal of one attempt: decide, then persist, then apply (principle 10).

Every session changes its attempt only through `record`: the event the attempt
decided is appended to the audit log, and only once PostgreSQL has it is it
folded into the attempt (`Attempt.apply`) and, for a contest, published on the
attempt's channel for the judges. A failed append leaves the attempt exactly as
it was, so nothing ever has to be taken back.

The journal also matches questions for scoring in the matching pool, after the
fact and in turn order, and records each match the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from arena.attempt import Attempt, AttemptEvent, Submitted, event_kind
from server import protocol
from server.sessions.context import Context

log = logging.getLogger("arena.journal")


def attempt_channel(attempt_id: str) -> str:
    return f"attempt:{attempt_id}"


def entry(kind: str, actor: str, payload: Any, at: float) -> protocol.TranscriptEntry:
    return protocol.TranscriptEntry(
        at=round(at * 1000, 1), kind=kind, actor=actor, payload=msgspec.to_builtins(payload),
    )


async def publish_entry(
    ctx: Context, attempt_id: str, e: protocol.TranscriptEntry, card: Any = None
) -> None:
    msg = protocol.TranscriptLive(
        ch=attempt_channel(attempt_id), attempt_id=attempt_id, entry=e, card=card
    )
    await ctx.bus.publish(attempt_channel(attempt_id), protocol.encode(msg))


class Journal:
    def __init__(
        self, ctx: Context, attempt: Attempt, *, round_id: str, attempt_id: str, actor: str,
        publish: bool,
    ) -> None:
        self.ctx = ctx
        self.attempt = attempt
        self.round_id = round_id
        self.attempt_id = attempt_id
        self.actor = actor
        self.publish = publish  # contests show each entry live to judges; practice does not
        self._matching: asyncio.Task[None] | None = None  # the last turn's background match
        self._hurry = asyncio.Event()  # a submission waits: match without waiting for answers

    async def record(
        self, event: AttemptEvent, request_id: str | None, *, actor: str | None = None,
        publish: bool = True,
    ) -> bool:
        """Make `event` durable, then apply it; False if `request_id` was already applied
        (the event is then not applied again). Raises if PostgreSQL refuses it."""
        actor = actor or self.actor
        kind = event_kind(event)
        event_id = await self.ctx.audit.append(
            round_id=self.round_id, attempt_id=self.attempt_id, actor=actor, kind=kind,
            payload=event, request_id=request_id,
        )
        if event_id is None:
            return False
        self.attempt.apply(event)
        if self.publish and publish:
            await self._show(entry(kind, actor, event, self.ctx.clock()))
        return True

    async def _show(self, e: protocol.TranscriptEntry, card: Any = None) -> None:
        """Show a durable entry to the judges watching live. Best effort: the event is
        already in the log (a judge who opens the attempt again reads it from there), and
        a Redis failure here must not make the caller believe it was not recorded: that
        once had a turn retry an answer already applied, and wedge for good."""
        try:
            await publish_entry(self.ctx, self.attempt_id, e, card)
        except Exception as exc:
            log.warning("attempt %s: live entry not published (%s)", self.attempt_id,
                        type(exc).__name__)

    async def record_submission(
        self, submitted: Submitted, payload: dict[str, Any], scored: dict[str, Any],
        card: Any, request_id: str,
    ) -> bool:
        """The submission and its score, atomically; False for a retried request id."""
        base = {"round_id": self.round_id, "attempt_id": self.attempt_id}
        async with self.ctx.audit.locked(self.attempt_id) as conn:
            first = await self.ctx.audit.append(
                **base, actor=self.actor, kind="submitted", payload=payload,
                request_id=request_id, conn=conn)
            if first is None:
                return False
            await self.ctx.audit.append(
                **base, actor=self.actor, kind="scored", payload=scored, conn=conn)
        self.attempt.apply(submitted)
        if self.publish:
            now = self.ctx.clock()
            await self._show(entry("submitted", self.actor, payload, now))
            await self._show(entry("scored", "system", card, now), card)
        return True

    # ---- matching for scoring ------------------------------------------------------------

    def match_later(self, turns: list[int], *, after: asyncio.Future[None] | None = None
                    ) -> None:
        """Match `turns` for scoring in the matching pool, after those before them and, given
        `after` (the answer's task), once it is done or a submission needs the match.

        Waiting for the answer keeps the pool's hand-offs (a thread of the executor that
        takes the GIL) out of the moment a burst of questions is being answered, where they
        cost TTFT (docs/benchmarks.md, "The rebuild (issue 11)"); the score is only needed
        at submission, which hurries it (`matched`)."""
        if turns:
            self._matching = asyncio.create_task(self._match(turns, self._matching, after))

    async def _match(self, turns: list[int], before: asyncio.Task[None] | None,
                     after: asyncio.Future[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # a follow-up is read against the turn before it
        if after is not None and not self._hurry.is_set():
            hurry: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
            waits: list[asyncio.Future[Any]] = [after, hurry]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurry.cancel()
        a = self.attempt
        for turn in turns:
            try:
                fact_ids = await self.ctx.background.match(
                    a.case.id, a.questions[turn - 1].text, a.topic(turn)
                )
                # Judges read questions and answers; a match is scoring's business.
                await self.record(
                    a.matched(turn, fact_ids), None, actor="system", publish=False)
            except Exception:  # the turn stays unmatched and is matched again on rejoin
                log.exception("matching turn %s of attempt %s failed", turn, self.attempt_id)

    async def matched(self) -> None:
        """Wait until every question so far is matched: scoring counts what they covered."""
        if self._matching is not None:
            self._hurry.set()  # an answer still streaming must not hold the score back
            try:
                await asyncio.wait([self._matching])
            finally:
                self._hurry.clear()

    def stop(self) -> None:
        if self._matching is not None:
            self._matching.cancel()
