// Exams and tests: the case's menu, grouped, searchable; results come from the
// case through the server at once and are shown under the item that was ordered.

import { clear, h, num, toast, yuan } from "./dom.js";

const GROUPS = [
  { kind: "exam", title: "体格检查", en: "Physical examination" },
  { kind: "test", title: "辅助检查", en: "Investigations" },
];

const fold = (s) => String(s).normalize("NFKC").toLowerCase().replace(/\s+/g, "");

export class Orders {
  constructor({ menu, filter, total, count, badge, send, onChange = () => {} }) {
    Object.assign(this, { menuEl: menu, filter, totalEl: total, countEl: count, badge, send, onChange });
    this.items = new Map(); // item_id -> {item, row, button, result, slot, state}
    this.pending = new Map(); // request id -> item_id
    this.results = new Map(); // item_id -> order_result
    this.locked = "";
    filter.addEventListener("input", () => this._applyFilter());
  }

  reset(menu, { typed = false } = {}) {
    this.items.clear();
    this.pending.clear();
    this.results.clear();
    this.locked = "";
    this.filter.value = "";
    this.typed = typed;
    if (typed) return this._resetTyped();
    this.filter.hidden = false;
    const groups = GROUPS.map((g) => {
      const rows = menu.filter((item) => item.kind === g.kind).map((item) => this._row(item));
      if (!rows.length) return null;
      return h("section", { class: "menu-group", dataset: { kind: g.kind } },
        h("h3", {}, g.title, " ", h("small", { lang: "en" }, g.en)),
        h("ul", { class: "menu-list" }, rows));
    });
    this.empty = h("p", { class: "muted menu-empty", hidden: true }, "没有匹配的检查项目。");
    this.menuEl.replaceChildren(...groups.filter(Boolean), this.empty);
    if (!menu.length) this.menuEl.append(h("p", { class: "muted" }, "本病例没有可申请的检查。"));
    this._totals();
  }

  /** The round hides the menu: the contestant types what to order, results list below. */
  _resetTyped() {
    this.filter.hidden = true;
    const input = h("input", {
      type: "text", class: "filter", maxlength: "60", autocomplete: "off", enterkeyhint: "send",
      placeholder: "输入要申请的检查，如：血常规、胸片、心电图",
      "aria-label": "输入要申请的检查", dataset: { testid: "order-text" },
    });
    const slot = h("div", { class: "toast-slot", dataset: { testid: "order-text-error" } });
    const submit = h("button", { type: "submit", class: "btn", dataset: { testid: "order-text-send" } }, "申请");
    const form = h("form", { class: "typed-order", novalidate: true }, input, submit);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text || this.locked) return;
      let id;
      try {
        id = this.send("order", { text });
      } catch (err) {
        toast(slot, err.message, { code: err.code });
        return;
      }
      clear(slot);
      submit.disabled = true;
      this.pending.set(id, "");
      this.typedForm = { input, submit, slot, id };
    });
    this.typedForm = { input, submit, slot, id: "" };
    this.list = h("ul", { class: "menu-list", dataset: { testid: "typed-results" } });
    this.empty = h("p", { class: "muted menu-empty" }, "本场不提供检查清单：请输入要申请的检查名称。");
    this.menuEl.replaceChildren(form, slot, this.empty, this.list);
    this._totals();
  }

  /** The menu plus what was already ordered (`play_state` on a (re)join). */
  load(menu, ordered = [], { typed = false } = {}) {
    const filter = this.filter.value;
    const locked = this.locked;
    this.reset(menu, { typed });
    for (const item of ordered) this.onResult(item);
    this.filter.value = filter;
    this._applyFilter();
    if (locked) this.lock(locked);
  }

  order(itemId) {
    const entry = this.items.get(itemId);
    if (!entry || entry.state !== "idle" || this.locked) return;
    let id;
    try {
      id = this.send("order", { item_id: itemId });
    } catch (err) {
      toast(entry.slot, err.message, { code: err.code });
      return;
    }
    clear(entry.slot);
    this.pending.set(id, itemId);
    this._setState(entry, "pending");
  }

  onResult(msg) {
    let itemId = this.pending.get(msg.re) ?? msg.item_id;
    this.pending.delete(msg.re);
    if (!itemId) itemId = msg.item_id; // a typed order: the server says what it was
    if (this.typed && this.typedForm) {
      if (msg.re && msg.re === this.typedForm.id) {
        this.typedForm.submit.disabled = false;
        this.typedForm.input.value = "";
      }
      if (!this.items.has(itemId)) {
        this.list.prepend(this._row({ id: itemId, name: msg.name, cost_yuan: msg.cost_yuan, minutes: 0 }));
      }
      this.empty.hidden = true;
    }
    const entry = this.items.get(itemId);
    this.results.set(msg.item_id, msg);
    if (entry) {
      entry.result.replaceChildren(
        h("div", { class: "result-head" },
          h("span", { class: `flag ${msg.abnormal ? "flag-abnormal" : "flag-normal"}` },
            msg.abnormal ? "异常" : "未见异常"),
          h("span", { class: "muted" }, yuan(msg.cost_yuan))),
        h("p", { class: "result-text" }, msg.result),
      );
      entry.result.hidden = false;
      entry.result.classList.toggle("abnormal", Boolean(msg.abnormal));
      entry.row.classList.toggle("abnormal", Boolean(msg.abnormal));
      this._setState(entry, "done");
    }
    this._totals();
  }

  onError(requestId, msg) {
    const itemId = this.pending.get(requestId);
    if (itemId === undefined) return false;
    this.pending.delete(requestId);
    if (itemId === "" && this.typedForm) { // a typed order the server could not read
      this.typedForm.submit.disabled = false;
      toast(this.typedForm.slot, msg.message, { code: msg.code });
      if (msg.code === "round_not_running" || msg.code === "deadline_passed") this.lock();
      return true;
    }
    const entry = this.items.get(itemId);
    if (entry) {
      this._setState(entry, "idle");
      toast(entry.slot, msg.message, { code: msg.code });
    }
    if (msg.code === "round_not_running" || msg.code === "deadline_passed") this.lock();
    return true;
  }

  /** The round is over: results stay readable, nothing more can be ordered. */
  lock(reason = "练习已结束") {
    this.locked = reason;
    if (this.typedForm && this.typed) this.typedForm.submit.disabled = true;
    for (const entry of this.items.values()) if (entry.state === "idle") this._setState(entry, "idle");
  }

  /** A timed round resumed: ordering is allowed again. */
  unlock() {
    if (!this.locked) return;
    this.locked = "";
    if (this.typedForm && this.typed) this.typedForm.submit.disabled = false;
    for (const entry of this.items.values()) if (entry.state === "idle") this._setState(entry, "idle");
  }

  get totalCost() {
    let sum = 0;
    for (const r of this.results.values()) sum += Number(r.cost_yuan) || 0;
    return sum;
  }

  _row(item) {
    const button = h("button", {
      type: "button", class: "order-btn", dataset: { testid: `order-${item.id}` },
      onclick: () => this.order(item.id),
    },
    h("span", { class: "order-name" }, item.name),
    h("span", { class: "order-meta" }, yuan(item.cost_yuan),
      item.minutes ? ` · ${num(item.minutes)} 分钟` : ""),
    h("span", { class: "order-action" }, "申请"));
    const result = h("div", {
      class: "result", hidden: true, role: "status", dataset: { testid: `result-${item.id}` },
    });
    const slot = h("div", { class: "toast-slot" });
    const row = h("li", { class: "menu-item", dataset: { item: item.id } }, button, slot, result);
    const entry = { item, row, button, result, slot, state: "idle", key: fold(item.name) };
    this.items.set(item.id, entry);
    return row;
  }

  _setState(entry, state) {
    entry.state = state;
    entry.row.dataset.state = state;
    entry.button.disabled = state !== "idle" || Boolean(this.locked);
    const label = { idle: this.locked ? "—" : "申请", pending: "申请中…", done: "已申请" }[state];
    entry.button.querySelector(".order-action").textContent = label;
  }

  _totals() {
    const n = this.results.size;
    this.countEl.textContent = String(n);
    this.totalEl.textContent = yuan(this.totalCost);
    this.badge.textContent = String(n);
    this.badge.hidden = n === 0;
    this.onChange({ count: n, cost: this.totalCost });
  }

  _applyFilter() {
    if (this.typed) return;
    const q = fold(this.filter.value);
    let shown = 0;
    for (const entry of this.items.values()) {
      const match = !q || entry.key.includes(q) || fold(entry.item.id).includes(q);
      entry.row.hidden = !match;
      if (match) shown += 1;
    }
    for (const group of this.menuEl.querySelectorAll(".menu-group")) {
      group.hidden = !group.querySelector(".menu-item:not([hidden])");
    }
    this.empty.hidden = shown > 0;
  }
}
