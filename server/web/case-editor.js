// The case editor (organizers): the library with search and filters, a form over the
// whole case document with live validation (the server's check_case and secrecy lint,
// each problem beside its field), "试问病人" against the draft with the scripted patient,
// version history with diffs, and publishing. HTTP API: /api/authoring/* (docs/cases.md,
// "The case editor"). The form edits the JSON document in place, path by path, so fields
// it has no input for are kept as they are.

import { $, h } from "./dom.js";
import { api, clearSession, getSession, requestId, roleName, setupLogin, showText } from "./auth.js";

const DIFFICULTY = { easy: "简单", medium: "中等", hard: "困难" };
const VISIBILITY = { draft: "草稿（未发布）", contest: "仅比赛", practice: "开放练习" };
const LEVEL = [["low", "低"], ["medium", "中"], ["high", "高"]];
const CATEGORY = [
  ["hpi", "现病史"], ["past", "既往史"], ["medications", "用药史"], ["allergies", "过敏史"],
  ["family", "家族史"], ["social", "个人史"], ["menstrual_obstetric", "月经婚育史"], ["ros", "系统回顾"],
];
const KIND_ZH = { facts: "病例中的回答", unknown: "病例未写：默认回答", refusal: "拒答", persona: "人物设定" };
// JSON path segment -> the form's Chinese label (problem list, diffs).
const LABEL = {
  title: "标题", title_en: "英文标题", specialty: "专科", difficulty: "难度", minutes: "建议时长（分钟）",
  demographics: "患者", persona: "人物设定", opening: "开场", facts: "病史条目", exams: "体格检查",
  tests: "辅助检查", answer_key: "答案", narrator: "代述人", defaults: "默认回答", id: "编号",
  schema_version: "格式版本", name: "名称", sex: "性别", age: "年龄", age_unit: "年龄单位",
  occupation: "职业", personality: "性格", speech_style: "说话风格", health_literacy: "健康素养",
  recall: "记忆清晰度", ideas: "患者认为的原因", concerns: "担心什么", expectations: "希望医生做什么",
  chief_complaint: "主诉", statement: "开场白", appearance: "外观", vitals: "生命体征",
  temperature_c: "体温", heart_rate: "心率", respiratory_rate: "呼吸", systolic_bp: "收缩压",
  diastolic_bp: "舒张压", spo2: "血氧饱和度", weight_kg: "体重", category: "类别", topic: "主题",
  intent: "问诊意图", intents: "其他意图", subject: "症状/部位", questions: "示例问题", answer: "回答",
  negative: "阴性", aliases: "别名", result: "结果", abnormal: "异常", cost_yuan: "费用",
  diagnosis: "主要诊断", name_en: "英文名", synonyms: "同义词", icd10: "ICD-10", partial: "部分得分诊断",
  differentials: "鉴别诊断", checklist: "评分要点", red_flags: "危险信号", necessary_tests: "必要检查",
  unnecessary_tests: "不必要检查", teaching_points: "教学要点", text: "内容", weight: "权重",
  orders: "关联检查", relation: "与患者关系",
};

const state = { cases: [], meta: { intents: {}, specialties: [] }, id: null, doc: null, version: null,
  history: [], problems: [], dirty: false, checkSeq: 0, checkTimer: 0, turns: [], rawOpen: false };

// ---- paths -------------------------------------------------------------------------------

const pathOf = (parts) => "$" + parts.map((x) => (typeof x === "number" ? `[${x}]` : `.${x}`)).join("");
const getAt = (parts) => parts.reduce((v, k) => (v == null ? undefined : v[k]), state.doc);
function setAt(parts, value) {
  let obj = state.doc;
  for (const [i, k] of parts.slice(0, -1).entries()) {
    if (obj[k] == null || typeof obj[k] !== "object") obj[k] = typeof parts[i + 1] === "number" ? [] : {};
    obj = obj[k];
  }
  const last = parts[parts.length - 1];
  if (value === undefined) delete obj[last];
  else obj[last] = value;
  changed();
}

/** "$.facts[2].answer" -> "病史条目 3 › 回答": no internal ids on screen. */
export function pathLabel(path) {
  const out = [];
  let parent = "";
  for (const m of path.matchAll(/\.([A-Za-z_0-9]+)|\[(\d+)\]/g)) {
    if (m[2] !== undefined) {
      if (out.length) out[out.length - 1] += ` ${Number(m[2]) + 1}`;
      continue;
    }
    const key = m[1];
    let label = LABEL[key] ?? key;
    if (key === "name" && parent === "demographics") label = "姓名";
    if (key === "minutes" && (parent === "exams" || parent === "tests")) label = "耗时（分钟）";
    if (key === "facts" && (parent === "checklist" || parent === "red_flags")) label = "关联病史";
    out.push(label);
    parent = key;
  }
  return out.join(" › ") || "整个病例";
}

// ---- form fields -------------------------------------------------------------------------

function field(parts, label, control, { hint = "", wide = false } = {}) {
  return h("label", { class: `field${wide ? " wide" : ""}`, dataset: { path: pathOf(parts) } },
    h("span", { class: "field-label" }, label, hint ? h("small", {}, ` ${hint}`) : null), control);
}

function text(parts, label, { area = false, rows = 2, placeholder = "", hint = "", wide = false, testid } = {}) {
  const input = h(area ? "textarea" : "input", {
    ...(area ? { rows } : { type: "text" }), placeholder,
    dataset: { testid: testid ?? `f-${pathOf(parts).slice(2)}` },
    oninput: () => setAt(parts, input.value),
  });
  input.value = getAt(parts) ?? "";
  return field(parts, label, input, { hint, wide: wide || area });
}

function number(parts, label, { int = true, optional = false, hint = "" } = {}) {
  const input = h("input", {
    type: "text", inputmode: int ? "numeric" : "decimal", dataset: { testid: `f-${pathOf(parts).slice(2)}` },
    oninput: () => {
      const raw = input.value.trim();
      if (!raw && optional) return setAt(parts, undefined);
      const n = Number(raw);
      // Sent as typed when it is no number: the server names the field and the problem.
      setAt(parts, raw && Number.isFinite(n) && (!int || Number.isInteger(n)) ? n : raw);
    },
  });
  input.value = getAt(parts) ?? "";
  return field(parts, label, input, { hint });
}

function choice(parts, label, options, { testid } = {}) {
  const select = h("select", { dataset: { testid: testid ?? `f-${pathOf(parts).slice(2)}` },
    onchange: () => setAt(parts, select.value) },
  ...options.map(([value, name]) => h("option", { value }, name)));
  select.value = getAt(parts) ?? options[0][0];
  return field(parts, label, select);
}

function tick(parts, label) {
  const box = h("input", { type: "checkbox", dataset: { testid: `f-${pathOf(parts).slice(2)}` },
    onchange: () => setAt(parts, box.checked) });
  box.checked = Boolean(getAt(parts));
  return h("label", { class: "check", dataset: { path: pathOf(parts) } }, box, label);
}

/** A list of words ("同义词") edited as one line, split on 、 , ; or newlines. */
function words(parts, label, { hint = "用顿号或逗号分隔" } = {}) {
  const input = h("input", { type: "text", dataset: { testid: `f-${pathOf(parts).slice(2)}` },
    oninput: () => setAt(parts, input.value.split(/[、,，;；\n]/).map((x) => x.trim()).filter(Boolean)) });
  input.value = list(parts).join("、");
  return field(parts, label, input, { hint });
}

function lines(parts, label) {
  const area = h("textarea", { rows: 3, dataset: { testid: `f-${pathOf(parts).slice(2)}` },
    oninput: () => setAt(parts, area.value.split("\n").map((x) => x.trim()).filter(Boolean)) });
  area.value = list(parts).join("\n");
  return field(parts, label, area, { hint: "每行一条", wide: true });
}

function section(title, en, parts, ...children) {
  return h("fieldset", { class: "card form-section", dataset: { path: parts ? pathOf(parts) : "" } },
    h("legend", { class: "section-title" }, title, h("small", { lang: "en" }, ` ${en}`)), ...children);
}

function freshId(prefix) {
  const taken = new Set(["facts", "exams", "tests"].flatMap((k) => list([k]).map((x) => x?.id)));
  for (;;) {
    const id = `${prefix}_${Math.random().toString(36).slice(2, 8)}`;
    if (!taken.has(id) && /^[a-z][a-z0-9_]{1,47}$/.test(id)) return id;
  }
}

/** Repeated rows of an array: each with a remove button, and an add button under them. */
function rows(parts, render, make, addLabel, testid) {
  const items = list(parts);
  const box = h("div", { class: "rows" }, ...items.map((_, i) => h("div", {
    class: "row-item", dataset: { path: pathOf([...parts, i]), testid: `${testid}-row` } },
  h("div", { class: "row-fields" }, render([...parts, i], i)),
  h("button", { type: "button", class: "btn-link row-remove", "aria-label": `删除第 ${i + 1} 项`,
    onclick: () => { items.splice(i, 1); setAt(parts, items); renderForm(); } }, "删除"))));
  const add = h("button", { type: "button", class: "btn btn-small", dataset: { testid: `add-${testid}` },
    onclick: () => { items.push(make()); setAt(parts, items); renderForm(); focusLast(testid); } }, `＋ ${addLabel}`);
  return [box, add];
}

function focusLast(testid) {
  const all = document.querySelectorAll(`[data-testid="${testid}-row"]`);
  all[all.length - 1]?.querySelector("input, textarea, select")?.focus();
}

// An array at `parts`, or a new empty one: a hand-edited document may hold anything there.
const list = (parts) => (Array.isArray(getAt(parts)) ? getAt(parts) : []);
const orders = () => [...list(["exams"]), ...list(["tests"])].filter((o) => o && typeof o === "object");
const factName = (f) => f.topic || (f.answer ?? "").slice(0, 16) || "（未填写）";

/** Which facts and orders meet a checklist item or red flag: ticks, labelled by topic or name. */
function links(parts) {
  const item = getAt(parts);
  const group = (key, options) => h("div", { class: "link-group", dataset: { path: pathOf([...parts, key]) } },
    h("b", {}, key === "facts" ? "问到：" : "做了："),
    options.length ? options.map(([id, name]) => {
      const box = h("input", { type: "checkbox", onchange: () => {
        const now = new Set(item[key] ?? []);
        if (box.checked) now.add(id); else now.delete(id);
        setAt([...parts, key], [...now]);
        summary.textContent = linkSummary(item);
      } });
      box.checked = (item[key] ?? []).includes(id);
      return h("label", { class: "check chip" }, box, name);
    }) : h("span", { class: "muted" }, key === "facts" ? "（先添加病史条目）" : "（先添加检查）"));
  const summary = h("summary", {}, linkSummary(item));
  return h("details", { class: "links" }, summary,
    group("facts", list(["facts"]).filter((f) => f && typeof f === "object").map((f) => [f.id, factName(f)])),
    group("orders", orders().map((o) => [o.id, o.name || "（未命名检查）"])));
}

const linkSummary = (item) => `满足条件：${(item.facts ?? []).length} 条病史、${(item.orders ?? []).length} 项检查`;

function keyItems(parts, label, testid, prefix) {
  return rows(parts, (p) => [
    h("div", { class: "grid key-grid" }, text([...p, "text"], label, { testid: `${testid}-text` }),
      number([...p, "weight"], "权重", { hint: "1–10" })), links(p),
  ], () => ({ id: freshId(prefix), text: "", weight: 5, facts: [], orders: [] }), `添加${label}`, testid);
}

/** Each order marked 必要 / 不必要 / neither, kept in necessary_tests and unnecessary_tests. */
function necessity() {
  const [NEC, UNN] = [["answer_key", "necessary_tests"], ["answer_key", "unnecessary_tests"]];
  const rowsOut = orders().map((o) => {
    const select = h("select", { "aria-label": `${o.name} 是否必要`, onchange: () => {
      const nec = list(NEC).filter((x) => x !== o.id);
      const unn = list(UNN).filter((x) => x !== o.id);
      if (select.value === "yes") nec.push(o.id);
      if (select.value === "no") unn.push(o.id);
      setAt(UNN, unn);
      setAt(NEC, nec);
    } }, h("option", { value: "" }, "—"), h("option", { value: "yes" }, "必要"), h("option", { value: "no" }, "不必要"));
    select.value = list(NEC).includes(o.id) ? "yes" : list(UNN).includes(o.id) ? "no" : "";
    return h("label", { class: "necessity" }, h("span", {}, o.name || "（未命名检查）"), select);
  });
  return h("div", { class: "field wide", dataset: { path: "$.answer_key.necessary_tests" } },
    h("span", { class: "field-label" }, "检查是否必要", h("small", {}, " 评分用：必要的没做扣分，不必要的做了扣分")),
    rowsOut.length ? h("div", { class: "necessity-grid" }, rowsOut) : h("p", { class: "muted" }, "（先添加检查）"));
}

function diagnosisFields(p) {
  return [text([...p, "name"], "诊断名称"), text([...p, "icd10"], "ICD-10"),
    text([...p, "name_en"], "英文名"), words([...p, "synonyms"], "同义词")];
}

function orderFields(p, kind) {
  return [h("div", { class: "grid" }, text([...p, "name"], "名称", { testid: `${kind}-name` }), words([...p, "aliases"], "别名")),
    text([...p, "result"], "结果", { area: true, testid: `${kind}-result`, hint: "点了这项检查才看得到" }),
    h("div", { class: "grid" }, number([...p, "cost_yuan"], "费用（元）", { int: false }), number([...p, "minutes"], "耗时（分钟）"),
      tick([...p, "abnormal"], "结果异常"))];
}

/** The whole document as JSON, for what the form has no input for (example questions,
 * per-intent default answers, fields added to the schema later). */
function rawJson() {
  const area = h("textarea", { rows: 16, class: "raw-json", spellcheck: "false", dataset: { testid: "raw-json" } });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  // Stays open across the form's re-renders (an apply re-renders it).
  const details = h("details", { class: "card raw", open: state.rawOpen, ontoggle: () => {
    state.rawOpen = details.open;
    if (details.open) area.value = JSON.stringify(state.doc, null, 2);
  } }, h("summary", { class: "section-title" }, "高级：直接编辑 JSON", h("small", { lang: "en" }, " Raw JSON")),
  h("p", { class: "muted" }, "表单没有的内容（示例问题、各意图的默认回答等）可以在这里改。编号（id）不能改。"),
  area, error,
  h("button", { type: "button", class: "btn", dataset: { testid: "raw-apply" }, onclick: () => {
    let doc;
    try {
      doc = JSON.parse(area.value);
    } catch (err) {
      showText(error, `不是合法的 JSON：${err.message}`);
      return;
    }
    if (!doc || typeof doc !== "object" || Array.isArray(doc)) {
      showText(error, "病例必须是一个 JSON 对象。");
      return;
    }
    showText(error, "");
    state.doc = { ...doc, id: state.id };
    renderForm();
    changed();
  } }, "应用到表单"));
  return details;
}

function renderForm() {
  const d = state.doc;
  const intents = [["", "（按主题自动推断）"], ...Object.entries(state.meta.intents)];
  const narrated = Boolean(d.narrator);
  const form = $("#case-form");
  const y = window.scrollY;
  form.replaceChildren(
    section("基本信息", "Basics", null,
      h("div", { class: "grid" }, text(["title"], "标题", { hint: "不能透露诊断" }), text(["title_en"], "英文标题"),
        field(["specialty"], "专科", (() => {
          const input = h("input", { type: "text", list: "specialties", dataset: { testid: "f-specialty" },
            oninput: () => setAt(["specialty"], input.value) });
          input.value = d.specialty ?? "";
          return input;
        })()),
        choice(["difficulty"], "难度", Object.entries(DIFFICULTY)), number(["minutes"], "建议时长（分钟）")),
      h("datalist", { id: "specialties" }, state.meta.specialties.map((s) => h("option", { value: s })))),
    section("患者", "Patient", ["demographics"],
      h("div", { class: "grid" }, text(["demographics", "name"], "姓名", { hint: "虚构" }),
        choice(["demographics", "sex"], "性别", [["female", "女"], ["male", "男"]]), number(["demographics", "age"], "年龄"),
        choice(["demographics", "age_unit"], "年龄单位", [["years", "岁"], ["months", "月"], ["days", "天"]]),
        text(["demographics", "occupation"], "职业")),
      h("label", { class: "check" }, h("input", { type: "checkbox", checked: narrated, dataset: { testid: "f-narrated" },
        onchange: (ev) => { setAt(["narrator"], ev.target.checked ? { relation: "" } : undefined); renderForm(); } }),
      "由家属代述病史（婴幼儿、意识不清者）"),
      narrated ? text(["narrator", "relation"], "代述人与患者的关系", { placeholder: "母亲、女儿……" }) : null),
    section("人物设定", "Persona", ["persona"],
      h("div", { class: "grid" }, text(["persona", "personality"], "性格"), text(["persona", "speech_style"], "说话风格"),
        choice(["persona", "health_literacy"], "健康素养", LEVEL), choice(["persona", "recall"], "记忆清晰度", LEVEL)),
      text(["persona", "ideas"], "患者认为的原因", { area: true }), text(["persona", "concerns"], "担心什么", { area: true }),
      text(["persona", "expectations"], "希望医生做什么", { area: true })),
    section("开场与生命体征", "Opening & vitals", ["opening"],
      text(["opening", "chief_complaint"], "主诉", { hint: "病例卡上可见" }),
      text(["opening", "statement"], "开场白", { area: true, hint: "患者进门第一句话" }),
      text(["opening", "appearance"], "外观", { area: true }),
      h("div", { class: "grid vitals-grid", dataset: { path: "$.opening.vitals" } },
        number(["opening", "vitals", "temperature_c"], "体温 ℃", { int: false }), number(["opening", "vitals", "heart_rate"], "心率 次/分"),
        number(["opening", "vitals", "respiratory_rate"], "呼吸 次/分"), number(["opening", "vitals", "systolic_bp"], "收缩压 mmHg"),
        number(["opening", "vitals", "diastolic_bp"], "舒张压 mmHg"), number(["opening", "vitals", "spo2"], "血氧 %"),
        number(["opening", "vitals", "weight_kg"], "体重 kg", { int: false, optional: true }))),
    section("病史条目", "Facts", ["facts"],
      h("p", { class: "muted" }, "患者被问到才说的内容。选好问诊意图和症状/部位，脚本病人就能回答各种问法；勾选“阴性”表示有意义的否定回答。"),
      ...rows(["facts"], (p) => [
        h("div", { class: "grid" }, choice([...p, "category"], "类别", CATEGORY), text([...p, "topic"], "主题", { testid: "fact-topic" }),
          choice([...p, "intent"], "问诊意图", intents, { testid: "fact-intent" }), text([...p, "subject"], "症状/部位", { placeholder: "如：胸痛" })),
        text([...p, "answer"], "患者的回答", { area: true, testid: "fact-answer", hint: "第一人称，患者自己的话" }),
        tick([...p, "negative"], "阴性（否认）"),
      ], () => ({ id: freshId("f"), category: "hpi", topic: "", intent: "", subject: "", answer: "" }), "添加病史条目", "fact")),
    section("体格检查", "Exams", ["exams"],
      ...rows(["exams"], (p) => orderFields(p, "exam"), () => ({ id: freshId("ex"), name: "", result: "" }), "添加体格检查", "exam")),
    section("辅助检查", "Tests", ["tests"],
      ...rows(["tests"], (p) => orderFields(p, "test"), () => ({ id: freshId("t"), name: "", result: "" }), "添加辅助检查", "test")),
    section("答案", "Answer key", ["answer_key"],
      h("h3", {}, "主要诊断"), h("div", { class: "grid", dataset: { path: "$.answer_key.diagnosis" } }, diagnosisFields(["answer_key", "diagnosis"])),
      h("h3", { dataset: { path: "$.answer_key.differentials" } }, "鉴别诊断"),
      ...rows(["answer_key", "differentials"], (p) => h("div", { class: "grid" }, diagnosisFields(p)), () => ({ name: "" }), "添加鉴别诊断", "differential"),
      h("h3", {}, "部分得分诊断 ", h("small", {}, "评委会给部分分的答案（可选）")),
      ...rows(["answer_key", "partial"], (p) => h("div", { class: "grid" }, diagnosisFields(p)), () => ({ name: "" }), "添加部分得分诊断", "partial"),
      necessity(), lines(["answer_key", "teaching_points"], "教学要点")),
    section("评分要点", "Checklist", ["answer_key", "checklist"],
      h("p", { class: "muted" }, "至少 10 条；每条写明问到哪些病史或做了哪些检查就算满足。"),
      ...keyItems(["answer_key", "checklist"], "评分要点", "check", "c")),
    section("危险信号", "Red flags", ["answer_key", "red_flags"],
      ...keyItems(["answer_key", "red_flags"], "危险信号", "flag", "rf")),
    rawJson(),
  );
  window.scrollTo(0, y);
  showProblems();
}

// ---- validation --------------------------------------------------------------------------

function changed() {
  state.dirty = true;
  clearTimeout(state.checkTimer);
  state.checkTimer = setTimeout(validate, 400);
  $("#ed-title").textContent = state.doc.title || "（未命名病例）";
}

async function validate() {
  const seq = ++state.checkSeq;
  try {
    const res = await api("/api/authoring/check", { method: "POST", body: { content: state.doc } });
    if (seq !== state.checkSeq) return; // a newer edit is being checked
    state.problems = res.problems;
    showProblems();
  } catch (err) {
    showText($("#editor-error"), err.message);
  }
}

/** Each problem beside its field (the nearest element whose data-path is a prefix of its
 * path), and in the list at the side, where a click scrolls to the field. */
function showProblems() {
  const form = $("#case-form");
  form.querySelectorAll(".field-problem").forEach((el) => el.remove());
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  const items = state.problems.map((p) => {
    const at = placeOf(form, p.path);
    const line = h("p", { class: "field-problem", role: "alert", dataset: { testid: "field-problem", path: p.path } }, p.message);
    if (at) {
      at.append(line);
      at.querySelector(":scope > input, :scope > textarea, :scope > select")?.setAttribute("aria-invalid", "true");
    }
    return h("li", {}, h("button", { type: "button", class: "btn-link problem-link", title: p.message_en,
      onclick: () => { at?.scrollIntoView({ block: "center", behavior: "smooth" }); at?.querySelector("input, textarea, select")?.focus({ preventScroll: true }); },
    }, h("b", {}, pathLabel(p.path)), "：", p.message));
  });
  $("#problem-list").replaceChildren(...(items.length ? items : [h("li", { class: "ok", dataset: { testid: "no-problems" } }, "没有问题，可以发布。")]));
  const count = $("#problem-count");
  count.textContent = items.length ? `${items.length} 处问题` : "校验通过";
  count.dataset.state = items.length ? "bad" : "ok";
}

function placeOf(form, path) {
  for (let p = path; p; p = p.replace(/(\.[^.[]+|\[\d+\])$/, "")) {
    const el = form.querySelector(`[data-path="${CSS.escape(p)}"]`);
    if (el) return el;
    if (p === "$") break;
  }
  return form.firstElementChild;
}

// ---- the library -------------------------------------------------------------------------

async function loadLibrary() {
  const listEl = $("#library-list");
  listEl.setAttribute("aria-busy", "true");
  try {
    state.cases = await api("/api/authoring/cases");
    const specialties = [...new Set(state.cases.map((c) => c.specialty).filter(Boolean))].sort();
    const pick = $("#f-specialty");
    const keep = pick.value;
    pick.replaceChildren(h("option", { value: "" }, "全部专科"), ...specialties.map((s) => h("option", { value: s }, s)));
    pick.value = specialties.includes(keep) ? keep : "";
    renderLibrary();
  } catch (err) {
    showText($("#library-error"), err.message);
  } finally {
    listEl.setAttribute("aria-busy", "false");
  }
}

function renderLibrary() {
  const q = $("#search").value.trim().toLowerCase();
  const [sp, df, vis, rev] = ["#f-specialty", "#f-difficulty", "#f-visibility", "#f-reviewed"].map((s) => $(s).value);
  const shown = state.cases.filter((c) => (!q || `${c.search} ${c.id}`.toLowerCase().includes(q))
    && (!sp || c.specialty === sp) && (!df || c.difficulty === df) && (!vis || c.visibility === vis)
    && (!rev || c.reviewed === (rev === "yes")));
  $("#library-count").textContent = `共 ${state.cases.length} 个病例，显示 ${shown.length} 个`;
  $("#library-list").replaceChildren(...(shown.length ? shown.map((c) => h("li", {},
    h("a", { class: "library-item", href: `#case=${encodeURIComponent(c.id)}`, dataset: { testid: `lib-${c.id}` } },
      h("span", { class: "lib-title" }, c.title || "（未命名病例）"), h("span", { class: "mono muted lib-id" }, c.id),
      h("span", { class: "lib-cc muted" }, c.chief_complaint || ""),
      h("span", { class: "lib-tags" },
        c.specialty ? h("span", { class: "tag tag-plain" }, c.specialty) : null,
        DIFFICULTY[c.difficulty] ? h("span", { class: `tag tag-${c.difficulty}` }, DIFFICULTY[c.difficulty]) : null,
        h("span", { class: `tag vis-${c.visibility}` }, VISIBILITY[c.visibility] ?? c.visibility),
        h("span", { class: c.reviewed ? "tag tag-done" : "tag tag-plain" }, c.reviewed ? "已审核" : "未审核"),
        c.version ? h("span", { class: "tag tag-plain" }, `第 ${c.version} 版`) : null,
        c.problems ? h("span", { class: "tag tag-hard" }, `${c.problems} 处问题`) : null)))) :
    [h("li", { class: "muted empty" }, state.cases.length ? "没有符合条件的病例。" : "病例库是空的。")]));
}

for (const sel of ["#search", "#f-specialty", "#f-difficulty", "#f-visibility", "#f-reviewed"]) {
  $(sel).addEventListener("input", renderLibrary);
}

// ---- opening, saving and history ---------------------------------------------------------

async function openCase(id) {
  showText($("#editor-error"), "");
  showText($("#editor-note"), "");
  try {
    const res = await api(`/api/authoring/cases/${encodeURIComponent(id)}`);
    Object.assign(state, { id, doc: res.content, version: res.version, history: res.history,
      problems: res.problems, dirty: false, turns: [], rawOpen: false });
  } catch (err) {
    location.hash = "";
    showText($("#library-error"), err.message);
    return;
  }
  $("#library").hidden = true;
  $("#editor").hidden = false;
  $("#ed-id").textContent = id;
  $("#ed-title").textContent = state.doc.title || "（未命名病例）";
  const listed = state.cases.find((c) => c.id === id);
  showVisibility(listed?.visibility ?? "draft");
  renderForm();
  renderHistory();
  renderTurns();
  $("#diff-list").replaceChildren();
}

function showVisibility(vis) {
  const tag = $("#ed-visibility");
  tag.textContent = VISIBILITY[vis] ?? vis;
  tag.className = `tag vis-${vis}`;
}

const short = (hash) => (hash ?? "").slice(0, 8);
const when = (t) => new Date(t * 1000).toLocaleString("zh-CN", { hour12: false });

function renderHistory() {
  const vs = state.history;
  $("#ed-version").textContent = vs.length ? `第 ${vs[vs.length - 1].version} 版` : "未保存过";
  $("#version-list").replaceChildren(...[...vs].reverse().map((v) => h("li", { dataset: { testid: "version" } },
    h("b", {}, `第 ${v.version} 版`), " ", h("span", { class: "mono hash", title: v.content_hash }, short(v.content_hash)),
    v.problems ? h("span", { class: "tag tag-hard" }, `${v.problems} 处问题`) : h("span", { class: "tag tag-done" }, "无问题"),
    h("div", { class: "muted small" }, `${when(v.at)} · ${v.author.replace(/^organizer:/, "")}${v.note ? ` · ${v.note}` : ""}`))));
  for (const [sel, pickIndex] of [["#diff-a", Math.max(0, vs.length - 2)], ["#diff-b", vs.length - 1]]) {
    $(sel).replaceChildren(...vs.map((v) => h("option", { value: v.version }, `第 ${v.version} 版 ${short(v.content_hash)}`)));
    if (vs.length) $(sel).value = vs[pickIndex].version;
  }
  $("#diff-run").disabled = vs.length < 2;
  $(".diff-pick").hidden = vs.length < 2;
  if (!vs.length) $("#version-list").replaceChildren(h("li", { class: "muted" }, "还没有保存过版本：保存后才能比较和发布。"));
}

$("#save").addEventListener("click", async () => {
  const button = $("#save");
  button.disabled = true;
  showText($("#editor-error"), "");
  try {
    const res = await api(`/api/authoring/cases/${encodeURIComponent(state.id)}/versions`, {
      method: "POST", body: { content: state.doc, note: $("#save-note").value.trim() } });
    state.dirty = false;
    state.problems = res.problems;
    $("#save-note").value = "";
    state.history = await api(`/api/authoring/cases/${encodeURIComponent(state.id)}/versions`);
    renderHistory();
    showProblems();
    const n = res.version.version;
    showText($("#editor-note"), res.problems.length
      ? `已保存第 ${n} 版（还有 ${res.problems.length} 处问题，修正后才能发布）。` : `已保存第 ${n} 版。`);
  } catch (err) {
    showText($("#editor-error"), err.message);
  } finally {
    button.disabled = false;
  }
});

$("#problem-count").addEventListener("click", () => $("#problem-list").scrollIntoView({ block: "center", behavior: "smooth" }));

$("#diff-run").addEventListener("click", async () => {
  const [a, b] = [$("#diff-a").value, $("#diff-b").value];
  try {
    const res = await api(`/api/authoring/cases/${encodeURIComponent(state.id)}/diff?a=${a}&b=${b}`);
    $("#diff-list").replaceChildren(...(res.changes.length ? res.changes.map((c) => h("li", { class: `diff diff-${c.kind}`, dataset: { testid: "diff-item" } },
      h("b", {}, pathLabel(c.path)),
      c.kind !== "added" ? h("del", {}, show(c.old)) : null, c.kind !== "removed" ? h("ins", {}, show(c.new)) : null))
      : [h("li", { class: "muted" }, "两个版本内容相同。")]));
  } catch (err) {
    showText($("#editor-error"), err.message);
  }
});

/** A value of a diff as text: a fact as its topic and answer, ids left out. */
function show(v) {
  if (v === null || v === undefined) return "（空）";
  if (typeof v === "boolean") return v ? "是" : "否";
  if (Array.isArray(v)) return v.map(show).join("、") || "（空列表）";
  if (typeof v === "object") {
    if (v.answer !== undefined) return `${v.topic ?? ""}：${v.answer}`;
    if (v.name !== undefined) return v.result ? `${v.name}：${v.result}` : v.name;
    if (v.text !== undefined) return v.text;
    const { id: _id, ...rest } = v;
    return JSON.stringify(rest).slice(0, 300);
  }
  return String(v) || "（空）";
}

// ---- trying the patient ------------------------------------------------------------------

function renderTurns() {
  $("#preview-log").replaceChildren(...state.turns.flatMap((t) => [
    h("p", { class: "bubble bubble-q" }, t.question),
    h("div", { class: "bubble bubble-a", dataset: { testid: "preview-answer", kind: t.kind } }, t.answer,
      h("small", { class: "muted" }, KIND_ZH[t.kind] ?? t.kind, t.facts.length ? `：${t.facts.join("、")}` : "")),
  ]));
  $("#preview-log").scrollTop = 1e9;
}

$("#preview-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#preview-q");
  const question = input.value.trim();
  if (!question) return;
  input.disabled = true;
  try {
    const history = state.turns.slice(-40).map(({ question: q, answer }) => ({ question: q, answer }));
    const res = await api("/api/authoring/preview", { method: "POST", body: { content: state.doc, question, history } });
    state.turns.push({ question, answer: res.text, kind: res.kind, facts: res.facts });
    input.value = "";
    renderTurns();
  } catch (err) {
    showText($("#editor-error"), err.message);
  } finally {
    input.disabled = false;
    input.focus();
  }
});
$("#preview-clear").addEventListener("click", () => { state.turns = []; renderTurns(); });

// ---- publishing --------------------------------------------------------------------------

$("#publish").addEventListener("click", () => {
  showText($("#editor-error"), "");
  const last = state.history[state.history.length - 1];
  if (state.dirty || !last) {
    showText($("#editor-error"), "请先保存修改，再发布已保存的版本。");
    return;
  }
  $("#publish-what").textContent = `发布第 ${last.version} 版（内容哈希 ${short(last.content_hash)}）`
    + (last.problems ? `：这一版还有 ${last.problems} 处问题，不能发布。` : "。");
  $("#publish-confirm").disabled = last.problems > 0;
  showText($("#publish-error"), "");
  $("#publish-dialog").showModal();
});
$("#publish-cancel").addEventListener("click", () => $("#publish-dialog").close());
$("#publish-confirm").addEventListener("click", async () => {
  const last = state.history[state.history.length - 1];
  const visibility = document.querySelector('input[name="publish-vis"]:checked').value;
  const button = $("#publish-confirm");
  button.disabled = true;
  try {
    const res = await api(`/api/authoring/cases/${encodeURIComponent(state.id)}/publish`, {
      method: "POST", body: { version: last.version, visibility, request_id: requestId() } });
    $("#publish-dialog").close();
    showVisibility(res.visibility);
    showText($("#editor-note"), `已发布第 ${res.version} 版为“${VISIBILITY[res.visibility]}”。`
      + "本服务器（含评分）已可使用；如有多个服务器进程，其他进程要重启后才读到。");
    const listed = state.cases.find((c) => c.id === state.id);
    if (listed) listed.visibility = res.visibility;
  } catch (err) {
    if (err.data?.problems) { state.problems = err.data.problems; showProblems(); }
    showText($("#publish-error"), err.message);
  } finally {
    button.disabled = false;
  }
});

// ---- new cases ---------------------------------------------------------------------------

$("#new-case").addEventListener("click", () => { showText($("#new-error"), ""); $("#new-dialog").showModal(); });
$("#new-cancel").addEventListener("click", () => $("#new-dialog").close());
for (const [sel, fromRecord] of [["#new-blank", false], ["#new-import", true]]) {
  $(sel).addEventListener("click", async () => {
    const record = fromRecord ? $("#new-record").value : "";
    if (fromRecord && !record.trim()) {
      showText($("#new-error"), "请先粘贴病历内容，或选择“空白病例”。");
      return;
    }
    try {
      await openCreated(await api("/api/authoring/cases", { method: "POST", body: { record } }));
    } catch (err) {
      showText($("#new-error"), err.message);
    }
  });
}

/** A case just made (blank, imported or drafted): close the dialog and open it. */
async function openCreated(res) {
  $("#new-dialog").close();
  $("#new-record").value = "";
  await loadLibrary();
  location.hash = `case=${encodeURIComponent(res.id)}`;
}

$("#new-llm").addEventListener("click", async () => {
  const source = $("#new-record").value.trim();
  if (!source) {
    showText($("#new-error"), "请先写一句病例简介或粘贴病历，模型据此起草。");
    return;
  }
  const buttons = ["#new-llm", "#new-import", "#new-blank"].map((sel) => $(sel));
  for (const b of buttons) b.disabled = true;
  showText($("#new-error"), "");
  const progress = $("#new-progress");
  const started = Date.now();
  const tick = () => {
    progress.textContent = `模型正在起草病例并自查，已用 ${Math.round((Date.now() - started) / 1000)} 秒（通常需要一到几分钟）…`;
  };
  tick();
  progress.hidden = false;
  const timer = setInterval(tick, 1000);
  try {
    await openCreated(await api("/api/authoring/draft", { method: "POST", body: { source } }));
  } catch (err) {
    showText($("#new-error"), err.message);
  } finally {
    clearInterval(timer);
    progress.hidden = true;
    for (const b of buttons) b.disabled = false;
  }
});

// ---- where we are ------------------------------------------------------------------------

function route() {
  const id = new URLSearchParams(location.hash.slice(1)).get("case");
  if (id) {
    openCase(id);
    return;
  }
  $("#editor").hidden = true;
  $("#library").hidden = false;
  loadLibrary();
}

$("#back").addEventListener("click", (ev) => {
  ev.preventDefault();
  if (state.dirty && !window.confirm("有未保存的修改，确定返回病例库吗？")) return;
  state.dirty = false;
  location.hash = "";
});
window.addEventListener("hashchange", route);
window.addEventListener("beforeunload", (ev) => { if (state.dirty) ev.preventDefault(); });

async function enter(session) {
  $("#login").hidden = true;
  $("#user").hidden = false;
  $("#user-name").textContent = `${session.name}（${roleName(session.role)}）`;
  try {
    state.meta = await api("/api/authoring/meta");
    $("#new-llm").hidden = !state.meta.drafting;
  } catch (err) {
    showText($("#library-error"), err.message);
  }
  route();
}

function showLogin(message = "") {
  $("#library").hidden = true;
  $("#editor").hidden = true;
  $("#user").hidden = true;
  $("#login").hidden = false;
  showText($("#login-error"), message);
}

setupLogin({
  form: $("#login-form"), username: $("#login-username"), password: $("#login-password"),
  button: $("#login-button"), error: $("#login-error"), roles: ["organizer"],
  roleMessage: "病例编辑器需要组织者账号", onLogin: enter,
});
$("#logout").addEventListener("click", () => { clearSession(); showLogin(""); });
window.addEventListener("staff:unauthorized", (ev) => showLogin(ev.detail?.message || "登录已失效，请重新登录。"));

const saved = getSession();
if (saved?.role === "organizer") enter(saved);
else showLogin(saved ? `当前登录的是${roleName(saved.role)}账号，病例编辑器需要组织者账号。` : "");
