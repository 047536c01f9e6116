"""The `llm` engine end to end: browser protocol → server → simulator, over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest

from arena.prompt import system_prompt
from server import protocol
from server.services.library import Library
from server.settings import Settings
from tests.support import Client, Sim, own_schema, running_server


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Iterator[Settings]:
    """A database of this module's own: practice needs cases that no round another module
    left unpublished reserves (a reserved case is not open to practice)."""
    with own_schema(settings, "llm_round") as own:
        yield own


def start(c: Client, case_id: str = "r8c3vn") -> str:
    welcome = c.hello()
    assert welcome.engine == "llm"
    c.request("start_practice", case_id=case_id)
    return str(c.expect("practice_started").attempt_id)


def test_answers_stream_from_the_llm_with_usage_recorded(
    llm_server: str, sim: Sim, settings: Settings, fetch_events  # type: ignore[no-untyped-def]
) -> None:
    sim.configure(reply="胸口闷，像压了块石头。", itl_ms=2)
    with Client(llm_server) as c:
        attempt = start(c)
        text, end, deltas = c.answer("怎么个痛法？")
    assert text == "胸口闷，像压了块石头。" and deltas > 3 and end.status == "ok"
    assert end.tokens_in > 0 and end.tokens_out > 0 and end.ttft_ms is not None
    sent = sim.stats()["last_request"]
    view = Library.load(settings.cases_dir).view("r8c3vn")
    assert sent["messages"][0] == {"role": "system", "content": system_prompt(view)}
    assert sent["stream_options"] == {"include_usage": True}
    answered = next(e for e in fetch_events(attempt) if e["kind"] == "answered")["payload"]
    assert answered["engine"] == "llm" and answered["tokens_in"] == end.tokens_in


def test_error_mid_stream_is_a_clear_failed_turn_and_the_student_can_ask_again(
    llm_server: str, sim: Sim, fetch_events  # type: ignore[no-untyped-def]
) -> None:
    sim.configure(reply="我早上七点多开始痛的，一直没停。", fault="midstream_error",
                  fault_after_tokens=3)
    with Client(llm_server) as c:
        attempt = start(c)
        partial, end, _ = c.answer("什么时候开始痛的？")
        assert end.status == "failed" and end.code == "llm_stream_error"
        assert "重" in end.message and partial  # Chinese message, partial text was shown
        sim.configure(fault="none")
        text, end2, _ = c.answer("什么时候开始痛的？")
        assert end2.status == "ok" and text == "我早上七点多开始痛的，一直没停。"
    answers = [e["payload"] for e in fetch_events(attempt) if e["kind"] == "answered"]
    assert [a["status"] for a in answers] == ["failed", "ok"]
    assert answers[0]["text"] == partial and answers[0]["error"] == "stream_error"


def test_llm_down_gives_a_message_not_a_hang(llm_server: str, sim: Sim) -> None:
    sim.configure(fault="http_503")
    with Client(llm_server) as c:
        start(c)
        _, end, _ = c.answer("哪里不舒服？")
        assert end.status == "failed" and end.code == "llm_http" and end.message


def test_disconnect_closes_the_upstream_stream(
    llm_server: str, sim: Sim, fetch_events  # type: ignore[no-untyped-def]
) -> None:
    sim.configure(reply="痛" * 200, itl_ms=30)
    with Client(llm_server) as c:
        attempt = start(c)
        c.request("ask", text="哪里不舒服？")
        c.expect("answer_delta")
        c.expect("answer_delta")
    # The contestant is gone: the simulator must see its stream closed long before the
    # 200 tokens x 30 ms it would otherwise take.
    began = time.monotonic()
    sim.wait_for(lambda s: s["streams_disconnected"] == 1, timeout=3)
    assert time.monotonic() - began < 3
    assert sim.stats()["streams_completed"] == 0
    deadline = time.monotonic() + 3
    while not [e for e in fetch_events(attempt) if e["kind"] == "answered"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    answered = next(e for e in fetch_events(attempt) if e["kind"] == "answered")["payload"]
    assert answered["status"] == "failed" and answered["error"] == "disconnected"
    assert answered["text"].startswith("痛")


# ---------------------------------------------------------------- the relay at scale, end to end


@pytest.fixture(scope="module")
def relay_server(settings: Settings, sim_root: str) -> Iterator[str]:
    """One LLM slot, a breaker that opens at the first failed turn and probes after 0.5 s."""
    relay_settings = msgspec.structs.replace(
        settings, llm_base_url=f"{sim_root}/v1", llm_read_timeout=2.0, llm_connect_timeout=2.0,
        llm_max_concurrent=1, llm_breaker_failures=1, llm_breaker_cooldown=0.5,
    )
    with running_server(relay_settings) as url:
        yield url


def test_contestants_beyond_the_cap_are_told_their_place_in_the_queue(
    relay_server: str, sim: Sim
) -> None:
    sim.configure(reply="胸口疼，" * 8, itl_ms=25)
    with Client(relay_server) as a, Client(relay_server) as b, Client(relay_server) as c:
        for client in (a, b, c):
            start(client)
        a.request("ask", text="哪里不舒服？")
        first = a.expect("answer_delta").text  # a holds the only slot
        b.request("ask", text="哪里不舒服？")
        assert b.expect("answer_queued").position == 1
        c.request("ask", text="哪里不舒服？")
        assert c.expect("answer_queued").position == 2
        texts = {}
        for name, client in (("a", a), ("b", b), ("c", c)):
            parts = [first] if client is a else []
            while not isinstance(msg := client.recv(), protocol.AnswerEnd):
                if isinstance(msg, protocol.AnswerDelta):
                    parts.append(msg.text)
            assert msg.status == "ok"
            texts[name] = "".join(parts)
        assert set(texts.values()) == {"胸口疼，" * 8}
        told_b = [m.position for m in b.received if isinstance(m, protocol.AnswerQueued)]
        told_c = [m.position for m in c.received if isinstance(m, protocol.AnswerQueued)]
    assert told_b == [1, 0] and told_c == [2, 1, 0]
    assert sim.stats()["requests"] == 3


def test_a_leaked_diagnosis_never_reaches_the_contestant(
    relay_server: str, sim: Sim, fetch_events  # type: ignore[no-untyped-def]
) -> None:
    sim.configure(reply="医生，我是不是下壁心梗了？我爸也是这个病，后来就走了。", itl_ms=10)
    with Client(relay_server) as c:
        attempt = start(c)
        text, end, _ = c.answer("你觉得自己怎么了？")
    assert end.status == "ok"
    assert text.startswith("医生，我是不是") and "心梗" not in text and "下壁" not in text
    assert len(text) > len("医生，我是不是")  # the in-character deflection followed
    sim.wait_for(lambda s: s["streams_disconnected"] == 1)
    answered = next(e for e in fetch_events(attempt) if e["kind"] == "answered")["payload"]
    assert answered["status"] == "ok" and answered["text"] == text
    assert answered["guard"] == "diagnosis"


def test_llm_outage_switches_to_the_scripted_patient_and_back(
    relay_server: str, sim: Sim
) -> None:
    sim.configure(fault="http_500")
    with Client(relay_server) as c:
        start(c)
        text, end, _ = c.answer("什么时候开始痛的？")  # fails, opens the breaker, falls back
        notice = next(m for m in c.received if isinstance(m, protocol.EngineNotice))
        assert notice.engine == "scripted" and "离线" in notice.message
        assert end.status == "ok" and text
        requests = sim.stats()["requests"]
        text, end, _ = c.answer("怎么个痛法？")
        assert end.status == "ok" and text and sim.stats()["requests"] == requests
        sim.configure(fault="none", reply="一直在痛。")
        time.sleep(0.6)  # the breaker's cooldown: the next question probes the endpoint
        text, end, _ = c.answer("现在还痛吗？")
        assert end.status == "ok" and text == "一直在痛。"
        notices = [m.engine for m in c.received if isinstance(m, protocol.EngineNotice)]
        assert notices == ["scripted", "llm"]
