"""Case secrecy: what a case shows before play names nothing of its answer key, and
who may practise a case.

**The lint.** `leaks(case)` finds every answer-key term in the parts of a case
that someone sees (or the patient may say) before the answer is earned:

- public before play: the id (also the pinyin of the Chinese terms), the title,
  the English title, the specialty, the chief complaint;
- shown when play starts: the opening statement, the appearance, and the name and
  aliases of every exam and test (the order menu: what a result is called is
  visible before it is ordered; its text is not, so `result` is not checked);
- what the patient may say: the demographics, the persona (a patient's idea of
  what is wrong is said aloud) and each fact's topic and answer. A fact's example
  questions are the doctor's words, never shown, and may name a differential to ask
  about ("有没有得过胆结石？"), so they are not checked.

Answer-key terms: the name, English name, synonyms and ICD-10 code of the primary
diagnosis, of each partial-credit answer and of each differential, each also with
a leading qualifier dropped ("急性阑尾炎" -> "阑尾炎"), each also with every surface
form the shared terminology (`arena.terminology`) knows for it ("DKA", "宫外孕"), plus
any the caller passes in (`extra`).
Matching runs on text folded as the shared terminology folds it (traditional to
simplified Chinese) and then as the output guard does (NFKC, case-folded, letters
and digits only), so script, width, case, spaces and punctuation do not hide a
term. A term that begins with a Latin letter or digit must start a word, and a short
one (at most 5 Latin letters or digits: "PID", "DKA", "K35.8") must also end one, so
"PID" does not hit "rapid" and "STEMI" does not hit "NSTEMI".
A patient who names their own known illness ("我有1型糖尿病") is not a leak: only
whole terms count, and "糖尿病" is not the key "糖尿病酮症酸中毒".

**Visibility.** An organizer sets each case to one of `VISIBILITIES`; a case
never set is `DEFAULT_VISIBILITY`. `practice_open` decides whether a student may
list and play it: only a `practice` case that no unpublished round uses.
Staff (judges, organizers) may open any case.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Literal

import msgspec
from pypinyin import lazy_pinyin

from arena.cases import Case, Diagnosis
from arena.guard import normalize
from arena.terminology import fold, surface_forms

TermKind = Literal["diagnosis", "partial", "differential"]
Visibility = Literal["draft", "contest", "practice"]
VISIBILITIES: tuple[Visibility, ...] = ("draft", "contest", "practice")
# The shipped cases are teaching cases, so a case nobody has set is open to practice
# until a round uses it (see practice_open); a case written for a contest is set to
# `contest` (or `draft`) by the organizer before the round is created.
DEFAULT_VISIBILITY: Visibility = "practice"

_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_QUALIFIER = re.compile(
    r"^(?:急性|慢性|右侧|左侧|(?:acute|chronic|right|left|inferior)\s+)", re.IGNORECASE
)


class KeyTerm(msgspec.Struct, frozen=True):
    """One answer-key term: as written in the case, its kind and its folded form."""

    term: str
    kind: TermKind
    norm: str


class Leak(msgspec.Struct, frozen=True):
    """An answer-key term found at a JSON path of a case."""

    path: str
    term: str
    kind: TermKind

    def problem(self) -> str:
        """The leak as a `check_case`-style problem line: "JSON path: message"."""
        return (f"{self.path}: 含答案关键词 names the answer key: {self.term!r} "
                f"({self.kind})")


def _forms(d: Diagnosis) -> Iterator[str]:
    for name in (d.name, d.name_en, *d.synonyms, d.icd10):
        if name.strip():
            yield name
            stripped = _QUALIFIER.sub("", name)
            if stripped != name:
                yield stripped


def _known_forms(d: Diagnosis) -> Iterator[str]:
    """`d`'s own names, then what the shared terminology adds for its main name."""
    yield from _forms(d)
    yield from sorted(surface_forms(d.name))


def _specific(norm: str) -> bool:
    # Two Latin letters are specific enough as a whole word ("MI", "PE"); one is not.
    return len(norm) >= 2


def answer_terms(
    case: Case, extra: Iterable[tuple[str, TermKind]] = ()
) -> tuple[KeyTerm, ...]:
    """Every answer-key term of `case` with its kind, each folded form once.

    Each diagnosis contributes its case names and the shared terminology's surface
    forms for it; `extra` adds more. Deterministic: the diagnosis first, then partial
    answers, then differentials, then `extra`, in case order.
    """
    key = case.answer_key
    candidates: list[tuple[str, TermKind]] = [
        (t, "diagnosis") for t in _known_forms(key.diagnosis)
    ]
    for d in key.partial:
        candidates += [(t, "partial") for t in _known_forms(d)]
    for d in key.differentials:
        candidates += [(t, "differential") for t in _known_forms(d)]
    candidates += list(extra)
    seen: set[str] = set()
    out: list[KeyTerm] = []
    for text, kind in candidates:
        norm = normalize(fold(text))
        if norm in seen or not _specific(norm):
            continue
        seen.add(norm)
        out.append(KeyTerm(text.strip(), kind, norm))
    return tuple(out)


@functools.lru_cache(maxsize=8192)  # a case library uses a few thousand characters
def _norm_char(ch: str) -> str:
    return normalize(ch)


def _fold(text: str) -> tuple[str, list[bool]]:
    """`text` folded, and for each folded character whether a word may start there."""
    chars: list[str] = []
    starts: list[bool] = []
    gap = True
    last_ascii = False
    for ch in fold(text):
        norm = _norm_char(ch)
        if not norm:
            gap = True
            continue
        for c in norm:
            is_ascii = c in _ASCII_ALNUM
            starts.append(gap or not (is_ascii and last_ascii))
            chars.append(c)
            last_ascii, gap = is_ascii, False
    return "".join(chars), starts


def _short_abbreviation(norm: str) -> bool:
    return len(norm) <= 5 and all(c in _ASCII_ALNUM for c in norm)


def find_terms(text: str, terms: Iterable[KeyTerm]) -> list[KeyTerm]:
    """The terms that occur in `text` under the folding and word rules of this module."""
    folded, starts = _fold(text)
    hits: list[KeyTerm] = []
    for t in terms:
        at = folded.find(t.norm)
        while at >= 0:
            end = at + len(t.norm)
            start_ok = t.norm[0] not in _ASCII_ALNUM or starts[at]
            end_ok = (not _short_abbreviation(t.norm) or end == len(folded) or starts[end])
            if start_ok and end_ok:
                hits.append(t)
                break
            at = folded.find(t.norm, at + 1)
    return hits


def visible_text(case: Case) -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every part of `case` seen before the answer is earned."""
    yield "$.title", case.title
    yield "$.title_en", case.title_en
    yield "$.specialty", case.specialty
    d, p, o = case.demographics, case.persona, case.opening
    yield "$.demographics.name", d.name
    yield "$.demographics.occupation", d.occupation
    for field in ("personality", "speech_style", "ideas", "concerns", "expectations"):
        yield f"$.persona.{field}", getattr(p, field)
    yield "$.opening.chief_complaint", o.chief_complaint
    yield "$.opening.statement", o.statement
    yield "$.opening.appearance", o.appearance
    for i, f in enumerate(case.facts):
        yield f"$.facts[{i}].topic", f.topic
        yield f"$.facts[{i}].answer", f.answer
    for label, items in (("exams", case.exams), ("tests", case.tests)):
        for i, item in enumerate(items):
            yield f"$.{label}[{i}].name", item.name
            for j, alias in enumerate(item.aliases):
                yield f"$.{label}[{i}].aliases[{j}]", alias


def _pinyin(text: str) -> str:
    return "".join(lazy_pinyin(text)).lower()


def _id_leaks(case: Case, terms: tuple[KeyTerm, ...]) -> Iterator[Leak]:
    for t in find_terms(case.id, terms):
        yield Leak("$.id", t.term, t.kind)
    # An id is Latin letters, so a Chinese term can hide in it as pinyin ("lanweiyan").
    folded = normalize(case.id)
    for t in terms:
        if t.norm[0] in _ASCII_ALNUM:
            continue
        spelled = _pinyin(t.norm)
        if len(spelled) >= 6 and spelled in folded:
            yield Leak("$.id", f"{t.term} ({spelled})", t.kind)


def leaks(case: Case, extra: Iterable[tuple[str, TermKind]] = ()) -> list[Leak]:
    """Every answer-key term in a part of `case` seen before the answer is earned.

    Pure and deterministic; an empty list means the case passes. `extra` as in
    `answer_terms`. Each (path, term) is reported once, in case order.
    """
    terms = answer_terms(case, extra)
    found: list[Leak] = list(_id_leaks(case, terms))
    for path, text in visible_text(case):
        found += [Leak(path, t.term, t.kind) for t in find_terms(text, terms)]
    return found


def practice_open(visibility: Visibility, reserved: bool, *, staff: bool = False) -> bool:
    """Whether a case may be listed and played in practice.

    Staff may open any case. Anyone else only a `practice` case that is not
    `reserved` (used by a round whose results are not published yet).
    """
    return staff or (visibility == "practice" and not reserved)
