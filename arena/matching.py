"""Question matching: which case facts does a contestant's question ask about?

One matcher serves two masters: the scripted patient (what to answer) and
scoring (which checklist items an interview covered, whichever engine answered).

Method. Each fact contributes documents: its example questions, its topic and,
at a discount, the patient's own words (they carry the drug names and details a
doctor echoes: "吃过布洛芬吗"). Two signals are computed per fact:

- lexical: the question is segmented with jieba (plus CJK character bigrams,
  which survive jieba's odd splits of medical words) and scored with Okapi BM25,
  normalised by the best score the question's own terms could earn, so it lies
  in [0, 1] whatever the question's length;
- semantic (when an `embed` function is injected): cosine similarity between
  multilingual-e5 embeddings of the question and of each document, rescaled so
  that the similarity any two short Chinese questions share maps to 0 and a
  near-paraphrase to 1 (not capped, so close calls still rank).

The score is a weighted sum of the two; below a threshold the question is about
something the case does not contain, and the patient says so rather than
answering the nearest fact. Weights and thresholds are calibrated on the
evaluation set in loadtest/eval/ (see docs/scripted-eval.md and
`loadtest.scripted_eval --tune`). Without embeddings the lexical score alone is
used, with its own threshold.

Follow-ups ("多久了？", "那喝酒呢？") carry no topic of their own; given the
previous turn's facts (`topic`), they are resolved against it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jieba
import msgspec
import numpy as np

from arena.cases import Fact

jieba.setLogLevel(logging.WARNING)

# An embedding function: texts -> array of shape (len(texts), dim), rows L2-normalised.
# Injected by the server (server/embeddings.py); arena never loads a model itself.
Embed = Callable[[Sequence[str]], Any]

# Calibration, chosen with `python -m loadtest.scripted_eval --tune` (docs/scripted-eval.md).
# Recorded with every score that used the matcher (checklist coverage); bump it when
# matching changes which facts a question reaches.
MATCHER_VERSION = "matcher-1"

# Lexical only: below this normalised BM25 score a question is about something the case lacks.
UNKNOWN_BELOW = 0.18
# With embeddings: score = (1 - EMBED_WEIGHT) * bm25 + EMBED_WEIGHT * rescaled cosine.
EMBED_WEIGHT = 0.6
COS_FLOOR = 0.85  # cosine of unrelated short questions; rescaled to 0
COS_CEIL = 0.95  # cosine of near-paraphrases; rescaled to 1
UNKNOWN_BELOW_EMBED = 0.42
# Facts scoring within this ratio of the best are answered together ("几点开始的，痛到哪里?").
TOGETHER_RATIO = 0.8
# Embedded scores are compressed towards each other: only near-ties are answered together,
# or "肚子哪里疼？" also tells (and scoring credits) when it started. Measured: 1.06 facts
# per paraphrase instead of 1.16, top-1 unchanged.
TOGETHER_RATIO_EMBED = 0.9
# The patient's own words are a weaker witness of the topic than the example questions.
ANSWER_DISCOUNT = 0.7
ANSWER_COS_PENALTY = 0.03
# Whether the patient's words are embedded too. Measured on the evaluation set: +0.3 point
# top-1 for 40 % more start-up embedding time, so no; BM25 still reads them.
EMBED_ANSWERS = False

# A question word no fact document has counts this fraction of the rarest word's weight in
# the normalising ceiling: enough that "你家养猫吗" scores low, not so much that one odd
# colloquial word sinks a question that names its topic.
UNSEEN_WEIGHT = 0.25
UNSEEN_WEIGHT_EMBED = 1.0  # with embeddings the cosine carries "about the same thing"

K1 = 1.2
B = 0.75

# Clinical shorthand and colloquialisms a doctor uses that example questions rarely do.
# Expanded into the question before matching; general vocabulary, not per case.
LEXICON = {
    "lmp": "末次月经", "htn": "高血压", "dm": "糖尿病", "t1dm": "1型糖尿病", "t2dm": "2型糖尿病",
    "hba1c": "糖化血红蛋白", "a1c": "糖化血红蛋白", "vas": "疼痛评分 打几分", "nrs": "疼痛评分",
    "nkda": "药物过敏", "copd": "慢性肺病", "cad": "冠心病", "chd": "冠心病", "mi": "心梗",
    "ppi": "胃药", "otc": "自己买的药", "bp": "血压", "hr": "心率", "gxpx": "怀孕 生孩子",
    "g0p0": "怀孕 生孩子", "g1p1": "怀孕 生孩子", "g1p0": "怀孕 生孩子",
    "例假": "月经", "大姨妈": "月经", "见红": "出血", "病程": "多长时间 多久",
    "药敏": "药物过敏", "烟酒": "抽烟 喝酒", "拉稀": "拉肚子 腹泻", "跑肚": "拉肚子 腹泻",
    "冒汗": "出汗", "出虚汗": "出汗", "犯恶心": "恶心", "作呕": "恶心", "干呕": "恶心",
    "发热": "发烧", "烧不烧": "发烧", "烫不烫": "发烧 体温", "起夜": "夜尿", "尿尿": "小便",
    "解手": "小便", "屙": "大便", "心口": "胸口", "心窝": "胃", "胸闷": "胸闷 憋气",
    "气短": "气短 喘", "气促": "喘 呼吸困难", "憋气": "喘 憋", "黑矇": "眼前发黑",
    "晕厥": "晕倒", "昏过去": "晕倒", "中风": "脑梗 脑出血", "卒中": "脑梗 脑出血",
    "嗜睡": "想睡觉", "乏力": "没劲", "纳差": "胃口 食欲", "纳呆": "胃口 食欲",
    "二便": "大便 小便", "黑便": "大便发黑", "柏油样便": "大便发黑", "咯血": "咳血",
    "尿路刺激征": "尿频 尿急 尿痛", "尿路刺激": "尿频 尿急 尿痛", "人流": "流产",
    "包年": "一天抽多少 抽了多少年", "吸烟史": "抽烟", "饮酒史": "喝酒",
    "掉秤": "体重 瘦", "消瘦": "体重 瘦", "活血": "抗凝 阿司匹林",
    # Northern colloquial question words: the example questions are in standard Mandarin.
    "干啥": "做什么", "干嘛": "做什么", "咋样": "怎么样", "咋回事": "怎么回事", "开刀": "手术",
}
_LEXICON = re.compile("|".join(sorted(map(re.escape, LEXICON), key=len, reverse=True)))

# Function words that every question shares; they carry no topic.
_STOP = frozenset(
    (
        "的 了 吗 呢 吧 啊 呀 么 嘛 是 有 没 没有 有没有 你 您 我 他 她 什么 怎么 怎么样 怎样 "
        "多少 哪 哪里 哪儿 一下 一些 这个 那个 现在 平时 平常 过 会 能 在 就 都 还 也 请问 请 "
        "情况 问题 觉得 感觉 一点 一般 是不是 是否 有无 和 与 或 及 不 没 咋 啥 如何 "
        "? ？ , ， . 。 ! ！ 、 "
        "do you have any your the a an is are was were of to in for what how when did"
    ).split()
)
# A bigram with one of these is grammar ("了吗", "抽不"), not topic.
_STOP_CHARS = frozenset("的了吗呢吧啊呀么嘛你您我他她什怎哪没不是过")
_CLAUSE = re.compile(r"[？?。！!；;，,]|还有|另外|以及")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_WORD = re.compile(r"[\u4e00-\u9fff]+|[a-zA-Z]+|\d+(?:\.\d+)?")
_PUNCT = re.compile(r"[\s？?。.！!，,；;…~～]+")

FollowUp = Literal["more", "when", "contrast"]

# "还有呢？" "还有别的吗？" "然后呢？": asks for the next thing in the same area.
_MORE = re.compile(
    r"^(那|那么|嗯)?(还有|别的|其他|其它|另外|然后|后来|接着|再后来|再就是)"
    r"(呢|吗|嘛|的|没有|没|别的|其他|其它|什么|啥|哪里|哪儿|症状|不舒服|地方|情况)*$"
)
# "多久了？" "什么时候开始的？" "几次？": the when / how much of the previous topic.
_WHEN = re.compile(
    r"多久|多长时间|多少时间|几天|多少天|几年|多少年|几个月|什么时候|啥时候|哪天|哪一天|几点|"
    r"多少度|几度|几次|几回|多少次|一天几|最高"
)
# "那喝酒呢？" "小便呢？": the same question, about something else.
_CONTRAST = re.compile(r"^(那|那么)?(?P<x>.{1,8}?)(呢|怎么样|咋样|如何)$")


def combine(lexical: np.ndarray, cosine: np.ndarray | None) -> np.ndarray:
    """One calibrated score per fact from the lexical and (optional) cosine signals."""
    if cosine is None:
        return lexical
    semantic = np.maximum((cosine - COS_FLOOR) / (COS_CEIL - COS_FLOOR), 0.0)
    return (1 - EMBED_WEIGHT) * lexical + EMBED_WEIGHT * semantic


def expand(question: str) -> str:
    """`question` with clinical shorthand and colloquialisms glossed (see LEXICON)."""
    low = question.lower()
    found = [LEXICON[m] for m in _LEXICON.findall(low) if _gloss_ok(low, m)]
    return f"{question} {' '.join(found)}" if found else question


def _gloss_ok(low: str, key: str) -> bool:
    # Latin abbreviations must stand alone ("mi" is not inside "vomiting").
    if not key.isascii():
        return True
    return re.search(rf"(?<![a-z]){re.escape(key)}(?![a-z])", low) is not None


def tokenize(text: str) -> list[str]:
    """Topic-bearing tokens of `text`: jieba words, minus function words, plus CJK bigrams."""
    text = text.lower()
    tokens = [
        w
        for w in jieba.lcut_for_search(text)
        if w.strip() and w not in _STOP and _WORD.fullmatch(w)
    ]
    for run in _CJK_RUN.findall(text):
        tokens += [
            run[i : i + 2]
            for i in range(len(run) - 1)
            if run[i] not in _STOP_CHARS and run[i + 1] not in _STOP_CHARS
        ]
    return tokens


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
    score: float  # calibrated: at or above the unknown threshold means "asked about this fact"


class QuestionMatcher:
    """BM25 (and, when `embed` is given, e5 cosine) over a case's facts. Build once per case.

    Building embeds every example question and topic once (about two seconds per case on
    one core); matching embeds the question (or each of its clauses) in one call.
    """

    def __init__(self, facts: Sequence[Fact], embed: Embed | None = None) -> None:
        self.facts = tuple(facts)
        self.embedded = embed is not None
        self._embed = embed
        self._ids = [f.id for f in self.facts]
        texts: list[str] = []
        weights: list[float] = []
        owner: list[int] = []
        for i, fact in enumerate(self.facts):
            for text in (*fact.questions, fact.topic):
                texts.append(text)
                weights.append(1.0)
                owner.append(i)
            texts.append(fact.answer)
            weights.append(ANSWER_DISCOUNT)
            owner.append(i)
        self._owner = np.array(owner, dtype=np.intp)
        self._weight = np.array(weights)
        docs = [tokenize(t) for t in texts]
        n = len(docs)
        avg = (sum(len(d) for d in docs) / n) if n else 1.0
        df: Counter[str] = Counter()
        for d in docs:
            df.update(set(d))
        self._idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        # A term no document has is as informative as the rarest possible term.
        self._idf_unseen = math.log(1 + (n + 0.5) / 0.5)
        # Per term, its BM25 contribution to every document (tf saturated at 1 so the
        # normalising ceiling is a true upper bound), discounted for answer documents.
        self._term: dict[str, np.ndarray] = {t: np.zeros(n) for t in df}
        for j, d in enumerate(docs):
            norm = K1 * (1 - B + B * len(d) / avg)
            for t, f in Counter(d).items():
                self._term[t][j] = (
                    self._idf[t] * min(1.0, f * (K1 + 1) / (f + norm)) * self._weight[j]
                )
        self._doc_vecs: np.ndarray | None = None
        if embed is not None and texts:
            if EMBED_ANSWERS:
                self._doc_vecs = np.asarray(embed(texts), dtype=np.float32)
            else:
                # Answers get an orthogonal (zero) vector: cosine 0, never the best document.
                asked = [j for j, w in enumerate(weights) if w >= 1.0]
                vecs = np.asarray(embed([texts[j] for j in asked]), dtype=np.float32)
                self._doc_vecs = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
                self._doc_vecs[asked] = vecs
        # Answers are long and mention several things: a weaker semantic witness too.
        self._answer_penalty = np.where(self._weight < 1.0, ANSWER_COS_PENALTY, 0.0)

    # ------------------------------------------------------------------ scoring

    def _per_fact(self, doc_scores: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.facts))
        np.maximum.at(out, self._owner, doc_scores)
        return out

    def lexical(self, text: str) -> np.ndarray:
        """Normalised BM25 of `text` against every fact, in [0, 1] (fact order)."""
        terms = list(dict.fromkeys(tokenize(text)))
        if not terms or not self.facts:
            return np.zeros(len(self.facts))
        unseen = self._idf_unseen * (UNSEEN_WEIGHT_EMBED if self.embedded else UNSEEN_WEIGHT)
        ceiling = sum(self._idf.get(t, unseen) for t in terms)
        total = np.zeros(len(self._owner))
        for t in terms:
            col = self._term.get(t)
            if col is not None:
                total += col
        return self._per_fact(total) / ceiling

    def cosine(self, vecs: np.ndarray) -> np.ndarray:
        """Best cosine of each embedded text against each fact: shape (texts, facts)."""
        assert self._doc_vecs is not None
        cos = vecs @ self._doc_vecs.T
        out = np.full((len(vecs), len(self.facts)), -1.0)
        for j in range(len(vecs)):
            np.maximum.at(out[j], self._owner, cos[j] - self._answer_penalty)
        return out

    def features(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(lexical, cosine) of each text against every fact; cosine None without embeddings."""
        texts = [expand(t) for t in texts]
        lex = [self.lexical(t) for t in texts]
        if self._embed is None or self._doc_vecs is None or not texts:
            return [(lx, None) for lx in lex]
        cos = self.cosine(np.asarray(self._embed(texts), dtype=np.float32))
        return list(zip(lex, cos, strict=True))

    def scores(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Calibrated score of each text against every fact (fact order); one embed call."""
        return [combine(lx, c) for lx, c in self.features(texts)]

    def _pick(self, s: np.ndarray, limit: int) -> list[Match]:
        threshold = UNKNOWN_BELOW_EMBED if self.embedded else UNKNOWN_BELOW
        order = np.argsort(-s, kind="stable")
        if not len(order) or s[order[0]] < threshold:
            return []
        ratio = TOGETHER_RATIO_EMBED if self.embedded else TOGETHER_RATIO
        floor = max(threshold, float(s[order[0]]) * ratio)
        return [Match(self._ids[i], float(s[i])) for i in order[:limit] if s[i] >= floor]

    # ------------------------------------------------------------------ matching

    def match(self, question: str, *, limit: int = 3, topic: Sequence[str] = ()) -> list[Match]:
        """Facts the question asks about, best first; empty when nothing matches.

        A question of several clauses ("抽烟吗？过敏吗？") is matched clause by
        clause as well, so each topic is found. `topic` is the previous turn's
        facts: a follow-up ("多久了？", "那喝酒呢？") is resolved against it.
        Deterministic; scores are about [0, 1] (1: as good as the example questions).
        """
        fu = follow_up(question) if topic else None
        if fu is not None:
            resolved = self._follow(question, fu, [t for t in topic if t in self._ids], limit)
            if resolved is not None:
                return resolved
        clauses = [c for c in _CLAUSE.split(question) if c.strip()]
        best: dict[str, float] = {}
        for s in self._question_scores(question, clauses):
            for m in self._pick(s, limit):
                best[m.fact_id] = max(best.get(m.fact_id, 0.0), m.score)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        return [Match(fid, s) for fid, s in ranked[: max(limit, len(clauses))]]

    def _question_scores(self, question: str, clauses: list[str]) -> list[np.ndarray]:
        if len(clauses) <= 1:
            return self.scores([question])
        # Embedding is the expensive part: embed each clause once, and let the whole
        # question (whose words may only make sense together) borrow their best cosines.
        feats = self.features(clauses)
        whole_lex = self.lexical(expand(question))
        cos = [c for _, c in feats if c is not None]
        whole = combine(whole_lex, np.max(cos, axis=0) if cos else None)
        return [whole, *(combine(lx, c) for lx, c in feats)]

    def _follow(
        self, question: str, fu: tuple[FollowUp, str], topic: list[str], limit: int
    ) -> list[Match] | None:
        """Resolve a follow-up against the previous topic; None: treat it as a fresh question."""
        kind, x = fu
        if kind == "more" or not topic:
            return None if kind != "more" else []
        facts = {f.id: f for f in self.facts}
        anchor = facts[topic[0]]
        if kind == "contrast":
            # "那喝酒呢？" after "抽烟吗？": the new word alone usually names its fact;
            # otherwise read it with the previous question's topic ("你妈呢？").
            for text in (x, f"{anchor.topic}{x}"):
                (s,) = self.scores([text])
                found = self._pick(s, limit)
                if found:
                    return found[:1]
            return []
        # "when": read with the previous topic. A different fact of the same area is the
        # more specific one ("月经规律吗？" "最后一次是哪天？" is the last period); else, when
        # the topic's own answer says when / how many ("有高血压吗？" "多少年了？"), it is
        # the topic; else the best fact that is not the topic ("哪里痛？" "多久了？").
        (ctx,) = self.scores([f"{anchor.topic}{question}"])
        found = self._pick(ctx, limit)
        timed = _HAS_TIME.search(anchor.answer) is not None
        other = found[0].fact_id if found and found[0].fact_id not in topic else None
        if other and (not timed or facts[other].category == anchor.category):
            return found[:1]
        if timed:
            return [Match(anchor.id, 1.0)]
        for t in topic:
            ctx[self._ids.index(t)] = 0.0
        found = self._pick(ctx, limit)
        return found[:1] if found else None


_HAS_TIME = re.compile(
    r"[0-9一二三四五六七八九十两几半多]+ *(天|年|岁|回|次|度|周|分钟|遍)|"
    r"[0-9一二三四五六七八九十两几半多]+ *个?(小时|钟头|月|礼拜|星期)|"
    r"[0-9二三四五六七八九十两几]+点(?!点)|昨|前天|今天|早上|晚上|半夜|下午|上午|中午"
)


def time_sentences(answer: str) -> str:
    """The sentences of `answer` that say when, how long or how many ("" if none)."""
    parts = [p for p in re.split(r"(?<=[。！？!?；;])", answer) if p.strip()]
    hits = [p for p in parts if _HAS_TIME.search(p)]
    return "".join(hits)
