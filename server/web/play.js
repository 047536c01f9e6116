// The contestant page for a competition round (/play.html): join with a code, wait in
// the lobby, play against the round's clock, submit, read the results.
// Protocol: docs/protocol.md ("Competitions"). The server owns time: every countdown
// here is server time (socket.serverNow()) against the round clock's absolute times.
// A refresh rejoins with the stored token; the server then sends round_state and
// play_state, from which the whole page is rebuilt.

import { $, h, num, toast } from "./dom.js";
import { Interview } from "./interview.js";
import { Orders } from "./orders.js";
import { ArenaSocket, revokeToken } from "./socket.js";
import { Submission, scoreCard } from "./submit.js";

const TOKEN_KEY = "clinic-arena.contestant";
const DRAFT_PREFIX = "clinic-arena.draft."; // + attempt id: the diagnosis form, not yet sent
const TAB_KEY = "clinic-arena.play-tab";
const MAX_BACKOFF_MS = 10000;
const CLOCK_SKEW_S = 600; // a token is tried unless it expired this long ago by our clock
const AUTH_CODES = new Set(["unauthorized", "token_expired"]);

// Why asking, ordering and submitting are off, by phase ("" = allowed).
const LOCKED = {
  none: "正在连接比赛…",
  lobby: "比赛尚未开始",
  countdown: "比赛即将开始，请稍候",
  running: "",
  paused: "比赛已暂停，计时已停止",
  timeup: "你的作答时间已到",
  over: "比赛已结束",
  ended: "比赛已结束",
  published: "比赛已结束",
};

const socket = new ArenaSocket();
const state = {
  me: null, // {token, name, competition_id, round_id, exp} from POST /api/join
  welcomed: false, // a welcome arrived on this page (so a later loss is a reconnect)
  stopped: true, // no reconnecting (logged out, or the token was refused)
  retries: 0,
  retryTimer: 0,
  retryAt: 0,
  resync: false,
  round: null, // the latest round_state
  phase: "none", // the phase last applied to the page (see phaseAt)
  attemptId: "",
  play: null, // the latest play_state
  board: null, // the latest board message shown
  boardVisible: true,
  joined: null,
  results: null,
  requests: new Map(), // request id -> type, to show a refusal next to its control
};

const head = $("#play-head");
const columns = $("#columns");
const globalToast = $("#global-toast");
const countdown = $("#countdown");
const boardEl = $("#board");

// ---- the interview, orders and submission (shared with the practice page) -------------

function send(type, fields) {
  if (socket.status !== "open") {
    throw Object.assign(new Error("连接已断开，正在重连，请稍后再试。"), { code: "not_connected" });
  }
  const id = socket.send(type, fields);
  state.requests.set(id, type);
  return id;
}

const interview = new Interview({
  chat: $("#chat"), form: $("#composer"), input: $("#question"), button: $("#send"),
  hint: $("#composer-hint"), toastSlot: $("#ask-toast"), send,
});
const orders = new Orders({
  menu: $("#menu"), filter: $("#order-filter"), total: $("#cost-total"), count: $("#order-n"),
  badge: $("#order-count"), send,
});
const submission = new Submission({
  mode: "round", form: $("#submit-form"), diagnosis: $("#diagnosis"),
  differentials: $("#differentials"), add: $("#add-differential"), reasoning: $("#reasoning"),
  submit: $("#submit"), confirm: $("#confirm"), confirmBtn: $("#confirm-submit"),
  cancelBtn: $("#cancel-submit"), confirmText: $("#confirm-text"), toastSlot: $("#submit-toast"),
  note: $("#submitted-note"), send, onChange: saveDraft,
});

// ---- stored identity and drafts --------------------------------------------------------

function readJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null");
  } catch {
    return null;
  }
}

function writeJson(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch { /* private mode: the page still works until it is closed */ }
}

/** The stored join, if it has a token and has not clearly expired. */
function storedJoin() {
  const me = readJson(TOKEN_KEY);
  if (!me || typeof me.token !== "string" || !me.token) return null;
  if (typeof me.exp === "number" && me.exp + CLOCK_SKEW_S < Date.now() / 1000) {
    writeJson(TOKEN_KEY, null);
    return null;
  }
  return me;
}

function saveDraft(values) {
  if (state.attemptId) writeJson(DRAFT_PREFIX + state.attemptId, values);
}

function readDraft(attemptId) {
  const d = readJson(DRAFT_PREFIX + attemptId);
  if (!d || typeof d !== "object") return null;
  return {
    diagnosis: String(d.diagnosis ?? ""),
    differentials: Array.isArray(d.differentials) ? d.differentials.map(String) : [],
    reasoning: String(d.reasoning ?? ""),
  };
}

// ---- views -----------------------------------------------------------------------------

function currentView() {
  if (!state.me) return "join";
  if (state.results) return "results";
  if (state.play) return "play";
  return "lobby";
}

function showView() {
  const view = currentView();
  const before = document.body.dataset.view;
  document.body.dataset.view = view;
  $("#join").hidden = view !== "join";
  $("#lobby").hidden = view !== "lobby";
  $("#results").hidden = view !== "results";
  // After publication the attempt stays readable under the results.
  $("#play").hidden = !(view === "play" || (view === "results" && state.play));
  $("#results .results-play-h").hidden = !state.play;
  $("#roundbar").hidden = view === "join" || !state.round;
  $("#logout").hidden = view === "join";
  placeBoard(view);
  measureHead();
  if (before !== view) window.scrollTo({ top: 0 });
}

/** One board element, moved to wherever the current view shows it. */
function placeBoard(view) {
  const slot = { lobby: "#board-slot-lobby", play: "#board-slot-play", results: "#board-slot-results" }[view];
  if (slot && boardEl.parentElement !== $(slot)) $(slot).append(boardEl);
  const tab = $('.tabs [data-tab="board"]');
  tab.hidden = !(view === "play" && state.boardVisible);
  if (tab.hidden && columns.dataset.tab === "board") setTab("interview");
}

function setTab(tab) {
  columns.dataset.tab = tab;
  for (const b of document.querySelectorAll(".tabs [data-tab]")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === tab));
  }
  try { sessionStorage.setItem(TAB_KEY, tab); } catch { /* private mode */ }
}

for (const b of document.querySelectorAll(".tabs [data-tab]")) {
  b.addEventListener("click", () => {
    setTab(b.dataset.tab);
    window.scrollTo({ top: 0 });
  });
}

// Sticky tabs sit under the sticky header, whose height changes with its banners.
function measureHead() {
  document.documentElement.style.setProperty("--head-h", `${head.offsetHeight}px`);
}
if (globalThis.ResizeObserver) new ResizeObserver(measureHead).observe(head);

// ---- joining ---------------------------------------------------------------------------

const joinForm = $("#join-form");
const joinCode = $("#join-code");
const joinButton = $("#join-button");
const joinError = $("#join-error");

function showJoinError(message) {
  joinError.textContent = message;
  joinError.hidden = !message;
  if (message) joinCode.setAttribute("aria-invalid", "true");
  else joinCode.removeAttribute("aria-invalid");
}

/** POST /api/join; resolves to the join or throws an Error with the server's message. */
async function redeem(code) {
  let res;
  try {
    res = await fetch("/api/join", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ code }),
    });
  } catch {
    throw Object.assign(new Error("网络连接失败，请检查网络后重试。"), { code: "network" });
  }
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: a proxy's error page */ }
  if (!res.ok || !body?.token) {
    const message = body?.message || `加入失败（HTTP ${res.status}），请稍后重试。`;
    throw Object.assign(new Error(message), { code: body?.code || `http_${res.status}` });
  }
  return body;
}

async function join(raw, { fallback = null } = {}) {
  const code = String(raw).trim();
  if (!code) {
    showJoinError("请输入参赛码。");
    joinCode.focus();
    return;
  }
  showJoinError("");
  joinButton.disabled = true;
  joinButton.textContent = "加入中…";
  try {
    const me = await redeem(code);
    writeJson(TOKEN_KEY, me);
    joinCode.value = "";
    begin(me);
  } catch (err) {
    // Opening the same link again on this device: the code is spent, the token is here.
    if (err.code === "join_code_used" && fallback) begin(fallback);
    else {
      showJoinError(err.message);
      joinCode.focus();
    }
  } finally {
    joinButton.disabled = false;
    joinButton.textContent = "加入比赛";
  }
}

joinForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  join(joinCode.value);
});
joinCode.addEventListener("input", () => { if (!joinError.hidden) showJoinError(""); });

/** Start playing as `me`: a fresh page state, then connect. */
function begin(me) {
  state.me = me;
  state.stopped = false;
  state.retries = 0;
  $("#me-name").textContent = me.name || "";
  $("#me-name").hidden = !me.name;
  showView();
  connect();
}

// ---- leaving ---------------------------------------------------------------------------

function inPlay() {
  return Boolean(state.play) && ["countdown", "running", "paused"].includes(state.phase);
}

/**
 * Forget this device's contestant identity. With `revoke` (the 退出 button), the token is
 * also signed out on the server first, like the staff pages do (auth.js), so a copy of it
 * (another tab, a shared phone's storage) stops working; not when the server has already
 * refused it.
 */
function logout(message = "", { revoke = false } = {}) {
  const token = revoke ? state.me?.token : "";
  if (token) {
    revokeToken(token);
  }
  state.stopped = true;
  clearTimeout(state.retryTimer);
  state.retryTimer = 0;
  socket.close();
  socket.forgetChannel();
  if (state.attemptId) writeJson(DRAFT_PREFIX + state.attemptId, null);
  writeJson(TOKEN_KEY, null);
  Object.assign(state, {
    me: null, welcomed: false, round: null, phase: "none", attemptId: "", play: null, board: null,
    boardVisible: true, joined: null, results: null, resync: false,
  });
  state.requests.clear();
  $("#logout-confirm").hidden = true;
  $("#me-name").hidden = true;
  $("#round-banner").hidden = true;
  $("#paused-banner").hidden = true;
  $("#round-status").hidden = true;
  $("#results-card").replaceChildren();
  renderOpenScore(null);
  renderBoard();
  renderConn();
  document.title = "参加比赛 · 临床诊断竞技场";
  showView();
  showJoinError(message);
}

$("#logout").addEventListener("click", () => {
  if (inPlay()) $("#logout-confirm").hidden = false;
  else logout("", { revoke: true });
  measureHead();
});
$("#cancel-logout").addEventListener("click", () => {
  $("#logout-confirm").hidden = true;
  measureHead();
});
$("#confirm-logout").addEventListener("click", () => logout("", { revoke: true }));

// ---- the connection: reconnect with backoff, resume with `since` -----------------------

async function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = 0;
  if (state.stopped || !state.me) return;
  state.requests.clear();
  renderConn();
  try {
    // The same ArenaSocket every time, so hello carries `since` for the round channel.
    const welcome = await socket.connect("", state.me.token);
    if (state.stopped) return;
    onWelcome(welcome);
  } catch (err) {
    if (state.stopped) return;
    if (AUTH_CODES.has(err.code)) {
      logout(err.code === "token_expired"
        ? "参赛身份已过期，请向组织者索取新的参赛码。"
        : err.message || "参赛身份无效，请重新输入参赛码。");
      return;
    }
    scheduleReconnect();
  }
}

function scheduleReconnect() {
  if (state.stopped || !state.me || state.retryTimer) return;
  const now = state.resync;
  state.resync = false;
  const ms = now ? 0 : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** state.retries);
  state.retries = now ? 0 : state.retries + 1;
  state.retryAt = Date.now() + ms;
  state.retryTimer = setTimeout(connect, ms);
  renderConn();
}

function reconnectNow() {
  if (state.stopped || !state.me || socket.status === "open" || socket.status === "connecting") return;
  state.retries = 0;
  connect();
}

function onWelcome(welcome) {
  if (welcome.role && welcome.role !== "contestant") {
    logout("这不是选手的参赛身份，请输入参赛码。");
    return;
  }
  state.welcomed = true;
  state.retries = 0;
  const name = welcome.name || state.me.name || "";
  $("#me-name").textContent = name;
  $("#me-name").hidden = !name;
  renderConn();
  renderLobby();
}

socket.addEventListener("status", (ev) => {
  renderConn();
  if (ev.detail.status === "lost") {
    if (ev.detail.code === 4008) state.resync = true;
    scheduleReconnect();
  }
});

window.addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});

function renderConn() {
  const el = $('[data-testid="connection-status"]');
  const status = socket.status;
  const reconnecting = status !== "open" && !state.stopped && (state.welcomed || state.retryTimer);
  const dataState = status === "open" ? "open" : reconnecting ? "lost" : status;
  el.dataset.state = dataState;
  el.querySelector(".conn-text").textContent = status === "open" ? "已连接"
    : reconnecting ? "连接已断开，正在重连…"
      : status === "connecting" ? "连接中…" : "未连接";
  const wait = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
  el.title = reconnecting && state.retryTimer && wait > 0 ? `${wait} 秒后重试` : "";
}

// ---- the round clock -------------------------------------------------------------------

/** The phase at server time `nowMs`: the clock's status refined by its absolute times,
 * so the countdown ends and time runs out without waiting for a message. */
function phaseAt(nowMs) {
  const c = state.round?.clock;
  if (!c) return "none";
  const s = nowMs / 1000;
  switch (c.status) {
    case "draft":
    case "lobby":
      return "lobby";
    case "paused":
    case "ended":
    case "published":
      return c.status;
    case "running":
      if (c.starts_at != null && s < c.starts_at) return "countdown";
      if (c.deadline != null && s >= c.deadline) return c.phase === "over" ? "over" : "timeup";
      if (c.phase === "over") return "over";
      return "running";
    default:
      return c.phase || c.status || "none";
  }
}

/** Seconds left to show in `phase` (null: nothing to count). */
function secondsLeft(phase, nowMs) {
  const c = state.round?.clock;
  if (!c) return null;
  const s = nowMs / 1000;
  if (phase === "countdown") return Math.max(0, c.starts_at - s);
  if (phase === "paused") return Math.max(0, c.remaining_s);
  if (phase === "running" || phase === "timeup") {
    const left = c.deadline != null ? c.deadline - s : c.remaining_s - (s - c.at);
    return Math.max(0, left);
  }
  return null;
}

function clockText(seconds) {
  const t = Math.max(0, Math.ceil(seconds));
  const hh = Math.floor(t / 3600);
  const mm = String(Math.floor((t % 3600) / 60)).padStart(2, "0");
  const ss = String(t % 60).padStart(2, "0");
  return hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

function tick() {
  const now = socket.serverNow();
  const phase = phaseAt(now);
  if (phase !== state.phase) {
    state.phase = phase;
    applyPhase();
  }
  renderCountdown(phase, now);
}

function renderCountdown(phase, now) {
  const left = secondsLeft(phase, now);
  let label = "";
  let time = "";
  if (phase === "countdown") {
    label = "比赛即将开始";
    time = `${Math.max(1, Math.ceil(left))}…`;
  } else if (phase === "running") {
    label = "剩余";
    time = clockText(left);
  } else if (phase === "paused") {
    label = "已暂停";
    time = clockText(left);
  } else if (phase === "timeup") {
    label = "时间到";
    time = "00:00";
  } else if (phase === "over" || phase === "ended") {
    time = "比赛已结束";
  } else if (phase === "published") {
    time = "成绩已公布";
  }
  countdown.hidden = !time;
  countdown.dataset.phase = phase;
  countdown.dataset.remaining = left === null ? "" : String(Math.ceil(left));
  countdown.classList.toggle("urgent", phase === "running" && left < 60);
  countdown.querySelector(".cd-label").textContent = label;
  const timeEl = countdown.querySelector(".cd-time");
  if (timeEl.textContent !== time) timeEl.textContent = time;
  if (phase === "paused") $("#paused-left").textContent = time;
  // The lobby shows the last seconds before the start big, where the eye already is.
  const lobbyCount = $("#lobby-count");
  const count = phase === "countdown" ? String(Math.max(1, Math.ceil(left))) : "";
  if (lobbyCount.textContent !== count) lobbyCount.textContent = count;
  lobbyCount.hidden = !count;
}

/** Everything that changes with the phase: locks, banners, the lobby's words. */
function applyPhase() {
  const phase = state.phase;
  const reason = LOCKED[phase] ?? "暂时不能作答";
  if (reason) {
    interview.lock(reason, { hint: `${reason}。` });
    orders.lock(reason);
    submission.lock(reason);
  } else {
    interview.unlock();
    orders.unlock();
    submission.unlock();
  }
  $("#paused-banner").hidden = phase !== "paused";
  const status = $("#round-status");
  const text = {
    timeup: "你的作答时间已到。",
    over: "比赛已结束。",
    ended: submission.submitted ? "比赛已结束，已提交，等待公布成绩。" : "比赛已结束。",
    published: state.results ? "成绩已公布。" : "成绩已公布，正在载入你的成绩…",
  }[phase];
  status.textContent = text ?? "";
  status.hidden = !text || (phase === "published" && Boolean(state.results));
  status.dataset.phase = phase;
  renderLobby();
  measureHead();
}

function renderLobby() {
  const r = state.round;
  $("#lobby-round").textContent = r ? [r.competition_title, r.title].filter(Boolean).join(" · ") : "";
  const heading = {
    none: state.welcomed ? "正在获取比赛信息…" : "正在进入比赛…",
    lobby: "等待组织者开始比赛",
    countdown: "比赛即将开始",
    running: "比赛已开始，正在载入病例…",
    paused: "比赛已暂停",
    timeup: "你的作答时间已到",
    over: "比赛已结束",
    ended: "比赛已结束",
    published: "成绩已公布，正在载入你的成绩…",
  }[state.phase] ?? "等待组织者开始比赛";
  $("#lobby-heading").textContent = heading;
  $("#lobby-sub").textContent = ["lobby", "countdown", "none"].includes(state.phase)
    ? "请保持本页面打开，比赛开始后会自动显示病例。" : "";
}

setInterval(tick, 250);

// ---- messages from the server ----------------------------------------------------------

function onRoundState(msg) {
  const prev = state.round;
  if (prev && prev.round_id !== msg.round_id) state.board = null;
  state.round = msg;
  $("#round-title").textContent = msg.title || "";
  $("#competition-title").textContent = msg.competition_title || "";
  document.title = `${msg.title || "比赛"} · 临床诊断竞技场`;
  // Absent means the default (true): the server omits fields that have their default.
  state.boardVisible = msg.board_visible !== false;
  renderReason(msg, prev);
  renderBoard();
  state.phase = ""; // apply the new clock even if the phase is the same
  showView();
  tick();
}

function renderReason(msg, prev) {
  let text = "";
  if (msg.reason) text = `组织者：${msg.reason}`;
  else if (msg.change === "round_extended" && prev) {
    const added = (msg.clock?.extension_s ?? 0) - (prev.clock?.extension_s ?? 0);
    if (added > 0) text = `比赛时间已延长 ${added % 60 ? `${added} 秒` : `${added / 60} 分钟`}`;
  }
  $("#round-banner-text").textContent = text;
  $("#round-banner").hidden = !text;
  $("#round-banner").dataset.change = msg.change || "";
}

$("#round-banner-close").addEventListener("click", () => {
  $("#round-banner").hidden = true;
  measureHead();
});

function onPlayState(msg) {
  const first = state.attemptId !== msg.attempt_id;
  state.attemptId = msg.attempt_id;
  state.play = msg;
  $("#case-title").textContent = msg.title || "";
  $("#patient-line").textContent = msg.patient || "";
  $("#chief-complaint").textContent = msg.chief_complaint || "";
  $("#appearance").textContent = msg.appearance || "";
  const v = msg.vitals ?? {};
  $("#vitals-row").replaceChildren(
    h("td", { dataset: { testid: "vital-temperature" } }, String(v.temperature_c ?? "–")),
    h("td", { dataset: { testid: "vital-heart-rate" } }, String(v.heart_rate ?? "–")),
    h("td", { dataset: { testid: "vital-respiratory-rate" } }, String(v.respiratory_rate ?? "–")),
    h("td", { dataset: { testid: "vital-bp" } }, `${v.systolic_bp ?? "–"}/${v.diastolic_bp ?? "–"}`),
    h("td", { dataset: { testid: "vital-spo2" } }, String(v.spo2 ?? "–")),
  );
  $("#weight").textContent = v.weight_kg != null ? `${num(v.weight_kg)} kg` : "";
  $("#weight-row").hidden = v.weight_kg == null;
  $("#engine").textContent = socket.engine === "llm" ? "AI 病人" : socket.engine ? "脚本病人" : "";
  interview.load(msg.statement || "", msg.transcript ?? []);
  orders.load(msg.menu ?? [], msg.orders ?? [], { typed: Boolean(msg.typed_orders) });
  // First sight of this attempt on this page: the unsent draft if there is one, else what
  // was submitted. Later (a reconnect): keep whatever is typed in the form now.
  const values = first
    ? readDraft(msg.attempt_id) ?? {
      diagnosis: msg.diagnosis ?? "", differentials: msg.differentials ?? [], reasoning: msg.reasoning ?? "",
    }
    : null;
  submission.load({ submitted: msg.submitted, submissions_left: msg.submissions_left }, values);
  renderOpenScore(msg.score);
  $("#submit-dot").hidden = !msg.submitted;
  if (first) {
    let tab = "interview";
    try { tab = sessionStorage.getItem(TAB_KEY) || tab; } catch { /* private mode */ }
    setTab(["interview", "orders", "submit", "board"].includes(tab) ? tab : "interview");
    $("#patient-card").open = true;
  }
  state.phase = ""; // re-apply the locks to the freshly built controls
  showView();
  tick();
  interview.scrollToEnd();
}

function onBoard(msg) {
  // Whole boards with versions: a late, older one must never replace a newer one.
  if (state.board && state.board.round_id === msg.round_id && msg.version < state.board.version) return;
  state.board = msg;
  state.joined = msg.joined;
  renderBoard();
}

function renderBoard() {
  $("#joined-count").textContent = state.joined == null ? "–" : String(state.joined);
  const msg = state.board;
  boardEl.hidden = !state.boardVisible || !msg;
  placeBoard(currentView());
  if (!msg) {
    $("#board-rows").replaceChildren();
    return;
  }
  const board = msg.board ?? { rows: [], frozen: false };
  const rows = board.rows ?? [];
  // Before publication (unless the round has open scoring) the server sends progress
  // only: no score, no rank; say so instead of showing empty columns.
  const progress = Boolean(board.progress_only);
  boardEl.dataset.version = String(msg.version);
  boardEl.dataset.progressOnly = String(progress);
  boardEl.classList.toggle("progress-only", progress);
  boardEl.classList.toggle("frozen", Boolean(board.frozen));
  $("#board-title").textContent = progress ? "比赛进度" : "排行榜";
  $("#board-title-en").textContent = progress ? "Progress" : "Leaderboard";
  $('.tabs [data-tab="board"]').textContent = progress ? "进度" : "排行";
  $("#board-progress-note").hidden = !progress;
  $("#board-frozen").hidden = !board.frozen;
  $("#board-note").hidden = !board.frozen;
  $("#board-empty").hidden = rows.length > 0;
  const myName = $("#me-name").textContent;
  const mine = (row) => (state.attemptId ? row.attempt_id === state.attemptId : Boolean(myName) && row.name === myName);
  $("#board-rows").replaceChildren(...rows.map((row) => {
    const me = mine(row);
    const status = row.pending
      ? h("span", { class: "row-pending", title: "封榜期间提交，成绩暂不公开", "aria-label": "封榜中提交" }, "🔒")
      : row.submitted
        ? h("span", { class: "row-submitted", title: "已提交", "aria-label": "已提交" }, "✓")
        : null;
    return h("tr", {
      class: me ? "me" : null, "aria-current": me ? "true" : null,
      dataset: { testid: "board-row", attempt: row.attempt_id, pending: String(Boolean(row.pending)),
        submitted: String(Boolean(row.submitted)) },
    },
    h("td", { class: "col-rank" }, row.rank == null ? "—" : String(row.rank)),
    h("td", { class: "col-name" },
      h("span", { class: "row-name" }, row.name, me ? h("small", { class: "me-tag" }, "（我）") : null),
      row.team ? h("small", { class: "team-inline muted" }, row.team) : null),
    h("td", { class: "col-team" }, row.team || ""),
    h("td", { class: "col-score" }, row.pending ? "🔒" : row.score == null ? "—" : num(row.score)),
    h("td", { class: "col-progress" }, `问诊 ${row.questions ?? 0} · 检查 ${row.orders ?? 0}`),
    h("td", { class: "col-state" }, status));
  }));
}

/** Open scoring only: the latest submission's score, shown at once (never the lines,
 * which name answer-key items). Without open scoring `score` is never sent. */
function renderOpenScore(score) {
  const el = $("#open-score");
  el.hidden = !score;
  if (!score) {
    el.replaceChildren();
    return;
  }
  const verdict = { correct: "诊断正确", partial: "部分正确", wrong: "诊断错误" }[score.verdict] ?? "";
  el.replaceChildren("本场公开实时得分：",
    h("b", { dataset: { testid: "open-score-total" } }, num(score.total)),
    ` / ${num(score.max_total)}`, verdict ? `（${verdict}）` : "",
    h("small", { class: "muted" }, "以最后一次提交为准。"));
}

function onSubmitAck(msg) {
  submission.onAck(msg);
  renderOpenScore(msg.score);
  $("#submit-dot").hidden = false;
  if (state.phase === "ended") applyPhase();
  // The saved draft is now the submission on record; keep it for a refresh.
  saveDraft(submission.values);
}

function onResults(msg) {
  state.results = msg;
  const of = Number(msg.of) || 0;
  $("#rank").textContent = msg.rank == null ? `未排名 / 共 ${of} 人` : `第 ${msg.rank} 名 / 共 ${of} 人`;
  $("#rank").dataset.rank = msg.rank == null ? "" : String(msg.rank);
  // The answer key and teaching points come only with the contestant's own results.
  $("#results-card").replaceChildren(msg.card ? scoreCard(msg.card, { key: msg.key }) : h("p", { class: "muted" }, "没有成绩。"));
  submission.onPublished();
  state.phase = "";
  showView();
  tick();
}

function onError(msg) {
  const type = msg.re ? state.requests.get(msg.re) : undefined;
  if (type === "ask") {
    if (interview.pending?.id === msg.re) interview.onError(msg.re, msg);
    else toast($("#ask-toast"), msg.message, { code: msg.code });
    return;
  }
  if (type === "order" && orders.onError(msg.re, msg)) return;
  if (type === "submit") {
    if (!submission.onError(msg.re, msg)) toast($("#submit-toast"), msg.message, { code: msg.code });
    return;
  }
  toast(globalToast, msg.message, { code: msg.code });
}

const handlers = {
  round_state: onRoundState,
  play_state: onPlayState,
  board: onBoard,
  answer_start: (m) => interview.onAnswerStart(m),
  answer_delta: (m) => interview.onDelta(m),
  answer_end: (m) => interview.onEnd(m),
  answer_queued: (m) => interview.onQueued(m),
  engine_notice: (m) => interview.onNotice(m),
  order_result: (m) => orders.onResult(m),
  submit_ack: onSubmitAck,
  results: onResults,
  error: onError,
  // The close that follows reconnects at once (see scheduleReconnect).
  resync: () => { state.resync = true; },
  // The current state follows the reload; nothing to do but wait for it.
  reload: () => {},
  reveal: () => {}, // for the big screen; the next `board` brings the final order
};

socket.addEventListener("message", (ev) => {
  const msg = ev.detail;
  const handler = handlers[msg.type];
  if (handler) handler(msg);
  else console.warn("unhandled message", msg.type);
  if (msg.re) state.requests.delete(msg.re);
});

// ---- boot ------------------------------------------------------------------------------

/** A `#code=…` in the address (the organizer's link), removed once read. */
function takeLinkedCode() {
  const linked = new URLSearchParams(location.hash.slice(1)).get("code");
  if (linked) history.replaceState(null, "", location.pathname + location.search);
  return linked;
}

// A link opened in a tab that already shows this page changes only the hash.
window.addEventListener("hashchange", () => {
  const linked = takeLinkedCode();
  if (!linked) return;
  if (state.me) return; // already playing here; 退出 first to switch identity
  joinCode.value = linked;
  join(linked, { fallback: storedJoin() });
});

function boot() {
  const linked = takeLinkedCode();
  const stored = storedJoin();
  renderConn();
  if (linked) {
    // A link from the organizer: join with it (a fresh device), falling back to the
    // identity already stored here when the code was spent by this same device.
    joinCode.value = linked;
    showView();
    join(linked, { fallback: stored });
  } else if (stored) {
    begin(stored);
  } else {
    showView();
    joinCode.focus({ preventScroll: true });
  }
}

boot();
