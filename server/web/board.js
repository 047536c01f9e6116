// A round's live display, shared by the organizer console, the judges' desk and the
// big screen: the leaderboard table (a `board` message's {frozen, progress_only, rows};
// a progress-only board has no scores or ranks to show) and the round
// clock (`round_state.clock`, times in server seconds) read against server time.
// Rows are keyed by attempt_id and reused, so a row that changes rank can slide to
// its new place; everything from the server is inserted as text.

import { h, num } from "./dom.js";
import { toMs } from "./auth.js";

// ---- time ----------------------------------------------------------------------------------

/** 75 → "01:15", 3725 → "1:02:05". */
export function fmtDuration(seconds) {
  const s = Math.max(0, Math.ceil(Number(seconds) || 0));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${two(mm)}:${two(ss)}`;
}

/** A server time (s or ms) as local wall time "14:05:09". */
export function fmtClockTime(t) {
  const ms = toMs(t);
  if (ms === null) return "—";
  return new Date(ms).toLocaleTimeString("zh-CN", { hour12: false });
}

/** Milliseconds → "8秒", "3分05秒", "1小时02分". */
export function fmtAgo(ms) {
  if (ms === null || !Number.isFinite(ms)) return "—";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}秒`;
  if (s < 3600) return `${Math.floor(s / 60)}分${String(s % 60).padStart(2, "0")}秒`;
  return `${Math.floor(s / 3600)}小时${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}分`;
}

export const STATUS_ZH = {
  draft: "未开放", lobby: "候场中", running: "进行中", paused: "已暂停", ended: "已结束",
  published: "成绩已公布",
};

const PHASE_LABEL = {
  none: "—", draft: "未开放", lobby: "候场中", countdown: "即将开始", running: "剩余时间",
  over: "时间到", paused: "暂停", ended: "已结束", published: "成绩已公布",
};

/**
 * What a countdown shows now. `clock` is round_state.clock (server seconds), `nowMs`
 * the server time in ms (socket.serverNow()). Returns {status, phase, label, time,
 * seconds, urgent, frozen}; `time` is "" once the round is over.
 */
export function describeClock(clock, nowMs) {
  if (!clock) {
    return { status: "none", phase: "none", label: PHASE_LABEL.none, time: "--:--", seconds: null, urgent: false, frozen: false };
  }
  const now = nowMs / 1000;
  const status = clock.status || "draft";
  if (clock.remaining_s == null && clock.deadline == null && clock.starts_at == null) {
    // Only the status is known yet (from a list): no time to show.
    return { status, phase: status, label: PHASE_LABEL[status] ?? status, time: "--:--", seconds: null, urgent: false, frozen: false };
  }
  let phase = status;
  let seconds = Number(clock.remaining_s) || 0;
  if (status === "running") {
    if (clock.starts_at != null && now < clock.starts_at) {
      phase = "countdown";
      seconds = clock.starts_at - now;
    } else {
      if (clock.deadline != null) {
        seconds = Math.max(0, clock.deadline - now);
      } else {
        // No deadline in the snapshot: count down from remaining_s at the snapshot time.
        const from = Math.max(Number(clock.at) || now, Number(clock.starts_at) || 0);
        seconds = Math.max(0, seconds - Math.max(0, now - from));
      }
      phase = seconds <= 0 ? "over" : "running";
    }
  }
  let time;
  if (phase === "countdown") time = String(Math.max(0, Math.ceil(seconds)));
  else if (phase === "ended" || phase === "published") time = "";
  else time = fmtDuration(seconds);
  const frozen = Boolean(clock.frozen)
    || (clock.freeze_at != null && now >= clock.freeze_at
      && ["running", "paused", "ended"].includes(status));
  return {
    status, phase, label: PHASE_LABEL[phase] ?? phase, time, seconds,
    urgent: phase === "running" && seconds <= 60, frozen: status !== "published" && frozen,
  };
}

/**
 * Draw a countdown into `el` (label + time, as text): data-phase for styling and tests.
 */
export function renderCountdown(el, view) {
  if (!el) return;
  el.dataset.phase = view.phase;
  el.classList.toggle("urgent", view.urgent);
  let label = el.querySelector(".cd-label");
  let time = el.querySelector(".cd-time");
  if (!label || !time) {
    label = h("span", { class: "cd-label" });
    time = h("span", { class: "cd-time" });
    el.replaceChildren(label, time);
  }
  if (label.textContent !== view.label) label.textContent = view.label;
  if (time.textContent !== view.time) time.textContent = view.time;
  time.hidden = !view.time;
}

// ---- the board -----------------------------------------------------------------------------

const dash = "—";

function scoreText(row, view) {
  if (row.pending) return view === "public" ? "?" : "待揭晓";
  return row.score === null || row.score === undefined ? dash : num(row.score);
}

/** Columns of the judges' live board. */
export const LIVE_COLUMNS = [
  { key: "rank", title: "排名", fill: (td, r) => { td.textContent = r.rank ?? dash; } },
  { key: "name", title: "姓名", fill: (td, r) => { td.textContent = r.name; } },
  { key: "team", title: "队伍", fill: (td, r) => { td.textContent = r.team || dash; } },
  { key: "school", title: "学校", fill: (td, r) => { td.textContent = r.school || dash; } },
  { key: "score", title: "得分", fill: (td, r) => { td.textContent = scoreText(r, "live"); } },
  { key: "questions", title: "问诊", fill: (td, r) => { td.textContent = String(r.questions ?? 0); } },
  { key: "orders", title: "检查", fill: (td, r) => { td.textContent = String(r.orders ?? 0); } },
  {
    key: "last", title: "距上次操作",
    fill: (td, r, ctx) => {
      td.dataset.last = r.last_action ? String(r.last_action) : "";
      td.textContent = r.last_action ? fmtAgo(ctx.now() - toMs(r.last_action)) : dash;
    },
  },
  {
    key: "submitted", title: "已提交",
    fill: (td, r) => {
      td.textContent = r.submitted ? "✓" : "";
      td.setAttribute("aria-label", r.submitted ? "已提交" : "未提交");
    },
  },
];

/** Columns of the public board (the big screen). */
export const PUBLIC_COLUMNS = [
  { key: "rank", title: "名次", fill: (td, r) => { td.textContent = r.rank ?? dash; } },
  {
    key: "who", title: "选手",
    fill: (td, r) => {
      const sub = [r.team, r.school].filter(Boolean).join(" · ");
      td.replaceChildren(...[h("span", { class: "who-name" }, r.name), sub ? h("small", { class: "who-sub" }, sub) : null]
        .filter(Boolean));
    },
  },
  { key: "questions", title: "问诊", fill: (td, r) => { td.textContent = String(r.questions ?? 0); } },
  { key: "orders", title: "检查", fill: (td, r) => { td.textContent = String(r.orders ?? 0); } },
  {
    key: "submitted", title: "提交",
    fill: (td, r) => {
      td.textContent = r.submitted ? "✓" : "";
      td.setAttribute("aria-label", r.submitted ? "已提交" : "未提交");
    },
  },
  { key: "score", title: "得分", fill: (td, r) => { td.textContent = scoreText(r, "public"); } },
];

/**
 * A board table. `update(msg)` takes a `board` message and ignores one whose version is
 * lower than the last rendered; `renderBoard(board, {animate, highlight})` draws a board
 * (reveal steps carry no version). `tick()` refreshes the "since last action" cells.
 */
export class BoardView {
  constructor(table, { view = "live", columns, now = () => Date.now(), onSelect = null,
    empty = "还没有选手加入。" } = {}) {
    this.table = table;
    this.view = view;
    this.columns = columns ?? (view === "live" ? LIVE_COLUMNS : PUBLIC_COLUMNS);
    this.ctx = { now, view };
    this.onSelect = onSelect;
    this.emptyText = empty;
    this.version = -Infinity;
    this.rows = new Map(); // attempt_id -> <tr>
    this.data = new Map(); // attempt_id -> last row drawn
    this.board = null;
    this.selected = null;
    table.classList.add("board", `board-${view}`);
    if (!table.dataset.testid) table.dataset.testid = "board";
    this.tbody = h("tbody");
    this.emptyRow = h("tr", { class: "board-empty" },
      h("td", { colspan: String(this.columns.length) }, empty));
    table.replaceChildren(
      h("thead", {}, h("tr", {}, this.columns.map((c) => h("th", { scope: "col", class: `col-${c.key}` }, c.title)))),
      this.tbody,
    );
    this.tbody.append(this.emptyRow);
    if (onSelect) {
      table.classList.add("board-selectable");
      this.tbody.addEventListener("click", (ev) => this._pick(ev));
      this.tbody.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          this._pick(ev);
        }
      });
    }
  }

  /** A `board` message; false when ignored as older than what is shown. */
  update(msg, options = {}) {
    if (typeof msg.version === "number") {
      if (msg.version < this.version) return false;
      this.version = msg.version;
    }
    this.renderBoard(msg.board ?? msg, options);
    return true;
  }

  /** Forget everything (another round, or a `reload`). */
  reset() {
    this.version = -Infinity;
    this.rows.clear();
    this.data.clear();
    this.board = null;
    this.tbody.replaceChildren(this.emptyRow);
  }

  renderBoard(board, { animate = false, highlight = null, flash = true } = {}) {
    const rows = Array.isArray(board?.rows) ? board.rows : [];
    const first = this.board === null;
    const before = animate ? this._positions() : null;
    const changed = new Set(highlight ?? []);
    let prev = null;
    const seen = new Set();
    for (const row of rows) {
      const id = String(row.attempt_id);
      if (seen.has(id)) continue; // a malformed board; never draw a row twice
      seen.add(id);
      let tr = this.rows.get(id);
      const old = this.data.get(id);
      if (!tr) {
        tr = this._newRow(id);
        this.rows.set(id, tr);
        if (!first && animate) tr.classList.add("row-new");
      }
      if (old && flash && !first && (old.score !== row.score || old.pending !== row.pending)) changed.add(id);
      this._fill(tr, row);
      this.data.set(id, row);
      const want = prev ? prev.nextSibling : this.tbody.firstChild;
      if (tr !== want) this.tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [id, tr] of this.rows) {
      if (!seen.has(id)) {
        tr.remove();
        this.rows.delete(id);
        this.data.delete(id);
      }
    }
    if (rows.length) this.emptyRow.remove();
    else this.tbody.replaceChildren(this.emptyRow);
    this.table.dataset.frozen = String(Boolean(board?.frozen));
    // A progress board (public, before publication) carries no score or rank: hide those
    // columns rather than show a column of dashes.
    const progress = Boolean(board?.progress_only);
    this.table.dataset.progressOnly = String(progress);
    this.table.classList.toggle("board-progress", progress);
    this.board = board;
    if (before) this._slide(before);
    for (const id of changed) {
      const tr = this.rows.get(id);
      if (!tr) continue;
      tr.classList.remove("flash");
      void tr.offsetWidth; // restart the animation
      tr.classList.add("flash");
    }
  }

  /** Refresh the cells that depend on the time now. */
  tick() {
    for (const tr of this.rows.values()) {
      const td = tr.querySelector("td[data-last]");
      if (td && td.dataset.last) td.textContent = fmtAgo(this.ctx.now() - toMs(td.dataset.last));
    }
  }

  select(id) {
    this.selected = id;
    for (const [key, tr] of this.rows) {
      const on = key === id;
      tr.classList.toggle("selected", on);
      if (this.onSelect) tr.setAttribute("aria-selected", String(on));
    }
  }

  /** The row element for an attempt (for scrolling it into view). */
  rowOf(id) {
    return this.rows.get(id) ?? null;
  }

  _newRow(id) {
    const tr = h("tr", { dataset: { testid: "board-row", attempt: id } },
      this.columns.map((c) => h("td", { class: `col-${c.key}` })));
    if (this.onSelect) {
      tr.tabIndex = 0;
      tr.setAttribute("aria-selected", String(id === this.selected));
      if (id === this.selected) tr.classList.add("selected");
    }
    return tr;
  }

  _fill(tr, row) {
    tr.dataset.rank = row.rank ?? "";
    tr.dataset.submitted = String(Boolean(row.submitted));
    tr.dataset.pending = String(Boolean(row.pending));
    tr.classList.toggle("pending", Boolean(row.pending));
    tr.classList.toggle("submitted", Boolean(row.submitted));
    this.columns.forEach((c, i) => c.fill(tr.children[i], row, this.ctx));
  }

  _positions() {
    const out = new Map();
    for (const [id, tr] of this.rows) out.set(id, tr.getBoundingClientRect().top);
    return out;
  }

  // FLIP: put each moved row back where it was, then let it slide to its new place.
  _slide(before) {
    const moved = [];
    for (const [id, tr] of this.rows) {
      const top = before.get(id);
      if (top === undefined) continue;
      const dy = top - tr.getBoundingClientRect().top;
      if (Math.abs(dy) < 1) continue;
      tr.style.transition = "none";
      tr.style.transform = `translateY(${dy}px)`;
      moved.push(tr);
    }
    if (!moved.length) return;
    void this.tbody.offsetHeight;
    requestAnimationFrame(() => {
      for (const tr of moved) {
        tr.classList.add("moving");
        tr.style.transition = "";
        tr.style.transform = "";
        setTimeout(() => tr.classList.remove("moving"), 1000);
      }
    });
  }

  _pick(ev) {
    const tr = ev.target.closest("tr[data-attempt]");
    if (!tr || !this.tbody.contains(tr)) return;
    this.select(tr.dataset.attempt);
    this.onSelect(tr.dataset.attempt, this.data.get(tr.dataset.attempt));
  }
}
