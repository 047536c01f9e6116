// Staff and big-screen sessions: the login form, the bearer token kept in
// localStorage, the JSON HTTP API (docs/protocol.md, "HTTP API") and a WebSocket
// that reconnects by itself with backoff. Errors come back as Error objects whose
// message is the server's Chinese text, ready to show as text.

import { newId, revokeToken } from "./socket.js";

export const STAFF_KEY = "clinic-arena.staff";

// Private browsing can refuse localStorage; the session then lives as long as the page.
let memorySession = null;

const ROLE_ZH = { organizer: "组织者", judge: "评委", contestant: "选手", spectator: "观众" };
export const roleName = (role) => ROLE_ZH[role] ?? role ?? "";

/** A request id for organizer actions, so a retried request is applied once. */
export const requestId = () => newId();

/** Seconds or milliseconds since the epoch → milliseconds (the API uses both). */
export function toMs(t) {
  if (t === null || t === undefined || t === "" || !Number.isFinite(Number(t))) return null;
  const n = Number(t);
  return n < 1e11 ? n * 1000 : n;
}

// ---- session -------------------------------------------------------------------------------

/** The stored staff session {token, role, name, exp}, or null when absent or expired. */
export function getSession() {
  let session = null;
  try {
    session = JSON.parse(localStorage.getItem(STAFF_KEY) || "null");
  } catch {
    session = memorySession;
  }
  if (!session && memorySession) session = memorySession;
  if (!session || typeof session.token !== "string" || !session.token) return null;
  const exp = toMs(session.exp);
  if (exp !== null && exp <= Date.now()) {
    clearSession({ revoke: false });
    return null;
  }
  return session;
}

export function setSession(session) {
  try {
    localStorage.setItem(STAFF_KEY, JSON.stringify({
      token: session.token, role: session.role, name: session.name ?? "", exp: session.exp ?? null,
    }));
  } catch { /* private mode: the session lasts as long as the page */ }
  memorySession = session;
}

/**
 * Forget the staff session. With `revoke` (the 退出 button), the token is also signed out
 * on the server, so a copy of it (another tab, a shared computer's history) stops working.
 */
export function clearSession({ revoke = true } = {}) {
  const token = revoke ? (memorySession?.token || readStoredToken()) : "";
  memorySession = null;
  try { localStorage.removeItem(STAFF_KEY); } catch { /* private mode */ }
  if (token) {
    revokeToken(token);
  }
}

function readStoredToken() {
  try {
    return JSON.parse(localStorage.getItem(STAFF_KEY) || "null")?.token || "";
  } catch {
    return "";
  }
}

const currentToken = () => getSession()?.token ?? "";

// ---- HTTP ----------------------------------------------------------------------------------

/**
 * Call the API. `body`: an object is sent as JSON, a string or Blob as is (with `type`,
 * e.g. "text/csv; charset=utf-8"). `as`: "json" (default), "text" or "blob".
 * Throws an Error with the server's Chinese message and `code`, `status`, `data`
 * (the error JSON, e.g. {problems: [...]}) set; a 401 on a request that carried a
 * token also clears the session and fires "staff:unauthorized" on window.
 */
export async function api(path, { method, body, type, as = "json", token } = {}) {
  const headers = { accept: as === "json" ? "application/json" : "*/*" };
  const auth = token ?? currentToken();
  if (auth) headers.authorization = `Bearer ${auth}`;
  let payload;
  if (body !== undefined && body !== null) {
    if (typeof body === "string" || body instanceof Blob) {
      payload = body;
      headers["content-type"] = type || "text/plain; charset=utf-8";
    } else {
      payload = JSON.stringify(body);
      headers["content-type"] = "application/json";
    }
  }
  let res;
  try {
    res = await fetch(path, { method: method || (payload === undefined ? "GET" : "POST"), headers, body: payload });
  } catch (err) {
    throw Object.assign(new Error("网络连接失败，请检查网络后重试。"), { code: "network", status: 0, cause: err });
  }
  if (!res.ok) {
    let data = null;
    try {
      data = await res.json();
    } catch { /* not JSON: a proxy's error page */ }
    const problems = Array.isArray(data?.problems) ? data.problems.map(String) : null;
    const message = data?.message || (problems?.length ? problems[0] : "") || httpMessage(res.status);
    if (res.status === 401 && auth) {
      clearSession({ revoke: false });
      window.dispatchEvent(new CustomEvent("staff:unauthorized", { detail: { message, code: data?.code } }));
    }
    throw Object.assign(new Error(message), {
      code: data?.code || `http_${res.status}`, status: res.status, data, problems,
    });
  }
  if (as === "blob") return res.blob();
  if (as === "text") return res.text();
  if (res.status === 204) return null;
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function httpMessage(status) {
  if (status === 401) return "登录已失效，请重新登录。";
  if (status === 403) return "当前账号没有权限执行此操作。";
  if (status === 404) return "请求的内容不存在。";
  if (status === 409) return "当前状态下不能执行此操作。";
  if (status >= 500) return `服务器出错（HTTP ${status}），请稍后重试。`;
  return `请求失败（HTTP ${status}）。`;
}

/** A server-relative link ("/screen.html?k=…") as a full URL on this origin. */
export function absoluteUrl(link) {
  if (!link) return "";
  try {
    return new URL(link, location.origin).href;
  } catch {
    return String(link);
  }
}

/** Copy text to the clipboard; falls back to a hidden textarea outside secure contexts. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    return ok;
  }
}

/** Put an error (or nothing) in a text slot; hidden when empty. */
export function showText(el, message = "") {
  if (!el) return;
  el.textContent = message || "";
  el.hidden = !message;
}

// ---- login form ----------------------------------------------------------------------------

/**
 * Wire a login form: POST /api/login, check the role is one of `roles` (else show
 * `roleMessage` and keep nothing), store the session and call onLogin(session).
 */
export function setupLogin({ form, username, password, button, error, roles, roleMessage, onLogin }) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showText(error, "");
    const user = username.value.trim();
    if (!user || !password.value) {
      showText(error, "请输入用户名和密码。");
      (user ? password : username).focus();
      return;
    }
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "登录中…";
    try {
      const res = await api("/api/login", {
        method: "POST", body: { username: user, password: password.value }, token: "",
      });
      if (!roles.includes(res.role)) {
        showText(error, roleMessage);
        return;
      }
      const session = { token: res.token, role: res.role, name: res.name || user, exp: res.exp ?? null };
      setSession(session);
      password.value = "";
      onLogin(session);
    } catch (err) {
      showText(error, err.status === 401 ? err.message || "用户名或密码错误。" : err.message);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
}

// ---- a WebSocket that stays connected ------------------------------------------------------

const MAX_SINCE = 8; // server/protocol.py: Hello.since max_length

function pruneChannels(socket, keep) {
  const names = Object.keys(socket.cseq);
  for (const ch of names) {
    if (keep && !keep.includes(ch)) delete socket.cseq[ch];
  }
  const left = Object.keys(socket.cseq);
  for (const ch of left.slice(0, Math.max(0, left.length - MAX_SINCE))) delete socket.cseq[ch];
}

const FATAL = new Set(["unauthorized", "token_expired", "forbidden", "bad_version"]);
const CONN_TEXT = { idle: "未连接", connecting: "连接中…", open: "已连接", lost: "连接已断开，正在重连…" };

/**
 * Keep `socket` (an ArenaSocket) connected with `token`: reconnect after a loss with
 * exponential backoff (0.5 s … 30 s, with jitter); the socket keeps its channel
 * positions, so `hello.since` asks the server for what was missed. Calls
 * onWelcome(welcome, reconnected) after every handshake, onFatal(err) when the token
 * is refused (then stops). Mirrors the state into `pill` (a .conn element) if given.
 * `channels()` names the channels still of interest: positions of others are dropped
 * before each hello, since `hello.since` holds at most 8 channels.
 */
export function keepConnected(socket, {
  token, name = "", onWelcome = () => {}, onFatal = () => {}, pill = null, channels = null,
}) {
  let stopped = false;
  let timer = 0;
  let attempt = 0;
  let connected = false;
  let everConnected = false;

  const setPill = (status) => {
    if (!pill) return;
    pill.dataset.state = status;
    const text = pill.querySelector(".conn-text");
    if (text) text.textContent = CONN_TEXT[status] ?? status;
  };

  const schedule = (fast = false) => {
    if (stopped || timer) return;
    const base = fast ? 500 : Math.min(30000, 1000 * 2 ** Math.min(attempt, 5));
    const delay = base * (0.75 + Math.random() * 0.5);
    attempt += 1;
    timer = setTimeout(() => {
      timer = 0;
      open();
    }, delay);
  };

  const open = async () => {
    if (stopped) return;
    clearTimeout(timer);
    timer = 0;
    pruneChannels(socket, channels ? channels() : null);
    try {
      const welcome = await socket.connect(name, token);
      if (stopped) return socket.close();
      attempt = 0;
      connected = true;
      onWelcome(welcome, everConnected);
      everConnected = true;
    } catch (err) {
      if (FATAL.has(err.code)) {
        stopped = true;
        setPill("idle");
        onFatal(err);
        return;
      }
      schedule();
    }
  };

  const onStatus = (ev) => {
    const { status } = ev.detail;
    setPill(status);
    if (status === "lost") {
      // A resync (4008) is the server asking us to come straight back.
      const fast = connected && (ev.detail.code === 4008 || attempt === 0);
      connected = false;
      schedule(fast);
    }
  };
  socket.addEventListener("status", onStatus);
  const retryNow = () => {
    if (!stopped && socket.status !== "open" && socket.status !== "connecting") {
      clearTimeout(timer);
      timer = 0;
      open();
    }
  };
  window.addEventListener("online", retryNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") retryNow();
  });
  open();

  return {
    retryNow,
    stop() {
      stopped = true;
      clearTimeout(timer);
      socket.removeEventListener("status", onStatus);
      window.removeEventListener("online", retryNow);
      socket.close();
      setPill("idle");
    },
  };
}
