"""The question matcher: intents and subjects against a case, follow-ups, no credit for silence.

Floors on the evaluation set (BM25 alone) sit a little under docs/scripted-eval.md's
figures; the embedded matcher is measured by `python -m loadtest.scripted_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from arena.cases import Fact, load_case
from arena.matching import (
    QuestionMatcher,
    expand,
    follow_up,
    time_clause,
    time_sentences,
    tokenize,
)
from loadtest.scripted_eval import (
    evaluate,
    load_followups,
    load_items,
    load_labelled,
    load_split,
    patients_for,
)
from tests.unit.sample import CharEmbed, sample_case, sample_dict

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "cases"
EVAL_CASES = CASES  # the evaluation cases are in the library, listed by the splits

# The sample case's facts, with the intents and subjects a current case declares.
INTENTS: dict[str, tuple[list[str], str]] = {
    "onset": (["onset", "duration"], "胸痛"), "location": (["site"], "胸痛"),
    "character": (["character"], "胸痛"), "radiation": (["radiation"], "胸痛"),
    "sweating": (["associated"], "出汗"), "fever": (["associated"], "发热"),
    "hemoptysis": (["associated"], "咯血"), "htn": (["past_history"], ""),
    "meds": (["medications"], ""), "allergy": (["allergies"], ""),
    "smoking": (["smoking"], ""), "family": (["family_history"], ""),
}


def annotated(drop: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """The sample case as a dict, facts annotated, some dropped, top-level fields added."""
    d = sample_dict()
    facts = []
    for f in d["facts"]:
        if f["id"] in drop:
            continue
        intents, subject = INTENTS[f["id"]]
        f = {**f, "intent": intents[0], "intents": intents[1:], "subject": subject}
        facts.append(f)
    d["facts"] = facts
    for item in d["answer_key"]["checklist"]:
        item["facts"] = [x for x in item["facts"] if x not in drop]
        if not item["facts"] and not item["orders"]:
            item["orders"] = ["ecg"]
    d.update(extra)
    return d


def matcher_for(d: dict[str, Any], embed: Any = None) -> QuestionMatcher:
    return QuestionMatcher(load_case(msgspec.json.encode(d), "test").facts, embed)


def ids(matcher: QuestionMatcher, question: str, topic: Sequence[str] = ()) -> list[str]:
    return [m.fact_id for m in matcher.match(question, topic=topic)]


def test_tokens_drop_grammar_bigrams() -> None:
    tokens = tokenize("出冷汗了吗？")
    assert "冷汗" in tokens
    assert not [t for t in tokens if "了" in t or "吗" in t]


def test_shorthand_is_glossed_only_where_it_stands_alone() -> None:
    assert "末次月经" in expand("LMP？")
    assert "抽烟" in expand("烟酒史？") and "喝酒" in expand("烟酒史？")
    assert expand("vomiting?") == "vomiting?"  # "mi" inside a word is not myocardial infarction


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("还有呢？", "more"), ("还有别的吗", "more"), ("然后呢？", "more"), ("后来呢", "more"),
        ("多久了？", "when"), ("什么时候开始的？", "when"), ("一天几次？", "when"),
        ("那喝酒呢？", "contrast"), ("那晚上呢？", "contrast"), ("小便呢", "contrast"),
        ("抽烟吗？", None), ("胸口痛多久了，还出汗吗？", None),
    ],
)
def test_follow_ups_are_recognised(question: str, kind: str | None) -> None:
    fu = follow_up(question)
    assert (fu[0] if fu else None) == kind


def test_time_clauses_keep_only_when_or_how_long() -> None:
    answer = "昨天下午四点多在公司开始疼的，到现在差不多二十个小时了。一开始我没太当回事。"
    assert time_clause(answer, "duration") == "到现在差不多二十个小时了。"
    assert time_clause(answer, "onset").startswith("昨天下午四点多")
    assert time_clause("就是胸口正当中，说不上是哪一个点。", "duration") == ""
    assert time_sentences("恶心，昨晚九点多吐过一次。没有血。") == "恶心，昨晚九点多吐过一次。"


def test_questions_about_nothing_the_case_or_the_taxonomy_has_match_nothing() -> None:
    matcher = QuestionMatcher(sample_case().facts)
    for q in ("你家养猫吗？", "最近看什么电视剧？", "你喜欢什么运动？"):
        assert matcher.match(q) == [], q


def test_facts_answer_by_intent_without_example_questions() -> None:
    d = annotated()
    for f in d["facts"]:
        f["questions"] = []
    matcher = matcher_for(d)
    assert ids(matcher, "平常都在吃些什么药？") == ["meds"]
    assert ids(matcher, "家里人身体都好吗") == ["family"]
    assert ids(matcher, "烟瘾大不大") == ["smoking"]
    assert ids(matcher, "打针吃药有没有过敏过") == ["allergy"]


def test_a_silent_topic_matches_no_fact_so_scoring_credits_nothing() -> None:
    matcher = matcher_for(annotated(drop=["family", "meds"]))
    assert ids(matcher, "家里人有类似的病吗？") == []  # never the patient's own history
    assert ids(matcher, "吃什么药？") == []  # never the allergy fact
    assert ids(matcher, "有没有咳嗽") == []  # a symptom the case does not have


def test_a_named_subject_must_match_the_fact_subject() -> None:
    facts = [
        Fact(id="cough_time", category="hpi", topic="咳嗽时间", intent="duration",
             subject="咳嗽", answer="咳了一个礼拜了。"),
        Fact(id="cough_kind", category="hpi", topic="咳嗽性质", intent="character",
             subject="咳嗽", answer="干咳，没有痰。"),
    ]
    matcher = QuestionMatcher(facts)
    assert ids(matcher, "咳嗽多久了？") == ["cough_time"]
    assert ids(matcher, "发烧多久了？") == []  # asked 发热: the cough's duration is no match


def test_follow_ups_resolve_against_the_previous_topic() -> None:
    matcher = matcher_for(annotated())
    assert ids(matcher, "多久了？", topic=["location"]) == ["onset"]
    assert ids(matcher, "一天几根？", topic=["smoking"]) == ["smoking"]
    assert ids(matcher, "那出汗呢？", topic=["fever"]) == ["sweating"]


def test_two_intents_in_one_clause_are_both_found() -> None:
    matcher = matcher_for(annotated())
    assert set(ids(matcher, "抽烟喝酒吗？")) == {"smoking"}  # no alcohol fact: nothing for it
    assert set(ids(matcher, "抽烟吗？对什么药过敏吗？")) == {"smoking", "allergy"}


def test_embeddings_the_case_once_and_a_question_in_at_most_one_call() -> None:
    embed = CharEmbed()
    matcher = matcher_for(annotated(), embed)
    built = len(embed.calls)
    assert built <= 3  # the model probe, the bank (once per process), the case's documents
    for q in ("胸口痛多久了？", "抽烟吗？对什么药过敏吗？", "你家养猫吗？"):
        before = len(embed.calls)
        matcher.match(q)
        assert len(embed.calls) - before <= 1, q  # clauses BM25 is unsure of, in one call


def test_evaluation_set_floors_bm25_only() -> None:
    paths = sorted(CASES.glob("*.json"))
    cases = {c.id: c for c in (load_case(p.read_bytes(), str(p)) for p in paths)}
    items = load_items(cases=cases)
    assert len(items) >= 300
    rep = evaluate(patients_for(cases, None), items, load_followups(), "bm25")
    # Measured (docs/scripted-eval.md): intent 78 %, fact 74 %, wrong topic 10 %,
    # unknown R 82 %, refusals 100 %, follow-ups 93 %.
    assert rep.rate("intent") >= 0.75, rep.misses
    assert rep.rate("fact") >= 0.70
    assert rep.wrong_topic <= 0.12
    assert rep.rate("unknown") >= 0.75
    assert rep.rate("refusal") >= 0.95
    assert rep.rate("followup") >= 0.85


def test_dev_cases_floors_bm25_only() -> None:
    dev = [i for i in load_split().get("dev", []) if (EVAL_CASES / f"{i}.json").exists()]
    if len(dev) < 10:
        pytest.skip("the dev cases are not in this checkout")
    cases = {i: load_case((EVAL_CASES / f"{i}.json").read_bytes(), i) for i in dev}
    items = [it for i in dev for it in load_labelled(i)]
    rep = evaluate(patients_for(cases, None), items, [], "bm25")
    # Measured (docs/scripted-eval.md): intent 87 %, fact 82 %, wrong topic 5.3 %,
    # unknown P 87 % / R 99 %.
    assert rep.rate("intent") >= 0.84, rep.misses
    assert rep.rate("fact") >= 0.78
    assert rep.wrong_topic <= 0.07
    assert rep.unknown_precision >= 0.83
    assert rep.rate("unknown") >= 0.95
