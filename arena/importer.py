"""Case import: sectioned Chinese records and AgentClinic-style OSCE JSON to draft cases.

Pure: text (or a decoded JSON value) in, a `Draft` out: a case document as a dict
and every problem an author must fix, each as "JSON path: message" like
`arena.cases.check_case`. Nothing here reads or writes files; `arena cases import`
does, and never into the case library: a draft is an author's starting point.

Everything is rules and keyword tables, so a record always gives the same draft;
ids are hashes of the content, so re-importing an edited record keeps the ids of
what did not change. The rules know the common shapes of 病历 and 考试病例
(【主诉】, "现病史：", "一、既往史"); what they guess (an intent, an `abnormal`
flag, a placeholder name or persona) is visible in the draft or listed as a problem.
Facts are put in the patient's first person ("患者3天前出现发热" -> "我3天前开始
发烧"), or a relative's when the record is told by one (a child's parent).
Reading Chinese records is `arena.records`; this module reads OSCE JSON itself and
assembles, identifies and checks the draft for both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import msgspec

from arena import secrecy
from arena.cases import SCHEMA_VERSION, check_case
from arena.intents import subjects_in
from arena.records import (
    Seg,
    abnormal,
    person,
    placeholder_name,
    read_record,
    read_vitals,
    subject_of,
    voice,
)
from arena.terminology import fold, terminology

Source = Literal["record", "osce"]


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """An imported case document and every problem that keeps it from being a case."""

    source: Source
    case: dict[str, Any]
    problems: list[str]


# ---------------------------------------------------------------- shared assembly

_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no i/l/o/0/1: ids get read aloud


def _opaque(prefix: str, *parts: str, n: int = 5) -> str:
    h = int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest(), 16)
    out = []
    for _ in range(n):
        h, r = divmod(h, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return prefix + "".join(out)


TOPICS = {
    "onset": "起病", "duration": "病程", "site": "部位", "character": "性质",
    "radiation": "放射", "severity": "程度", "timing": "规律", "course": "变化",
    "aggravating": "加重因素", "relieving": "缓解因素", "associated": "伴随症状",
    "treatment_so_far": "诊治经过", "past_history": "既往史", "surgery": "手术史",
    "trauma": "外伤史", "transfusion": "输血史", "medications": "用药", "allergies": "过敏史",
    "smoking": "吸烟", "alcohol": "饮酒", "diet": "饮食", "appetite_weight": "食欲体重",
    "sleep": "睡眠", "bowel": "大便", "urination": "小便", "occupation_exposure": "职业暴露",
    "travel": "旅行", "contacts": "接触史", "sexual_history": "性生活史", "menstrual": "月经",
    "obstetric": "婚育史", "family_history": "家族史", "vaccination": "预防接种",
    "birth_development": "出生发育", "living_situation": "家庭情况", "residence": "居住地",
}
_CATEGORY = {
    "past_history": "past", "surgery": "past", "trauma": "past", "transfusion": "past",
    "vaccination": "past", "birth_development": "past", "medications": "medications",
    "allergies": "allergies", "family_history": "family", "menstrual": "menstrual_obstetric",
    "obstetric": "menstrual_obstetric",
}
_SOCIAL = {"smoking", "alcohol", "diet", "occupation_exposure", "travel", "contacts",
           "sexual_history", "living_situation", "residence"}


def _category(intent: str) -> str:
    return _CATEGORY.get(intent, "social" if intent in _SOCIAL else "hpi")


def _merge(segs: list[Seg]) -> list[Seg]:
    out: list[Seg] = []
    for s in segs:
        last = out[-1] if out else None
        if last and (last.intents, last.subject, last.negative) == (s.intents, s.subject,
                                                                     s.negative):
            last.texts += s.texts
        else:
            out.append(s)
    return out


class _Builder:
    """The parts of a draft as they are found, and the problems met on the way."""

    def __init__(self, english: bool) -> None:
        self.english = english
        self.facts: list[dict[str, Any]] = []
        self.exams: list[dict[str, Any]] = []
        self.tests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._ids: set[str] = set()

    def problem(self, path: str, zh: str, en: str) -> None:
        self.problems.append(f"{path}: {zh} ({en})")

    def new_id(self, prefix: str, *parts: str) -> str:
        k = 0
        while (i := _opaque(prefix, *parts, *([str(k)] if k else []))) in self._ids:
            k += 1
        self._ids.add(i)
        return i

    def facts_from(self, segs: Iterable[Seg], voice: Callable[[str], str]) -> None:
        join = " " if self.english else "，"
        for s in _merge(list(segs)):
            answer = _sentence(voice(join.join(t for t in s.texts if t)), self.english)
            if not answer:
                continue
            intent = s.intents[0]
            label = intent.replace("_", " ") if self.english else TOPICS.get(intent, intent)
            topic = s.subject if intent == "associated" and s.subject else (
                f"{s.subject} {label}" if self.english and s.subject else s.subject + label)
            f: dict[str, Any] = {"id": self.new_id("f", _category(intent), answer),
                                 "category": _category(intent), "topic": topic, "intent": intent}
            if s.intents[1:]:
                f["intents"] = list(dict.fromkeys(s.intents[1:]))
            if s.subject:
                f["subject"] = s.subject
            f["answer"] = answer
            if s.negative:
                f["negative"] = True
            self.facts.append(f)

    def orderable(self, kind: str, name: str, aliases: Sequence[str], result: str,
                  abnormal: bool) -> None:
        items = self.exams if kind == "e" else self.tests
        for item in items:  # a record may report one test twice (admission, repeat)
            if item["name"] == name:
                item["result"] += " " + result
                item["abnormal"] = item["abnormal"] or abnormal
                return
        items.append({"id": self.new_id(kind, name), "name": name,
                      "aliases": [a for a in dict.fromkeys(aliases) if a != name],
                      "result": result, "abnormal": abnormal, "cost_yuan": 0.0, "minutes": 0})


def _sentence(text: str, english: bool) -> str:
    text = re.sub(r"^[，,、；;。.\s]+|[，,、；;\s]+$", "", text.strip())
    if not text:
        return ""
    if english:
        text = text[0].upper() + text[1:]
        return text if text[-1] in ".!?" else text + "."
    return text if text[-1] in "。！？.!?" else text + "。"


def _diagnosis(name: str) -> dict[str, Any]:
    """A key diagnosis: the record's name, with ICD-10 and synonyms from the shared terminology."""
    name = name.strip()
    bare = re.sub(r"\s*[（(][^）)]*[）)]\s*$", "", name).strip() or name
    d: dict[str, Any] = {"name": bare, "name_en": "", "synonyms": [], "icd10": ""}
    if bare != name:
        d["synonyms"].append(name)
    # Only an exact name: "急性结石性胆囊炎" reads as 胆囊炎, but is not a synonym of it.
    t = terminology()
    c = t.concepts.get(t.terms.get(fold(bare), ""))
    if c is not None:
        d["icd10"] = c.icd10
        d["name_en"] = next((n for n in c.names_en if n.lower() != bare.lower()), "")
        d["synonyms"] += [n for n in (*c.names, *c.names_en[:2], *c.abbrs)
                          if n.lower() != bare.lower()][:8]
        if re.fullmatch(r"[\x00-\x7f]+", bare) and not d["name_en"]:
            d["name_en"] = bare
    elif re.fullmatch(r"[\x00-\x7f]+", bare):
        d["name_en"] = bare
    return d


_ICD_SPECIALTY = {
    "A": "感染科", "B": "感染科", "C": "肿瘤科", "D": "血液科", "E": "内分泌科", "F": "精神科",
    "G": "神经内科", "H": "眼耳鼻喉科", "I": "心血管内科", "J": "呼吸内科", "K": "消化内科",
    "L": "皮肤科", "M": "风湿免疫科", "N": "肾内科", "O": "妇产科", "P": "儿科", "S": "急诊科",
    "T": "急诊科",
}
_SURGICAL = re.compile(r"^K(3[5-8]|4[0-6]|56|8[0-3])|^K91")


def _specialty(icd10: str, pediatric: bool) -> str:
    if pediatric:
        return "儿科"
    code = icd10.upper()
    if re.match(r"^I6", code):
        return "神经内科"
    if _SURGICAL.match(code):
        return "普通外科"
    return _ICD_SPECIALTY.get(code[:1], "")


_PERSONA_ZH = {"personality": "配合问诊，有些紧张。", "speech_style": "普通话，口语化，用词朴素。",
               "health_literacy": "medium", "recall": "medium", "ideas": "不清楚是什么病。",
               "concerns": "担心病情严重。", "expectations": "希望查清楚原因，尽快好起来。"}
_PERSONA_EN = {"personality": "Cooperative, somewhat anxious.",
               "speech_style": "Plain everyday English.", "health_literacy": "medium",
               "recall": "medium", "ideas": "Not sure what is wrong.",
               "concerns": "Worried that it is serious.",
               "expectations": "Wants to know what it is and to feel better."}
VITAL_FIELDS = ("temperature_c", "heart_rate", "respiratory_rate", "systolic_bp",
                "diastolic_bp", "spo2")


def _finish(b: _Builder, source: Source, seed: str, *, title: str, title_en: str,
            specialty: str, demographics: dict[str, Any], narrator: str,
            opening: dict[str, Any], vitals: dict[str, float],
            diagnosis: dict[str, Any] | None, differentials: list[dict[str, Any]],
            teaching: list[str]) -> Draft:
    zh = not b.english
    for name in VITAL_FIELDS if vitals else ():  # none at all is one problem, said before
        if name not in vitals:
            b.problem(f"$.opening.vitals.{name}", "病历中没有，0 为占位",
                      "not in the source; 0 is a placeholder")
    v: dict[str, Any] = {k: vitals.get(k, 0) for k in VITAL_FIELDS}
    for k in VITAL_FIELDS[1:]:
        v[k] = round(v[k])
    if "weight_kg" in vitals:
        v["weight_kg"] = vitals["weight_kg"]
    b.problem("$.persona", "导入器写的占位性格与关切，请按病人改写", "a neutral placeholder "
              "persona; describe this patient")
    b.problem("$.difficulty", "来源未写难度，草稿为 medium", "not in the source; the draft says "
              "medium")
    if not specialty:
        b.problem("$.specialty", "无法推断专科", "could not be guessed; name the specialty")
    if diagnosis is None:
        b.problem("$.answer_key.diagnosis.name", "来源中没有诊断", "no diagnosis in the source")
        diagnosis = {"name": "", "name_en": "", "synonyms": [], "icd10": ""}
    if not differentials:
        b.problem("$.answer_key.differentials", "来源中没有鉴别诊断，至少补 2 个",
                  "none in the source; add at least 2")
    b.problem("$.answer_key.checklist", "导入不生成评分要点，请写至少 10 条",
              "the importer writes no checklist; write at least 10 items")
    b.problem("$.answer_key.red_flags", "请补危险信号", "none written; add the red flags")
    b.problem("$.answer_key.necessary_tests", "请选出必要检查", "choose the tests this case needs")
    if b.tests:
        b.problem("$.tests", "费用与耗时未知，草稿为 0", "cost_yuan and minutes are not in the "
                  "source; the draft says 0")
    case: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "id": "", "title": title, "title_en": title_en,
        "specialty": specialty, "difficulty": "medium", "minutes": 20,
        "demographics": demographics,
    }
    if narrator:
        case["narrator"] = {"relation": narrator}
    case |= {
        "persona": dict(_PERSONA_ZH if zh else _PERSONA_EN),
        "opening": {**opening, "vitals": v}, "facts": b.facts, "exams": b.exams,
        "tests": b.tests,
        "answer_key": {"diagnosis": diagnosis, "partial": [], "differentials": differentials,
                       "checklist": [], "red_flags": [], "necessary_tests": [],
                       "unnecessary_tests": [], "teaching_points": teaching},
    }
    # Opaque and stable: the content decides the id; a salt steps past the rare hash that
    # spells an answer-key term in pinyin (the secrecy lint reads ids).
    salt = 0
    while True:
        case["id"] = _opaque(_ALPHABET[int(hashlib.sha256(f"{seed}{salt}".encode())
                                           .hexdigest(), 16) % 23], seed, str(salt))
        decoded, schema = check_case(msgspec.json.encode(case))
        lint = secrecy.leaks(decoded) if decoded is not None else []
        if salt > 8 or not any(x.path == "$.id" for x in lint):
            break
        salt += 1
    problems = list(dict.fromkeys([*b.problems, *schema, *(x.problem() for x in lint)]))
    return Draft(source=source, case=case, problems=problems)


def import_record(text: str) -> Draft:
    """A free-text record sectioned as 病历 and 考试病例 write it -> a draft case.

    Understands 一般资料/患者信息, 主诉, 现病史, 既往史, 个人史, 婚育史/月经史, 家族史,
    体格检查 (and 专科检查), 辅助检查, 诊断 and 鉴别诊断, with or without 【】, colons or
    numbering (see `arena.records`). Missing sections, missing vitals, placeholders and
    everything `check_case` and the secrecy lint find are in `problems`.
    """
    b = _Builder(english=False)
    seed = "\n".join(line.strip() for line in text.splitlines() if line.strip())
    r = read_record(text, seed)
    for path, zh, en in r.problems:
        b.problem(path, zh, en)
    b.facts_from(r.segs, lambda s: voice(s, r.narrator))
    for name, aliases, result, abnormal_ in r.exams:
        b.orderable("e", name, aliases, result, abnormal_)
    for name, aliases, result, abnormal_ in r.tests:
        b.orderable("t", name, aliases, result, abnormal_)
    dx = r.diagnoses
    diagnosis = _diagnosis(dx[0]) if dx else None
    if dx[1:]:
        b.problem("$.answer_key.diagnosis", "病历列了多个诊断，只取第一个，其余写入教学要点",
                  "several diagnoses; the first is the key, the rest are in teaching_points")
    diffs = [_diagnosis(n) for n in r.differentials]
    diffs = [d for d in diffs if not diagnosis or d["name"] != diagnosis["name"]]
    specialty = r.department or _specialty(diagnosis["icd10"] if diagnosis else "",
                                           bool(r.narrator))
    if specialty and not r.department:
        b.problem("$.specialty", f"推测为“{specialty}”，请核对", "a guess; check it")
    who = person(r.demographics)
    opening = {"chief_complaint": r.chief_complaint, "statement": r.statement,
               "appearance": r.appearance}
    return _finish(b, "record", seed, title=f"{who}，{r.chief_complaint}".rstrip("，"),
                   title_en="", specialty=specialty, demographics=dict(r.demographics),
                   narrator=r.narrator, opening=opening, vitals=r.vitals, diagnosis=diagnosis,
                   differentials=diffs,
                   teaching=[f"其他诊断：{'；'.join(dx[1:])}"] if dx[1:] else [])


# ---------------------------------------------------------------- OSCE JSON (English)

_EN_RULES: list[tuple[str, re.Pattern[str]]] = [(i, re.compile(p, re.I)) for i, p in (
    ("treatment_so_far", r"\b(?:tried|took|prescribed|was given|treated with|over-the-counter|"
                         r"urgent care|emergency department|saw (?:a|his|her) doctor)\b"),
    ("radiation", r"radiat|spreads? to|moves? to|travels? to"),
    ("aggravating", r"\bworse (?:with|when|on|after|at|during)|exacerbat|aggravat|"
                    r"worsens? (?:with|when|on|after|during)|brought on by"),
    ("relieving", r"relie|\bbetter (?:with|when|after)|improves? (?:with|when|after)|\beases"),
    ("severity", r"\b(?:severe|mild|moderate|worst|unbearable|excruciating)\b|\d+\s*/\s*10"),
    ("character", r"\b(?:sharp|dull|burning|crushing|pressure|stabbing|aching|throbbing|squeezing"
                  r"|cramp\w*|colicky|tearing|pounding|productive|dry|bloody|watery)\b"),
    ("site", r"\blocated|locali[sz]ed|\b(?:left|right)[- ](?:upper|lower)|epigastr|periumbilic"),
    ("timing", r"intermittent|constant|episod|comes and goes|at night|in the (?:morning|evening)|"
               r"\bevery\b|times a|\bdaily\b|each (?:time|episode)|\blast(?:s|ed|ing)\b"),
    ("course", r"worsen|progress|gradual|getting worse|improv|increas|decreas"),
    ("onset", r"\b(?:started|began|begun|since|ago|onset|sudden\w*|history of|for the (?:past|last)"
              r"|over the (?:past|last))\b"),
    ("appetite_weight", r"appetite|weight"), ("sleep", r"\bsleep"),
    ("bowel", r"bowel|stool|diarrh|constipat"), ("urination", r"urin|dysuria"),
)]
_EN_PAST: list[tuple[str, re.Pattern[str]]] = [(i, re.compile(p, re.I)) for i, p in (
    ("allergies", r"allerg"), ("surgery", r"surgery|ectomy|operation|surgical"),
    ("trauma", r"trauma|injur|fracture|accident"), ("transfusion", r"transfusion"),
    ("vaccination", r"vaccin|immuni[sz]"),
    ("medications", r"\btak(?:es|ing)\b|medication|\bmg\b|\bon \w+ therapy|prescri|inhaler|"
                    r"contracepti|supplement|drug use|illicit|recreational"),
    ("birth_development", r"\bborn\b|birth|gestation|developmental|milestone"),
    ("smoking", r"smok|cigarette|tobacco|pack"), ("alcohol", r"alcohol|drinks?\b|beer|wine|liquor"),
    ("occupation_exposure", r"\bworks?\b|\bjob\b|occupation|employed|exposure"),
    ("travel", r"travel|trip|abroad"),
    ("contacts", r"sick contacts?|contact with|pets?\b|animals?|daycare|colds?\b|\bill\b"),
    ("sexual_history", r"sexual|partner"), ("diet", r"\bdiet|\beats?\b|meal"),
    ("living_situation", r"\blives?\b|married|divorced|widow|children|family support"),
    ("menstrual", r"menstrua|period|menarche|\bLMP\b|menopaus"),
    ("obstetric", r"pregnan|gravida|\bG\dP\d|deliver|miscarr"),
    ("family_history", r"family history|runs in the family"),
)]
_EN_NEG = re.compile(r"\b(?:denies|no|not|never|without|negative for|none|hasn't|doesn't|didn't)\b",
                     re.I)
_ABNORMAL_EN = re.compile(
    r"\b(?:elevated|high|low|decreased|increased|positive|abnormal|enlarged|mass|opacit\w*|"
    r"infiltrat\w*|consolidat\w*|effusion|fracture|obstruct\w*|dilat\w*|thicken\w*|stones?|"
    r"calculi|lesions?|tender\w*|murmur|crackles|rales|wheez\w*|edema|distended|distension|rigid\w*|"
    r"guarding|rebound|jaundice|icter\w*|pallor|pale|cyanos\w*|weak\w*|ptosis|diminished|absent|"
    r"reduced|deviat\w*|bruit|rash|swollen|swelling|erythema\w*|lymphadenopathy|hepatomegaly|"
    r"splenomegaly|tachycard\w*|bradycard\w*|fatigab\w*|elevation|inversion|depression|"
    r"irregular|anemia|leukocytosis|hypo\w+|hyper\w+|decrement\w*|narrow\w*|stridor|retraction\w*|"
    r"thymoma|ptosis|diplopia)\b|[↑↓]", re.I)
_NEGATOR_EN = re.compile(r"\b(?:no|not|without|negative|denies|absence of|non|normal)\b", re.I)
_GROUPS = re.compile(r"^(?:blood|lab|laboratory|labs|imaging|radiology|serology|microbiology|"
                     r"urine|other|additional|special|diagnostic)(?:[_ ]*(?:tests?|studies|"
                     r"results|work[-_ ]?up|findings|investigations))?$", re.I)
_VITALS_EN = {
    "temperature_c": r"(\d{2,3}(?:\.\d+)?)\s*°?\s*[CF]?",
    "heart_rate": r"(\d{2,3})", "respiratory_rate": r"(\d{1,2})",
    "bp": r"(\d{2,3})\s*/\s*(\d{2,3})", "spo2": r"(\d{2,3})\s*%",
    "weight_kg": r"(\d+(?:\.\d+)?)\s*kg",
}
_VITAL_KEYS = {"temp": "temperature_c", "heart": "heart_rate", "pulse": "heart_rate",
               "respirat": "respiratory_rate", "blood_pressure": "bp", "bp": "bp",
               "oxygen": "spo2", "spo2": "spo2", "saturation": "spo2", "weight": "weight_kg"}


def _label(key: str) -> str:
    return re.sub(r"\s+", " ", key.replace("_", " ")).strip()


def _flatten(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{_label(k)}: {_flatten(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flatten(v) for v in value)
    return str(value).strip()


def _sentences_en(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?;])\s+", text.strip()) if s.strip()]


_BARE_VERB = re.compile(r"^(works|lives|drinks|smokes|attends|takes|uses|eats|exercises|has|is|"
                        r"does not|doesn't|denies|reports|notes|endorses)\b\s*(?:any\s+)?", re.I)
_FIRST = {"has": "have", "is": "am", "does not": "don't", "doesn't": "don't",
          "denies": "haven't had any", "reports": "have", "notes": "have", "endorses": "have"}


def _voice_en(text: str, narrator: str, child: str, pronoun: str) -> str:
    """Clinical third person -> the patient's first person, or a parent's words."""
    if narrator:
        text = re.sub(r"^(?:the|his|her) (?:mother|father|parents?|caregiver)s? (?:reports?|"
                      r"states?|notes?|says?)(?: that)?\s*", "", text, flags=re.I)
        text = re.sub(r"\b(?:the patient|the child|the infant|the baby|the boy|the girl)\b",
                      child, text, flags=re.I)
        return _BARE_VERB.sub(lambda m: f"{pronoun} {m.group(1).lower()} ", text)
    verb = _BARE_VERB.match(text)  # "Works as a teacher." has no subject to turn
    if verb:
        v = verb.group(1).lower()
        text = f"I {_FIRST.get(v, v[:-1])} " + text[verb.end():]
    text = re.sub(r"^(\S+)[- ](day|week|month|year|hour)s? history of (.+?)\.?$",
                  r"I've had \3 for \1 \2s.", text, flags=re.I)
    subj = r"(?:the patient|patient|he|she)"
    text = re.sub(rf"\b{subj} (?:reports|states|notes|mentions|says) that ", "", text, flags=re.I)
    text = re.sub(rf"\b{subj} (?:reports|describes|endorses|complains of|notes|mentions) ",
                  "I have ", text, flags=re.I)
    text = re.sub(rf"\b{subj} denies (?:any )?", "I haven't had any ", text, flags=re.I)
    text = re.sub(rf"\b{subj}\b", "I", text, flags=re.I)
    text = re.sub(r"\b(?:his|her)\b", "my", text, flags=re.I)
    text = re.sub(r"\bhim\b", "me", text, flags=re.I)
    text = re.sub(r"\b(?:himself|herself)\b", "myself", text, flags=re.I)
    for a, b in (("I has", "I have"), ("I is", "I am"), ("I does", "I do")):
        text = re.sub(rf"\b{a}\b", b, text)
    return re.sub(r"\bI (smoke|drink|work|live|take|use|feel|notice|experience|eat|walk|sleep|"
                  r"get|need|want|go)s\b", r"I \1", text)


_EN_TIME = re.compile(r"\b(?:ago|since|history of|started|began|for the (?:past|last)|"
                      r"over the (?:past|last)|for \d+ \w+)\b", re.I)
_EN_DENY = re.compile(r"^.*?\b(?:denies|no|without|negative for|has not had|hasn't had|"
                      r"did not have|does not have)\b\s*(?:any\s*)?", re.I)


def _segs_en(text: str, rules: list[tuple[str, re.Pattern[str]]], default: str,
             main: str = "") -> list[Seg]:
    """English sentences -> facts; in the history (default "onset") one intent a sentence
    with the symptom it names, and each denied symptom on its own."""
    segs: list[Seg] = []
    for s in _sentences_en(text):
        neg = bool(_EN_NEG.search(s))
        named = [c for c, _ in subjects_in(s)]
        intents = [i for i, rx in rules if rx.search(s)]
        if default != "onset":
            if "occupation_exposure" in intents and "contacts" in intents:
                intents.remove("contacts")
            segs.append(Seg(intents or [default], "", neg, s))
            continue
        if neg and named and _EN_DENY.match(s):
            body = _EN_DENY.sub("", s).rstrip(".")
            for item in (x.strip() for x in re.split(r",\s*(?:or|and)?\s*|\s+(?:or|and)\s+",
                                                     body) if x.strip()):
                segs.append(Seg(["associated"], subject_of(item) or item.lower(), True,
                                f"No {item}"))
            continue
        if "onset" in intents and _EN_TIME.search(s):
            intents = ["onset", *[i for i in intents if i != "onset"]]
        intents = intents[:3] or ["associated" if segs else "onset"]
        subject = named[0] if named else (
            "" if intents[0] in ("treatment_so_far", "associated") else main)
        segs.append(Seg(intents, subject, neg, s))
    first = next((x for x in segs if x.intents[0] == "onset"), None)
    if default == "onset" and first and not any("duration" in x.intents for x in segs):
        first.intents.append("duration")
    return segs


def import_osce(doc: Any) -> Draft:
    """An AgentClinic-style OSCE document (decoded JSON) -> a draft case, in English.

    Reads `OSCE_Examination` (or the object itself when it has `Patient_Actor`):
    Demographics, History, Symptoms (Primary/Secondary), Past_Medical_History,
    Social_History, Review_of_Systems and any Medications/Allergies/Family_History,
    Physical_Examination_Findings (Vital_Signs to the opening), Test_Results and
    Correct_Diagnosis. The text stays English; translating is a separate step.
    """
    b = _Builder(english=True)
    osce = doc.get("OSCE_Examination", doc) if isinstance(doc, dict) else None
    if not isinstance(osce, dict) or not isinstance(osce.get("Patient_Actor"), dict):
        return Draft(source="osce", case={}, problems=[
            "$: 不是 OSCE 文档 (not an OSCE document: expected OSCE_Examination.Patient_Actor)"])
    actor: dict[str, Any] = osce["Patient_Actor"]
    seed = msgspec.json.encode(osce).decode()
    demo = _flatten(actor.get("Demographics", ""))
    history = _flatten(actor.get("History", ""))
    age_m = re.search(r"(\d{1,3})[- ](year|month|week|day)s?[- ]old", demo, re.I)
    age, unit = (int(age_m.group(1)), age_m.group(2).lower()) if age_m else (0, "year")
    if unit == "week":
        age, unit = (age * 7, "day") if age < 13 else (age * 7 // 30, "month")
    if unit == "day" and age >= 90:
        age, unit = age // 30, "month"
    if unit == "month" and age >= 36:
        age, unit = age // 12, "year"
    age_unit = {"year": "years", "month": "months", "day": "days"}[unit]
    if not age_m:
        b.problem("$.demographics.age", "Demographics 中没有年龄", "no age in Demographics")
    sex_m = re.search(r"\b(female|woman|girl|lady|male|man|boy|gentleman)\b", demo, re.I)
    sex = ("female" if sex_m.group(1).lower() in ("female", "woman", "girl", "lady") else "male"
           ) if sex_m else ""
    if not sex:
        sex = "male"
        b.problem("$.demographics.sex", "Demographics 中没有性别", "not found; the draft says male")
    name = placeholder_name(sex, seed, english=True)
    b.problem("$.demographics.name", f"OSCE 不含姓名，占位为“{name}”", "a placeholder name")
    social = _flatten(actor.get("Social_History", ""))
    occ_m = re.search(r"\bworks? as an? ([a-z ]{3,30}?)(?:[,.;]| and| at| in)|\b(?:is|an?) "
                      r"(retired \w+|student|teacher|nurse|farmer|engineer|accountant)\b",
                      social, re.I)
    occupation = (occ_m.group(1) or occ_m.group(2)).strip() if occ_m else ""
    rel_m = re.search(r"\b(mother|father|parents?|caregiver)\b", history, re.I)
    child = age_unit != "years" or age < 12
    narrator = (rel_m.group(1).lower() if rel_m else "parent") if child else ""
    kid = "my son" if sex == "male" else "my daughter"

    pronoun = "He" if sex == "male" else "She"

    def voice(s: str) -> str:
        return _voice_en(s, narrator, kid, pronoun)

    symptoms = actor.get("Symptoms", {})
    symptoms = symptoms if isinstance(symptoms, dict) else {"Primary_Symptom": symptoms}
    cc = _flatten(symptoms.get("Primary_Symptom", "")).strip().rstrip(".")
    if not cc:
        b.problem("$.opening.chief_complaint", "没有 Primary_Symptom", "no Primary_Symptom")
    main = subject_of(cc) or cc.lower()
    segs = _segs_en(history, _EN_RULES, "onset", main)
    if not history:
        b.problem("$.facts", "没有 History", "no History")
    secondary = symptoms.get("Secondary_Symptoms", [])
    for s in secondary if isinstance(secondary, list) else [secondary]:
        s = _flatten(s).strip().rstrip(".")
        if s:
            also = f"{pronoun} has also had" if narrator else "I've also had"
            segs.append(Seg(["associated"], subject_of(s) or s.lower(), False,
                            f"{also} {s[0].lower() + s[1:]}"))
    for key, default in (("Past_Medical_History", "past_history"), ("Medications", "medications"),
                         ("Allergies", "allergies"), ("Social_History", "living_situation"),
                         ("Family_History", "family_history")):
        if key in actor:
            segs += _segs_en(_flatten(actor[key]), _EN_PAST, default)
        elif key in ("Past_Medical_History", "Social_History"):
            b.problem("$.facts", f"没有 {key}", f"no {key}")
    ros = _flatten(actor.get("Review_of_Systems", ""))
    segs += _segs_en(ros, _EN_RULES, "onset", main) if ros else []
    b.facts_from(segs, voice)
    exam = osce.get("Physical_Examination_Findings", {})
    vitals: dict[str, float] = {}
    for key, value in (exam.items() if isinstance(exam, dict) else []):
        if re.search(r"vital", key, re.I) and isinstance(value, dict):
            for k, v in value.items():
                field = next((f for w, f in _VITAL_KEYS.items() if w in k.lower()), "")
                if field:
                    vitals |= read_vitals([_flatten(v)], {field: _VITALS_EN[field]})
            continue
        result = _flatten(value)
        short = re.sub(r"\s*exam(?:ination)?$", "", _label(key), flags=re.I)
        b.orderable("e", _label(key), [short],
                    result, abnormal(result, _ABNORMAL_EN, _NEGATOR_EN))
    if not b.exams:
        b.problem("$.exams", "没有 Physical_Examination_Findings", "no examination findings")
    results = osce.get("Test_Results", {})
    for key, value in (results.items() if isinstance(results, dict) else []):
        group = _GROUPS.match(key) and isinstance(value, dict)  # "Blood_Tests": {...}
        children = value.items() if group else [(key, value)]
        for label, v in children:
            result = _flatten(v)
            b.orderable("t", _label(label), [], result, abnormal(result, _ABNORMAL_EN, _NEGATOR_EN))
    if not b.tests:
        b.problem("$.tests", "没有 Test_Results", "no Test_Results")
    dx_text = _flatten(osce.get("Correct_Diagnosis", "")).strip().rstrip(".")
    diagnosis = _diagnosis(dx_text) if dx_text else None
    specialty = _specialty(diagnosis["icd10"] if diagnosis else "", child)
    if specialty:
        b.problem("$.specialty", f"推测为“{specialty}”，请核对", "a guess; check it")
    who = {"years": "year", "months": "month", "days": "day"}[age_unit]
    male = sex == "male"
    person = ("boy" if male else "girl") if child else ("man" if male else "woman")
    title_en = f"{age}-{who}-old {person} with {cc.lower()}" if cc else f"{age}-{who}-old {person}"
    first = f"{kid} has" if narrator else "I've had"
    statement = f"Doctor, {first} {cc[:1].lower() + cc[1:]}." if cc else ""
    opening = {"chief_complaint": cc, "statement": statement,
               "appearance": f"A {age}-{who}-old {person}."}
    b.problem("$.opening.appearance", "OSCE 不描述外观，请补写", "OSCE JSON says nothing of how "
              "the patient looks; describe it")
    return _finish(b, "osce", seed, title=title_en[:1].upper() + title_en[1:], title_en=title_en,
                   specialty=specialty,
                   demographics={"name": name, "sex": sex, "age": age, "age_unit": age_unit,
                                 "occupation": occupation},
                   narrator=narrator, opening=opening, vitals=vitals, diagnosis=diagnosis,
                   differentials=[], teaching=[])


def import_source(data: bytes, index: int = 0) -> Draft:
    """Whatever a file holds: OSCE JSON (an object, or JSON lines / an array of them, the
    `index`-th taken), else a record in UTF-8 or GB18030 text."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030", errors="replace")
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            docs: list[Any] = [msgspec.json.decode(stripped.encode())]
        except msgspec.DecodeError:
            try:
                docs = [msgspec.json.decode(x.encode()) for x in stripped.splitlines() if x.strip()]
            except msgspec.DecodeError as exc:
                return Draft(source="osce", case={},
                             problems=[f"$: 不是有效 JSON (not valid JSON: {exc})"])
        if len(docs) == 1 and isinstance(docs[0], list):
            docs = docs[0]
        if not 0 <= index < len(docs):
            return Draft(source="osce", case={}, problems=[
                f"$: 只有 {len(docs)} 个病例 (index {index} out of range)"])
        return import_osce(docs[index])
    return import_record(text)
