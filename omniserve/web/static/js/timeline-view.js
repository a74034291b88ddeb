/**
 * Renders a recording's timeline (recording.json) whatever the mode: chat requests and replies,
 * half-duplex turns (user_text/user_audio, ai_text/ai_audio) and duplex units (is_listen, text;
 * runs of listening units are folded into one row). Media files play from /assets/{path}.
 */
import { h } from "./dom.js";
import { t } from "./i18n.js";

const TIME_KEYS = ["t_s", "t_received_s", "t_speech_end_s", "t_speech_start_s", "t_sent_s", "t_done_s", "t_prefill_done_s"];

function when(e) {
  for (const k of TIME_KEYS) if (typeof e[k] === "number") return `${e[k].toFixed(1)} s`;
  if (typeof e.current_time === "number") return `#${e.current_time}`;
  return "";
}

function audio(assetUrl, file, testid) {
  return file ? h("audio", { controls: true, preload: "none", src: assetUrl(file), dataset: { testid: testid || "tl-audio" } }) : null;
}

function row(time, badge, text, media) {
  return h("div.tl-item", { dataset: { testid: "tl-item" } }, h("span.t", time), badge, h("div.text", text || ""), media || h("span"));
}

function chatRows(e, assetUrl) {
  if (Array.isArray(e.messages)) {
    const last = e.messages[e.messages.length - 1];
    if (!last) return [];
    const items = Array.isArray(last.items) ? last.items : [];
    const text = items.filter((i) => i.type === "text").map((i) => i.text).join(" ");
    const media = items.filter((i) => i.type !== "text" && i.file);
    return [row("", h("span.badge.accent", t("turn.user")), text || media.map((m) => m.type).join(", "),
      media.length ? h("div.stack", media.map((m) => (m.type === "audio" ? audio(assetUrl, m.file)
        : m.type === "image" ? h("img", { src: assetUrl(m.file), alt: "", style: "max-height:80px;border-radius:8px" })
          : h("a", { href: assetUrl(m.file), target: "_blank" }, m.type)))) : null)];
  }
  return [row(when(e), h("span.badge.danger", t("turn.assistant")), e.text || e.ai_text || "", audio(assetUrl, e.ai_audio))];
}

/** An <audio> for a slice of a long WAV (media fragment #t=start,end). */
function slice(assetUrl, file, offset, samples, rate) {
  if (!samples) return null;
  const a = (offset / rate).toFixed(3);
  const b = ((offset + samples) / rate).toFixed(3);
  return audio(assetUrl, `${file}#t=${a},${b}`, "tl-audio");
}

/**
 * Duplex units, folded for reading: a run of listening units is one row; the user's growing
 * partial transcript is one row (its latest text); the units of one spoken reply (until
 * end_of_turn) are one row with their text and their slice of ai.wav.
 */
function duplexRows(units, assetUrl, rate) {
  const out = [];
  let listen = null;
  let user = null;
  let reply = null;
  const flushListen = () => {
    if (listen) out.push(row(listen.from, h("span.badge.ok", t("duplex.listen")), t("sv.listen_units", { n: listen.n }), null));
    listen = null;
  };
  const flushUser = () => {
    if (user) out.push(row(user.from, h("span.badge.accent", t("turn.user")), user.text, slice(assetUrl, "user.wav", user.offset, user.samples, 16000)));
    user = null;
  };
  const flushReply = () => {
    if (reply) out.push(row(reply.from, h("span.badge.danger", t("duplex.speak")), reply.text.trim(), slice(assetUrl, "ai.wav", reply.offset, reply.samples, rate)));
    reply = null;
  };
  for (const e of units) {
    if (e.user_text) {
      flushListen();
      if (!user) user = { from: when(e), text: "", offset: e.user_offset ?? 0, samples: 0 };
      user.text = e.user_text;
      user.samples = (e.user_offset ?? 0) + (e.user_samples ?? 0) - user.offset;
    }
    if (!e.is_listen) {
      flushListen();
      flushUser();
      if (!reply) reply = { from: when(e), text: "", offset: null, samples: 0 };
      reply.text += e.text || "";
      if (e.ai_samples) {
        if (reply.offset === null) reply.offset = e.ai_offset ?? 0;
        reply.samples += e.ai_samples;
      }
      if (e.end_of_turn) flushReply();
    } else {
      flushReply();
      if (!e.user_text) {
        flushUser();
        if (!listen) listen = { from: when(e), n: 0 };
        listen.n += 1;
      }
    }
  }
  flushListen();
  flushUser();
  flushReply();
  return out;
}

export function timelineRows(timeline, assetUrl, { aiRate = 24000 } = {}) {
  const entries = timeline.filter((e) => e && typeof e === "object");
  if (entries.some((e) => typeof e.is_listen === "boolean")) {
    return duplexRows(entries.filter((e) => typeof e.is_listen === "boolean"), assetUrl, aiRate);
  }
  const out = [];
  for (const e of entries) {
    if ("turn_index" in e || "user_text" in e || "ai_text" in e) {   // half-duplex turn
      out.push(row(when(e), h("span.badge.accent", t("turn.user")), e.user_text || t("hd.unheard"), audio(assetUrl, e.user_audio)));
      out.push(row(typeof e.t_first_chunk_s === "number" ? `${e.t_first_chunk_s.toFixed(1)} s` : "",
        h("span.badge.danger", t("turn.assistant")), e.ai_text || "", audio(assetUrl, e.ai_audio)));
      continue;
    }
    out.push(...chatRows(e, assetUrl));
  }
  return out;
}
