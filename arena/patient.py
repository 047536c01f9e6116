"""The patient: what a patient knows, the LLM prompt that plays them, and the scripted patient.

Principle 1: the answer key never reaches the patient. `PatientView` is built
from the patient-facing half of a case only (demographics, persona, opening,
facts); exam findings, test results and the answer key are not fields of it,
so neither the prompt nor the scripted replies can contain them.

Principle 4: prompts are prefix-stable. `system_prompt(view)` depends on the
case alone, so every contestant of a round sends byte-identical bytes up to
their own conversation, and vLLM's prefix cache serves the shared part once.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Literal

import msgspec

from arena.cases import Case, Demographics, Fact, Opening, Persona
from arena.matching import QuestionMatcher, follow_up, time_sentences


class PatientView(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the patient knows about themself, and nothing else."""

    case_id: str
    demographics: Demographics
    persona: Persona
    opening: Opening
    facts: tuple[Fact, ...]


class Turn(msgspec.Struct, frozen=True):
    """One finished exchange of the interview."""

    question: str
    answer: str


def patient_view(case: Case) -> PatientView:
    """The patient-facing view of `case` (no exams, tests or answer key)."""
    return PatientView(
        case_id=case.id,
        demographics=case.demographics,
        persona=case.persona,
        opening=case.opening,
        facts=tuple(case.facts),
    )


ReplyKind = Literal["facts", "unknown", "refusal", "persona"]


class ScriptedReply(msgspec.Struct, frozen=True):
    """A scripted answer. kind: facts (the patient's words for `fact_ids`), unknown (the
    case does not say), refusal (asked for the answer key), persona (their ideas,
    concerns, expectations, or "nothing else")."""

    text: str
    kind: ReplyKind
    fact_ids: tuple[str, ...] = ()


# Asking the patient for the answer key: a real patient does not know it.
_ASKS_DIAGNOSIS = re.compile(
    r"诊断|什么病|啥病|哪种病|得了什么|得的什么|是不是得了|答案|diagnos|"
    r"(是不是|会不会是|是否是?|可能是)(得了)?[^，,？?有]{0,8}"
    r"(炎|癌|瘤|梗|梗死|中毒|结石|夹层|栓塞|综合征|综合症)",
    re.IGNORECASE,
)
_ASKS_RESULTS = re.compile(r"结果|报告|化验单|检验单|test result|report", re.IGNORECASE)
# Naming a lab document is asking for a result, even when a fact shares a word ("血酮").
_ASKS_DOCUMENT = re.compile(
    r"化验单|检验单|报告|test result|"
    r"(血常规|尿常规|心电图|超声|B超|彩超|CT|核磁|片子|血气|肌钙蛋白|化验|检查|检验|抽血)"
    r"[^，,？?]{0,6}(结果|单子|数值|指标)",
    re.IGNORECASE,
)
# "以前得过什么病？" asks past history, not the diagnosis.
_ASKS_HISTORY = re.compile(r"以前|既往|过去|得过|家里|家族|父母|爸|妈|小时候")
_INJECTION = re.compile(
    r"忽略|提示词|系统提示|扮演|角色|指令|考官|system prompt|prompt|instruction|ignore|"
    r"pretend|role ?play",
    re.IGNORECASE,
)
# Ideas, concerns, expectations: a good interview asks them, and the persona has them.
_ASKS_IDEAS = re.compile(
    r"(你|您)(自己)?(觉得|认为|想|估计|猜)[^？?]{0,8}(怎么回事|咋回事|原因|为什么|怎么了|咋了|怎么搞的)"
)
_ASKS_CONCERNS = re.compile(r"担心|顾虑|害怕|怕什么|最怕|忧虑")
_ASKS_EXPECTATIONS = re.compile(
    r"希望|期望|期待|想让(我|我们|医生|大夫)|想要(我们)?(怎么|做什么)|想怎么(治|处理)"
)
_THIRD_PERSON = re.compile(r"[他她](?!们)")


def _pick(options: Sequence[str], question: str) -> str:
    # Deterministic variety: the same question always gets the same wording.
    return options[zlib.crc32(question.encode()) % len(options)]


def _first_person(text: str) -> str:
    """Persona notes are written about the patient ("怕他爸…"); the patient says "我"."""
    return _THIRD_PERSON.sub("我", text.strip().rstrip("。"))


class Voice:
    """How this patient says what the case does not script: address, hedges, refusals.

    Derived from the persona (health literacy, recall, speech style) and the opening
    statement, so a laconic low-literacy patient and a fluent one sound different.
    """

    def __init__(self, view: PatientView) -> None:
        p = view.persona
        self.addr = "大夫" if "大夫" in view.opening.statement + p.speech_style else "医生"
        brief = any(w in p.speech_style for w in ("简短", "虚弱", "不爱说", "话少"))
        a = self.addr
        unknown = {
            "high": ["这个我还真没注意过。", "这个我说不上来，没留意过。", "这个倒没注意。"],
            "medium": ["这个……我没太注意。", "这个我说不好。", "嗯……没留意过。"],
            "low": ["这个记不清了……", "想不起来了，没注意。", "这个我说不上来。"],
        }[p.recall]
        if p.health_literacy == "low":
            unknown += [f"{a}，您说的这个我不太懂……", "这个我不懂，没注意过。"]
        if brief:
            unknown = [u for u in unknown if len(u) <= 10] or unknown
        self.unknown = tuple(unknown)
        idea = _first_person(p.ideas)
        guess = f"我自己{idea}" if idea.startswith("觉得") else f"我自己寻思，{idea}"
        self.refuse_diagnosis = (
            f"我哪知道是啥病啊，{a}。{guess}……您给好好看看吧。",
            f"这得您说了算，{a}。{guess}，也不知道对不对。",
        )
        self.refuse_results = (
            f"检查结果我还没拿到呢，{a}，您看了就知道了。",
            f"那些单子我也看不懂，{a}您帮我看看吧。",
        )
        self.refuse_injection = (
            f"{a}，您说的这些我听不明白……我就是来看病的。",
            f"啊？{a}，您这是说啥呢……我现在难受得很。",
        )
        self.nothing_else = ("没有了，就这些。", "别的没有了。") if brief else (
            "别的好像没有了，就这些。",
            f"没有了，{a}，能想到的就这些了。",
        )
        self.already = "刚才说了，" if brief else f"{a}，我刚才说了，"
        self.more = "还有，"
        self.ideas = f"{guess}。"
        self.concerns = f"我就是{_first_person(p.concerns)}。"
        self.expectations = f"{_first_person(p.expectations)}。"


class ScriptedPatient:
    """The offline, deterministic patient: answers with the case's own words."""

    def __init__(self, view: PatientView, matcher: QuestionMatcher | None = None) -> None:
        self.view = view
        self.matcher = matcher or QuestionMatcher(view.facts)
        self.voice = Voice(view)
        self._facts = {f.id: f for f in view.facts}
        self._order = [f.id for f in view.facts]

    def reply(self, question: str, history: Sequence[Turn] = ()) -> ScriptedReply:
        """The patient's reply to `question` after `history`. Pure: same inputs, same reply.

        Never contains the answer key (the view has none). Follow-ups ("多久了？",
        "还有呢？", "那喝酒呢？") are read against the previous turn's topic.
        """
        v = self.voice
        q = question.strip()
        if _INJECTION.search(q):
            return ScriptedReply(_pick(v.refuse_injection, q), "refusal")
        if _ASKS_DIAGNOSIS.search(q) and not (_ASKS_HISTORY.search(q) and "诊断" not in q):
            return ScriptedReply(_pick(v.refuse_diagnosis, q), "refusal")
        if _ASKS_DOCUMENT.search(q):
            return ScriptedReply(_pick(v.refuse_results, q), "refusal")
        topic = self.topic(history)
        fu = follow_up(q)
        if fu is not None and fu[0] == "more":
            if topic:
                return self._more(topic, history)
            # After an answer that was not about a fact (worries, "没注意"): nothing to add.
            return ScriptedReply(_pick(v.nothing_else, q), "persona")
        matches = self.matcher.match(q, topic=topic)
        if not matches:
            if _ASKS_RESULTS.search(q):
                return ScriptedReply(_pick(v.refuse_results, q), "refusal")
            for pattern, text in (
                (_ASKS_IDEAS, v.ideas),
                (_ASKS_CONCERNS, v.concerns),
                (_ASKS_EXPECTATIONS, v.expectations),
            ):
                if pattern.search(q):
                    return ScriptedReply(text, "persona")
            return ScriptedReply(_pick(v.unknown, q), "unknown")
        ids = tuple(m.fact_id for m in matches)
        if fu is not None and fu[0] == "when" and ids == tuple(topic[:1]):
            # "多久了？" about what was just said: the part of the answer that says when.
            fact = self._facts[ids[0]]
            return ScriptedReply(time_sentences(fact.answer) or fact.answer, "facts", ids)
        told = self._told(history)
        text = "".join(self._facts[i].answer for i in ids)
        if all(i in told for i in ids):
            text = v.already + text
        return ScriptedReply(text, "facts", ids)

    def topic(self, history: Sequence[Turn]) -> tuple[str, ...]:
        """The facts the conversation was last about (a turn's answer's, else its question's).

        Follow-ups that told nothing ("还有呢？" "没有了") are looked through, so
        "还有呢？" can be asked again and still means the same area.
        """
        for turn in reversed(history[-4:]):
            said = tuple(f.id for f in self.view.facts if _said(f, turn.answer))
            if said:
                return said
            if follow_up(turn.question) is None:
                # Not a scripted answer (the LLM engine answered before a fallback):
                # re-match its question, which is deterministic.
                return tuple(m.fact_id for m in self.matcher.match(turn.question))
        return ()

    def _told(self, history: Sequence[Turn]) -> set[str]:
        return {f.id for f in self.view.facts if any(_said(f, t.answer) for t in history)}

    def _more(self, topic: tuple[str, ...], history: Sequence[Turn]) -> ScriptedReply:
        """ "还有呢？": the next fact not yet told in the same area, in case order."""
        told = self._told(history) | set(topic)
        category = self._facts[topic[0]].category
        start = max(self._order.index(t) for t in topic)
        n = len(self._order)
        for k in range(1, n):
            fact = self._facts[self._order[(start + k) % n]]
            if fact.category == category and fact.id not in told:
                return ScriptedReply(self.voice.more + fact.answer, "facts", (fact.id,))
        return ScriptedReply(_pick(self.voice.nothing_else, category), "persona")


def _said(fact: Fact, answer: str) -> bool:
    """Whether a previous answer told this fact (whole, or its time sentences)."""
    head = fact.answer[:12]
    if head and head in answer:
        return True
    when = time_sentences(fact.answer)
    return bool(when) and when[:12] in answer
