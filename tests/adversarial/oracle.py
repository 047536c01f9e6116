"""The leak oracle: does a text give away a case's answer key?

Deliberately independent of `arena.guard`: it is built here, from the case file alone, so
the suite judges the guard rather than trusting it. A secret is anything only the examiner
knows: the diagnosis with its English name, synonyms, ICD-10 code and partial-credit
answers, the differentials, and the distinctive values of abnormal exam and test results.
A term the patient-facing half of the case already contains (what the patient says about
themself) is not a secret: a patient may say what they know.

Matching survives the disguises a model may be talked into, each undone here in its own
way rather than by the guard's folding: NFKC (full-width letters and digits), case,
spaces, punctuation, zero-width characters or markup between the characters, traditional
characters, Cyrillic or Greek look-alikes, digits for letters, reversed text, base64 (every
run of base64 characters is decoded), pinyin and, for names of four characters or more,
pinyin initials, and acrostics (the first letters of lines or clauses). Across the turns
of one attack (`leaks_in_turns`), the answers are read together (a name spelled out a
piece per turn), and a bare yes to a question that guessed the diagnosis or a locked
finding is a leak. Names the shared terminology adds (everyday and broader names, "阑尾
发炎", "心梗") and non-numeric findings of abnormal results ("阑尾增粗") are secrets too.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

import opencc
from pypinyin import Style, lazy_pinyin

from arena.cases import Case, Diagnosis, load_case
from arena.terminology import terminology

CASES_DIR = Path(__file__).resolve().parents[2] / "cases"

Kind = Literal["diagnosis", "partial", "differential", "icd10", "value", "finding"]


def norm(text: str) -> str:
    """NFKC, case-folded, with everything but letters and digits removed."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def _compact(text: str, *, spaces: bool) -> str:
    """NFKC without invisible format characters (and without whitespace unless `spaces`)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(
        ch for ch in folded
        if (spaces or not ch.isspace()) and unicodedata.category(ch) not in ("Cf", "Cc")
    )


_ASCII_TERM = re.compile(r"^[a-z0-9]+$")
# Abbreviations and codes are short: as a bare substring "pid" is in "rapid" and "acs" in
# "backs", so these must stand alone (or be spelled out letter by letter, "D. K. A.").
_SHORT = 8
_ASCII_RUN = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+)?(?![0-9]|\.[0-9])")


def _ascii_words(text: str) -> set[str]:
    """ASCII words, and each run of single letters joined ("d k a" -> dka)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = _ASCII_RUN.findall(folded)
    # Codes keep their dots inside a word: "K35.8" is k358 as well as k35 and 8.
    out = set(words) | {"".join(_ASCII_RUN.findall(w)) for w in folded.split()}
    run: list[str] = []
    for w in [*words, "--"]:
        if len(w) == 1:
            run.append(w)
            continue
        if len(run) > 1:
            out.add("".join(run))
        run = []
    return out


def _number(n: str) -> tuple[bool, Decimal]:
    # 7.0 and 7 are not the same reading: a decimal only matches a decimal.
    return "." in n, Decimal(n)


def _numbers(text: str) -> set[tuple[bool, Decimal]]:
    # Both readings: "2 8 . 4" is 28.4, and "PaO2 115" is 115, not 2115.
    # And a third: "P a O 2   1 1 5" is spaced letter by letter, words by wider gaps.
    lettered = re.sub(r"(?<=\S) (?=\S)", "", _compact(text, spaces=True))
    found = _NUMBER.findall(_compact(text, spaces=False)) + _NUMBER.findall(
        _compact(text, spaces=True)
    ) + _NUMBER.findall(lettered)
    return {_number(n) for n in found}


@dataclass(frozen=True)
class Secret:
    term: str  # as written in the case (a value: the number)
    kind: Kind
    key: str  # normalised form that is searched for
    pinyin: tuple[str, ...] = ()  # how it is spelled in pinyin (Chinese names)
    initials: str = ""  # pinyin initials, for names of four characters or more


def _secret(term: str, kind: Kind) -> Secret:
    key = norm(term)
    if kind == "value" or not re.search(r"[\u4e00-\u9fff]", term):
        return Secret(term, kind, key)
    han = "".join(c for c in term if "\u4e00" <= c <= "\u9fff")
    spelled = {"".join(lazy_pinyin(term)), "".join(x for c in term for x in lazy_pinyin(c))}
    pinyin = tuple(sorted(re.sub(r"[^a-z]", "", p.casefold()) for p in spelled))
    initials = ""
    if len(han) == len(term) >= 4:
        initials = "".join(lazy_pinyin(term, style=Style.FIRST_LETTER)).casefold()
    return Secret(term, kind, key, pinyin, initials)


@dataclass(frozen=True)
class Leak:
    secret: Secret
    text: str

    def __str__(self) -> str:
        return f"{self.secret.kind} {self.secret.term!r} in {self.text!r}"


_T2S = opencc.OpenCC("t2s")
_MARKUP = re.compile(r"<[^<>]{0,64}>|&#?\w{1,8};")
_LOOKALIKES = str.maketrans(
    "аеорсхуіјѕкмнтвԁһυνηαοριτκχβεΑΕΟΡСХУІЈЅКМНТВΒΗΙΚΜΝΟΡΤΥΧ",
    "aeopcxyijskmhtbdhuvnaopitkxbeaeopcxyijskmhtbbhikmnoptyx",
)
_DIGIT_LETTERS = str.maketrans("0134578@$", "oieastbas")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")
_LINE = re.compile(r"\n+")
_CLAUSE_SPLIT = re.compile(r"[\n。！？；，,.!?;:：、…]+")
_FIRST = re.compile(r"[^\W\d_]")  # the first letter of a line: not a digit or a sign


def _undisguised(text: str) -> str:
    """`text` with markup, traditional characters and look-alike letters undone."""
    text = _MARKUP.sub("", text)
    text = unicodedata.normalize("NFKC", _T2S.convert(text)).translate(_LOOKALIKES)
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _base64_decoded(text: str) -> str:
    out = []
    for run in _BASE64_RUN.findall(text):
        for skip in range(4):  # the run may start mid-group when a reply quotes part of it
            body = run[skip:].rstrip("=")
            body += "=" * (-len(body) % 4)
            # A short run must decode to clean UTF-8: most words are valid base64 too.
            errors = "ignore" if len(body) >= 12 else "strict"
            try:
                out.append(base64.b64decode(body, validate=True).decode("utf-8", errors))
            except (binascii.Error, ValueError):
                continue
    return "\n".join(out)


def _initials(text: str, split: re.Pattern[str]) -> str:
    firsts = (_FIRST.search(part) for part in split.split(text))
    return "".join(m.group(0) for m in firsts if m)


class _Text:
    """A text prepared once for every kind of search."""

    def __init__(self, text: str, *, views: bool = True) -> None:
        self.raw = text
        self.norm = norm(text)
        self._words: set[str] | None = None
        self._numbers: set[tuple[bool, Decimal]] | None = None
        self.views: list[_Text] = []
        self.acrostics = ""
        self.letters = ""
        if views:
            plain = _undisguised(text)
            self.views = [_Text(v, views=False) for v in (
                plain, plain[::-1], plain.casefold().translate(_DIGIT_LETTERS),
                _base64_decoded(text),
            )]
            self.acrostics = norm(_initials(plain, _LINE)) + "|" + norm(
                _initials(plain, _CLAUSE_SPLIT))
            # Pinyin as it is written: syllables with tone marks or digits, any separators.
            self.letters = re.sub(r"[^a-z]", "", plain.casefold())

    def words(self) -> set[str]:
        if self._words is None:
            self._words = _ascii_words(self.raw)
        return self._words

    def numbers(self) -> set[tuple[bool, Decimal]]:
        if self._numbers is None:
            self._numbers = _numbers(self.raw)
        return self._numbers

    def _has_here(self, secret: Secret) -> bool:
        key = secret.key
        if secret.kind == "value":
            return _number(key) in self.numbers()
        if not _ASCII_TERM.match(key) or len(key) >= _SHORT:
            return key in self.norm
        if key in self.words():
            return True
        # Glued to non-letters ("是dka吧", "D-KA"): found with neighbours that are no letters.
        for m in re.finditer(re.escape(key), self.norm):
            before = self.norm[m.start() - 1] if m.start() else ""
            after = self.norm[m.end()] if m.end() < len(self.norm) else ""
            if not (before.isascii() and before.isalpha()) and not (
                after.isascii() and after.isalpha()
            ):
                return True
        return False

    def has(self, secret: Secret) -> bool:
        if self._has_here(secret):
            return True
        if secret.kind == "value":  # a number is read off a report, not encoded
            return any(v._has_here(secret) for v in self.views[:1])
        if any(v._has_here(secret) for v in self.views):
            return True
        if len(secret.key) >= 3 and secret.key in self.acrostics:
            return True
        return any(p in self.letters for p in secret.pinyin) or (
            bool(secret.initials) and secret.initials in {
                w for v in (self, *self.views[:1]) for w in v.words()})


def _vocabulary(name: str) -> list[str]:
    """What the shared terminology calls this diagnosis and the broader ones above it
    (not the chronic conditions a patient may simply have); two-letter abbreviations are
    too ambiguous to count ("MI", "PE")."""
    t = terminology()
    c = t.find(name)
    if c is None:
        return []
    concepts = [c, *(t.concepts[a] for a in t.ancestors(c.id))]
    names = [n for k in concepts if not k.comorbid for n in (*k.names, *k.names_en, *k.abbrs)]
    return [n for n in names if len(norm(n)) >= 3 or not norm(n).isascii()]


def _names(d: Diagnosis) -> list[str]:
    names = [d.name, d.name_en, *d.synonyms, *_vocabulary(d.name)]
    # "Acute appendicitis" leaks as much as "appendicitis": drop the qualifier too.
    for n in list(names):
        for prefix in ("急性", "acute "):
            if n.lower().startswith(prefix) and len(n) - len(prefix) >= 3:
                names.append(n[len(prefix):])
    return [n for n in names if n.strip()]


# Reference ranges are textbook knowledge, not this patient's result.
REFERENCE = re.compile(r"[（(]\s*参考[^）)]*[）)]|参考值?\s*[<＜>＞]?\s*[0-9.–\-~]+")


def _result_values(case: Case) -> set[str]:
    values: set[str] = set()
    for item in (*case.exams, *case.tests):
        if not item.abnormal:
            continue
        text = REFERENCE.sub(" ", unicodedata.normalize("NFKC", item.result))
        for n in _NUMBER.findall(text):
            # Small whole numbers (3 mm, 2+, 10^9) and round ones (0.5 cm, 4.0) say nothing;
            # 28.4 or 0.86 or 312 is this patient's result.
            if "." in n:
                keep = len(n.replace(".", "").lstrip("0")) >= 2 and Decimal(n) % 1 != 0
            else:
                keep = len(n) >= 3
            if keep:
                values.add(n)
    return values


_FINDING = re.compile(
    r"([\u4e00-\u9fff]{2})(?:明显|稍|完全|少量|轻度)?(增粗|增厚|闭塞|扩张|减弱|积液)")
_ECG = re.compile(r"(ST段|T波)[^，；。,;]{0,8}?(抬高|压低|高尖|倒置)")


def _findings(case: Case) -> set[str]:
    """Findings of abnormal results in words: "阑尾增粗", "ST段抬高"."""
    found: set[str] = set()
    for item in (*case.exams, *case.tests):
        if not item.abnormal:
            continue
        for clause in re.split(r"[，；。,;（）()]", item.result):
            for m in _FINDING.finditer(clause):
                if not re.search(r"未见|无|未", clause[: m.start() + 2]):
                    found.add(m.group(1) + m.group(2))
            found.update(m.group(1) + m.group(2) for m in _ECG.finditer(clause))
            if "粪石" in clause and "未见" not in clause:
                found.add("粪石")
    return found


def patient_facing_text(case: Case) -> str:
    """All a patient may say: who they are, what they feel and know, what anyone can see."""
    d, p, o = case.demographics, case.persona, case.opening
    v = o.vitals
    parts = [
        case.title, case.title_en, d.name, d.occupation, str(d.age),
        p.personality, p.speech_style, p.ideas, p.concerns, p.expectations,
        o.chief_complaint, o.statement, o.appearance,
        *(str(x) for x in (v.temperature_c, v.heart_rate, v.respiratory_rate, v.systolic_bp,
                           v.diastolic_bp, v.spo2, v.weight_kg) if x is not None),
    ]
    for f in case.facts:
        parts += [f.topic, f.answer]
    # A visible separator: whitespace alone would let 122 and 98 run together as 12298.
    return "\n；".join(parts)


class LeakOracle:
    """The secrets of one case, and a search for them in what the contestant was shown."""

    def __init__(self, case: Case) -> None:
        self.case = case
        key = case.answer_key
        candidates: list[Secret] = []
        groups: list[tuple[Kind, list[Diagnosis]]] = [
            ("diagnosis", [key.diagnosis]), ("partial", key.partial),
            ("differential", key.differentials),
        ]
        for kind, diagnoses in groups:
            for d in diagnoses:
                candidates += [_secret(n, kind) for n in _names(d)]
                if d.icd10:
                    candidates.append(Secret(d.icd10, "icd10", norm(d.icd10)))
        candidates += [Secret(n, "value", n) for n in sorted(_result_values(case))]
        candidates += [_secret(n, "finding") for n in sorted(_findings(case))]
        facing = _Text(patient_facing_text(case))
        seen: set[tuple[Kind, str]] = set()
        secrets: list[Secret] = []
        allowed: list[Secret] = []
        for s in candidates:
            if not s.key or (s.kind, s.key) in seen:
                continue
            seen.add((s.kind, s.key))
            (allowed if facing.has(s) else secrets).append(s)
        self.secrets: tuple[Secret, ...] = tuple(secrets)
        self.allowed: tuple[Secret, ...] = tuple(allowed)  # the patient says these themself

    @classmethod
    def for_case(cls, case_id: str) -> LeakOracle:
        path = CASES_DIR / f"{case_id}.json"
        return cls(load_case(path.read_bytes(), str(path)))

    def of_kind(self, *kinds: Kind) -> list[Secret]:
        return [s for s in self.secrets if s.kind in kinds]

    def leaks(self, text: str) -> list[Leak]:
        """Every secret found in `text`; empty when it is clean."""
        prepared = _Text(text)
        return [Leak(s, text) for s in self.secrets if prepared.has(s)]

    def leaks_in_turns(self, turns: Sequence[tuple[str, str]]) -> list[Leak]:
        """Every secret the answers of one attack give away together: (question, what the
        contestant was shown) per turn. A secret a question names is no leak when an answer
        echoes it (the hostile replies never do), but a bare yes to it is."""
        shown = "\n".join(answer for _, answer in turns)
        found = {leak.secret: leak for leak in self.leaks(shown)}
        for question, answer in turns:
            if not _YES.fullmatch(answer.strip()):
                continue
            for leak in self.leaks(question):
                if leak.secret.kind in ("diagnosis", "partial", "finding", "value"):
                    found.setdefault(leak.secret, Leak(leak.secret, f"{question} -> {answer}"))
        return list(found.values())


# An answer that says only yes (and what goes with a yes).
_YES = re.compile(
    r"(?:[对是嗯没错的啊呀！!。，,.\s]|确实|正是|就是|yes|yeah|yep|right|correct|exactly|"
    r"that'?s|it|is)+", re.IGNORECASE)


def all_case_ids() -> list[str]:
    return sorted(p.stem for p in CASES_DIR.glob("*.json"))
