"""Case secrecy: the lint that keeps answer-key terms out of what a case shows before play,
and who may practise a case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from arena.cases import load_case
from arena.secrecy import answer_terms, find_terms, leaks, practice_open
from server.cli import main
from server.services.library import check_folder

CASES = Path(__file__).resolve().parents[2] / "cases"
SHIPPED = sorted(CASES.glob("*.json"))


def _case(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CASES / f"{name}.json").read_text(encoding="utf-8"))
    return doc


def _leaks(doc: dict[str, Any]) -> list[tuple[str, str]]:
    case = load_case(json.dumps(doc, ensure_ascii=False).encode())
    return [(leak.path, leak.term) for leak in leaks(case)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_shipped_cases_pass_the_lint(path: Path) -> None:
    assert leaks(load_case(path.read_bytes())) == []
    assert check_folder(CASES)[path] == []


def test_the_shipped_ids_are_opaque_and_titles_are_presenting_problems() -> None:
    for path in SHIPPED:
        case = load_case(path.read_bytes())
        terms = answer_terms(case)
        assert not find_terms(f"{case.id} {case.title} {case.title_en}", terms), case.id


# Each plant: where it goes, what is written there, the path and term the lint must name.
PLANTS = [
    ("id", lambda d: d.update(id="appendicitis_1"), "$.id", "appendicitis"),
    ("id as pinyin", lambda d: d.update(id="lanweiyan_1"), "$.id", "阑尾炎 (lanweiyan)"),
    ("title", lambda d: d.update(title="右下腹痛：阑尾炎？"), "$.title", "阑尾炎"),
    ("title_en", lambda d: d.update(title_en="Acute Appendicitis"), "$.title_en",
     "Acute appendicitis"),
    ("opening", lambda d: d["opening"].update(statement="医生说我是阑 尾 炎。"),
     "$.opening.statement", "阑尾炎"),
    ("fact", lambda d: d["facts"][3].update(answer="上次在诊所，医生说怀疑宫外孕。"),
     "$.facts[3].answer", "宫外孕"),
    ("visible result", lambda d: d["tests"][4].update(name="阑尾炎超声"),
     "$.tests[4].name", "阑尾炎"),
    ("alias", lambda d: d["exams"][0]["aliases"].append("PID screen"),
     "$.exams[0].aliases[4]", "PID"),
    ("icd10", lambda d: d["opening"].update(appearance="病历首页写着 K35.8"),
     "$.opening.appearance", "K35.8"),
    ("full width", lambda d: d.update(title_en="ＰＩＤ？"), "$.title_en", "PID"),
    ("traditional script", lambda d: d.update(title="右下腹痛：闌尾炎？"), "$.title", "阑尾炎"),
]


@pytest.mark.parametrize(("where", "plant", "path", "term"), PLANTS, ids=[p[0] for p in PLANTS])
def test_the_lint_finds_a_planted_term_with_its_json_path(
    where: str, plant: Any, path: str, term: str
) -> None:
    doc = _case("k4p9wq")
    plant(doc)
    assert (path, term) in _leaks(doc)


def test_the_shared_terminology_adds_forms_the_case_does_not_list() -> None:
    doc = _case("r8c3vn")
    names = [doc["answer_key"]["diagnosis"]["name"], *doc["answer_key"]["diagnosis"]["synonyms"]]
    assert "ST抬高型心梗" not in names
    doc["title"] = "胸痛：ST抬高型心梗？"
    assert ("$.title", "ST抬高型心梗") in _leaks(doc)


def test_short_abbreviations_match_only_as_whole_words() -> None:
    doc = _case("k4p9wq")
    doc["opening"]["appearance"] = "Rapid breathing; 她说 rapid 和 PIDgeon 都不是病名。"
    assert _leaks(doc) == []
    doc["opening"]["appearance"] = "转诊单写着 PID。"
    assert _leaks(doc) == [("$.opening.appearance", "PID")]
    stemi = _case("r8c3vn")
    stemi["title_en"] = "Chest pain, NSTEMI ruled out?"
    assert _leaks(stemi) == []
    stemi["title_en"] = "Chest pain (STEMI?)"
    assert _leaks(stemi) == [("$.title_en", "STEMI")]


def test_a_patient_naming_their_own_illness_is_not_the_key() -> None:
    doc = _case("m2x7hd")
    doc["opening"]["statement"] = "医生，我有1型糖尿病，这几天一直吐。"
    assert _leaks(doc) == []
    doc["opening"]["statement"] = "医生，我是不是又酮症酸中毒了？"
    assert ("$.opening.statement", "酮症酸中毒") in _leaks(doc)


def test_cases_check_reads_cases_dir_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in SHIPPED:
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setenv("CASES_DIR", str(tmp_path))
    assert main(["cases", "check"]) == 0
    assert str(tmp_path / "k4p9wq.json") in capsys.readouterr().out

    doc = _case("k4p9wq")
    doc["facts"][3]["answer"] = "医生说可能是急性阑尾炎。"
    (tmp_path / "k4p9wq.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    assert main(["cases", "check"]) == 1
    out = capsys.readouterr().out
    assert "✗ " + str(tmp_path / "k4p9wq.json") in out
    assert "$.facts[3].answer" in out and "急性阑尾炎" in out
    assert f"{len(SHIPPED) - 1} ok, 1 with problems" in out


def test_who_may_practise() -> None:
    assert practice_open("practice", reserved=False)
    assert not practice_open("practice", reserved=True)
    assert not practice_open("contest", reserved=False)
    assert not practice_open("draft", reserved=False)
    for visibility in ("draft", "contest", "practice"):
        assert practice_open(visibility, reserved=True, staff=True)
