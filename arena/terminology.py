"""The shared diagnosis terminology, and reading a free-text diagnosis with it.

One vocabulary serves scoring (is this answer the key?) and the output guard
(which words would give the key away?). The data lives in `terminology.tsv`
beside this module (a concept a row: names in Chinese and English,
abbreviations, ICD-10 code, its parent in the hierarchy, and relations such as
"a complication of"); the rules that read an answer live here and in
`arena.scoring`.

Reading an answer (`read`) folds it (traditional to simplified Chinese with
OpenCC, full width, case, spacing), splits it into the diagnoses it names
(a list, "或", "/" or "?" between them), and for each finds the concept by the
longest known name (abbreviations only as whole tokens), the qualifiers around it
(急性/慢性, 下壁, 1型, 原发性, 酒精性 ...), whether it is negated ("排除", "非",
"无" ...) or left open ("待排", "不除外"), words that make it a sequela
("后遗症", "术后"), and whatever text is left that no rule understands. It
decides nothing: `arena.scoring` does.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Literal

import msgspec
import opencc

Polarity = Literal["affirmed", "negated", "uncertain"]
Quals = dict[str, frozenset[str]]


class Concept(msgspec.Struct, frozen=True, kw_only=True):
    """One diagnosis in the terminology (a row of terminology.tsv)."""

    id: str
    icd10: str = ""
    parent: str = ""
    names: tuple[str, ...] = ()  # Chinese, canonical first
    names_en: tuple[str, ...] = ()
    abbrs: tuple[str, ...] = ()  # unambiguous, whole-token only
    ambiguous: tuple[str, ...] = ()  # abbreviations that may mean this or something else
    quals: tuple[tuple[str, str], ...] = ()  # defining qualifiers (axis, value)
    of: tuple[str, ...] = ()  # a complication or sequela of these, never them
    near: tuple[str, ...] = ()  # part credit when the key is one of these
    under: tuple[str, ...] = ()  # the underlying disease(s) of this one
    ask: tuple[str, ...] = ()  # against these, only a judge can tell
    sib: bool = False  # children of this concept earn part credit for each other
    comorbid: bool = False  # a chronic condition that may stand beside a main diagnosis

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.id


_cc = opencc.OpenCC("t2s")
_SPACE = re.compile(r"\s+")
_CJK_SPACE = re.compile(r"(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])")
_ZERO_WIDTH = re.compile(r"[\u200b-\u200f\u2060\ufeff]")


@functools.lru_cache(maxsize=16384)  # answers and names recur; OpenCC is the cost
def fold(text: str) -> str:
    """Fold a diagnosis for matching: simplified Chinese, NFKC, case-folded, spacing.

    Punctuation is kept (it separates diagnoses and ICD-10 codes need the dot);
    runs of spaces become one, and spaces next to a Chinese character go.
    """
    text = unicodedata.normalize("NFKC", _cc.convert(_ZERO_WIDTH.sub("", text))).casefold()
    text = text.replace("（", "(").replace("）", ")").replace("？", "?").replace("，", ",")
    return _CJK_SPACE.sub("", _SPACE.sub(" ", text)).strip()


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


# --- the data ------------------------------------------------------------------------------


class Terminology:
    """The concepts, their names (folded) and the hierarchy between them."""

    def __init__(self, concepts: Iterable[Concept]) -> None:
        self.concepts: dict[str, Concept] = {}
        self.terms: dict[str, str] = {}  # folded name -> concept id
        self.ambiguous: dict[str, tuple[str, ...]] = {}  # folded abbreviation -> ids
        self.codes: dict[str, list[str]] = {}  # ICD-10 code -> concept ids
        for c in concepts:
            if c.id in self.concepts:
                raise ValueError(f"terminology: concept {c.id!r} twice")
            self.concepts[c.id] = c
            for n in (*c.names, *c.names_en, *c.abbrs):
                f = fold(n)
                if f in self.terms and self.terms[f] != c.id:
                    raise ValueError(f"terminology: {n!r} names {self.terms[f]} and {c.id}")
                self.terms[f] = c.id
            for a in c.ambiguous:
                self.ambiguous[fold(a)] = (*self.ambiguous.get(fold(a), ()), c.id)
            if c.icd10:
                self.codes.setdefault(fold(c.icd10), []).append(c.id)
        for c in self.concepts.values():
            for ref in (c.parent, *c.of, *c.near, *c.under, *c.ask):
                if ref and ref not in self.concepts:
                    raise ValueError(f"terminology: {c.id} refers to unknown {ref!r}")
        self.lengths = _lengths_by_first([*self.terms, *self.ambiguous])

    def get(self, concept_id: str) -> Concept | None:
        return self.concepts.get(concept_id)

    def ancestors(self, concept_id: str) -> list[str]:
        """The concept's parents, nearest first (empty for an unknown id)."""
        out: list[str] = []
        c = self.concepts.get(concept_id)
        while c is not None and c.parent and c.parent not in out:
            out.append(c.parent)
            c = self.concepts.get(c.parent)
        return out

    def is_a(self, concept_id: str, other: str) -> bool:
        """True when `concept_id` is `other` or a kind of it."""
        return concept_id == other or other in self.ancestors(concept_id)

    def quals(self, concept_id: str) -> Quals:
        """The defining qualifiers of a concept, inherited from its parents (nearest wins)."""
        out: Quals = {}
        for cid in reversed([concept_id, *self.ancestors(concept_id)]):
            c = self.concepts.get(cid)
            for axis, value in c.quals if c else ():
                out[axis] = frozenset({value})
        return out

    def find(self, name: str) -> Concept | None:
        """The concept `name` names: an exact name first, else the one concept it reads as."""
        cid = self.terms.get(fold(name))
        if cid is None:
            mentions = [m for m in read(name, self) if m.concept]
            cid = mentions[0].concept if len(mentions) == 1 else None
        return self.concepts.get(cid) if cid else None

    def surface_forms(self, name: str) -> set[str]:
        """Every name of the concept `name` names (Chinese, English, abbreviations), or {}.

        For the output guard: the forms a patient must not say for this diagnosis.
        Ambiguous abbreviations are left out (they mean other things too).
        """
        c = self.find(name)
        return set() if c is None else {*c.names, *c.names_en, *c.abbrs}


def parse_tsv(data: bytes) -> Terminology:
    """Build a Terminology from terminology.tsv's bytes (format in the file's header)."""
    concepts = []
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 7:
            raise ValueError(f"terminology.tsv:{lineno}: 7 tab-separated columns expected")
        cid, icd, parent, zh, en, abbr, attrs = (c.strip() for c in cols)

        def items(col: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in col.split("|") if x.strip()) if col != "-" else ()

        rel: dict[str, list[str]] = {"of": [], "near": [], "under": [], "ask": []}
        quals: list[tuple[str, str]] = []
        flags: set[str] = set()
        for attr in (a.strip() for a in attrs.split(";") if a.strip() and attrs != "-"):
            key, _, value = attr.partition(":")
            if key == "q":
                axis, _, v = value.partition("=")
                quals.append((axis, v))
            elif key in rel:
                rel[key].append(value)
            else:
                flags.add(key)
        abbrs = items(abbr)
        concepts.append(Concept(
            id=cid, icd10="" if icd == "-" else icd, parent="" if parent == "-" else parent,
            names=items(zh), names_en=items(en),
            abbrs=tuple(a for a in abbrs if not a.startswith("?")),
            ambiguous=tuple(a[1:] for a in abbrs if a.startswith("?")),
            quals=tuple(quals), of=tuple(rel["of"]), near=tuple(rel["near"]),
            under=tuple(rel["under"]), ask=tuple(rel["ask"]),
            sib="sib" in flags, comorbid="comorbid" in flags,
        ))
    return Terminology(concepts)


@functools.cache
def terminology() -> Terminology:
    """The shared terminology, read once from the package's terminology.tsv."""
    return parse_tsv(resources.files("arena").joinpath("terminology.tsv").read_bytes())


def surface_forms(name: str) -> set[str]:
    """All names of the diagnosis `name` in the shared terminology (empty when unknown)."""
    return set(_surface_forms(name))


@functools.lru_cache(maxsize=1024)  # the guard asks for the same few names per case
def _surface_forms(name: str) -> frozenset[str]:
    return frozenset(terminology().surface_forms(name))


def guard_forms(name: str) -> set[str]:
    """The names that give the diagnosis `name` away: its own surface forms and those of
    every broader concept above it ("心梗" for a STEMI, "阑尾发炎" for acute appendicitis).

    Broader concepts marked `comorbid` (冠心病, 糖尿病) are left out: a patient may have
    them and say so, whatever the diagnosis. Empty when `name` is unknown.
    """
    return set(_guard_forms(name))


@functools.lru_cache(maxsize=1024)
def _guard_forms(name: str) -> frozenset[str]:
    t = terminology()
    c = t.find(name)
    if c is None:
        return frozenset()
    forms = set(t.surface_forms(name))
    for cid in t.ancestors(c.id):
        up = t.concepts[cid]
        if not up.comorbid:
            forms.update((*up.names, *up.names_en, *up.abbrs))
    return frozenset(forms)


@functools.lru_cache(maxsize=8192)  # the guard folds a stream one character at a time
def simplify(text: str) -> str:
    """`text` in simplified Chinese (OpenCC t2s); anything else unchanged."""
    return str(_cc.convert(text))


# --- the words around a diagnosis ------------------------------------------------------------

# Qualifiers: axis -> value -> how it is written. Two answers that name different
# values on the same axis name different diseases (急性 vs 慢性, 下壁 vs 前壁).
QUALIFIERS: dict[str, dict[str, tuple[str, ...]]] = {
    "acuity": {
        "acute": ("急性", "acute"), "chronic": ("慢性", "chronic"),
        "old": ("陈旧性", "陈旧", "old"), "subacute": ("亚急性", "subacute"),
    },
    "st": {
        "elevated": ("st段抬高型", "st段抬高", "st抬高型", "st抬高", "st-elevation",
                     "st elevation"),
        "non-elevated": ("非st段抬高型", "非st段抬高", "非st抬高型", "非st抬高",
                         "non-st-elevation", "non st elevation", "non-st elevation"),
    },
    "wall": {
        "inferior": ("下壁", "inferior"), "anterior": ("前壁", "广泛前壁", "anterior"),
        "lateral": ("侧壁", "高侧壁", "lateral"), "posterior": ("后壁", "posterior"),
        "septal": ("前间壁", "间壁", "septal"), "inferior+posterior": ("下后壁",),
        "anterior+lateral": ("前侧壁",), "inferior+lateral": ("下侧壁",),
        "rv": ("右室", "右心室"),
    },
    "side": {
        "left": ("左侧", "左", "left"), "right": ("右侧", "右", "right"),
        "both": ("双侧", "bilateral"),
    },
    "dmtype": {
        "1": ("1型", "i型", "t1", "type 1", "胰岛素依赖型"),
        "2": ("2型", "ii型", "t2", "type 2", "非胰岛素依赖型"),
    },
    "origin": {"primary": ("原发性", "原发", "primary"),
               "secondary": ("继发性", "继发", "secondary")},
    "cause": {
        "diabetic": ("糖尿病性", "diabetic"), "alcoholic": ("酒精性", "乙醇性", "alcoholic"),
        "starvation": ("饥饿性", "starvation"), "viral": ("病毒性", "viral"),
        "bacterial": ("细菌性", "化脓性", "bacterial", "purulent"),
        "tuberculous": ("结核性", "tuberculous"), "fungal": ("真菌性", "隐球菌性", "fungal"),
        "traumatic": ("外伤性", "创伤性", "traumatic"),
        "spontaneous": ("自发性", "spontaneous"), "biliary": ("胆源性", "胆石性", "biliary"),
        "lipid": ("高脂血症性", "高甘油三酯血症性"), "drug": ("药物性", "drug-induced"),
        "autoimmune": ("自身免疫性", "autoimmune"), "aneurysmal": ("动脉瘤性",),
        "cardiac": ("心源性",), "renal": ("肾性",),
    },
    "stability": {"unstable": ("不稳定型", "不稳定性", "unstable"),
                  "stable": ("稳定型", "稳定性", "stable")},
    "phase": {
        "exacerbation": ("急性加重期", "急性加重", "急性发作期", "急性发作", "加重期",
                         "acute exacerbation", "exacerbation"),
        "remission": ("稳定期", "缓解期"),
    },
    "acquired": {"community": ("社区获得性", "community-acquired", "community acquired"),
                 "hospital": ("医院获得性", "院内获得性", "院内", "hospital-acquired",
                              "nosocomial")},
    "nature": {"benign": ("良性", "benign"), "malignant": ("恶性", "malignant")},
}

# Words that say nothing against the key: severity, stage, extent, pathology, territory.
NEUTRAL = (
    "轻度", "中度", "重度", "极重度", "中重度", "轻型", "中型", "重型", "危重型", "危重",
    "轻症", "重症", "中重症", "暴发性", "单纯性", "坏疽性", "坏疽穿孔性", "穿孔性", "穿孔",
    "出血坏死型", "出血坏死性", "坏死型", "坏死性", "坏死", "水肿型", "水肿性", "结石性",
    "非结石性", "糜烂性", "阵发性", "持续性", "长程持续性", "永久性", "机械性", "完全性",
    "不完全性", "局限性", "弥漫性", "复发性", "初发", "首发", "新发", "大面积", "浸润性",
    "失代偿期", "失代偿", "代偿期", "代偿", "活动期", "很高危", "高危", "中危", "低危",
    "出血", "破裂", "闭塞", "受累", "病变", "供血区", "区域", "中段", "上段", "下段",
    "右冠状动脉", "右冠", "前降支", "回旋支", "左主干", "大脑中动脉", "大脑前动脉",
    "大脑后动脉", "椎基底动脉", "基底动脉", "颈内动脉", "severe", "mild", "moderate",
    "perforated", "with", "of", "the", "disease",
)
_NEUTRAL_RE = (
    r"killip\s*[ivx1-4]+\s*级?", r"nyha\s*[ivx1-4]+\s*级?", r"心功能\s*[ivx1-4]+\s*级",
    r"(?:stanford|debakey)\s*[a-d]?\s*[ivx1-3]*\s*型?", r"ckd\s*\d\s*期",
    r"[ivx\d]+\s*[级期度]", r"[a-d]型",
)
# Usual phrasing around a committed diagnosis.
HEDGES = (
    "首先考虑", "初步考虑", "考虑为", "考虑", "可能性大", "可能性较大", "可能", "疑似",
    "疑诊", "拟诊", "初步诊断", "临床诊断", "诊断为", "诊断", "倾向于", "倾向", "印象",
    "患者", "为", "是", "的", "?", "probable", "possible", "possibly", "likely",
    "suspected", "consider", "impression",
)
# Left open: the answer does not commit to it.
UNCERTAIN = (
    "待排除", "待排", "待除外", "不除外", "不能除外", "不能排除", "未排除", "待查",
    "待鉴别", "待定", "ruleout", "rule out",
)
NEGATIONS = (
    "排除", "除外", "非", "不考虑", "否认", "无", "不是", "并非", "没有", "未见", "可排除",
    "已排除", "已除外", "可除外", "不支持", "不符合", "不像", "不可能是", "不可能",
    "可能性小", "可能性不大", "可能性较小", "not", "no", "without", "excluded",
    "ruled out", "unlikely",
)
CONNECTORS = ("伴有", "伴发", "伴", "合并有", "合并", "并发", "继发于")
SEQUELAE = (
    "后遗症", "后综合征", "切除术后", "手术后", "术后", "病史", "史", "恢复期", "后状态",
    "周围脓肿", "sequela", "post",
)

_SUFFIX_OPEN = frozenset({"待排", "待查", "待排除", "待除外"})  # "A待排" leaves A open
_TokenKind = Literal["qual", "neutral", "hedge", "uncertain", "negation", "connector", "sequela"]


def _token_table() -> dict[str, tuple[_TokenKind, str, str]]:
    table: dict[str, tuple[_TokenKind, str, str]] = {}
    for axis, values in QUALIFIERS.items():
        for value, forms in values.items():
            for f in forms:
                table[f] = ("qual", axis, value)
    for kind, words in (("neutral", NEUTRAL), ("hedge", HEDGES), ("uncertain", UNCERTAIN),
                        ("negation", NEGATIONS), ("connector", CONNECTORS),
                        ("sequela", SEQUELAE)):
        for w in words:
            table.setdefault(w, (kind, "", ""))  # type: ignore[arg-type]
    return table


_TOKEN_TABLE = _token_table()



def _lengths_by_first(words: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """For each first character, the lengths of the words starting with it, longest first:
    a scan tries only those, not every length at every position."""
    by: dict[str, set[int]] = {}
    for w in words:
        if w:
            by.setdefault(w[0], set()).add(len(w))
    return {c: tuple(sorted(v, reverse=True)) for c, v in by.items()}


_TOKEN_LENGTHS = _lengths_by_first(_TOKEN_TABLE)
_NEUTRAL_PATTERNS = re.compile("|".join(f"(?:{p})" for p in _NEUTRAL_RE))
_Token = tuple[int, int, _TokenKind, str, str, str]  # start, end, kind, axis, value, text


def _tokens(text: str) -> list[_Token]:
    """The words around a diagnosis in `text`, leftmost-longest (a dict scan, not one
    big regex alternation: that costs tens of milliseconds on a long answer)."""
    patterned = {m.start(): m.end() for m in _NEUTRAL_PATTERNS.finditer(text)
                 if m.end() > m.start()}
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        end = patterned.get(i)
        if end is not None:
            out.append((i, end, "neutral", "", "", text[i:end]))
            i = end
            continue
        for length in _TOKEN_LENGTHS.get(text[i], ()):
            if i + length > n:
                continue
            w = text[i:i + length]
            entry = _TOKEN_TABLE.get(w)
            # Latin words stand alone: "no" is not the start of "nos", "t1" not of "t1dm".
            if entry is None or (_ascii_alnum(w[0]) and i > 0 and _ascii_alnum(text[i - 1])) or (
                    _ascii_alnum(w[-1]) and i + length < n and _ascii_alnum(text[i + length])):
                continue
            out.append((i, i + length, *entry, w))
            i += length
            break
        else:
            i += 1
    return out


def without_phrasing(text: str) -> str:
    """`text` (folded) with qualifiers, phrasing, negation and staging words blanked out."""
    text = fold(text)
    parts, pos = [], 0
    for start, end, *_ in _tokens(text):
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    return " ".join(parts)


_CODE = re.compile(r"(?<![a-z0-9])([a-z]\d{2}(?:\.\d{1,2})?)(?![a-z0-9.])")
_STRONG = re.compile(r"([,;。\n]+|\?+(?=.))")
_WEAK = re.compile(r"(、|/|\||\+|&|或者|或|以及|和|及|与|\bor\b|\band\b|\bvs\.?)")
_ALT_SEPARATORS = frozenset({"/", "|", "或者", "或", "or", "?"})
_NUMBERING = re.compile(r"^\(?\d{1,2}[.、)]\s*(?!\d)")
_JUNK = re.compile(r"[\s\W_]+")


class Mention(msgspec.Struct, frozen=True, kw_only=True):
    """One diagnosis as an answer wrote it, read but not judged."""

    text: str  # the part of the answer it came from (folded)
    concept: str = ""  # concept id ("" when no known name was found)
    candidates: tuple[str, ...] = ()  # an ambiguous abbreviation: what it may mean
    code: str = ""  # an ICD-10 code, when the answer wrote one
    quals: tuple[tuple[str, tuple[str, ...]], ...] = ()  # qualifiers written around it
    polarity: Polarity = "affirmed"
    subordinate: bool = False  # after 伴/合并: a feature of the diagnosis before it
    alternative: bool = False  # set against another diagnosis by 或, / or ?
    sequela: str = ""  # the word that makes it a sequela or history ("后遗症")
    residue: str = ""  # text no rule understood

    def qualifiers(self) -> Quals:
        return {axis: frozenset(v) for axis, v in self.quals}


class _Span(msgspec.Struct):
    start: int
    end: int
    concept: str = ""
    candidates: tuple[str, ...] = ()
    code: str = ""


def _spans(item: str, terms: Mapping[str, str], term_: Terminology) -> list[_Span]:
    """Known names in `item`, longest first, not overlapping; Latin ones as whole tokens."""
    found: list[_Span] = []
    n = len(item)
    extra_lengths = _lengths_by_first(terms) if terms else {}
    for i in range(n):
        lengths = sorted({*term_.lengths.get(item[i], ()), *extra_lengths.get(item[i], ())},
                         reverse=True)
        for length in lengths:
            if i + length > n:
                continue
            s = item[i:i + length]
            cid = terms.get(s) or term_.terms.get(s)
            amb = term_.ambiguous.get(s) if cid is None else None
            if cid is None and amb is None:
                continue
            if _ascii_alnum(s[0]) and i > 0 and _ascii_alnum(item[i - 1]):
                continue
            if _ascii_alnum(s[-1]) and i + length < n and _ascii_alnum(item[i + length]):
                continue
            found.append(_Span(i, i + length, cid or "", amb or ()))
    for m in _CODE.finditer(item):
        code = m.group(1)
        ids = term_.codes.get(code, [])
        found.append(_Span(m.start(1), m.end(1), ids[0] if len(ids) == 1 else "", (), code))
    found.sort(key=lambda sp: (-(sp.end - sp.start), sp.start))
    # Longest match wins across qualifiers too: "糖尿病性" is a qualifier, not 糖尿病 + 性.
    taken: list[_Span] = [
        _Span(t[0], t[1]) for t in _tokens(item) if t[2] in ("qual", "neutral")
    ]
    blockers = len(taken)
    for sp in found:
        if all(sp.end <= t.start or sp.start >= t.end
               or (i < blockers and sp.end - sp.start >= t.end - t.start)
               for i, t in enumerate(taken)):
            taken.append(sp)
    spans = taken[blockers:]
    return sorted(spans, key=lambda sp: sp.start)


class _Gap(msgspec.Struct):
    tokens: list[tuple[_TokenKind, str, str, str]]  # kind, axis, value, text
    residue: str


def _gap(text: str) -> _Gap:
    tokens: list[tuple[_TokenKind, str, str, str]] = []
    residue: list[str] = []
    pos = 0
    for start, end, kind, axis, value, w in _tokens(text):
        residue.append(text[pos:start])
        tokens.append((kind, axis, value, w))
        pos = end
    residue.append(text[pos:])
    return _Gap(tokens, _JUNK.sub("", "".join(residue)))


class _Draft(msgspec.Struct):
    span: _Span | None
    text: str
    quals: dict[str, set[str]] = {}
    polarity: Polarity = "affirmed"
    subordinate: bool = False
    sequela: str = ""
    residue: str = ""

    def take(self, tok: tuple[_TokenKind, str, str, str]) -> None:
        kind, axis, value, text = tok
        if kind == "qual":
            self.quals.setdefault(axis, set()).update(value.split("+"))
        elif kind == "negation":
            self.polarity = "negated"
        elif kind == "uncertain" and self.polarity != "negated":
            self.polarity = "uncertain"
        elif kind == "sequela":
            self.sequela = self.sequela or text

    def mention(self, alternative: bool) -> Mention:
        s = self.span
        return Mention(
            text=self.text, concept=s.concept if s else "", candidates=s.candidates if s else (),
            code=s.code if s else "", alternative=alternative,
            quals=tuple(sorted((a, tuple(sorted(v))) for a, v in self.quals.items())),
            polarity=self.polarity, subordinate=self.subordinate, sequela=self.sequela,
            residue=self.residue,
        )


def _read_item(item: str, terms: Mapping[str, str], term_: Terminology) -> list[_Draft]:
    spans = _spans(item, terms, term_)
    if not spans:
        g = _gap(item)
        d = _Draft(None, item, {}, residue=g.residue)
        for tok in g.tokens:
            if tok[0] != "connector":
                d.take(tok)
        return [d]
    drafts = [_Draft(s, item[s.start:s.end], {}) for s in spans]
    bounds = [0, *[x for s in spans for x in (s.start, s.end)], len(item)]
    for k in range(len(spans) + 1):
        g = _gap(item[bounds[2 * k]:bounds[2 * k + 1]])
        before = drafts[k - 1] if k > 0 else None
        after = drafts[k] if k < len(drafts) else None
        connected = False
        for tok in g.tokens:
            kind = tok[0]
            if kind == "connector":
                connected = True
                if after is not None:
                    after.subordinate = True
                continue
            if after is None:  # the tail: suffixes of the last diagnosis
                if not connected and before is not None:
                    before.take(tok)
            elif before is not None and not connected and (
                    kind == "sequela" or (kind == "uncertain" and tok[3] in _SUFFIX_OPEN)):
                before.take(tok)
            else:  # between two names, a word belongs to the next ("排除" B)
                after.take(tok)
        if g.residue and not (after is None and connected):
            target = after if after is not None else before
            if target is not None:
                target.residue += g.residue
    return drafts


def read(answer: str, term_: Terminology | None = None,
         extra_terms: Mapping[str, str] | None = None) -> list[Mention]:
    """Read a free-text diagnosis into the diagnoses it names, in order.

    `extra_terms` (folded name -> concept id) adds names, e.g. a case's own
    synonyms; they win over the terminology's for the same words. Deterministic;
    never raises on any text.
    """
    term_ = term_ or terminology()
    extra = tuple(sorted((fold(k), v) for k, v in (extra_terms or {}).items() if fold(k)))
    return list(_read(answer, term_, extra))


@functools.lru_cache(maxsize=4096)  # differentials are read against every key differential
def _read(answer: str, term_: Terminology, extra_items: tuple[tuple[str, str], ...]
          ) -> tuple[Mention, ...]:
    extra = dict(extra_items)
    text = fold(answer).replace("r/o", "ruleout")
    mentions: list[Mention] = []
    pending_quals: dict[str, set[str]] = {}
    clauses = _STRONG.split(text)
    for cidx in range(0, len(clauses), 2):
        after_question = cidx > 0 and clauses[cidx - 1].startswith("?")
        parts = _WEAK.split(clauses[cidx])
        carry_negation = False
        for idx in range(0, len(parts), 2):
            item = _NUMBERING.sub("", parts[idx].strip())
            sep = parts[idx - 1].strip() if idx > 0 else ""
            alternative = sep in _ALT_SEPARATORS or (idx == 0 and after_question)
            if not _JUNK.sub("", item):
                continue
            drafts = _read_item(item, extra, term_)
            first = drafts[0]
            if first.span is None and not first.residue and first.sequela == "":
                # Only qualifiers ("(下壁)", "Killip I级"): they belong to a neighbour.
                if mentions and not carry_negation:
                    last = mentions[-1]
                    merged = {a: set(v) for a, v in last.quals}
                    for a, v in first.quals.items():
                        merged.setdefault(a, set()).update(v)
                    mentions[-1] = msgspec.structs.replace(
                        last, quals=tuple(sorted((a, tuple(sorted(v)))
                                                 for a, v in merged.items())))
                else:
                    for a, v in first.quals.items():
                        pending_quals.setdefault(a, set()).update(v)
                    if first.polarity == "negated":
                        carry_negation = True
                continue
            if pending_quals:
                for a, v in pending_quals.items():
                    first.quals.setdefault(a, set()).update(v)
                pending_quals = {}
            if first.polarity == "negated":
                carry_negation = True
            elif carry_negation and first.polarity == "affirmed":
                first.polarity = "negated"
            for j, d in enumerate(drafts):
                mentions.append(d.mention(alternative and j == 0))
    return tuple(mentions)

