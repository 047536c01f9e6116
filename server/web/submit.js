// Submitting a diagnosis (with a confirm step: it cannot be changed afterwards)
// and the score card that explains every point.
// Two modes: "practice" (the reply is `scored`: show the card at once) and "round"
// (the reply is `submit_ack`: show "已提交，等待公布成绩", allow a resubmission while
// submissions are left; the card comes later with `results`, see scoreCard()).

import { clear, h, num, toast, yuan } from "./dom.js";

const MAX_DIFFERENTIALS = 10;
const START_DIFFERENTIALS = 3;
const VERDICTS = {
  correct: { text: "正确", en: "Correct" },
  partial: { text: "部分正确", en: "Partly correct" },
  wrong: { text: "错误", en: "Incorrect" },
  needs_judge: { text: "待评委复核", en: "Awaiting a judge" },
};

export class Submission {
  constructor({ form, diagnosis, differentials, add, reasoning, submit, confirm, confirmBtn,
    cancelBtn, toastSlot, score = null, send, afterScored = () => {}, onAgain = () => {}, onLeave = () => {},
    mode = "practice", note = null, confirmText = null, onChange = () => {} }) {
    Object.assign(this, { form, diagnosis, diffBox: differentials, add, reasoning, submitBtn: submit,
      confirmBox: confirm, confirmBtn, cancelBtn, toastSlot, scoreEl: score, send, afterScored,
      onAgain, onLeave, mode, note, confirmText, onChange });
    this.pendingId = null;
    this.done = false;
    // Round mode only: whether a submission is on record, how many are left, and why the
    // form is locked (countdown, pause, time up), "" when it is not.
    this.submitted = false;
    this.left = 1;
    this.locked = "";
    this.ackMessage = "";
    this.published = false;
    form.addEventListener("input", () => this.onChange(this.values));
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
    this.scoreEl?.replaceChildren();
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

  /** Fill the form (a saved draft, or the submission on record after a rejoin). */
  fill({ diagnosis = "", differentials = [], reasoning = "" } = {}) {
    this.diagnosis.value = diagnosis;
    this.reasoning.value = reasoning;
    const wanted = Math.min(MAX_DIFFERENTIALS, differentials.length);
    while (this.diffBox.children.length < wanted) this._addDifferential(false);
    [...this.diffBox.querySelectorAll("input")].forEach((input, i) => {
      input.value = differentials[i] ?? "";
    });
  }

  /**
   * Round mode: the attempt as the server has it (`play_state`). `values` fills the
   * form; without them the text already typed stays (a reconnect must not lose it).
   */
  load({ submitted = false, submissions_left = 0 } = {}, values = null) {
    const keep = values ?? this.values;
    this.reset();
    this.fill(keep);
    this.submitted = Boolean(submitted);
    this.left = Math.max(0, Number(submissions_left) || 0);
    this.done = this.left <= 0;
    this.ackMessage = "";
    this._refreshRound();
  }

  /** Round mode: the submission is durable; the score comes with the results. */
  onAck(msg) {
    this.pendingId = null;
    this.submitted = true;
    this.left = Math.max(0, Number(msg.submissions_left) || 0);
    this.done = this.left <= 0;
    this.ackMessage = msg.message || "";
    this._confirming(false);
    this._refreshRound();
    this.note?.scrollIntoView?.({ block: "nearest" });
  }

  /** Round mode: the results are out, so the note stops saying they are awaited. */
  onPublished() {
    this.published = true;
    this._refreshRound();
  }

  /** Round mode: no submitting now (countdown, pause, time up, round over). */
  lock(reason) {
    this.locked = reason || "暂时不能提交";
    if (!this.confirmBox.hidden) this._confirming(false);
    this._refreshRound();
  }

  unlock() {
    this.locked = "";
    this._refreshRound();
  }

  /** Step one: check the form and ask for confirmation. */
  review() {
    if (this.done || this.pendingId || this.locked) return;
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
    if (this.done || this.pendingId || this.locked) return;
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
    if (this.mode === "round") {
      // The round's clock decides when the form opens again (see lock/unlock).
      if (msg.code === "already_submitted") {
        this.left = 0;
        this.done = true;
      } else if (msg.code === "round_not_running" || msg.code === "deadline_passed") {
        this.locked = msg.message;
      }
      this._refreshRound();
      return true;
    }
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
    if (on && this.mode === "round" && this.confirmText) {
      this.confirmText.replaceChildren(...(this.left > 1
        ? [h("strong", {}, `提交后还可修改 ${this.left - 1} 次。`), "以最后一次提交为准，确认提交吗？"]
        : [h("strong", {}, "提交后不能修改。"), "确认提交这个诊断吗？"]));
    }
    this.confirmBox.hidden = !on;
    this.submitBtn.hidden = on;
    this.confirmBtn.disabled = false;
    this.confirmBtn.textContent = "确认提交";
    if (on) this.confirmBtn.focus();
  }

  _refreshRound() {
    const can = !this.locked && this.left > 0 && !this.pendingId;
    this._setEnabled(can);
    this.submitBtn.textContent = this.pendingId ? "提交中…"
      : !this.submitted ? "提交"
        : this.left > 0 ? `修改后重新提交（还可提交 ${this.left} 次）` : "已提交";
    this.form.dataset.state = this.pendingId ? "pending" : this.submitted ? "submitted" : "open";
    if (!this.note) return;
    this.note.hidden = !this.submitted;
    const first = this.published ? "已提交"
      : (this.ackMessage || "已提交，等待公布成绩。").replace(/[。.]$/, "");
    this.note.replaceChildren(
      h("strong", {}, `✓ ${first}`),
      h("small", { class: "muted" }, this.published ? "成绩已公布，见上方的成绩单。"
        : this.left > 0 && !this.locked
          ? `还可修改后重新提交 ${this.left} 次，以最后一次提交为准。`
          : "成绩公布后在此页面查看。"),
    );
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
    return scoreCard(msg.card, {
      side: msg.of > 1 ? h("span", { class: "muted" }, `本病例练习排名 ${msg.rank} / ${msg.of}`) : null,
      // Practice: the answer key and teaching points, sent only after this submission.
      key: msg.key,
      actions: h("div", { class: "score-actions" },
        h("button", { type: "button", class: "btn btn-primary", dataset: { testid: "again-button" },
          onclick: () => this.onAgain() }, "再练一次"),
        h("button", { type: "button", class: "btn", dataset: { testid: "leave-button" },
          onclick: () => this.onLeave() }, "换一个病例")),
    });
  }
}

/** The score card (arena.scoring.ScoreCard) explained line by line; `side` and `actions`
 * are extra nodes for the header and the foot (practice: rank and "再练一次"); `key`, when
 * given, is the answer key (protocol.AnswerKeyView) shown under the sections. */
export function scoreCard(card, { side = null, actions = null, key = null } = {}) {
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
      side)),
  // The rules could not decide the diagnosis: say so, with their reason, above the lines.
  card.verdict === "needs_judge"
    ? h("p", { class: "score-review", role: "note", dataset: { testid: "score-review" } },
      card.sections?.[0]?.lines?.[0]?.note || "待评委复核")
    : null,
  sections,
  key ? answerKey(key) : null,
  actions);
}

/** The answer key with its teaching points (protocol.AnswerKeyView), for a student's or a
 * contestant's own card once they may see it. */
export function answerKey(key) {
  const list = (title, en, items, testid) => (items?.length
    ? [h("h4", {}, title, " ", h("small", { lang: "en" }, en)),
      h("ul", { dataset: { testid } }, items.map((x) => h("li", {}, x)))]
    : []);
  return h("section", { class: "answer-key", dataset: { testid: "answer-key" } },
    h("h3", {}, h("span", {}, "参考答案 ", h("small", { lang: "en" }, "Answer key"))),
    h("p", { class: "key-dx" }, "标准诊断：",
      h("b", { dataset: { testid: "key-diagnosis" } }, key.diagnosis),
      key.icd10 ? `（${key.icd10}）` : "",
      key.diagnosis_en ? h("small", { lang: "en", class: "muted" }, ` ${key.diagnosis_en}`) : null),
    ...list("鉴别诊断", "Differentials", key.differentials, "key-differentials"),
    ...list("必要检查", "Necessary tests", key.necessary_tests, "key-tests"),
    ...list("教学要点", "Teaching points", key.teaching_points, "key-teaching"));
}

function section(s) {
  const pct = s.max_points > 0 ? Math.max(0, Math.min(100, (100 * s.points) / s.max_points)) : 0;
  // Through the CSSOM: a style="" attribute is blocked by the pages' CSP (style-src 'self').
  const fill = h("span");
  fill.style.width = `${pct}%`;
  return h("section", { class: "score-section", dataset: { testid: "score-section", key: s.key } },
    h("h3", {}, h("span", {}, s.title, " ", h("small", { lang: "en" }, s.title_en)),
      h("span", { class: "pts" }, `${num(s.points)} / ${num(s.max_points)}`)),
    h("div", { class: "bar", "aria-hidden": "true" }, fill),
    h("ul", { class: "score-lines" }, (s.lines ?? []).map((line) => h("li", {
      class: line.met ? "met" : "unmet", dataset: { testid: "score-line" },
    },
    h("span", { class: "mark", "aria-label": line.met ? "达到" : "未达到" }, line.met ? "✓" : "✗"),
    h("span", { class: "line-label" }, line.label),
    h("span", { class: "pts" }, line.max_points ? `${num(line.points)} / ${num(line.max_points)}` : num(line.points)),
    line.note ? h("p", { class: "note" }, line.note) : null))));
}
