// The contestant page for a practice round: pick a case, interview the patient,
// order exams and tests, submit a diagnosis, read the score card.
// Protocol: docs/protocol.md (version 1); the connection lives in socket.js.

import { getSession } from "./auth.js";
import { $, clear, h, toast } from "./dom.js";
import { Interview } from "./interview.js";
import { Orders } from "./orders.js";
import { ArenaSocket } from "./socket.js";
import { Submission } from "./submit.js";

const DIFFICULTY = { easy: "简单", medium: "中等", hard: "困难" };
const CONN_TEXT = { idle: "未连接", connecting: "连接中…", open: "已连接", lost: "连接已断开" };
const NAME_KEY = "clinic-arena.name";

const socket = new ArenaSocket();
// A judge or organizer signed in on this browser practises as staff: every case is listed
// (drafts and cases reserved by a round too), and the server lets them open it.
let staff = (() => {
  const session = getSession();
  return session && ["organizer", "judge"].includes(session.role) ? session : null;
})();
socket.practice = Boolean(staff);
const state = {
  caseId: null, // the case being played (or being started)
  startId: null, // id of the start_practice request in flight
  requests: new Map(), // request id -> type, to put a refused request's error where it was made
  deadline: null,
  timer: 0,
};

const landing = $("#landing");
const practice = $("#practice");
const caseList = $("#case-list");
const nameInput = $("#name");
const landingToast = $("#landing-toast");
const globalToast = $("#global-toast");
const columns = $("#columns");

function send(type, fields) {
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
  form: $("#submit-form"), diagnosis: $("#diagnosis"), differentials: $("#differentials"),
  add: $("#add-differential"), reasoning: $("#reasoning"), submit: $("#submit"),
  confirm: $("#confirm"), confirmBtn: $("#confirm-submit"), cancelBtn: $("#cancel-submit"),
  toastSlot: $("#submit-toast"), score: $("#score"), send,
  afterScored: () => {
    interview.lock("练习已结束，不能再提问");
    orders.lock();
  },
  onAgain: () => startPractice(state.caseId),
  onLeave: () => showLanding(),
});

// ---- landing ---------------------------------------------------------------------------

async function loadCases() {
  try {
    const headers = { accept: "application/json" };
    if (staff) headers.authorization = `Bearer ${staff.token}`;
    const res = await fetch("/api/cases", { headers });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    renderCases(await res.json());
  } catch (err) {
    caseList.replaceChildren(h("div", { class: "load-failed" },
      h("p", {}, "病例列表加载失败，请检查网络后重试。"),
      h("small", { class: "muted" }, String(err.message || err)),
      h("button", { type: "button", class: "btn", onclick: loadCases }, "重新加载")));
  } finally {
    caseList.removeAttribute("aria-busy");
  }
}

const DIFFICULTY_ORDER = { easy: 0, medium: 1, hard: 2 };

function renderCases(cases) {
  if (!cases.length) {
    caseList.replaceChildren(h("p", { class: "muted" }, "还没有可以练习的病例。"));
    return;
  }
  // Dozens of cases: a student picks by specialty and difficulty, or searches.
  const specialties = [...new Set(cases.map((c) => c.specialty))].sort((a, b) => a.localeCompare(b, "zh-CN"));
  $("#case-specialty").replaceChildren(h("option", { value: "" }, "全部专科"),
    ...specialties.map((s) => h("option", { value: s }, s)));
  $("#case-filters").hidden = cases.length < 6;
  const sorted = [...cases].sort((a, b) => a.specialty.localeCompare(b.specialty, "zh-CN")
    || (DIFFICULTY_ORDER[a.difficulty] ?? 9) - (DIFFICULTY_ORDER[b.difficulty] ?? 9));
  caseList.replaceChildren(...sorted.map((c) => caseCard(c)),
    h("p", { class: "muted", id: "case-none", hidden: true }, "没有符合条件的病例。"));
  filterCases();
}

function filterCases() {
  const q = $("#case-search").value.trim().toLowerCase();
  const specialty = $("#case-specialty").value;
  const difficulty = $("#case-difficulty").value;
  let shown = 0;
  for (const card of caseList.querySelectorAll(".case-card")) {
    const match = (!specialty || card.dataset.specialty === specialty)
      && (!difficulty || card.dataset.difficulty === difficulty)
      && (!q || card.dataset.text.includes(q));
    card.hidden = !match;
    if (match) shown += 1;
  }
  $("#case-none").hidden = shown > 0;
  $("#case-count").textContent = `共 ${shown} 个病例`;
}

for (const sel of ["#case-search", "#case-specialty", "#case-difficulty"]) {
  $(sel).addEventListener("input", filterCases);
}

function caseCard(c) {
  return h("article", {
    class: "card case-card",
    dataset: { testid: `case-${c.id}`, case: c.id, specialty: c.specialty, difficulty: c.difficulty,
      text: `${c.title} ${c.title_en ?? ""} ${c.chief_complaint ?? ""}`.toLowerCase() },
  },
  h("div", { class: "case-tags" },
    h("span", { class: "tag" }, c.specialty),
    h("span", { class: `tag tag-${c.difficulty}` }, DIFFICULTY[c.difficulty] ?? c.difficulty),
    c.minutes ? h("span", { class: "tag tag-plain" }, `建议 ${c.minutes} 分钟`) : null),
  h("h2", {}, c.title),
  c.title_en ? h("p", { class: "case-en", lang: "en" }, c.title_en) : null,
  staff && !c.practice_open
    ? h("p", { class: "case-staff muted", dataset: { testid: `staff-only-${c.id}` } },
      "仅工作人员可见：学生现在不能练习这个病例")
    : null,
  h("p", { class: "case-patient" }, c.patient),
  h("p", { class: "case-cc" }, h("span", { class: "muted" }, "主诉："), c.chief_complaint),
  h("button", {
    type: "button", class: "btn btn-primary btn-block start-btn",
    dataset: { testid: `start-${c.id}` }, onclick: (ev) => startPractice(c.id, ev.currentTarget),
  }, "开始练习"));
}

function showLanding() {
  stopTimer();
  state.caseId = null;
  practice.hidden = true;
  landing.hidden = false;
  document.title = "病例练习 · 临床诊断竞技场";
  history.replaceState(null, "", location.pathname + location.search);
  window.scrollTo({ top: 0 });
}

// ---- starting a practice round ---------------------------------------------------------

async function startPractice(caseId, button = null) {
  const slot = practice.hidden ? landingToast : globalToast;
  clear(slot);
  const name = nameInput.value.trim();
  try { localStorage.setItem(NAME_KEY, name); } catch { /* private mode */ }
  for (const b of document.querySelectorAll(".start-btn")) b.disabled = true;
  if (button) button.textContent = "连接中…";
  state.caseId = caseId;
  try {
    if (socket.status !== "open" || socket.name !== name) await socket.connect(name, staff?.token);
    state.startId = send("start_practice", { case_id: caseId });
  } catch (err) {
    if (staff && ["unauthorized", "token_expired"].includes(err.code)) {
      // A signed-out or expired staff session: practise as a student instead.
      staff = null;
      socket.practice = false;
      socket.token = "";
      return startPractice(caseId, button);
    }
    toast(slot, err.message, { code: err.code });
    resetStartButtons();
  }
}

function resetStartButtons() {
  for (const b of document.querySelectorAll(".start-btn")) {
    b.disabled = false;
    b.textContent = "开始练习";
  }
}

function onPracticeStarted(msg) {
  state.startId = null;
  state.caseId = msg.case_id;
  resetStartButtons();
  $("#conn-banner").hidden = true;
  $("#case-title").textContent = msg.title;
  document.title = `${msg.title} · 病例练习`;
  $("#patient-line").textContent = msg.patient;
  $("#chief-complaint").textContent = msg.chief_complaint;
  $("#appearance").textContent = msg.appearance;
  const v = msg.vitals;
  $("#vitals-row").replaceChildren(
    h("td", { dataset: { testid: "vital-temperature" } }, String(v.temperature_c)),
    h("td", { dataset: { testid: "vital-heart-rate" } }, String(v.heart_rate)),
    h("td", { dataset: { testid: "vital-respiratory-rate" } }, String(v.respiratory_rate)),
    h("td", { dataset: { testid: "vital-bp" } }, `${v.systolic_bp}/${v.diastolic_bp}`),
    h("td", { dataset: { testid: "vital-spo2" } }, String(v.spo2)),
  );
  $("#patient-card").open = true;
  $("#engine").textContent = socket.engine === "llm" ? "AI 病人" : "脚本病人";
  interview.reset(msg.statement);
  orders.reset(msg.menu);
  submission.reset();
  setTab("interview");
  landing.hidden = true;
  practice.hidden = false;
  history.replaceState(null, "", `#case=${encodeURIComponent(msg.case_id)}`);
  window.scrollTo({ top: 0 });
  startTimer(msg.deadline);
}

// ---- tabs (phones); on wide screens every pane is visible ------------------------------

function setTab(tab) {
  columns.dataset.tab = tab;
  for (const b of document.querySelectorAll(".tabs [data-tab]")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === tab));
  }
}

for (const b of document.querySelectorAll(".tabs [data-tab]")) {
  b.addEventListener("click", () => {
    setTab(b.dataset.tab);
    window.scrollTo({ top: 0 });
  });
}

// ---- countdown (timed rounds; practice is untimed) ------------------------------------

function startTimer(deadline) {
  stopTimer();
  state.deadline = deadline ?? null;
  const el = $("#countdown");
  el.hidden = state.deadline === null;
  if (state.deadline === null) return;
  const tick = () => {
    const left = Math.max(0, state.deadline - socket.serverNow());
    const s = Math.ceil(left / 1000);
    el.textContent = left > 0
      ? `剩余 ${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
      : "时间到";
    el.classList.toggle("urgent", left < 60000);
  };
  tick();
  state.timer = setInterval(tick, 250);
}

function stopTimer() {
  clearInterval(state.timer);
  state.timer = 0;
}

// ---- messages from the server ----------------------------------------------------------

function onError(msg) {
  const type = msg.re ? state.requests.get(msg.re) : undefined;
  if (msg.re && msg.re === state.startId) {
    state.startId = null;
    resetStartButtons();
    if (!practice.hidden) toast(globalToast, msg.message, { code: msg.code });
    else {
      toast(landingToast, msg.message, { code: msg.code });
      history.replaceState(null, "", location.pathname + location.search);
    }
    return;
  }
  if (type === "ask") return interview.onError(msg.re, msg);
  if (type === "order" && orders.onError(msg.re, msg)) return;
  if (type === "submit" && submission.onError(msg.re, msg)) return;
  toast(practice.hidden ? landingToast : globalToast, msg.message, { code: msg.code });
}

const handlers = {
  practice_started: onPracticeStarted,
  answer_start: (m) => interview.onAnswerStart(m),
  answer_delta: (m) => interview.onDelta(m),
  answer_end: (m) => interview.onEnd(m),
  answer_queued: (m) => interview.onQueued(m),
  engine_notice: (m) => interview.onNotice(m),
  order_result: (m) => orders.onResult(m),
  scored: (m) => submission.onScored(m),
  error: onError,
  resync: () => {}, // the close that follows shows the banner
};

socket.addEventListener("message", (ev) => {
  const msg = ev.detail;
  const handler = handlers[msg.type];
  if (handler) handler(msg);
  else console.warn("unhandled message", msg.type);
  if (msg.re) state.requests.delete(msg.re);
});

// ---- connection status -----------------------------------------------------------------

socket.addEventListener("status", (ev) => {
  const { status, reason } = ev.detail;
  const conn = $(".conn");
  conn.dataset.state = status;
  $(".conn-text").textContent = CONN_TEXT[status] ?? status;
  const lost = status === "lost";
  if (lost) {
    state.startId = null;
    resetStartButtons();
  }
  // On the landing page a lost connection matters only when the next case starts.
  $("#conn-banner").hidden = !(lost && !practice.hidden);
  $("#conn-banner").title = reason ? `${reason}${ev.detail.code ? ` (${ev.detail.code})` : ""}` : "";
});

$("#reconnect").addEventListener("click", () => {
  if (state.caseId) startPractice(state.caseId);
});

$("#back").addEventListener("click", () => {
  const busy = !submission.done && interview.turns.size > 1;
  if (busy && !window.confirm("离开后本次练习不会保留，确定返回病例列表吗？")) return;
  showLanding();
});

// ---- boot ------------------------------------------------------------------------------

try { nameInput.value = localStorage.getItem(NAME_KEY) ?? ""; } catch { /* private mode */ }
await loadCases();
// A link like /#case=r8c3vn opens that case directly (teachers share them).
const linked = new URLSearchParams(location.hash.slice(1)).get("case");
if (linked) startPractice(linked);
