// Small DOM helpers shared by the page's modules. Everything that comes from the
// server or the user is inserted as text (textContent / text nodes), never as HTML.

/**
 * Build an element: h("button", {class: "x", dataset: {testid: "y"}, onclick}, "text", child).
 * Attribute values are set with setAttribute; string children become text nodes.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** "12.5", "40", "-1": points and money without float noise. */
export function num(value) {
  const n = Math.round(Number(value) * 10) / 10;
  return Number.isFinite(n) ? String(n) : "–";
}

export const yuan = (value) => `¥${num(value)}`;

const toastTimers = new WeakMap();

/**
 * Show a dismissable message in a slot near where the user acted. One toast per
 * slot: a newer message replaces the older. Errors stay until dismissed or 12 s.
 */
export function toast(slot, message, { code = "", kind = "error" } = {}) {
  if (!slot) return null;
  clearTimeout(toastTimers.get(slot));
  const close = h("button", {
    type: "button", class: "toast-close", "aria-label": "关闭", dataset: { testid: "toast-close" },
    onclick: () => clear(slot),
  }, "×");
  const el = h("div", {
    class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status",
    dataset: { testid: "toast", code },
  }, h("span", { class: "toast-text" }, message), code ? h("small", { class: "toast-code" }, code) : null,
  close);
  slot.replaceChildren(el);
  toastTimers.set(slot, setTimeout(() => clear(slot), 12000));
  return el;
}

export function clear(slot) {
  if (!slot) return;
  clearTimeout(toastTimers.get(slot));
  slot.replaceChildren();
}
