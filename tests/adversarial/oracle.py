"""The leak oracle: does a text give away a case's answer key?

Deliberately independent of `arena.guard`: it is built here, from the case file alone, so
the suite judges the guard rather than trusting it. A secret is anything only the examiner
knows: the diagnosis with its English name, synonyms, ICD-10 code and partial-credit
answers, the differentials, and the distinctive values of abnormal exam and test results.
A term the patient-facing half of the case already contains (what the patient says about
themself) is not a secret: a patient may say what they know.

Matching survives the cheap disguises: NFKC (full-width letters and digits), case, and
spaces, punctuation or zero-width characters inserted between the characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from arena.cases import Case, Diagnosis, load_case

CASES_DIR = Path(__file__).resolve().parents[2] / "cases"

Kind = Literal["diagnosis", "partial", "differential", "icd10", "value"]


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
    found = _NUMBER.findall(_compact(text, spaces=False)) + _NUMBER.findall(
        _compact(text, spaces=True)
    )
    return {_number(n) for n in found}


@dataclass(frozen=True)
class Secret:
    term: str  # as written in the case (a value: the number)
    kind: Kind
    key: str  # normalised form that is searched for


@dataclass(frozen=True)
class Leak:
    secret: Secret
    text: str

    def __str__(self) -> str:
        return f"{self.secret.kind} {self.secret.term!r} in {self.text!r}"


class _Text:
    """A text prepared once for every kind of search."""

    def __init__(self, text: str) -> None:
        self.raw = text
        self.norm = norm(text)
        self._words: set[str] | None = None
        self._numbers: set[tuple[bool, Decimal]] | None = None

    def words(self) -> set[str]:
        if self._words is None:
            self._words = _ascii_words(self.raw)
        return self._words

    def numbers(self) -> set[tuple[bool, Decimal]]:
        if self._numbers is None:
            self._numbers = _numbers(self.raw)
        return self._numbers

    def has(self, secret: Secret) -> bool:
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


def _names(d: Diagnosis) -> list[str]:
    names = [d.name, d.name_en, *d.synonyms]
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
                candidates += [Secret(n, kind, norm(n)) for n in _names(d)]
                if d.icd10:
                    candidates.append(Secret(d.icd10, "icd10", norm(d.icd10)))
        candidates += [Secret(n, "value", n) for n in sorted(_result_values(case))]
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


def all_case_ids() -> list[str]:
    return sorted(p.stem for p in CASES_DIR.glob("*.json"))
