"""The shared order menu: one menu for every case, the case's results where it has them,
normal results elsewhere, and typed orders read against names and aliases."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from arena.attempt import Attempt
from arena.cases import Case, Orderable, load_case
from arena.catalogue import catalogue
from arena.matching import QuestionMatcher
from arena.scoring import score

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "cases").glob("*.json"))  # the whole library


def _case(stem: str) -> Case:
    path = ROOT / "cases" / f"{stem}.json"
    return load_case(path.read_bytes(), str(path))


def test_the_catalogue_is_unambiguous_and_complete() -> None:
    menu = catalogue()
    assert menu.problems() == []
    assert len(menu.entries) >= 90
    assert all(e.normal.strip() and e.name.strip() for e in menu.entries)
    assert {e.kind for e in menu.entries} == {"exam", "test"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_case_is_played_on_the_shared_menu_alone(path: Path) -> None:
    """No item of a shipped case shows on the menu under its own name: the menu is the
    same for every case, so it says nothing about the diagnosis."""
    case = load_case(path.read_bytes(), str(path))
    assert catalogue().case_problems(case) == []
    assert [i.name for i in catalogue().cues(case)] == []
    assert [m.id for m in catalogue().menu(case)] == [e.id for e in catalogue().entries]


def test_an_order_gets_the_case_result_under_the_menu_name() -> None:
    case = _case("r8c3vn")
    attempt = Attempt(case, QuestionMatcher(case.facts, None), started_at=0.0)
    placed, _ = attempt.order("lab.troponin", 5.0)
    own = case.orderable("test_hs_ctni")
    assert own is not None
    # Scoring reads the case's item; the contestant sees the menu's name and price.
    assert (placed.item_id, placed.menu_id, placed.name) == ("test_hs_ctni", "lab.troponin",
                                                              "肌钙蛋白")
    assert placed.result == own.result and placed.abnormal
    assert placed.cost_yuan == catalogue().by_id["lab.troponin"].cost_yuan


def test_an_item_the_case_is_silent_on_is_normal_not_refused() -> None:
    case = _case("r8c3vn")
    attempt = Attempt(case, QuestionMatcher(case.facts, None), started_at=0.0)
    placed, _ = attempt.order("lab.thyroid", 5.0)
    assert placed.item_id == "lab.thyroid" and not placed.abnormal
    assert placed.result == catalogue().by_id["lab.thyroid"].normal
    attempt.apply(placed)
    assert attempt.orders[0].menu_id == "lab.thyroid" and attempt.orders[0].cost_yuan == 120


def test_ordering_through_the_menu_scores_like_ordering_the_case_item() -> None:
    case = _case("r8c3vn")
    key = case.answer_key
    totals = []
    for ids in (list(key.necessary_tests), [_menu_id(case, i) for i in key.necessary_tests]):
        attempt = Attempt(case, QuestionMatcher(case.facts, None), started_at=0.0)
        for i in ids:
            placed, _ = attempt.order(i, 1.0)
            attempt.apply(placed)
        sub = attempt.submit(key.diagnosis.name, [], "", 2.0)
        totals.append(score(case, attempt.questions, attempt.ordered_ids, sub.submission()).total)
    assert totals[0] == totals[1] > 0


def _menu_id(case: Case, item_id: str) -> str:
    """The catalogue entry that answers with the case's item `item_id`."""
    return next(e for e, item in catalogue().links(case).items() if item.id == item_id)


@pytest.mark.parametrize(("typed", "expected"), [
    ("血常规", "lab.cbc"), ("查个血常规", "lab.cbc"), ("CBC", "lab.cbc"), ("胸片", "img.cxr"),
    ("拍个胸片看看", "img.cxr"), ("心超", "img.echo"), ("做心电图", "ecg.standard"),
    ("ＥＣＧ", "ecg.standard"), ("肌钙蛋白", "lab.troponin"), ("听诊心脏", "exam.heart"),
    ("量子纠缠检测", None), ("", None), ("查一下", None),
])
def test_a_typed_order_is_read_against_names_and_aliases(typed: str, expected: str | None
                                                          ) -> None:
    assert catalogue().find(_case("r8c3vn"), typed) == expected


def test_an_item_the_menu_lacks_is_listed_and_found_by_its_own_name() -> None:
    case = _case("yuhut0")
    extra = msgspec.structs.replace(case, tests=[*case.tests, Orderable(
        id="test_local", name="本院特检甲", aliases=["特检甲"], result="阴性")])
    assert [i.id for i in catalogue().cues(extra)] == ["test_local"]
    assert catalogue().find(extra, "查个特检甲") == "test_local"
    assert catalogue().menu(extra)[-1].name == "本院特检甲"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_menu_names_no_answer_key_term(path: Path) -> None:
    """The menu as sent (ids, names), checked like any patient-facing text: a catalogue id
    "pe.general" once read as "PE" (pulmonary embolism) to the secrecy check."""
    from arena.secrecy import answer_terms, find_terms

    case = load_case(path.read_bytes(), str(path))
    shown = msgspec.json.encode(catalogue().menu(case)).decode()
    assert find_terms(shown, answer_terms(case)) == []
