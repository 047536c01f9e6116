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

from arena.cases import Case, Demographics, Fact, Narrator, Opening, Persona
from arena.matching import Asked, QuestionMatcher, follow_up, time_clause, time_sentences


class PatientView(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the patient (or the relative telling their story) knows, and nothing else."""

    case_id: str
    demographics: Demographics
    persona: Persona
    opening: Opening
    facts: tuple[Fact, ...]
    narrator: Narrator | None = None
    defaults: dict[str, str] = {}


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
        narrator=case.narrator,
        defaults=dict(case.defaults),
    )


ReplyKind = Literal["facts", "unknown", "refusal", "persona"]



class ScriptedReply(msgspec.Struct, frozen=True):
    """A scripted answer. kind: facts (the patient's words for `fact_ids`), unknown (the
    case does not say: the asked intent's default, credited to nothing), refusal (asked
    for the answer key), persona (identity, small talk, ideas, concerns, expectations,
    or "nothing else"). `intents`: what the question was read as asking."""

    text: str
    kind: ReplyKind
    fact_ids: tuple[str, ...] = ()
    intents: tuple[str, ...] = ()


# Asking the patient for the answer key: a real patient does not know it.
_ASKS_DIAGNOSIS = re.compile(
    r"诊断|(?<![看有])(什么病|啥病)(?![史人])|哪种病|得了什么|得的什么|是不是得了|答案|diagnos|"
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
_ASKS_HISTORY = re.compile(r"以前|之前|既往|过去|得过|家里|家族|父母|爸|妈|小时候|类似|病人|别的病")
_INJECTION = re.compile(
    r"忽略|提示词|系统提示|扮演|角色|指令|考官|system prompt|prompt|instruction|ignore|"
    r"pretend|role ?play",
    re.IGNORECASE,
)
_THIRD_PERSON = re.compile(r"[他她](?!们)")

# What a patient says when the case is silent on an asked intent: the intent's own
# "no / nothing special", never another topic's fact. {p} is how the speaker names the
# patient (我, or 孩子 / 我爸 in a caregiver's mouth). A case overrides any of them.
DEFAULTS: dict[str, str] = {
    "residence": "{p}就住在本地。",
    "chief_complaint": "",  # the opening statement
    "onset": "具体什么时候开始的，说不太准。",
    "duration": "具体多长时间了，说不太准。",
    "site": "说不好具体哪个位置。",
    "character": "说不上来是什么样的感觉。",
    "radiation": "没觉得往别的地方跑。",
    "severity": "挺难受的，具体几分说不好。",
    "timing": "这个没太注意有什么规律。",
    "course": "跟刚开始差不多吧，没觉得有啥变化。",
    "aggravating": "好像没什么特别让它加重的。",
    "relieving": "也没发现什么能让它好点的。",
    "associated": "别的没什么了。",
    "negatives_general": "别的好像没什么不舒服了。",
    "treatment_so_far": "这次还没看过医生，也没用什么药。",
    "past_history": "{p}以前身体挺好的，没得过什么大病。",
    "surgery": "{p}没做过手术。",
    "trauma": "最近没摔着也没碰着，没受过什么伤。",
    "transfusion": "{p}没输过血。",
    "medications": "{p}平时不吃什么药。",
    "allergies": "没发现{p}对什么过敏。",
    "smoking": "{p}不抽烟。",
    "alcohol": "{p}不喝酒。",
    "diet": "吃饭跟平常一样，没吃什么特别的。",
    "appetite_weight": "胃口还行，体重也没怎么变。",
    "sleep": "睡觉还可以。",
    "bowel": "大便没什么特别的。",
    "urination": "小便没什么特别的。",
    "occupation_exposure": "工作上没接触什么有毒有害的东西。",
    "travel": "最近没出过远门。",
    "contacts": "身边没听说谁有类似的情况，也没接触过什么动物。",
    "sexual_history": "这个……没什么特别的。",
    "menstrual": "月经一直挺正常的。",
    "obstetric": "这方面没什么特别的。",
    "family_history": "家里人身体都还好，没听说有这种病。",
    "vaccination": "该打的疫苗都按时打了。",
    "birth_development": "生的时候挺顺利的，长得也跟别的孩子差不多。",
    "living_situation": "{p}跟家里人一起住。",
}
_CHILD_ONLY = frozenset({"smoking", "alcohol", "sexual_history", "occupation_exposure"})
_FEMALE_ONLY = frozenset({"menstrual", "obstetric"})


def _pick(options: Sequence[str], question: str) -> str:
    # Deterministic variety: the same question always gets the same wording.
    return options[zlib.crc32(question.encode()) % len(options)]


def _first_person(text: str) -> str:
    """Persona notes are written about the speaker ("怕他爸…"); the speaker says "我"."""
    return _THIRD_PERSON.sub("我", text.strip().rstrip("。"))


def _who(view: PatientView) -> str:
    """How the speaker names the patient: 我, or a caregiver's 孩子 / 我爸 / 我爱人."""
    n, d = view.narrator, view.demographics
    if n is None:
        return "我"
    r = n.relation
    if d.age_unit != "years" or d.age < 14 or r in ("母亲", "父亲", "妈妈", "爸爸", "奶奶",
                                                   "爷爷", "外婆", "外公", "姥姥", "姥爷"):
        return "孩子" if d.age_unit == "years" and d.age >= 3 else "我家宝宝"
    if r in ("女儿", "儿子", "儿媳", "女婿"):
        return "我爸" if d.sex == "male" else "我妈"
    if r in ("妻子", "老婆", "爱人", "丈夫", "老公"):
        return "我爱人"
    return "他" if d.sex == "male" else "她"


class Voice:
    """How this speaker says what the case does not script: address, hedges, refusals, defaults.

    Derived from the persona (health literacy, recall, speech style), the opening
    statement and the narrator, so a laconic low-literacy patient, a fluent one and a
    worried mother sound different.
    """

    def __init__(self, view: PatientView) -> None:
        p, d = view.persona, view.demographics
        self.view = view
        self.who = _who(view)
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
            f"啊？{a}，您这是说啥呢……我现在急得很。",
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
        self.child = d.age_unit != "years" or d.age < 14
        self.male = d.sex == "male"
        self.greeting = f"{a}好。"
        if view.narrator is not None:
            whose = "孩子的" if self.child else ("他" if self.male else "她")
            self.greeting = f"{a}好，我是{whose}{view.narrator.relation}。"

    def identity(self, intent: str) -> str:
        """Name, age, job, greeting: from the demographics, in the speaker's words."""
        d, who = self.view.demographics, self.who
        if intent == "greeting":
            return self.greeting
        if intent == "name":
            return f"我叫{d.name}。" if who == "我" else f"{who}叫{d.name}。"
        if intent == "age":
            unit = {"years": "岁", "months": "个月", "days": "天"}[d.age_unit]
            if who == "我":
                return f"我今年{d.age}岁。"
            return f"{who}出生{d.age}天了。" if d.age_unit == "days" else f"{who}{d.age}{unit}了。"
        job = d.occupation.strip()
        if self.child and not job:
            small = d.age_unit != "years" or d.age < 3
            return f"{who}还小，没上学呢。" if small else f"{who}在上学。"
        if not job:
            return "现在没什么正式工作。" if who == "我" else f"{who}现在没什么正式工作。"
        return f"我是{job}。" if who == "我" else f"{who}是{job}。"

    def default(self, intent: str, said: str = "") -> str:
        """The answer when the case has no fact for `intent` (about `said`, if named)."""
        over = self.view.defaults.get(intent)
        if over:
            return over
        who = self.who
        if intent in _FEMALE_ONLY and (self.male or self.child):
            why = "我是男的。" if who == "我" and self.male else f"{who}还小呢。"
            return "这个……不适用吧，" + why
        if intent in _CHILD_ONLY and self.child:
            return f"{who}还这么小，哪有这些。"
        if intent in ("associated", "negatives_general") and said:
            return f"没有{said}。" if who == "我" else f"{who}没有{said}。"
        if intent == "vaccination" and not self.child:
            return "小时候的疫苗应该都打了，具体记不清了。"
        if intent == "birth_development" and not self.child:
            return "小时候的事记不清了，听说生的时候挺顺利的。"
        if intent in ("ideas", "concerns", "expectations"):
            return str(getattr(self, intent))
        text = DEFAULTS.get(intent, "")
        return text.format(p=who) if text else _pick(self.unknown, intent)


class ScriptedPatient:
    """The offline, deterministic patient: answers with the case's own words, by intent."""

    def __init__(self, view: PatientView, matcher: QuestionMatcher | None = None) -> None:
        self.view = view
        self.matcher = matcher or QuestionMatcher(view.facts)
        self.voice = Voice(view)
        self._facts = {f.id: f for f in view.facts}
        self._order = [f.id for f in view.facts]

    def reply(self, question: str, history: Sequence[Turn] = ()) -> ScriptedReply:
        """The patient's reply to `question` after `history`. Pure: same inputs, same reply.

        Never contains the answer key (the view has none). Each intent the question asks
        is answered once: with the case's fact for it (only its time clause, for a time
        question), from the demographics (name, age, job, greeting), or with the intent's
        own default when the case is silent, which names no fact. Follow-ups ("多久了？",
        "还有呢？", "那喝酒呢？") are read against the previous turn.
        """
        v = self.voice
        q = question.strip()
        if _INJECTION.search(q):
            return ScriptedReply(_pick(v.refuse_injection, q), "refusal")
        if _ASKS_DIAGNOSIS.search(q) and not (_ASKS_HISTORY.search(q) and "诊断" not in q):
            return ScriptedReply(_pick(v.refuse_diagnosis, q), "refusal")
        if _ASKS_DOCUMENT.search(q):
            return ScriptedReply(_pick(v.refuse_results, q), "refusal")
        past = self._asked_before(history)
        context = past[-1] if past else []
        fu = follow_up(q)
        if fu is not None and fu[0] == "more" and history:
            return self._more(context, history)
        asked = self.matcher.analyse(q, context)
        if not asked:
            if _ASKS_RESULTS.search(q):
                return ScriptedReply(_pick(v.refuse_results, q), "refusal")
            return ScriptedReply(_pick(v.unknown, q), "unknown")
        told = self._told(history)
        before = {(a.intent, a.subject) for turn in past for a in turn}
        texts: list[str] = []
        ids: list[str] = []
        kinds: set[str] = set()
        for a in asked:
            # A fact that answers two of the asked intents ("抽烟喝酒吗？") is told once.
            if a.facts and all(i in ids for i in a.facts):
                continue
            text, said = self._answer(a, told, (a.intent, a.subject) in before)
            if text and text not in texts:
                texts.append(text)
            ids += [i for i in a.facts if i not in ids]
            kinds.add(said)
        kind: ReplyKind = "facts" if ids else ("unknown" if "unknown" in kinds else "persona")
        return ScriptedReply("".join(texts), kind, tuple(ids), tuple(a.intent for a in asked))

    def _answer(self, a: Asked, told: set[str], asked_before: bool) -> tuple[str, str]:
        v = self.voice
        if a.facts:
            parts = []
            for fid in a.facts:
                fact = self._facts[fid]
                shaped = a.time_only and not fact.negative
                parts.append(time_clause(fact.answer, a.intent) or fact.answer if shaped
                             else fact.answer)
            text = "".join(parts)
            if asked_before and all(i in told for i in a.facts):
                text = v.already + text
            return text, "facts"
        if a.intent == "other":
            return _pick(v.unknown, self.view.case_id + a.intent), "unknown"
        if a.intent in ("greeting", "name", "age", "occupation"):
            return v.identity(a.intent), "persona"
        if a.intent == "chief_complaint":
            return self.view.opening.statement, "persona"
        if a.intent in ("ideas", "concerns", "expectations") and a.intent not in self.view.defaults:
            return getattr(v, a.intent), "persona"
        if a.intent in ("duration", "onset"):
            # The opening statement often says how long ("肚子疼了快一天了").
            when = time_clause(self.view.opening.statement, a.intent)
            if when and not a.subject:
                return when, "unknown"
        return v.default(a.intent, a.said), "unknown"

    def _asked_before(self, history: Sequence[Turn]) -> list[list[Asked]]:
        """What each earlier question asked, read without embeddings (cheap, deterministic),
        each against the turn before it. A turn whose question was a bare "还有呢" keeps
        the topic of the turn before."""
        out: list[list[Asked]] = []
        context: list[Asked] = []
        for turn in history[-8:]:
            fu = follow_up(turn.question)
            if fu is not None and fu[0] == "more":
                told = tuple(f.id for f in self.view.facts if _said(f, turn.answer))
                if told and context:
                    context = [Asked(context[0].intent, 1.0, context[0].subject,
                                     context[0].said, told)]
                out.append(context)
                continue
            context = self.matcher.analyse(turn.question, context, embed=False)
            out.append(context)
        return out

    def topic(self, history: Sequence[Turn]) -> tuple[str, ...]:
        """The facts the conversation was last about (what the last question asked)."""
        past = self._asked_before(history)
        return tuple(i for a in (past[-1] if past else []) for i in a.facts)

    def _told(self, history: Sequence[Turn]) -> set[str]:
        return {f.id for f in self.view.facts if any(_said(f, t.answer) for t in history)}

    def _more(self, context: Sequence[Asked], history: Sequence[Turn]) -> ScriptedReply:
        """ "还有呢？": another untold fact of the same intent (or area), else "nothing else"."""
        told = self._told(history)
        if context:
            a = context[0]
            pool = self.matcher.candidates(a.intent, a.subject) + self.matcher.candidates(a.intent)
            if a.facts:
                category = self._facts[a.facts[0]].category
                start = max(self._order.index(t) for t in a.facts)
                n = len(self._order)
                pool += [self._order[(start + k) % n] for k in range(1, n)
                         if self._facts[self._order[(start + k) % n]].category == category]
            for fid in pool:
                if fid not in told and fid not in a.facts:
                    return ScriptedReply(self.voice.more + self._facts[fid].answer, "facts",
                                         (fid,), (a.intent,))
        return ScriptedReply(_pick(self.voice.nothing_else, history[-1].question if history
                                   else ""), "persona")


def _said(fact: Fact, answer: str) -> bool:
    """Whether a previous answer told this fact (whole, or its time clauses)."""
    head = fact.answer[:12]
    if head and head in answer:
        return True
    for when in (time_sentences(fact.answer), time_clause(fact.answer, "duration"),
                 time_clause(fact.answer, "onset")):
        if when and when.rstrip("。")[:10] in answer:
            return True
    return False
