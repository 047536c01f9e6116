"""Reproducing results from the event log: score versions, rescore and replay.

Principle 10: every result records what produced it, and one fold of the log
rebuilds it. `score_versions` is what a `scored` event carries beside the card.
`rescore` folds each attempt of a round back to the moment of each submission and
scores it again with the current case library and rules, reporting every line that
comes out differently. `replay` folds the round's events into the board
(`boards.fold_progress`, the same fold that rebuilds live state) and compares it
with the board recorded when results were published.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arena import leaderboard
from arena.attempt import Attempt
from arena.matching import MATCHER_VERSION
from arena.prompt import PROMPT_VERSION
from arena.rounds import ROUND_EVENT_KINDS, Round, decode_round_event
from arena.scoring import RULES_VERSION, score
from server.services.boards import fold_progress
from server.services.library import Library
from server.settings import Settings
from server.store.audit import Event

# Board row fields a replay must reproduce; last_action is a clock reading (the
# process's clock live, the database's in the log), not a result.
_BOARD_FIELDS = ("rank", "attempt_id", "name", "team", "school", "score", "submitted",
                 "elapsed_s", "cost_yuan", "questions", "orders")


def score_versions(
    settings: Settings, library: Library, case_id: str, engine: str
) -> dict[str, Any]:
    """What produced a score: case content hash, rules, matcher, engine, model, prompt.

    `engine` is the patient engine that served the attempt ("scripted" or "llm"); model
    and prompt are recorded for the LLM engine only (None for the scripted patient).
    """
    llm = engine == "llm"
    return {
        "case_hash": library.content_hash(case_id), "rules": RULES_VERSION,
        "matcher": MATCHER_VERSION, "embeddings": settings.embeddings, "engine": engine,
        "model": settings.llm_model if llm else None, "prompt": PROMPT_VERSION if llm else None,
    }


def scored_payload(card: Any, versions: dict[str, Any]) -> dict[str, Any]:
    """The payload of a `scored` event: the card's fields and the versions beside them."""
    return {**msgspec.to_builtins(card), "versions": versions}


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    attempt_id: str
    event_id: int  # the `scored` event compared
    what: str  # "total", "verdict", a section key, "section.line", or "versions.*"
    recorded: Any
    now: Any


class RescoreReport(msgspec.Struct, kw_only=True):
    round_id: str
    scored: int = 0  # submissions scored again
    differences: list[Difference] = msgspec.field(default_factory=list)  # points, verdicts
    notes: list[Difference] = msgspec.field(default_factory=list)  # versions that changed


def _round_at(round_events: list[Event]) -> Round:
    return Round.replay(decode_round_event(e.kind, e.payload) for e in round_events)


def _compare(card: dict[str, Any], recorded: dict[str, Any], attempt_id: str, event_id: int
             ) -> list[Difference]:
    out: list[Difference] = []

    def diff(what: str, old: Any, new: Any) -> None:
        if old != new:
            out.append(Difference(attempt_id=attempt_id, event_id=event_id, what=what,
                                  recorded=old, now=new))

    for key in ("total", "max_total", "verdict", "cost_yuan"):
        diff(key, recorded.get(key), card.get(key))
    old_sections = {s["key"]: s for s in recorded.get("sections", [])}
    new_sections = {s["key"]: s for s in card.get("sections", [])}
    for key in sorted(old_sections.keys() | new_sections.keys()):
        old, new = old_sections.get(key), new_sections.get(key)
        if old is None or new is None:
            diff(key, old and old["points"], new and new["points"])
            continue
        diff(key, old["points"], new["points"])
        old_lines, new_lines = old["lines"], new["lines"]
        for i in range(max(len(old_lines), len(new_lines))):
            a = old_lines[i] if i < len(old_lines) else None
            b = new_lines[i] if i < len(new_lines) else None
            pick = ("label", "met", "points")
            diff(f"{key}.{i}", a and {k: a[k] for k in pick}, b and {k: b[k] for k in pick})
    return out


def rescore(events: list[Event], library: Library, settings: Settings, engine: str
            ) -> RescoreReport:
    """Score every submission of a round again from its events (all of the round's, in id
    order) and the current library; report each point that differs from the machine's
    recorded card. Judges' rulings are not rules: their cards are left out."""
    round_events = [e for e in events if e.attempt_id is None and e.kind in ROUND_EVENT_KINDS]
    report = RescoreReport(round_id=events[0].round_id if events else "")
    if not round_events:
        return report
    rules = _round_at(round_events[:1]).rules
    case = library.get(rules.case_id)
    attempts: dict[str, Attempt] = {}
    contestants: dict[str, str] = {}
    waiting: dict[str, Round] = {}  # attempt -> the round as it was at its submission
    for e in events:
        if e.attempt_id is None:
            continue
        attempt = attempts.get(e.attempt_id)
        if attempt is None:
            attempt = attempts[e.attempt_id] = Attempt(
                case, library.matchers[case.id], started_at=0.0,
                max_submissions=rules.max_submissions,
            )
        if e.kind == "attempt_started":
            contestants[e.attempt_id] = str(e.payload.get("contestant_id", ""))
        elif e.kind == "scored":
            rnd = waiting.pop(e.attempt_id, None)
            if rnd is None or e.actor.startswith("judge:") or attempt.submission is None:
                continue
            card = score(
                case, attempt.questions, attempt.ordered_ids, attempt.submission, rules.weights,
                time_points=rules.time_points if rules.time_counts else 0.0,
                time_fraction_left=rnd.time_fraction_left(
                    contestants.get(e.attempt_id, ""), attempt.submission.at),
            )
            report.scored += 1
            report.differences += _compare(
                msgspec.to_builtins(card), e.payload, e.attempt_id, e.id)
            now = score_versions(settings, library, case.id, engine)
            for key, old in (e.payload.get("versions") or {}).items():
                if key in ("case_hash", "rules", "matcher") and old != now[key]:
                    report.notes.append(Difference(attempt_id=e.attempt_id, event_id=e.id,
                                                   what=f"versions.{key}", recorded=old,
                                                   now=now[key]))
        else:
            attempt.replay(e.kind, e.payload, e.at)
            if e.kind == "submitted":
                waiting[e.attempt_id] = _round_at([r for r in round_events if r.id < e.id])
    return report


class ReplayReport(msgspec.Struct, kw_only=True):
    round_id: str
    published: bool = False
    rows: int = 0
    differences: list[str] = msgspec.field(default_factory=list)
    board: list[dict[str, Any]] = msgspec.field(default_factory=list)  # the rebuilt one


def _same(value: Any) -> Any:
    # Live rows sum costs in another order than the fold: equal to the cent, not the bit.
    return round(value, 6) if isinstance(value, float) else value


def final_board(events: list[Event], library: Library, rnd: Round) -> leaderboard.Board:
    """The board these events fold into: everything visible, as published."""
    progress = fold_progress(events, library, rnd)
    return leaderboard.live_view(p.entry(a) for a, p in progress.items())


def replay(events: list[Event], library: Library) -> ReplayReport:
    """Rebuild the board from the round's events up to its publication and compare it,
    row by row, with the board recorded in the `results_published` event."""
    report = ReplayReport(round_id=events[0].round_id if events else "")
    published = [e for e in events if e.kind == "results_published" and e.attempt_id is None]
    if not published:
        report.differences.append("场次尚未发布结果 (results of this round were not published)")
        return report
    pub = published[-1]
    recorded = pub.payload.get("board")
    if not isinstance(recorded, dict):
        report.differences.append(
            "发布事件中没有记录排行榜 (the publication recorded no board to compare with)")
        return report
    report.published = True
    before = [e for e in events if e.id < pub.id]
    rnd = _round_at([e for e in before if e.attempt_id is None and e.kind in ROUND_EVENT_KINDS])
    board = msgspec.to_builtins(final_board(before, library, rnd))
    rows_now = [{k: r[k] for k in _BOARD_FIELDS} for r in board["rows"]]
    rows_then = [{k: r.get(k) for k in _BOARD_FIELDS} for r in recorded.get("rows", [])]
    report.rows, report.board = len(rows_now), rows_now
    if len(rows_now) != len(rows_then):
        report.differences.append(
            f"行数不同 (rows differ): published {len(rows_then)}, replayed {len(rows_now)}")
    for i, (then, now) in enumerate(zip(rows_then, rows_now, strict=False), start=1):
        for k in _BOARD_FIELDS:
            if _same(then[k]) != _same(now[k]):
                report.differences.append(
                    f"第 {i} 行 {k} (row {i} {k}): published {then[k]!r}, replayed {now[k]!r}")
    return report
