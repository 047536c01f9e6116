"""The relay over a real socket: gate and queue, circuit breaker and fallback, output guard,
frame coalescing, against the LLM simulator. Only the breaker's clock is injected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from arena.errors import TurnInProgress
from arena.guard import deflection
from loadtest.llm_sim import tokenize
from server.metrics import REGISTRY
from server.patient.llm import LLMFailure, OpenAIEngine, ScriptedEngine
from server.patient.relay import Breaker, Frames, Gate, Generation, Relay
from server.services.library import Library
from server.settings import Settings
from tests.support import FakeClock, Sim

# Starts what it needs itself (or needs no service): the external pass skips it.
pytestmark = pytest.mark.own_services

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = Library.load(ROOT / "cases")
CASE = LIBRARY.get("r8c3vn")
VIEW = LIBRARY.view(CASE.id)
# The case's diagnosis, split by the simulator's tokenizer into "下壁" + "心梗".
LEAKY = "医生，我是不是下壁心梗了？我爸也是这个病，后来就走了，我心里害怕得很。"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_relay(sim: Sim, clock: FakeClock | None = None, **overrides: Any) -> Relay:
    values: dict[str, Any] = {
        "llm_base_url": sim.base_url, "llm_connect_timeout": 2.0, "llm_read_timeout": 5.0,
        "scripted_chunk_ms": 0.0, **overrides,
    }
    settings = Settings(**values)
    return Relay(
        settings, OpenAIEngine(settings, backoff_s=0.01),
        ScriptedEngine(settings, matchers=LIBRARY.matchers),
        clock=clock or FakeClock(0.0),
    )


async def answer(
    relay: Relay, *, key: str = "a1", fallback_ok: bool = True, question: str = "哪里不舒服？",
    positions: list[int] | None = None, seen: list[int] | None = None,
) -> tuple[str, Generation, LLMFailure | None]:
    gen = relay.generate(
        key=key, case=CASE, view=VIEW, history=[], question=question, seed=1,
        fallback_ok=fallback_ok, on_queued=(positions if positions is not None else []).append,
    )
    out: list[str] = []
    try:
        async with contextlib.aclosing(gen.texts()) as texts:
            async for text in texts:
                if not out and seen is not None:
                    seen.append(len(relay.gate.active))
                out.append(text)
    except LLMFailure as failure:
        return "".join(out), gen, failure
    return "".join(out), gen, None


# ---------------------------------------------------------------- the breaker, alone


def test_breaker_opens_after_n_failures_probes_once_and_closes() -> None:
    clock = FakeClock(100.0)
    b = Breaker(threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert b.allow() == "yes"
        b.failed()
    b.succeeded()  # a success in between: the count starts again
    for _ in range(3):
        assert b.allow() == "yes"
        b.failed()
    assert b.state == "open" and b.allow() == "no"
    clock.advance(9.9)
    assert b.allow() == "no"
    clock.advance(0.1)
    assert b.allow() == "probe" and b.state == "half_open"
    assert b.allow() == "no"  # one probe at a time
    b.released(probe=True)  # its contestant left: no verdict, the next request probes
    assert b.allow() == "probe"
    b.failed()
    assert b.state == "open" and b.allow() == "no"
    clock.advance(10)
    assert b.allow() == "probe"
    b.succeeded()
    assert b.state == "closed" and b.allow() == "yes"
    assert metric("arena_llm_breaker_state") == 0


# ---------------------------------------------------------------- the breaker, end to end


def test_breaker_switches_to_scripted_and_back_when_the_endpoint_recovers(sim: Sim) -> None:
    clock = FakeClock(0.0)
    fallbacks_before = metric("arena_llm_fallback_answers_total")

    async def main() -> None:
        relay = make_relay(sim, clock, llm_breaker_failures=2, llm_breaker_cooldown=10)
        try:
            sim.configure(fault="http_500")
            text, gen, failure = await answer(relay)
            assert failure is not None and failure.kind == "http" and text == ""
            assert relay.breaker.state == "closed"

            # The second failure opens the breaker; nothing was shown, so this very turn
            # is answered by the scripted patient instead of failing.
            text, gen, failure = await answer(relay)
            assert failure is None and gen.engine.name == "scripted" and text
            assert relay.breaker.state == "open"
            assert metric("arena_llm_breaker_state") == 2
            requests = sim.stats()["requests"]

            text, gen, failure = await answer(relay)
            assert failure is None and gen.engine.name == "scripted" and text
            # A round without the fallback gets the clear error at once.
            began = time.monotonic()
            text, gen, failure = await answer(relay, fallback_ok=False)
            assert failure is not None and failure.kind == "unavailable" and text == ""
            assert "不可用" in failure.message_zh and time.monotonic() - began < 0.5
            assert sim.stats()["requests"] == requests  # the endpoint was left alone

            sim.configure(fault="none")
            clock.advance(10)
            text, gen, failure = await answer(relay, fallback_ok=False)  # the probe
            assert failure is None and gen.engine.name == "llm"
            assert relay.breaker.state == "closed"
            assert metric("arena_llm_breaker_state") == 0
        finally:
            await relay.aclose()

    asyncio.run(main())
    assert metric("arena_llm_fallback_answers_total") - fallbacks_before == 2


def test_a_failed_probe_opens_the_breaker_again(sim: Sim) -> None:
    clock = FakeClock(0.0)

    async def main() -> None:
        relay = make_relay(sim, clock, llm_breaker_failures=1, llm_breaker_cooldown=5)
        try:
            sim.configure(fault="http_503")
            _, gen, failure = await answer(relay, fallback_ok=False)
            assert failure is not None and failure.kind == "http"
            assert relay.breaker.state == "open"
            clock.advance(5)
            requests = sim.stats()["requests"]
            _, gen, failure = await answer(relay)
            assert failure is None and gen.engine.name == "scripted"
            assert sim.stats()["requests"] > requests  # the probe did go out
            assert relay.breaker.state == "open"
        finally:
            await relay.aclose()

    asyncio.run(main())


def test_a_cut_off_answer_is_a_failure_but_a_long_one_is_not(sim: Sim) -> None:
    async def main() -> None:
        relay = make_relay(sim, llm_breaker_failures=1)
        try:
            sim.configure(fault="midstream_error", fault_after_tokens=2)
            text, _, failure = await answer(relay)
            # Text was shown: no fallback for this turn, and no retry after the first token.
            assert failure is not None and failure.kind == "stream_error" and text
            assert sim.stats()["requests"] == 1
            assert relay.breaker.state == "open"
        finally:
            await relay.aclose()
        # An answer cut at max_tokens is a failure of the turn, not of the endpoint.
        sim.configure(fault="none")
        relay = make_relay(sim, llm_breaker_failures=1, llm_max_tokens=2)
        try:
            _, _, failure = await answer(relay)
            assert failure is not None and failure.kind == "length"
            assert relay.breaker.state == "closed"
        finally:
            await relay.aclose()

    asyncio.run(main())


# ---------------------------------------------------------------- the gate and its queue


def test_queue_positions_are_first_come_first_served(sim: Sim) -> None:
    sim.configure(reply="胸口疼，" * 6, ttft_ms=5, itl_ms=15)

    async def main() -> dict[str, list[int]]:
        relay = make_relay(sim, llm_max_concurrent=2)
        relay.gate.notice_s = 0.0
        positions: dict[str, list[int]] = {f"k{i}": [] for i in range(5)}
        seen: list[int] = []
        order: list[str] = []

        async def one(key: str) -> None:
            text, _, failure = await answer(relay, key=key, positions=positions[key], seen=seen)
            assert failure is None and text == "胸口疼，" * 6
            order.append(key)

        try:
            tasks = []
            for key in positions:
                tasks.append(asyncio.create_task(one(key)))
                await asyncio.sleep(0)  # each joins before the next
            await asyncio.sleep(0.02)
            assert relay.gate.positions() == {"k2": 1, "k3": 2, "k4": 3}
            with pytest.raises(TurnInProgress):  # one generation per contestant
                await relay.gate.acquire("k3", lambda p: None, 1)
            await asyncio.gather(*tasks)
        finally:
            await relay.aclose()
        assert max(seen) <= 2
        assert order[:2] == ["k0", "k1"] or set(order[:2]) == {"k0", "k1"}
        assert relay.gate.positions() == {} and relay.gate.active == set()
        return positions

    positions = asyncio.run(main())
    assert positions["k0"] == positions["k1"] == []
    assert positions["k2"] == [1, 0]
    assert positions["k3"][0] == 2 and positions["k3"][-1] == 0
    assert positions["k4"][0] == 3 and positions["k4"][-1] == 0
    for told in positions.values():
        assert told == sorted(told, reverse=True) and len(set(told)) == len(told)
    assert sim.stats()["requests"] == 5


def test_leaving_the_queue_moves_the_others_up() -> None:
    async def main() -> tuple[list[int], list[int]]:
        gate = Gate(1, notice_s=0.0)
        await gate.acquire("a", lambda p: None, 5)
        b_told: list[int] = []
        c_told: list[int] = []
        b = asyncio.create_task(gate.acquire("b", b_told.append, 5))
        c = asyncio.create_task(gate.acquire("c", c_told.append, 5))
        await asyncio.sleep(0)
        assert gate.positions() == {"b": 1, "c": 2}
        b.cancel()  # b's contestant left while waiting
        with pytest.raises(asyncio.CancelledError):
            await b
        await asyncio.sleep(0.01)
        assert gate.positions() == {"c": 1}
        gate.release("a")
        await c
        assert gate.active == {"c"}
        return b_told, c_told

    b_told, c_told = asyncio.run(main())
    assert b_told == [1] and c_told == [2, 1, 0]


def test_a_full_queue_fails_as_busy_instead_of_hanging(sim: Sim) -> None:
    sim.configure(reply="痛" * 30, itl_ms=30)

    async def main() -> None:
        relay = make_relay(sim, llm_max_concurrent=1, llm_queue_timeout=0.2)
        try:
            first = asyncio.create_task(answer(relay, key="a"))
            await asyncio.sleep(0.05)
            text, _, failure = await answer(relay, key="b")
            assert failure is not None and failure.kind == "busy" and text == ""
            assert "稍后" in failure.message_zh
            assert relay.gate.positions() == {}
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            assert relay.gate.active == set()
        finally:
            await relay.aclose()

    asyncio.run(main())


# ---------------------------------------------------------------- the output guard


def test_guard_catches_a_split_token_leak_and_closes_the_upstream(sim: Sim) -> None:
    assert "下壁" in tokenize(LEAKY) and "心梗" in tokenize(LEAKY)
    sim.configure(reply=LEAKY, itl_ms=20)
    hits_before = metric("arena_llm_guard_hits_total")

    async def main() -> tuple[str, Generation]:
        relay = make_relay(sim)
        try:
            text, gen, failure = await answer(relay)
            assert failure is None
            assert relay.breaker.state == "closed" and relay.breaker.failures == 0
            return text, gen
        finally:
            await relay.aclose()

    text, gen = asyncio.run(main())
    said = deflection(VIEW, 1)
    assert text == "医生，我是不是" + said
    assert "心梗" not in text and "下壁" not in text
    assert gen.leak is not None and gen.leak.kind == "diagnosis"
    assert gen.finished is not None and gen.finished.finish_reason == "guard"
    # The rest of the answer was never generated for nobody.
    sim.wait_for(lambda s: s["streams_disconnected"] == 1)
    assert sim.stats()["streams_completed"] == 0
    assert metric("arena_llm_guard_hits_total") - hits_before == 1


def test_guard_lets_the_doctors_own_differential_through(sim: Sim) -> None:
    # A differential the doctor named may be echoed; the diagnosis never (test_guard.py).
    sim.configure(reply="没有，我从来没得过主动脉夹层。")

    async def main() -> str:
        relay = make_relay(sim)
        try:
            text, gen, failure = await answer(relay, question="以前得过主动脉夹层吗？")
            assert failure is None and gen.leak is None
            return text
        finally:
            await relay.aclose()

    assert asyncio.run(main()) == "没有，我从来没得过主动脉夹层。"


# ---------------------------------------------------------------- priority and frames


@pytest.mark.parametrize("priority", [None, -5])
def test_priority_is_sent_only_when_set(sim: Sim, priority: int | None) -> None:
    async def main() -> None:
        relay = make_relay(sim, llm_priority=priority)
        try:
            _, _, failure = await answer(relay)
            assert failure is None
        finally:
            await relay.aclose()

    asyncio.run(main())
    sent = sim.stats()["last_request"]
    assert sent.get("priority") == priority and ("priority" in sent) == (priority is not None)


def test_frames_send_at_once_and_coalesce_only_a_burst() -> None:
    async def main() -> list[str]:
        sent: list[str] = []
        frames = Frames(sent.append, time.perf_counter())
        frames.push("医")
        assert sent == ["医"]  # never held back waiting for more
        frames.push("生")
        frames.push("，")
        assert sent == ["医"]
        await asyncio.sleep(0)  # the loop came round: the burst goes as one frame
        assert sent == ["医", "生，"]
        await asyncio.sleep(0)
        frames.push("我")
        assert sent[-1] == "我"
        frames.push("胸口")
        frames.flush()  # the end of the answer: nothing stays behind
        await asyncio.sleep(0)
        return sent

    sent = asyncio.run(main())
    assert sent == ["医", "生，", "我", "胸口"]
