// The spectators' big screen (1920×1080, read from the back of a hall): the round's
// title, a huge countdown in server time, the public board (20 rows at a time,
// scrolling slowly when there are more), the freeze badge and, when results are
// published, the reveal: the frozen board unfrozen one step every 1.5 s.
// The link carries a spectator token (?k=…); spectators send nothing but hello/ping.

import { $, num } from "./dom.js";
import { ArenaSocket } from "./socket.js";
import { keepConnected } from "./auth.js";
import { BoardView, describeClock, renderCountdown } from "./board.js";

const STEP_MS = 1500;
const HOLD_MS = 4000; // auto-scroll: pause at the top and the bottom
const SCROLL_PX_PER_S = 40;
const REVEAL_WAIT_MS = 3000; // after publication, how long to wait for `reveal` before showing the result

const socket = new ArenaSocket();
const board = new BoardView($("#board"), {
  view: "public", now: () => socket.serverNow(), empty: "等待选手加入…",
});
const state = {
  roundId: "",
  clock: null,
  status: "",
  reveal: null, // {steps, index, timer}
  holdUntil: 0, // boards wait while a reveal may be on its way
  held: null, // the latest board message received meanwhile
  heldTimer: 0,
  published: false,
  boardFrozen: false,
};

const els = {
  comp: $("#competition-title"), round: $("#round-title"), countdown: $("#countdown"),
  reason: $("#reason"), frozen: $("#frozen-badge"), joined: $("#joined"),
  step: $("#reveal-step"), final: $("#final-banner"), hint: $("#hint"),
  scroll: $("#board-scroll"), conn: $("#conn"), fatal: $("#fatal"),
  progress: $("#progress-badge"),
};

function fatal(message) {
  els.fatal.textContent = message;
  els.fatal.hidden = false;
  els.conn.hidden = true;
}

// ---- clock ---------------------------------------------------------------------------------

function tick() {
  const view = describeClock(state.clock, socket.serverNow());
  renderCountdown(els.countdown, view);
  els.countdown.classList.toggle("long", view.time.length > 5);
  // A progress board hides every score anyway: no freeze to announce.
  els.frozen.hidden = !(view.frozen || state.boardFrozen) || state.published || !els.progress.hidden;
}
setInterval(tick, 200);

function onRoundState(msg) {
  const before = state.status;
  state.clock = msg.clock;
  state.status = msg.clock?.status ?? "";
  els.comp.textContent = msg.competition_title ?? "";
  els.round.textContent = msg.title ?? "";
  document.title = `${msg.title ?? ""} · 观众大屏`;
  const showReason = msg.reason && (state.status === "paused" || msg.change === "round_extended");
  els.reason.textContent = showReason ? msg.reason : "";
  els.reason.hidden = !showReason;
  if (state.status === "published") {
    if (before && before !== "published" && !state.reveal) {
      // Published just now: the reveal should follow; hold the final board back for it.
      state.holdUntil = Date.now() + REVEAL_WAIT_MS;
      clearTimeout(state.heldTimer);
      state.heldTimer = setTimeout(releaseHeld, REVEAL_WAIT_MS + 50);
    } else if (!state.reveal && Date.now() >= state.holdUntil) {
      showFinal();
    }
  } else {
    state.published = false;
    els.final.hidden = true;
  }
  tick();
}

// ---- board ---------------------------------------------------------------------------------

function onBoard(msg) {
  if (state.reveal || Date.now() < state.holdUntil) {
    if (!state.held || (msg.version ?? 0) >= (state.held.version ?? 0)) state.held = msg;
    return;
  }
  showBoard(msg);
}

function showBoard(msg) {
  if (!board.update(msg)) return;
  state.boardFrozen = Boolean(msg.board?.frozen);
  // Before publication the public board is progress only (no scores, no ranks).
  els.progress.hidden = !msg.board?.progress_only;
  els.joined.textContent = `已加入 ${msg.joined ?? 0} 人`;
  tick();
}

function releaseHeld() {
  if (state.reveal) return;
  state.holdUntil = 0;
  if (state.held) showBoard(state.held);
  state.held = null;
  if (state.status === "published") showFinal();
}

function showFinal() {
  state.published = true;
  els.step.hidden = true;
  els.hint.hidden = true;
  els.final.hidden = false;
  tick();
}

// ---- reveal --------------------------------------------------------------------------------

const stepBoard = (step) => step?.board ?? step;

function onReveal(msg) {
  const steps = Array.isArray(msg.steps) ? msg.steps.filter(Boolean) : [];
  stopReveal();
  clearTimeout(state.heldTimer);
  state.holdUntil = 0;
  els.final.hidden = true;
  if (!steps.length) {
    releaseHeld();
    return;
  }
  state.reveal = { steps, index: 0, timer: 0 };
  els.progress.hidden = true;
  const shown = board.board;
  if (shown?.progress_only) {
    // The screen showed progress only: open the score column with every submission
    // still hidden ("?"), so each step reveals one.
    board.renderBoard({
      ...shown, progress_only: false, frozen: true,
      rows: (shown.rows ?? []).map((row) => ({ ...row, pending: Boolean(row.submitted) })),
    }, { flash: false });
  }
  els.step.hidden = false;
  els.hint.hidden = false;
  els.step.textContent = "揭榜开始";
  state.reveal.timer = setTimeout(nextStep, 800);
}

function nextStep() {
  const r = state.reveal;
  if (!r) return;
  if (r.index >= r.steps.length) return endReveal();
  const step = r.steps[r.index];
  const next = stepBoard(step);
  const before = board.data;
  const revealed = new Set();
  for (const row of next.rows ?? []) {
    const old = before.get(String(row.attempt_id));
    if (old && ((old.pending && !row.pending) || old.score !== row.score)) revealed.add(String(row.attempt_id));
  }
  if (step?.attempt_id) revealed.add(String(step.attempt_id));
  board.renderBoard(next, { animate: true, highlight: revealed, flash: false });
  state.boardFrozen = Boolean(next.frozen);
  r.index += 1;
  const ids = [...revealed];
  const shown = ids.map((id) => board.data.get(id)).filter(Boolean);
  const who = shown.map((row) => `${row.name} ${row.score === null || row.score === undefined ? "" : num(row.score)}`.trim());
  // A large round reveals everyone outside the top places in one step: count them.
  const said = who.length > 3 ? `${who.length} 位选手的成绩` : who.join("，");
  els.step.textContent = `揭榜 ${r.index} / ${r.steps.length}${said ? `：${said}` : ""}`;
  els.step.dataset.step = String(r.index);
  const row = ids.length ? board.rowOf(ids[0]) : null;
  if (row) setTimeout(() => row.scrollIntoView({ block: "center", behavior: "smooth" }), 950);
  r.timer = setTimeout(r.index >= r.steps.length ? endReveal : nextStep, STEP_MS);
}

function skipReveal() {
  const r = state.reveal;
  if (!r) return;
  clearTimeout(r.timer);
  board.renderBoard(stepBoard(r.steps[r.steps.length - 1]), { flash: false });
  endReveal();
}

function endReveal() {
  const r = state.reveal;
  if (r) {
    clearTimeout(r.timer);
    const last = stepBoard(r.steps[r.steps.length - 1]);
    state.boardFrozen = Boolean(last?.frozen);
  }
  state.reveal = null;
  // A board that came meanwhile is the published result: keep its version, show it if final.
  const held = state.held;
  state.held = null;
  if (held && !(held.board?.rows ?? []).some((row) => row.pending)) showBoard(held);
  els.scroll.scrollTo({ top: 0, behavior: "smooth" });
  showFinal();
}

function stopReveal() {
  if (state.reveal) clearTimeout(state.reveal.timer);
  state.reveal = null;
}

document.addEventListener("keydown", (ev) => {
  if (ev.key === " " || ev.code === "Space") {
    ev.preventDefault();
    skipReveal();
  } else if ((ev.key === "f" || ev.key === "F") && !ev.ctrlKey && !ev.metaKey) {
    if (document.fullscreenElement) document.exitFullscreen?.();
    else document.documentElement.requestFullscreen?.().catch(() => {});
  }
});

// ---- auto-scroll when more than 20 rows ----------------------------------------------------

const scroller = { phase: "top", until: 0, last: 0, pos: 0 };

function scrollLoop(ts) {
  const box = els.scroll;
  const overflow = box.scrollHeight - box.clientHeight;
  const dt = scroller.last ? Math.min(100, ts - scroller.last) : 0;
  scroller.last = ts;
  if (state.reveal || overflow <= 2) {
    scroller.phase = "top";
    scroller.until = ts + HOLD_MS;
    scroller.pos = box.scrollTop;
    if (!state.reveal && overflow <= 2 && box.scrollTop) box.scrollTop = 0;
  } else if (scroller.phase === "top") {
    if (ts >= scroller.until) {
      scroller.phase = "down";
      scroller.pos = box.scrollTop;
    }
  } else if (scroller.phase === "down") {
    scroller.pos = Math.min(overflow, scroller.pos + (SCROLL_PX_PER_S * dt) / 1000);
    box.scrollTop = scroller.pos;
    if (scroller.pos >= overflow - 1) {
      scroller.phase = "bottom";
      scroller.until = ts + HOLD_MS;
    }
  } else if (ts >= scroller.until) {
    box.scrollTo({ top: 0, behavior: "smooth" });
    scroller.phase = "top";
    scroller.until = ts + HOLD_MS + 1000;
  }
  requestAnimationFrame(scrollLoop);
}
requestAnimationFrame(scrollLoop);

// ---- connection ----------------------------------------------------------------------------

socket.addEventListener("message", (ev) => {
  const msg = ev.detail;
  if (state.roundId && msg.round_id && msg.round_id !== state.roundId) return;
  switch (msg.type) {
    case "round_state": onRoundState(msg); break;
    case "board": onBoard(msg); break;
    case "reveal": onReveal(msg); break;
    default: break; // reload: the state follows; resync: the socket reconnects
  }
});

socket.addEventListener("status", (ev) => {
  const { status } = ev.detail;
  els.conn.dataset.state = status;
  // Only a lost connection is worth a word on a big screen; the first connect shows in the title.
  els.conn.hidden = !(status === "lost" || (status === "connecting" && socket.welcome));
});

const token = new URLSearchParams(location.search).get("k") ?? "";
if (!token) {
  fatal("缺少大屏链接参数。请使用组织者生成的观众大屏链接（…/screen.html?k=…）。");
} else {
  keepConnected(socket, {
    token,
    onWelcome: (welcome) => {
      state.roundId = welcome.round_id || state.roundId;
      // A new connection's first board is current: never let an old version number block it.
      board.version = -Infinity;
      els.conn.hidden = true;
    },
    onFatal: (err) => {
      fatal(err.code === "token_expired"
        ? "大屏链接已过期，请向组织者索取新的链接。"
        : `大屏链接无效：${err.message}`);
    },
  });
}
tick();
