"""The organizer sets who may practise a case, in real Chromium; the student's page follows.

The organizer signs in, finds the cases card and makes a case a draft: it leaves a
student's case list (its link says it is not open), while the organizer, signed in on
the same browser, still sees it on the practice page and may play it. Releasing it
brings it back for students. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from server.settings import Settings
from tests.browser.chromium import SHOTS
from tests.support import ADMIN_PASSWORD, own_schema, running_server

pytestmark = pytest.mark.browser

CASE = "m2x7hd"


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[str]:
    # Its own database: a draft here must not hide the case from other modules' practice.
    with own_schema(settings, "browser_visibility") as own, running_server(own) as url:
        yield url


def _page(browser: Browser, problems: list[str]) -> Page:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    pg.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    return pg


@pytest.fixture
def pages(browser: Browser) -> Iterator[tuple[Page, Page]]:
    """(organizer, student): two browsers that share nothing."""
    problems: list[str] = []
    org, student = _page(browser, problems), _page(browser, problems)
    yield org, student
    org.context.close()
    student.context.close()
    assert not problems, "\n".join(problems)


def listed(page: Page, url: str) -> bool:
    page.goto(url + "/")
    expect(page.get_by_test_id("case-list")).not_to_have_attribute("aria-busy", "true")
    return page.get_by_test_id(f"case-{CASE}").count() == 1


def test_the_organizer_hides_and_releases_a_case(
    pages: tuple[Page, Page], live_server: str
) -> None:
    org, student = pages
    assert listed(student, live_server)

    org.goto(live_server + "/organizer.html")
    org.get_by_test_id("login-username").fill("admin")
    org.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
    org.get_by_test_id("login-button").click()
    select = org.get_by_test_id(f"visibility-{CASE}")
    expect(select).to_have_value("practice")
    select.select_option("draft")
    row = org.get_by_test_id("case-vis-list").locator(f"[data-case={CASE}]")
    expect(row).to_contain_text("学生不可见")
    expect(org.get_by_test_id(f"visibility-{CASE}")).to_have_value("draft")
    SHOTS.mkdir(parents=True, exist_ok=True)
    org.get_by_test_id("cases-card").screenshot(path=SHOTS / "organizer-case-visibility.png")

    # The student: not listed, and a shared link says it is not open.
    assert not listed(student, live_server)
    student.goto("about:blank")  # from "/", a new hash alone would not reload the page
    student.goto(live_server + f"/#case={CASE}")
    toast = student.get_by_test_id("landing").get_by_test_id("toast")
    expect(toast).to_have_attribute("data-code", "case_unavailable")

    # The organizer on the practice page: listed as staff-only, and playable.
    assert listed(org, live_server)
    expect(org.get_by_test_id(f"staff-only-{CASE}")).to_be_visible()
    org.get_by_test_id(f"start-{CASE}").click()
    expect(org.get_by_test_id("practice")).to_be_visible()
    expect(org.get_by_test_id("patient-bubble").first).not_to_be_empty()

    org.goto(live_server + "/organizer.html")
    org.get_by_test_id(f"visibility-{CASE}").select_option("practice")
    expect(org.get_by_test_id("case-vis-list").locator(f"[data-case={CASE}]")).to_contain_text(
        "学生可练习")
    assert listed(student, live_server)
