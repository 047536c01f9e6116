"""The case editor in real Chromium: create a case, see a problem beside its field, try the
draft patient, save, diff and publish; the library's search and filters; a laptop and a
tablet. Screenshots go under the pytest basetemp (editor-*.png).

A schema and cases folder of the module's own: publishing writes into the folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect

from server.settings import Settings
from tests.support import ADMIN_PASSWORD, Api, own_schema, running_server

pytestmark = pytest.mark.browser

CASES = Path(__file__).resolve().parents[2] / "cases"
SHIPPED = "k4p9wq"  # 青年女性腹痛
ALLERGY = 22  # its fact about drug allergies


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("editor-cases")
    for path in CASES.glob("*.json"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def live_server(settings: Settings, cases_dir: Path) -> Iterator[str]:
    with own_schema(settings, "browser_editor") as own:
        own = msgspec.structs.replace(own, cases_dir=cases_dir, embeddings=False)
        with running_server(own) as url:
            yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("editor-shots")


def _page(browser: Browser, problems: list[str], width: int, height: int) -> Page:
    context = browser.new_context(locale="zh-CN", viewport={"width": width, "height": height})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    pg.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    pg.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    return pg


@pytest.fixture
def laptop(browser: Browser) -> Iterator[Page]:
    problems: list[str] = []
    pg = _page(browser, problems, 1280, 800)
    yield pg
    pg.context.close()
    assert not problems, "\n".join(problems)


def _sign_in(pg: Page, url: str, where: str = "") -> None:
    pg.goto(f"{url}/cases.html{where}")
    pg.get_by_test_id("login-username").fill("admin")
    pg.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
    pg.get_by_test_id("login-button").click()


def _shipped(case_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CASES / f"{SHIPPED}.json").read_text(encoding="utf-8"))
    return {**doc, "id": case_id, "title": "青年女性腹痛（编辑器）"}


def _problem_at(pg: Page, path: str) -> Any:
    return pg.locator(f'[data-path="{path}"] > [data-testid="field-problem"]')


def test_create_validate_preview_save_and_publish(
    laptop: Page, live_server: str, shots: Path, cases_dir: Path
) -> None:
    pg = laptop
    _sign_in(pg, live_server)
    expect(pg.get_by_test_id("library-list")).to_have_attribute("aria-busy", "false")
    expect(pg.get_by_test_id(f"lib-{SHIPPED}")).to_be_visible()

    # Create: a blank case opens with its to-do list, each item beside its field.
    pg.get_by_test_id("new-case").click()
    pg.get_by_test_id("new-blank").click()
    expect(pg.get_by_test_id("editor")).to_be_visible()
    case_id = pg.get_by_test_id("editor-id").inner_text()
    expect(pg.get_by_test_id("problem-count")).to_contain_text("处问题")
    expect(_problem_at(pg, "$.answer_key.diagnosis.name")).to_have_text("不能为空")
    pg.screenshot(path=shots / "editor-blank-1280.png")

    # The author's work so far, saved through the API as version 2 (typing a whole case
    # here would only test typing); the form shows it with no problem.
    org = Api.login(live_server)
    org.call("POST", f"/api/authoring/cases/{case_id}/versions", {"content": _shipped(case_id)})
    pg.reload()
    expect(pg.get_by_test_id("f-title")).to_have_value("青年女性腹痛（编辑器）")
    expect(pg.get_by_test_id("no-problems")).to_be_visible()
    expect(pg.get_by_test_id("problem-count")).to_have_text("校验通过")

    # Live validation: an impossible heart rate is named beside the field, in Chinese, and
    # so is a title that names the diagnosis (the secrecy lint).
    heart = pg.get_by_test_id("f-opening.vitals.heart_rate")
    heart.fill("400")
    pg.get_by_test_id("f-title").fill("急性阑尾炎")
    problem = _problem_at(pg, "$.opening.vitals.heart_rate")
    expect(problem).to_have_text("400 超出合理范围（20–250）")
    expect(heart).to_have_attribute("aria-invalid", "true")
    expect(pg.get_by_test_id("problem-list")).to_contain_text("开场 › 生命体征 › 心率")
    expect(_problem_at(pg, "$.title").first).to_contain_text("答案关键词")
    problem.scroll_into_view_if_needed()
    pg.screenshot(path=shots / "editor-problem-1280.png")
    heart.fill("98")
    pg.get_by_test_id("f-title").fill("青年女性腹痛（编辑器）")
    expect(pg.get_by_test_id("problem-count")).to_have_text("校验通过")

    # Try the patient on the unsaved draft: the edited allergy is what she says.
    answer = pg.locator(f'[data-path="$.facts[{ALLERGY}].answer"] textarea')
    answer.fill("我对头孢过敏，吃了会起一身疹子。")
    pg.get_by_test_id("preview-question").fill("你对什么药过敏吗？")
    pg.get_by_test_id("preview-ask").click()
    reply = pg.get_by_test_id("preview-answer").last
    expect(reply).to_contain_text("头孢")
    expect(reply).to_have_attribute("data-kind", "facts")
    pg.get_by_test_id("preview-question").fill("你得的是什么病？")
    pg.get_by_test_id("preview-ask").click()
    expect(pg.get_by_test_id("preview-answer").last).to_have_attribute("data-kind", "refusal")

    # Save, then the diff between the last two versions names the field in Chinese.
    pg.get_by_test_id("save-note").fill("改过敏史")
    pg.get_by_test_id("save").click()
    expect(pg.get_by_test_id("editor-note")).to_have_text("已保存第 3 版。")
    expect(pg.get_by_test_id("version")).to_have_count(3)
    pg.get_by_test_id("diff-run").click()
    item = pg.get_by_test_id("diff-item")
    expect(item).to_have_count(1)
    expect(item).to_contain_text(f"病史条目 {ALLERGY + 1} › 回答")
    expect(item.locator("ins")).to_have_text("我对头孢过敏，吃了会起一身疹子。")
    pg.get_by_test_id("history-card").screenshot(path=shots / "editor-history-1280.png")

    # Publish, contest only, after a confirmation.
    pg.get_by_test_id("publish").click()
    dialog = pg.get_by_test_id("publish-dialog")
    expect(dialog).to_be_visible()
    expect(pg.get_by_test_id("publish-what")).to_contain_text("第 3 版")
    pg.screenshot(path=shots / "editor-publish-dialog-1280.png")
    pg.get_by_test_id("publish-contest").check()
    pg.get_by_test_id("publish-confirm").click()
    expect(dialog).to_be_hidden()
    expect(pg.get_by_test_id("editor-note")).to_contain_text("已发布第 3 版为“仅比赛”")
    expect(pg.get_by_test_id("editor-visibility")).to_have_text("仅比赛")
    written = json.loads((cases_dir / f"{case_id}.json").read_text(encoding="utf-8"))
    assert written["facts"][ALLERGY]["answer"] == "我对头孢过敏，吃了会起一身疹子。"
    listed = {c["id"]: c for c in org.call("GET", "/api/cases")}
    assert listed[case_id]["visibility"] == "contest"
    assert case_id not in {c["id"] for c in Api(live_server).call("GET", "/api/cases")}

    # Back in the library: found by its words and by its filters.
    pg.get_by_test_id("back").click()
    expect(pg.get_by_test_id("library-list")).to_have_attribute("aria-busy", "false")
    pg.get_by_test_id("search").fill("编辑器")
    expect(pg.locator(".library-item")).to_have_count(1)
    expect(pg.get_by_test_id(f"lib-{case_id}")).to_contain_text("仅比赛")
    pg.get_by_test_id("search").fill("")
    pg.get_by_test_id("filter-visibility").select_option("draft")
    expect(pg.get_by_test_id(f"lib-{case_id}")).to_have_count(0)
    pg.get_by_test_id("filter-visibility").select_option("contest")
    expect(pg.get_by_test_id(f"lib-{case_id}")).to_be_visible()
    pg.get_by_test_id("filter-visibility").select_option("")
    pg.screenshot(path=shots / "editor-library-1280.png", full_page=True)


def test_readable_on_a_tablet(browser: Browser, live_server: str, shots: Path) -> None:
    problems: list[str] = []
    pg = _page(browser, problems, 820, 1180)
    try:
        _sign_in(pg, live_server)
        expect(pg.get_by_test_id("library-list")).to_have_attribute("aria-busy", "false")
        pg.screenshot(path=shots / "editor-library-820.png")
        pg.get_by_test_id(f"lib-{SHIPPED}").click()
        expect(pg.get_by_test_id("f-title")).to_have_value("青年女性腹痛")
        # Nothing wider than the screen: no sideways scrolling on a tablet.
        assert pg.evaluate("document.documentElement.scrollWidth") <= 820
        pg.screenshot(path=shots / "editor-form-820.png")
        # The answer key and a checklist item's links (facts by topic, orders by name).
        key = pg.locator('fieldset[data-path="$.answer_key"]')
        key.locator("h3").first.scroll_into_view_if_needed()
        pg.screenshot(path=shots / "editor-answer-key-820.png")
        item = pg.get_by_test_id("check-row").first
        item.locator("summary").click()
        expect(item.locator(".chip").first).to_be_visible()
        item.scroll_into_view_if_needed()
        pg.screenshot(path=shots / "editor-checklist-820.png")
    finally:
        pg.context.close()
    assert not problems, "\n".join(problems)


def test_a_judge_is_turned_away(laptop: Page, live_server: str) -> None:
    org = Api.login(live_server)
    org.call("POST", "/api/accounts", {"username": "judge_ui", "password": "judge-pass-123",
                                       "role": "judge"})
    laptop.goto(f"{live_server}/cases.html")
    laptop.get_by_test_id("login-username").fill("judge_ui")
    laptop.get_by_test_id("login-password").fill("judge-pass-123")
    laptop.get_by_test_id("login-button").click()
    expect(laptop.get_by_test_id("login-error")).to_have_text("病例编辑器需要组织者账号")
    expect(laptop.get_by_test_id("library")).to_be_hidden()


RECORD = """主诉：转移性右下腹痛12小时。
现病史：患者12小时前出现上腹部隐痛，6小时前疼痛转移至右下腹，呈持续性，伴恶心，无呕吐。
既往史：否认慢性病史。
查体：右下腹麦氏点压痛，反跳痛(+)。
诊断：急性阑尾炎"""


def test_a_case_from_a_pasted_record_and_the_raw_json(
    laptop: Page, live_server: str, shots: Path
) -> None:
    pg = laptop
    _sign_in(pg, live_server)
    pg.get_by_test_id("new-case").click()
    pg.get_by_test_id("new-record").fill(RECORD)
    pg.screenshot(path=shots / "editor-new-dialog-1280.png")
    pg.get_by_test_id("new-import").click()
    expect(pg.get_by_test_id("f-opening.chief_complaint")).to_have_value("转移性右下腹痛12小时")
    expect(pg.get_by_test_id("f-answer_key.diagnosis.name")).to_have_value("急性阑尾炎")
    expect(pg.get_by_test_id("fact-row").first).to_be_visible()
    expect(pg.get_by_test_id("version")).to_have_count(1)
    expect(pg.get_by_test_id("version")).to_contain_text("从病历导入")
    pg.screenshot(path=shots / "editor-imported-1280.png")

    # What the form has no input for is edited as JSON and comes back into the form.
    raw = pg.get_by_test_id("raw-json")
    raw.locator("xpath=ancestor::details").locator("summary").click()
    expect(raw).not_to_have_value("")  # filled by the toggle event, a task after the click
    doc = json.loads(raw.input_value())
    doc["defaults"] = {"smoking": "我从来不抽烟。"}
    doc["title"] = "右下腹痛"
    raw.fill(json.dumps(doc, ensure_ascii=False))
    pg.get_by_test_id("raw-apply").click()
    expect(pg.get_by_test_id("f-title")).to_have_value("右下腹痛")
    pg.get_by_test_id("preview-question").fill("你抽烟吗？")
    pg.get_by_test_id("preview-ask").click()
    expect(pg.get_by_test_id("preview-answer").last).to_contain_text("从来不抽烟")
    raw.fill("{not json")
    pg.get_by_test_id("raw-apply").click()
    expect(pg.locator(".raw .form-error")).to_contain_text("不是合法的 JSON")


@pytest.fixture(scope="module")
def drafting_server(settings: Settings, cases_dir: Path, sim_root: str) -> Iterator[str]:
    """The editor where an LLM endpoint (the simulator) is configured."""
    with own_schema(settings, "browser_drafting") as own:
        own = msgspec.structs.replace(own, cases_dir=cases_dir, embeddings=False,
                                      llm_base_url=f"{sim_root}/v1")
        with running_server(own) as url:
            yield url


def test_drafting_a_case_with_the_model(
    laptop: Page, live_server: str, drafting_server: str, sim_root: str, shots: Path
) -> None:
    """Without a model the button is not offered; with one, a brief becomes a draft: the
    page shows progress while the model works (its first answer is broken and sent back),
    then opens the draft, whose version says which model and prompt made it."""
    from tests.support import Sim

    pg = laptop
    _sign_in(pg, live_server)
    pg.get_by_test_id("new-case").click()
    expect(pg.get_by_test_id("new-blank")).to_be_visible()
    expect(pg.get_by_test_id("new-llm")).to_be_hidden()
    pg.get_by_test_id("new-dialog").locator("#new-cancel").click()

    sim = Sim(sim_root)
    sim.reset()
    good = json.loads((CASES / f"{SHIPPED}.json").read_text(encoding="utf-8"))
    broken = {k: v for k, v in good.items() if k != "answer_key"}
    # Slow enough (about 4 s a draft) for the progress line to be seen.
    sim.configure(itl_ms=0.25, queue=[json.dumps(broken, ensure_ascii=False),
                                      json.dumps(good, ensure_ascii=False)])
    _sign_in(pg, drafting_server)
    pg.get_by_test_id("new-case").click()
    pg.get_by_test_id("new-record").fill("22 岁女性，转移性右下腹痛 1 天")
    pg.get_by_test_id("new-llm").click()
    expect(pg.get_by_test_id("new-progress")).to_contain_text("模型正在起草")
    expect(pg.get_by_test_id("new-llm")).to_be_disabled()
    pg.screenshot(path=shots / "editor-drafting-1280.png")
    expect(pg.get_by_test_id("version")).to_contain_text("由模型", timeout=30_000)
    expect(pg.get_by_test_id("version")).to_contain_text("生成 2 次")
    expect(pg.get_by_test_id("f-answer_key.diagnosis.name")).not_to_have_value("")
    pg.screenshot(path=shots / "editor-drafted-1280.png")
    sim.reset()
