"""The patient engines over a real socket: OpenAIEngine against the LLM simulator, and the
scripted engine. The simulator runs under uvicorn in a background thread, as in production."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from arena.cases import Demographics, Fact, Opening, Persona, Vitals
from arena.matching import QuestionMatcher
from arena.patient import PatientView, ScriptedPatient, Turn
from arena.prompt import approx_tokens, system_prompt
from loadtest.llm_sim import DEFAULT_REPLY, tokenize
from server.metrics import REGISTRY
from server.patient.llm import (
    Delta,
    Finished,
    LLMFailure,
    OpenAIEngine,
    ScriptedEngine,
)
from server.patient.relay import make_engine
from server.settings import Settings
from tests.support import Sim

VIEW = PatientView(
    case_id="test_chest_pain",
    demographics=Demographics(name="王建国", sex="male", age=58, occupation="出租车司机"),
    persona=Persona(
        personality="急躁，但配合",
        speech_style="说话直，爱用大白话",
        health_literacy="low",
        recall="medium",
        ideas="可能是累着了",
        concerns="怕是心脏出了大问题",
        expectations="赶紧把疼止住",
    ),
    opening=Opening(
        chief_complaint="胸痛2小时",
        statement="医生，我胸口疼得厉害，喘不上气。",
        appearance="中年男性，捂着胸口，满头大汗。",
        vitals=Vitals(
            temperature_c=36.8,
            heart_rate=104,
            respiratory_rate=22,
            systolic_bp=150,
            diastolic_bp=92,
            spo2=95,
        ),
    ),
    facts=(
        Fact(
            id="onset",
            category="hpi",
            topic="起病时间",
            questions=["什么时候开始疼的", "疼了多久了", "胸痛多长时间了"],
            answer="今天早上七点多开车的时候突然疼起来的，到现在两个多小时了。",
        ),
        Fact(
            id="character",
            category="hpi",
            topic="疼痛性质",
            questions=["怎么个疼法", "是什么样的疼", "疼起来什么感觉"],
            answer="就像一块大石头压在胸口上，闷得慌。",
        ),
        Fact(
            id="allergy",
            category="allergies",
            topic="药物过敏",
            questions=["有没有药物过敏", "对什么药过敏吗"],
            answer="没有，我不过敏。",
            negative=True,
        ),
    ),
)
QUESTION = "怎么个疼法？"


def settings_for(sim: Sim, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_base_url": sim.base_url,
        "llm_connect_timeout": 2.0,
        "llm_read_timeout": 5.0,
        **overrides,
    }
    return Settings(**values)


def engine_for(sim: Sim, **overrides: Any) -> OpenAIEngine:
    return OpenAIEngine(settings_for(sim, **overrides), backoff_s=0.01)


async def collect(
    stream: AsyncIterator[Delta | Finished],
) -> tuple[list[str], Finished | None, LLMFailure | None]:
    deltas: list[str] = []
    finished: Finished | None = None
    try:
        async for item in stream:
            if isinstance(item, Delta):
                assert finished is None, "a Delta after Finished"
                deltas.append(item.text)
            else:
                assert finished is None, "two Finished"
                finished = item
    except LLMFailure as failure:
        return deltas, finished, failure
    return deltas, finished, None


def run_engine(
    engine: OpenAIEngine, history: tuple[Turn, ...] = ()
) -> tuple[list[str], Finished | None, LLMFailure | None]:
    async def main() -> tuple[list[str], Finished | None, LLMFailure | None]:
        try:
            return await collect(engine.stream(VIEW, history, QUESTION))
        finally:
            await engine.aclose()

    return asyncio.run(main())


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------- the happy path


def test_stream_yields_the_reply_then_finished_with_usage(sim: Sim) -> None:
    completion_before = metric("arena_llm_tokens_total", engine="llm", direction="completion")
    history = (Turn("你哪里不舒服？", "胸口疼。"),)

    deltas, finished, failure = run_engine(engine_for(sim), history)

    assert failure is None
    assert "".join(deltas) == DEFAULT_REPLY
    assert len(deltas) == len(tokenize(DEFAULT_REPLY)) > 5
    assert finished is not None and finished.finish_reason == "stop"
    assert finished.usage is not None
    assert finished.usage.completion_tokens == len(deltas)
    assert finished.usage.prompt_tokens > len(system_prompt(VIEW)) / 2
    assert finished.ttft_ms is not None and 0 < finished.ttft_ms <= finished.duration_ms
    after = metric("arena_llm_tokens_total", engine="llm", direction="completion")
    assert after - completion_before == len(deltas)

    sent = sim.stats()["last_request"]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "patient"
    assert sent["max_tokens"] == Settings().llm_max_tokens
    assert sent["messages"][0] == {"role": "system", "content": system_prompt(VIEW)}
    assert sent["messages"][1] == {"role": "assistant", "content": VIEW.opening.statement}
    assert sent["messages"][2:] == [
        {"role": "user", "content": "你哪里不舒服？"},
        {"role": "assistant", "content": "胸口疼。"},
        {"role": "user", "content": QUESTION},
    ]
    assert sim.stats()["streams_completed"] == 1


def test_shared_prompt_prefix_is_reported_as_cached(sim: Sim) -> None:
    async def main() -> list[Finished | None]:
        engine = engine_for(sim)
        try:
            first = await collect(engine.stream(VIEW, (), "疼了多久了？"))
            second = await collect(engine.stream(VIEW, (), "怎么个疼法？"))
        finally:
            await engine.aclose()
        return [first[1], second[1]]

    first, second = asyncio.run(main())
    assert first is not None and first.usage is not None and second is not None
    assert first.usage.cached_tokens == 0
    assert second.usage is not None and second.usage.cached_tokens
    assert second.usage.cached_tokens >= 0.8 * second.usage.prompt_tokens


def test_a_long_interview_is_summarised_within_the_context_window(sim: Sim) -> None:
    """Past the budget, older turns travel as one summary; the system prompt stays first."""
    history = tuple(
        Turn(f"第{i}个问题：疼痛还有别的特点吗？", f"第{i}次回答：" + "疼得厉害，" * 20)
        for i in range(40)
    )
    engine = engine_for(sim, llm_context_tokens=3000, llm_max_tokens=300)
    _, finished, failure = run_engine(engine, history)
    assert failure is None and finished is not None

    sent = sim.stats()["last_request"]["messages"]
    assert sent[0] == {"role": "system", "content": system_prompt(VIEW)}
    assert sent[1] == {"role": "assistant", "content": VIEW.opening.statement}
    assert sent[-1] == {"role": "user", "content": QUESTION}
    # Fewer turns than were asked travel verbatim, and the oldest is not among them.
    assert len(sent) < 2 + 2 * len(history) + 1
    assert all("第0个问题" not in m["content"] or m is sent[2] for m in sent[1:])
    assert approx_tokens("".join(m["content"] for m in sent)) <= 3000 - 300


# ---------------------------------------------------------------- the contestant goes away


def test_cancelling_the_consumer_closes_the_upstream_stream(sim: Sim) -> None:
    sim.configure(itl_ms=20)  # about half a second of answer left to abort

    async def main() -> None:
        engine = engine_for(sim)
        got = asyncio.Event()
        seen: list[str] = []

        async def consume() -> None:
            async for item in engine.stream(VIEW, (), QUESTION):
                assert isinstance(item, Delta)
                seen.append(item.text)
                if len(seen) == 2:
                    got.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await engine.aclose()

    asyncio.run(main())
    sim.wait_for(lambda s: s["streams_disconnected"] == 1)
    stats = sim.stats()
    assert stats["streams_completed"] == 0 and stats["active_streams"] == 0


def test_closing_the_generator_closes_the_upstream_stream(sim: Sim) -> None:
    sim.configure(itl_ms=20)

    async def main() -> None:
        engine = engine_for(sim)
        stream = engine.stream(VIEW, (), QUESTION)
        assert isinstance(await anext(stream), Delta)
        assert isinstance(await anext(stream), Delta)
        await stream.aclose()  # type: ignore[attr-defined]
        await engine.aclose()

    asyncio.run(main())
    sim.wait_for(lambda s: s["streams_disconnected"] == 1)
    assert sim.stats()["streams_completed"] == 0


# ---------------------------------------------------------------- failures


def test_error_event_mid_stream_fails_the_turn_with_the_partial_text(sim: Sim) -> None:
    sim.configure(fault="midstream_error", fault_after_tokens=3)
    errors_before = metric("arena_llm_errors_total", engine="llm", kind="stream_error")

    deltas, finished, failure = run_engine(engine_for(sim))

    assert failure is not None and failure.kind == "stream_error"
    assert finished is None
    assert failure.partial == "".join(tokenize(DEFAULT_REPLY)[:3]) == "".join(deltas)
    assert "模型服务" in failure.message_zh and failure.message_en
    assert sim.stats()["requests"] == 1  # a token had arrived: no retry
    after = metric("arena_llm_errors_total", engine="llm", kind="stream_error")
    assert after - errors_before == 1


@pytest.mark.parametrize(("fault", "status"), [("http_500", 500), ("http_503", 503)])
def test_http_error_is_retried_once_then_fails(sim: Sim, fault: str, status: int) -> None:
    sim.configure(fault=fault)

    deltas, finished, failure = run_engine(engine_for(sim))

    assert failure is not None and failure.kind == "http" and failure.status == status
    assert deltas == [] and failure.partial == "" and finished is None
    assert failure.message_zh.startswith("病人暂时无法回答")
    assert sim.stats()["requests"] == 2


def test_transient_http_error_is_ridden_out_by_the_retry(sim: Sim) -> None:
    sim.configure(fault="http_503", fault_times=1)

    deltas, finished, failure = run_engine(engine_for(sim))

    assert failure is None and finished is not None and finished.finish_reason == "stop"
    assert "".join(deltas) == DEFAULT_REPLY
    assert sim.stats()["requests"] == 2


def test_stalled_stream_times_out_and_is_closed(sim: Sim) -> None:
    sim.configure(fault="stall", fault_after_tokens=2)

    deltas, finished, failure = run_engine(engine_for(sim, llm_read_timeout=0.3))

    assert failure is not None and failure.kind == "timeout" and finished is None
    assert failure.partial == "".join(deltas) == "".join(tokenize(DEFAULT_REPLY)[:2])
    assert "超时" in failure.message_zh
    assert sim.stats()["requests"] == 1
    sim.wait_for(lambda s: s["streams_disconnected"] == 1)


def test_finish_reason_length_fails_the_turn_with_the_partial_text(sim: Sim) -> None:
    deltas, finished, failure = run_engine(engine_for(sim, llm_max_tokens=3))

    assert failure is not None and failure.kind == "length" and finished is None
    assert failure.partial == "".join(deltas) == "".join(tokenize(DEFAULT_REPLY)[:3])
    assert sim.stats()["last_request"]["max_tokens"] == 3
    assert sim.stats()["streams_completed"] == 1


def test_dropped_connection_after_a_token_is_not_retried(sim: Sim) -> None:
    sim.configure(fault="drop", fault_after_tokens=2)

    deltas, finished, failure = run_engine(engine_for(sim))

    assert failure is not None and failure.kind == "dropped" and finished is None
    assert failure.partial == "".join(deltas) == "".join(tokenize(DEFAULT_REPLY)[:2])
    assert sim.stats()["requests"] == 1


def test_dropped_connection_before_the_first_token_is_retried(sim: Sim) -> None:
    sim.configure(fault="drop", fault_after_tokens=0)

    deltas, _, failure = run_engine(engine_for(sim))

    assert failure is not None and failure.kind == "dropped"
    assert deltas == []
    assert sim.stats()["requests"] == 2


def test_unreachable_endpoint_is_a_connect_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    engine = OpenAIEngine(Settings(llm_base_url=url, llm_connect_timeout=1.0), backoff_s=0.01)

    deltas, finished, failure = run_engine(engine)

    assert failure is not None and failure.kind == "connect"
    assert deltas == [] and finished is None
    assert "连接失败" in failure.message_zh


# ---------------------------------------------------------------- readiness and selection


def test_check_reports_readiness(sim: Sim) -> None:
    async def check(settings: Settings) -> str | None:
        engine = OpenAIEngine(settings)
        try:
            return await engine.check()
        finally:
            await engine.aclose()

    assert asyncio.run(check(settings_for(sim))) is None
    reason = asyncio.run(check(settings_for(sim, llm_model="other")))
    assert reason is not None and "other" in reason
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = Settings(llm_base_url=f"http://127.0.0.1:{port}/v1", llm_connect_timeout=1.0)
    reason = asyncio.run(check(gone))
    assert reason is not None and "unreachable" in reason


def test_make_engine_picks_by_llm_base_url(sim: Sim) -> None:
    async def names() -> tuple[str, str]:
        llm, scripted = make_engine(settings_for(sim)), make_engine(Settings())
        await llm.aclose()
        await scripted.aclose()
        return llm.name, scripted.name

    assert asyncio.run(names()) == ("llm", "scripted")


# ---------------------------------------------------------------- the scripted patient


def test_scripted_engine_streams_the_scripted_reply_in_chunks() -> None:
    expected = ScriptedPatient(VIEW).reply(QUESTION).text
    assert expected == "就像一块大石头压在胸口上，闷得慌。"

    async def main() -> tuple[list[str], Finished | None, LLMFailure | None]:
        engine = ScriptedEngine(Settings(scripted_chunk_ms=1))
        try:
            return await collect(engine.stream(VIEW, (), QUESTION))
        finally:
            await engine.aclose()

    deltas, finished, failure = asyncio.run(main())
    assert failure is None
    assert "".join(deltas) == expected
    assert len(deltas) >= 4
    assert all(2 <= len(d) <= 4 for d in deltas[:-1]) and 1 <= len(deltas[-1]) <= 4
    assert finished is not None and finished.finish_reason == "stop"
    assert finished.usage is not None and finished.usage.completion_tokens == len(expected)
    assert finished.ttft_ms is not None


# ---------------------------------------------------------------- the simulator itself


def test_sim_tokens_join_back_exactly() -> None:
    for text in (DEFAULT_REPLY, "I don't know, doctor.  Maybe 3.5 days?", "  嗯…no 真的 ", ""):
        assert "".join(tokenize(text)) == text


def test_sim_rejects_unknown_config(sim: Sim) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        sim.configure(fault="explode")
    assert info.value.code == 400
    info.value.close()


def test_scripted_engine_answers_with_the_library_matcher() -> None:
    matcher = QuestionMatcher(VIEW.facts)

    async def main() -> list[str]:
        engine = ScriptedEngine(Settings(scripted_chunk_ms=0), matchers={VIEW.case_id: matcher})
        try:
            deltas, _, _ = await collect(engine.stream(VIEW, (), QUESTION))
            await collect(engine.stream(VIEW, (), "有没有药物过敏"))
            # One patient per case, built on the matcher the case library already made.
            assert engine._patients[VIEW.case_id].matcher is matcher
            return deltas
        finally:
            await engine.aclose()

    assert "".join(asyncio.run(main())) == "就像一块大石头压在胸口上，闷得慌。"
