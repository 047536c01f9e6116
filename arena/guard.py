"""The output guard: the patient's words never name the answer key.

The prompt never contains the answer key (principle 1), so the model can only
*guess* a diagnosis or a result value; the guard stops a guess that happens to
be right (or a model talked into playing along) from reaching the contestant. It
watches the streamed answer for a per-case list of terms and ends the turn with
an in-character reply on a hit.

Terms (`guard_terms`): every name of the diagnosis, the partial-credit answers and
the differentials (the case's own, and every name the shared terminology knows for
them and for the broader concepts above them: "心梗" for a STEMI, "阑尾发炎" for
appendicitis), also with a leading qualifier dropped; locked results (a number
with its unit, a label with its number, and in abnormal results the findings a
report words them by: "ST段抬高", "阑尾增粗", "结肠充气试验"); and each name
also as the model may be asked to disguise it: pinyin (with or without tone
numbers), pinyin initials (names of four characters or more only: shorter ones
are noise), reversed, ROT13, base64 (at each of the three byte alignments, so it
is found inside a longer encoded text), and as an acrostic (the first characters
of consecutive lines or clauses).

A term is dropped when it is too short to be specific, when the patient-facing
text (persona, opening, facts, title, vitals) contains it, since then the patient
may say it, and, for results, when a public exam or test name contains it.

The stream is folded one character at a time before matching: traditional to
simplified (OpenCC), NFKC (full width, ligatures, circled and mathematical
letters), case, accents (pinyin tone marks), Cyrillic and Greek look-alikes and
digits or signs for letters ("4pp3nd1c1t1s"); a character with two readings ("0"
is a digit or an "o") is matched both ways. Any run of spaces, punctuation,
zero-width characters or markup (<b>, &nbsp;, **) may stand between the characters
of a term. Terms that begin (or, for short abbreviations and numbers, end) with a
Latin letter or digit must stand at a word boundary, so "PID" does not fire inside
"rapid".

Across turns: the guard is told the turns before (`history`), so a term spelled out
a piece per answer, or an acrostic that runs over several answers, completes in the
answer that finishes it; and when the question (or a bare follow-up to it) named the
diagnosis or a locked result, an answer that only says yes ("对，是", "没错", "yes,
exactly") is a leak too.

Hold-back: text is released as soon as it cannot be part of a term; only a possible
term prefix is held (`holdback` normalised characters at most), an acrostic from the
clause that would be its second letter, and a clause that could still be a bare yes.
"""

from __future__ import annotations

import base64
import codecs
import functools
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import msgspec
from pypinyin import Style, lazy_pinyin

from arena.cases import Case, Diagnosis, Persona
from arena.terminology import guard_forms, simplify

TermKind = Literal["diagnosis", "differential", "result"]
Form = Literal[
    "text", "pinyin", "initials", "reversed", "rot13", "base64", "acrostic", "confirmation"
]

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
# Markup skipped between the characters of a term: opener -> (closer, longest run).
_MARKUP = {"<": (">", 64), "&": (";", 10)}
_CLAUSE_BREAKS = frozenset("\n。！？；，,.!?;:：、…")
# Turns of history read for terms spelled across answers: the longest term is shorter.
_HISTORY_TURNS = 12
_HISTORY_CHARS = 400  # and their last characters: priming costs ~2.5 µs a character


class Leak(msgspec.Struct, frozen=True):
    """A guard hit: which answer-key term the model's words contained, and how."""

    term: str  # the answer-key term as written in the case
    kind: str  # "diagnosis" | "differential" | "result"
    form: str = "text"  # the disguise it came in (see Form)


class GuardTerm(msgspec.Struct, frozen=True):
    term: str  # as written in the case
    kind: TermKind
    norm: str  # normalised form that is matched
    form: Form = "text"
    start_boundary: bool = False  # must begin at a word boundary
    end_boundary: bool = False  # must end at a word boundary

    @property
    def needs_start_boundary(self) -> bool:
        return self.start_boundary

    @property
    def needs_end_boundary(self) -> bool:
        return self.end_boundary


class _Turn(Protocol):
    @property
    def question(self) -> str: ...

    @property
    def answer(self) -> str: ...


def _term(text: str, kind: TermKind, norm: str, form: Form = "text") -> GuardTerm:
    ascii_term = all(c in _ASCII_ALNUM for c in norm)
    if form == "base64":  # found inside a longer encoded run: no word around it
        alone = len(norm) < 8  # unless it is short: then it is all the run there is
        return GuardTerm(text, kind, norm, form, alone, alone)
    if form in ("pinyin", "initials"):
        return GuardTerm(text, kind, norm, form, True, form == "initials")
    # Short abbreviations (DKA, PID) and numbers (血糖284) must not run on into a word
    # or a longer number; long names may take a suffix ("STEMIs", "appendicitis's").
    last = norm[-1]
    end = last.isdigit() or (last in _ASCII_ALNUM and len(norm) <= 5 and ascii_term)
    return GuardTerm(text, kind, norm, form, norm[0] in _ASCII_ALNUM, end)


# --- folding ---------------------------------------------------------------------------

# Look-alikes after NFKC and case-folding: Cyrillic and Greek letters drawn like Latin
# ones (a letter whose capital and small forms look like different Latin letters has both).
_LOOKALIKE = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "һ": "h", "ɡ": "g", "ı": "i",
    "α": "a", "β": "b", "ε": "e", "ζ": "z", "ι": "i", "κ": "k", "ο": "o", "ρ": "p",
    "τ": "t", "χ": "x", "ϲ": "c", "ϳ": "j", "ν": "nv", "η": "hn", "μ": "mu", "υ": "yu",
}
# Digits and signs written for letters; a digit also stays a digit.
_LEET = {"0": "o", "1": "il", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a",
         "$": "s"}


def _ascii_alts(ch: str) -> tuple[str, ...]:
    if ch.isalnum():
        low = ch.lower()
        return (low, *_LEET.get(ch, ""))
    if ch in _LEET:  # "@" and "$": a letter, or punctuation after all
        return (_LEET[ch], "")
    return ("",)


_ASCII_ALTS = {chr(i): _ascii_alts(chr(i)) for i in range(128)}


# Every streamed character passes here; an answer uses a few hundred distinct ones.
@functools.lru_cache(maxsize=16384)
def _wide_alts(ch: str) -> tuple[str, ...]:
    folded = unicodedata.normalize("NFKC", simplify(ch)).casefold()
    # Accents go (pinyin tone marks: "lán" is "lan"); CJK is untouched by NFD.
    folded = "".join(c for c in unicodedata.normalize("NFD", folded)
                     if not unicodedata.combining(c))
    out = "".join(c for c in unicodedata.normalize("NFC", folded) if c.isalnum())
    if len(out) == 1 and out in _LOOKALIKE:
        return tuple(_LOOKALIKE[out])
    return (out,)


def _alts(ch: str) -> tuple[str, ...]:
    """The readings of one character as the guard sees it; "" when it is dropped."""
    alts = _ASCII_ALTS.get(ch)
    return alts if alts is not None else _wide_alts(ch)


def normalize(text: str) -> str:
    """`text` as the guard sees it: folded (see the module docstring), letters and digits
    only, each character in its first reading."""
    return "".join(_alts(ch)[0] for ch in text)


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
_ECG_EN = {"ST段抬高": "ST elevation", "ST段压低": "ST depression", "T波高尖": "peaked T waves",
           "T波倒置": "T wave inversion"}
_POSITIVE_SIGN = re.compile(r"([A-Za-z\u4e00-\u9fff]{2,10})\s*(?:（\+）|\(\+\)|阳性)")
# Report wording of an abnormal finding: a structure and what happened to it.
_CHANGE = re.compile(r"增粗|增厚|闭塞|狭窄|扩张|扩大|减弱|渗出|强化|实变|积液|充盈缺损|梗阻|粘连")
_DEGREE = re.compile(r"(?:明显|稍|轻度|中度|重度|完全|少量|大量|约|较)+$")
_NEGATED = re.compile(r"(?:未见|未|无|不|没有)(?:明显)?$")
_FINDING_NOUNS = ("粪石", "内膜片", "双腔征", "游离气体", "气液平面")
_CLAUSE = re.compile(r"[^，；。,;、（）()]+")


def _diagnosis_names(d: Diagnosis) -> Iterable[str]:
    # The shared terminology adds the names a case did not list ("心肌梗塞", "阑尾发炎").
    for name in (d.name, d.name_en, *d.synonyms, d.icd10, *sorted(guard_forms(d.name))):
        if name:
            yield name
            stripped = _QUALIFIERS.sub("", name)
            if stripped != name:
                yield stripped


# Reference ranges are textbook values, not this patient's: "（参考值＜10 mg/L）".
_REFERENCE = re.compile(r"[（(]参考[^）)]*[）)]")


def _findings(result: str) -> Iterable[str]:
    for clause in _CLAUSE.findall(result):
        for m in _CHANGE.finditer(clause):
            before = clause[: m.start()]
            if _NEGATED.search(before):
                continue
            degree = _DEGREE.search(before)
            subject = before[: degree.start()] if degree else before
            if _NEGATED.search(subject) or not re.search(r"[\u4e00-\u9fff]{2}$", subject):
                continue
            yield subject[-2:] + m.group(0)
            if degree:
                yield subject[-2:] + degree.group(0) + m.group(0)
        for noun in _FINDING_NOUNS:
            at = clause.find(noun)
            if at >= 0 and not re.search(r"未见|无", clause[:at]):
                yield noun


def _result_phrases(result: str, abnormal: bool) -> Iterable[str]:
    result = _REFERENCE.sub("", result)
    yield from (m.group(0) for m in _VALUE_WITH_UNIT.finditer(result))
    yield from (m.group(0) for m in _LABELLED_VALUE.finditer(result))
    if abnormal:
        for m in _ECG_CHANGE.finditer(result):
            yield m.group(1) + m.group(2)
            if m.group(1) == "ST段":
                yield "ST" + m.group(2)  # how it is said aloud
            yield _ECG_EN[m.group(1) + m.group(2)]
        yield from (m.group(1) for m in _POSITIVE_SIGN.finditer(result))
        yield from _findings(result)


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


_CJK = re.compile(r"[\u3400-\u9fff]")


def _pinyin(text: str) -> set[str]:
    """Pinyin spellings of a name with Chinese in it: by phrase and by character (塞 is
    "se" in 心肌梗塞 by the book, "sai" as most people say it), plain and with tone digits."""
    if not _CJK.search(text):
        return set()
    out = {
        "".join(lazy_pinyin(text)), "".join(lazy_pinyin(text, style=Style.TONE3)),
        "".join(p for ch in text for p in lazy_pinyin(ch)),
    }
    return {normalize(p) for p in out} | {normalize(p.replace("v", "u")) for p in out}


def _initials(text: str) -> str:
    # Four characters at least: three initials ("lwy") are ordinary noise.
    if len(text) < 4 or not all(_CJK.match(c) for c in text):
        return ""
    return "".join(lazy_pinyin(text, style=Style.FIRST_LETTER))


def _base64(text: str) -> set[str]:
    """The base64 of `text` as it reads inside a longer encoded run: for each of the three
    byte offsets, only the characters that depend on `text`'s bytes alone."""
    data = text.encode()
    out = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data).decode()
        first = -(-8 * k // 6)  # the first character that starts inside `text`
        last = (8 * (k + len(data))) // 6  # characters wholly inside it end here
        inner = normalize(enc[first:last])
        if len(inner) >= 8:
            out.add(inner)
    if not out and len(normalize(whole := base64.b64encode(data).decode())) >= 4:
        out.add(normalize(whole))  # a short name, encoded on its own: a word of its own
    return out


def _variants(text: str, norm: str, kind: TermKind) -> Iterable[tuple[str, Form]]:
    yield norm, "text"
    if kind == "result" and not _CJK.search(text) and any(c.isdigit() for c in text):
        return  # a number is not spelled, reversed or encoded by anyone reading a report
    for p in _pinyin(text):
        yield p, "pinyin"
    if initials := _initials(text):
        yield initials, "initials"
    yield norm[::-1], "reversed"
    if re.fullmatch(r"[a-z]{5,}", norm):
        yield codecs.encode(norm, "rot13"), "rot13"
    for variant in {text, text.lower(), text.upper(), text.title()}:
        for enc in _base64(variant):
            yield enc, "base64"


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
        if kind == "result" and (
            (len(norm) < shortest and any(c.isdigit() for c in norm))
            or any(norm in n for n in public_orders)
        ):
            continue
        for form_norm, form in _variants(text, norm, kind):
            if form_norm in seen or not _specific(form_norm) or form_norm in facing:
                continue
            seen.add(form_norm)
            terms.append(_term(text.strip(), kind, form_norm, form))
    return tuple(terms)


# --- the streaming matcher ---------------------------------------------------------------


def _build(words: Iterable[tuple[str, GuardTerm]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, t in words:
        node = root
        for c in key:
            node = node.setdefault(c, {})
        node.setdefault(_END, t)
    return root


class _Compiled:
    """What a guard needs of one term list, built once: a guard is made per answer, mostly
    with the same terms (the relay keeps them per case), and only reads these."""

    def __init__(self, terms: tuple[GuardTerm, ...]) -> None:
        self.terms = terms
        self.root = _build((t.norm, t) for t in terms)
        # Acrostics: names and findings in words, three letters at least (two initials in a
        # row are chance); no numbers (a line may start with one) and no reversed forms.
        self.acrostic = _build(
            (t.norm, msgspec.structs.replace(t, form="acrostic")) for t in terms
            if t.form == "text" and len(t.norm) >= 3 and not any(c.isdigit() for c in t.norm)
        )
        self.holdback = max((len(t.norm) - 1 + t.end_boundary for t in terms), default=0)
        # The names a question may be confirmed about, and the differentials it may echo.
        self.confirmable = tuple(
            t for t in terms if t.kind != "differential" and t.form in ("text", "pinyin")
        )
        self.differentials = tuple(
            {(normalize(t.term), t.term) for t in terms if t.kind == "differential"}
        )
        self._armed: dict[str, Any] | None = None

    @property
    def armed(self) -> dict[str, Any]:
        """The trie with the outright confirmations added, for an answer to a named guess."""
        if self._armed is None:
            self._armed = _build([
                *((t.norm, t) for t in self.terms),
                *((w, _YES_MARK) for w in _YES_ANYWHERE),
            ])
        return self._armed


_COMPILED: dict[int, _Compiled] = {}


def _compiled(terms: Sequence[GuardTerm]) -> _Compiled:
    # By identity: hashing hundreds of terms per answer would cost more than the answer.
    found = _COMPILED.get(id(terms))
    if found is not None and found.terms is terms:
        return found
    if len(_COMPILED) >= 256:
        _COMPILED.clear()
    key = terms if isinstance(terms, tuple) else tuple(terms)
    found = _COMPILED[id(key)] = _Compiled(key)
    return found


# A clause that says only yes. Each piece is normalised; "对对对" and "yes exactly" too.
_YES = ("对", "是", "是的", "对的", "嗯", "嗯嗯", "没错", "没错儿", "对啊", "是啊", "对呀",
        "是呀", "确实", "正是", "就是", "就是它", "就是这个", "就是这个病", "对头", "好像是",
        "应该是", "yes", "yeah", "yep", "yup", "right", "correct", "exactly", "indeed",
        "true", "absolutely", "definitely", "certainly", "bingo", "sure", "thatsit",
        "thatsright", "youreright", "yesitis", "itis")
# Said anywhere, these confirm a guess outright.
_YES_ANYWHERE = ("猜对了", "说对了", "答对了", "说得对", "没猜错", "正是这个", "就是这个病",
                 "yougotit", "spoton", "yourerightitis", "correctdiagnosis")
_YES_MARK = GuardTerm("yes", "diagnosis", "yes", "confirmation", True)
_YES_WORDS = frozenset(_YES)
_YES_PREFIXES = frozenset(w[:i] for w in _YES for i in range(1, len(w) + 1))
# A short question that only asks for a yes or no about what came before ("那个疼吗？"
# asks something new, so no "那个": a yes to it is honest).
_FOLLOW_UP = re.compile(r"是不是|对不对|是吗|对吗|是否|是或不是|yesorno|isit|confirm|确认|刚才")


def _only_yes(clause: str, *, prefix: bool) -> bool:
    """Whether `clause` is yes-words only (or, with `prefix`, could still become that)."""
    ends = {0}
    for i in range(1, len(clause) + 1):
        if any(clause[j:i] in _YES_WORDS for j in ends):
            ends.add(i)
    if len(clause) in ends:
        return bool(clause)
    return prefix and any(clause[j:] in _YES_PREFIXES for j in ends)


class OutputGuard:
    """Watches one streamed answer for answer-key terms. Make a new one per answer.

    `feed(chunk)` returns the text safe to release now; `flush()` releases the
    rest at the end of the stream. After a hit, `leak` is set and both return ""
    for good, including the text held when the term completed: whatever led up to
    a leak ("您说得对，就是") is not worth sending before the deflection.
    """

    def __init__(
        self, terms: Sequence[GuardTerm], *, allowed_text: str = "",
        history: Sequence[_Turn] = (),
    ) -> None:
        # A differential in `allowed_text` (the doctor's own question) may be echoed:
        # "没得过主动脉夹层" tells the contestant nothing new. The diagnosis and the
        # results never may: echoing "是不是阑尾炎？" with "对，就是阑尾炎" confirms a guess.
        self._c = _compiled(terms)
        self.terms = self._c.terms
        allowed = normalize(allowed_text)
        self._allowed = frozenset(
            term for norm, term in self._c.differentials if allowed and norm in allowed
        )
        self._root = self._c.root
        self.holdback = self._c.holdback
        self.leak: Leak | None = None
        self._pending = ""  # original text not yet released
        # Partial matches: (trie node, offset in _pending where it began, boundary before).
        self._states: list[tuple[dict[str, Any], int, bool]] = []
        # Partial matches inside markup: (node, start, boundary, closer, characters left).
        self._marked: list[tuple[dict[str, Any], int, bool, str, int]] = []
        # Complete matches that still need a word boundary after them.
        self._awaiting: list[tuple[GuardTerm, int]] = []
        self._last_ascii = False  # last normalised character was a Latin letter or digit
        self._gap = 0  # dropped characters since the last normalised one
        # Acrostics, over line initials and over clause initials: (node, hold from, depth).
        self._acro: dict[bool, list[tuple[dict[str, Any], int, int]]] = {True: [], False: []}
        self._line_start = self._clause_start = True
        # A bare yes is a leak when the question named the diagnosis or a result.
        self._confirms = self._named(allowed_text, history)
        self._clause = ""  # normalised text of the clause so far (only when _confirms)
        self._clause_at = 0
        if history:
            self._prime(history)
        if self._confirms is not None:
            self._root = self._c.armed

    @classmethod
    def for_case(
        cls, case: Case, *, question: str = "", history: Sequence[_Turn] = ()
    ) -> OutputGuard:
        """A guard for one answer in `case`; terms in `question` are allowed."""
        return cls(guard_terms(case), allowed_text=question, history=history)

    def _named(self, question: str, history: Sequence[_Turn]) -> GuardTerm | None:
        """The diagnosis or result term the question names, if any; a bare follow-up
        ("是不是？", "yes or no?") carries the question before it."""
        if not question.strip():
            return None
        asked = [question]
        q = normalize(question)
        if history and len(q) <= 16 and _FOLLOW_UP.search(q):
            asked.append(history[-1].question)
        keys = self._c.confirmable
        for text in asked:
            probe = OutputGuard(keys)
            probe.feed(text)
            probe.flush()
            if probe.leak is not None:
                named = next(t for t in keys if t.term == probe.leak.term)
                return msgspec.structs.replace(named, form="confirmation")
        return None

    def _prime(self, history: Sequence[_Turn]) -> None:
        """Read the answers already shown, so a term spelled across them completes here."""
        confirms, self._confirms = self._confirms, None
        shown = ("\n".join(t.answer for t in history[-_HISTORY_TURNS:]) + "\n")[-_HISTORY_CHARS:]
        # A term that runs on into this answer began in the last few characters; before
        # them only the first letters of lines and clauses matter (acrostics).
        tail = max(0, len(shown) - 2 * self.holdback - 16)
        for i, ch in enumerate(shown[:tail]):
            if ch in _CLAUSE_BREAKS:
                self._clause_start = True
                self._line_start = self._line_start or ch == "\n"
            elif self._clause_start or self._line_start:
                first = (_ASCII_ALTS.get(ch) or _wide_alts(ch))[0]
                if first and self._initial(first[0], i) is not None:
                    self._acro = {True: [], False: []}
        for i, ch in enumerate(shown[tail:], tail):
            if self._char(ch, i) is not None:  # shown in full already: nothing to add
                self._states.clear()
                self._marked.clear()
                self._awaiting.clear()
                self._acro = {True: [], False: []}
        shift = len(shown)
        self._states = [(n, s - shift, b) for n, s, b in self._states]
        self._marked = []
        self._awaiting.clear()
        for line in (True, False):
            self._acro[line] = [(n, h - shift, d) for n, h, d in self._acro[line]]
        self._confirms = confirms

    def _hit(self, term: GuardTerm) -> str:
        self.leak = Leak(term.term, term.kind, term.form)
        self._pending = ""
        self._states.clear()
        self._marked.clear()
        self._awaiting.clear()
        return ""

    def feed(self, text: str) -> str:
        """The next chunk of the model's answer; returns what may be released now."""
        if self.leak is not None:
            return ""
        base = len(self._pending)
        self._pending += text
        for i, ch in enumerate(text):
            term = self._char(ch, base + i)
            if term is not None:
                return self._hit(term)
        return self._release()

    def _char(self, ch: str, offset: int) -> GuardTerm | None:
        if self._marked:
            self._skip_markup(ch)
        if ch in _MARKUP and self._states:
            closer, longest = _MARKUP[ch]
            self._marked += [(n, s, b, closer, longest) for n, s, b in self._states]
        alts = _ASCII_ALTS.get(ch) or _wide_alts(ch)
        if ch in _CLAUSE_BREAKS:
            found = self._clause_end()
            if found is not None:
                return found
            self._clause_start = True
            if ch == "\n":
                self._line_start = True
        if alts == ("",):
            self._gap += 1
            if self._awaiting:  # a separator is a word boundary
                return self._awaiting[0][0]
            return None
        if self._confirms is not None:
            if not self._clause:
                self._clause_at = offset
            self._clause += alts[0]
        if len(alts) == 1:
            for c in alts[0]:
                term = self._step(c, offset)
                if term is not None:
                    return term
        else:
            term = self._step_each(alts, offset)
            if term is not None:
                return term
        if self._clause_start or self._line_start:
            return self._initial(alts[0][0], offset)
        return None

    def _step_each(self, alts: tuple[str, ...], offset: int) -> GuardTerm | None:
        """Step every reading of an ambiguous character ("0": a digit or an "o")."""
        before = (self._states, self._awaiting, self._last_ascii, self._gap)
        states: list[tuple[dict[str, Any], int, bool]] = []
        awaiting: list[tuple[GuardTerm, int]] = []
        for alt in alts:
            self._states, self._awaiting = before[0], list(before[1])
            self._last_ascii, self._gap = before[2], before[3]
            if not alt:
                states += before[0]
                continue
            for c in alt:
                term = self._step(c, offset)
                if term is not None:
                    return term
            states += self._states
            awaiting += self._awaiting
        self._states, self._awaiting = states, awaiting
        self._last_ascii, self._gap = alts[0][-1:] in _ASCII_ALNUM, 0
        return None

    def _skip_markup(self, ch: str) -> None:
        kept = []
        for n, s, b, closer, left in self._marked:
            if ch == closer:
                self._states.append((n, s, b))  # the term goes on after the tag
            elif left > 1:
                kept.append((n, s, b, closer, left - 1))
        self._marked = kept

    def _initial(self, c: str, offset: int) -> GuardTerm | None:
        if c.isdigit():  # "1." numbers a line; the line starts after it
            return None
        for line in (True, False):
            if not (self._line_start if line else self._clause_start):
                continue
            states = []
            for node, hold, depth in [*self._acro[line], (self._c.acrostic, -1, 0)]:
                child = node.get(c)
                if child is None:
                    continue
                # Hold from the second initial: one letter alone says nothing.
                hold = offset if depth == 1 else hold
                term: GuardTerm | None = child.get(_END)
                if term is not None:
                    return term
                states.append((child, hold, depth + 1))
            self._acro[line] = states
        self._line_start = self._clause_start = False
        return None

    def _clause_end(self) -> GuardTerm | None:
        if self._confirms is None:
            return None
        clause, self._clause = self._clause, ""
        return self._confirms if _only_yes(clause, prefix=False) else None

    def _step(self, c: str, offset: int) -> GuardTerm | None:
        is_ascii = c in _ASCII_ALNUM
        boundary = self._gap > 0 or not (is_ascii and self._last_ascii)
        if self._awaiting:
            if boundary:
                return self._awaiting[0][0]
            self._awaiting = []
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
            if term is None or (term.start_boundary and not sb) or (
                    term.kind == "differential" and term.term in self._allowed):
                continue
            if term is _YES_MARK:
                return self._confirms
            if not term.end_boundary:
                return term
            self._awaiting.append((term, start))
        return None

    def _release(self) -> str:
        # Per chunk: plain loops, no lists built; most of the time nothing is held.
        cut = len(self._pending)
        for _, start, _ in self._states:
            cut = min(cut, start)
        for _, start, _, _, _ in self._marked:
            cut = min(cut, start)
        for _, start in self._awaiting:
            cut = min(cut, start)
        for line in (True, False):
            for _, hold, depth in self._acro[line]:
                if depth >= 2:
                    cut = min(cut, hold)
        if self._clause and len(self._clause) <= 24 and _only_yes(self._clause, prefix=True):
            cut = min(cut, self._clause_at)
        cut = max(0, cut)
        if not cut:
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        if self._states:
            self._states = [(n, s - cut, b) for n, s, b in self._states]
        if self._marked:
            self._marked = [(n, s - cut, b, c, k) for n, s, b, c, k in self._marked]
        if self._awaiting:
            self._awaiting = [(t, s - cut) for t, s in self._awaiting]
        for line in (True, False):
            if self._acro[line]:
                self._acro[line] = [(n, h - cut, d) for n, h, d in self._acro[line]]
        self._clause_at -= cut
        return out

    def flush(self) -> str:
        """End of stream: the held text, or "" after a hit (the end is a word boundary)."""
        if self.leak is not None:
            return ""
        if self._awaiting:
            return self._hit(self._awaiting[0][0])
        found = self._clause_end()
        if found is not None:
            return self._hit(found)
        out, self._pending = self._pending, ""
        self._states.clear()
        self._marked.clear()
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
