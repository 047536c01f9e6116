"""The `llm` engine end to end: browser protocol → server → simulator, over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest

from arena.patient import system_prompt
from server.library import Library
from server.settings import Settings
from tests.support import Client, Sim, running_server


@pytest.fixture(scope="module")
def llm_server(settings: Settings, sim_root: str) -> Iterator[str]:
    llm_settings = msgspec.structs.replace(
        settings, llm_base_url=f"{sim_root}/v1", llm_read_timeout=2.0, llm_connect_timeout=2.0
    )
    with running_server(llm_settings) as url:
        yield url


def start(c: Client, case_id: str = "stemi_inferior") -> str:
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
    view = Library.load(settings.cases_dir).view("stemi_inferior")
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
