// The organizer console: competitions, rounds, the roster with join codes, and the
// round control panel (status and countdown from a `watch`, the live board, the
// actions open/start/pause/resume/extend/end/publish, the big-screen link and the
// audit log, rendered by audit-log.js; case visibility by case-access.js). HTTP API and
// wire protocol: docs/protocol.md, "Competitions".

import { $, h } from "./dom.js";
import { ArenaSocket } from "./socket.js";
import {
  absoluteUrl, api, clearSession, copyText, getSession, keepConnected, requestId, roleName,
  setupLogin, showText,
} from "./auth.js";
import { renderAudit } from "./audit-log.js";
import { renderCaseAccess } from "./case-access.js";
import { BoardView, STATUS_ZH, describeClock, renderCountdown } from "./board.js";

const ACTION_ZH = {
  open: "开放候场", start: "开始", pause: "暂停", resume: "继续", extend: "延时", end: "提前结束",
  publish: "公布成绩",
};
const ACTION_DONE = {
  open: "已开放候场，选手可以进入等候。", start: "已开始：倒计时结束后正式计时。", pause: "已暂停，计时已停止。",
  resume: "已继续计时。", extend: "已延时。", end: "场次已结束。", publish: "成绩已公布。",
};
// Which actions each status allows (arena/rounds.py's state machine).
const LEGAL = {
  draft: ["open"], lobby: ["start", "end"], running: ["pause", "extend", "end"],
  paused: ["resume", "extend", "end"], ended: ["publish"], published: [],
};
const NEEDS_REASON = new Set(["pause", "extend", "end"]);
const DIFFICULTY = { easy: "简单", medium: "中等", hard: "困难" };
const DRAW = "__draw__"; // the case select's "draw at random" choice, never a case id
const socket = new ArenaSocket();
const state = {
  session: null,
  connection: null,
  competitions: [],
  cases: [],
  casesById: new Map(),
  compId: null,
  roundId: null,
  round: null, // GET /api/rounds/{id}
  clock: null,
  roster: [],
  busy: false,
  retry: null, // {key, id}: a request that failed on the network is retried with the same id
  timer: 0,
};

const els = {
  login: $("#login"), console: $("#console"), user: $("#user"), userName: $("#user-name"),
  competitionList: $("#competition-list"), competition: $("#competition"),
  noCompetition: $("#no-competition"), heading: $("#competition-heading"),
  roundList: $("#round-list"), roundCase: $("#round-case"), roundMinutes: $("#round-minutes"),
  rosterBody: $("#roster-body"), rosterProblems: $("#roster-problems"), rosterCsv: $("#roster-csv"),
  control: $("#control"), reason: $("#action-reason"), extendMinutes: $("#extend-minutes"),
  extendContestant: $("#extend-contestant"), actionError: $("#action-error"), actionNote: $("#action-note"),
  countdown: $("#countdown"), status: $("#round-status"), auditBody: $("#audit-body"),
};

const board = new BoardView($("#board"), { view: "live", now: () => socket.serverNow() });

// ---- login and session ---------------------------------------------------------------------

setupLogin({
  form: $("#login-form"), username: $("#login-username"), password: $("#login-password"),
  button: $("#login-button"), error: $("#login-error"), roles: ["organizer"],
  roleMessage: "需要组织者账号", onLogin: enter,
});

function showLogin(message = "") {
  state.connection?.stop();
  state.connection = null;
  state.session = null;
  clearInterval(state.timer);
  els.console.hidden = true;
  els.user.hidden = true;
  els.login.hidden = false;
  showText($("#login-error"), message);
  $("#login-username").focus();
}

function enter(session) {
  state.session = session;
  els.login.hidden = true;
  els.console.hidden = false;
  els.user.hidden = false;
  els.userName.textContent = `${session.name}（${roleName(session.role)}）`;
  state.connection?.stop();
  state.connection = keepConnected(socket, {
    token: session.token, name: session.name, pill: $(".conn"),
    channels: () => (state.roundId ? [`round:${state.roundId}`] : []),
    onWelcome: (_welcome, reconnected) => { if (state.roundId) watch(!reconnected); },
    onFatal: (err) => {
      clearSession();
      showLogin(err.message || "登录已失效，请重新登录。");
    },
  });
  clearInterval(state.timer);
  state.timer = setInterval(tick, 250);
  loadCases();
  loadCompetitions();
}

$("#logout").addEventListener("click", () => {
  clearSession();
  showLogin("");
});

window.addEventListener("staff:unauthorized", (ev) => showLogin(ev.detail?.message || "登录已失效，请重新登录。"));

// ---- where we are (kept in the URL so a reload comes back here) -----------------------------

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { c: p.get("c"), r: p.get("r") };
}

function writeHash() {
  const p = new URLSearchParams();
  if (state.compId) p.set("c", state.compId);
  if (state.roundId) p.set("r", state.roundId);
  const hash = p.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}${hash ? `#${hash}` : ""}`);
}

// ---- cases ---------------------------------------------------------------------------------

async function loadCases() {
  try {
    const cases = await api("/api/cases");
    state.cases = Array.isArray(cases) ? cases : [];
    state.casesById = new Map(state.cases.map((c) => [c.id, c]));
    els.roundCase.replaceChildren(
      h("option", { value: "" }, state.cases.length ? "请选择病例" : "没有可用的病例"),
      h("option", { value: DRAW }, "随机抽取（未用过的比赛病例）"),
      ...caseGroups(state.cases),
    );
    const specialties = [...new Set(state.cases.map((c) => c.specialty).filter(Boolean))].sort();
    $("#round-draw-specialty").replaceChildren(
      h("option", { value: "" }, "不限"), ...specialties.map((s) => h("option", { value: s }, s)));
    renderRounds();
    showCaseAccess();
  } catch (err) {
    els.roundCase.replaceChildren(h("option", { value: "" }, "病例列表加载失败"));
    showText($("#round-error"), err.message);
  }
}

const DIFFICULTY_ORDER = { easy: 0, medium: 1, hard: 2 };

/** The case choices grouped by specialty (a library of dozens), easiest first in each. */
function caseGroups(cases) {
  const bySpecialty = new Map();
  for (const c of cases) {
    const key = c.specialty || "其他";
    if (!bySpecialty.has(key)) bySpecialty.set(key, []);
    bySpecialty.get(key).push(c);
  }
  return [...bySpecialty.keys()].sort((a, b) => a.localeCompare(b, "zh-CN")).map((specialty) =>
    h("optgroup", { label: specialty }, ...bySpecialty.get(specialty)
      .sort((a, b) => (DIFFICULTY_ORDER[a.difficulty] ?? 9) - (DIFFICULTY_ORDER[b.difficulty] ?? 9)
        || a.title.localeCompare(b.title, "zh-CN"))
      .map((c) => h("option", { value: c.id },
        `${c.title}（${[DIFFICULTY[c.difficulty] ?? c.difficulty, c.minutes ? `建议 ${c.minutes} 分钟` : ""]
          .filter(Boolean).join(" · ")}）`))));
}

function showCaseAccess() {
  renderCaseAccess($("#case-vis-list"), state.cases, $("#cases-error"));
}

$("#reload-cases").addEventListener("click", () => loadCases());

els.roundMinutes.addEventListener("input", () => { els.roundMinutes.dataset.touched = "1"; });
els.roundCase.addEventListener("change", () => {
  $("#round-draw").hidden = els.roundCase.value !== DRAW;
  const c = state.casesById.get(els.roundCase.value);
  if (c?.minutes && !els.roundMinutes.dataset.touched) els.roundMinutes.value = String(c.minutes);
});

// ---- competitions --------------------------------------------------------------------------

async function loadCompetitions({ quiet = false } = {}) {
  try {
    const list = await api("/api/competitions");
    state.competitions = Array.isArray(list) ? list : [];
    renderCompetitions();
    const want = state.compId ?? readHash().c;
    if (want && state.competitions.some((c) => c.id === want)) {
      if (state.compId !== want) selectCompetition(want, readHash().r);
      else renderRounds();
    } else if (state.compId) {
      selectCompetition(null);
    }
  } catch (err) {
    if (!quiet) {
      els.competitionList.replaceChildren(h("li", { class: "form-error" }, err.message));
    }
  } finally {
    els.competitionList.removeAttribute("aria-busy");
  }
}

function renderCompetitions() {
  if (!state.competitions.length) {
    els.competitionList.replaceChildren(h("li", { class: "muted" }, "还没有赛事，先创建一个。"));
    return;
  }
  els.competitionList.replaceChildren(...state.competitions.map((c) => h("li", {},
    h("button", {
      type: "button", class: "pick", dataset: { testid: "competition-item", id: c.id },
      "aria-current": c.id === state.compId ? "true" : null,
      onclick: () => selectCompetition(c.id),
    },
    h("span", { class: "pick-title" }, c.title),
    h("small", { class: "muted" }, `${(c.rounds ?? []).length} 个场次`)))));
}

function currentCompetition() {
  return state.competitions.find((c) => c.id === state.compId) ?? null;
}

function selectCompetition(id, roundId = null) {
  const changed = id !== state.compId;
  state.compId = id;
  renderCompetitions();
  const comp = currentCompetition();
  els.competition.hidden = !comp;
  els.noCompetition.hidden = Boolean(comp);
  $("#rounds-card").hidden = !comp;
  if (!comp) {
    selectRound(null);
    writeHash();
    return;
  }
  els.heading.textContent = comp.title;
  document.title = `${comp.title} · 组织者控制台`;
  if (changed) {
    state.roster = [];
    renderRoster();
    showText($("#roster-note"), "");
    showText($("#roster-error"), "");
    showRosterProblems([]);
    loadRoster();
  }
  const rounds = comp.rounds ?? [];
  const keep = roundId ?? state.roundId;
  if (keep && rounds.some((r) => r.id === keep)) selectRound(keep);
  else selectRound(null);
  renderRounds();
  writeHash();
}

$("#reload-competitions").addEventListener("click", () => loadCompetitions());

$("#competition-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#competition-title");
  const title = input.value.trim();
  const errorEl = $("#competition-error");
  showText(errorEl, "");
  if (!title) {
    showText(errorEl, "请填写赛事名称。");
    input.focus();
    return;
  }
  const button = $("#create-competition");
  button.disabled = true;
  try {
    const res = await api("/api/competitions", { method: "POST", body: { title } });
    input.value = "";
    state.compId = null;
    await loadCompetitions();
    if (res?.id) selectCompetition(res.id);
  } catch (err) {
    showText(errorEl, err.message);
  } finally {
    button.disabled = false;
  }
});

// ---- rounds --------------------------------------------------------------------------------

function roundStatus(r) {
  if (r.id === state.roundId && state.clock?.status) return state.clock.status;
  return r.status;
}

function renderRounds() {
  const comp = currentCompetition();
  const rounds = comp?.rounds ?? [];
  if (!rounds.length) {
    els.roundList.replaceChildren(h("li", { class: "muted" }, "还没有场次，请在右侧新建。"));
    return;
  }
  els.roundList.replaceChildren(...rounds.map((r) => {
    const status = roundStatus(r);
    const c = state.casesById.get(r.case_id);
    return h("li", {}, h("button", {
      type: "button", class: "pick", dataset: { testid: "round-item", round: r.id, status },
      "aria-current": r.id === state.roundId ? "true" : null, onclick: () => selectRound(r.id),
    },
    h("span", { class: "pick-title" }, r.title),
    h("span", { class: `status-pill status-${status}` }, STATUS_ZH[status] ?? status),
    h("small", { class: "muted pick-sub" }, c ? c.title : r.case_id)));
  }));
}

$("#round-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const errorEl = $("#round-error");
  showText(errorEl, "");
  const comp = currentCompetition();
  if (!comp) return;
  const title = $("#round-title").value.trim();
  const caseId = els.roundCase.value;
  const minutes = Number(els.roundMinutes.value);
  const freeze = Number($("#round-freeze").value || 0);
  const countdown = Number($("#round-countdown").value || 0);
  const maxSubmissions = Number($("#round-max-submissions").value || 1);
  const problems = [];
  if (!title) problems.push("请填写场次名称。");
  if (!caseId) problems.push("请选择病例。");
  if (!Number.isFinite(minutes) || minutes < 1 || minutes > 240) problems.push("比赛时长须在 1 到 240 分钟之间。");
  if (!Number.isFinite(freeze) || freeze < 0 || freeze >= minutes) problems.push("封榜时长须不小于 0 且小于比赛时长。");
  if (!Number.isInteger(countdown) || countdown < 0 || countdown > 120) problems.push("倒计时须为 0 到 120 秒。");
  if (!Number.isInteger(maxSubmissions) || maxSubmissions < 1 || maxSubmissions > 5) problems.push("每人提交次数须在 1 到 5 次之间。");
  if (problems.length) {
    showText(errorEl, problems.join(" "));
    return;
  }
  const drawn = caseId === DRAW;
  const body = {
    title,
    ...(drawn ? { draw: { specialty: $("#round-draw-specialty").value,
                          difficulty: $("#round-draw-difficulty").value } } : {}),
    rules: {
      case_id: drawn ? "" : caseId,
      duration_s: Math.round(minutes * 60),
      time_counts: $("#round-time-counts").checked,
      freeze_s: Math.round(freeze * 60),
      board_visible: $("#round-board-visible").checked,
      open_scoring: $("#round-open-scoring").checked,
      order_menu: $("#round-order-menu").checked,
      countdown_s: countdown,
      max_submissions: maxSubmissions,
    },
  };
  const button = $("#create-round");
  button.disabled = true;
  try {
    const res = await api(`/api/competitions/${encodeURIComponent(comp.id)}/rounds`, { method: "POST", body });
    $("#round-title").value = "";
    await loadCompetitions({ quiet: true });
    if (res?.id) selectRound(res.id);
    const notes = [];
    if (res?.drawn) notes.push(`抽中的病例：${res.case_title}`);
    if (res?.warning) notes.push(res.warning);
    if (notes.length) showText(errorEl, notes.join(" "));
  } catch (err) {
    showText(errorEl, err.problems?.length ? err.problems.join(" ") : err.message);
  } finally {
    button.disabled = false;
  }
});

// ---- roster --------------------------------------------------------------------------------

async function loadRoster() {
  const comp = currentCompetition();
  if (!comp) return;
  try {
    const list = await api(`/api/competitions/${encodeURIComponent(comp.id)}/roster`);
    if (comp.id !== state.compId) return;
    state.roster = Array.isArray(list) ? list : [];
    renderRoster();
  } catch (err) {
    showText($("#roster-error"), err.message);
  }
}

function renderRoster() {
  const rows = state.roster;
  if (!rows.length) {
    els.rosterBody.replaceChildren(h("tr", { class: "empty" },
      h("td", { colspan: "8", class: "muted" }, "还没有选手，请先导入名单。")));
  } else {
    els.rosterBody.replaceChildren(...rows.map((c) => {
      const link = c.link ? absoluteUrl(c.link) : "";
      return h("tr", { dataset: { testid: "roster-row", contestant: c.id } },
        h("td", {}, c.name),
        h("td", {}, c.school || "—"),
        h("td", {}, c.team || "—"),
        h("td", { class: "email" }, c.email || "—"),
        h("td", { class: "mono", dataset: { testid: "roster-code" } }, c.join_code || "—"),
        h("td", { class: "link-cell" },
          link ? h("a", { href: link, target: "_blank", rel: "noopener", dataset: { testid: "roster-link" } }, link) : "—",
          link ? h("button", {
            type: "button", class: "btn-link copy", dataset: { testid: "roster-copy" },
            onclick: async (ev) => flashButton(ev.currentTarget, await copyText(link) ? "已复制" : "复制失败"),
          }, "复制") : null),
        h("td", {}, h("span", {
          class: `tag ${c.redeemed ? "tag-done" : "tag-plain"}`,
          dataset: { testid: "roster-redeemed", redeemed: String(Boolean(c.redeemed)) },
        }, c.redeemed ? "已使用" : "未使用")),
        h("td", {}, h("button", {
          type: "button", class: "btn btn-small", dataset: { testid: "roster-reissue" },
          title: "生成新的参赛码，旧码立即失效", onclick: (ev) => reissue(c, ev.currentTarget),
        }, "重新发放")));
    }));
  }
  const chosen = els.extendContestant.value;
  els.extendContestant.replaceChildren(h("option", { value: "" }, "全体选手"),
    ...rows.map((c) => h("option", { value: c.id }, c.school ? `${c.name}（${c.school}）` : c.name)));
  if (rows.some((c) => c.id === chosen)) els.extendContestant.value = chosen;
}

function flashButton(button, text) {
  const old = button.dataset.label ?? button.textContent;
  button.dataset.label = old;
  button.textContent = text;
  setTimeout(() => { button.textContent = old; }, 1500);
}

async function reissue(contestant, button) {
  showText($("#roster-error"), "");
  showText($("#roster-note"), "");
  button.disabled = true;
  try {
    const res = await api(`/api/contestants/${encodeURIComponent(contestant.id)}/reissue`, { method: "POST", body: {} });
    showText($("#roster-note"), `已为 ${contestant.name} 重新发放参赛码 ${res?.join_code ?? ""}，旧参赛码已失效。`);
    await loadRoster();
  } catch (err) {
    showText($("#roster-error"), err.message);
    button.disabled = false;
  }
}

function showRosterProblems(problems) {
  els.rosterProblems.replaceChildren(...problems.map((p) => h("li", {}, p)));
  els.rosterProblems.hidden = !problems.length;
}

$("#roster-file").addEventListener("change", async (ev) => {
  const file = ev.target.files?.[0];
  $("#roster-file-name").textContent = file ? file.name : "未选择文件";
  if (!file) return;
  showText($("#roster-error"), "");
  if (file.size > 5 * 1024 * 1024) {
    showText($("#roster-error"), "文件过大（上限 5 MB），请检查是否选错了文件。");
    return;
  }
  const bytes = await file.arrayBuffer();
  // Excel in China often saves CSV as GBK; UTF-8 first, then GB18030 (a superset of GBK).
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = new TextDecoder("gb18030").decode(bytes);
  }
  els.rosterCsv.value = text.replace(/^\uFEFF/, "");
});

$("#import-roster").addEventListener("click", async () => {
  const comp = currentCompetition();
  if (!comp) return;
  showText($("#roster-error"), "");
  showText($("#roster-note"), "");
  showRosterProblems([]);
  const text = els.rosterCsv.value;
  if (!text.trim()) {
    showText($("#roster-error"), "请粘贴名单或选择 CSV 文件。");
    els.rosterCsv.focus();
    return;
  }
  const button = $("#import-roster");
  button.disabled = true;
  try {
    const res = await api(`/api/competitions/${encodeURIComponent(comp.id)}/roster`, {
      method: "POST", body: text, type: "text/csv; charset=utf-8",
    });
    const added = Array.isArray(res?.added) ? res.added.length : Number(res?.added ?? 0);
    showText($("#roster-note"), `已导入 ${added} 名选手。`);
    els.rosterCsv.value = "";
    $("#roster-file").value = "";
    $("#roster-file-name").textContent = "未选择文件";
    await loadRoster();
  } catch (err) {
    if (err.problems?.length) {
      showText($("#roster-error"), `名单有 ${err.problems.length} 处问题，未导入任何选手，请修改后重新导入：`);
      showRosterProblems(err.problems);
    } else {
      showText($("#roster-error"), err.message);
    }
  } finally {
    button.disabled = false;
  }
});

$("#roster-download").addEventListener("click", async () => {
  const comp = currentCompetition();
  if (!comp) return;
  showText($("#roster-error"), "");
  try {
    const blob = await api(`/api/competitions/${encodeURIComponent(comp.id)}/roster.csv`, { as: "blob" });
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `${comp.title.replace(/[\\/:*?"<>|]+/g, "_")}-选手名单.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showText($("#roster-error"), err.message);
  }
});

// ---- round control -------------------------------------------------------------------------

function selectRound(id) {
  if (id === state.roundId && id) return;
  state.roundId = id;
  state.round = null;
  state.clock = null;
  state.retry = null;
  board.reset();
  $("#joined").textContent = "";
  els.auditBody.replaceChildren();
  showText(els.actionError, "");
  showText(els.actionNote, "");
  showText($("#round-reason"), "");
  $("#spectator-out").hidden = true;
  showText($("#spectator-error"), "");
  els.control.hidden = !id;
  renderRounds();
  writeHash();
  if (!id) return;
  const r = currentCompetition()?.rounds?.find((x) => x.id === id);
  $("#control-title").textContent = r?.title ?? "";
  $("#control-rules").textContent = "";
  if (r?.status) setClock({ status: r.status, phase: r.status }, { weak: true });
  loadRound(id);
  loadAudit();
  watch(true);
  tick();
}

async function loadRound(id) {
  try {
    const round = await api(`/api/rounds/${encodeURIComponent(id)}`);
    if (id !== state.roundId) return;
    state.round = round;
    $("#control-title").textContent = round.title ?? "";
    $("#control-rules").textContent = rulesText(round.rules ?? {});
    if (round.clock) setClock(round.clock);
  } catch (err) {
    if (id === state.roundId) showText(els.actionError, err.message);
  }
}

function rulesText(rules) {
  const c = state.casesById.get(rules.case_id);
  const parts = [`病例：${c ? c.title : rules.case_id ?? "—"}`];
  if (rules.duration_s) parts.push(`时长 ${Math.round(rules.duration_s / 60)} 分钟`);
  if (rules.freeze_s) parts.push(`最后 ${Math.round(rules.freeze_s / 60)} 分钟封榜`);
  if (rules.countdown_s !== undefined) parts.push(`开始前倒计时 ${rules.countdown_s} 秒`);
  if (rules.max_submissions) parts.push(`每人可提交 ${rules.max_submissions} 次`);
  parts.push(rules.time_counts ? "用时计分" : "用时不计分");
  parts.push(rules.board_visible === false ? "选手看不到排行榜" : "选手可见排行榜");
  parts.push(rules.open_scoring ? "公开实时得分" : "成绩公布前不显示得分");
  if (rules.order_menu === false) parts.push("不提供检查清单（选手输入检查名称）");
  return parts.join(" · ");
}

/** Follow the round; a fresh watch (another round, a new connection) starts from since=0. */
function watch(fresh) {
  if (!state.roundId || socket.status !== "open") return;
  const ch = `round:${state.roundId}`;
  if (fresh) socket.forgetChannel(ch);
  try {
    socket.send("watch", { round_id: state.roundId, since: socket.cseq[ch] || 0 });
  } catch (err) {
    showText(els.actionError, err.message);
  }
}

/** A newer clock replaces the shown one; `weak` ones (from the list) only fill a gap. */
function setClock(clock, { weak = false } = {}) {
  if (!clock) return;
  if (weak && state.clock) return;
  if (!weak && state.clock && typeof state.clock.at === "number" && typeof clock.at === "number"
    && clock.at < state.clock.at) return;
  const before = state.clock?.status;
  state.clock = clock;
  updateButtons();
  tick();
  if (before && before !== clock.status) {
    const comp = currentCompetition();
    const r = comp?.rounds?.find((x) => x.id === state.roundId);
    if (r) r.status = clock.status;
    renderRounds();
  }
}

function tick() {
  if (!state.roundId) return;
  const view = describeClock(state.clock, socket.serverNow());
  renderCountdown(els.countdown, view);
  const status = state.clock?.status ?? "none";
  let text = STATUS_ZH[status] ?? "—";
  if (view.phase === "countdown") text = "倒计时";
  else if (view.phase === "over") text = "时间到";
  if (els.status.textContent !== text) els.status.textContent = text;
  els.status.dataset.status = status;
  els.status.dataset.phase = view.phase;
  // The pill already says "候场中" / "已结束": the clock's own label would only repeat it.
  const label = els.countdown.querySelector(".cd-label");
  if (label) label.hidden = view.label === text;
  $("#frozen-pill").hidden = !view.frozen;
}

function updateButtons() {
  const legal = LEGAL[state.clock?.status] ?? [];
  for (const b of document.querySelectorAll("[data-action]")) {
    b.disabled = state.busy || !legal.includes(b.dataset.action);
  }
}

for (const b of document.querySelectorAll("[data-action]")) {
  b.addEventListener("click", () => act(b.dataset.action, b));
}
$("#action-form").addEventListener("submit", (ev) => ev.preventDefault());
els.reason.addEventListener("input", () => els.reason.removeAttribute("aria-invalid"));

async function act(action, button) {
  const roundId = state.roundId;
  if (!roundId || state.busy) return;
  showText(els.actionError, "");
  showText(els.actionNote, "");
  const reason = els.reason.value.trim();
  if (NEEDS_REASON.has(action) && !reason) {
    showText(els.actionError, `请先在“原因”中写明${ACTION_ZH[action]}的原因（所有人可见）。`);
    els.reason.setAttribute("aria-invalid", "true");
    els.reason.focus();
    return;
  }
  const body = { reason };
  let minutes = 0;
  if (action === "extend") {
    minutes = Number(els.extendMinutes.value);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 60) {
      showText(els.actionError, "延时须为 1 到 60 分钟的整数。");
      els.extendMinutes.focus();
      return;
    }
    body.seconds = minutes * 60;
    if (els.extendContestant.value) body.contestant_id = els.extendContestant.value;
  }
  const key = JSON.stringify([roundId, action, body]);
  body.request_id = state.retry?.key === key ? state.retry.id : requestId();
  state.retry = { key, id: body.request_id };
  state.busy = true;
  updateButtons();
  const label = button.textContent;
  button.textContent = `${ACTION_ZH[action]}…`;
  try {
    const res = await api(`/api/rounds/${encodeURIComponent(roundId)}/${action}`, { method: "POST", body });
    state.retry = null;
    if (roundId !== state.roundId) return;
    if (res?.clock) setClock(res.clock);
    els.reason.value = "";
    let note = ACTION_DONE[action];
    if (action === "extend") {
      const who = state.roster.find((c) => c.id === body.contestant_id);
      note = `已为${who ? ` ${who.name} ` : "全体选手"}延时 ${minutes} 分钟。`;
    }
    showText(els.actionNote, note);
    loadAudit();
    loadCompetitions({ quiet: true });
  } catch (err) {
    if (err.code !== "network") state.retry = null;
    if (roundId === state.roundId) {
      showText(els.actionError, err.code === "network" ? `${err.message}（再次点击会安全地重试，不会重复执行）` : err.message);
    }
  } finally {
    button.textContent = label;
    state.busy = false;
    updateButtons();
  }
}

// ---- spectator link ------------------------------------------------------------------------

$("#spectator-create").addEventListener("click", async () => {
  const roundId = state.roundId;
  if (!roundId) return;
  showText($("#spectator-error"), "");
  const button = $("#spectator-create");
  button.disabled = true;
  try {
    const res = await api(`/api/rounds/${encodeURIComponent(roundId)}/spectator`, { method: "POST", body: {} });
    if (roundId !== state.roundId) return;
    const url = absoluteUrl(res?.url || `/screen.html?k=${encodeURIComponent(res?.token ?? "")}`);
    const link = $("#spectator-link");
    link.href = url;
    link.textContent = url;
    $("#spectator-out").hidden = false;
    loadAudit();
  } catch (err) {
    showText($("#spectator-error"), err.message);
  } finally {
    button.disabled = false;
  }
});

$("#spectator-copy").addEventListener("click", async (ev) => {
  flashButton(ev.currentTarget, await copyText($("#spectator-link").href) ? "已复制" : "复制失败");
});

// ---- audit log -----------------------------------------------------------------------------

async function loadAudit() {
  const roundId = state.roundId;
  if (!roundId) return;
  showText($("#audit-error"), "");
  try {
    const events = await api(`/api/rounds/${encodeURIComponent(roundId)}/audit`);
    if (roundId !== state.roundId) return;
    renderAudit(els.auditBody, Array.isArray(events) ? events : [], state.roster);
  } catch (err) {
    if (roundId === state.roundId) showText($("#audit-error"), err.message);
  }
}

$("#audit-refresh").addEventListener("click", () => loadAudit());

// ---- messages from the server --------------------------------------------------------------

let auditSoon = 0;
// The joined count of the board last shown: when it changes, a join code was redeemed and
// the roster's 状态 column must say so.
let lastJoined = null;
let rosterSoon = 0;

socket.addEventListener("message", (ev) => {
  const msg = ev.detail;
  switch (msg.type) {
    case "round_state":
      if (msg.round_id !== state.roundId) return;
      if (msg.title) $("#control-title").textContent = msg.title;
      setClock(msg.clock);
      showText($("#round-reason"), msg.reason ? `原因：${msg.reason}` : "");
      // Another organizer may have acted: their entry appears in the log shortly.
      clearTimeout(auditSoon);
      auditSoon = setTimeout(loadAudit, 500);
      break;
    case "board":
      if (msg.round_id !== state.roundId || (msg.view && msg.view !== "live")) return;
      if (board.update(msg)) {
        $("#joined").textContent = `已加入 ${msg.joined ?? 0} 人`;
        if (lastJoined !== null && msg.joined !== lastJoined) {
          clearTimeout(rosterSoon);
          rosterSoon = setTimeout(loadRoster, 500);
        }
        lastJoined = msg.joined ?? 0;
      }
      break;
    case "error":
      showText(els.actionError, msg.message);
      break;
    default:
      break; // reload, resync, transcript…: the state follows or the socket reconnects
  }
});

setInterval(() => board.tick(), 1000);

// ---- boot ----------------------------------------------------------------------------------

const saved = getSession();
if (saved?.role === "organizer") enter(saved);
else showLogin(saved ? `当前登录的是${roleName(saved.role)}账号，需要组织者账号。` : "");
