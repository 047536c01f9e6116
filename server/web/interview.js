// The interview: chat log and question box. Patient answers stream in as
// answer_delta pieces and are appended as text nodes, never parsed as HTML.

import { clear, h, toast } from "./dom.js";

const NEAR_BOTTOM_PX = 96;

function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
}

export class Interview {
  /** send(type, fields) -> request id; throws when not connected. */
  constructor({ chat, form, input, button, hint, toastSlot, send }) {
    Object.assign(this, { chat, form, input, button, hint, toastSlot, send });
    this.turns = new Map(); // turn -> {bubble, text (Text node), question}
    this.pending = null; // {id, text, doctor} of the question awaiting answer_start
    this.answering = null; // turn being streamed
    this.locked = "";
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.ask(input.value);
    });
    input.addEventListener("keydown", (ev) => {
      // Enter sends; Shift+Enter is a new line; Enter that confirms an IME candidate is not a send.
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this.ask(input.value);
      }
    });
    input.addEventListener("input", () => this._grow());
  }

  /** A new practice: empty log, the patient's opening words as the first bubble. */
  reset(statement) {
    this.turns.clear();
    this.pending = null;
    this.answering = null;
    this.locked = "";
    this.chat.replaceChildren(
      h("p", { class: "chat-note muted" }, "问诊开始。像在诊室里一样提问，病人会逐字回答。"),
    );
    const opening = this._patientBubble(0);
    opening.text.data = statement;
    opening.bubble.dataset.state = "done";
    this.input.value = "";
    clear(this.toastSlot);
    this._setBusy(false);
    this._grow();
  }

  /**
   * Rebuild the log from a transcript snapshot (`play_state` on a (re)join): the opening
   * words, then each turn's question and answer; a `pending` turn keeps streaming
   * (answer_delta appends to it), a `failed` one offers 重新提问 unless it was already
   * asked again. Text typed in the box and not yet sent stays.
   */
  load(statement, transcript = []) {
    const draft = this.input.value;
    const lost = this.pending; // sent before the connection dropped, maybe never recorded
    const { locked, lockHint } = this;
    this.reset(statement);
    this.locked = locked;
    this.lockHint = lockHint;
    const turns = [...transcript].sort((a, b) => a.turn - b.turn);
    turns.forEach((t, i) => {
      const retried = turns.slice(0, i).some((p) => p.status === "failed" && p.question === t.question);
      this.chat.append(h("div", { class: "msg msg-doctor", dataset: { testid: "doctor-bubble" } },
        h("span", { class: "msg-who" }, retried ? "我（重新提问）" : "我"),
        h("p", { class: "msg-text" }, t.question)));
      const entry = this._patientBubble(t.turn);
      entry.question = t.question;
      entry.text.data = t.answer ?? "";
      if (t.status === "pending") {
        entry.bubble.dataset.state = "streaming";
        this.answering = t.turn;
      } else if (t.status === "failed") {
        entry.bubble.dataset.state = "failed";
        const askedAgain = turns.slice(i + 1).some((later) => later.question === t.question);
        this._markFailed(entry, {}, { retry: !askedAgain });
      } else {
        entry.bubble.dataset.state = "done";
      }
    });
    const recorded = lost && turns.some((t) => t.question === lost.text);
    this.input.value = draft || (lost && !recorded ? lost.text : "");
    this._setBusy(this.answering !== null);
    this._grow();
    this.scrollToEnd();
  }

  scrollToEnd() {
    if (this.chat.scrollHeight > this.chat.clientHeight + 1) this.chat.scrollTop = this.chat.scrollHeight;
  }

  ask(raw, { retryOf = null } = {}) {
    const text = String(raw).trim();
    if (this.locked || this.pending || this.answering !== null) return;
    if (!text) {
      this.input.focus();
      return;
    }
    const stick = this._stick();
    const doctor = h("div", { class: "msg msg-doctor", dataset: { testid: "doctor-bubble" } },
      h("span", { class: "msg-who" }, retryOf ? "我（重新提问）" : "我"),
      h("p", { class: "msg-text" }, text));
    this.chat.append(doctor);
    this._scroll(stick);
    let id;
    try {
      id = this.send("ask", { text });
    } catch (err) {
      doctor.remove();
      toast(this.toastSlot, err.message, { code: err.code });
      return;
    }
    if (retryOf) retryOf.remove();
    this.refocus = document.activeElement === this.input;
    this.pending = { id, text, doctor };
    if (!retryOf) this.input.value = "";
    this._grow();
    clear(this.toastSlot);
    this._setBusy(true);
  }

  onAnswerStart(msg) {
    const stick = this._stick();
    const question = this.pending?.id === msg.re ? this.pending.text : "";
    this.pending = null;
    this.answering = msg.turn;
    const entry = this._patientBubble(msg.turn);
    entry.question = question;
    entry.bubble.dataset.state = "streaming";
    this._status(entry, "病人正在思考…");
    this._setBusy(true);
    this._scroll(stick);
  }

  /** answer_queued: every model slot is busy; position 0 means the answer starts now. */
  onQueued(msg) {
    const entry = this.turns.get(msg.turn);
    if (!entry || entry.text.data) return;
    this._status(entry, msg.position > 0 ? `排队中：第 ${msg.position} 位，请稍候…` : "病人正在思考…");
  }

  /** engine_notice: the offline patient stands in for the model, or the model is back. */
  onNotice(msg) {
    const stick = this._stick();
    this.chat.append(h("p", {
      class: "chat-note muted", role: "status", dataset: { testid: "engine-notice" },
    }, msg.message));
    this._scroll(stick);
  }

  onDelta(msg) {
    const entry = this.turns.get(msg.turn);
    if (!entry) return;
    const stick = this._stick();
    if (entry.status) this._status(entry, "");
    entry.text.appendData(msg.text);
    this._scroll(stick);
  }

  // The line under a bubble that has no words yet: "thinking", or the place in the queue.
  _status(entry, text) {
    if (!text) {
      entry.status?.remove();
      entry.status = null;
      return;
    }
    if (!entry.status) {
      entry.status = h("small", { class: "muted", dataset: { testid: "answer-status" } });
      entry.bubble.append(entry.status);
    }
    entry.status.textContent = text;
  }

  onEnd(msg) {
    const entry = this.turns.get(msg.turn);
    if (entry) {
      const stick = this._stick();
      this._status(entry, "");
      entry.bubble.dataset.state = msg.status === "ok" ? "done" : "failed";
      if (msg.status !== "ok") this._markFailed(entry, msg);
      this._scroll(stick);
    }
    if (this.answering === msg.turn) this.answering = null;
    this._setBusy(false);
    if (this.refocus && !this.locked) this.input.focus();
  }

  /** The server refused the question (nothing was recorded): give the text back. */
  onError(requestId, msg) {
    if (this.pending?.id !== requestId) return;
    const { text, doctor } = this.pending;
    this.pending = null;
    doctor.remove();
    if (!this.input.value.trim()) this.input.value = text;
    this._setBusy(false);
    toast(this.toastSlot, msg.message, { code: msg.code });
    if (msg.code === "round_not_running" || msg.code === "deadline_passed") this.lock(msg.message);
  }

  /** The round is over (submitted, or time is up): no more questions. `hint` replaces the
   * line under the box (default: the practice wording). */
  lock(reason, { hint } = {}) {
    this.locked = reason || "练习已结束";
    this.lockHint = hint;
    this._setBusy(false);
  }

  /** A timed round resumed (after a countdown or a pause): questions are allowed again. */
  unlock() {
    if (!this.locked) return;
    this.locked = "";
    this.lockHint = undefined;
    this._setBusy(this.pending !== null || this.answering !== null);
  }

  _markFailed(entry, msg, { retry: offerRetry = true } = {}) {
    const retry = h("button", {
      type: "button", class: "btn btn-small", dataset: { testid: "retry-button" },
      onclick: () => this.ask(entry.question, { retryOf: retry }),
    }, "重新提问");
    const note = h("div", { class: "msg-failed", role: "alert", dataset: { testid: "answer-failed" } },
      h("span", {}, `回答失败：${msg.message || "病人的回答中断了。"}`),
      msg.code ? h("small", { class: "muted" }, ` (${msg.code})`) : null,
      entry.question && offerRetry ? retry : null);
    entry.bubble.append(note);
  }

  _patientBubble(turn) {
    const text = document.createTextNode("");
    const bubble = h("div", {
      class: "msg msg-patient", dataset: { testid: "patient-bubble", turn: String(turn), state: "" },
    }, h("span", { class: "msg-who" }, "病人"),
    h("p", { class: "msg-text", dataset: { testid: "bubble-text" } }, text));
    this.chat.append(bubble);
    const entry = { bubble, text, question: "", status: null };
    this.turns.set(turn, entry);
    return entry;
  }

  _setBusy(busy) {
    const off = busy || Boolean(this.locked);
    this.input.disabled = off;
    this.button.disabled = off;
    this.button.textContent = busy ? "回答中…" : "发送";
    this.input.placeholder = this.locked
      ? this.locked
      : busy ? "病人正在回答…" : "向病人提问，如：哪里不舒服？";
    this.hint.textContent = this.locked
      ? this.lockHint ?? "本次练习已结束，可查看右侧评分。"
      : "Enter 发送，Shift+Enter 换行";
    this.form.dataset.state = this.locked ? "locked" : busy ? "busy" : "ready";
  }

  _grow() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  // Follow the conversation only if the reader is already at the end of it.
  _stick() {
    const scrolls = this.chat.scrollHeight > this.chat.clientHeight + 1;
    return scrolls ? nearBottom(this.chat) : nearBottom(document.scrollingElement);
  }

  _scroll(stick) {
    if (!stick) return;
    if (this.chat.scrollHeight > this.chat.clientHeight + 1) this.chat.scrollTop = this.chat.scrollHeight;
    else if (this.chat.offsetParent) window.scrollTo({ top: document.scrollingElement.scrollHeight });
  }
}
