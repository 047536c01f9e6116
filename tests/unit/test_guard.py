"""The output guard: answer-key terms never reach the contestant in the patient's words."""

from __future__ import annotations

import random
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
from arena.patient import patient_view

CASES = Path(__file__).resolve().parents[2] / "cases"
REAL = {p.stem: load_case(p.read_bytes(), str(p)) for p in sorted(CASES.glob("*.json"))}
STEMI, DKA, APPX = REAL["r8c3vn"], REAL["m2x7hd"], REAL["k4p9wq"]


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
        g = OutputGuard.for_case(case)
        out = stream(g, chunks)
        assert g.leak is not None, (text, chunks)
        assert normalize(g.leak.term) in normalize(text) or g.leak.term == term
        assert normalize(g.leak.term) not in normalize(out)


def test_leak_kinds() -> None:
    g = OutputGuard.for_case(STEMI)
    stream(g, ["下壁心梗"])
    assert g.leak == Leak("下壁心梗", "diagnosis")
    g = OutputGuard.for_case(STEMI)
    stream(g, ["肺栓塞"])
    assert g.leak == Leak("肺栓塞", "differential")
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
            g = OutputGuard.for_case(case)
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
    assert g.holdback == max(len(t.norm) - 1 + t.needs_end_boundary for t in terms)
    rng = random.Random(7)
    # Text made of term prefixes: the worst case for holding back.
    text = "".join(rng.choice(terms).term[: rng.randint(1, 6)] + "，" for _ in range(200))
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
            g = OutputGuard.for_case(case)
            assert stream(g, [text]) == text  # the deflection itself is safe
