// Submitting a diagnosis (with a confirm step: it cannot be changed afterwards)
// and the score card that explains every point.

import { clear, h, num, toast, yuan } from "./dom.js";

const MAX_DIFFERENTIALS = 10;
const START_DIFFERENTIALS = 3;
const VERDICTS = {
  correct: { text: "正确", en: "Correct" },
  partial: { text: "部分正确", en: "Partly correct" },
  wrong: { text: "错误", en: "Incorrect" },
};

export class Submission {
  constructor({ form, diagnosis, differentials, add, reasoning, submit, confirm, confirmBtn,
    cancelBtn, toastSlot, score, send, afterScored = () => {}, onAgain = () => {}, onLeave = () => {} }) {
    Object.assign(this, { form, diagnosis, diffBox: differentials, add, reasoning, submitBtn: submit,
      confirmBox: confirm, confirmBtn, cancelBtn, toastSlot, scoreEl: score, send, afterScored,
      onAgain, onLeave });
    this.pendingId = null;
    this.done = false;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.review();
    });
    add.addEventListener("click", () => this._addDifferential(true));
    cancelBtn.addEventListener("click", () => this._confirming(false));
    confirmBtn.addEventListener("click", () => this.confirm());
    diagnosis.addEventListener("input", () => diagnosis.removeAttribute("aria-invalid"));
  }

  reset() {
    this.pendingId = null;
    this.done = false;
    this.form.reset();
    this.diffBox.replaceChildren();
    for (let i = 0; i < START_DIFFERENTIALS; i += 1) this._addDifferential(false);
    this.scoreEl.replaceChildren();
    this.diagnosis.removeAttribute("aria-invalid");
    clear(this.toastSlot);
    this._confirming(false);
    this._setEnabled(true);
    this.submitBtn.textContent = "提交";
  }

  get values() {
    return {
      diagnosis: this.diagnosis.value.trim(),
      differentials: [...this.diffBox.querySelectorAll("input")].map((i) => i.value.trim()).filter(Boolean),
      reasoning: this.reasoning.value.trim(),
    };
  }

  /** Step one: check the form and ask for confirmation. */
  review() {
    if (this.done || this.pendingId) return;
    if (!this.values.diagnosis) {
      this.diagnosis.setAttribute("aria-invalid", "true");
      toast(this.toastSlot, "请填写主要诊断。", { code: "required" });
      this.diagnosis.focus();
      return;
    }
    clear(this.toastSlot);
    this._confirming(true);
  }

  /** Step two: send it. */
  confirm() {
    if (this.done || this.pendingId) return;
    try {
      this.pendingId = this.send("submit", this.values);
    } catch (err) {
      toast(this.toastSlot, err.message, { code: err.code });
      return;
    }
    this.confirmBtn.disabled = true;
    this.confirmBtn.textContent = "提交中…";
    this._setEnabled(false);
  }

  onScored(msg) {
    if (msg.re !== this.pendingId && this.done) return;
    this.pendingId = null;
    this.done = true;
    this._confirming(false);
    this._setEnabled(false);
    this.submitBtn.textContent = "已提交";
    this.scoreEl.replaceChildren(this._card(msg));
    this.afterScored(msg);
    this.scoreEl.scrollIntoView({ block: "start" });
  }

  onError(requestId, msg) {
    if (requestId !== this.pendingId) return false;
    this.pendingId = null;
    this._confirming(false);
    toast(this.toastSlot, msg.message, { code: msg.code });
    if (["already_submitted", "round_not_running", "deadline_passed"].includes(msg.code)) {
      this.done = true;
      this.submitBtn.textContent = "不能再提交";
      this._setEnabled(false);
    } else {
      this._setEnabled(true);
    }
    return true;
  }

  _confirming(on) {
    this.confirmBox.hidden = !on;
    this.submitBtn.hidden = on;
    this.confirmBtn.disabled = false;
    this.confirmBtn.textContent = "确认提交";
    if (on) this.confirmBtn.focus();
  }

  _setEnabled(on) {
    for (const el of this.form.querySelectorAll("input, textarea, button")) el.disabled = !on;
    this.add.hidden = !on || this.diffBox.children.length >= MAX_DIFFERENTIALS;
  }

  _addDifferential(focus) {
    const n = this.diffBox.children.length;
    if (n >= MAX_DIFFERENTIALS) return;
    const input = h("input", {
      type: "text", maxlength: "200", placeholder: n === 0 ? "例如：消化性溃疡穿孔" : `鉴别诊断 ${n + 1}`,
      "aria-label": `鉴别诊断 ${n + 1}`, dataset: { testid: `differential-${n}` },
    });
    this.diffBox.append(input);
    this.add.hidden = n + 1 >= MAX_DIFFERENTIALS;
    if (focus) input.focus();
  }

  _card(msg) {
    const card = msg.card;
    const verdict = VERDICTS[card.verdict] ?? { text: card.verdict, en: "" };
    const sections = (card.sections ?? []).map((s) => section(s));
    return h("article", {
      class: `score-card verdict-${card.verdict}`, dataset: { testid: "score-card" },
      "aria-label": "评分结果",
    },
    h("header", { class: "score-head" },
      h("div", { class: "score-total" },
        h("b", { dataset: { testid: "score-total" } }, num(card.total)),
        h("span", { class: "score-max" }, ` / ${num(card.max_total)}`)),
      h("div", { class: "score-side" },
        h("span", { class: "verdict", dataset: { testid: "verdict" } }, verdict.text,
          h("small", { lang: "en" }, verdict.en)),
        h("span", { class: "muted" }, `检查费用 ${yuan(card.cost_yuan)}`),
        msg.of > 1 ? h("span", { class: "muted" }, `本病例练习排名 ${msg.rank} / ${msg.of}`) : null)),
    sections,
    h("div", { class: "score-actions" },
      h("button", { type: "button", class: "btn btn-primary", dataset: { testid: "again-button" },
        onclick: () => this.onAgain() }, "再练一次"),
      h("button", { type: "button", class: "btn", dataset: { testid: "leave-button" },
        onclick: () => this.onLeave() }, "换一个病例")));
  }
}

function section(s) {
  const pct = s.max_points > 0 ? Math.max(0, Math.min(100, (100 * s.points) / s.max_points)) : 0;
  return h("section", { class: "score-section", dataset: { testid: "score-section", key: s.key } },
    h("h3", {}, h("span", {}, s.title, " ", h("small", { lang: "en" }, s.title_en)),
      h("span", { class: "pts" }, `${num(s.points)} / ${num(s.max_points)}`)),
    h("div", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${pct}%` })),
    h("ul", { class: "score-lines" }, (s.lines ?? []).map((line) => h("li", {
      class: line.met ? "met" : "unmet", dataset: { testid: "score-line" },
    },
    h("span", { class: "mark", "aria-label": line.met ? "达到" : "未达到" }, line.met ? "✓" : "✗"),
    h("span", { class: "line-label" }, line.label),
    h("span", { class: "pts" }, line.max_points ? `${num(line.points)} / ${num(line.max_points)}` : num(line.points)),
    line.note ? h("p", { class: "note" }, line.note) : null))));
}
