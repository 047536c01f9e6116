"""Practice in real Chromium: a diagnosis the scoring rules cannot decide says so on the card.

There is no judge in practice, so the card itself must tell the student that the
diagnosis awaits review (待评委复核) and why, instead of calling it wrong.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from server.settings import Settings
from tests.support import own_schema, running_server, warm_up

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[str]:
    with own_schema(settings, "browser_review") as own, running_server(own) as url:
        warm_up(url)
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    pg.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}")
          if m.type == "error" else None)
    yield pg
    context.close()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


def test_the_card_says_a_judge_must_review_an_undecidable_diagnosis(
        page: Page, live_server: str) -> None:
    page.goto(live_server + "/")
    page.get_by_test_id("name-input").fill("复核测试")
    page.get_by_test_id("start-r8c3vn").click()
    expect(page.get_by_test_id("practice")).to_be_visible()
    page.get_by_test_id("diagnosis-input").fill("下壁心肌缺血事件")
    page.get_by_test_id("submit-button").click()
    page.get_by_test_id("confirm-submit").click()
    expect(page.get_by_test_id("score-card")).to_be_visible()
    expect(page.get_by_test_id("verdict")).to_contain_text("待评委复核")
    review = page.get_by_test_id("score-review")
    expect(review).to_contain_text("待评委复核：")
    expect(review).to_contain_text("下壁心肌缺血事件")  # the reason names what was written
