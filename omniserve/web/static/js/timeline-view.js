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

export function timelineRows(timeline, assetUrl) {
  const out = [];
  let listenRun = null;
  const closeRun = () => {
    if (listenRun) out.push(row(listenRun.from, h("span.badge.ok", t("duplex.listen")), t("sv.listen_units", { n: listenRun.n }), null));
    listenRun = null;
  };
  for (const e of timeline) {
    if (!e || typeof e !== "object") continue;
    if (typeof e.is_listen === "boolean") {            // duplex unit
      if (e.is_listen && !e.user_text) {
        if (!listenRun) listenRun = { from: when(e), n: 0 };
        listenRun.n += 1;
        continue;
      }
      closeRun();
      if (e.user_text) out.push(row(when(e), h("span.badge.accent", t("turn.user")), e.user_text, null));
      if (!e.is_listen) out.push(row(when(e), h("span.badge.danger", t("duplex.speak")), e.text || "", audio(assetUrl, e.ai_audio)));
      continue;
    }
    closeRun();
    if ("turn_index" in e || "user_text" in e || "ai_text" in e) {   // half-duplex turn
      out.push(row(when(e), h("span.badge.accent", t("turn.user")), e.user_text || t("hd.unheard"), audio(assetUrl, e.user_audio)));
      out.push(row(typeof e.t_first_chunk_s === "number" ? `${e.t_first_chunk_s.toFixed(1)} s` : "",
        h("span.badge.danger", t("turn.assistant")), e.ai_text || "", audio(assetUrl, e.ai_audio)));
      continue;
    }
    out.push(...chatRows(e, assetUrl));
  }
  closeRun();
  return out;
}
