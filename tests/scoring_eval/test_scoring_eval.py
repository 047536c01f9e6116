"""The diagnosis-scoring evaluation set (tune, holdout, fresh; see docs/scoring.md).

A wrong answer must never be scored correct, on either part; agreement with the
expected verdicts must stay above a floor set below the figures docs/scoring.md
reports, so a rule change that loses ground fails here.
"""

from __future__ import annotations

import pytest

from loadtest.scoring_eval import PARTS, evaluate, load

FLOOR = {"tune": 0.97, "holdout": 0.95, "fresh": 0.6}


@pytest.mark.parametrize("part", PARTS)
def test_no_false_correct_and_agreement_above_the_floor(part: str) -> None:
    report = evaluate(part)
    assert [(r.key_name, r.answer, r.expected, why) for r, why in report.false_correct] == []
    assert report.agreement >= FLOOR[part], [(r.answer, r.expected, v) for r, v, _ in report.misses]


def test_the_set_is_as_large_and_as_hard_as_issue_10_asks() -> None:
    rows = [r for part in ("tune", "holdout") for r in load(part)]
    assert len(rows) >= 300
    assert len({r.key_name for r in rows}) >= 30
    assert sum(r.expected != "correct" for r in rows) >= len(rows) / 2
    assert len(load("holdout")) >= 100
