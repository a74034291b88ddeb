/**
 * Turn-based chat: each request opens one /ws/chat connection carrying the whole history, streams
 * text and speech back, and can be stopped. Timing per reply: first text, first audio, tokens.
 */
import { initPage, notify, markReady } from "../layout.js";
import { keyReady, mountKeyField } from "../access.js";
import { $ } from "../dom.js";
import { t } from "../i18n.js";
import { Settings, bindSettings } from "../settings.js";
import { ServiceSocket } from "../ws.js";
import { QueueView } from "../queue-view.js";
import { MicCapture, MicDeniedError } from "../capture.js";
import { PcmPlayer } from "../player.js";
import { base64ToFloat32 } from "../pcm.js";
import { VoicePicker } from "../voices.js";
import { PresetPicker } from "../presets.js";
import { bindDeviceSelect, savedDevice } from "../devices.js";
import { Attachments } from "../attachments.js";
import { userMessage, AssistantMessage } from "../chat-view.js";
import { rememberSession } from "../recent.js";

const settings = new Settings("turnbased", {
  system_prompt: "", streaming: true, tts: true, max_new_tokens: 256, temperature: 0.7, top_p: 0.8, top_k: 20,
  start_delay_ms: 120,
});

const state = { history: [], socket: null, busy: false, recorder: null, pttDownAt: 0 };
const player = new PcmPlayer({ startDelayMs: settings.get("start_delay_ms"), sinkId: savedDevice("speaker") });
window.omniserve = { player, state };

function setBusy(busy) {
  state.busy = busy;
  $("#send").hidden = busy;
  $("#stop").hidden = !busy;
}

function buildRequest() {
  const msgs = [];
  const sys = $("#system").value.trim();
  if (sys) msgs.push({ role: "system", content: sys });
  return {
    messages: [...msgs, ...state.history],
    streaming: settings.get("streaming"),
    generation: {
      max_new_tokens: settings.get("max_new_tokens"), temperature: settings.get("temperature"),
      top_p: settings.get("top_p"), top_k: settings.get("top_k"),
    },
    tts: { enabled: settings.get("tts") },
  };
}

async function send(attachments, voices) {
  if (state.busy) return;
  const text = $("#input").value.trim();
  if (!text && !attachments.count) return;
  if (!(await keyReady())) return;           // keeps the typed message
  const request = buildRequest();
  if (request.tts.enabled) {
    await player.ensure();
    try {
      const ref = await voices.selectedBase64();
      if (ref) request.tts.ref_audio_data = ref;
    } catch (e) { notify("warn", e.message, { timeoutMs: 6000 }); }
  }
  player.flush();             // a new question silences the previous answer
  const { items, shown } = attachments.take(text);
  $("#input").value = "";
  $("#thread-empty").hidden = true;
  userMessage($("#thread"), text, shown);
  const userMsg = { role: "user", content: items.length === 1 && items[0].type === "text" ? text : items };
  state.history.push(userMsg);
  request.messages.push(userMsg);
  run(request);
}

function run(request) {
  const reply = new AssistantMessage($("#thread"));
  const queue = new QueueView($("#queue"));
  const t0 = performance.now();
  const timing = { firstText: null, firstAudio: null, tokens: null, inputTokens: null };
  let finished = false;
  setBusy(true);
  const end = () => {
    finished = true;
    queue.hide();
    setBusy(false);
    state.socket = null;
  };
  const sock = new ServiceSocket("/ws/chat", {
    onQueue: (q) => queue.update(q),
    onError: (text, fatal) => {
      if (finished) return;
      reply.fail(text);
      notify("error", text, { id: "chat-error", timeoutMs: 10000 });
      state.history.pop();
      end();
      if (!fatal) sock.close();
    },
    onMessage: (m) => {
      if (m.type === "prefill_done") timing.inputTokens = m.input_tokens;
      else if (m.type === "chunk") {
        if (m.text_delta) {
          if (timing.firstText == null) timing.firstText = performance.now() - t0;
          reply.addText(m.text_delta);
        }
        if (m.audio_data) {
          if (timing.firstAudio == null) timing.firstAudio = performance.now() - t0;
          const pcm = base64ToFloat32(m.audio_data);
          reply.addAudio(pcm);
          player.enqueue(pcm);
        }
      } else if (m.type === "done") {
        if (typeof m.text === "string" && m.text) reply.setText(m.text);
        if (m.audio_data) {
          if (timing.firstAudio == null) timing.firstAudio = performance.now() - t0;
          const pcm = base64ToFloat32(m.audio_data);
          if (!reply.audio.length) { reply.addAudio(pcm); player.enqueue(pcm); }
        }
        if (timing.firstText == null && reply.text) timing.firstText = performance.now() - t0;
        reply.setTiming({ ...timing, tokens: m.generated_tokens, inputTokens: m.input_tokens ?? timing.inputTokens,
          totalMs: performance.now() - t0, stopped: !!m.stopped });
        if (m.recording_session_id) rememberSession(m.recording_session_id, "turnbased");
        reply.finish({ sessionId: m.recording_session_id });
        state.history.push({ role: "assistant", content: reply.text });
        end();
      }
    },
    onClose: ({ expected }) => {
      if (!finished && expected) { reply.finish(); end(); }
    },
  });
  state.socket = sock;
  sock.connect().then(() => sock.send(request)).catch(() => { /* onError reports it */ });
}

function stop() {
  const sock = state.socket;
  player.flush();
  if (!sock) return;
  if (!sock.send({ type: "stop" })) sock.close();
}

function bindPushToTalk(attachments) {
  const btn = $("#ptt");
  const startRec = async () => {
    if (state.recorder) return;
    const parts = [];
    const rec = new MicCapture({ chunkSamples: 1600, deviceId: savedDevice("mic"), onChunk: (c) => parts.push(c) });
    state.recorder = rec;
    rec.parts = parts;
    btn.classList.add("recording");
    try { await rec.start(); } catch (e) {
      state.recorder = null;
      btn.classList.remove("recording");
      notify("error", e instanceof MicDeniedError ? t("err.mic_denied") : e.message, { id: "mic" });
    }
  };
  const stopRec = () => {
    const rec = state.recorder;
    if (!rec) return;
    state.recorder = null;
    btn.classList.remove("recording");
    const tail = rec.stop();
    const all = [...rec.parts, tail];
    const n = all.reduce((a, p) => a + p.length, 0);
    const pcm = new Float32Array(n);
    let o = 0;
    for (const p of all) { pcm.set(p, o); o += p.length; }
    attachments.addAudio(pcm);
  };
  // Hold to talk; a short tap toggles recording instead (easier on touch screens and for keyboards).
  btn.addEventListener("pointerdown", (e) => { e.preventDefault(); state.pttDownAt = performance.now(); if (!state.recorder) startRec(); else state.pttToggle = "stop"; });
  btn.addEventListener("pointerup", () => {
    const held = performance.now() - state.pttDownAt;
    if (state.pttToggle === "stop") { state.pttToggle = null; stopRec(); return; }
    if (held > 350) stopRec();
  });
}

async function main() {
  await initPage("turnbased");
  await mountKeyField();          // only when the gateway requires API keys
  bindSettings(document, settings);
  const attachments = new Attachments($("#attachments"), { onError: (m) => notify("warn", m, { timeoutMs: 6000 }) });
  const voices = new VoicePicker($("#voice"), $("#voice-upload"), { onError: (m) => notify("error", m, { timeoutMs: 8000 }) });
  voices.refresh();
  new PresetPicker($("#preset"), $("#system"), "turnbased").load();
  attachments.bindDrop($("#composer"));
  $("#pick-image").onchange = (e) => { for (const f of e.target.files) attachments.addFile(f); e.target.value = ""; };
  $("#pick-video").onchange = (e) => { for (const f of e.target.files) attachments.addFile(f); e.target.value = ""; };
  $("#send").onclick = () => send(attachments, voices);
  $("#stop").onclick = stop;
  $("#input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(attachments, voices); }
  });
  $("#new-chat").onclick = () => {
    stop();
    state.history = [];
    for (const m of document.querySelectorAll("#thread .msg")) m.remove();
    $("#thread-empty").hidden = false;
  };
  bindPushToTalk(attachments);
  bindDeviceSelect($("#mic-device"), "mic");
  bindDeviceSelect($("#speaker-device"), "speaker", (id) => player.setSink(id));
  document.querySelector('[data-setting="start_delay_ms"]').addEventListener("change", () => { player.startDelay = settings.get("start_delay_ms") / 1000; });
  markReady();
}

main();
