/** Renders the chat thread: user and assistant bubbles, attachments, timing and audio replay. */
import { h, fill, fmtMs, scrollToEnd } from "./dom.js";
import { t } from "./i18n.js";
import { concatFloat32, float32ToWav } from "./pcm.js";

export function userMessage(thread, text, shown) {
  const attach = shown.map((a) => a.kind === "image" ? h("img", { src: a.url, alt: a.name })
    : a.kind === "video" ? h("video", { src: a.url, controls: true, style: "max-width:220px;border-radius:10px" })
      : h("audio", { src: a.url, controls: true }));
  const el = h("div.msg.user", { dataset: { testid: "msg-user" } },
    attach.length ? h("div.attach", attach) : null,
    text ? h("div.bubble", text) : null);
  thread.append(el);
  scrollToEnd(thread);
  return el;
}

/** An assistant bubble that grows as deltas arrive. */
export class AssistantMessage {
  constructor(thread) {
    this.thread = thread;
    this.text = "";
    this.audio = [];
    this.bubble = h("div.bubble.typing", { dataset: { testid: "assistant-text" } });
    this.meta = h("div.meta", { dataset: { testid: "assistant-meta" } });
    this.extra = h("div.row");
    this.el = h("div.msg.assistant", { dataset: { testid: "msg-assistant" } }, this.bubble, this.extra, this.meta);
    thread.append(this.el);
    scrollToEnd(thread);
  }

  addText(delta) {
    this.text += delta;
    this.bubble.textContent = this.text;
    scrollToEnd(this.thread);
  }

  setText(text) { this.text = text; this.bubble.textContent = text; }

  addAudio(pcm) { this.audio.push(pcm); }

  /** Timing line: time to first text / audio, tokens, speed. */
  setTiming({ firstText, firstAudio, tokens, inputTokens, totalMs, stopped }) {
    const parts = [];
    if (firstText != null) parts.push(t("chat.first_text", { t: fmtMs(firstText) }));
    if (firstAudio != null) parts.push(t("chat.first_audio", { t: fmtMs(firstAudio) }));
    if (tokens != null) parts.push(t("chat.tokens", { n: tokens, inp: inputTokens ?? "?" }));
    const genMs = totalMs != null && firstText != null ? totalMs - firstText : null;   // decode time after the first token
    if (tokens > 1 && genMs > 0) parts.push(t("chat.speed", { v: ((tokens - 1) / (genMs / 1000)).toFixed(1) }));
    if (stopped) parts.push(t("chat.stopped"));
    fill(this.meta, parts.map((p) => h("span", p)));
  }

  finish({ sessionId } = {}) {
    this.bubble.classList.remove("typing");
    if (!this.text) this.bubble.textContent = this.audio.length ? "♪" : t("chat.no_text");
    const nodes = [];
    if (this.audio.length) {
      const pcm = concatFloat32(this.audio);
      const url = URL.createObjectURL(new Blob([float32ToWav(pcm, 24000)], { type: "audio/wav" }));
      nodes.push(h("audio", { src: url, controls: true, dataset: { testid: "assistant-audio", seconds: (pcm.length / 24000).toFixed(2) } }));
    }
    if (sessionId) nodes.push(h("a.badge.accent", { href: `/s/${encodeURIComponent(sessionId)}`, target: "_blank" }, t("chat.view_session")));
    fill(this.extra, nodes);
    scrollToEnd(this.thread);
  }

  fail(text) {
    this.bubble.classList.remove("typing");
    this.bubble.classList.add("error");
    this.bubble.textContent = text;
    this.bubble.style.color = "var(--danger)";
  }
}
