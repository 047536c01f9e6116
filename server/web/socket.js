// The WebSocket connection (docs/protocol.md, version 1): handshake, request ids,
// sequence numbers and the server-clock offset. UI code listens for "message" and
// "status" events and never touches the WebSocket itself.

export const PROTOCOL_VERSION = 1;
const PING_EVERY_MS = 25000;

let counter = 0;

/** A unique request id (1–64 chars). randomUUID needs a secure context, so fall back. */
export function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const rnd = new Uint32Array(2);
  crypto.getRandomValues(rnd);
  counter += 1;
  return `c${Date.now().toString(36)}-${counter}-${rnd[0].toString(36)}${rnd[1].toString(36)}`;
}

export function socketUrl(loc = location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/**
 * Events: "status" {status: idle|connecting|open|lost, code, reason},
 * "message" (detail: the decoded server message, after welcome).
 */
export class ArenaSocket extends EventTarget {
  constructor(url = socketUrl()) {
    super();
    this.url = url;
    this.ws = null;
    this.status = "idle";
    this.name = "";
    this.lastSeq = 0;
    this.seqGaps = 0;
    this.offsetMs = 0; // server time minus client time
    this.bestRtt = Infinity;
    this.engine = "";
    this.resyncReason = "";
    this._pingTimer = 0;
    this.token = "";
    // With a judge's or organizer's token: practise (any case) instead of watching.
    this.practice = false;
    // Last sequence number seen per channel ("round:…", "attempt:…"); survives reconnects
    // so the server can replay what this client missed (or send `reload`).
    this.cseq = {};
    // The epoch each of those numbers counts in: after Redis lost a channel its numbers
    // restart in a new epoch, and the server reloads instead of replaying the new stream.
    this.epochs = {};
    this.welcome = null;
  }

  /** Server time now, in ms since the epoch, corrected by the measured offset. */
  serverNow() {
    return Date.now() + this.offsetMs;
  }

  /**
   * Open (or reopen) the connection and say hello; resolves with `welcome`.
   * `token` (from /api/login, /api/join or a spectator link) sets the role; without one
   * the server treats the client as a student practising alone.
   */
  connect(name = "", token = this.token) {
    this.close();
    this.name = name;
    this.token = token || "";
    this.lastSeq = 0;
    this.resyncReason = "";
    this.bestRtt = Infinity;
    this._offsetKnown = false;
    this._setStatus("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      let helloId = "";
      let welcomed = false;
      ws.addEventListener("open", () => {
        const hello = { type: "hello", v: PROTOCOL_VERSION, name };
        if (this.token) hello.token = this.token;
        if (this.token && this.practice) hello.practice = true;
        if (Object.keys(this.cseq).length) {
          hello.since = { ...this.cseq };
          const epoch = {};
          for (const ch of Object.keys(this.cseq)) if (this.epochs[ch]) epoch[ch] = this.epochs[ch];
          if (Object.keys(epoch).length) hello.epoch = epoch;
        }
        helloId = this._raw(hello);
      });
      ws.addEventListener("message", (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          console.warn("non-JSON frame from server", ev.data);
          return;
        }
        this._track(msg);
        if (msg.type === "pong") return this._onPong(msg);
        if (msg.type === "resync") this.resyncReason = msg.reason || "";
        // The position is worthless now (trimmed, or another epoch); the state follows.
        if (msg.type === "reload") this.forgetChannel(msg.channel);
        if (!welcomed) {
          if (msg.type === "welcome" && msg.re === helloId) {
            welcomed = true;
            this.engine = msg.engine;
            this.welcome = msg;
            this._setStatus("open");
            this.ping();
            this._pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
            resolve(msg);
          } else if (msg.type === "error") {
            reject(Object.assign(new Error(msg.message), { code: msg.code, msg }));
            this.close();
          }
          return;
        }
        this.dispatchEvent(new CustomEvent("message", { detail: msg }));
      });
      ws.addEventListener("close", (ev) => {
        if (this.ws !== ws) return; // an old socket we already replaced
        clearInterval(this._pingTimer);
        this.ws = null;
        const reason = this.resyncReason || ev.reason || "";
        this._setStatus("lost", { code: ev.code, reason });
        if (!welcomed) {
          reject(Object.assign(new Error("连接失败，请检查网络后重试。"), { code: "connect_failed" }));
        }
      });
    });
  }

  /** Send a request; returns its id (replies echo it as `re`). */
  send(type, fields = {}) {
    if (this.status !== "open") {
      throw Object.assign(new Error("连接已断开，请先点击“重新连接”。"), { code: "not_connected" });
    }
    return this._raw({ type, ...fields });
  }

  ping() {
    if (this.ws?.readyState === WebSocket.OPEN) this._raw({ type: "ping", client_time: Date.now() });
  }

  /** Close on purpose: no "lost" status. */
  close() {
    clearInterval(this._pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "bye");
    if (this.status !== "idle") this._setStatus("idle");
  }

  _raw(msg) {
    const id = newId();
    this.ws.send(JSON.stringify({ ...msg, id }));
    return id;
  }

  /** Forget channel positions (after a `reload`, or when switching rounds). */
  forgetChannel(ch) {
    if (ch) {
      delete this.cseq[ch];
      delete this.epochs[ch];
    } else {
      this.cseq = {};
      this.epochs = {};
    }
  }

  _track(msg) {
    if (msg.ch && msg.cseq) {
      const last = this.cseq[msg.ch] || 0;
      const sameEpoch = !msg.epoch || msg.epoch === this.epochs[msg.ch];
      if (sameEpoch && last && msg.cseq > last + 1) {
        console.warn(`${msg.ch}: missed ${last + 1}…${msg.cseq - 1}`);
      }
      this.cseq[msg.ch] = msg.cseq;
      // A message without an epoch (a personal view of a channel message) keeps the one
      // held: the pair can then only be older than the stream, which reloads, never newer.
      if (msg.epoch) this.epochs[msg.ch] = msg.epoch;
    }
    if (typeof msg.seq === "number") {
      if (msg.seq !== this.lastSeq + 1) {
        this.seqGaps += 1;
        console.warn(`seq jumped from ${this.lastSeq} to ${msg.seq}`);
      }
      this.lastSeq = msg.seq;
    }
    // Until a ping round-trip is measured, a message's stamp bounds the offset from below.
    if (this.bestRtt === Infinity && typeof msg.t === "number") {
      const bound = msg.t - Date.now();
      this.offsetMs = this._offsetKnown ? Math.max(this.offsetMs, bound) : bound;
      this._offsetKnown = true;
    }
  }

  _onPong(msg) {
    const now = Date.now();
    const rtt = now - msg.client_time;
    if (rtt >= 0 && rtt <= this.bestRtt) {
      this.bestRtt = rtt;
      this.offsetMs = msg.t - (msg.client_time + now) / 2;
    }
  }

  _setStatus(status, extra = {}) {
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, ...extra } }));
  }
}

/**
 * Ask the server to refuse `token` from now on (POST /api/logout). Best effort: signing
 * out locally must not wait for, or fail with, the network; keepalive lets it finish
 * while the page unloads.
 */
export function revokeToken(token) {
  fetch("/api/logout", {
    method: "POST", keepalive: true,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  }).catch(() => {});
}
