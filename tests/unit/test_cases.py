"""Every file in cases/ is a valid, strict case; mistakes are reported with their path."""

from __future__ import annotations

import copy
from pathlib import Path

import msgspec
import pytest

from arena.cases import check_case, load_case
from arena.errors import CaseInvalid
from server.cli import main as arena_main
from server.services.library import Library, check_folder
from tests.unit.sample import sample_dict

CASES = Path(__file__).resolve().parents[2] / "cases"
CASE_FILES = sorted(CASES.glob("*.json"))


def encode(d: object) -> bytes:
    return msgspec.json.encode(d)


def test_the_library_has_three_cases_or_more() -> None:
    assert len(CASE_FILES) >= 3


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_case_file_is_valid(path: Path) -> None:
    case, problems = check_case(path.read_bytes())
    assert problems == []
    assert case is not None and case.id == path.stem
    assert len(case.answer_key.checklist) >= 10
    assert len(case.facts) >= 20
    assert any(f.negative for f in case.facts)


def test_library_loads_the_folder() -> None:
    lib = Library.load(CASES)
    assert set(lib.cases) == {p.stem for p in CASE_FILES}


def test_unknown_field_is_an_error_with_its_path() -> None:
    d = sample_dict()
    d["facts"][2]["colour"] = "red"
    _, problems = check_case(encode(d))
    assert problems == ["$.facts[2]: Object contains unknown field `colour`"]


def test_every_problem_is_reported_at_once() -> None:
    d = sample_dict()
    d["demographics"]["age"] = "fifty"
    del d["opening"]["vitals"]["spo2"]
    d["tests"][0]["cost_yuan"] = "cheap"
    _, problems = check_case(encode(d))
    assert problems == [
        "$.demographics.age: Expected `int`, got `str`",
        "$.opening.vitals: Object missing required field `spo2`",
        "$.tests[0].cost_yuan: Expected `float`, got `str`",
    ]


def test_semantic_problems_name_the_field() -> None:
    d = sample_dict()
    d["answer_key"]["checklist"][0]["facts"] = ["no_such_fact"]
    d["answer_key"]["necessary_tests"].append("mri")
    d["opening"]["vitals"]["diastolic_bp"] = 130
    d["facts"][1]["id"] = "onset"
    _, problems = check_case(encode(d))
    assert "$.answer_key.checklist[0].facts: unknown fact 'no_such_fact'" in problems
    assert "$.answer_key.necessary_tests[2]: unknown order 'mri'" in problems
    assert "$.opening.vitals.diastolic_bp: must be below systolic_bp" in problems
    assert "$: id 'onset' is used more than once" in problems


def test_load_case_raises_with_every_problem() -> None:
    d = copy.deepcopy(sample_dict())
    d["answer_key"]["checklist"] = d["answer_key"]["checklist"][:3]
    with pytest.raises(CaseInvalid) as err:
        load_case(encode(d), "bad.json")
    assert err.value.problems == ["$.answer_key.checklist: 3 items, at least 10 required"]
    assert "bad.json" in err.value.message_zh


def test_not_json_is_reported() -> None:
    _, problems = check_case(b"{not json")
    assert len(problems) == 1 and problems[0].startswith("$: not valid JSON")


def test_cli_check_prints_problems_and_fails(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = sample_dict()
    bad = sample_dict()
    bad["id"] = "other"
    bad["persona"]["health_literacy"] = "expert"
    (tmp_path / "sample_chest.json").write_bytes(encode(good))
    (tmp_path / "other.json").write_bytes(encode(bad))
    assert arena_main(["cases", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "✗" in out and "$.persona.health_literacy" in out and "1 ok, 1 with problems" in out
    (tmp_path / "other.json").unlink()
    assert arena_main(["cases", "check", str(tmp_path)]) == 0
    assert check_folder(tmp_path) == {tmp_path / "sample_chest.json": []}


def test_file_name_must_match_id(tmp_path: Path) -> None:
    (tmp_path / "wrong_name.json").write_bytes(encode(sample_dict()))
    report = check_folder(tmp_path)
    assert report[tmp_path / "wrong_name.json"] == [
        "$.id: 'sample_chest' must equal the file name 'wrong_name'"
    ]


def test_up_refuses_a_broken_library_with_path_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = sample_dict()
    bad["opening"]["vitals"]["spo2"] = "high"
    (tmp_path / "sample_chest.json").write_bytes(encode(bad))
    monkeypatch.setenv("CASES_DIR", str(tmp_path))
    assert arena_main(["up"]) == 2
    err = capsys.readouterr().err
    assert "sample_chest.json" in err and "$.opening.vitals.spo2" in err


def test_facts_need_an_intent_of_the_taxonomy_or_example_questions() -> None:
    d = sample_dict()
    d["facts"][0]["intent"] = "onset"
    d["facts"][0]["questions"] = []  # declared: questions are optional
    d["facts"][1]["intent"] = "whereabouts"
    d["facts"][2]["intents"] = ["character", "nonsense"]
    d["facts"][3]["questions"] = []  # neither
    _, problems = check_case(encode(d))
    assert problems == [
        "$.facts[1].intent: ['whereabouts'] not in the taxonomy (arena/intents.py)",
        "$.facts[2].intent: ['nonsense'] not in the taxonomy (arena/intents.py)",
        "$.facts[3]: declare an intent (or give at least 2 example questions)",
    ]


def test_a_caregiver_case_with_an_infant_age_and_default_overrides() -> None:
    d = sample_dict()
    d["demographics"].update({"age": 8, "age_unit": "months"})
    d["narrator"] = {"relation": "母亲"}
    d["defaults"] = {"family_history": "家里人都挺好的。"}
    case, problems = check_case(encode(d))
    assert problems == [] and case is not None
    assert case.narrator is not None and case.narrator.relation == "母亲"
    d["demographics"]["age"] = 40  # months: an adult's age is given in years
    d["defaults"] = {"gossip": "……"}
    _, problems = check_case(encode(d))
    assert problems == [
        "$.demographics.age: 40 months is not a plausible age",
        "$.defaults.gossip: not an intent of the taxonomy (arena/intents.py)",
    ]
