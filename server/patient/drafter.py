"""Drafting a case with the LLM: a record or a one-line brief in, a checked draft out.

It sits beside the patient because it talks to the same endpoint through the module
that owns its HTTP contract (`Upstream`), here with structured output: the request
carries the case's JSON schema as `response_format`, which vLLM and Ollama enforce while
decoding. A schema cannot say everything (ids that checklist items refer to, answer-key
words in the patient's lines), so each draft goes through the same checks as a case
typed in the editor (`services.authoring.check`, the secrecy lint included); while
problems remain the model is shown them, with their JSON paths, and asked again, up to
`attempts` times. What comes back is a draft with whatever problems are left: it is
saved as a version for a teacher to finish, never published.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import msgspec

from arena.cases import SCHEMA_VERSION, Case
from server.patient.upstream import Broken, Upstream
from server.services.authoring import Problem, check
from server.settings import Settings

PROMPT_VERSION = "draft-1"  # stored with each draft: change it whenever the prompt changes
MAX_TOKENS = 16_000  # a whole shipped case is about 8,600 tokens; the model needs a 24k+ context

SYSTEM = "\n".join((
    "你是医学院的临床教学专家，为临床诊断竞赛编写标准化病人病例。",
    "根据用户给出的病历或一句话简介，输出一个完整的病例 JSON，必须符合给定的 JSON Schema。要求：",
    "- 医学上前后一致：现病史、既往史、查体、检查结果都支持同一个诊断，"
    "包含有鉴别意义的阴性症状和正常结果。",
    "- facts 是病人用第一人称、口语化说出的话，每条只讲一个话题，并在 intents 中标出话题；"
    "病人的话里不能出现诊断名称或鉴别诊断名称。",
    "- title 只写主诉式的标题（如“突发胸痛”），不能透露诊断。",
    "- exams 是体格检查，tests 是辅助检查，每项写出具体结果，异常的 abnormal 为 true。",
    "- answer_key 写明诊断、3 个以上真正需要鉴别的诊断、评分要点（checklist，引用 facts "
    "或检查的 id）、危险信号（red_flags）、必要检查（necessary_tests）和教学要点。",
    "- schema_version 固定为 {version}，id 固定为 \"{case_id}\"。只输出 JSON。",
))

RETRY = """这份草稿还有以下问题（路径是 JSON 路径）：
{problems}
请修正这些问题，重新输出完整的病例 JSON。"""


class Drafted(msgspec.Struct, kw_only=True):
    """A draft and how it was made: `content` is None when no attempt gave a JSON object."""

    content: dict[str, Any] | None
    problems: list[Problem]
    attempts: int
    model: str
    prompt_version: str = PROMPT_VERSION


@functools.cache
def case_schema() -> dict[str, Any]:
    return msgspec.json.schema(Case)


def _problem_lines(problems: list[Problem]) -> str:
    return "\n".join(f"- {p.path}: {p.message}" if p.path else f"- {p.message}"
                     for p in problems)


class Drafter:
    """Drafts cases over one endpoint connection; use as an async context manager."""

    def __init__(self, settings: Settings, *, attempts: int = 3) -> None:
        self._upstream = Upstream(settings, temperature=0.2)
        self._attempts = attempts
        self._timeout = settings.llm_draft_timeout

    async def __aenter__(self) -> Drafter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._upstream.aclose()

    async def draft(self, source: str, case_id: str) -> Drafted:
        """Draft case `case_id` from `source` (a record or a brief). Raises Broken when the
        endpoint cannot be reached or fails: nothing was drafted then."""
        messages: list[dict[str, str]] = [
            {"role": "system",
             "content": SYSTEM.format(version=SCHEMA_VERSION, case_id=case_id)},
            {"role": "user", "content": source.strip()},
        ]
        content: dict[str, Any] | None = None
        problems: list[Problem] = []
        attempt = 0
        while attempt < self._attempts:
            attempt += 1
            text = await self._upstream.complete_json(
                messages, case_schema(), "clinical_case", MAX_TOKENS, self._timeout)
            parsed = _object(text)
            if parsed is None:
                problems = [Problem(path="", message="模型的输出不是一个 JSON 对象。",
                                    message_en="The model's output is not a JSON object.")]
            else:
                # The id and version are ours to give: a model that changes them is corrected,
                # not asked again.
                content = {**parsed, "id": case_id, "schema_version": SCHEMA_VERSION}
                problems = check(content)[1]
                if not problems:
                    break
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": RETRY.format(
                             problems=_problem_lines(problems))}]
        return Drafted(content=content, problems=problems, attempts=attempt,
                       model=self._upstream.model)


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


__all__ = ["PROMPT_VERSION", "Broken", "Drafted", "Drafter", "case_schema"]
