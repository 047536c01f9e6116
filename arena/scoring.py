"""Deterministic rule scoring, explained line by line.

Every point on a score card traces to a rule a judge can read: the diagnosis
against the key's name, synonyms and ICD-10 code; differentials; checklist and
red-flag coverage (from the question matcher, whichever engine answered);
necessary and unnecessary tests. No LLM touches the numbers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

import msgspec

from arena.attempt import Question, Submission
from arena.cases import Case, ChecklistItem, Diagnosis
from arena.errors import BadRequest

# Recorded with every score so a result can be replayed; bump it when a rule changes
# what any answer scores.
RULES_VERSION = "rules-2"

Verdict = Literal["correct", "partial", "wrong"]


class Weights(msgspec.Struct, frozen=True, kw_only=True):
    """Points per section; a round's rules may change them. Default total 100."""

    diagnosis: float = 40.0
    differentials: float = 15.0
    checklist: float = 30.0
    red_flags: float = 10.0
    tests: float = 5.0
    # Share of the diagnosis points for a partial answer (e.g. ACS for STEMI).
    partial_share: float = 0.5
    # Points lost per unnecessary test, within the tests section.
    unnecessary_penalty: float = 1.0


class ScoreLine(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    met: bool
    points: float
    max_points: float
    note: str = ""


class ScoreSection(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    title: str
    title_en: str
    points: float
    max_points: float
    lines: tuple[ScoreLine, ...]


class ScoreCard(msgspec.Struct, frozen=True, kw_only=True):
    total: float
    max_total: float
    verdict: Verdict
    cost_yuan: float
    sections: tuple[ScoreSection, ...]


_PUNCT = re.compile(r"[\s\-_/\\,，.。;；:：()（）\[\]【】'\"“”‘’·]+")


def normalize(text: str) -> str:
    """Fold width, case, spaces and punctuation so '急性 阑尾炎（）' == '急性阑尾炎'."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text).lower())


def _terms(d: Diagnosis) -> list[str]:
    return [t for t in (normalize(x) for x in (d.name, d.name_en, *d.synonyms)) if t]


def _matches(answer: str, d: Diagnosis) -> bool:
    a = normalize(answer)
    if not a:
        return False
    if d.icd10 and normalize(d.icd10) in a:
        return True
    return any(t in a for t in _terms(d))


def judge_diagnosis(answer: str, case: Case) -> tuple[Verdict, str]:
    """Verdict on a free-text diagnosis, with the rule that decided it."""
    key = case.answer_key
    if _matches(answer, key.diagnosis):
        return "correct", "与标准诊断或其同义词/ICD-10编码一致"
    a = normalize(answer)
    for p in key.partial:
        if _matches(answer, p):
            return "partial", f"方向正确但不够具体（{p.name}）"
    code = normalize(key.diagnosis.icd10)[:3]
    if code and len(code) == 3 and code in a:
        return "partial", f"ICD-10 类目 {key.diagnosis.icd10[:3]} 正确，亚目不符"
    # A shortened form of the key ("阑尾炎" for "急性阑尾炎") is part credit.
    for t in _terms(key.diagnosis):
        if len(a) >= 2 and a in t and len(a) >= 0.6 * len(t):
            return "partial", "诊断不完整（缺少限定词）"
    return "wrong", "未能与标准诊断匹配，可由评委复核"


def _coverage(
    items: Iterable[ChecklistItem],
    questions: list[Question],
    ordered: list[str],
    section_points: float,
) -> tuple[list[ScoreLine], float]:
    items = list(items)
    total_weight = sum(i.weight for i in items) or 1
    lines, points = [], 0.0
    for item in items:
        max_p = section_points * item.weight / total_weight
        by_q = next((q for q in questions if set(q.fact_ids or ()) & set(item.facts)), None)
        by_o = next((o for o in ordered if o in item.orders), None)
        met = by_q is not None or by_o is not None
        if by_q is not None:
            note = f"第{by_q.turn}问：{by_q.text}"
        elif by_o is not None:
            note = f"已申请检查：{by_o}"
        else:
            note = "未问及/未检查"
        p = max_p if met else 0.0
        points += p
        lines.append(ScoreLine(label=item.text, met=met, points=p, max_points=max_p, note=note))
    return lines, points


def score(
    case: Case,
    questions: list[Question],
    ordered: list[str],
    submission: Submission,
    weights: Weights | None = None,
    *,
    time_points: float = 0.0,
    time_fraction_left: float = 0.0,
) -> ScoreCard:
    """Score an attempt. Pure and deterministic: same inputs, same card.

    Where a round's rules say time counts, `time_points` > 0 adds a section worth
    that many points times the share of the contestant's time left at submission.
    """
    w = weights or Weights()
    key = case.answer_key
    sections: list[ScoreSection] = []

    verdict, why = judge_diagnosis(submission.diagnosis, case)
    dx_points = {"correct": w.diagnosis, "partial": w.diagnosis * w.partial_share, "wrong": 0.0}
    sections.append(
        ScoreSection(
            key="diagnosis", title="主要诊断", title_en="Primary diagnosis",
            points=dx_points[verdict], max_points=w.diagnosis,
            lines=(ScoreLine(
                label=f"你的诊断：{submission.diagnosis}", met=verdict == "correct",
                points=dx_points[verdict], max_points=w.diagnosis,
                note=f"{why}。标准诊断：{key.diagnosis.name}"
                + (f"（{key.diagnosis.icd10}）" if key.diagnosis.icd10 else ""),
            ),),
        )
    )

    per_diff = w.differentials / max(1, len(key.differentials))
    diff_lines = []
    for d in key.differentials:
        hit = next((x for x in submission.differentials if _matches(x, d)), None)
        diff_lines.append(ScoreLine(
            label=d.name, met=hit is not None, points=per_diff if hit else 0.0,
            max_points=per_diff, note=f"你写了：{hit}" if hit else "未列出",
        ))
    sections.append(ScoreSection(
        key="differentials", title="鉴别诊断", title_en="Differentials",
        points=sum(x.points for x in diff_lines), max_points=w.differentials,
        lines=tuple(diff_lines),
    ))

    for skey, title, title_en, items, pts in (
        ("checklist", "问诊与查体要点", "Checklist", key.checklist, w.checklist),
        ("red_flags", "危险信号", "Red flags", key.red_flags, w.red_flags),
    ):
        lines, got = _coverage(items, questions, ordered, pts)
        sections.append(ScoreSection(
            key=skey, title=title, title_en=title_en, points=got, max_points=pts,
            lines=tuple(lines),
        ))

    test_lines = []
    per_needed = w.tests / max(1, len(key.necessary_tests))
    for tid in key.necessary_tests:
        item = case.orderable(tid)
        done = tid in ordered
        test_lines.append(ScoreLine(
            label=item.name if item else tid, met=done, points=per_needed if done else 0.0,
            max_points=per_needed, note="已申请" if done else "必要检查未做",
        ))
    penalty = 0.0
    for tid in ordered:
        if tid in key.unnecessary_tests:
            item = case.orderable(tid)
            penalty += w.unnecessary_penalty
            test_lines.append(ScoreLine(
                label=item.name if item else tid, met=False, points=-w.unnecessary_penalty,
                max_points=0.0, note="不必要的检查，扣分",
            ))
    test_points = max(0.0, sum(x.points for x in test_lines if x.points > 0) - penalty)
    sections.append(ScoreSection(
        key="tests", title="检查合理性", title_en="Test appropriateness",
        points=test_points, max_points=w.tests, lines=tuple(test_lines),
    ))

    if time_points > 0:
        share = min(1.0, max(0.0, time_fraction_left))
        pts = round(time_points * share, 2)
        sections.append(ScoreSection(
            key="time", title="用时", title_en="Time", points=pts, max_points=time_points,
            lines=(ScoreLine(
                label="剩余时间比例", met=share > 0, points=pts, max_points=time_points,
                note=f"提交时剩余 {share:.0%} 的时间",
            ),),
        ))

    cost = sum(o.cost_yuan for o in (case.orderable(i) for i in ordered) if o is not None)
    total = round(sum(s.points for s in sections), 2)
    return ScoreCard(
        total=total, max_total=round(sum(s.max_points for s in sections), 2), verdict=verdict,
        cost_yuan=round(cost, 2), sections=tuple(sections),
    )


def _total(sections: Iterable[ScoreSection]) -> float:
    return round(sum(s.points for s in sections), 2)


def override(card: ScoreCard, section: str, line: int, points: float, note: str) -> ScoreCard:
    """A judge sets one line's points (0..max, or a penalty line's own sign) with a note.

    Raises BadRequest for an unknown section or line, or points out of range. The
    section total is recomputed from its lines, so the card stays consistent.
    """
    sec = next((s for s in card.sections if s.key == section), None)
    if sec is None or not 0 <= line < len(sec.lines):
        raise BadRequest("评分项不存在。", f"No score line {section}[{line}].")
    old = sec.lines[line]
    low, high = (old.points, 0.0) if old.max_points == 0 else (0.0, old.max_points)
    if not low <= points <= high:
        raise BadRequest(
            f"分值应在 {low:g} 到 {high:g} 之间。", f"Points must be within {low:g}..{high:g}."
        )
    lines = list(sec.lines)
    lines[line] = msgspec.structs.replace(
        old, points=round(points, 2), met=points >= old.max_points > 0, note=note
    )
    if section == "tests":  # the section is floored at zero, as in `score`
        sec_points = max(0.0, sum(x.points for x in lines))
    else:
        sec_points = sum(x.points for x in lines)
    new_sec = msgspec.structs.replace(sec, points=round(sec_points, 2), lines=tuple(lines))
    sections = tuple(new_sec if s.key == section else s for s in card.sections)
    return msgspec.structs.replace(card, sections=sections, total=_total(sections))


def adjudicate(
    card: ScoreCard, verdict: Verdict, weights: Weights, note: str
) -> ScoreCard:
    """A judge's ruling on the diagnosis: correct (primary or synonym), partial or wrong."""
    points = {"correct": weights.diagnosis, "partial": weights.diagnosis * weights.partial_share,
              "wrong": 0.0}[verdict]
    card = override(card, "diagnosis", 0, points, note)
    return msgspec.structs.replace(card, verdict=verdict)
