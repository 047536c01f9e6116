"""One whole competition in real Chromium, every role on its own page, on the real server.

The organizer (desktop) signs in at /organizer.html, creates a competition, imports a
roster of two contestants (a GBK-encoded CSV file, as Excel saves it, through the file
picker), creates a round of r8c3vn (3 s countdown, 10 min, board visible), opens
the lobby and makes a big-screen link, all with the page's own controls. Two contestants
on phones join (张明 types the code, 李华 opens the #code= link), wait in the lobby, see
the shared countdown once the organizer starts, then interview the patient (answers
stream in), order an exam and a test and submit. 李华 reloads mid-round and finds the
transcript, orders and clock as they were, then writes a diagnosis the rules cannot
match. A judge, whose account is made through the HTTP API (the console has no
accounts page), signs in at /judge.html, reads 李华's transcript and rules the diagnosis
correct, and the board changes. Until publication the big screen and the phones show
progress only, no score or rank. The organizer ends (with a reason) and publishes; the
big screen (1920×1080) plays the reveal and shows the final banner; each phone shows
its results, rank and the answer key.

Any page error or console error on any page fails the test. Screenshots of each step go
to artifacts/screenshots/competition-*.png for a person to look at.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.chromium import SHOTS, watch_stream
from tests.support import ADMIN_PASSWORD, Api, ApiError, make_round

pytestmark = pytest.mark.browser

CASE = "r8c3vn"
EXAM, TEST = "exam.heart", "ecg.standard"  # ids on the shared menu (arena/catalogue.tsv)
# arena.scoring.judge_diagnosis says "needs_judge" to this (no known name, but words shared
# with the key): it waits in the judges' queue.
FREE_TEXT_DX = "下壁心肌缺血事件"

DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
    "device_scale_factor": 2,
}
SCREEN: dict[str, Any] = {"viewport": {"width": 1920, "height": 1080}}

WATCH_STREAM = watch_stream("chat")


class Pages:
    """Opens pages in their own contexts (own storage, own viewport) and collects errors."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []

    def open(self, who: str, options: dict[str, Any]) -> Page:
        context = self.browser.new_context(locale="zh-CN", **options)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda exc: self.problems.append(f"{who} pageerror: {exc}"))
        page.on("console", lambda m: self.problems.append(f"{who} console.{m.type}: {m.text}")
                if m.type == "error" else None)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    p = Pages(browser)
    yield p
    p.close()
    assert not p.problems, "the pages logged errors:\n" + "\n".join(p.problems)


def organizer(pages: Pages, url: str) -> Page:
    """The organizer console on a laptop, signed in as admin."""
    org = pages.open("organizer", DESKTOP)
    org.goto(url + "/organizer.html")
    org.get_by_test_id("login-username").fill("admin")
    org.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
    org.get_by_test_id("login-button").click()
    expect(org.get_by_test_id("user-name")).to_contain_text("组织者")
    return org


def shot(page: Page, step: str, *, full_page: bool = False) -> None:
    """Screenshot a step, and check that nothing sticks out sideways."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert page.viewport_size is not None
    assert width <= page.viewport_size["width"], f"{step}: page is {width}px wide"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"competition-{step}.png", full_page=full_page)


def show(page: Page, tab: str) -> None:
    """Phones show one pane at a time behind tabs."""
    button = page.get_by_test_id(f"tab-{tab}")
    if button.is_visible():
        button.tap()
        expect(button).to_have_attribute("aria-selected", "true")


def ask(page: Page, question: str) -> None:
    """Ask on the phone; the answer must stream in over several DOM updates."""
    page.evaluate(WATCH_STREAM)
    bubbles = page.get_by_test_id("patient-bubble")
    before = bubbles.count()
    page.get_by_test_id("question").fill(question)
    page.get_by_test_id("send").tap()
    expect(bubbles).to_have_count(before + 1)
    bubble = bubbles.nth(before)
    expect(bubble).to_have_attribute("data-state", "done", timeout=20_000)
    expect(bubble.get_by_test_id("bubble-text")).not_to_be_empty()
    turn = bubble.get_attribute("data-turn")
    lengths = {n for t, n in page.evaluate("window.__lengths") if t == turn and n > 0}
    assert len(lengths) > 1, f"answer to {question!r} arrived in one DOM update, not streamed"
    expect(page.get_by_test_id("doctor-bubble").last).to_contain_text(question)
    expect(page.get_by_test_id("question")).to_be_enabled()


def order(page: Page, *items: str) -> None:
    show(page, "orders")
    for item in items:
        page.get_by_test_id(f"order-{item}").tap()
        expect(page.get_by_test_id(f"result-{item}")).to_be_visible()
        expect(page.get_by_test_id(f"result-{item}")).not_to_be_empty()
        expect(page.get_by_test_id(f"order-{item}")).to_be_disabled()


def submit(page: Page, diagnosis: str, differential: str, reasoning: str) -> None:
    show(page, "submit")
    page.get_by_test_id("diagnosis").fill(diagnosis)
    page.get_by_test_id("differential-0").fill(differential)
    page.get_by_test_id("reasoning").fill(reasoning)
    page.get_by_test_id("submit").tap()
    expect(page.get_by_test_id("confirm-box")).to_contain_text("提交后不能修改")
    page.get_by_test_id("confirm-submit").tap()
    # Visible: the note is in the page (hidden) before the ack. The ack waits for the
    # niced matching process, slow to start on a busy machine.
    expect(page.get_by_test_id("submitted-note")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("submitted-note")).to_contain_text("已提交，等待公布成绩")
    expect(page.get_by_test_id("diagnosis")).to_be_disabled()


def remaining(page: Page) -> int:
    value = page.get_by_test_id("countdown").get_attribute("data-remaining")
    assert value, "no remaining time on the contestant's clock"
    return int(value)


def test_competition(pages: Pages, live_server: str) -> None:
    tag = uuid.uuid4().hex[:4]
    title = f"临床技能大赛 {tag}"
    judge_user = f"judge-{tag}"
    Api.login(live_server).call("POST", "/api/accounts", {
        "username": judge_user, "password": "judge-password", "role": "judge",
        "display_name": "王明远",
    })

    # (1) the organizer: sign in, competition, roster, round, lobby, big-screen link
    org = organizer(pages, live_server)
    expect(org.get_by_test_id("conn-status")).to_have_attribute("data-state", "open")
    org.get_by_test_id("competition-title").fill(title)
    org.get_by_test_id("create-competition").click()
    expect(org.get_by_test_id("competition-heading")).to_have_text(title)

    roster = (
        "姓名,学校,队伍,邮箱\n"
        f"张明,协和医学院,红队,zhangming-{tag}@example.com\n"
        f"李华,华西医学院,蓝队,lihua-{tag}@example.com\n"
    )
    # Saved by Excel on a Chinese Windows: GBK, which the page decodes before showing it.
    org.get_by_test_id("roster-file").set_input_files(files=[
        {"name": "决赛名单.csv", "mimeType": "text/csv", "buffer": roster.encode("gbk")},
    ])
    expect(org.get_by_test_id("roster-file-name")).to_have_text("决赛名单.csv")
    expect(org.get_by_test_id("roster-csv")).to_have_value(roster)
    org.get_by_test_id("import-roster").click()
    expect(org.get_by_test_id("roster-note")).to_contain_text("已导入 2 名选手")
    rows = org.get_by_test_id("roster-row")
    expect(rows).to_have_count(2)
    codes = {rows.nth(i).locator("td").first.inner_text(): rows.nth(i) for i in range(2)}
    code_a = codes["张明"].get_by_test_id("roster-code").inner_text().strip()
    link_b = codes["李华"].get_by_test_id("roster-link").get_attribute("href")
    assert code_a and link_b and "#code=" in link_b

    org.get_by_test_id("round-title").fill("决赛 第一场")
    org.get_by_test_id("round-case").select_option(CASE)
    org.get_by_test_id("round-minutes").fill("10")
    org.get_by_test_id("round-countdown").fill("3")
    expect(org.get_by_test_id("round-board-visible")).to_be_checked()
    expect(org.get_by_test_id("round-open-scoring")).not_to_be_checked()  # off by default
    org.get_by_test_id("create-round").click()
    expect(org.get_by_test_id("round-control")).to_be_visible()
    expect(org.get_by_test_id("control-title")).to_have_text("决赛 第一场")
    expect(org.get_by_test_id("round-status")).to_have_text("未开放")
    expect(org.get_by_test_id("round-item")).to_have_count(1)
    org.get_by_test_id("action-open").click()
    expect(org.get_by_test_id("round-status")).to_have_text("候场中")
    expect(org.get_by_test_id("action-start")).to_be_enabled()
    org.get_by_test_id("spectator-create").click()
    link = org.get_by_test_id("spectator-link")
    expect(link).to_have_attribute("href", re.compile(r"/screen\.html\?k="))
    screen_url = link.get_attribute("href")
    assert screen_url
    comp_id = parse_qs(urlparse(org.url).fragment)["c"][0]
    expect(org.get_by_test_id("audit-row").first).to_contain_text("组织者 admin")
    shot(org, "1-organizer-lobby")
    shot(org, "1b-organizer-roster", full_page=True)

    # (2) two contestants on phones: one types the code, one opens the link
    alice = pages.open("contestant 张明", PHONE)
    alice.goto(live_server + "/play.html")
    alice.get_by_test_id("join-code").fill(code_a)
    alice.get_by_test_id("join-button").tap()
    bob = pages.open("contestant 李华", PHONE)
    bob.goto(link_b)
    for phone, name in ((alice, "张明"), (bob, "李华")):
        expect(phone.get_by_test_id("lobby")).to_be_visible()
        expect(phone.get_by_test_id("contestant-name")).to_have_text(name)
        expect(phone.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
        expect(phone.locator("#lobby-heading")).to_have_text("等待组织者开始比赛")
        expect(phone.get_by_test_id("round-title")).to_have_text("决赛 第一场")
        expect(phone.get_by_test_id("joined-count")).to_have_text("2")
    assert "#code=" not in bob.url  # the code is taken out of the address once read
    expect(org.get_by_test_id("joined-count")).to_contain_text("已加入 2 人")
    # The roster follows: both codes now show as used, without a reload.
    expect(org.locator('[data-testid="roster-redeemed"][data-redeemed="true"]')).to_have_count(2)
    shot(alice, "2-phone-lobby")

    screen = pages.open("screen", SCREEN)
    screen.goto(screen_url)
    expect(screen.locator("#round-title")).to_have_text("决赛 第一场")
    expect(screen.get_by_test_id("board").get_by_test_id("board-row")).to_have_count(2)

    # (3) the organizer starts; everyone sees the same countdown, then the case
    org.get_by_test_id("action-start").click()
    expect(org.get_by_test_id("action-note")).to_contain_text("已开始")
    for phone in (alice, bob):
        expect(phone.get_by_test_id("countdown")).to_have_attribute("data-phase", "countdown")
        expect(phone.get_by_test_id("countdown")).to_contain_text("比赛即将开始")
        expect(phone.get_by_test_id("lobby-countdown")).to_have_text(re.compile(r"^[123]$"))
    expect(screen.get_by_test_id("countdown")).to_have_attribute("data-phase", "countdown")
    shot(bob, "3-phone-countdown")
    shot(screen, "4-screen-countdown")
    for phone in (alice, bob):
        expect(phone.get_by_test_id("play")).to_be_visible(timeout=8_000)
        expect(phone.get_by_test_id("countdown")).to_have_attribute("data-phase", "running")
        expect(phone.get_by_test_id("chief-complaint")).to_contain_text("胸痛")
        expect(phone.get_by_test_id("question")).to_be_enabled()
    expect(org.get_by_test_id("round-status")).to_have_text("进行中")
    assert 590 <= remaining(alice) <= 600

    # (4) 张明 plays straight through: ask, exam and test, diagnosis with a differential
    ask(alice, "哪里不舒服？")
    shot(alice, "5-phone-interview")
    order(alice, EXAM, TEST)
    expect(alice.get_by_test_id("cost-total")).to_have_text("¥25")
    alice.get_by_test_id(f"result-{TEST}").scroll_into_view_if_needed()
    shot(alice, "6-phone-orders")
    submit(alice, "急性下壁心肌梗死", "主动脉夹层",
           "胸骨后压榨性疼痛伴大汗；心电图下壁导联ST段抬高。")
    shot(alice, "7-phone-submitted")

    # (5) 李华 asks and orders, then reloads the page before submitting: all is still there
    ask(bob, "胸痛是什么时候开始的？")
    order(bob, EXAM, TEST)
    answer = bob.get_by_test_id("patient-bubble").nth(1).get_by_test_id("bubble-text").inner_text()
    left = remaining(bob)
    bob.reload()
    expect(bob.get_by_test_id("play")).to_be_visible()
    expect(bob.get_by_test_id("contestant-name")).to_have_text("李华")
    show(bob, "interview")
    expect(bob.get_by_test_id("patient-bubble")).to_have_count(2)
    expect(bob.get_by_test_id("doctor-bubble")).to_have_count(1)
    expect(bob.get_by_test_id("doctor-bubble")).to_contain_text("胸痛是什么时候开始的？")
    expect(bob.get_by_test_id("patient-bubble").nth(1).get_by_test_id("bubble-text")).to_have_text(answer)
    shot(bob, "8-phone-after-reload")
    show(bob, "orders")
    expect(bob.get_by_test_id("order-n")).to_have_text("2")
    expect(bob.get_by_test_id("cost-total")).to_have_text("¥25")
    for item in (EXAM, TEST):
        expect(bob.get_by_test_id(f"result-{item}")).to_be_visible()
        expect(bob.get_by_test_id(f"result-{item}")).not_to_be_empty()
        expect(bob.get_by_test_id(f"order-{item}")).to_be_disabled()
    expect(bob.get_by_test_id("countdown")).to_have_attribute("data-phase", "running")
    assert 0 <= left - remaining(bob) <= 15, "the clock did not survive the reload"
    submit(bob, FREE_TEXT_DX, "急性心包炎", "胸痛，心电图示下壁改变。")

    # (6) the judge reads 李华's transcript and rules on the free-text diagnosis
    judge = pages.open("judge", DESKTOP)
    judge.goto(live_server + "/judge.html")
    judge.get_by_test_id("login-username").fill(judge_user)
    judge.get_by_test_id("login-password").fill("judge-password")
    judge.get_by_test_id("login-button").click()
    expect(judge.get_by_test_id("user-name")).to_have_text("王明远（评委）")
    judge.get_by_test_id("judge-competition").select_option(comp_id)
    expect(judge.get_by_test_id("round-status")).to_have_text("进行中")
    board = judge.get_by_test_id("board").get_by_test_id("board-row")
    expect(board).to_have_count(2)
    row_a, row_b = board.filter(has_text="张明"), board.filter(has_text="李华")
    expect(row_a).to_have_attribute("data-submitted", "true")
    expect(row_b).to_have_attribute("data-submitted", "true")
    before = row_b.locator("td.col-score").inner_text()
    assert float(before) < float(row_a.locator("td.col-score").inner_text())
    expect(board.first).to_contain_text("张明")  # the right diagnosis ranks first
    row_b.click()
    expect(judge.get_by_test_id("detail-name")).to_have_text("李华")
    entries = judge.get_by_test_id("transcript-entry")
    expect(entries.filter(has_text="胸痛是什么时候开始的？")).to_have_count(1)
    orders = judge.get_by_test_id("transcript").locator('[data-kind="ordered"]')
    expect(orders).to_have_count(2)
    expect(orders.last).to_contain_text("心电图")  # the name, as the contestant saw it
    expect(orders.last).to_contain_text("异常")
    expect(judge.get_by_test_id("transcript").locator('[data-kind="submitted"]')).to_contain_text(
        FREE_TEXT_DX)
    expect(judge.get_by_test_id("card-verdict")).to_have_text("诊断待评委复核")
    expect(judge.get_by_test_id("review-item")).to_contain_text(FREE_TEXT_DX)
    expect(judge.get_by_test_id("adjudicate-panel")).to_contain_text(FREE_TEXT_DX)
    shot(judge, "9-judge-transcript")
    judge.get_by_test_id("adjudicate-reason").fill("下壁心肌缺血事件结合心电图，实为下壁心梗")
    judge.get_by_test_id("adjudicate-correct").click()
    expect(judge.get_by_test_id("judge-note")).to_contain_text("判为正确")
    expect(judge.get_by_test_id("card-verdict")).to_have_text("诊断正确")
    expect(row_b.locator("td.col-score")).not_to_have_text(before)
    after = float(row_b.locator("td.col-score").inner_text())
    assert after > float(before)
    ruling = judge.get_by_test_id("transcript").locator('[data-kind="adjudicated"]')
    expect(ruling).to_contain_text("王明远：待评委复核 → 正确")
    expect(judge.get_by_test_id("review-queue")).to_be_hidden()
    expect(ruling).to_contain_text("实为下壁心梗")
    expect(judge.get_by_test_id("card")).to_contain_text("评委 王明远：")
    shot(judge, "10-judge-adjudicated")
    ruling.scroll_into_view_if_needed()
    shot(judge, "10b-judge-transcript-end")

    # (7) the big screen and the phones during the round: progress, never a score
    expect(screen.get_by_test_id("countdown")).to_have_attribute("data-phase", "running")
    screen_rows = screen.get_by_test_id("board").get_by_test_id("board-row")
    expect(screen_rows.filter(has_text="李华")).to_have_attribute("data-submitted", "true")
    expect(screen.get_by_test_id("board")).to_have_attribute("data-progress-only", "true")
    expect(screen.get_by_test_id("progress-badge")).to_be_visible()
    for i in range(2):
        expect(screen_rows.nth(i)).to_have_attribute("data-rank", "")
        expect(screen_rows.nth(i).locator("td.col-score")).to_be_hidden()
        expect(screen_rows.nth(i).locator("td.col-rank")).to_be_hidden()
    shot(screen, "11-screen-running")
    for phone in (alice, bob):
        show(phone, "board")
        expect(phone.get_by_test_id("board")).to_have_attribute("data-progress-only", "true")
        expect(phone.get_by_test_id("board-progress-note")).to_be_visible()
        phone_rows = phone.get_by_test_id("board").get_by_test_id("board-row")
        expect(phone_rows).to_have_count(2)
        expect(phone_rows.first.locator("td.col-score")).to_be_hidden()
        expect(phone_rows.first.locator("td.col-progress")).to_contain_text("问诊")
        expect(phone.get_by_test_id("open-score")).to_be_hidden()
    shot(alice, "11b-phone-progress-board")

    # (8) the organizer ends (a reason is required) and publishes
    org.get_by_test_id("action-end").click()
    expect(org.get_by_test_id("action-error")).to_contain_text("原因")
    org.get_by_test_id("action-reason").fill("全部选手已提交，提前结束")
    org.get_by_test_id("action-end").click()
    expect(org.get_by_test_id("round-status")).to_have_text("已结束")
    audit = org.get_by_test_id("audit-row")
    expect(audit.filter(has_text="评委 ").first).to_contain_text("裁定诊断：李华 → 正确")
    expect(audit.first).to_contain_text("全部选手已提交，提前结束")  # the reason, on record
    for phone in (alice, bob):
        expect(phone.get_by_test_id("round-status")).to_contain_text("等待公布成绩")
    expect(screen.get_by_test_id("countdown")).to_have_attribute("data-phase", "ended")
    shot(org, "12-organizer-ended")
    org.get_by_test_id("action-publish").click()
    expect(org.get_by_test_id("round-status")).to_have_text("成绩已公布")

    # (9) the reveal on the big screen, then the final banner; results on the phones
    expect(screen.get_by_test_id("reveal-step")).to_be_visible()
    shot(screen, "13-screen-reveal")
    expect(screen.get_by_test_id("final-banner")).to_be_visible(timeout=15_000)
    expect(screen.get_by_test_id("reveal-step")).to_be_hidden()
    expect(screen_rows).to_have_count(2)
    for row in (screen_rows.nth(0), screen_rows.nth(1)):
        expect(row.locator("td.col-score")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    shot(screen, "14-screen-final")

    # Each phone's rank is its row's on the big screen (with equal scores, less time wins).
    places = {screen_rows.nth(i).locator("td.col-who .who-name").inner_text():
              screen_rows.nth(i).get_attribute("data-rank") for i in range(2)}
    assert sorted(places.values()) == ["1", "2"], places
    for phone, name in ((alice, "张明"), (bob, "李华")):
        expect(phone.get_by_test_id("results")).to_be_visible()
        expect(phone.get_by_test_id("rank")).to_have_text(f"第 {places[name]} 名 / 共 2 人")
        expect(phone.get_by_test_id("score-card")).to_be_visible()
        # The answer key and teaching points, on each contestant's own results only now.
        expect(phone.get_by_test_id("answer-key")).to_be_visible()
        expect(phone.get_by_test_id("key-diagnosis")).to_contain_text("急性下壁ST段抬高型心肌梗死")
        expect(phone.get_by_test_id("key-teaching").locator("li").first).not_to_be_empty()
        expect(phone.get_by_test_id("board")).to_have_attribute("data-progress-only", "false")
    expect(bob.get_by_test_id("verdict")).to_contain_text("正确")  # the judge's ruling stands
    expect(bob.get_by_test_id("score-card")).to_contain_text("评委 王明远：")
    shot(bob, "15-phone-results")
    bob.evaluate("window.scrollTo(0, 0)")
    shot(bob, "16-phone-results-full", full_page=True)
    bob.get_by_test_id("answer-key").scroll_into_view_if_needed()
    shot(bob, "17-phone-answer-key")
    # Under the results, the attempt no longer says the results are awaited.
    expect(bob.get_by_test_id("submitted-note")).to_contain_text("成绩已公布")
    expect(bob.get_by_test_id("submitted-note")).not_to_contain_text("等待公布成绩")

    # (10) 退出 signs the contestant's token out on the server, not only on this phone.
    token = bob.evaluate("JSON.parse(localStorage.getItem('clinic-arena.contestant')).token")
    assert Api(live_server, token).call("GET", "/api/me")
    with bob.expect_response(lambda r: r.url.endswith("/api/logout")) as signed_out:
        bob.get_by_test_id("logout").tap()
    assert signed_out.value.ok
    expect(bob.get_by_test_id("join")).to_be_visible()
    with pytest.raises(ApiError) as refused:
        Api(live_server, token).call("GET", "/api/me")
    assert refused.value.code == "unauthorized"


def test_open_scoring_shows_scores_live(pages: Pages, live_server: str) -> None:
    """A round whose rules choose open scoring: the phone shows its score at once, and the
    big screen ranks by score while the round runs."""
    org = Api.login(live_server)
    _, rid, roster = make_round(org, people=1, case_id=CASE, open_scoring=True,
                                max_submissions=2)
    screen_url = org.call("POST", f"/api/rounds/{rid}/spectator")["url"]
    org.action(rid, "open")
    org.action(rid, "start")
    phone = pages.open("contestant", PHONE)
    phone.goto(f"{live_server}/play.html#code={roster[0]['join_code']}")
    expect(phone.get_by_test_id("play")).to_be_visible()
    screen = pages.open("screen", SCREEN)
    screen.goto(screen_url)
    show(phone, "submit")
    phone.get_by_test_id("diagnosis").fill("急性下壁心肌梗死")
    phone.get_by_test_id("submit").tap()
    expect(phone.get_by_test_id("confirm-box")).to_contain_text("还可修改 1 次")
    phone.get_by_test_id("confirm-submit").tap()
    expect(phone.get_by_test_id("open-score")).to_be_visible(timeout=60_000)
    expect(phone.get_by_test_id("open-score")).to_contain_text("诊断正确")
    total = phone.get_by_test_id("open-score-total").inner_text()
    shot(phone, "o1-phone-open-score")
    row = screen.get_by_test_id("board").get_by_test_id("board-row")
    expect(row).to_have_attribute("data-rank", "1")
    expect(row.locator("td.col-score")).to_have_text(total)
    expect(screen.get_by_test_id("board")).to_have_attribute("data-progress-only", "false")
    expect(screen.get_by_test_id("progress-badge")).to_be_hidden()
    show(phone, "board")
    expect(phone.get_by_test_id("board").locator("td.col-score")).to_have_text(total)
    shot(screen, "o2-screen-open-scoring")


def test_a_drawn_round_with_typed_orders(pages: Pages, live_server: str) -> None:
    """The organizer draws the round's case (emergency medicine, any difficulty) and hides
    the order menu; the page says which case was drawn. The contestant's phone has no menu
    to read the case from: typed words order an exam, words naming nothing get a Chinese
    error, and the result stays listed."""
    api = Api.login(live_server)
    drawn = "m2x7hd"  # the only case set to contest in this test: the draw must find it
    api.call("POST", f"/api/cases/{drawn}/visibility", {"visibility": "contest"})
    try:
        title = f"抽题赛 {uuid.uuid4().hex[:4]}"
        cid = api.call("POST", "/api/competitions", {"title": title})["id"]
        api.call("POST", f"/api/competitions/{cid}/roster",
                 content=f"姓名,学校,队伍,邮箱\n王芳,湘雅医学院,一队,wf-{cid}@example.com\n".encode())
        org = organizer(pages, live_server)
        org.goto(f"{live_server}/organizer.html#c={cid}")
        org.reload()
        expect(org.get_by_test_id("round-form")).to_be_visible()
        org.get_by_test_id("round-title").fill("复赛 抽题场")
        expect(org.get_by_test_id("round-draw")).to_be_hidden()
        org.get_by_test_id("round-case").select_option("__draw__")
        expect(org.get_by_test_id("round-draw")).to_be_visible()
        org.get_by_test_id("round-draw-specialty").select_option("急诊科")
        org.get_by_test_id("round-countdown").fill("0")
        org.get_by_test_id("round-order-menu").uncheck()
        org.get_by_test_id("create-round").click()
        expect(org.get_by_test_id("round-error")).to_contain_text("抽中的病例：")
        expect(org.get_by_test_id("control-title")).to_have_text("复赛 抽题场")
        shot(org, "d1-organizer-drawn")
        rid = next(r["id"] for c in api.call("GET", "/api/competitions") if c["id"] == cid
                   for r in c["rounds"])
        assert next(r["case_id"] for c in api.call("GET", "/api/competitions")
                    if c["id"] == cid for r in c["rounds"]) == drawn
        api.action(rid, "open")
        api.action(rid, "start")

        code = api.call("GET", f"/api/competitions/{cid}/roster")[0]["join_code"]
        phone = pages.open("contestant 王芳", PHONE)
        phone.goto(f"{live_server}/play.html#code={code}")
        expect(phone.get_by_test_id("play")).to_be_visible()
        show(phone, "orders")
        expect(phone.get_by_test_id("order-filter")).to_be_hidden()
        phone.get_by_test_id("order-text").fill("查个血常规")
        phone.get_by_test_id("order-text-send").tap()
        results = phone.get_by_test_id("typed-results").locator("li")
        expect(results).to_have_count(1)
        expect(results.first).to_contain_text("血常规")
        expect(phone.get_by_test_id("result-lab.cbc")).not_to_be_empty()
        expect(phone.get_by_test_id("order-text")).to_have_value("")
        phone.get_by_test_id("order-text").fill("量子纠缠检测")
        phone.get_by_test_id("order-text-send").tap()
        expect(phone.get_by_test_id("order-text-error")).to_contain_text("没有找到")
        expect(results).to_have_count(1)
        shot(phone, "d2-phone-typed-orders")
        phone.reload()  # the result comes back with the rest of the attempt
        show(phone, "orders")
        expect(phone.get_by_test_id("result-lab.cbc")).not_to_be_empty()
        api.action(rid, "end", reason="测试结束")
        api.action(rid, "publish")
    finally:
        api.call("POST", f"/api/cases/{drawn}/visibility", {"visibility": "practice"})
