"""The LLM patient's prompt: persona in, answer key out, prefix-stable through summaries."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from arena.cases import Case, load_case
from arena.guard import guard_terms, normalize
from arena.patient import Turn, patient_view
from arena.prompt import (
    SUMMARY_BLOCK,
    approx_tokens,
    build_messages,
    summarize,
    summary_cut,
    system_prompt,
)

CASES = Path(__file__).resolve().parents[2] / "cases"
REAL = [load_case(p.read_bytes(), str(p)) for p in sorted(CASES.glob("*.json"))]
BUDGET = 4000


def interview(case: Case, n: int) -> list[Turn]:
    # Example questions are optional (a fact declares its intents); the topic stands in.
    pairs = [(f.questions[0] if f.questions else f"{f.topic}呢？", f.answer) for f in case.facts]
    return [Turn(*pairs[i % len(pairs)]) for i in range(n)]


@pytest.mark.parametrize("case", REAL, ids=lambda c: c.id)
def test_prompt_has_the_persona_and_facts(case: Case) -> None:
    prompt = system_prompt(patient_view(case))
    p = case.persona
    for field in (p.personality, p.speech_style, p.ideas, p.concerns, p.expectations):
        assert field in prompt
    assert case.opening.appearance in prompt
    for f in case.facts:
        assert f.answer in prompt
        if f.negative:
            assert f"【没有】{f.answer}" in prompt
    for rule in ("一两句话", "不知道", "没注意", "不要说出任何病名或检查结果", "忽略规则"):
        assert rule in prompt


@pytest.mark.parametrize("case", REAL, ids=lambda c: c.id)
def test_prompt_contains_no_answer_key_term(case: Case) -> None:
    prompt = normalize(system_prompt(patient_view(case)))
    leaked = [t.term for t in guard_terms(case) if t.norm in prompt]
    assert leaked == []
    for o in (*case.exams, *case.tests):
        assert o.result not in system_prompt(patient_view(case))


@pytest.mark.parametrize("case", REAL, ids=lambda c: c.id)
def test_prefix_identical_across_contestants_and_questions(case: Case) -> None:
    # Two "contestants" decode the case separately; questions and histories differ.
    a = build_messages(patient_view(case), [], "哪里不舒服？")
    b = build_messages(patient_view(load_case((CASES / f"{case.id}.json").read_bytes())),
                       [Turn("多久了", "两个小时")], "抽烟吗？")
    assert a[:2] == b[:2]
    assert a[0]["content"].encode() == system_prompt(patient_view(case)).encode()
    assert a[1] == {"role": "assistant", "content": case.opening.statement}


def test_no_budget_keeps_todays_shape() -> None:
    view = patient_view(REAL[0])
    history = interview(REAL[0], 50)
    msgs = build_messages(view, history, "还有吗？")
    assert len(msgs) == 2 + 2 * len(history) + 1
    assert msgs[2:4] == [
        {"role": "user", "content": history[0].question},
        {"role": "assistant", "content": history[0].answer},
    ]
    assert msgs[-1] == {"role": "user", "content": "还有吗？"}


@pytest.mark.parametrize("case", REAL, ids=lambda c: c.id)
def test_summaries_keep_the_prefix_and_move_rarely(case: Case) -> None:
    view = patient_view(case)
    history = interview(case, 80)
    cuts = [summary_cut(view, history[:n], budget_tokens=BUDGET) for n in range(81)]
    assert cuts == sorted(cuts)  # never moves back
    moves = [n for n, (a, b) in enumerate(itertools.pairwise(cuts), 1) if a != b]
    whole = sum(approx_tokens(m["content"])
                for m in build_messages(view, history, "下一个问题", budget_tokens=10**9))
    if whole > BUDGET:  # a case of short answers may fit 80 turns whole: nothing to cut
        assert moves
    assert len(moves) <= 80 // 15  # rarely: a move per 15+ turns on average
    assert all(b - a >= 10 for a, b in itertools.pairwise([0, *moves]))
    assert all(c % SUMMARY_BLOCK == 0 for c in cuts)
    for n in range(80):
        now = build_messages(view, history[:n], history[n].question, budget_tokens=BUDGET)
        nxt = build_messages(view, history[: n + 1], "下一个问题", budget_tokens=BUDGET)
        size = sum(approx_tokens(m["content"]) for m in now)
        assert size <= BUDGET
        if n + 1 in moves:
            assert nxt[:2] == now[:2]  # the case prefix always holds
        else:
            assert nxt[: len(now)] == [*now[:-1], now[-1]]  # whole turn, summary included
            assert nxt[len(now)] == {"role": "assistant", "content": history[n].answer}


def test_roles_alternate_with_a_summary() -> None:
    case = REAL[1]
    view = patient_view(case)
    history = interview(case, 70)
    msgs = build_messages(view, history, "还有吗？", budget_tokens=BUDGET)
    cut = summary_cut(view, history, budget_tokens=BUDGET)
    assert cut > 0
    roles = [m["role"] for m in msgs]
    assert roles[:2] == ["system", "assistant"]
    assert all(a != b for a, b in itertools.pairwise(roles[1:]))
    assert msgs[2]["content"].startswith(summarize(history[:cut]).split("\n")[0])
    assert msgs[2]["content"].endswith(history[cut].question)


def test_summary_contains_what_was_said() -> None:
    turns = [Turn("疼了多久了？", "从昨天晚上开始的"), Turn("抽烟吗？", "不抽，从来不抽")]
    text = summarize(turns)
    for t in turns:
        assert t.question in text and t.answer in text
    assert summarize(turns) == text  # deterministic
    long = [Turn(f"问题{i}", "回答" * 30) for i in range(100)]
    capped = summarize(long, max_tokens=300)
    assert approx_tokens(capped) <= 300
    assert "从略" in capped and "问题99" in capped and "问题0 " not in capped


def test_the_cut_ignores_the_question() -> None:
    case = REAL[2]
    view = patient_view(case)
    history = interview(case, 40)
    short = build_messages(view, history, "嗯？", budget_tokens=BUDGET)
    long = build_messages(view, history, "请详细说说" * 30, budget_tokens=BUDGET)
    assert short[:-1] == long[:-1]
