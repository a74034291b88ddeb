/**
 * Half-duplex voice: the microphone streams 0.5 s chunks; the server's VAD decides when the user
 * finished, then the reply streams back. No echo feedback: no audio_chunk is sent from the start
 * of a reply until its audio has finished playing.
 */
import { initPage, notify, clearNotice, markReady } from "../layout.js";
import { keyReady, mountKeyField } from "../access.js";
import { $ } from "../dom.js";
import { speechLanguage, t } from "../i18n.js";
import { Settings } from "../settings.js";
import { ServiceSocket } from "../ws.js";
import { QueueView } from "../queue-view.js";
import { base64ToFloat32, float32ToBase64 } from "../pcm.js";
import { newSessionId } from "../ids.js";
import { rememberSession } from "../recent.js";
import { TranscriptView, userTextOf } from "../transcript-view.js";
import { SessionClock } from "../session-clock.js";
import { setupVoicePage, openMic, showState } from "../voice-page.js";

const CHUNK = 8000;  // 0.5 s at 16 kHz (PROTOCOL.md)
const settings = new Settings("half_duplex", {
  system_prompt: "", tts: true, vad_threshold: 0.8, min_speech_duration_ms: 128, min_silence_duration_ms: 800,
  speech_pad_ms: 30, max_new_tokens: 256, temperature: 0.7, length_penalty: 1.1, language: "", timeout_s: 180,
  start_delay_ms: 120,
});

const s = {
  sock: null, mic: null, prepared: false, muted: false, replyDone: true, user: null, reply: null,
  sentChunks: 0, audioChunks: 0, recordingId: null,
};
let page;
const transcript = new TranscriptView($("#transcript"), $("#transcript-empty"));
const clock = new SessionClock($("#timer"));

function unmuteIfDone() {
  if (s.replyDone && !page.player.playing && s.muted) {
    s.muted = false;
    if (s.prepared) showState("listening");
  }
}

/**
 * The protocol's turn messages need not carry what the user said; the session recording does
 * (recording.json, written by the worker after each turn). Fetch it a few times until it shows.
 */
async function fillTranscriptLater(turn, turnIndex) {
  const id = s.recordingId;
  for (const wait of [300, 700, 1500, 3000]) {
    await new Promise((r) => setTimeout(r, wait));
    if (turn.text !== "…") return;
    if (!id) break;
    try {
      const res = await fetch(`/api/sessions/${encodeURIComponent(id)}/recording`);
      if (!res.ok) continue;
      const doc = await res.json();
      const entry = (doc.timeline || []).find((e) => e && e.turn_index === turnIndex);
      if (entry && typeof entry.user_text === "string") {
        turn.set(entry.user_text.trim() || t("hd.unheard"));
        return;
      }
    } catch { /* try again */ }
  }
  if (turn.text === "…") turn.set(t("hd.unheard"));
}

function prepareMessage(ref) {
  const prompt = $("#system").value.trim();
  const msg = {
    type: "prepare",
    system_content: prompt ? [{ type: "text", text: prompt }] : [],
    config: {
      vad: {
        threshold: settings.get("vad_threshold"), min_speech_duration_ms: settings.get("min_speech_duration_ms"),
        min_silence_duration_ms: settings.get("min_silence_duration_ms"), speech_pad_ms: settings.get("speech_pad_ms"),
      },
      generation: { max_new_tokens: settings.get("max_new_tokens"), length_penalty: settings.get("length_penalty"),
        temperature: settings.get("temperature"), language: speechLanguage(settings.get("language")) },
      tts: { enabled: settings.get("tts") },
      session: { timeout_s: settings.get("timeout_s") },
    },
  };
  if (prompt) msg.system_prompt = prompt;
  if (ref) msg.ref_audio_base64 = ref;
  return msg;
}

function onMessage(m) {
  switch (m.type) {
    case "prepared":
      s.prepared = true;
      clock.start();
      showState("listening");
      s.recordingId = m.recording_session_id || null;
      if (m.recording_session_id) {
        rememberSession(m.recording_session_id, "half_duplex");
        const a = $("#session-link");
        a.href = `/s/${encodeURIComponent(m.recording_session_id)}`;
        a.hidden = false;
      }
      break;
    case "vad_state":
      $("#vad-lamp").classList.toggle("on", !!m.speaking);
      if (!s.muted) showState(m.speaking ? "hearing" : "listening");
      break;
    case "generating": {
      s.muted = true;          // no echo: hold the microphone until the reply has been heard
      s.replyDone = false;
      $("#vad-lamp").classList.remove("on");
      showState("thinking");
      const secs = (Number(m.speech_duration_ms) || 0) / 1000;
      s.user = transcript.add("user", userTextOf(m) || "…");
      s.user.setNote(t("hd.speech_secs", { s: secs.toFixed(1) }));
      s.reply = transcript.add("assistant");
      break;
    }
    case "chunk": {
      if (!s.reply) s.reply = transcript.add("assistant");
      const ut = userTextOf(m);
      if (ut && s.user) s.user.set(ut);
      if (m.text_delta) s.reply.append(m.text_delta);
      if (m.audio_data) {
        s.audioChunks += 1;
        page.player.enqueue(base64ToFloat32(m.audio_data));
        showState("speaking");
      }
      break;
    }
    case "turn_done": {
      const ut = userTextOf(m);
      if (ut && s.user) s.user.set(ut);
      if (s.user && s.user.text === "…") fillTranscriptLater(s.user, m.turn_index);
      if (s.reply && typeof m.text === "string" && m.text) s.reply.set(m.text);
      s.replyDone = true;
      s.reply = null;
      s.user = null;
      unmuteIfDone();
      break;
    }
    case "timeout":
      notify("warn", t("session.timeout"), { id: "session-end" });
      end(false);
      break;
    case "stopped":
      end(false);
      break;
    default:
  }
}

async function start() {
  clearNotice("session-end");
  if (!(await keyReady())) return;
  $("#start").disabled = true;
  showState("connecting");
  await page.player.ensure();
  let ref = null;
  try { ref = await page.voices.selectedBase64(); } catch (e) { notify("warn", e.message, { timeoutMs: 6000 }); }
  s.mic = await openMic({
    chunkSamples: CHUNK,
    onLevel: page.showLevel,
    onChunk: (pcm) => {
      if (!s.prepared || s.muted || !s.sock) return;
      if (s.sock.send({ type: "audio_chunk", audio_base64: float32ToBase64(pcm) })) s.sentChunks += 1;
    },
  });
  if (!s.mic) { $("#start").disabled = false; showState("idle"); return; }
  const queue = new QueueView($("#queue"));
  s.prepared = false; s.muted = false; s.replyDone = true;
  const sock = new ServiceSocket(`/ws/half_duplex/${newSessionId("hd_")}`, {
    onQueue: (q) => { queue.update(q); if (q) showState("queued"); },
    onMessage,
    onError: (text, fatal) => {
      notify("error", text, { id: "session-error" });
      if (fatal) { end(false); return; }
      s.replyDone = true;      // a failed turn sends no turn_done: give the microphone back
      unmuteIfDone();
    },
    onClose: () => { queue.hide(); end(false); },
  });
  s.sock = sock;
  try {
    await sock.connect();
  } catch { return; }
  sock.send(prepareMessage(ref));
  $("#start").hidden = true;
  $("#start").disabled = false;
  $("#stop").hidden = false;
}

function end(sendStop) {
  const sock = s.sock;
  if (sock && sendStop) {
    sock.send({ type: "stop" });
    setTimeout(() => sock.close(), 1500);  // the server answers "stopped" and closes; do not wait forever
  } else if (sock) sock.close();
  s.sock = null;
  if (s.mic) { s.mic.stop(); s.mic = null; }
  page.player.flush();
  s.prepared = false;
  clock.stop();
  page.showLevel(0);
  $("#vad-lamp").classList.remove("on");
  showState("idle");
  $("#start").hidden = false;
  $("#start").disabled = false;
  $("#stop").hidden = true;
}

async function main() {
  await initPage("half_duplex_audio");
  await mountKeyField();          // only when the gateway requires API keys
  page = setupVoicePage("half_duplex", settings, { onPlayerIdle: unmuteIfDone });
  window.omniserve = { player: page.player, state: s };
  showState("idle");
  $("#start").onclick = start;
  $("#stop").onclick = () => end(true);
  markReady();
}

main();
