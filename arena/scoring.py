"""Deterministic rule scoring, explained line by line.

Every point on a score card traces to a rule a judge can read: the diagnosis
against the key's name, synonyms and ICD-10 code; differentials; checklist and
red-flag coverage (from the question matcher, whichever engine answered);
necessary and unnecessary tests. No LLM touches the numbers.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

import msgspec

from arena.attempt import Question, Submission
from arena.cases import Case, ChecklistItem, Diagnosis
from arena.errors import BadRequest
from arena.terminology import (
    Concept,
    Mention,
    Terminology,
    fold,
    read,
    terminology,
    without_phrasing,
)

# Recorded with every score so a result can be replayed; bump it when a rule changes
# what any answer scores.
RULES_VERSION = "rules-4"

# needs_judge: the rules cannot tell; 0 points until a judge rules (`adjudicate`).
Verdict = Literal["correct", "partial", "needs_judge", "wrong"]
Ruling = Literal["correct", "partial", "wrong"]


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


# --- the diagnosis ---------------------------------------------------------------------------
#
# An answer is read with the shared terminology (arena.terminology) into the diagnoses
# it names; each is compared with the key by the rules below, in this order, and the
# first that applies decides (docs/scoring.md lists them with examples):
#   0. the key's name or a synonym the case lists, word for word -> correct
#   1. nothing written                                  -> wrong
#   2. the key negated or excluded (排除, 非, 无 ...)     -> wrong
#   3. a contrary qualifier (急性 vs 慢性, 下壁 vs 前壁)   -> wrong
#   4. a complication or sequela of the key              -> wrong
#   5. the key, a synonym, or a more specific subtype    -> correct
#   6. less specific (a parent, a missing qualifier), a sibling the terminology marks
#      close, the underlying disease, or a case's partial-credit answer -> partial
#   7. the key left open (待排, 不除外), an ambiguous abbreviation, words no rule
#      understands, or text that shares words with the key but is not a known name
#                                                        -> needs_judge
#   8. several diagnoses in the primary field, one of them another disease -> wrong
#   9. anything else                                     -> wrong

_RANK = {"correct": 3, "partial": 2, "needs_judge": 1, "wrong": 0}
# Reading is linear in the text, but a field is never a paragraph: beyond this the
# rules do not read it (a primary diagnosis goes to a judge), so a 4,000-character
# submission cannot hold the server up. A real one, with staging, is under 60.
MAX_ANSWER_CHARS = 120
MAX_DIFFERENTIAL_ITEMS = 10  # diagnoses read from one differential field
# Beyond this many steps up the hierarchy an answer is too vague for part credit
# (急性冠脉综合征 for a STEMI is 2 steps; 冠心病 is 4).
_MAX_GENERAL_STEPS = 3


class _Form(msgspec.Struct, frozen=True):
    concept: str
    quals: dict[str, frozenset[str]]


class _Target:
    """One diagnosis of the key as the rules compare against: its forms and identity."""

    def __init__(self, d: Diagnosis, term: Terminology) -> None:
        self.d = d
        self.extra: dict[str, str] = {}  # its names the terminology lacks -> its id
        self.forms: list[_Form] = []
        self.identity: dict[str, frozenset[str]] = {}
        self.code = fold(d.icd10)
        for name in (d.name, d.name_en, *d.synonyms):
            if not name.strip():
                continue
            known = [m for m in read(name, term) if m.concept and not m.subordinate]
            if known:
                form = _Form(known[0].concept, _quals(known[0], term))
            else:  # a name the terminology lacks: matched as written, whole
                cid = "case:" + fold(d.name)
                self.extra.setdefault(fold(name), cid)
                form = _Form(cid, {})
            self.forms.append(form)
            for axis, vals in form.quals.items():
                self.identity[axis] = self.identity.get(axis, frozenset()) | vals
        self.words = _words(" ".join((d.name, d.name_en, *d.synonyms)))


@functools.lru_cache(maxsize=1024)  # a case's few diagnoses, read once, not per answer
def _target_of(name: str, name_en: str, synonyms: tuple[str, ...], icd10: str) -> _Target:
    return _Target(Diagnosis(name=name, name_en=name_en, synonyms=list(synonyms), icd10=icd10),
                   terminology())


def _target(d: Diagnosis) -> _Target:
    return _target_of(d.name, d.name_en, tuple(d.synonyms), d.icd10)


def _quals(m: Mention, term: Terminology) -> dict[str, frozenset[str]]:
    q = dict(term.quals(m.concept)) if m.concept else {}
    q.update(m.qualifiers())  # what the answer wrote wins over what the name implies
    # An infarct named by its wall (急性下壁心肌梗死) is an ST-elevation infarct in
    # Chinese usage; NSTEMI is not localised that way.
    if m.concept and term.is_a(m.concept, "mi") and "wall" in q and "st" not in q:
        q["st"] = frozenset({"elevated"})
    return q


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    """Chinese bigrams and Latin words of `text`, qualifiers and phrasing left out."""
    rest = without_phrasing(text)
    out = set(re.findall(r"[a-z]{3,}", rest))
    for run in re.findall(r"[\u4e00-\u9fff]+", rest):
        out |= {run[i:i + 2] for i in range(len(run) - 1)}
    return frozenset(out)


def _covers(have: dict[str, frozenset[str]], need: dict[str, frozenset[str]]) -> list[str]:
    """The axes of `need` that `have` does not state (empty: it says all of it)."""
    return [a for a, v in need.items() if not (have.get(a, frozenset()) & v)]


_QUAL_ZH = {
    "acute": "急性", "chronic": "慢性", "old": "陈旧性", "subacute": "亚急性",
    "elevated": "ST段抬高", "non-elevated": "非ST段抬高", "inferior": "下壁",
    "anterior": "前壁", "lateral": "侧壁", "posterior": "后壁", "septal": "间壁",
    "rv": "右室", "left": "左侧", "right": "右侧", "both": "双侧", "1": "1型", "2": "2型",
    "primary": "原发性", "secondary": "继发性", "diabetic": "糖尿病性", "alcoholic": "酒精性",
    "starvation": "饥饿性", "viral": "病毒性", "bacterial": "细菌性", "tuberculous": "结核性",
    "fungal": "真菌性", "traumatic": "外伤性", "spontaneous": "自发性", "biliary": "胆源性",
    "unstable": "不稳定型", "stable": "稳定型", "exacerbation": "急性加重",
    "remission": "稳定期/缓解期", "community": "社区获得性", "hospital": "医院获得性",
    "benign": "良性", "malignant": "恶性",
}


def _zh(vals: Iterable[str]) -> str:
    return "/".join(_QUAL_ZH.get(v, v) for v in sorted(vals))


# How a written diagnosis relates to the key; "other" means not at all.
Relation = Literal[
    "same", "specific", "missing", "general", "vague", "near", "underlying", "sibling",
    "partial_key", "ask", "ambiguous", "unknown", "residue", "contrary", "complication",
    "other",
]
_Verdict = tuple[Verdict, str, Relation]


def _compare(m: Mention, t: _Target, term: Terminology) -> _Verdict:
    """One mention against one target: (verdict, reason in Chinese, relation)."""
    if m.code and t.code:
        if m.code == t.code or m.code.startswith(t.code):
            return "correct", f"ICD-10 编码 {m.code.upper()} 与标准诊断一致或更具体", "same"
        if t.code.startswith(m.code):
            return "partial", f"只写到 ICD-10 类目 {m.code.upper()}，不够具体", "general"
        if not m.concept:
            if m.code[:3] == t.code[:3]:
                return ("partial", f"ICD-10 类目 {m.code[:3].upper()} 正确，亚目不符",
                        "sibling")
            return "wrong", f"ICD-10 编码 {m.code.upper()} 与标准诊断不符", "other"
    if m.candidates:
        if any(term.is_a(c, f.concept) or term.is_a(f.concept, c)
               for c in m.candidates for f in t.forms):
            return ("needs_judge", f"缩写“{m.text.upper()}”有多种含义，规则无法判定",
                    "ambiguous")
        return "wrong", f"缩写“{m.text.upper()}”不是标准诊断", "other"
    if not m.concept:
        if m.sequela:
            return "wrong", f"“{m.text}”是后遗症、术后或既往史，不是本次诊断", "other"
        if _words(m.text) & t.words:
            return ("needs_judge", f"“{m.text}”不是术语表中的诊断名称，但与标准诊断有共同"
                    "词素，规则无法判定", "unknown")
        return "wrong", "未能识别为标准诊断或其同义词", "other"
    a = m.concept
    have = _quals(m, term)
    best: _Verdict = ("wrong", f"与标准诊断不符（识别为：{_name(a, term)}）", "other")
    for f in t.forms:
        k = f.concept
        lineage = term.is_a(a, k) or term.is_a(k, a)
        common = set(term.ancestors(a)) & set(term.ancestors(k))
        related = lineage or bool(common)
        if related:
            for axis, vals in have.items():
                mine = t.identity.get(axis)
                if mine is not None and not (vals & mine):
                    return ("wrong", f"限定词相反：写的是“{_zh(vals)}”，标准诊断是“{_zh(mine)}”",
                            "contrary")
            if "old" in have.get("acuity", ()) and "old" not in t.identity.get("acuity", ()):
                return "wrong", "写的是陈旧性病变，不是本次发病", "contrary"
        c = term.get(a)
        if c is not None and any(term.is_a(k, x) for x in c.of):
            return ("wrong", f"“{_name(a, term)}”是该病的并发症或后遗症，不是该病本身",
                    "complication")
        if m.sequela and related:
            return ("wrong", f"写的是“{m.sequela}”（后遗症、术后或既往史），不是本次诊断",
                    "complication")
        got: _Verdict
        if term.is_a(a, k):
            missing = _covers(have, f.quals)
            if missing:
                got = ("partial", "缺少限定词（" + "、".join(_zh(f.quals[x]) for x in missing)
                       + "）", "missing")
            elif a == k:
                got = "correct", "与标准诊断或其同义词一致", "same"
            else:
                got = ("correct", f"比标准诊断更具体的亚型（{_name(a, term)} 属于 "
                       f"{_name(k, term)}），按 ICD-10 层级判为正确", "specific")
        elif term.is_a(k, a):
            up = term.ancestors(k)
            steps = up.index(a) + 1
            main = t.forms[0].concept  # how vague, measured from the key's own name
            if term.is_a(main, a):
                steps = max(steps, term.ancestors(main).index(a) + 1 if a != main else 0)
            # A parent plus the qualifiers that define each step down is the key itself
            # (阑尾炎 + 急性 = 急性阑尾炎); a step with no defining qualifier (甲状腺癌 ->
            # 甲状腺乳头状癌) cannot be written that way.
            below = [k, *up[:steps - 1]]
            definable = all(bool(_concept(x, term).quals) for x in below)
            if definable and not _covers(have, f.quals):
                got = "correct", "诊断名称加限定词与标准诊断一致", "same"
            elif steps <= _MAX_GENERAL_STEPS:
                got = ("partial", f"诊断方向正确但不够具体（{_name(a, term)} 是上位诊断）",
                       "general")
            else:
                got = "wrong", f"诊断过于笼统（{_name(a, term)}）", "vague"
        elif c is not None and any(term.is_a(k, x) for x in c.near):
            got = "partial", f"接近标准诊断但不准确（{_name(a, term)}）", "near"
        elif any(term.is_a(a, x) for kk in (k, *term.ancestors(k))
                 for x in _concept(kk, term).under):
            got = ("partial", f"只写出了基础疾病（{_name(a, term)}），未写出本次病变",
                   "underlying")
        elif (c is not None and k in c.ask) or a in _concept(k, term).ask:
            got = "needs_judge", f"“{_name(a, term)}”与标准诊断的关系需评委判断", "ask"
        elif common and _lowest_common_is_close(a, k, term):
            got = ("partial", f"与标准诊断同属一类但亚型不同（{_name(a, term)}）", "sibling")
        else:
            continue
        if _RANK[got[0]] > _RANK[best[0]] or best[2] == "other":
            best = got
    if best[0] in ("correct", "partial") and m.residue:
        return "needs_judge", f"诊断中有规则无法理解的文字“{m.residue}”", "residue"
    return best


_NO_CONCEPT = Concept(id="")


def _concept(concept_id: str, term: Terminology) -> Concept:
    """The concept, or an empty one for a case's own name the terminology lacks."""
    return term.get(concept_id) or _NO_CONCEPT


def _lowest_common_is_close(a: str, k: str, term: Terminology) -> bool:
    up = term.ancestors(a)
    lca = next((x for x in term.ancestors(k) if x in up), None)
    c = term.get(lca) if lca else None
    return c is not None and c.sib


def _name(concept: str, term: Terminology) -> str:
    c = term.get(concept)
    return c.name if c else concept.removeprefix("case:")


def _judge(answer: str, key: Diagnosis, partial: Iterable[Diagnosis] = (),
           others: Iterable[Diagnosis] = ()) -> tuple[Verdict, str]:
    term = terminology()
    target = _target(key)
    partials = [_target(p) for p in partial]
    extra: dict[str, str] = {}
    # A case's own names for other diseases are known names too, never "unknown" text.
    for t in (*[_target(o) for o in others], *reversed(partials), target):
        extra.update(t.extra)
    if len(answer) > MAX_ANSWER_CHARS:
        return "needs_judge", f"诊断超过 {MAX_ANSWER_CHARS} 字，规则不判定"
    said = normalize(answer)
    if said and said in {normalize(n) for n in (key.name, *key.synonyms) if n}:
        # The key's own words are the key, however the terminology would read them: a
        # compound or qualified name ("横纹肌溶解症并急性肾损伤", "重症肌无力（全身型）")
        # went to a judge when submitted exactly as the case writes it.
        return "correct", "与标准诊断原文一致"
    mentions = read(answer, term, extra)
    if not mentions:
        return "wrong", "未填写诊断"
    judged: list[tuple[Mention, Verdict, str, Relation]] = []
    for m in mentions:
        v, why, rel = _compare(m, target, term)
        if v not in ("correct", "partial") and rel == "other":
            for p in partials:
                if _compare(m, p, term)[0] in ("correct", "partial"):
                    v, why, rel = "partial", f"方向正确但不够具体（{p.d.name}）", "partial_key"
                    break
        judged.append((m, v, why, rel))
    for m, _, _, rel in judged:
        # Excluding something contrary to the key ("排除慢性阑尾炎") does not exclude the key.
        if m.polarity == "negated" and rel not in ("other", "contrary"):
            return "wrong", "否定或排除了标准诊断（规则：否定与排除）"
    affirmed = [j for j in judged if j[0].polarity == "affirmed"]
    hits = [j for j in affirmed if j[1] in ("correct", "partial")]
    if hits:
        best = max(hits, key=lambda j: _RANK[j[1]])
        main = [j for j in affirmed if not j[0].subordinate]
        if not any(not j[0].subordinate for j in hits) and any(
                j[1] == "wrong" and not _context(j, term) for j in main):
            return "needs_judge", "标准诊断只作为伴随诊断出现，主次需评委判断"
        extra_dx = [j for j in main if j not in hits and not _context(j, term)]
        if any(j[1] == "wrong" for j in extra_dx) or any(j[0].alternative for j in main):
            names = "、".join(j[0].text for j in main)
            return "wrong", f"主要诊断栏填写了多个诊断（{names}），只能填一个"
        if extra_dx:
            return "needs_judge", f"另有无法判定的内容（{extra_dx[0][0].text}）"
        return best[1], best[2]
    if any(j[0].polarity == "uncertain" and j[1] in ("correct", "partial") for j in judged):
        return "needs_judge", "标准诊断以“待排/不除外”等方式写出，未下结论"
    pending = [j for j in judged if j[1] == "needs_judge"]
    if pending:
        return "needs_judge", pending[0][2]
    # The most telling reason: one about the key (contrary, complication) before "other".
    return "wrong", sorted(judged, key=lambda j: j[3] == "other")[0][2]


def _context(j: tuple[Mention, Verdict, str, Relation], term: Terminology) -> bool:
    """A diagnosis that may stand beside the key: its underlying disease, a parent, a
    chronic comorbidity (高血压, 2型糖尿病 ...)."""
    m, _, _, rel = j
    if rel in ("underlying", "general"):
        return True
    return any(_concept(x, term).comorbid for x in (m.concept, *term.ancestors(m.concept)))


def judge_diagnosis(answer: str, case: Case) -> tuple[Verdict, str]:
    """Verdict on a free-text diagnosis, with the rule that decided it (in Chinese).

    "correct", "partial", "needs_judge" (the rules cannot tell; a judge rules) or
    "wrong". A wrong answer is never "correct": negation, contrary qualifiers,
    complications and several diagnoses in one field are checked before any match.
    Pure and deterministic.
    """
    key = case.answer_key
    return _judge(answer, key.diagnosis, key.partial, key.differentials)


def judge_against(answer: str, key: Diagnosis, partial: Iterable[Diagnosis] = ()) -> tuple[
        Verdict, str]:
    """`judge_diagnosis` against a bare key (name, synonyms, ICD-10) and partial answers."""
    return _judge(answer, key, partial)


def _differential_hits(key: Iterable[Diagnosis], written: Iterable[str]) -> list[str | None]:
    """For each key differential, the written one that names it (each used once).

    A field may list several ("心包炎、肺栓塞"); a negated one ("排除肺栓塞") counts for
    nothing; a field longer than MAX_ANSWER_CHARS is not read (see `_judge`).
    """
    term = terminology()
    targets = [_target(d) for d in key]
    extra: dict[str, str] = {}
    for t in targets:
        extra.update(t.extra)
    items: list[tuple[str, Mention]] = []
    for w in written:
        if len(w) <= MAX_ANSWER_CHARS:
            mentions = [m for m in read(w, term, extra) if not m.subordinate]
            items += [(w, m) for m in mentions[:MAX_DIFFERENTIAL_ITEMS]]
    used: set[int] = set()
    out: list[str | None] = []
    for t in targets:
        hit = None
        for i, (w, m) in enumerate(items):
            if i not in used and m.polarity == "affirmed" and _compare(m, t, term)[0] == "correct":
                hit = w
                used.add(i)
                break
        out.append(hit)
    return out


def _coverage(
    items: Iterable[ChecklistItem],
    questions: list[Question],
    ordered: list[str],
    section_points: float,
    case: Case,
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
            # The item's name as the contestant saw it on the menu, never its id.
            item_ordered = case.orderable(by_o)
            note = f"已申请检查：{item_ordered.name if item_ordered else by_o}"
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
    dx_points = {"correct": w.diagnosis, "partial": w.diagnosis * w.partial_share,
                 "needs_judge": 0.0, "wrong": 0.0}
    if verdict == "needs_judge":
        why = f"待评委复核：{why}"
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
    hits = _differential_hits(key.differentials, submission.differentials)
    for d, hit in zip(key.differentials, hits, strict=True):
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
        lines, got = _coverage(items, questions, ordered, pts, case)
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
    card: ScoreCard, verdict: Ruling, weights: Weights, note: str
) -> ScoreCard:
    """A judge's ruling on the diagnosis: correct (primary or synonym), partial or wrong.

    It also settles a "needs_judge" verdict: the card then carries the judge's verdict.
    """
    points = {"correct": weights.diagnosis, "partial": weights.diagnosis * weights.partial_share,
              "wrong": 0.0}[verdict]
    card = override(card, "diagnosis", 0, points, note)
    return msgspec.structs.replace(card, verdict=verdict)
