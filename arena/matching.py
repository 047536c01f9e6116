"""Question matching: which case facts does a contestant's question ask about?

One matcher serves two masters: the scripted patient (what to answer) and
scoring (which checklist items an interview covered, whichever engine answered).

Method. A question is first read without the case: `arena.intents` maps each of
its clauses to history-taking intents (from a paraphrase bank written once for
all cases) and to the symptom or body part it names. Only then is the case
consulted: the answer is the case's facts that declare that intent (and, where
the question names one, that subject: asked 发热, a fact about 咳嗽 is not a
match). A case that has no such fact has nothing to say on the topic: the
matcher returns no fact, the patient gives the intent's own default, and
scoring credits nothing. A case's example questions, when it has them, only
rank facts of the same intent, or rescue a question the bank does not know.

Follow-ups ("多久了？", "那喝酒呢？") carry no topic of their own; given the
previous turn's facts (`topic`), they are read against it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import msgspec
import numpy as np

from arena.cases import Fact
from arena.intents import (
    CLAUSE,
    COS_CEIL,
    COS_FLOOR,
    IDENTITY,
    INTENT_SUBJECTS,
    SUBJECT_INTENT,
    TIME,
    UNRELATED,
    Embed,
    IntentClassifier,
    Scored,
    canonical_subjects,
    expand,
    normal,
    subjects_in,
    tokenize,
)

__all__ = [
    "MATCHER_VERSION",
    "Asked",
    "Embed",
    "Match",
    "QuestionMatcher",
    "expand",
    "follow_up",
    "time_clause",
    "time_sentences",
    "tokenize",
]

# Recorded with every score that used the matcher (checklist coverage); bump it when
# matching changes which facts a question reaches.
MATCHER_VERSION = "matcher-2-intents"

K1, B = 1.2, 0.75
ANSWER_DISCOUNT = 0.7  # the patient's own words witness a fact's topic less than its questions
RESCUE_BELOW = 0.45  # a case's own example question this close answers a question the bank lacks
# Intents whose questions are about the complaint: a bare "多久了" stays on the complaint.
HPI = frozenset({"chief_complaint", "onset", "duration", "site", "character", "radiation",
                 "severity", "timing", "course", "aggravating", "relieving", "associated"})
# After these, "多久了？" / "一天几支？" asks more of the same fact ("抽烟吗？" "一天几支？").
STICKY = frozenset({"smoking", "alcohol", "past_history", "medications", "surgery", "trauma",
                    "transfusion", "allergies", "family_history", "treatment_so_far", "menstrual",
                    "obstetric", "sexual_history", "occupation_exposure", "diet", "sleep",
                    "bowel", "urination", "appetite_weight", "travel", "contacts"})
# Here a named symptom is the trigger, not the topic ("咳嗽的时候更疼吗").
SUBJECT_IS_CONTEXT = frozenset({"aggravating", "relieving", "radiation"})
# BM25 this sure of a clause skips the model call (most of a reply's time). Measured on the
# dev cases: skipping at 0.5 costs 0.7 point of intent accuracy and adds a point of wrong
# topics, so it is set above any BM25 score: only verbatim example questions skip it.
LEXICAL_SURE = 2.0
BARE_BONUS = 0.1
# A yes/no question about something unnamed: how closely a presence fact's words must match.
YES_NO_REF = 0.2
_YES_NO = re.compile(r"有没有|有无|是否|会不会|是不是|[吗嘛么][？?]?\s*$|(.)不\1|^any |^do you ")
REFINE_EMBED_WEIGHT = 0.5  # ranking a case's facts: the share of the e5 cosine
# "怎么个疼法" names no subject but asks about a pain: the facts about a pain come first.
PAINS = frozenset({"胸痛", "腹痛", "头痛", "腰背痛", "关节痛", "咽痛"})
_PAIN = re.compile(r"疼|痛")
# "有没有别的症状" names no symptom: the one associated fact it resembles, if any.
ASSOCIATED_REF = 0.3
# An unasked subject's own facts answer these (asked "咳嗽厉害吗", the case says "不咳嗽").
PRESENCE = HPI | {"negatives_general"}

FollowUp = Literal["more", "when", "contrast"]

_PUNCT = re.compile(r"[\s？?。.！!，,；;…~～]+")
_MORE = re.compile(
    r"^(那|那么|嗯)?(还有|别的|其他|其它|另外|然后|后来|接着|再后来|再就是)"
    r"(呢|吗|嘛|的|没有|没|别的|其他|其它|什么|啥|哪里|哪儿|症状|不舒服|地方|情况)*$"
)
_WHEN = re.compile(
    r"多久|多长时间|多少时间|几天|多少天|几年|多少年|几个月|什么时候|啥时候|哪天|哪一天|几点|"
    r"多少度|几度|几次|几回|多少次|一天几|最高|几支|几根|几包|多少|几两|几瓶"
)
_CONTRAST = re.compile(r"^(那|那么)?(?P<x>.{1,8}?)(呢|怎么样|咋样|如何)$")


def follow_up(question: str) -> tuple[FollowUp, str] | None:
    """Whether `question` only makes sense after the previous turn, and how.

    Returns ("more", "") for "还有呢？", ("when", "") for a short "多久了？",
    ("contrast", x) for "那x呢？", or None for a question that stands alone.
    """
    q = _PUNCT.sub("", question)
    if not q or len(q) > 12:
        return None
    if _MORE.fullmatch(q):
        return ("more", "")
    if len(q) <= 8 and _WHEN.search(q):
        return ("when", "")
    m = _CONTRAST.fullmatch(q)
    if m and (q.startswith("那") or len(q) <= 5):
        return ("contrast", m.group("x"))
    return None


class Match(msgspec.Struct, frozen=True):
    fact_id: str
    score: float  # the intent's classifier score (1.0: as sure as a bank paraphrase)


class Asked(msgspec.Struct, frozen=True):
    """One thing a question asks: an intent, the subject it names, and the facts answering it.

    `facts` empty: the case is silent (the patient gives the intent's default, scoring
    credits nothing). `time_only`: answer with the sentences that say when / how long.
    """

    intent: str
    score: float = 1.0
    subject: str = ""  # canonical subject ("发热")
    said: str = ""  # the subject as the question put it ("发烧")
    facts: tuple[str, ...] = ()
    time_only: bool = False


class _Profile(msgspec.Struct, frozen=True):
    intents: tuple[str, ...]
    subjects: frozenset[str]  # declared (or read from the topic)
    mentions: frozenset[str]  # named anywhere in the topic or the answer


class QuestionMatcher:
    """Intent matching against a case's facts. Build once per case (cheap: the bank is shared).

    With `embed`, the bank is embedded once per process and per model; each question (its
    clauses) is embedded in one call, and so are the case's fact documents at build time.
    """

    def __init__(self, facts: Sequence[Fact], embed: Embed | None = None) -> None:
        self.facts = tuple(facts)
        self.classifier = IntentClassifier(embed)
        self.embedded = self.classifier.embedded
        self._ids = [f.id for f in self.facts]
        self._by_id = {f.id: f for f in self.facts}
        self.profiles = {f.id: self._profile(f) for f in self.facts}
        # Subjects of the complaint itself, which facts without a subject are about.
        self._main = frozenset(
            c for f in self.facts if not self.profiles[f.id].subjects
            and set(self.profiles[f.id].intents) & HPI
            for c, _ in subjects_in(f"{f.topic} {f.answer}")
        )
        # A case that names no subject at all (written before subjects): its facts without
        # one may be about anything asked.
        self._legacy = not any(f.subject for f in self.facts)
        # The case's own example questions, as written: asked verbatim, they name their fact.
        self._examples = {_key(q): f.id for f in self.facts for q in f.questions}
        self._build_refinement(embed)

    # ------------------------------------------------------------------ facts

    def _profile(self, fact: Fact) -> _Profile:
        intents = fact.declared()
        if not intents:
            # A case without intents (an old or imported one): read the topic, then the
            # example questions, as the bank reads a question.
            for text in (fact.topic, *fact.questions):
                found = [x for x in self.classifier.classify(text)
                         if x.intent not in IDENTITY and x.intent != UNRELATED]
                if found:
                    intents = (found[0].intent,)
                    break
        subjects = canonical_subjects(fact.subject) if fact.subject else frozenset(
            c for c, _ in subjects_in(fact.topic) if c not in SUBJECT_INTENT
        )
        mentions = frozenset(c for c, _ in subjects_in(fact.topic)) | subjects | _told(fact.answer)
        return _Profile(intents or ("negatives_general",), subjects, mentions)

    def _build_refinement(self, embed: Embed | None) -> None:
        """BM25 (and e5) over each fact's topic, example questions and, discounted, answer."""
        texts: list[str] = []
        weights: list[float] = []
        owner: list[int] = []
        for i, fact in enumerate(self.facts):
            for text in (fact.topic, *fact.questions):
                texts.append(normal(text))
                weights.append(1.0)
                owner.append(i)
            texts.append(normal(fact.answer))
            weights.append(ANSWER_DISCOUNT)
            owner.append(i)
        self._owner = np.array(owner, dtype=np.intp)
        docs = [tokenize(t) for t in texts]
        n = len(docs)
        avg = (sum(len(d) for d in docs) / n) if n else 1.0
        df: Counter[str] = Counter()
        for d in docs:
            df.update(set(d))
        self._idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        self._idf_unseen = math.log(1 + (n + 0.5) / 0.5)
        self._term: dict[str, np.ndarray] = {t: np.zeros(n) for t in df}
        for j, d in enumerate(docs):
            norm = K1 * (1 - B + B * len(d) / avg)
            for t, f in Counter(d).items():
                self._term[t][j] = self._idf[t] * min(1.0, f * (K1 + 1) / (f + norm)) * weights[j]
        self._qdocs = [j for j, w in enumerate(weights) if w >= 1.0]
        self._doc_vecs: np.ndarray | None = None
        if embed is not None and self._qdocs:
            self._doc_vecs = np.asarray(embed([texts[j] for j in self._qdocs]), dtype=np.float32)

    def refinement(self, text: str, vec: np.ndarray | None = None) -> np.ndarray:
        """How closely `text` resembles each fact's own documents, about [0, 1] (fact order)."""
        out = np.zeros(len(self.facts))
        terms = list(dict.fromkeys(tokenize(text)))
        if terms and self.facts:
            ceiling = sum(self._idf.get(t, self._idf_unseen * (0.3 if t[0] == "~" else 1.0))
                          for t in terms)
            total = np.zeros(len(self._owner))
            for t in terms:
                col = self._term.get(t)
                if col is not None:
                    total += col
            np.maximum.at(out, self._owner, total / ceiling)
        if vec is not None and self._doc_vecs is not None:
            cos = np.full(len(self.facts), -1.0)
            np.maximum.at(cos, self._owner[self._qdocs], self._doc_vecs @ vec)
            sem = np.maximum((cos - COS_FLOOR) / (COS_CEIL - COS_FLOOR), 0.0)
            out = (1 - REFINE_EMBED_WEIGHT) * out + REFINE_EMBED_WEIGHT * sem
        return out

    def candidates(self, intent: str, subject: str = "") -> list[str]:
        """Facts that answer `intent` (about `subject`, when given), in case order."""
        prof = self.profiles
        group = [i for i in self._ids if intent in prof[i].intents]
        area = INTENT_SUBJECTS.get(intent)
        if area:
            group += [i for i in self._ids if prof[i].subjects & area and i not in group]
        if not subject:
            return group
        tiers = [
            [i for i in group if subject in prof[i].subjects],
            [i for i in group if not prof[i].subjects
             and (subject in prof[i].mentions or subject in self._main or self._legacy)],
        ]
        if intent in SUBJECT_IS_CONTEXT:
            tiers.append([i for i in group
                          if not prof[i].subjects or prof[i].subjects & self._main])
        elif intent in PRESENCE:
            tiers.append([i for i in self._ids if subject in prof[i].subjects])
            tiers.append([i for i in self._ids if set(prof[i].intents) & {"associated",
                          "negatives_general"} and subject in prof[i].mentions])
        return next((t for t in tiers if t), [])

    # ------------------------------------------------------------------ questions

    def analyse(
        self, question: str, context: Sequence[Asked] = (), *, embed: bool = True
    ) -> list[Asked]:
        """What `question` asks, each intent once, with the facts that answer it.

        `context` is what the previous turn asked: a follow-up ("多久了？", "那喝酒呢？")
        is read against it. Deterministic; an empty list means the question is about
        nothing in the taxonomy and nothing in the case. `embed=False` reads it by BM25
        alone (re-reading earlier turns costs no model call).
        """
        q = question.strip()
        clauses = [c for c in re.split(r"[…~～]+", q) for c in CLAUSE.split(c) if c.strip()]
        clauses = clauses or [q]
        # Embed only the clauses BM25 is unsure of, all in one model call.
        lexical = [self.classifier.classify(c) for c in clauses]
        unsure = [k for k, c in enumerate(clauses)
                  if embed and self.embedded and not self._sure(c, lexical[k])]
        vecs = self.classifier.vectors([normal(clauses[k]) for k in unsure]) if unsure else None
        out: list[Asked] = []
        ctx = list(context)
        for k, clause in enumerate(clauses):
            vec = None if vecs is None or k not in unsure else vecs[unsure.index(k)]
            found = self._clause(clause, vec, ctx, inherit=k > 0, lexical=lexical[k])
            for a in found:
                if all((a.intent, a.subject) != (b.intent, b.subject) for b in out):
                    out.append(a)
            # "咳嗽有痰吗？什么颜色？": a later clause is read against the one before.
            ctx = found or ctx
        return out

    def _example(self, clause: str) -> list[Asked]:
        fid = self._examples.get(_key(clause))
        if fid is None:
            return []
        prof = self.profiles[fid]
        subject = min(prof.subjects) if prof.subjects else ""
        return [Asked(prof.intents[0], 1.0, subject, subject, (fid,))]

    def _sure(self, clause: str, found: list[Scored]) -> bool:
        if _key(clause) in self._examples:
            return True
        return bool(found) and found[0].score >= LEXICAL_SURE

    def _clause(
        self, clause: str, vec: np.ndarray | None, context: Sequence[Asked], *,
        inherit: bool = False, lexical: list[Scored] | None = None,
    ) -> list[Asked]:
        example = self._example(clause)
        if example:
            return example
        text = normal(clause)
        fu = follow_up(clause) if context else None
        named = [(c, s) for c, s in subjects_in(text) if c not in SUBJECT_INTENT]
        subject, said = named[0] if named else ("", "")
        if inherit and not subject and context and context[0].intent in HPI:
            subject, said = context[0].subject, context[0].said
        if fu is not None:
            kind, x = fu
            prev = context[0]
            if kind == "more":
                return []
            sticky = (prev.intent in STICKY and prev.facts) or prev.intent in IDENTITY
            if kind == "when" and sticky:
                # "一天几支？" after "抽烟吗？": the same fact says how many / how long.
                return [Asked(prev.intent, prev.score, prev.subject, prev.said, prev.facts)]
            if kind == "contrast":
                own = self.classifier.classify(x, vec)
                x_named = [(c, s) for c, s in subjects_in(normal(x)) if c not in SUBJECT_INTENT]
                if x_named and (not own or own[0].intent == "associated"):
                    c, s = x_named[0]
                    return [self._asked(prev.intent, 1.0, c, s, text, vec)]
                if own:
                    return [self._asked(o.intent, o.score, subject, said, text, vec) for o in own]
            if kind == "when" and not subject:
                subject, said = prev.subject, prev.said
        found = self.classifier.classify(clause, vec) if vec is not None or lexical is None \
            else lexical
        if found and found[0].intent == UNRELATED:
            return [Asked(UNRELATED, found[0].score)]
        if not found:
            ref = self.refinement(text, vec)
            best = int(np.argmax(ref)) if len(ref) else -1
            if best >= 0 and ref[best] >= RESCUE_BELOW:
                fid = self._ids[best]
                return [Asked(self.profiles[fid].intents[0], float(ref[best]), facts=(fid,))]
            if _YES_NO.search(text):
                # "脸上长痘痘吗": whether something is there, something the lexicon does not
                # name. The presence fact whose own words it matches, or "没有这种情况".
                present = [i for i in self._ids
                           if set(self.profiles[i].intents) & {"associated", "negatives_general"}]
                hit = max(present, key=lambda i: ref[self._ids.index(i)], default=None)
                if hit is not None and ref[self._ids.index(hit)] >= YES_NO_REF:
                    return [Asked("associated", float(ref[self._ids.index(hit)]), facts=(hit,))]
                return [Asked("associated", 0.0, said="这种情况")]
            return []
        return [self._asked(f.intent, f.score, subject, said, text, vec) for f in found]

    def _asked(
        self, intent: str, score: float, subject: str, said: str, text: str, vec: np.ndarray | None
    ) -> Asked:
        cands = self.candidates(intent, subject)
        time_only = intent == "duration"
        if not cands and intent in TIME:
            # The other time intent's fact, or the subject's own, says when.
            for other in (*TIME, "chief_complaint"):
                cands = self.candidates(other, subject) if other != intent else []
                if cands:
                    time_only = True
                    break
            if not cands and subject:
                cands = [i for i in self._ids if subject in self.profiles[i].subjects]
                time_only = bool(cands)
        if len(cands) > 1:
            ref = self.refinement(text, vec)
            # Unasked, a subject-less fact is the main one ("多久了？" is the complaint's).
            pain = not subject and _PAIN.search(text) is not None
            rank = {i: float(ref[self._ids.index(i)])
                    + (BARE_BONUS if not subject and not self.profiles[i].subjects else 0.0)
                    + (BARE_BONUS if pain and self.profiles[i].subjects & PAINS else 0.0)
                    for i in cands}
            cands = sorted(cands, key=lambda i: -rank[i])
            if intent == "associated" and not subject and rank[cands[0]] < ASSOCIATED_REF:
                cands = []
        keep = 1
        if intent == "onset" and cands and self.profiles[cands[0]].intents[0] != "onset":
            time_only = True
        return Asked(intent, score, subject, said, tuple(cands[:keep]), time_only)

    def match(self, question: str, *, limit: int = 3, topic: Sequence[str] = ()) -> list[Match]:
        """Facts the question asks about, best first; empty when the case has none.

        `topic` is the previous turn's facts: a follow-up ("多久了？", "那喝酒呢？") is
        resolved against it. A topic the case is silent on matches nothing, so scoring
        never credits a default answer. Deterministic.
        """
        context = self.context(topic)
        out: dict[str, float] = {}
        for a in self.analyse(question, context):
            for fid in a.facts:
                out.setdefault(fid, a.score)
        return [Match(f, s) for f, s in list(out.items())[: max(limit, 1)]]

    def context(self, topic: Sequence[str]) -> list[Asked]:
        """What a turn that told the facts `topic` was about, for reading a follow-up."""
        ids = tuple(t for t in topic if t in self._by_id)
        if not ids:
            return []
        prof = self.profiles[ids[0]]
        subject = min(prof.subjects) if prof.subjects else ""
        return [Asked(prof.intents[0], 1.0, subject, subject, ids)]


def _key(question: str) -> str:
    return _PUNCT.sub("", question).lower()


# Body parts name a symptom in an answer only with a pain word: "胸口也不疼", not "胸口起了疹子".
_BODY = frozenset({"胸口", "肚子", "腹部", "腰", "后背", "关节", "眼睛", "嗓子", "喉咙", "耳朵",
                   "鼻子", "心口", "看东西"})
_PAIN_NEAR = re.compile(r"^.{0,4}(疼|痛)")


def _told(answer: str) -> frozenset[str]:
    """The subjects an answer speaks of."""
    out = set()
    for c, form in subjects_in(answer):
        if form not in _BODY:
            out.add(c)
            continue
        at = answer.lower().find(form)
        if at >= 0 and _PAIN_NEAR.match(answer[at + len(form):]):
            out.add(c)
    return frozenset(out)


_HAS_TIME = re.compile(
    r"[0-9一二三四五六七八九十两几半多]+ *(天|年|岁|回|次|度|周|分钟|遍)|"
    r"[0-9一二三四五六七八九十两几半多]+ *个?(小时|钟头|月|礼拜|星期)|"
    r"[0-9二三四五六七八九十两几]+点(?!点)|昨|前天|今天|早上|晚上|半夜|下午|上午|中午|刚才|最近"
)
_HOW_LONG = re.compile(
    r"(到现在|已经|有|快|差不多|将近|得有)[^，。；]*?[0-9一二三四五六七八九十两几半多]+ *个?"
    r"(天|年|周|小时|钟头|月|礼拜|星期|分钟)|[0-9一二三四五六七八九十两几半多]+ *个?"
    r"(天|年|周|小时|钟头|月|礼拜|星期|分钟)(了|多|左右)"
)


def time_sentences(answer: str) -> str:
    """The sentences of `answer` that say when, how long or how many ("" if none)."""
    parts = [p for p in re.split(r"(?<=[。！？!?；;])", answer) if p.strip()]
    return "".join(p for p in parts if _HAS_TIME.search(p))


def time_clause(answer: str, intent: str) -> str:
    """The clause of `answer` that answers a time question: how long for "duration",
    when for "onset" ("" if it says neither)."""
    clauses = [c for c in re.split(r"(?<=[，,。！？!?；;])", answer) if c.strip()]
    if intent == "duration":
        hits = [c for c in clauses if _HOW_LONG.search(c)]
        if hits:
            return _sentence("".join(hits[:2]))
    hits = [c for c in clauses if _HAS_TIME.search(c)]
    return _sentence("".join(hits[:2])) if hits else ""


def _sentence(text: str) -> str:
    text = text.strip().rstrip("，,；;")
    return text if text.endswith(("。", "！", "？", "…", ")", "）")) else text + "。"
