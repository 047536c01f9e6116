// Who may practise each case, set by the organizer: draft, contest-only or open to
// practice (GET /api/cases gives staff every case with its access; POST
// /api/cases/{id}/visibility changes it). A case a round with unpublished results uses
// is marked as reserved: students cannot see it whatever its visibility.

import { h } from "./dom.js";
import { api, requestId, showText } from "./auth.js";

const VISIBILITY = [
  ["draft", "草稿"], ["contest", "仅比赛"], ["practice", "开放练习"],
];

export function renderCaseAccess(list, cases, error) {
  const again = () => renderCaseAccess(list, cases, error);
  list.replaceChildren(...cases.map((c) => {
    const select = h("select", {
      "aria-label": `${c.title} 的可见性`, dataset: { testid: `visibility-${c.id}` },
      onchange: () => setVisibility(c, select, error, again),
    }, ...VISIBILITY.map(([value, label]) => h("option", { value }, label)));
    select.value = c.visibility ?? "practice";
    const reserved = c.reserved_by?.length
      ? h("span", { class: "tag tag-reserved", dataset: { testid: `reserved-${c.id}` },
        title: `场次 ${c.reserved_by.join("、")}` }, "比赛占用中（成绩未公布）")
      : null;
    const open = h("span", { class: c.practice_open ? "tag tag-done" : "tag" },
      c.practice_open ? "学生可练习" : "学生不可见");
    return h("li", { class: "case-vis", dataset: { case: c.id } },
      h("div", { class: "case-vis-head" }, h("b", {}, c.title), h("small", { class: "muted mono" }, c.id)),
      h("div", { class: "case-vis-row" }, select, open, reserved,
        h("a", { class: "btn-link", href: `./#case=${encodeURIComponent(c.id)}`, target: "_blank",
          rel: "noopener", dataset: { testid: `try-${c.id}` } }, "试玩")));
  }));
}

async function setVisibility(c, select, error, again) {
  error.hidden = true;
  select.disabled = true;
  try {
    const access = await api(`/api/cases/${encodeURIComponent(c.id)}/visibility`, {
      method: "POST", body: { visibility: select.value, request_id: requestId() },
    });
    Object.assign(c, access);
  } catch (err) {
    showText(error, err.message);
  } finally {
    select.disabled = false;
    again();
  }
}
