"""A whole practice round in real Chromium, on a laptop and on a phone.

Drives the contestant page served at `/` against the real server (scripted
patient): choose a case, interview the patient (answers stream token by token),
order an exam and a test, submit a diagnosis and read the score card. Any page
error or console error fails the test. Screenshots of each step go to
artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from arena.cases import load_case
from arena.secrecy import answer_terms, find_terms
from server.settings import Settings
from tests.browser.chromium import SHOTS, watch_stream
from tests.support import own_schema, running_server, warm_up

pytestmark = pytest.mark.browser

CASES = Path(__file__).resolve().parents[2] / "cases"
CASE = "r8c3vn"
EXAM, TEST = "exam.heart", "ecg.standard"  # ids on the shared menu (arena/catalogue.tsv)

VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
        "device_scale_factor": 2,
    },
}

WATCH_STREAM = watch_stream("chat-log")


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[str]:
    """A database of this module's own: a round another module leaves unpublished reserves
    its case, and a reserved case is not open to practice."""
    with own_schema(settings, "browser_practice") as own, running_server(own) as url:
        warm_up(url)
        yield url


@pytest.fixture(params=sorted(VIEWPORTS))
def page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN", **VIEWPORTS[request.param])
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    pg.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}")
          if m.type == "error" else None)
    yield pg
    context.close()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


def is_phone(page: Page) -> bool:
    size = page.viewport_size
    return size is not None and size["width"] < 600


def shot(page: Page, step: str, *, full_page: bool = False) -> None:
    """Screenshot a step, and check that nothing sticks out sideways (phones scroll only down)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert page.viewport_size is not None
    assert width <= page.viewport_size["width"], f"{step}: page is {width}px wide"
    SHOTS.mkdir(parents=True, exist_ok=True)
    name = "phone" if is_phone(page) else "desktop"
    page.screenshot(path=SHOTS / f"{name}-{step}.png", full_page=full_page)


def show(page: Page, tab: str) -> None:
    """Phones show one pane at a time behind tabs; wide screens show them all."""
    button = page.get_by_test_id(f"tab-{tab}")
    if button.is_visible():
        button.click()
        expect(button).to_have_attribute("aria-selected", "true")


def ask(page: Page, question: str) -> str:
    """Ask, wait for the streamed answer to finish, check it streamed; return its text."""
    bubbles = page.get_by_test_id("patient-bubble")
    before = bubbles.count()
    box, send = page.get_by_test_id("question-input"), page.get_by_test_id("send-button")
    box.fill(question)
    if is_phone(page):
        send.tap()
    else:
        box.press("Enter")
    expect(bubbles).to_have_count(before + 1)
    bubble = bubbles.nth(before)
    expect(bubble).to_have_attribute("data-state", "done", timeout=20_000)
    expect(box).to_be_enabled()
    expect(send).to_be_enabled()
    text = bubble.get_by_test_id("bubble-text").inner_text()
    assert text.strip(), f"empty answer to {question!r}"
    turn = bubble.get_attribute("data-turn")
    lengths = {n for t, n in page.evaluate("window.__lengths") if t == turn and n > 0}
    assert len(lengths) > 1, f"answer to {question!r} arrived in one DOM update, not streamed"
    expect(page.get_by_test_id("doctor-bubble").last).to_contain_text(question)
    return text


def test_practice_round(page: Page, live_server: str) -> None:
    # (1) landing: the case cards come from GET /api/cases
    page.goto(live_server + "/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    start = page.get_by_test_id(f"start-{CASE}")
    expect(start).to_be_visible()
    expect(page.get_by_test_id(f"case-{CASE}")).to_contain_text("胸痛")
    # Before the submission nothing on the page names the answer key.
    expect(page.get_by_test_id("answer-key")).to_have_count(0)
    page.get_by_test_id("name-input").fill("浏览器测试")
    # Dozens of cases: the student narrows them by specialty and difficulty, or searches.
    page.get_by_test_id("case-specialty").select_option("心血管内科")
    page.get_by_test_id("case-difficulty").select_option("medium")
    expect(page.get_by_test_id(f"case-{CASE}")).to_be_visible()
    expect(page.get_by_test_id("case-count")).to_contain_text("个病例")
    page.get_by_test_id("case-search").fill("不存在的病例标题")
    expect(page.get_by_test_id(f"case-{CASE}")).to_be_hidden()
    expect(page.locator("#case-none")).to_be_visible()
    page.get_by_test_id("case-search").fill("胸痛")
    expect(start).to_be_visible()
    shot(page, "1-landing")

    # (2) start: patient card, opening statement, vital signs
    start.click()
    expect(page.get_by_test_id("practice")).to_be_visible()
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("patient-line")).not_to_be_empty()
    expect(page.get_by_test_id("chief-complaint")).to_contain_text("胸痛")
    expect(page.get_by_test_id("appearance")).not_to_be_empty()
    expect(page.get_by_test_id("vitals")).to_contain_text("血氧饱和度")
    expect(page.get_by_test_id("vital-bp")).to_have_text(re.compile(r"^\d+/\d+$"))
    opening = page.get_by_test_id("patient-bubble").first
    expect(opening.get_by_test_id("bubble-text")).not_to_be_empty()
    assert "#case=" + CASE in page.url
    shot(page, "2-started")

    # (3) interview: answers stream in, the box is locked while the patient speaks
    page.evaluate(WATCH_STREAM)
    ask(page, "哪里不舒服？")
    ask(page, "胸痛是什么时候开始的？")
    shot(page, "3-interview")
    # Nothing shown before an order or the submission names the answer key.
    key_terms = answer_terms(load_case((CASES / f"{CASE}.json").read_bytes()))
    assert not find_terms(page.locator("body").inner_text(), key_terms)

    # (4) an exam and a test from the menu; results appear under them
    show(page, "orders")
    page.get_by_test_id("order-filter").fill("心电")
    expect(page.get_by_test_id(f"order-{TEST}")).to_be_visible()
    expect(page.get_by_test_id(f"order-{EXAM}")).to_be_hidden()
    page.get_by_test_id("order-filter").fill("")
    for item in (EXAM, TEST):
        page.get_by_test_id(f"order-{item}").click()
        result = page.get_by_test_id(f"result-{item}")
        expect(result).to_be_visible()
        expect(result).not_to_be_empty()
        expect(page.get_by_test_id(f"order-{item}")).to_be_disabled()  # no double charge
    expect(page.get_by_test_id(f"result-{TEST}")).to_have_class(re.compile(r"\babnormal\b"))
    expect(page.get_by_test_id("cost-total")).to_have_text("¥25")
    expect(page.get_by_test_id("order-n")).to_have_text("2")
    page.get_by_test_id(f"result-{TEST}").scroll_into_view_if_needed()
    shot(page, "4-orders")

    # (5) submit: an empty diagnosis is caught here, then a confirm step
    show(page, "submit")
    page.get_by_test_id("submit-button").click()
    expect(page.get_by_test_id("submit-form").get_by_test_id("toast")).to_contain_text("主要诊断")
    expect(page.get_by_test_id("confirm-box")).to_be_hidden()
    page.get_by_test_id("diagnosis-input").fill("急性下壁心肌梗死")
    page.get_by_test_id("differential-0").fill("主动脉夹层")
    page.get_by_test_id("differential-1").fill("肺栓塞")
    page.get_by_test_id("reasoning-input").fill(
        "胸骨后压榨性疼痛2小时伴大汗；心动过缓、低血压；心电图下壁导联ST段抬高。"
    )
    page.get_by_test_id("submit-button").click()
    expect(page.get_by_test_id("confirm-box")).to_contain_text("提交后不能修改")
    shot(page, "5-confirm")
    page.get_by_test_id("confirm-submit").click()

    card = page.get_by_test_id("score-card")
    expect(card).to_be_visible()
    expect(page.get_by_test_id("score-total")).to_have_text(re.compile(r"^\d+(\.\d)?$"))
    expect(page.get_by_test_id("verdict")).to_contain_text("正确")
    sections = card.get_by_test_id("score-section")
    assert sections.count() >= 3
    expect(sections.first).to_contain_text("主要诊断")
    assert card.get_by_test_id("score-line").count() >= sections.count()
    expect(card).to_contain_text("主动脉夹层")
    # The answer key and teaching points, on the student's own card after the submission.
    key = card.get_by_test_id("answer-key")
    expect(key.get_by_test_id("key-diagnosis")).to_have_text("急性下壁ST段抬高型心肌梗死")
    assert key.get_by_test_id("key-teaching").locator("li").count() >= 1
    shot(page, "6-score")
    key.scroll_into_view_if_needed()
    shot(page, "6-answer-key")
    page.evaluate("window.scrollTo(0, 0)")  # sticky bars would sit mid-page in a full shot
    shot(page, "7-score-full", full_page=True)

    # A second submission, another question or order is not possible any more.
    expect(page.get_by_test_id("submit-button")).to_be_disabled()
    expect(page.get_by_test_id("confirm-box")).to_be_hidden()
    expect(page.get_by_test_id("diagnosis-input")).to_be_disabled()
    expect(page.get_by_test_id("question-input")).to_be_disabled()
    expect(page.get_by_test_id("order-exam.lung")).to_be_disabled()


def test_unknown_case_link_shows_error(page: Page, live_server: str) -> None:
    """A shared link to a case that does not exist: a clear message, the page keeps working."""
    page.goto(live_server + "/#case=no_such_case")
    toast = page.get_by_test_id("landing").get_by_test_id("toast")
    expect(toast).to_be_visible()
    expect(toast).to_have_attribute("data-code", "case_unavailable")
    shot(page, "8-unknown-case")
    toast.get_by_test_id("toast-close").click()
    expect(toast).to_be_hidden()
    page.get_by_test_id(f"start-{CASE}").click()
    expect(page.get_by_test_id("practice")).to_be_visible()
    expect(page.get_by_test_id("patient-bubble").first).not_to_be_empty()


def test_failed_answer_retry_and_reconnect(page: Page, live_server: str) -> None:
    """The patient's answer fails (as when the LLM times out), then the connection drops.

    The page's WebSocket goes through a proxy in the test, which turns one answer_end
    into a failure and later cuts the connection the way a server resync does.
    """
    routes: list[WebSocketRoute] = []
    servers: list[WebSocketRoute] = []
    fail_next = [False]

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            msg = json.loads(message)
            if msg["type"] == "answer_end" and fail_next[0]:
                fail_next[0] = False
                msg.update(status="failed", code="llm_timeout",
                           message="病人回答超时，请重新提问。", message_en="Timed out.")
            ws.send(json.dumps(msg, ensure_ascii=False))

        server.on_message(from_server)
        routes.append(ws)
        servers.append(server)

    page.route_web_socket(re.compile(r"/ws$"), proxy)
    page.goto(live_server + "/")
    page.get_by_test_id(f"start-{CASE}").click()
    expect(page.get_by_test_id("practice")).to_be_visible()

    fail_next[0] = True
    page.get_by_test_id("question-input").fill("哪里不舒服？")
    page.get_by_test_id("send-button").click()
    failed = page.get_by_test_id("patient-bubble").nth(1)
    expect(failed).to_have_attribute("data-state", "failed")
    expect(failed.get_by_test_id("answer-failed")).to_contain_text("病人回答超时")
    expect(page.get_by_test_id("question-input")).to_be_enabled()
    shot(page, "9-answer-failed")
    failed.get_by_test_id("retry-button").click()
    expect(failed.get_by_test_id("retry-button")).to_have_count(0)
    again = page.get_by_test_id("patient-bubble").nth(2)
    expect(again).to_have_attribute("data-state", "done")
    expect(again.get_by_test_id("bubble-text")).not_to_be_empty()
    expect(page.get_by_test_id("doctor-bubble").last).to_contain_text("重新提问")

    # The server says resync and closes: the page says so and offers to reconnect.
    routes[-1].send(json.dumps({"type": "resync", "reason": "send queue full"}))
    routes[-1].close(code=4008, reason="resync")
    servers[-1].close()
    banner = page.get_by_test_id("conn-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("连接已断开")
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "lost")
    shot(page, "10-disconnected")
    page.get_by_test_id("reconnect-button").click()
    expect(banner).to_be_hidden()
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open")
    assert len(routes) == 2
    expect(page.get_by_test_id("patient-bubble")).to_have_count(1)  # a fresh practice round
    expect(page.get_by_test_id("question-input")).to_be_enabled()
