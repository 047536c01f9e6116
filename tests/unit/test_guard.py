"""The output guard: answer-key terms never reach the contestant in the patient's words."""

from __future__ import annotations

import base64
import codecs
import random
import re
from pathlib import Path

import pytest

from arena.cases import Case, load_case
from arena.guard import (
    DEFLECTION_ZH,
    Leak,
    OutputGuard,
    deflection,
    guard_terms,
    normalize,
    patient_facing_text,
)
from arena.patient import Turn, patient_view

CASES = Path(__file__).resolve().parents[2] / "cases"
REAL = {p.stem: load_case(p.read_bytes(), str(p)) for p in sorted(CASES.glob("*.json"))}
STEMI, DKA, APPX = REAL["r8c3vn"], REAL["m2x7hd"], REAL["k4p9wq"]
TERMS = {case.id: guard_terms(case) for case in REAL.values()}


def guard(case: Case, question: str = "", history: list[Turn] | None = None) -> OutputGuard:
    """`OutputGuard.for_case` with the terms extracted once, as the relay keeps them."""
    return OutputGuard(TERMS[case.id], allowed_text=question, history=history or ())


def stream(guard: OutputGuard, chunks: list[str]) -> str:
    return "".join(guard.feed(c) for c in chunks) + guard.flush()


def chunked(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 4)
        out.append(text[i : i + n])
        i += n
    return out


@pytest.mark.parametrize(
    ("case", "text", "term"),
    [
        (APPX, "医生，我是不是阑尾炎啊？", "阑尾炎"),
        (APPX, "我怕是 阑 尾 炎", "阑尾炎"),
        (APPX, "阑\u200b尾\u200d炎吧", "阑尾炎"),
        (APPX, "maybe a.p.p.e.n.d.i.c.i.t.i.s?", "k4p9wq"),
        (APPX, "ACUTE Appendicitis", "Acute appendicitis"),
        (APPX, "是宫外孕吗", "宫外孕"),
        (APPX, "Is it PID?", "PID"),
        (DKA, "会不会是ＤＫＡ", "DKA"),
        (DKA, "我是酮症酸中毒？", "酮症酸中毒"),
        (DKA, "血糖 28.4 mmol/L", "28.4 mmol/L"),
        (DKA, "血糖28.4", "28.4 mmol/L"),  # held for the unit, the label completes it
        (DKA, "我的 pH 7.18 呢", "pH 7.18"),
        (STEMI, "我这是STEMI吧", "STEMI"),
        (STEMI, "st-elevation myocardial infarction?", "ST-elevation myocardial infarction"),
        (STEMI, "ST段抬高了吗", "ST段抬高"),
        (STEMI, "心 肌 梗 死", "心肌梗死"),
        (STEMI, "肌钙蛋白hs-cTnI 0.86", "hs-cTnI 0.86"),
        (STEMI, "是不是主动脉夹层", "主动脉夹层"),
    ],
)
def test_leaks_are_caught_whole_and_one_char_at_a_time(case: Case, text: str, term: str) -> None:
    for chunks in ([text], list(text)):
        g = guard(case)
        out = stream(g, chunks)
        assert g.leak is not None, (text, chunks)
        assert normalize(g.leak.term) in normalize(text) or g.leak.term == term
        assert normalize(g.leak.term) not in normalize(out)


def test_leak_kinds() -> None:
    g = OutputGuard.for_case(STEMI)
    stream(g, ["下壁心梗"])
    assert g.leak == Leak("下壁心梗", "diagnosis", "text")
    g = OutputGuard.for_case(STEMI)
    stream(g, ["肺栓塞"])
    assert g.leak == Leak("肺栓塞", "differential", "text")
    g = OutputGuard.for_case(DKA)
    stream(g, ["HbA1c 10.8"])
    assert g.leak is not None and g.leak.kind == "result"


@pytest.mark.parametrize("seed", range(20))
def test_random_chunk_boundaries(seed: int) -> None:
    rng = random.Random(seed)
    case = rng.choice(list(REAL.values()))
    terms = guard_terms(case)
    term = rng.choice(terms)
    text = "医生，我跟您说，" + term.term + "，就这些。"
    g = OutputGuard(terms)
    out = stream(g, chunked(text, rng))
    assert g.leak is not None
    assert normalize(term.term) not in normalize(out)
    assert g.feed("还有") == "" and g.flush() == ""  # "" forever after a hit


@pytest.mark.parametrize("case", REAL.values(), ids=lambda c: c.id)
def test_patient_facing_text_passes_verbatim(case: Case) -> None:
    rng = random.Random(case.id)
    texts = [case.opening.statement, *(f.answer for f in case.facts)]
    for text in texts:
        for chunks in ([text], list(text), chunked(text, rng)):
            g = guard(case)
            assert stream(g, chunks) == text
            assert g.leak is None
    assert all(t.norm not in normalize(patient_facing_text(case)) for t in guard_terms(case))


def test_terms_are_specific() -> None:
    for case in REAL.values():
        for t in guard_terms(case):
            assert len(t.norm) >= 2
            assert t.norm not in {"心", "痛", "疼", "血糖", "st", "ct"}
    assert "DKA" in [t.term for t in guard_terms(DKA)]
    assert "STEMI" in [t.term for t in guard_terms(STEMI)]


def test_no_false_positives_on_ordinary_words() -> None:
    g = OutputGuard.for_case(APPX)
    text = "It happened so rapid. 我心里怕，肚子痛，吃了点药。"
    assert stream(g, list(text)) == text and g.leak is None
    g = OutputGuard.for_case(STEMI)
    text = "我这 STEMIs 的事儿不懂，胸口疼，心里慌"  # an abbreviation run on into a word
    assert stream(g, [text]) == text and g.leak is None


def test_a_differential_in_the_doctors_question_may_be_echoed() -> None:
    g = OutputGuard.for_case(STEMI, question="以前得过主动脉夹层吗？")
    assert stream(g, list("没有，没得过主动脉夹层。")) == "没有，没得过主动脉夹层。"
    assert g.leak is None


def test_a_guessed_diagnosis_is_never_confirmed_by_echoing_it() -> None:
    g = OutputGuard.for_case(APPX, question="是不是急性阑尾炎？")
    assert "阑尾炎" not in stream(g, list("对，之前的医生就说是急性阑尾炎。"))
    assert g.leak is not None and g.leak.kind == "diagnosis"


def test_a_time_in_seconds_is_a_locked_value() -> None:
    g = OutputGuard.for_case(STEMI)
    stream(g, list("护士说我那个再充盈时间约2.5秒。"))
    assert g.leak is not None and g.leak.kind == "result"


@pytest.mark.parametrize("case", REAL.values(), ids=lambda c: c.id)
def test_holdback_bound(case: Case) -> None:
    terms = guard_terms(case)
    g = OutputGuard(terms)
    assert g.holdback == max(len(t.norm) - 1 + t.end_boundary for t in terms)
    rng = random.Random(7)
    # Text made of term prefixes: the worst case for holding back. (Spaces, not commas:
    # an acrostic is held by the clause, not bounded by `holdback`.)
    text = "".join(rng.choice(terms).term[: rng.randint(1, 6)] + " " for _ in range(200))
    fed = released = ""
    for chunk in chunked(text, rng):
        fed += chunk
        released += g.feed(chunk)
        if g.leak is not None:
            break
        held = fed[len(released) :]
        assert fed.startswith(released)
        assert len(normalize(held)) <= g.holdback


def test_text_that_starts_no_term_is_released_at_once() -> None:
    g = OutputGuard.for_case(APPX)
    assert g.feed("我肚子") == "我肚子"
    assert g.feed("疼。") == "疼。"
    assert g.feed("阑") == ""  # could begin 阑尾炎
    assert g.feed("珊") == "阑珊"  # it did not
    assert g.feed("宫外") == ""
    assert g.flush() == "宫外"
    assert g.leak is None


def test_deflection_is_in_character_and_deterministic() -> None:
    view = patient_view(APPX)
    line = deflection(view, 3)
    assert line == deflection(view.persona, 3)
    assert deflection(view, 0) in {deflection(view, s) for s in range(10)}
    assert DEFLECTION_ZH in {deflection(view, s) for s in range(50)}
    for case in REAL.values():
        for seed in range(10):
            text = deflection(patient_view(case), seed)
            g = guard(case)
            assert stream(g, [text]) == text  # the deflection itself is safe


# ---------------------------------------------------------------- disguises


def b64(text: str, lead: str = "") -> str:
    return base64.b64encode((lead + text).encode()).decode()


@pytest.mark.parametrize(
    ("case", "text", "form"),
    [
        # everyday names the case file does not list, from the shared terminology
        (APPX, "应该是阑尾发炎了", "text"),
        (APPX, "小时候叫盲肠炎", "text"),
        (STEMI, "是心肌梗塞吧", "text"),
        (STEMI, "a heart attack?", "text"),
        (DKA, "糖尿病酮症吧", "text"),
        (DKA, "酮酸中毒", "text"),
        # traditional characters, full width, look-alikes, digits for letters
        (APPX, "是闌尾炎嗎", "text"),
        (STEMI, "心肌梗塞（繁體：心肌梗塞）", "text"),
        (APPX, "Ａｐｐｅｎｄｉｃｉｔｉｓ", "text"),
        (APPX, "\u0430ppendicitis", "text"),  # Cyrillic a
        (APPX, "app\u0435ndiciti\u0455", "text"),  # Cyrillic e and s
        (DKA, "\u0394\u039a\u0391 no: D\u039a\u0391", "text"),  # Greek Kappa, Alpha
        (APPX, "4pp3nd1c1t1s", "text"),
        (APPX, "@ppendicitis", "text"),
        (DKA, "𝐃𝐊𝐀", "text"),
        # separators and markup between the characters
        (APPX, "阑" + "，" * 30 + "尾……——炎", "text"),
        (APPX, "阑<b>尾</b>炎", "text"),
        (APPX, '<span style="color:red">阑</span><span>尾</span>炎', "text"),
        (APPX, "**阑**尾**炎**", "text"),
        (APPX, "阑&nbsp;尾&#8203;炎", "text"),
        (APPX, "a<i>p</i>pendicitis", "text"),
        # pinyin and initials
        (APPX, "lan wei yan", "pinyin"),
        (APPX, "Lán Wěi Yán", "pinyin"),
        (APPX, "lan2-wei3-yan2", "pinyin"),
        (STEMI, "xin ji geng sai", "pinyin"),
        (STEMI, "xinjigengsi", "pinyin"),
        (APPX, "拼音首字母是 J.X.L.W.Y", "initials"),
        (DKA, "TZSZD", "initials"),
        # reversed, ROT13, base64 (at every byte alignment, inside a longer encoded text)
        (APPX, "炎尾阑", "reversed"),
        (APPX, "sitic idne ppa", "reversed"),
        (APPX, codecs.encode("appendicitis", "rot13"), "rot13"),
        (APPX, b64("阑尾炎"), "base64"),
        (APPX, b64("阑尾炎", "诊断："), "base64"),
        (APPX, b64("阑尾炎", "是"), "base64"),
        (APPX, b64("阑尾炎", "就是"), "base64"),
        (APPX, b64("Appendicitis"), "base64"),
        (STEMI, "base64：" + b64("心肌梗死", "x"), "base64"),
        # acrostics: first characters of lines or of clauses
        (APPX, "阑珊灯火处\n尾随而来\n炎夏已过", "acrostic"),
        (APPX, "1. 阑珊\n2. 尾声\n3. 炎热", "acrostic"),
        (STEMI, "心里发慌，肌肉酸痛，梗着脖子，死沉死沉的。", "acrostic"),
        (DKA, "Dizzy all day\nKind of sick\nAching belly", "acrostic"),
        # locked findings in words, not numbers
        (APPX, "B超上说阑尾增粗", "text"),
        (APPX, "CT说管壁增厚了", "text"),
        (APPX, "里面有粪石", "text"),
        (STEMI, "心电图ST段抬高了", "text"),
        (STEMI, "they said ST elevation", "text"),
        (STEMI, "下壁运动减弱", "text"),
    ],
)
def test_disguised_leaks_are_caught(case: Case, text: str, form: str) -> None:
    for chunks in ([text], list(text)):
        g = guard(case)
        stream(g, chunks)
        assert g.leak is not None, (text, chunks)
        assert g.leak.form == form, (text, g.leak)


@pytest.mark.parametrize("case", REAL.values(), ids=lambda c: c.id)
def test_every_form_of_every_term_is_caught_split_anywhere(case: Case) -> None:
    rng = random.Random(case.id)
    for t in TERMS[case.id]:
        # the normalised form is what a model would write, spelled out
        text = "好的：" + t.norm + "。" if not t.start_boundary else "好的: " + t.norm + " 。"
        g = guard(case)
        out = stream(g, chunked(text, rng))
        assert g.leak is not None, t
        assert t.norm not in normalize(out)


def test_short_initials_and_bare_words_are_not_terms() -> None:
    norms = {t.norm for t in guard_terms(APPX)}
    assert "lwy" not in norms  # three initials are noise
    assert "jxlwy" in norms  # five are not
    g = guard(APPX)
    text = "lwy 我也不知道，反正是右下腹疼，阑珊的灯光，尾巴骨也疼。"
    assert stream(g, list(text)) == text and g.leak is None


# ---------------------------------------------------------------- across turns


def turns(*pairs: tuple[str, str]) -> list[Turn]:
    return [Turn(q, a) for q, a in pairs]


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("是不是阑尾炎？", "对，是。"),
        ("是不是阑尾炎？", "嗯嗯"),
        ("我觉得是急性阑尾炎，对吗？", "没错！"),
        ("Is it appendicitis?", "Yes, exactly."),
        ("Is it appendicitis?", "you got it"),
        ("是阑尾发炎吧？", "你猜对了，我就不多说了"),
        ("lan wei yan?", "yes"),
    ],
)
def test_a_bare_yes_to_a_named_diagnosis_is_a_leak(question: str, answer: str) -> None:
    for chunks in ([answer], list(answer)):
        g = guard(APPX, question)
        out = stream(g, chunks)
        assert not re.search(r"对|是|没错|猜|yes|got", out, re.IGNORECASE), out
        assert g.leak is not None and g.leak.form == "confirmation"
        assert g.leak.kind == "diagnosis"


def test_a_yes_to_a_named_result_is_a_leak_and_a_follow_up_carries_the_question() -> None:
    g = guard(DKA, "你的血糖28.4吗？")
    assert stream(g, list("对的。")) == "" and g.leak is not None
    assert g.leak.kind == "result"
    history = turns(("是不是阑尾炎？", "这个我可说不上来，您是医生，您给看看吧。"))
    g = guard(APPX, "就回答是不是？", history)
    assert stream(g, list("是。")) == "" and g.leak is not None


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("是不是阑尾炎？", "我也不知道啊，您是医生。"),
        ("以前得过阑尾炎吗？", "没有，以前没得过什么病。"),
        ("发烧吗？", "是的，有点发烧。"),
        ("疼得厉害吗？", "对，疼得厉害。"),
        ("是不是宫外孕？", "对，是。"),  # a differential: a yes tells nothing true
        ("Do you have a fever?", "Yes, a little."),
    ],
)
def test_an_honest_answer_to_a_named_diagnosis_or_any_yes_passes(
    question: str, answer: str
) -> None:
    history = turns(("你哪里不舒服？", "肚子疼。"))
    g = guard(APPX, question, history)
    assert stream(g, list(answer)) == answer and g.leak is None


def test_a_term_spelled_over_several_turns_is_caught_in_the_turn_that_completes_it() -> None:
    for pieces in (("阑", "尾", "炎"), ("阑。", "尾……", "炎！"), ("ap", "pendi", "citis")):
        history = turns(*((f"第{i + 1}个字？", p) for i, p in enumerate(pieces[:-1])))
        g = guard(APPX, "最后一个？", history)
        assert stream(g, list(pieces[-1])) == "", pieces
        assert g.leak is not None
    history = turns(("q1", "阑珊灯火。"), ("q2", "尾随其后。"))  # an acrostic over answers
    g = guard(APPX, "q3", history)
    assert stream(g, list("炎热得很。")) == "" and g.leak is not None


def test_history_does_not_make_honest_answers_leak() -> None:
    for case in REAL.values():
        answers = [f.answer for f in case.facts]
        for i, text in enumerate(answers):
            history = turns(*(("问题", a) for a in answers[max(0, i - 6):i]))
            g = guard(case, "还有呢？", history)
            assert stream(g, list(text)) == text, (case.id, text, g.leak)


def test_an_echoed_differential_from_an_earlier_turn_is_no_leak_later() -> None:
    history = turns(("以前得过主动脉夹层吗？", "没有，没得过主动脉夹层。"))
    g = guard(STEMI, "抽烟吗？", history)
    assert stream(g, list("不抽烟。")) == "不抽烟。" and g.leak is None


# ---------------------------------------------------------------- hold-back


def test_honest_answers_are_held_back_little() -> None:
    held: list[int] = []
    for case in REAL.values():
        for f in case.facts:
            g = guard(case)
            fed = released = ""
            for ch in f.answer:
                fed += ch
                released += g.feed(ch)
                held.append(len(normalize(fed[len(released):])))
    held.sort()
    assert held[len(held) // 2] == 0
    assert held[int(len(held) * 0.99)] <= 2, held[-20:]


def test_a_new_short_question_after_a_guess_may_be_answered_yes() -> None:
    history = turns(("是不是阑尾炎？", "这个我可说不上来，您是医生，您给看看吧。"))
    for question in ("那个地方疼吗？", "Right side?", "发烧吗？"):
        g = guard(APPX, question, history)
        assert stream(g, list("是的，很疼。")) == "是的，很疼。", question
