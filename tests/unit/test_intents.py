"""The intent taxonomy, its paraphrase bank, and the question classifier."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from arena import intents
from arena.cases import load_case
from arena.intents import (
    INTENT_IDS,
    IntentClassifier,
    bank,
    canonical_subjects,
    parse_bank,
    subjects_in,
)
from arena.matching import QuestionMatcher
from tests.unit.sample import CharEmbed, sample_case

ROOT = Path(__file__).resolve().parents[2]
CASE_FILES = sorted((ROOT / "cases").glob("*.json"))
_NORM = re.compile(r"[\s？?。.！!，,；;…~～、]+")


def norm(text: str) -> str:
    return _NORM.sub("", text).lower()


def test_every_intent_has_at_least_30_paraphrases() -> None:
    counts = Counter(p.intent for p in bank())
    assert set(counts) == INTENT_IDS
    assert min(counts.values()) >= 30, sorted(counts.items(), key=lambda kv: kv[1])[:5]
    assert sum(counts.values()) >= 2000  # thousands in all


def test_the_bank_has_english_and_dialect_paraphrases() -> None:
    rows = bank()
    english = Counter(p.intent for p in rows if re.fullmatch(r"[a-zA-Z ',?]+", p.text))
    assert len(english) >= 40  # nearly every intent can be asked in English
    dialect = [p for p in rows if re.search(r"咋|啥|俺|嘛|莫得|噻|不咯|哪搭|屋头", p.text)]
    assert len(dialect) >= 60


def test_the_bank_copies_no_case_question_and_no_evaluation_question() -> None:
    written = {norm(p.text) for p in bank()}
    copied = set()
    for path in sorted((ROOT / "cases").glob("*.json")):
        for fact in json.loads(path.read_text(encoding="utf-8"))["facts"]:
            copied |= {norm(q) for q in fact.get("questions", [])} & written
    for path in sorted((ROOT / "loadtest" / "eval").glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                copied |= {norm(line.split("\t")[-1]), norm(line.split("\t")[2])
                           if path.stem == "followups" else ""} & written
    assert copied == set()


def test_a_bad_bank_line_is_refused_with_its_number() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_bank("smoking\t抽烟吗\nno_such_intent\t怎么了\n")


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_every_fact_declares_an_intent_of_the_taxonomy(path: Path) -> None:
    case = load_case(path.read_bytes(), str(path))
    undeclared = [f.id for f in case.facts if not f.declared()]
    unknown = [(f.id, x) for f in case.facts for x in f.declared() if x not in INTENT_IDS]
    assert undeclared == [] and unknown == []


def classify(text: str) -> list[str]:
    return [s.intent for s in IntentClassifier().classify(text)]


@pytest.mark.parametrize(
    ("question", "intent"),
    [
        ("你叫啥名儿？", "name"), ("How old are you?", "age"), ("您是做哪一行的", "occupation"),
        ("家里人有没有类似的病？", "family_history"), ("每天都要吃哪些药？", "medications"),
        ("有药物过敏吗", "allergies"), ("什么时候开始的？", "onset"), ("多长时间了？", "duration"),
        ("疼得厉害不厉害", "severity"), ("以前得过什么病", "past_history"),
        ("大便怎么样", "bowel"), ("小便黄不黄", "urination"), ("你最担心的是什么", "concerns"),
        ("有糖尿病吗", "past_history"),  # 糖尿病 names no 小便
    ],
)
def test_questions_map_to_their_intent(question: str, intent: str) -> None:
    assert classify(question)[:1] == [intent]


def test_one_clause_may_ask_two_intents() -> None:
    assert set(classify("抽烟喝酒吗？")) == {"smoking", "alcohol"}


def test_a_question_about_nothing_in_the_history_is_not_read_as_history() -> None:
    # Scores low, or lands in the small-talk class ("other") that no fact answers.
    for q in ("最近看什么电视剧？", "你喜欢下象棋吗", "你喜欢看篮球吗"):
        assert classify(q) in ([], ["other"]), q


def test_subjects_are_found_and_the_question_form_decides_the_intent() -> None:
    assert [c for c, _ in subjects_in("发烧几天了")] == ["发热"]
    assert classify("发烧几天了") == classify("咳嗽几天了") == ["duration"]
    assert classify("有没有发烧") == ["associated"]
    assert classify("头晕不晕？") == ["associated"]
    assert canonical_subjects("呕吐") == frozenset({"恶心呕吐"})
    assert canonical_subjects("腹部包块") == frozenset({"腹痛"})


def test_the_bank_is_embedded_once_per_model_not_per_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intents, "_VECTORS", {})
    embed, again = CharEmbed(), CharEmbed()
    QuestionMatcher(sample_case().facts, embed)
    size = len(bank())
    assert size in embed.calls  # the bank, in one batch
    QuestionMatcher(sample_case().facts, again)  # another case, or the server's per-case wrapper
    assert size not in again.calls  # same vectors for the probe: the bank is not embedded again
