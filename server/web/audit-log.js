// The organizer's log of every organizer and judge action in a round (GET
// /api/rounds/{id}/audit), as people read it: who, what, why; newest first.

import { h } from "./dom.js";
import { roleName, toMs } from "./auth.js";
import { fmtClockTime } from "./board.js";

const AUDIT_KIND = {
  round_created: "创建场次", lobby_opened: "开放候场", round_started: "开始", round_paused: "暂停",
  round_resumed: "继续", round_extended: "延时", round_ended: "结束", results_published: "公布成绩",
  adjudicated: "裁定诊断", overridden: "调整分数", spectator_link: "生成大屏链接",
  spectator_created: "生成大屏链接", roster_imported: "导入名单", code_reissued: "重新发放参赛码",
  case_visibility: "病例可见性",
};
const VERDICT_ZH = { correct: "正确", partial: "部分正确", wrong: "错误", needs_judge: "待评委复核" };

export function renderAudit(body, events, roster) {
  if (!events.length) {
    body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: "4", class: "muted" }, "暂无操作记录。")));
    return;
  }
  // Newest first: during a round the latest action is what matters.
  const rows = [...events].reverse().map((e) => {
    const ms = toMs(e.at);
    return h("tr", { dataset: { testid: "audit-row", kind: e.kind ?? "" } },
      h("td", { class: "nowrap", title: ms ? new Date(ms).toLocaleString("zh-CN", { hour12: false }) : "" }, fmtClockTime(e.at)),
      h("td", {}, auditActor(e.actor)),
      h("td", {}, auditAction(e, roster)),
      h("td", { class: "reason-cell" }, auditReason(e) || "—"));
  });
  body.replaceChildren(...rows);
}

function auditAction(e, roster) {
  const p = e.payload ?? {};
  const label = AUDIT_KIND[e.kind] ?? e.kind ?? "";
  if (e.kind === "round_extended") {
    const who = p.contestant_id ? roster.find((c) => c.id === p.contestant_id)?.name ?? p.contestant_id : "全体选手";
    return `${label} ${Math.round((Number(p.seconds) || 0) / 60)} 分钟（${who}）`;
  }
  if (e.kind === "round_ended" && p.reason === "time") return "时间到，自动结束";
  if (e.kind === "adjudicated") {
    const v = VERDICT_ZH[p.verdict ?? p.new] ?? p.verdict ?? p.new ?? "";
    return `${label}：${[p.name, v].filter(Boolean).join(" → ")}`;
  }
  if (e.kind === "overridden") {
    // server/judging.py: {name, section, line, label, old_points, new_points, …}
    const item = p.label || (p.line !== undefined ? `${p.section ?? ""} 第 ${Number(p.line) + 1} 项` : p.section);
    const target = [p.name, item].filter(Boolean).join(" ");
    const before = p.old_points ?? p.old;
    const after = p.new_points ?? p.new ?? p.points;
    const change = before !== undefined || after !== undefined ? `${before ?? "?"} → ${after ?? "?"}` : "";
    return [label, target, change].filter(Boolean).join("：");
  }
  return label;
}

/** "judge:wang" → "评委 wang" (the log stores role:username). */
function auditActor(actor) {
  if (!actor) return "—";
  const [role, ...rest] = String(actor).split(":");
  const who = rest.join(":");
  return who && roleName(role) !== role ? `${roleName(role)} ${who}` : actor;
}

function auditReason(e) {
  const p = e.payload ?? {};
  // RoundEnded.reason is "organizer"/"time"; the organizer's words, if stored, are elsewhere.
  if (e.kind === "round_ended" && (p.reason === "organizer" || p.reason === "time")) {
    return p.note || p.text || p.comment || "";
  }
  return typeof p.reason === "string" ? p.reason : "";
}
