from __future__ import annotations

from pathlib import Path

import pytest

from arena.cases import load_case
from arena.guard import OutputGuard, guard_terms
from arena.terminology import (
    fold,
    guard_forms,
    parse_tsv,
    read,
    simplify,
    surface_forms,
    terminology,
)
from tests.unit.sample import sample_case

ROOT = Path(__file__).resolve().parents[2]


def test_fold_traditional_width_case_and_spacing() -> None:
    assert fold("急性 單純性 闌尾炎") == "急性单纯性阑尾炎"
    assert fold("ＳＴＥＭＩ（下壁）") == "stemi(下壁)"
    assert fold("Acute   Appendicitis") == "acute appendicitis"


def test_the_data_loads_and_every_reference_resolves() -> None:
    t = terminology()
    assert len(t.concepts) >= 150
    for c in t.concepts.values():
        assert c.names, c.id
        for ref in (c.parent, *c.of, *c.near, *c.under, *c.ask):
            assert not ref or ref in t.concepts


def test_a_name_belongs_to_one_concept_and_references_must_exist() -> None:
    row = "a\tK35\t-\t阑尾炎\tappendicitis\t-\t-\n"
    with pytest.raises(ValueError, match="names a and b"):
        parse_tsv((row + row.replace("a\t", "b\t", 1)).encode())
    with pytest.raises(ValueError, match="unknown 'zz'"):
        parse_tsv(b"a\tK35\tzz\t\xe9\x98\x91\xe5\xb0\xbe\xe7\x82\x8e\t-\t-\t-\n")


@pytest.mark.parametrize("case_file", sorted((ROOT / "cases").glob("*.json")))
def test_every_case_diagnosis_is_in_the_terminology(case_file: Path) -> None:
    key = load_case(case_file.read_bytes()).answer_key
    for d in (key.diagnosis, *key.partial, *key.differentials):
        assert terminology().find(d.name) is not None, d.name


def test_surface_forms_give_every_name_of_a_diagnosis() -> None:
    forms = surface_forms("胃食管反流病")
    assert {"GERD", "反流性食管炎", "gastroesophageal reflux disease"} <= forms
    assert surface_forms("急性胰腺炎") == {"急性胰腺炎", "acute pancreatitis"}  # not "AP"
    assert surface_forms("没有这种病") == set()


def test_the_guard_stops_a_terminology_name_the_case_did_not_list() -> None:
    case = sample_case()  # its key lists 心肌梗死 but not 心肌梗塞 or MI
    assert "心肌梗塞" in {t.term for t in guard_terms(case) if t.kind == "diagnosis"}
    guard = OutputGuard.for_case(case)
    assert guard.feed("大夫，我这是心肌梗塞吗") == ""  # nothing of it is released
    assert guard.leak is not None and guard.leak.term == "心肌梗塞"


def test_reading_finds_negation_qualifiers_and_alternatives() -> None:
    [m] = read("排除急性阑尾炎")
    assert (m.concept, m.polarity) == ("aapp", "negated")
    [m] = read("AMI（下壁）")
    assert m.concept == "ami" and dict(m.quals) == {"wall": ("inferior",)}
    a, b = read("肺栓塞？主动脉夹层？")
    assert (a.concept, a.alternative, b.concept, b.alternative) == ("pe", False, "ad", True)
    [m] = read("adka")  # abbreviations match whole tokens only
    assert m.concept == "" and m.residue == "adka"


def test_guard_forms_add_everyday_and_broader_names_but_not_comorbid_ones() -> None:
    forms = guard_forms("急性阑尾炎")
    assert {"阑尾炎", "阑尾发炎", "盲肠炎", "appendicitis", "急性阑尾炎"} <= forms
    stemi = guard_forms("急性下壁ST段抬高型心肌梗死")
    assert {"心梗", "心肌梗塞", "heart attack", "STEMI", "急性冠脉综合征"} <= stemi
    assert "冠心病" not in stemi  # comorbid: a patient may simply have it
    assert "糖尿病" not in guard_forms("糖尿病酮症酸中毒")
    assert guard_forms("没有这种病") == set()
    assert simplify("闌尾發炎") == "阑尾发炎" and simplify("abc") == "abc"
