"""Question matching: which case facts does a contestant's question ask about?

One matcher serves two masters: the scripted patient (what to answer) and
scoring (which checklist items an interview covered, whichever engine answered).

Method: each fact's example questions and topic are documents; a question is
segmented with jieba (plus CJK character bigrams, which survive jieba's
occasional odd splits of medical words) and scored with Okapi BM25. Scores are
normalised by the best score the question's own terms could earn, so a single
threshold separates "asked about this fact" from "asked about something the
case does not contain" regardless of question length.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence

import jieba
import msgspec

from arena.cases import Fact

jieba.setLogLevel(logging.WARNING)

# Below this normalised score a question is about something the case does not say.
UNKNOWN_BELOW = 0.34
# Facts scoring within this ratio of the best are answered together ("几点开始的，痛到哪里?").
TOGETHER_RATIO = 0.8

K1 = 1.2
B = 0.75

# Function words that every question shares; they carry no topic.
_STOP = frozenset(
    (
        "的 了 吗 呢 吧 啊 呀 么 嘛 是 有 没 没有 有没有 你 您 我 他 她 什么 怎么 怎么样 怎样 "
        "多少 哪 哪里 哪儿 一下 一些 这个 那个 现在 平时 过 会 能 在 就 都 还 也 请问 请 "
        "情况 问题 觉得 感觉 一点 一般 是不是 是否 有无 和 与 或 及 ? ？ , ， . 。 ! ！ 、 "
        "do you have any your the a an is are was were of to in for what how when did"
    ).split()
)
_CLAUSE = re.compile(r"[？?。！!；;，,]|还有|另外|以及")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_WORD = re.compile(r"[\u4e00-\u9fff]+|[a-zA-Z]+|\d+(?:\.\d+)?")


def tokenize(text: str) -> list[str]:
    """Topic-bearing tokens of `text`: jieba words, minus function words, plus CJK bigrams."""
    text = text.lower()
    tokens = [
        w
        for w in jieba.lcut_for_search(text)
        if w.strip() and w not in _STOP and _WORD.fullmatch(w)
    ]
    for run in _CJK_RUN.findall(text):
        tokens += [run[i : i + 2] for i in range(len(run) - 1) if run[i : i + 2] not in _STOP]
    return tokens


class Match(msgspec.Struct, frozen=True):
    fact_id: str
    score: float  # normalised: 1.0 is as good as the question's terms allow


class QuestionMatcher:
    """BM25 over the example questions of a case's facts. Build once per case."""

    def __init__(self, facts: Sequence[Fact]) -> None:
        self._doc_fact: list[str] = []
        docs: list[list[str]] = []
        for fact in facts:
            for text in (*fact.questions, fact.topic):
                self._doc_fact.append(fact.id)
                docs.append(tokenize(text))
        self._tf = [Counter(d) for d in docs]
        self._len = [len(d) for d in docs]
        self._avg = (sum(self._len) / len(docs)) if docs else 1.0
        df: Counter[str] = Counter()
        for d in docs:
            df.update(set(d))
        n = len(docs)
        self._idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        # A term no document has is as informative as the rarest possible term.
        self._idf_unseen = math.log(1 + (n + 0.5) / 0.5)

    def match(self, question: str, *, limit: int = 3) -> list[Match]:
        """Facts the question asks about, best first; empty when nothing matches.

        A question of several clauses ("抽烟吗？过敏吗？") is matched clause by
        clause as well, so each topic is found. Deterministic; scores in [0, 1].
        """
        best: dict[str, float] = {}
        clauses = [c for c in _CLAUSE.split(question) if c.strip()]
        for part in [question, *clauses] if len(clauses) > 1 else [question]:
            for m in self._match_one(part, limit):
                best[m.fact_id] = max(best.get(m.fact_id, 0.0), m.score)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        return [Match(fid, s) for fid, s in ranked[: max(limit, len(clauses))]]

    def _match_one(self, question: str, limit: int) -> list[Match]:
        terms = list(dict.fromkeys(tokenize(question)))
        if not terms:
            return []
        ceiling = sum(self._idf.get(t, self._idf_unseen) for t in terms)
        best: dict[str, float] = {}
        for i, tf in enumerate(self._tf):
            s = 0.0
            norm = K1 * (1 - B + B * self._len[i] / self._avg)
            for t in terms:
                f = tf.get(t)
                if f:
                    # Saturate at tf=1 so the normalising ceiling is a true upper bound.
                    s += self._idf[t] * min(1.0, f * (K1 + 1) / (f + norm))
            fid = self._doc_fact[i]
            if s > best.get(fid, 0.0):
                best[fid] = s
        if not best:
            return []
        ranked = sorted(
            (Match(fid, s / ceiling) for fid, s in best.items()), key=lambda m: -m.score
        )
        top = ranked[0].score
        if top < UNKNOWN_BELOW:
            return []
        return [m for m in ranked[:limit] if m.score >= max(UNKNOWN_BELOW, top * TOGETHER_RATIO)]
