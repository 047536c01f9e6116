"""`arena cases import`: sectioned Chinese records and AgentClinic OSCE JSON to draft cases.

The inputs in import_samples/ were written for these tests: three records in different
styles (a hospital 入院记录, an exam book with 【】 headings, a child's record told by
the mother), a deliberately thin record, and two OSCE documents (an adult, a toddler).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest

from arena import secrecy
from arena.cases import check_case, load_case
from arena.importer import Draft, import_osce, import_record, import_source
from arena.intents import INTENT_IDS
from arena.patient import ScriptedPatient, patient_view
from arena.records import record_sections, voice
from server.cli import main as arena_main

SAMPLES = Path(__file__).parent / "import_samples"
CASES = Path(__file__).resolve().parents[2] / "cases"
# Problems every draft has: the importer writes no persona, difficulty, checklist, red flags
# or test choice, and knows no costs. Each sample's own problems are listed beside it.
ALWAYS = ["$.persona", "$.difficulty", "$.answer_key.checklist", "$.answer_key.red_flags",
          "$.answer_key.necessary_tests", "$.tests", "$.answer_key.checklist",
          "$.sources"]  # a record does not say where it comes from: the author does


def draft(name: str) -> Draft:
    return import_source((SAMPLES / name).read_bytes())


def paths(d: Draft) -> list[str]:
    return sorted(p.split(": ")[0] for p in d.problems)


def facts(d: Draft, *, where: str = "") -> list[dict[str, Any]]:
    return [f for f in d.case["facts"] if where in f["answer"]]


def one(d: Draft, text: str) -> dict[str, Any]:
    found = facts(d, where=text)
    assert len(found) == 1, (text, [f["answer"] for f in d.case["facts"]])
    return found[0]


@pytest.mark.parametrize(("name", "own"), [
    ("pneumonia_hospital.txt", ["$.demographics.name", "$.answer_key.diagnosis"]),
    ("cholecystitis_exam_book.txt", [
        "$.demographics.name", "$.opening.vitals.spo2", "$.opening.vitals.spo2",
        "$.specialty", "$.specialty", "$.answer_key.differentials",
        "$.answer_key.differentials"]),
    ("rotavirus_pediatric.txt", [
        "$.demographics.name", "$.facts", "$.answer_key.diagnosis", "$.specialty",
        "$.opening.vitals.spo2", "$.opening.vitals.spo2"]),
    ("osce_myasthenia.json", [
        "$.demographics.name", "$.opening.appearance", "$.specialty",
        "$.answer_key.differentials", "$.answer_key.differentials"]),
    ("osce_croup.json", [
        "$.demographics.name", "$.opening.appearance", "$.specialty",
        "$.answer_key.differentials", "$.answer_key.differentials"]),
])
def test_each_sample_lists_exactly_its_problems(name: str, own: list[str]) -> None:
    d = draft(name)
    assert paths(d) == sorted(ALWAYS + own), d.problems


def test_problems_say_what_is_missing_in_both_languages() -> None:
    d = draft("cholecystitis_exam_book.txt")
    assert "$.opening.vitals.spo2: 病历中没有，0 为占位 (not in the source; 0 is a placeholder)" \
        in d.problems
    assert "$.opening.vitals.spo2: 0 is outside 50-100" in d.problems  # check_case's own
    assert "$.answer_key.checklist: 0 items, at least 10 required" in d.problems
    assert "$.answer_key.differentials: give at least 2" in d.problems


def test_a_thin_record_lists_every_gap_and_the_secrecy_lint_hit() -> None:
    d = draft("appendicitis_minimal.txt")
    p = d.problems
    for line in ("$.facts: 缺少【个人史】 (no 个人史 section)",
                 "$.facts: 缺少【家族史】 (no 家族史 section)",
                 "$.tests: 缺少【辅助检查】 (no 辅助检查 section)",
                 "$.opening.vitals: 病历中没有生命体征 (T/P/R/BP) (no vital signs in the record)",
                 "$.demographics.age: 0 years is not a plausible age",
                 "$.tests: a case needs orderable tests"):
        assert line in p
    # "外院诊断为急性阑尾炎" is history the patient would tell: it names the key.
    told = next(i for i, f in enumerate(d.case["facts"]) if "阑尾炎" in f["answer"])
    assert (f"$.facts[{told}].answer: 含答案关键词 names the answer key: '急性阑尾炎' "
            "(diagnosis)") in p


def complete(case: dict[str, Any]) -> dict[str, Any]:
    """What an author adds at the paths the importer listed, and nothing else."""
    c = copy.deepcopy(case)
    ids = [f["id"] for f in c["facts"]]
    orders = [o["id"] for o in (*c["exams"], *c["tests"])]
    c["answer_key"]["checklist"] = [
        {"id": f"cl{i}", "text": f"要点{i}", "weight": 5, "facts": [ids[i]], "orders": []}
        for i in range(10)]
    c["answer_key"]["red_flags"] = [{"id": "rf1", "text": "危险信号", "weight": 5,
                                     "facts": [], "orders": orders[:1]}]
    c["answer_key"]["necessary_tests"] = orders[-2:]
    if len(c["answer_key"]["differentials"]) < 2:
        c["answer_key"]["differentials"] = [{"name": "甲病"}, {"name": "乙病"}]
    if not c["opening"]["vitals"]["spo2"]:
        c["opening"]["vitals"]["spo2"] = 98
    c["sources"] = ["某医院病历，已去标识"]
    c["specialty"] = c["specialty"] or "普通外科"
    return c


@pytest.mark.parametrize("name", ["pneumonia_hospital.txt", "cholecystitis_exam_book.txt",
                                  "rotavirus_pediatric.txt", "osce_myasthenia.json",
                                  "osce_croup.json"])
def test_a_draft_completed_at_the_listed_paths_is_a_valid_case(name: str) -> None:
    d = draft(name)
    case, problems = check_case(msgspec.json.encode(complete(d.case)))
    assert problems == []
    assert case is not None and secrecy.leaks(case) == []
    assert all(x in INTENT_IDS for f in case.facts for x in f.declared())


def test_hospital_record_facts_have_sensible_intents_in_the_first_person() -> None:
    d = draft("pneumonia_hospital.txt")
    onset = one(d, "3天前")
    assert onset["answer"] == "我3天前受凉后开始发烧。"
    assert (onset["intent"], onset["subject"], onset["intents"]) == ("onset", "发热", ["duration"])
    assert one(d, "体温最高")["intent"] == "severity"
    sputum = one(d, "脓痰")  # a new symptom with its description: one fact
    assert sputum["answer"] == "咳黄色脓痰，量约每天30ml。"
    assert (sputum["intent"], sputum["subject"], sputum["intents"]) == (
        "associated", "咳痰", ["character", "timing"])
    assert (one(d, "上述症状")["intent"], one(d, "上述症状").get("subject")) == ("course", None)
    assert (one(d, "深吸气")["intent"], one(d, "深吸气")["subject"]) == ("aggravating", "胸痛")
    assert one(d, "头孢克洛")["intent"] == "treatment_so_far"
    assert one(d, "睡不好")["intent"] == "sleep"
    assert one(d, "大小便")["intent"] == "bowel" and one(d, "大小便")["intents"] == ["urination"]
    med = one(d, "氨氯地平")
    assert (med["category"], med["intent"], med.get("negative", False)) == (
        "medications", "medications", False)
    allergy = one(d, "青霉素")
    assert (allergy["category"], allergy["intent"], allergy.get("negative", False)) == (
        "allergies", "allergies", False)
    assert (one(d, "抽烟40年")["intent"], one(d, "抽烟40年").get("negative", False)) == (
        "smoking", False)  # "未戒烟" is no denial
    assert one(d, "父亲患高血压")["category"] == "family"
    assert one(d, "生于原籍")["intent"] == "residence"
    # The clinical words are gone from what the patient says.
    for f in d.case["facts"]:
        assert not any(w in f["answer"] for w in ("患者", "否认", "我院", "予")), f


def test_the_scripted_patient_answers_a_completed_draft_from_the_right_facts() -> None:
    d = draft("pneumonia_hospital.txt")
    patient = ScriptedPatient(patient_view(load_case(msgspec.json.encode(complete(d.case)))))
    for question, told in (("什么时候开始发烧的？", "3天前"), ("有没有咯血？", "没有咳血"),
                           ("对什么药过敏吗？", "青霉素"), ("抽烟吗？", "抽烟40年"),
                           ("平时吃什么药？", "氨氯地平")):
        reply = patient.reply(question)
        assert reply.fact_ids == (one(d, told)["id"],), (question, reply.text)


def test_negatives_are_negative_one_symptom_each() -> None:
    d = draft("pneumonia_hospital.txt")
    denied = {f["subject"]: f["answer"] for f in d.case["facts"]
              if f.get("negative") and f["intent"] == "associated"}
    assert denied == {"咯血": "没有咳血。", "呼吸困难": "没有夜间阵发性呼吸困难。",
                      "恶心呕吐": "没有恶心、呕吐。", "腹痛": "没有肚子疼。",
                      "腹泻": "没有拉肚子。"}
    past = one(d, "糖尿病")
    assert past["answer"] == "没有糖尿病、冠心病，没有肝炎、结核等传染病。"
    assert (past["intent"], past["negative"]) == ("past_history", True)
    surgery = one(d, "手术")
    assert (surgery["intent"], surgery["intents"], surgery["negative"]) == (
        "surgery", ["trauma", "transfusion"], True)
    for f in d.case["facts"]:
        if f["answer"].startswith("没有"):
            assert f.get("negative"), f
    assert not one(d, "父亲患高血压").get("negative")


def test_exam_book_record_with_brackets_menstrual_history_and_radiation() -> None:
    d = draft("cholecystitis_exam_book.txt")
    assert d.case["demographics"] == {"name": d.case["demographics"]["name"], "sex": "female",
                                      "age": 46, "age_unit": "years", "occupation": "超市收银员"}
    first = one(d, "1天前")
    assert first["intent"] == "onset" and "character" in first["intents"]
    assert first["subject"] == "腹痛"
    assert one(d, "放射")["intent"] == "radiation"
    assert (one(d, "吐后")["intent"], one(d, "吐后")["subject"]) == ("relieving", "腹痛")
    menses = one(d, "来的月经")
    assert menses["answer"] == "14岁来的月经，每次5天，28天来一次，上次月经2024-10-20，月经规律。"
    assert (menses["category"], menses["intent"]) == ("menstrual_obstetric", "menstrual")
    assert one(d, "怀孕2次")["intent"] == "obstetric"
    # A positive remark inside a 既往史 of denials is not a denial.
    assert not one(d, "近2年")["answer"].startswith("没有")
    exams = {e["name"]: e for e in d.case["exams"]}
    assert exams["腹部检查"]["abnormal"] and "Murphy征阳性" in exams["腹部检查"]["result"]
    assert not exams["皮肤黏膜及淋巴结"]["abnormal"]  # 无黄染
    assert exams["心脏检查"]["result"] == exams["胸部及肺部检查"]["result"] == "心肺未见异常。"
    tests = {t["name"]: t for t in d.case["tests"]}
    assert tests["腹部超声"]["abnormal"] and "腹部B超" in tests["腹部超声"]["aliases"]
    assert not tests["血淀粉酶"]["abnormal"]
    assert d.case["opening"]["vitals"] == {"temperature_c": 38.4, "heart_rate": 102,
                                           "respiratory_rate": 20, "systolic_bp": 128,
                                           "diastolic_bp": 80, "spo2": 0}
    # Not a known term exactly: no synonyms guessed ("胆囊炎" would score as the key).
    assert d.case["answer_key"]["diagnosis"] == {"name": "急性结石性胆囊炎", "name_en": "",
                                                 "synonyms": [], "icd10": ""}


def test_pediatric_record_is_told_by_the_mother() -> None:
    d = draft("rotavirus_pediatric.txt")
    c = d.case
    assert c["narrator"] == {"relation": "母亲"}
    assert (c["demographics"]["age"], c["demographics"]["age_unit"]) == (15, "months")
    assert c["specialty"] == "儿科"
    assert c["opening"]["statement"] == "医生，我家孩子拉肚子、呕吐2天了，尿少半天了。"
    assert c["opening"]["vitals"]["weight_kg"] == 10.0
    assert one(d, "2天前")["answer"].startswith("孩子2天前没什么原因就开始呕吐")
    assert one(d, "足月顺产")["intent"] == "birth_development"
    assert one(d, "孩子是第1胎第1产")  # G1P1 is the mother's pregnancy, said as such
    assert one(d, "母乳喂养")["intent"] == "diet"
    rota = one(d, "轮状病毒疫苗")
    assert (rota["intent"], rota["negative"]) == ("vaccination", True)
    assert one(d, "拉肚子")["subject"] == "腹泻"
    assert (one(d, "黏液脓血")["subject"], one(d, "黏液脓血")["negative"]) == ("腹泻", True)
    for f in c["facts"]:
        assert "患儿" not in f["answer"] and not f["answer"].startswith("我2天前"), f
    tests = {t["name"]: t for t in c["tests"]}
    assert tests["电解质"]["abnormal"]  # Na 132, K 3.3: outside the reference ranges
    assert not tests["血常规"]["abnormal"]
    assert tests["大便轮状病毒抗原"]["result"] == "阳性。" and tests["大便轮状病毒抗原"]["abnormal"]
    key = c["answer_key"]
    assert key["diagnosis"]["name"] == "轮状病毒肠炎"
    assert key["teaching_points"] == ["其他诊断：中度等渗性脱水"]
    assert [x["name"] for x in key["differentials"]] == [
        "细菌性痢疾", "生理性腹泻", "急性坏死性小肠结肠炎"]


def test_hospital_record_exams_tests_and_answer_key() -> None:
    c = draft("pneumonia_hospital.txt").case
    assert c["opening"]["vitals"] == {"temperature_c": 38.9, "heart_rate": 108,
                                      "respiratory_rate": 26, "systolic_bp": 135,
                                      "diastolic_bp": 85, "spo2": 91}
    assert c["opening"]["appearance"] == "67岁男性，神志清楚，急性病容，呼吸稍促，查体合作"
    exams = {e["name"]: e for e in c["exams"]}
    assert exams["胸部及肺部检查"]["abnormal"] and "湿啰音" in exams["胸部及肺部检查"]["result"]
    assert not exams["腹部检查"]["abnormal"]  # 无压痛、反跳痛
    assert not exams["神经系统检查"]["abnormal"]  # 病理征未引出
    assert all("T 38.9" not in e["result"] for e in c["exams"])
    tests = {t["name"]: t for t in c["tests"]}
    assert tests["血常规"]["abnormal"] and tests["胸部X线"]["abnormal"]
    assert not tests["肾功能"]["abnormal"]
    assert "CRP" in tests["C反应蛋白"]["aliases"]
    key = c["answer_key"]
    assert key["diagnosis"]["name"] == "社区获得性肺炎" and key["diagnosis"]["icd10"] == "J18.9"
    assert "社区获得性肺炎（右下叶）" in key["diagnosis"]["synonyms"]
    assert [x["name"] for x in key["differentials"]] == [
        "肺结核", "肺癌并阻塞性肺炎", "肺血栓栓塞症"]
    assert key["checklist"] == [] and key["teaching_points"] == ["其他诊断：高血压病3级（很高危）"]
    assert c["specialty"] == "呼吸内科"  # 科别 in the record
    assert c["demographics"]["occupation"] == "退休教师"


def test_osce_stays_english_with_negatives_split_and_vitals() -> None:
    d = draft("osce_myasthenia.json")
    c = d.case
    assert c["title"] == "35-year-old woman with double vision" == c["title_en"]
    assert (c["demographics"]["sex"], c["demographics"]["age"]) == ("female", 35)
    assert c["demographics"]["occupation"] == "primary school teacher"
    assert c["opening"]["vitals"] == {"temperature_c": 36.8, "heart_rate": 76,
                                      "respiratory_rate": 14, "systolic_bp": 122,
                                      "diastolic_bp": 78, "spo2": 99}
    first = one(d, "1-month history")
    assert first["answer"].startswith("I have a 1-month history of double vision")
    assert first["intent"] == "onset" and "aggravating" in first["intents"]
    assert one(d, "improve after rest")["intent"] == "relieving"
    denied = {f["subject"] for f in c["facts"] if f.get("negative") and f["intent"] == "associated"}
    assert {"胸痛", "呼吸困难", "体重", "头痛", "发热"} <= denied
    assert one(d, "levothyroxine")["intent"] == "medications"
    assert (one(d, "smoke")["answer"], one(d, "smoke")["negative"]) == ("I don't smoke.", True)
    assert one(d, "drug allergies")["category"] == "allergies"
    for f in c["facts"]:
        assert not any(w in f["answer"] for w in ("The patient", "She ", " her ")), f
    tests = {t["name"]: t for t in c["tests"]}
    assert tests["Acetylcholine Receptor Antibodies"]["abnormal"]
    assert not tests["Thyroid Function"]["abnormal"]
    assert not tests["Complete Blood Count"]["abnormal"]
    assert tests["Electromyography"]["result"].startswith("Repetitive Nerve Stimulation:")
    assert {e["name"] for e in c["exams"]} == {"Neurological Examination", "Ice Pack Test"}
    assert c["answer_key"]["diagnosis"]["name"] == "Myasthenia gravis"


def test_osce_child_is_told_by_the_parent() -> None:
    d = draft("osce_croup.json")
    c = d.case
    assert c["narrator"] == {"relation": "mother"}
    assert c["opening"]["statement"] == "Doctor, my son has barking cough."
    assert c["opening"]["vitals"]["temperature_c"] == 38.4  # 101.1 °F
    assert c["opening"]["vitals"]["weight_kg"] == 12.5
    assert one(d, "for 2 days")["answer"].startswith("My son has had a runny nose")
    assert one(d, "daycare")["intent"] == "contacts"
    denied = {f.get("subject") for f in c["facts"] if f.get("negative")}
    assert denied >= {"恶心呕吐", "腹泻", "皮疹"}
    assert {e["name"]: e["abnormal"] for e in c["exams"]} == {
        "General Appearance": False, "Respiratory Examination": True, "ENT Examination": True}


def test_not_an_osce_document_is_one_problem() -> None:
    assert import_osce({"case": 1}).problems == [
        "$: 不是 OSCE 文档 (not an OSCE document: expected OSCE_Examination.Patient_Actor)"]
    assert import_source(b'{"x": ').problems[0].startswith("$: 不是有效 JSON")


def test_json_lines_pick_a_case_by_index() -> None:
    lines = b"\n".join(msgspec.json.encode(msgspec.json.decode((SAMPLES / n).read_bytes()))
                       for n in ("osce_myasthenia.json", "osce_croup.json"))
    assert import_source(lines, 1).case == draft("osce_croup.json").case
    assert import_source(lines, 2).problems == ["$: 只有 2 个病例 (index 2 out of range)"]


def test_gb18030_records_read_like_utf8() -> None:
    text = (SAMPLES / "pneumonia_hospital.txt").read_text("utf-8")
    assert import_source(text.encode("gb18030")).case == import_record(text).case


def test_reimport_is_stable_and_ids_follow_content() -> None:
    text = (SAMPLES / "pneumonia_hospital.txt").read_text("utf-8")
    a, b = import_record(text), import_record(text)
    assert msgspec.json.encode(a.case) == msgspec.json.encode(b.case)
    edited = import_record(text.replace("母亲体健", "母亲患糖尿病"))
    assert edited.case["id"] != a.case["id"]
    before = {f["answer"]: f["id"] for f in a.case["facts"]}
    after = {f["answer"]: f["id"] for f in edited.case["facts"]}
    same = before.keys() & after.keys()
    # Only the two family facts change ("父亲…，母亲患糖尿病" and "没有家族遗传病").
    assert len(same) == len(before) - 2 and all(before[k] == after[k] for k in same)
    ids = [a.case["id"], *before.values(), *(o["id"] for o in a.case["exams"] + a.case["tests"])]
    assert len(ids) == len(set(ids))
    assert all(len(i) == 6 for i in ids)


def test_a_record_without_denials_is_told_to_add_pertinent_negatives() -> None:
    d = import_record("男，30岁\n主诉：咳嗽2天\n现病史：患者2天前受凉后出现咳嗽，干咳为主。\n"
                      "既往史：高血压病史2年。")
    assert not any(f.get("negative") for f in d.case["facts"])
    assert "$.facts: include pertinent negatives (negative: true)" in d.problems
    assert (d.case["demographics"]["sex"], d.case["demographics"]["age"]) == ("male", 30)


def test_headings_in_the_styles_records_use() -> None:
    text = ("病历摘要 男，50岁\n【主诉】胸痛2小时\n现病史：患者2小时前…\n二、既往史\n体健\n"
            "1. 体格检查: 一般情况：神志清\n诊断依据：胸痛\n初步诊断 急性心肌梗死\n"
            "鉴别诊断：主动脉夹层")
    s = record_sections(text)
    assert s["preamble"] == "病历摘要 男，50岁"
    assert s["chief"] == "胸痛2小时"
    assert s["hpi"] == "患者2小时前…"
    assert s["past"] == "体健"
    assert s["exam"] == "一般情况：神志清"  # a finding inside the exam, not a heading
    assert s["other"] == "胸痛"  # 诊断依据 is not the diagnosis
    assert s["diagnosis"] == "急性心肌梗死"
    assert s["differential"] == "主动脉夹层"
    # 【】 headings run together on one line still split.
    assert record_sections("【主诉】头痛1天【现病史】患者1天前")["hpi"] == "患者1天前"


@pytest.mark.parametrize(("clinical", "said"), [
    ("患者3天前无明显诱因出现发热", "我3天前没什么原因就开始发烧"),
    ("否认高血压、糖尿病史", "没有高血压、糖尿病"),
    ("其父患冠心病", "我父亲患冠心病"),
    ("吸烟20年，每日20支", "抽烟20年，每天20支"),
    ("月经初潮13岁，5-6/28-30天", "月经13岁来的月经，每次5-6天，28-30天来一次"),
    ("血压最高180/100mmHg", "血压最高180/100mmHg"),  # no menstrual formula in a pressure
])
def test_voice_turns_clinical_words_into_the_patients(clinical: str, said: str) -> None:
    assert voice(clinical, "") == said


def test_voice_of_a_parent() -> None:
    assert voice("患儿2天前出现发热，其母体健", "母亲") == "孩子2天前开始发烧，我身体挺好"


def test_cli_writes_the_draft_where_told_and_never_into_the_library(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in CASES.iterdir())
    out = tmp_path / "draft.json"
    rc = arena_main(["cases", "import", str(SAMPLES / "pneumonia_hospital.txt"), "-o", str(out)])
    assert rc == 1  # a draft always has problems to fix
    printed = capsys.readouterr().out
    assert "$.answer_key.checklist: 导入不生成评分要点" in printed
    assert msgspec.json.decode(out.read_bytes()) == draft("pneumonia_hospital.txt").case
    # Into a library folder: refused, nothing written.
    library = tmp_path / "lib"
    library.mkdir()
    rc = arena_main(["cases", "import", str(SAMPLES / "osce_croup.json"), "--cases",
                     str(library), "-o", str(library / "x.json")])
    assert rc == 2 and list(library.iterdir()) == []
    assert "草稿不写入病例库" in capsys.readouterr().err
    # To stdout: the JSON alone on stdout, the problems on stderr.
    rc = arena_main(["cases", "import", str(SAMPLES / "osce_croup.json")])
    got = capsys.readouterr()
    assert rc == 1 and msgspec.json.decode(got.out)["id"] == draft("osce_croup.json").case["id"]
    assert "$.opening.appearance" in got.err
    assert sorted(p.name for p in CASES.iterdir()) == before
