// The judges' desk: pick a round, watch its live board (judges always see the live
// view, frozen or not), open a contestant's transcript as it grows, and rule on the
// score: adjudicate the diagnosis, or override one line of the card, each with a
// written reason. Wire protocol: docs/protocol.md, "Competitions".

import { $, h, num, yuan } from "./dom.js";
import { ArenaSocket } from "./socket.js";
import {
  api, clearSession, getSession, keepConnected, roleName, setupLogin, showText,
} from "./auth.js";
import { BoardView, STATUS_ZH, describeClock, fmtClockTime, renderCountdown } from "./board.js";

const VERDICT_ZH = { correct: "正确", partial: "部分正确", wrong: "错误", needs_judge: "待评委复核" };
const KIND_ZH = {
  asked: "问", answered: "答", ordered: "检查", submitted: "提交", scored: "评分",
  adjudicated: "裁定", overridden: "调分", joined: "加入", practice_started: "开始",
  attempt_started: "入场",
};
const ENGINE_ZH = { scripted: "脚本病人", llm: "AI 病人" };
const ITEM_KIND_ZH = { exam: "体格检查", test: "辅助检查" };

const socket = new ArenaSocket();
const state = {
  session: null,
  connection: null,
  competitions: [],
  compId: "",
  roundId: "",
  clock: null,
  attemptId: "",
  name: "",
  entries: [],
  seen: new Set(), // entry keys already drawn, so a replayed entry is not drawn twice
  card: null,
  pending: new Map(), // request id -> {type, verdict?, key?}
  timer: 0,
};

const els = {
  login: $("#login"), desk: $("#desk"), user: $("#user"), userName: $("#user-name"),
  compSelect: $("#judge-competition"), roundSelect: $("#judge-round"),
  status: $("#round-status"), countdown: $("#countdown"), frozenNote: $("#frozen-note"),
  deskError: $("#desk-error"), detailEmpty: $("#detail-empty"), detailBody: $("#detail-body"),
  name: $("#detail-name"), meta: $("#detail-meta"), transcript: $("#transcript"), card: $("#card"),
  adjudicate: $("#adjudicate"), adjudicateDx: $("#adjudicate-dx"), reason: $("#adjudicate-reason"),
  noSubmission: $("#no-submission"), error: $("#judge-error"), note: $("#judge-note"),
  review: $("#review"), reviewList: $("#review-list"), reviewCount: $("#review-count"),
};

const board = new BoardView($("#board"), {
  view: "live", now: () => socket.serverNow(), onSelect: (id, row) => openTranscript(id, row),
});

const isJudge = () => state.session?.role === "judge";

// ---- login ---------------------------------------------------------------------------------

setupLogin({
  form: $("#login-form"), username: $("#login-username"), password: $("#login-password"),
  button: $("#login-button"), error: $("#login-error"), roles: ["judge", "organizer"],
  roleMessage: "需要评委或组织者账号", onLogin: enter,
});

function showLogin(message = "") {
  state.connection?.stop();
  state.connection = null;
  state.session = null;
  clearInterval(state.timer);
  els.desk.hidden = true;
  els.user.hidden = true;
  els.login.hidden = false;
  showText($("#login-error"), message);
  $("#login-username").focus();
}

function enter(session) {
  state.session = session;
  els.login.hidden = true;
  els.desk.hidden = false;
  els.user.hidden = false;
  els.userName.textContent = `${session.name}（${roleName(session.role)}）`;
  state.connection?.stop();
  state.connection = keepConnected(socket, {
    token: session.token, name: session.name, pill: $(".conn"),
    channels: () => [
      state.roundId ? `round:${state.roundId}` : "", state.attemptId ? `attempt:${state.attemptId}` : "",
    ].filter(Boolean),
    onWelcome: (_w, reconnected) => {
      watch(!reconnected);
      if (state.attemptId) sendOpen();
    },
    onFatal: (err) => {
      clearSession();
      showLogin(err.message || "登录已失效，请重新登录。");
    },
  });
  clearInterval(state.timer);
  state.timer = setInterval(tick, 250);
  loadCompetitions();
}

$("#logout").addEventListener("click", () => {
  clearSession();
  showLogin("");
});
window.addEventListener("staff:unauthorized", (ev) => showLogin(ev.detail?.message || "登录已失效，请重新登录。"));

// ---- choosing a round ----------------------------------------------------------------------

async function loadCompetitions() {
  showText(els.deskError, "");
  try {
    const list = await api("/api/competitions");
    state.competitions = Array.isArray(list) ? list : [];
  } catch (err) {
    showText(els.deskError, err.message);
    return;
  }
  const hash = new URLSearchParams(location.hash.slice(1));
  const wantComp = state.compId || hash.get("c") || "";
  const comp = state.competitions.find((c) => c.id === wantComp) ?? state.competitions[0] ?? null;
  els.compSelect.replaceChildren(
    ...(state.competitions.length ? [] : [h("option", { value: "" }, "还没有赛事")]),
    ...state.competitions.map((c) => h("option", { value: c.id }, c.title)),
  );
  state.compId = comp?.id ?? "";
  els.compSelect.value = state.compId;
  fillRounds(state.roundId || hash.get("r") || "");
}

function fillRounds(wantRound) {
  const comp = state.competitions.find((c) => c.id === state.compId);
  const rounds = comp?.rounds ?? [];
  els.roundSelect.replaceChildren(
    ...(rounds.length ? [] : [h("option", { value: "" }, "还没有场次")]),
    ...rounds.map((r) => h("option", { value: r.id }, `${r.title}（${STATUS_ZH[r.status] ?? r.status}）`)),
  );
  // Default to the round in play, else the first one.
  const pick = rounds.find((r) => r.id === wantRound)
    ?? rounds.find((r) => ["running", "paused", "lobby"].includes(r.status)) ?? rounds[0];
  els.roundSelect.value = pick?.id ?? "";
  selectRound(pick?.id ?? "");
}

els.compSelect.addEventListener("change", () => {
  state.compId = els.compSelect.value;
  fillRounds("");
});
els.roundSelect.addEventListener("change", () => selectRound(els.roundSelect.value));
$("#reload").addEventListener("click", () => loadCompetitions());

function selectRound(id) {
  if (id === state.roundId) return;
  if (state.roundId) socket.forgetChannel(`round:${state.roundId}`);
  state.roundId = id;
  state.clock = null;
  board.reset();
  $("#joined").textContent = "";
  showText($("#round-reason"), "");
  closeTranscript();
  const p = new URLSearchParams();
  if (state.compId) p.set("c", state.compId);
  if (id) p.set("r", id);
  history.replaceState(null, "", `${location.pathname}${location.search}#${p}`);
  const r = state.competitions.find((c) => c.id === state.compId)?.rounds?.find((x) => x.id === id);
  if (r) document.title = `${r.title} · 评委席`;
  watch(true);
  tick();
  loadReview();
}

// ---- the queue: diagnoses the scoring rules left to a judge --------------------------------

let reviewTimer = 0;

/** Reload the queue soon (board updates come in bursts; one request per burst). */
function scheduleReview() {
  clearTimeout(reviewTimer);
  reviewTimer = setTimeout(loadReview, 1500);
}

async function loadReview() {
  clearTimeout(reviewTimer);
  const rid = state.roundId;
  if (!rid) {
    els.review.hidden = true;
    return;
  }
  let queue;
  try {
    queue = await api(`/api/rounds/${encodeURIComponent(rid)}/review`);
  } catch {
    return; // the next board update tries again
  }
  if (rid !== state.roundId) return;
  els.review.hidden = !queue.length;
  els.reviewCount.textContent = queue.length ? `${queue.length} 份` : "";
  els.reviewList.replaceChildren(...queue.map((q) => h("li", {},
    h("button", {
      type: "button", class: "review-item", dataset: { testid: "review-item", attempt: q.attempt_id },
      onclick: () => openTranscript(q.attempt_id, board.data.get(q.attempt_id) ?? { name: q.name }),
    },
    h("b", {}, q.name || "选手"), "：", q.diagnosis,
    h("small", { class: "muted review-reason" }, q.reason)))));
}

function watch(fresh) {
  if (!state.roundId || socket.status !== "open") return;
  const ch = `round:${state.roundId}`;
  if (fresh) socket.forgetChannel(ch);
  try {
    socket.send("watch", { round_id: state.roundId, since: socket.cseq[ch] || 0 });
  } catch (err) {
    showText(els.deskError, err.message);
  }
}

// ---- clock ---------------------------------------------------------------------------------

function tick() {
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
  els.frozenNote.hidden = !view.frozen;
}

setInterval(() => board.tick(), 1000);

// ---- transcript ----------------------------------------------------------------------------

function closeTranscript() {
  if (state.attemptId) socket.forgetChannel(`attempt:${state.attemptId}`);
  state.attemptId = "";
  state.entries = [];
  state.seen = new Set();
  state.card = null;
  els.detailBody.hidden = true;
  els.detailEmpty.hidden = false;
  board.select(null);
}

function openTranscript(id, row) {
  if (id !== state.attemptId) {
    if (state.attemptId) socket.forgetChannel(`attempt:${state.attemptId}`);
    state.attemptId = id;
    state.entries = [];
    state.seen = new Set();
    state.card = null;
    state.name = row?.name ?? "";
    els.reason.value = "";
    showText(els.error, "");
    showText(els.note, "");
    els.name.textContent = state.name;
    els.meta.textContent = row ? [row.team, row.school].filter(Boolean).join(" · ") : "";
    els.transcript.replaceChildren(h("li", { class: "muted placeholder" }, "正在加载…"));
    els.card.replaceChildren();
    els.detailEmpty.hidden = true;
    els.detailBody.hidden = false;
    updateAdjudication();
  }
  sendOpen();
}

function sendOpen() {
  if (!state.attemptId || socket.status !== "open") return;
  try {
    socket.send("open_transcript", { attempt_id: state.attemptId });
  } catch (err) {
    showText(els.error, err.message);
  }
}

const entryKey = (e) => `${e.at}|${e.kind}|${e.actor}|${JSON.stringify(e.payload ?? {})}`;

function onTranscript(msg) {
  state.entries = [];
  state.seen = new Set();
  if (msg.name) {
    state.name = msg.name;
    els.name.textContent = msg.name;
  }
  els.transcript.replaceChildren();
  for (const e of msg.entries ?? []) addEntry(e);
  if (!state.entries.length) els.transcript.replaceChildren(h("li", { class: "muted placeholder" }, "还没有任何操作。"));
  setCard(msg.card ?? null);
}

function onEntry(msg) {
  for (const li of els.transcript.querySelectorAll(":scope > li.placeholder")) li.remove();
  followEnd(() => addEntry(msg.entry));
  if (msg.card) setCard(msg.card);
  else updateAdjudication();
}

function addEntry(e) {
  if (!e) return;
  const key = entryKey(e);
  if (state.seen.has(key)) return;
  state.seen.add(key);
  state.entries.push(e);
  const li = renderEntry(e);
  // Keep time order even if a replayed entry arrives late.
  const later = [...els.transcript.children].find((x) => x.dataset.at && Number(x.dataset.at) > Number(e.at));
  els.transcript.insertBefore(li, later ?? null);
}

/** Follow a growing transcript only when the judge is already reading its end. */
function followEnd(append) {
  const box = $("#detail");
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  append();
  if (atEnd && box.scrollHeight > box.clientHeight) box.scrollTop = box.scrollHeight;
}

function renderEntry(e) {
  const p = e.payload ?? {};
  const failed = e.kind === "answered" && p.status === "failed";
  return h("li", {
    class: `entry entry-${e.kind}${failed ? " failed" : ""}`,
    dataset: { testid: "transcript-entry", kind: e.kind ?? "", at: String(e.at ?? 0) },
  },
  h("span", { class: "entry-time muted" }, fmtClockTime(e.at)),
  h("span", { class: "entry-kind" }, KIND_ZH[e.kind] ?? e.kind ?? ""),
  h("div", { class: "entry-body" }, entryBody(e, p)));
}

/** "judge:wang" → "评委 wang" (the log's actors are role:username). */
function actorName(actor) {
  const [role, ...rest] = String(actor ?? "").split(":");
  return rest.length ? `${roleName(role)} ${rest.join(":")}` : String(actor ?? "");
}

function entryBody(e, p) {
  switch (e.kind) {
    case "attempt_started":
      return h("span", { class: "muted" }, ["进入比赛", ENGINE_ZH[p.engine]].filter(Boolean).join(" · "));
    case "asked":
      return [p.turn ? h("small", { class: "muted turn" }, `第${p.turn}问 `) : null, h("span", { class: "entry-text" }, p.text ?? p.question ?? "")];
    case "answered":
      return [
        h("span", { class: "entry-text" }, p.text ?? p.answer ?? ""),
        p.status === "failed"
          ? h("span", { class: "failed-mark", dataset: { testid: "answer-failed" } }, `回答失败${p.error ? `（${p.error}）` : ""}`)
          : null,
      ];
    case "ordered":
      return [
        h("b", {}, p.name ?? p.item_id ?? ""),
        p.kind ? h("small", { class: "muted" }, ` ${ITEM_KIND_ZH[p.kind] ?? p.kind}`) : null,
        p.abnormal ? h("span", { class: "flag-abnormal" }, " 异常") : null,
        p.result ? h("div", { class: "entry-result" }, p.result) : null,
      ];
    case "submitted": {
      const diffs = Array.isArray(p.differentials) ? p.differentials.filter(Boolean) : [];
      return [
        h("div", {}, h("span", { class: "muted" }, "诊断："), h("b", {}, p.diagnosis ?? "")),
        diffs.length ? h("div", {}, h("span", { class: "muted" }, "鉴别诊断："), diffs.join("、")) : null,
        p.reasoning ? h("div", { class: "entry-result" }, h("span", { class: "muted" }, "诊断依据："), p.reasoning) : null,
      ];
    }
    case "scored": {
      const card = p.card ?? p;
      return h("span", {}, `总分 ${num(card.total)} / ${num(card.max_total)}`,
        card.verdict ? ` · 诊断${VERDICT_ZH[card.verdict] ?? card.verdict}` : "");
    }
    case "adjudicated": {
      const who = p.by ?? p.judge ?? actorName(e.actor);
      const before = p.old ?? p.old_verdict ?? p.from;
      const after = p.new ?? p.verdict ?? p.to;
      return [
        h("div", {}, h("b", {}, who), "：", before !== undefined ? `${VERDICT_ZH[before] ?? before} → ` : "", VERDICT_ZH[after] ?? String(after ?? "")),
        p.reason ? h("div", { class: "entry-reason" }, `理由：${p.reason}`) : null,
      ];
    }
    case "overridden": {
      const who = p.by ?? p.judge ?? actorName(e.actor);
      const section = state.card?.sections?.find((s) => s.key === p.section);
      const line = section?.lines?.[p.line];
      const target = [section?.title ?? p.section, line ? line.label : (p.line !== undefined ? `第 ${Number(p.line) + 1} 项` : "")]
        .filter(Boolean).join(" · ");
      const before = p.old ?? p.old_points ?? p.from;
      const after = p.new ?? p.points ?? p.to;
      return [
        h("div", {}, h("b", {}, who), "：", target, " ", before !== undefined ? `${num(before)} → ` : "", after !== undefined ? num(after) : ""),
        p.reason ? h("div", { class: "entry-reason" }, `理由：${p.reason}`) : null,
      ];
    }
    default: {
      const parts = Object.entries(p).filter(([, v]) => v !== null && typeof v !== "object")
        .map(([k, v]) => `${k}: ${v}`);
      return h("span", { class: "muted" }, parts.join(" · "));
    }
  }
}

// ---- the score card and the judge's controls -----------------------------------------------

function lastSubmission() {
  for (let i = state.entries.length - 1; i >= 0; i -= 1) {
    if (state.entries[i].kind === "submitted") return state.entries[i].payload ?? {};
  }
  return null;
}

function updateAdjudication() {
  const sub = lastSubmission();
  const row = board.data.get(state.attemptId);
  const has = Boolean(sub || state.card || row?.submitted);
  els.adjudicate.hidden = !has;
  els.noSubmission.hidden = has || !state.attemptId;
  els.adjudicateDx.textContent = sub?.diagnosis ? `选手诊断：${sub.diagnosis}` : "";
  const busy = [...state.pending.values()].some((p) => p.type === "adjudicate");
  for (const b of els.adjudicate.querySelectorAll("[data-verdict]")) {
    b.disabled = busy || !isJudge();
    b.title = isJudge() ? "" : "裁定需评委账号";
  }
  els.reason.disabled = !isJudge();
}

function setCard(card) {
  // Keep what a judge is typing into an override form across a re-render.
  const drafts = new Map();
  let focusKey = null;
  for (const form of els.card.querySelectorAll("form.override")) {
    const pts = form.querySelector("input[type=number]");
    const reason = form.querySelector("input[type=text]");
    if (form.contains(document.activeElement)) focusKey = [form.dataset.key, document.activeElement === pts ? "p" : "r"];
    if (reason.value || pts.dataset.dirty) drafts.set(form.dataset.key, { points: pts.value, dirty: pts.dataset.dirty, reason: reason.value });
  }
  state.card = card;
  if (!card) {
    els.card.replaceChildren(h("p", { class: "muted" }, "暂无评分（提交后自动评分）。"));
    updateAdjudication();
    return;
  }
  const verdict = VERDICT_ZH[card.verdict] ?? card.verdict ?? "";
  els.card.replaceChildren(
    h("header", { class: `card-total verdict-${card.verdict}` },
      h("span", { class: "score-total" }, h("b", { dataset: { testid: "card-total" } }, num(card.total)),
        h("span", { class: "score-max" }, ` / ${num(card.max_total)}`)),
      h("span", { class: "verdict", dataset: { testid: "card-verdict" } }, `诊断${verdict}`),
      h("span", { class: "muted" }, `检查费用 ${yuan(card.cost_yuan ?? 0)}`)),
    ...(card.sections ?? []).map((s) => renderSection(s)),
  );
  for (const [key, d] of drafts) {
    const form = els.card.querySelector(`form.override[data-key="${CSS.escape(key)}"]`);
    if (!form) continue;
    const pts = form.querySelector("input[type=number]");
    if (d.dirty) {
      pts.value = d.points;
      pts.dataset.dirty = "1";
    }
    form.querySelector("input[type=text]").value = d.reason;
  }
  if (focusKey) {
    const form = els.card.querySelector(`form.override[data-key="${CSS.escape(focusKey[0])}"]`);
    form?.querySelector(focusKey[1] === "p" ? "input[type=number]" : "input[type=text]")?.focus();
  }
  updateAdjudication();
}

function renderSection(s) {
  return h("section", { class: "card-section", dataset: { testid: "card-section", key: s.key } },
    h("h4", {}, h("span", {}, s.title, s.title_en ? h("small", { lang: "en" }, ` ${s.title_en}`) : null),
      h("span", { class: "pts" }, `${num(s.points)} / ${num(s.max_points)}`)),
    h("ol", { class: "card-lines" }, (s.lines ?? []).map((line, i) => renderLine(s, line, i))));
}

function renderLine(s, line, index) {
  const max = Math.max(0, Number(line.max_points) || 0);
  const min = Math.min(0, Number(line.points) || 0); // a penalty line (max 0) may stay negative
  const key = `${s.key}:${index}`;
  const points = h("input", {
    type: "number", min: String(min), max: String(max), step: "0.5", value: String(line.points),
    "aria-label": `${line.label} 调整后的分数`, dataset: { testid: "override-points" },
    oninput: (ev) => { ev.currentTarget.dataset.dirty = "1"; },
  });
  const reason = h("input", {
    type: "text", maxlength: "500", placeholder: "调整理由（必填）", "aria-label": `${line.label} 调整理由`,
    dataset: { testid: "override-reason" },
  });
  const apply = h("button", {
    type: "submit", class: "btn btn-small", dataset: { testid: "override-apply" },
    disabled: !isJudge(), title: isJudge() ? "" : "调分需评委账号",
  }, "调整");
  const form = h("form", {
    class: "override", dataset: { key, section: s.key, line: String(index) }, novalidate: true,
    onsubmit: (ev) => {
      ev.preventDefault();
      override(s, index, line, points, reason, apply, min, max);
    },
  }, points, reason, apply);
  return h("li", { class: line.met ? "met" : "unmet", dataset: { testid: "card-line", section: s.key, line: String(index) } },
    h("span", { class: "mark", "aria-label": line.met ? "达到" : "未达到" }, line.met ? "✓" : "✗"),
    h("span", { class: "line-label" }, line.label),
    h("span", { class: "pts" }, `${num(line.points)} / ${num(line.max_points)}`),
    line.note ? h("p", { class: "note" }, line.note) : null,
    form);
}

function send(type, fields, info) {
  const id = socket.send(type, fields);
  state.pending.set(id, { type, ...info });
  return id;
}

function override(s, index, line, pointsInput, reasonInput, button, min, max) {
  showText(els.error, "");
  showText(els.note, "");
  const points = Number(pointsInput.value);
  const reason = reasonInput.value.trim();
  if (pointsInput.value === "" || !Number.isFinite(points) || points < min || points > max) {
    showText(els.error, `分数须在 ${num(min)} 到 ${num(max)} 之间。`);
    pointsInput.focus();
    return;
  }
  if (!reason) {
    showText(els.error, "请填写调整理由。");
    reasonInput.focus();
    return;
  }
  try {
    send("override", {
      attempt_id: state.attemptId, section: s.key, line: index, points, reason,
    }, { key: `${s.key}:${index}`, label: line.label });
    button.disabled = true;
  } catch (err) {
    showText(els.error, err.message);
  }
}

for (const b of els.adjudicate.querySelectorAll("[data-verdict]")) {
  b.addEventListener("click", () => {
    showText(els.error, "");
    showText(els.note, "");
    const reason = els.reason.value.trim();
    if (!reason) {
      showText(els.error, "请填写裁定理由。");
      els.reason.focus();
      return;
    }
    try {
      send("adjudicate", { attempt_id: state.attemptId, verdict: b.dataset.verdict, reason },
        { verdict: b.dataset.verdict });
    } catch (err) {
      showText(els.error, err.message);
    }
    updateAdjudication();
  });
}

function onAck(msg) {
  const req = state.pending.get(msg.re);
  if (!req) return;
  state.pending.delete(msg.re);
  if (req.type === "adjudicate") {
    els.reason.value = "";
    showText(els.note, `裁定已记录：判为${VERDICT_ZH[req.verdict] ?? req.verdict}。`);
    loadReview();
  } else if (req.type === "override") {
    const form = els.card.querySelector(`form.override[data-key="${CSS.escape(req.key)}"]`);
    if (form) {
      form.querySelector("input[type=text]").value = "";
      delete form.querySelector("input[type=number]").dataset.dirty;
      form.querySelector("button").disabled = !isJudge();
    }
    showText(els.note, `分数调整已记录：${req.label}。`);
  }
  updateAdjudication();
}

function onError(msg) {
  const req = msg.re ? state.pending.get(msg.re) : null;
  if (req) {
    state.pending.delete(msg.re);
    showText(els.error, msg.message);
    if (req.type === "override") {
      const form = els.card.querySelector(`form.override[data-key="${CSS.escape(req.key)}"]`);
      if (form) form.querySelector("button").disabled = !isJudge();
    }
    updateAdjudication();
    return;
  }
  // watch / open_transcript refused, or a bad frame
  if (state.attemptId && !els.detailBody.hidden) showText(els.error, msg.message);
  else showText(els.deskError, msg.message);
}

function onSocketStatus(ev) {
  if (ev.detail.status !== "lost" || !state.pending.size) return;
  // Unacknowledged requests may or may not have been recorded: the transcript will tell.
  state.pending.clear();
  showText(els.error, "连接中断，上一操作可能未生效；重新连接后请在过程记录中确认。");
  for (const b of els.card.querySelectorAll("form.override button")) b.disabled = !isJudge();
  updateAdjudication();
}

// ---- messages ------------------------------------------------------------------------------

socket.addEventListener("status", onSocketStatus);

socket.addEventListener("message", (ev) => {
  const msg = ev.detail;
  switch (msg.type) {
    case "round_state":
      if (msg.round_id !== state.roundId) return;
      state.clock = msg.clock;
      showText($("#round-reason"), msg.reason ? `原因：${msg.reason}` : "");
      tick();
      break;
    case "board":
      if (msg.round_id !== state.roundId || (msg.view && msg.view !== "live")) return;
      if (board.update(msg)) {
        $("#joined").textContent = `已加入 ${msg.joined ?? 0} 人`;
        if (state.attemptId) updateAdjudication();
        scheduleReview();
      }
      break;
    case "transcript":
      if (msg.attempt_id === state.attemptId) onTranscript(msg);
      break;
    case "transcript_entry":
      if (msg.attempt_id === state.attemptId) onEntry(msg);
      break;
    case "ack":
      onAck(msg);
      break;
    case "error":
      onError(msg);
      break;
    case "reload":
      if (msg.channel === `attempt:${state.attemptId}`) sendOpen();
      break;
    default:
      break;
  }
});

// ---- boot ----------------------------------------------------------------------------------

const saved = getSession();
if (saved && (saved.role === "judge" || saved.role === "organizer")) enter(saved);
else showLogin(saved ? `当前登录的是${roleName(saved.role)}账号，需要评委或组织者账号。` : "");
