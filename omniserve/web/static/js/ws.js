/**
 * WebSocket client for the three endpoints. Handles the gateway's queue messages (queued,
 * queue_update, queue_done), errors ("Queue full…", close 1013), a refused handshake (mode
 * disabled) and dropped connections, and hands every other message to the page. When the gateway
 * requires API keys, each connection first gets a fresh ephemeral token (access.js), sent as
 * ?token=….
 */
import { t } from "./i18n.js";
import { socketToken } from "./access.js";

export function wsUrl(path, token = null) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : "";
  return `${proto}//${location.host}${path}${query}`;
}

export class ServiceSocket {
  /**
   * @param {string} path e.g. "/ws/chat"
   * @param {object} h handlers
   * @param {(msg: object) => void} h.onMessage every non-queue message
   * @param {(q: {position:number, estimated_wait_s:number, queue_length:number}|null) => void} [h.onQueue] null = assigned
   * @param {(text: string, fatal: boolean) => void} [h.onError]
   * @param {(info: {code:number, reason:string, expected:boolean, opened:boolean}) => void} [h.onClose]
   */
  constructor(path, { onMessage, onQueue, onError, onClose, onOpen } = {}) {
    this.path = path;
    this.onMessage = onMessage || (() => {});
    this.onQueue = onQueue || (() => {});
    this.onError = onError || (() => {});
    this.onClose = onClose || (() => {});
    this.onOpen = onOpen || (() => {});
    this.ws = null;
    this.opened = false;
    this.closing = false;
    this.finished = false;     // the server said done/stopped/timeout: a close is expected
    this.lastError = "";
  }

  async connect() {
    let token;
    try {
      token = await socketToken();
      if (this.closing) throw new Error(t("err.connect"));   // closed while the token was on its way
    } catch (e) {
      // told to the page as a refused handshake is: an error, then a close it did not expect
      if (this.closing) this.onClose({ code: 1000, reason: "", expected: true, opened: false });
      else {
        this.onError(e.message, true);
        this.onClose({ code: 1006, reason: e.message, expected: false, opened: false });
      }
      throw e;
    }
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(this.path, token));
      this.ws = ws;
      ws.onopen = () => { this.opened = true; this.onOpen(); resolve(this); };
      ws.onmessage = (ev) => this.dispatch(ev.data);
      ws.onerror = () => { if (!this.opened) reject(new Error(t("err.connect"))); };
      ws.onclose = (ev) => this.closed(ev);
    });
  }

  dispatch(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    if (!msg || typeof msg.type !== "string") return;
    switch (msg.type) {
      case "queued":
      case "queue_update":
        this.onQueue(msg);
        return;
      case "queue_done":
        this.onQueue(null);
        return;
      case "error": {
        const text = String(msg.error || msg.message || "error");
        this.lastError = text;
        this.onError(/queue full/i.test(text) ? t("err.queue_full", { detail: text }) : text, false);
        break;
      }
      case "done": case "stopped": case "timeout":
        this.finished = true;
        break;
      default:
    }
    this.onMessage(msg);
  }

  closed(ev) {
    const expected = this.closing || this.finished;
    if (!expected) {
      if (ev.code === 1013) this.onError(t("err.queue_full", { detail: this.lastError || "" }), true);
      else if (!this.opened) this.onError(t("err.refused"), true);
      else if (!this.lastError) this.onError(t("err.dropped", { code: ev.code }), true);
    }
    this.onClose({ code: ev.code, reason: ev.reason, expected, opened: this.opened });
  }

  get isOpen() { return this.ws && this.ws.readyState === WebSocket.OPEN; }

  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Bytes waiting in the browser's send buffer (back-pressure signal). */
  get buffered() { return this.ws ? this.ws.bufferedAmount : 0; }

  close(code = 1000) {
    this.closing = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code);
  }
}
