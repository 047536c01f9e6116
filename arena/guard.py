"""The output guard: the patient's words never name the answer key.

The prompt never contains the answer key (principle 1), so the model can only
*guess* a diagnosis or a result value; the guard stops a guess that happens to
be right from reaching the contestant as if the patient knew it. It watches the
streamed answer for a per-case list of terms and ends the turn with an
in-character reply on a hit.

Terms (`guard_terms`), each normalised (NFKC, case-folded, only letters and
digits kept):

- diagnosis / differential: every name, English name, synonym and ICD-10 code
  of the primary diagnosis, partial-credit answers and differentials, and every
  name the shared terminology (arena.terminology) knows for them, plus the
  name with a leading qualifier dropped ("急性阑尾炎" -> "阑尾炎", "Acute
  appendicitis" -> "appendicitis").
- result: locked values from exam and test results, extracted by three rules
  chosen so that a term is specific to a measurement, never a bare word:
  a number with its lab unit ("28.4 mmol/L"), an analyte label with its number
  ("血糖28.4", "hs-cTnI 0.86"; a Chinese label is its last two characters), and
  in *abnormal* results the key phrases "ST段抬高"-style ECG changes and positive
  signs ("结肠充气试验阳性" -> "结肠充气试验"). Bare numbers are not terms: once
  separators are dropped "28.4" is "284", which is ordinary speech.

A term is dropped when it is too short to be specific (under 2 normalised
characters, or under 3 when it is all Latin letters and digits), when the
patient-facing text (persona, opening, facts, title, vitals) contains it, since
then the patient may say it, and, for result phrases, when a public exam or test
name contains it (a doctor says those to the patient).

Matching runs on the normalised stream, so it survives chunk boundaries, case,
full-width forms, and spaces, punctuation or zero-width characters between the
characters of a term (at most `MAX_GAP` in a row). Terms that begin (or, for
short abbreviations and numbers, end) with a Latin letter or digit must stand
at a word boundary, so "PID" does not fire inside "rapid". Text is released as
soon as it cannot be the start of any term; only a possible term prefix is held.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from arena.cases import Case, Diagnosis, Persona
from arena.terminology import surface_forms

TermKind = Literal["diagnosis", "differential", "result"]

# A run of more dropped characters than this breaks a match: a term spread that thin
# is not being said, and the bound keeps the held text small.
MAX_GAP = 8

DEFLECTION_ZH = "这个我可说不上来，您是医生，您给看看吧。"
_DEFLECTIONS = (
    DEFLECTION_ZH,
    "我哪懂这些呀，您就直接问我哪儿不舒服吧。",
    "这些我真不知道，我就是觉得难受，您帮我好好查查。",
)
_DEFLECTIONS_PLAIN = (  # low health literacy: plainer, a little lost
    "啊？这我可不懂……您是大夫，您说了算。",
    "这个我说不上来，俺就知道难受。",
    DEFLECTION_ZH,
)

_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_END = ""  # trie key for "a term ends here": no real character normalises to ""


class Leak(msgspec.Struct, frozen=True):
    """A guard hit: which answer-key term the model's words contained."""

    term: str  # the answer-key term as written in the case
    kind: str  # "diagnosis" | "differential" | "result"


class GuardTerm(msgspec.Struct, frozen=True):
    term: str  # as written in the case
    kind: TermKind
    norm: str  # normalised form that is matched

    @property
    def needs_start_boundary(self) -> bool:
        return self.norm[0] in _ASCII_ALNUM

    @property
    def needs_end_boundary(self) -> bool:
        # Short abbreviations (DKA, PID) and numbers (血糖284) must not run on into a word
        # or a longer number; long names may take a suffix ("STEMIs", "appendicitis's").
        last = self.norm[-1]
        short_abbr = len(self.norm) <= 5 and all(c in _ASCII_ALNUM for c in self.norm)
        return last.isdigit() or (last in _ASCII_ALNUM and short_abbr)


def _norm_char(ch: str) -> str:
    if ch.isascii():
        return ch.lower() if ch.isalnum() else ""
    return _norm_wide(ch)


# Every streamed character passes here; an answer uses a few hundred distinct ones.
@functools.lru_cache(maxsize=8192)
def _norm_wide(ch: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", ch).casefold() if c.isalnum())


def normalize(text: str) -> str:
    """`text` as the guard sees it: NFKC, case-folded, letters and digits only."""
    return "".join(_norm_char(ch) for ch in text)


# --- term extraction -------------------------------------------------------------------

_QUALIFIERS = re.compile(
    r"^(?:急性|慢性|右侧|左侧|(?:acute|chronic|right|left|inferior|localized|localised)\s+)",
    re.IGNORECASE,
)
_UNIT = (
    r"(?:×\s*10\^?\d+\s*/\s*L|[mμu]mol/L|[nmpμ]g/m?L|mg/dL|g/L|I?U/L|mmHg|mV|ms|mm|cm|次/分|秒|s(?![A-Za-z]))"
)
_NUMBER = r"\d+(?:\.\d+)?"
_VALUE_WITH_UNIT = re.compile(rf"(?<![\d.]){_NUMBER}\s*{_UNIT}")
_LABELLED_VALUE = re.compile(
    rf"(?P<label>[A-Za-z][A-Za-z0-9₀-₉⁺⁻\-]*|[\u4e00-\u9fff]{{2}}(?<!约))"  # "径约10" is no label
    rf"\s*[:：]?\s*[-−]?(?P<num>{_NUMBER})(?![\d.])"
)
_ECG_CHANGE = re.compile(r"(ST段|T波)[^，；。,;]{0,8}?(抬高|压低|高尖|倒置)")
_POSITIVE_SIGN = re.compile(r"([A-Za-z\u4e00-\u9fff]{2,10})\s*(?:（\+）|\(\+\)|阳性)")


def _diagnosis_names(d: Diagnosis) -> Iterable[str]:
    # The shared terminology adds the names a case did not list ("GERD", "食道癌").
    for name in (d.name, d.name_en, *d.synonyms, d.icd10, *sorted(surface_forms(d.name))):
        if name:
            yield name
            stripped = _QUALIFIERS.sub("", name)
            if stripped != name:
                yield stripped


# Reference ranges are textbook values, not this patient's: "（参考值＜10 mg/L）".
_REFERENCE = re.compile(r"[（(]参考[^）)]*[）)]")


def _result_phrases(result: str, abnormal: bool) -> Iterable[str]:
    result = _REFERENCE.sub("", result)
    yield from (m.group(0) for m in _VALUE_WITH_UNIT.finditer(result))
    yield from (m.group(0) for m in _LABELLED_VALUE.finditer(result))
    if abnormal:
        for m in _ECG_CHANGE.finditer(result):
            yield m.group(1) + m.group(2)
            if m.group(1) == "ST段":
                yield "ST" + m.group(2)  # how it is said aloud
        yield from (m.group(1) for m in _POSITIVE_SIGN.finditer(result))


def patient_facing_text(case: Case) -> str:
    """Everything the patient may say or that is public before the round, one string."""
    d, p, o, v = case.demographics, case.persona, case.opening, case.opening.vitals
    parts = [
        case.title, case.title_en, d.name, d.occupation,
        p.personality, p.speech_style, p.ideas, p.concerns, p.expectations,
        o.chief_complaint, o.statement, o.appearance,
        f"体温{v.temperature_c}℃ 心率{v.heart_rate}次/分 呼吸{v.respiratory_rate}次/分 "
        f"血压{v.systolic_bp}/{v.diastolic_bp}mmHg 血氧{v.spo2}% 体重{v.weight_kg}kg",
    ]
    for f in case.facts:
        parts += [f.topic, f.answer]
    return "\n".join(parts)


def _specific(norm: str) -> bool:
    if all(c in _ASCII_ALNUM for c in norm):
        return len(norm) >= 3
    return len(norm) >= 2


def guard_terms(case: Case) -> tuple[GuardTerm, ...]:
    """The answer-key terms the patient must not say in `case`, most important kind first.

    Deterministic; each normalised form appears once; none occurs in the case's
    patient-facing text (see the module docstring for the extraction rules).
    """
    key = case.answer_key
    facing = normalize(patient_facing_text(case))
    public_orders = [
        normalize(n) for o in (*case.exams, *case.tests) for n in (o.name, *o.aliases)
    ]
    candidates: list[tuple[str, TermKind]] = []
    for d in (key.diagnosis, *key.partial):
        candidates += [(n, "diagnosis") for n in _diagnosis_names(d)]
    for d in key.differentials:
        candidates += [(n, "differential") for n in _diagnosis_names(d)]
    results: list[tuple[str, TermKind]] = []
    for o in (*case.exams, *case.tests):
        results += [(t, "result") for t in _result_phrases(o.result, o.abnormal)]
    seen: set[str] = set()
    terms: list[GuardTerm] = []
    for text, kind in (*candidates, *results):
        norm = normalize(text)
        if norm in seen or not _specific(norm) or norm in facing:
            continue
        # A bare value needs 4 characters to be specific; a unit makes 3 enough ("2.5秒").
        shortest = 3 if _VALUE_WITH_UNIT.fullmatch(text) else 4
        if kind == "result" and (len(norm) < shortest or any(norm in n for n in public_orders)):
            continue
        seen.add(norm)
        terms.append(GuardTerm(text.strip(), kind, norm))
    return tuple(terms)


# --- the streaming matcher ---------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _trie(terms: tuple[GuardTerm, ...]) -> dict[str, Any]:
    # Cached: a guard is made per answer, mostly with the same terms, and the trie
    # is only read after it is built. Building it costs ~0.2 ms, all before the first token.
    root: dict[str, Any] = {}
    for t in terms:
        node = root
        for c in t.norm:
            node = node.setdefault(c, {})
        node.setdefault(_END, t)
    return root


class OutputGuard:
    """Watches one streamed answer for answer-key terms. Make a new one per answer.

    `feed(chunk)` returns the text safe to release now; `flush()` releases the
    rest at the end of the stream. After a hit, `leak` is set and both return ""
    for good, including the text held when the term completed: whatever led up to
    a leak ("您说得对，就是") is not worth sending before the deflection.
    """

    def __init__(self, terms: Sequence[GuardTerm], *, allowed_text: str = "") -> None:
        # A differential in `allowed_text` (the doctor's own question) may be echoed:
        # "没得过主动脉夹层" tells the contestant nothing new. The diagnosis and the
        # results never may: echoing "是不是阑尾炎？" with "对，就是阑尾炎" confirms a guess.
        allowed = normalize(allowed_text)
        self.terms = tuple(
            t for t in terms
            if not (allowed and t.kind == "differential" and t.norm in allowed)
        )
        self._root = _trie(self.terms)
        self.holdback = max(
            (len(t.norm) - 1 + t.needs_end_boundary for t in self.terms), default=0
        )
        self.leak: Leak | None = None
        self._pending = ""  # original text not yet released
        # Partial matches: (trie node, offset in _pending where it began, boundary before).
        self._states: list[tuple[dict[str, Any], int, bool]] = []
        # Complete matches that still need a word boundary after them.
        self._awaiting: list[tuple[GuardTerm, int]] = []
        self._last_ascii = False  # last normalised character was a Latin letter or digit
        self._gap = 0  # dropped characters since the last normalised one

    @classmethod
    def for_case(cls, case: Case, *, question: str = "") -> OutputGuard:
        """A guard for one answer in `case`; terms in `question` are allowed."""
        return cls(guard_terms(case), allowed_text=question)

    def _hit(self, term: GuardTerm) -> str:
        self.leak = Leak(term.term, term.kind)
        self._pending = ""
        self._states.clear()
        self._awaiting.clear()
        return ""

    def feed(self, text: str) -> str:
        """The next chunk of the model's answer; returns what may be released now."""
        if self.leak is not None:
            return ""
        base = len(self._pending)
        self._pending += text
        for i, ch in enumerate(text):
            norm = _norm_char(ch)
            if not norm:
                self._gap += 1
                if self._awaiting:  # a separator is a word boundary
                    return self._hit(self._awaiting[0][0])
                if self._gap > MAX_GAP:
                    self._states.clear()
                continue
            for c in norm:
                term = self._step(c, base + i)
                if term is not None:
                    return self._hit(term)
        return self._release()

    def _step(self, c: str, offset: int) -> GuardTerm | None:
        is_ascii = c in _ASCII_ALNUM
        boundary = self._gap > 0 or not (is_ascii and self._last_ascii)
        if self._awaiting:
            if boundary:
                return self._awaiting[0][0]
            self._awaiting.clear()
        states = [
            (child, start, sb)
            for node, start, sb in self._states
            if (child := node.get(c)) is not None
        ]
        if (child := self._root.get(c)) is not None:
            states.append((child, offset, boundary))
        self._states = states
        self._last_ascii, self._gap = is_ascii, 0
        for node, start, sb in states:
            term: GuardTerm | None = node.get(_END)
            if term is None or (term.needs_start_boundary and not sb):
                continue
            if not term.needs_end_boundary:
                return term
            self._awaiting.append((term, start))
        return None

    def _release(self) -> str:
        starts = [s for _, s, _ in self._states] + [s for _, s in self._awaiting]
        cut = min(starts, default=len(self._pending))
        out, self._pending = self._pending[:cut], self._pending[cut:]
        if cut:
            self._states = [(n, s - cut, b) for n, s, b in self._states]
            self._awaiting = [(t, s - cut) for t, s in self._awaiting]
        return out

    def flush(self) -> str:
        """End of stream: the held text, or "" after a hit (the end is a word boundary)."""
        if self.leak is not None:
            return ""
        if self._awaiting:
            return self._hit(self._awaiting[0][0])
        out, self._pending = self._pending, ""
        self._states.clear()
        return out


def deflection(persona: Persona | Any, seed: int) -> str:
    """The patient's in-character reply when the guard ends a turn.

    `persona` is a `Persona` or anything with a `.persona` (a `PatientView`);
    `seed` picks the wording deterministically (e.g. the turn number).
    """
    p = persona if isinstance(persona, Persona) else getattr(persona, "persona", None)
    options = (
        _DEFLECTIONS_PLAIN if p is not None and p.health_literacy == "low" else _DEFLECTIONS
    )
    return options[zlib.crc32(str(seed).encode()) % len(options)]
