"""A small but valid case, built in code so unit tests do not depend on cases/."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from functools import cache
from typing import Any

import msgspec
import numpy as np

from arena.cases import Case, load_case


def fact(id: str, category: str, topic: str, questions: list[str], answer: str,
         negative: bool = False) -> dict[str, Any]:
    return {"id": id, "category": category, "topic": topic, "questions": questions,
            "answer": answer, "negative": negative}


def sample_dict() -> dict[str, Any]:
    facts = [
        fact("onset", "hpi", "起病时间", ["胸口痛多久了？", "什么时候开始痛的？", "痛了几个小时了"],
             "今天早上七点左右开始的，两个小时了。"),
        fact("location", "hpi", "疼痛部位", ["哪里痛？", "痛在什么地方？", "哪里不舒服"],
             "就是胸口正中间这块。"),
        fact("character", "hpi", "疼痛性质", ["怎么个痛法？", "是压着痛还是刺痛？", "疼痛什么性质"],
             "像有块大石头压着，闷得慌。"),
        fact("radiation", "hpi", "放射痛", ["痛会跑到别的地方吗？", "有没有放射到左肩或者后背？",
                                         "放射痛有吗"], "左边胳膊也有点酸。"),
        fact("sweating", "hpi", "伴随出汗", ["出汗了吗？", "有没有出冷汗？", "大汗吗"],
             "出了一身冷汗，衣服都湿了。"),
        fact("fever", "ros", "发热", ["发烧吗？", "有没有发热？", "体温高吗"], "没有发烧。",
             negative=True),
        fact("hemoptysis", "ros", "咯血", ["咳血吗？", "有没有咯血？", "痰里有血吗"],
             "没有，没咳过血。", negative=True),
        fact("htn", "past", "高血压", ["以前有什么病吗？", "有高血压吗？", "血压高不高"],
             "血压高了五六年了。"),
        fact("meds", "medications", "用药", ["平时吃什么药？", "在吃药吗？", "用药情况"],
             "吃着降压药，有时候忘了吃。"),
        fact("allergy", "allergies", "过敏", ["对什么药过敏吗？", "有过敏史吗？", "过敏吗"],
             "没有过敏的。", negative=True),
        fact("smoking", "social", "吸烟", ["抽烟吗？", "吸烟多少年了？", "一天抽几根烟"],
             "抽了三十年了，一天一包。"),
        fact("family", "family", "家族史", ["家里人有心脏病吗？", "父母身体怎么样？", "家族史"],
             "我爸六十岁就是心脏不好走的。"),
    ]
    item = lambda id, text, w, facts=(), orders=(): {  # noqa: E731
        "id": id, "text": text, "weight": w, "facts": list(facts), "orders": list(orders)}
    return {
        "schema_version": 1, "id": "sample_chest", "title": "突发胸痛", "title_en": "Chest pain",
        "specialty": "心血管内科", "sources": ["测试用样例病例"], "difficulty": "medium",
        "minutes": 15,
        "demographics": {"name": "王大明", "sex": "male", "age": 58, "occupation": "司机"},
        "persona": {"personality": "着急", "speech_style": "说话简短", "health_literacy": "low",
                    "recall": "medium", "ideas": "可能是累着了", "concerns": "怕是心脏出事",
                    "expectations": "赶紧止痛"},
        "opening": {"chief_complaint": "胸痛2小时", "statement": "医生，我胸口痛得厉害！",
                    "appearance": "面色苍白，满头大汗，手捂胸口",
                    "vitals": {"temperature_c": 36.6, "heart_rate": 58, "respiratory_rate": 20,
                               "systolic_bp": 102, "diastolic_bp": 64, "spo2": 96}},
        "facts": facts,
        "exams": [{"id": "heart_exam", "name": "心脏听诊", "aliases": ["听心脏"],
                   "result": "心率58次/分，律齐，未闻及杂音", "abnormal": True}],
        "tests": [
            {"id": "ecg", "name": "心电图", "aliases": ["ECG"],
             "result": "II、III、aVF导联ST段抬高0.3mV", "abnormal": True,
             "cost_yuan": 30, "minutes": 5},
            {"id": "troponin", "name": "肌钙蛋白I", "result": "cTnI 2.8 ng/mL（↑）",
             "abnormal": True, "cost_yuan": 120, "minutes": 20},
            {"id": "head_ct", "name": "头颅CT", "result": "未见异常", "cost_yuan": 300,
             "minutes": 30},
        ],
        "answer_key": {
            "diagnosis": {"name": "急性下壁心肌梗死", "name_en": "Acute inferior MI",
                          "synonyms": ["急性下壁ST段抬高型心肌梗死", "下壁STEMI", "心肌梗死"],
                          "icd10": "I21.1"},
            "partial": [{"name": "急性冠脉综合征", "synonyms": ["ACS"]}],
            "differentials": [{"name": "主动脉夹层"}, {"name": "肺栓塞"},
                              {"name": "急性心包炎"}],
            "checklist": [
                item("c_onset", "询问起病时间", 2, ["onset"]),
                item("c_loc", "询问疼痛部位", 2, ["location"]),
                item("c_char", "询问疼痛性质", 2, ["character"]),
                item("c_rad", "询问放射痛", 2, ["radiation"]),
                item("c_sweat", "询问伴随症状", 1, ["sweating"]),
                item("c_htn", "询问高血压史", 1, ["htn"]),
                item("c_meds", "询问用药", 1, ["meds"]),
                item("c_allergy", "询问过敏史", 1, ["allergy"]),
                item("c_smoke", "询问吸烟史", 2, ["smoking"]),
                item("c_family", "询问家族史", 1, ["family"]),
                item("c_ecg", "做心电图", 3, orders=["ecg"]),
            ],
            "red_flags": [item("r_ecg", "识别ST段抬高", 3, orders=["ecg"])],
            "necessary_tests": ["ecg", "troponin"],
            "unnecessary_tests": ["head_ct"],
            "teaching_points": ["下壁心梗常伴心动过缓。"],
        },
    }


@cache
def sample_case() -> Case:
    return load_case(msgspec.json.encode(sample_dict()), "sample")


class CharEmbed:
    """A stand-in embedding (hashed character bigrams): deterministic, no model, counts calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for a, b in itertools.pairwise(t):
                out[i, zlib.crc32((a + b).encode()) % 64] += 1
            out[i] /= max(1e-9, float(np.linalg.norm(out[i])))
        return out
