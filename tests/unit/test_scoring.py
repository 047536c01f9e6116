from __future__ import annotations

import pytest

from arena.attempt import Question, Submission
from arena.scoring import Weights, judge_diagnosis, normalize, score
from tests.unit.sample import sample_case


@pytest.mark.parametrize(("answer", "verdict"), [
    ("急性下壁心肌梗死", "correct"),
    ("急性 下壁 ST段抬高型 心肌梗死（右冠）", "correct"),
    ("下壁STEMI", "correct"),
    ("I21.1", "correct"),
    ("急性冠脉综合征", "partial"),
    ("ACS", "partial"),
    ("I21.4 心内膜下", "partial"),  # right ICD-10 category, wrong subcategory
    ("下壁心肌梗死", "correct"),  # contains the synonym 心肌梗死
    ("主动脉夹层", "wrong"),
    ("胃炎", "wrong"),
])
def test_diagnosis_rules(answer: str, verdict: str) -> None:
    assert judge_diagnosis(answer, sample_case())[0] == verdict


def test_normalize_folds_width_case_and_punctuation() -> None:
    assert normalize("ＳＴＥＭＩ （下壁）") == normalize("stemi下壁")


def q(turn: int, *facts: str) -> Question:
    return Question(turn=turn, text=f"问题{turn}", fact_ids=facts, at=float(turn))


def test_full_marks_for_a_complete_work_up() -> None:
    case = sample_case()
    facts = [f.id for f in case.facts]
    card = score(case, [q(i + 1, f) for i, f in enumerate(facts)], ["ecg", "troponin"],
                 Submission(diagnosis="急性下壁心肌梗死", differentials=("主动脉夹层", "肺栓塞",
                                                                     "急性心包炎")))
    assert card.total == card.max_total == 100
    assert card.verdict == "correct"
    assert card.cost_yuan == 150


def test_each_point_is_explained() -> None:
    case = sample_case()
    card = score(case, [q(1, "onset"), q(2, "smoking")], ["ecg", "head_ct"],
                 Submission(diagnosis="急性冠脉综合征", differentials=("肺栓塞",)))
    sections = {s.key: s for s in card.sections}
    assert sections["diagnosis"].points == 20  # half of 40 for a partial answer
    assert sections["differentials"].points == pytest.approx(5)
    checklist = {line.label: line for line in sections["checklist"].lines}
    assert checklist["询问起病时间"].met and checklist["询问起病时间"].note == "第1问：问题1"
    assert not checklist["询问疼痛部位"].met
    assert checklist["做心电图"].met  # met by an order, not a question
    tests = sections["tests"]
    assert [(line.label, line.points) for line in tests.lines] == [
        ("心电图", 2.5), ("肌钙蛋白I", 0.0), ("头颅CT", -1.0)]
    assert tests.points == 1.5
    assert sum(s.points for s in card.sections) == pytest.approx(card.total, abs=0.005)


def test_weights_come_from_the_round_rules() -> None:
    card = score(sample_case(), [], [], Submission(diagnosis="心肌梗死"),
                 Weights(diagnosis=60, differentials=10, checklist=20, red_flags=5, tests=5))
    assert card.max_total == 100 and card.total == 60


def test_scoring_is_deterministic() -> None:
    args = (sample_case(), [q(1, "onset")], ["ecg"], Submission(diagnosis="胃炎"))
    assert score(*args) == score(*args)
