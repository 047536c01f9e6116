"""The case: schema, loading and validation.

A case is a JSON document decoded once, strictly (unknown fields are errors),
into frozen msgspec structs. It has two halves that must never mix: what the
patient knows (`demographics`, `persona`, `opening`, `facts`) and what only the
examiner knows (`exams`, `tests` results and the `answer_key`). `arena.patient`
builds the patient from the first half only.

`check_case` reports every problem it can find with a JSON path, so an author
fixes a file in one pass rather than one error per run.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from arena.errors import CaseInvalid
from arena.intents import INTENT_IDS

SCHEMA_VERSION = 1
MAX_CASE_BYTES = 1_000_000

Sex = Literal["male", "female"]
Level = Literal["low", "medium", "high"]
FactCategory = Literal[
    "hpi",  # 现病史
    "past",  # 既往史
    "medications",  # 用药史
    "allergies",  # 过敏史
    "family",  # 家族史
    "social",  # 个人史/社会史
    "menstrual_obstetric",  # 月经婚育史
    "ros",  # 系统回顾
]
Difficulty = Literal["easy", "medium", "hard"]
# The library's specialties, as the importer names them and the editor's filter groups them.
SPECIALTIES: tuple[str, ...] = (
    "心血管内科", "呼吸内科", "消化内科", "内分泌科", "肾内科", "血液科", "感染科", "神经内科",
    "风湿免疫科", "普通外科", "骨科", "泌尿外科", "神经外科", "心胸外科", "妇产科", "儿科",
    "急诊科", "精神科", "皮肤科", "眼耳鼻喉科", "肿瘤科", "老年医学科", "全科",
)

_ID = re.compile(r"^[a-z][a-z0-9_]{1,47}$")


class Model(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every case struct: strict and immutable."""


AgeUnit = Literal["years", "months", "days"]


class Demographics(Model, frozen=True, kw_only=True):
    name: str  # fictional; shown to the contestant
    sex: Sex
    age: int
    age_unit: AgeUnit = "years"  # infants: "months" or "days"
    occupation: str = ""


class Persona(Model, frozen=True, kw_only=True):
    personality: str
    speech_style: str
    health_literacy: Level
    recall: Level
    ideas: str  # what the patient thinks is going on (idea)
    concerns: str  # what frightens them (concern)
    expectations: str  # what they hope the doctor does (expectation)


class Vitals(Model, frozen=True, kw_only=True):
    temperature_c: float
    heart_rate: int
    respiratory_rate: int
    systolic_bp: int
    diastolic_bp: int
    spo2: int
    weight_kg: float | None = None


class Opening(Model, frozen=True, kw_only=True):
    chief_complaint: str  # 主诉 in clinical words, shown on the case card
    statement: str  # the patient's first words, in their own voice
    appearance: str  # what anyone entering the room sees
    vitals: Vitals


class Fact(Model, frozen=True, kw_only=True):
    """Something the patient tells only when asked.

    `intent` (or `intents`, when one answer truly covers several) says which
    history-taking questions it answers, from the shared taxonomy in
    `arena.intents`; `subject` names the one symptom or body part it is about,
    if any ("咳嗽", "胸痛"), so "咳嗽多久了？" does not get the fever's duration.
    Example `questions` are optional refinements for the matcher.
    """

    id: str
    category: FactCategory
    topic: str  # short label, e.g. 疼痛性质
    intent: str = ""  # an arena.intents id; inferred from topic/questions when absent
    intents: list[str] = []  # further intents the same answer covers
    subject: str = ""  # the symptom or body part, in plain Chinese clinical words
    questions: list[str] = []  # optional: ways a doctor might ask, for this case only
    answer: str  # the patient's own words (the narrator's, in a caregiver case)
    negative: bool = False  # a pertinent negative ("no, never had that")

    def declared(self) -> tuple[str, ...]:
        """The intents this fact declares, `intent` first, without repeats."""
        return tuple(dict.fromkeys(x for x in (self.intent, *self.intents) if x))


class Narrator(Model, frozen=True, kw_only=True):
    """Who tells the history when the patient cannot (an infant, the confused): a relative."""

    relation: str  # the narrator's relation to the patient: 母亲, 父亲, 女儿, 妻子 ...


class Orderable(Model, frozen=True, kw_only=True):
    """A physical examination or a test: the result comes from the case, never the LLM."""

    id: str
    name: str
    aliases: list[str] = []
    result: str
    abnormal: bool = False
    cost_yuan: float = 0.0
    minutes: int = 0
    # Ids of the shared catalogue's entries this item answers for (arena/catalogue.py);
    # empty = those its name or aliases equal.
    covers: list[str] = []


class Diagnosis(Model, frozen=True, kw_only=True):
    name: str
    name_en: str = ""
    synonyms: list[str] = []
    icd10: str = ""


class ChecklistItem(Model, frozen=True, kw_only=True):
    """A point a good interview or work-up covers; met by asking a fact or ordering an item."""

    id: str
    text: str
    weight: int
    facts: list[str] = []
    orders: list[str] = []


class AnswerKey(Model, frozen=True, kw_only=True):
    diagnosis: Diagnosis
    partial: list[Diagnosis] = []  # answers a judge would give part credit for
    differentials: list[Diagnosis]
    checklist: list[ChecklistItem]
    red_flags: list[ChecklistItem]
    necessary_tests: list[str]
    unnecessary_tests: list[str] = []
    teaching_points: list[str] = []


class Case(Model, frozen=True, kw_only=True):
    schema_version: int
    id: str
    title: str  # must not give the diagnosis away: it is shown before the round
    title_en: str = ""
    specialty: str
    difficulty: Difficulty
    minutes: int = 20  # suggested time for a timed round
    demographics: Demographics
    narrator: Narrator | None = None  # set when a relative answers for the patient
    persona: Persona  # the narrator's persona, in a caregiver case
    opening: Opening
    facts: list[Fact]
    # Per-intent answers for topics the case has no fact on, overriding the shared
    # defaults ("平时不吃什么药"); the patient's words, credited to no checklist item.
    defaults: dict[str, str] = {}
    exams: list[Orderable]
    tests: list[Orderable]
    answer_key: AnswerKey
    # Where the case comes from (textbook, guideline, a record and its hospital), and the
    # clinical teacher who reviewed it ("" = not reviewed yet: the editor's filter says so).
    sources: list[str] = []
    reviewed_by: str = ""

    def orderable(self, order_id: str) -> Orderable | None:
        """The exam or test with this id, or None."""
        for item in (*self.exams, *self.tests):
            if item.id == order_id:
                return item
        return None

    def fact(self, fact_id: str) -> Fact | None:
        for f in self.facts:
            if f.id == fact_id:
                return f
        return None


def _convert_problems(value: Any, typ: Any, path: str) -> list[str]:
    """Structural problems of `value` as `typ`, element by element for lists of structs."""
    if isinstance(value, list) and getattr(typ, "__origin__", None) is list:
        (item_type,) = typ.__args__
        problems: list[str] = []
        for i, item in enumerate(value):
            problems += _convert_problems(item, item_type, f"{path}[{i}]")
        return problems
    try:
        msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        # msgspec reports "... - at `$.a.b`"; re-root that path under ours.
        m = re.search(r" - at `\$(.*)`$", msg)
        if m:
            return [f"{path}{m.group(1)}: {msg[: m.start()]}"]
        return [f"{path}: {msg}"]
    return []


def _structural_problems(raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return ["$: a case must be a JSON object"]
    problems: list[str] = []
    hints = msgspec.structs.fields(Case)
    known = {f.encode_name: f for f in hints}
    for key in raw:
        if key not in known:
            problems.append(f"$.{key}: unknown field")
    types = typing.get_type_hints(Case)
    for name, field in known.items():
        if name not in raw:
            if field.required:
                problems.append(f"$.{name}: required field is missing")
            continue
        problems += _convert_problems(raw[name], types[field.name], f"$.{name}")
    return problems


def _duplicates(ids: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    dup: set[str] = set()
    for i in ids:
        (dup if i in seen else seen).add(i)
    return dup


def _semantic_problems(case: Case) -> list[str]:
    p: list[str] = []
    if case.schema_version != SCHEMA_VERSION:
        p.append(f"$.schema_version: expected {SCHEMA_VERSION}, got {case.schema_version}")
    if not _ID.match(case.id):
        p.append("$.id: use 2-48 lowercase letters, digits or _ starting with a letter")
    if not any(x.strip() for x in case.sources):
        p.append("$.sources: name at least one source")
    if case.specialty not in SPECIALTIES:
        p.append(f"$.specialty: {case.specialty!r} is not a specialty of the library; use one"
                 f" of {'、'.join(SPECIALTIES)}")
    v = case.opening.vitals
    ranges = {
        "temperature_c": (30.0, 43.0),
        "heart_rate": (20, 250),
        "respiratory_rate": (4, 70),
        "systolic_bp": (40, 280),
        "diastolic_bp": (20, 180),
        "spo2": (50, 100),
    }
    for name, (lo, hi) in ranges.items():
        value = getattr(v, name)
        if not lo <= value <= hi:
            p.append(f"$.opening.vitals.{name}: {value} is outside {lo}-{hi}")
    if v.diastolic_bp >= v.systolic_bp:
        p.append("$.opening.vitals.diastolic_bp: must be below systolic_bp")
    d = case.demographics
    limit = {"years": 120, "months": 36, "days": 90}[d.age_unit]
    if not (0 if d.age_unit == "days" else 1) <= d.age < limit:
        p.append(f"$.demographics.age: {d.age} {d.age_unit} is not a plausible age")
    if case.narrator is not None and not case.narrator.relation.strip():
        p.append("$.narrator.relation: say who tells the history (母亲, 女儿 ...)")
    for intent in case.defaults:
        if intent not in INTENT_IDS:
            p.append(f"$.defaults.{intent}: not an intent of the taxonomy (arena/intents.py)")

    for label, ids in (
        ("facts", [f.id for f in case.facts]),
        ("exams", [e.id for e in case.exams]),
        ("tests", [t.id for t in case.tests]),
    ):
        for i, id_ in enumerate(ids):
            if not _ID.match(id_):
                p.append(f"$.{label}[{i}].id: {id_!r} is not a valid id")
    fact_ids = [f.id for f in case.facts]
    order_ids = [o.id for o in (*case.exams, *case.tests)]
    for dup in sorted(_duplicates(fact_ids + order_ids)):
        p.append(f"$: id {dup!r} is used more than once")
    for i, f in enumerate(case.facts):
        unknown = [x for x in f.declared() if x not in INTENT_IDS]
        if unknown:
            p.append(f"$.facts[{i}].intent: {unknown} not in the taxonomy (arena/intents.py)")
        if not f.declared() and len(f.questions) < 2:
            p.append(f"$.facts[{i}]: declare an intent (or give at least 2 example questions)")
        if not f.answer.strip():
            p.append(f"$.facts[{i}].answer: empty")
    if not any(f.negative for f in case.facts):
        p.append("$.facts: include pertinent negatives (negative: true)")
    if not case.tests:
        p.append("$.tests: a case needs orderable tests")

    key = case.answer_key
    if not key.diagnosis.name.strip():
        p.append("$.answer_key.diagnosis.name: empty")
    if len(key.differentials) < 2:
        p.append("$.answer_key.differentials: give at least 2")
    if len(key.checklist) < 10:
        p.append(f"$.answer_key.checklist: {len(key.checklist)} items, at least 10 required")
    known_facts, known_orders = set(fact_ids), set(order_ids)
    for label, items in (("checklist", key.checklist), ("red_flags", key.red_flags)):
        for dup in sorted(_duplicates(i.id for i in items)):
            p.append(f"$.answer_key.{label}: id {dup!r} is used more than once")
        for i, item in enumerate(items):
            where = f"$.answer_key.{label}[{i}]"
            if not 1 <= item.weight <= 10:
                p.append(f"{where}.weight: {item.weight} is outside 1-10")
            if not item.facts and not item.orders:
                p.append(f"{where}: name the facts or orders that meet it")
            p += [f"{where}.facts: unknown fact {x!r}" for x in item.facts if x not in known_facts]
            p += [
                f"{where}.orders: unknown order {x!r}" for x in item.orders if x not in known_orders
            ]
    for label in ("necessary_tests", "unnecessary_tests"):
        for i, x in enumerate(getattr(key, label)):
            if x not in known_orders:
                p.append(f"$.answer_key.{label}[{i}]: unknown order {x!r}")
    both = set(key.necessary_tests) & set(key.unnecessary_tests)
    if both:
        p.append(f"$.answer_key: {sorted(both)} are both necessary and unnecessary")
    return p


def check_case(data: bytes) -> tuple[Case | None, list[str]]:
    """Validate a case document.

    Returns the decoded case (None if it could not be decoded) and every problem
    found, each as "JSON path: message". A case is usable only when the list is empty.
    """
    if len(data) > MAX_CASE_BYTES:
        return None, [f"$: file is {len(data)} bytes, limit {MAX_CASE_BYTES}"]
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return None, [f"$: not valid JSON ({exc})"]
    problems = _structural_problems(raw)
    if problems:
        return None, problems
    case = msgspec.convert(raw, Case)
    return case, _semantic_problems(case)


def load_case(data: bytes, source: str = "<case>") -> Case:
    """Decode and validate one case; raise `CaseInvalid` listing every problem."""
    case, problems = check_case(data)
    if problems or case is None:
        raise CaseInvalid(source, problems)
    return case
