"""Judges' rulings: adjudicating a free-text diagnosis and overriding a score line.

A ruling runs in a transaction holding the attempt's lock: it reads the current
card (the last `scored` event), applies the pure change from `arena.scoring`,
and appends the ruling (with the old and the new value, the judge and the reason)
and the new card together, so the log always explains every card. Only then does
the board move and the transcript channel carry the change to judges and to the
contestant.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from arena.errors import BadRequest, DuplicateRequest, NotFound
from arena.scoring import ScoreCard, adjudicate, override
from server import protocol
from server.sessions.context import Context
from server.sessions.journal import entry, publish_entry
from server.store.scores import contestant_name, current_card, latest_per_attempt

log = logging.getLogger("arena.judging")


def round_of(attempt_id: str) -> str:
    round_id, dot, _ = attempt_id.partition(".")
    if not dot:
        raise NotFound("没有这位选手的作答记录。", f"No attempt {attempt_id!r}.")
    return round_id


async def rule(
    res: Context, judge: str, msg: protocol.Adjudicate | protocol.Override, name: str = ""
) -> None:
    """Apply a judge's ruling durably, then update the board and the transcript.

    `judge` is the account (the audit actor); `name`, its display name, signs the
    note the contestant reads on the card.
    """
    reason = msg.reason.strip()
    if not reason:
        raise BadRequest("请填写理由。", "A reason is required.")
    round_id = round_of(msg.attempt_id)
    rnd = await res.rounds.get(round_id)
    actor = f"judge:{judge}"
    async with res.audit.locked(msg.attempt_id) as conn:
        scored = await current_card(conn, msg.attempt_id)
        if scored is None:
            raise BadRequest("该选手尚未提交诊断，无法评分。", "Nothing submitted yet.")
        card = msgspec.convert(scored, ScoreCard)
        # Whose attempt, in words, so the round's audit log reads without a lookup.
        contestant = await contestant_name(conn, msg.attempt_id)
        by = name or judge
        note = f"评委 {by}：{reason}"
        if isinstance(msg, protocol.Adjudicate):
            new = adjudicate(card, msg.verdict, rnd.rules.weights, note)
            kind = "adjudicated"
            payload: dict[str, Any] = {
                "verdict": msg.verdict, "old_verdict": card.verdict, "reason": reason, "by": by,
                "name": contestant or "",
                "old_points": card.sections[0].points, "new_points": new.sections[0].points,
                "old_total": card.total, "new_total": new.total,
            }
        else:
            new = override(card, msg.section, msg.line, msg.points, note)
            old_line = next(s for s in card.sections if s.key == msg.section).lines[msg.line]
            kind = "overridden"
            payload = {
                "section": msg.section, "line": msg.line, "label": old_line.label,
                "old_points": old_line.points, "new_points": round(msg.points, 2),
                "reason": reason, "old_total": card.total, "new_total": new.total, "by": by,
                "name": contestant or "",
            }
        applied = await res.audit.append(
            round_id=round_id, attempt_id=msg.attempt_id, actor=actor, kind=kind,
            payload=payload, request_id=msg.id, conn=conn,
        )
        if applied is None:
            raise DuplicateRequest("这项裁定已经记录。", "This ruling was already recorded.")
        await res.audit.append(
            round_id=round_id, attempt_id=msg.attempt_id, actor=actor, kind="scored",
            # The ruled card keeps the versions of the machine score it amends.
            payload={**msgspec.to_builtins(new), "versions": scored.get("versions")},
            conn=conn,
        )
    now = res.clock()
    try:
        # The ruling is durable: what follows only shows it live. With Redis away, the
        # judge still gets the acknowledgement (a retry would only hear "already
        # recorded"); the board and open transcripts catch up from the log.
        progress = (await res.live.progress(round_id)).get(msg.attempt_id)
        if progress is not None:
            progress.score = new.total
            await res.live.set_progress(round_id, msg.attempt_id, progress)
        res.boards.touch(round_id)
        await publish_entry(res, msg.attempt_id, entry(kind, actor, payload, now))
        await publish_entry(res, msg.attempt_id, entry("scored", actor, new, now), card=new)
    except Exception as exc:
        log.warning("ruling on %s recorded, not shown live (%s)", msg.attempt_id,
                    type(exc).__name__)


async def review_queue(res: Context, round_id: str) -> list[dict[str, Any]]:
    """The judges' queue: attempts whose current card awaits a judge, oldest first.

    An attempt is in it while its last `scored` event has the verdict "needs_judge"
    (the rules could not decide its diagnosis); a ruling (`rule`) appends a new card
    and takes it out. Each item: attempt_id, name, diagnosis (as written), reason
    (the rule's words) and the id of the card's event, which orders the queue.
    """
    rows = await latest_per_attempt(res.audit.pool, round_id)
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        last.setdefault(r["attempt_id"], {})[r["kind"]] = r
    queue = []
    for attempt_id, kinds in last.items():
        scored = kinds.get("scored")
        if scored is None or scored["payload"].get("verdict") != "needs_judge":
            continue
        lines = (scored["payload"].get("sections") or [{}])[0].get("lines") or [{}]
        started, submitted = kinds.get("attempt_started"), kinds.get("submitted")
        queue.append({
            "attempt_id": attempt_id,
            "name": started["payload"].get("name", "") if started else "",
            "diagnosis": submitted["payload"].get("diagnosis", "") if submitted else "",
            "reason": lines[0].get("note", ""),
            "event_id": scored["id"],
        })
    return sorted(queue, key=lambda q: q["event_id"])
