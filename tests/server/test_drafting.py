"""Drafting a case with the LLM, against the simulator speaking the real protocol.

The simulator replays canned completions in order (`queue`): a good case, a broken one
and then a good one, only broken ones, or no JSON at all; or it fails. The server must
ask for structured output with the case's JSON schema, show the model each problem of a
broken draft by its JSON path and ask again, save what it got as a draft version whose
note names the model and prompt version, and answer in Chinese when it cannot draft.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.patient.drafter import PROMPT_VERSION
from tests.support import Api, ApiError, Sim

GOOD = json.loads((Path(__file__).resolve().parents[2] / "cases" / "k4p9wq.json").read_text())
BRIEF = "22 岁女性，转移性右下腹痛 1 天"


def _broken() -> dict[str, Any]:
    """The good case without its answer key: valid JSON, not a usable case."""
    return {k: v for k, v in GOOD.items() if k != "answer_key"}


@pytest.fixture
def sim(sim: Sim) -> Sim:
    sim.configure(itl_ms=0)  # a case is thousands of tokens, sent whole
    return sim


def _draft(url: str, source: str = BRIEF) -> Any:
    return Api.login(url).call("POST", "/api/authoring/draft", {"source": source})


def test_a_good_draft_is_saved_with_its_model_and_prompt(llm_server: str, sim: Sim) -> None:
    sim.configure(queue=[json.dumps(GOOD, ensure_ascii=False)])
    out = _draft(llm_server)
    assert out["attempts"] == 1 and out["problems"] == []
    assert out["content"]["id"] == out["id"] != GOOD["id"]  # the server gives the id
    assert out["model"] in out["version"]["note"] and PROMPT_VERSION in out["version"]["note"]
    sent = sim.stats()["last_request"]
    assert sent["response_format"]["type"] == "json_schema"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert "answer_key" in json.dumps(schema)
    assert sent["messages"][-1] == {"role": "user", "content": BRIEF}
    assert "stream" not in sent or not sent["stream"]
    listed = {c["id"] for c in Api.login(llm_server).call("GET", "/api/authoring/cases")}
    assert out["id"] in listed


def test_a_broken_draft_is_sent_back_with_its_problems(llm_server: str, sim: Sim) -> None:
    sim.configure(queue=[json.dumps(_broken(), ensure_ascii=False),
                         json.dumps(GOOD, ensure_ascii=False)])
    out = _draft(llm_server)
    assert out["attempts"] == 2 and out["problems"] == []
    retry = sim.stats()["last_request"]["messages"]
    assert retry[-2]["role"] == "assistant" and "answer_key" not in json.loads(
        retry[-2]["content"])
    assert "$.answer_key" in retry[-1]["content"] and "请修正" in retry[-1]["content"]


def test_problems_left_after_every_attempt_are_listed_not_hidden(
        llm_server: str, sim: Sim) -> None:
    sim.configure(queue=[json.dumps(_broken(), ensure_ascii=False)] * 3)
    out = _draft(llm_server)
    assert out["attempts"] == 3
    assert any(p["path"] == "$.answer_key" for p in out["problems"])
    assert all(p["message"] for p in out["problems"])


@pytest.mark.parametrize(("config", "words"), [
    ({"queue": ["这不是 JSON"] * 3}, "3 次都没有给出病例 JSON"),
    ({"fault": "http_500"}, "模型服务没有完成起草"),
])
def test_a_draft_that_cannot_be_made_says_why(
        llm_server: str, sim: Sim, config: dict[str, Any], words: str) -> None:
    sim.configure(**config)
    with pytest.raises(ApiError) as failed:
        _draft(llm_server)
    assert failed.value.status == 502 and failed.value.code == "model_unavailable"
    assert words in failed.value.body["message"]


def test_without_a_model_the_teacher_is_pointed_to_import(server: str) -> None:
    with pytest.raises(ApiError) as none:
        _draft(server)
    assert none.value.status == 502 and "LLM_BASE_URL" in none.value.body["message"]
