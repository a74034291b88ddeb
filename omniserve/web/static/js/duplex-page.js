/**
 * Full-duplex page controller shared by omni (voice + camera, id prefix omni_) and audio duplex
 * (id prefix adx_): one audio_chunk of chunk_ms per unit (omni adds one JPEG frame), results
 * drive captions, the listen/speak lamp, speech playback, barge-in and the metrics panel.
 * Our pages send a shorter unit than the protocol's 1000 ms default (omniserve/knobs.py
 * DUPLEX_PAGE, measured by bench/duplex_feel.py). Talking over the reply ducks it at once
 * (duck.js); the server decides whether that was an interruption, and a cut drops the audio.
 */
import { initPage, notify, clearNotice, markReady } from "./layout.js";
import { keyReady, mountKeyField } from "./access.js";
import { $, fmtMs } from "./dom.js";
import { speechLanguage, t } from "./i18n.js";
import { Settings } from "./settings.js";
import { ServiceSocket } from "./ws.js";
import { QueueView } from "./queue-view.js";
import { base64ToFloat32, float32ToBase64 } from "./pcm.js";
import { newSessionId } from "./ids.js";
import { rememberSession } from "./recent.js";
import { TranscriptView, userTextOf } from "./transcript-view.js";
import { SessionClock } from "./session-clock.js";
import { setupVoicePage, openMic, showState } from "./voice-page.js";
import { DuplexMetrics, BargeIn, Trace } from "./duplex-metrics.js";
import { Ducker, DUCK } from "./duck.js";
import { Camera, CameraDeniedError } from "./camera.js";

const MAX_BUFFERED = 2 * 1024 * 1024;  // bytes queued in the socket before frames are skipped

export async function runDuplexPage({ mode, app, prefix, withCamera }) {
  const settings = new Settings(mode, {
    system_prompt: "", generate_audio: true, force_listen_count: 3, max_new_speak_tokens_per_chunk: 20,
    temperature: 0.7, top_p: 0.8, top_k: 20, listen_prob_scale: 1.0, length_penalty: 1.1, chunk_ms: 250,
    language: "", start_delay_ms: 150, local_barge_in: true,
  });
  await initPage(app);
  await mountKeyField();          // only when the gateway requires API keys
  const s = { sock: null, mic: null, prepared: false, paused: false, forceListen: 0, reply: null, user: null, sent: 0, frames: 0 };
  let metrics = new DuplexMetrics(settings.get("chunk_ms"));
  let barge = new BargeIn();
  let ducker = new Ducker();
  const trace = new Trace();
  const transcript = new TranscriptView($("#transcript"), $("#transcript-empty"));
  const clock = new SessionClock($("#timer"));
  const camera = withCamera ? new Camera($("#video")) : null;
  const page = setupVoicePage(mode, settings);
  window.omniserve = { player: page.player, state: s, get metrics() { return metrics; }, camera, trace };

  const lamp = (st) => {
    $("#ls-lamp").className = `lamp ${st === "speak" ? "speak" : st === "listen" ? "listen" : ""}`;
    $("#ls-lamp").dataset.state = st;
    $("#ls-text").textContent = t(`duplex.${st}`);
  };
  const overlay = (text) => { const o = $("#overlay"); if (o) o.textContent = text; };
  const dropAudio = (why) => {
    if (page.player.flush()) { trace.event(performance.now(), "drop", why); console.info("barge-in:", why); }
  };

  function renderMetrics() {
    $("#m-units").textContent = String(metrics.units);
    $("#m-cost").textContent = fmtMs(metrics.lastCostMs);
    $("#m-cost").title = t("metrics.cost_title", { chunk: settings.get("chunk_ms") });
    $("#m-pace").textContent = metrics.paceRatio == null ? "—" : `${Math.round(metrics.paceRatio * 100)}%`;
    $("#m-ttfs").textContent = fmtMs(metrics.ttfsMs);
    $("#m-buffer").textContent = fmtMs(page.player.bufferAheadMs);
    $("#m-gaps").textContent = String(page.player.gaps);
    $("#m-kv").textContent = metrics.units ? String(metrics.kv) : "—";
    $("#m-speak").textContent = String(metrics.speakUnits);
  }
  const metricsTimer = setInterval(() => { if (s.sock) renderMetrics(); }, 250);
  void metricsTimer;

  function onResult(r) {
    const now = performance.now();
    metrics.onUnit(r, now);
    if (barge.onResult(r)) dropAudio("model listens again");
    const ut = userTextOf(r);
    if (ut) {
      // user_text is the current utterance heard so far (partial, then final): replace, not append
      if (!s.user) s.user = transcript.add("user");
      s.user.set(ut);
    }
    if (!r.is_listen) {
      s.user = null;
      lamp("speak");
      showState("speaking");
      if (r.text) {
        if (!s.reply) s.reply = transcript.add("assistant");
        s.reply.append(r.text);
        overlay(s.reply.text.slice(-160));
      }
      if (r.audio_data) page.player.enqueue(base64ToFloat32(r.audio_data));
      if (r.end_of_turn) s.reply = null;
    } else {
      s.reply = null;
      lamp("listen");
      showState(s.paused ? "paused" : "listening");
    }
    renderMetrics();
  }

  function onMessage(m) {
    switch (m.type) {
      case "prepared":
        s.prepared = true;
        clock.start();
        lamp("listen");
        showState("listening");
        if (m.recording_session_id) {
          rememberSession(m.recording_session_id, mode);
          const a = $("#session-link");
          a.href = `/s/${encodeURIComponent(m.recording_session_id)}`;
          a.hidden = false;
        }
        break;
      case "result": onResult(m); break;
      case "paused":
        s.paused = true; showState("paused"); toggleButtons(); break;
      case "resumed":
        s.paused = false; showState("listening"); toggleButtons(); break;
      case "timeout":
        notify("warn", t("session.timeout"), { id: "session-end" });
        end(false);
        break;
      case "stopped": end(false); break;
      default:
    }
  }

  function onChunk(pcm) {
    if (!s.prepared || s.paused || !s.sock) return;
    const msg = { type: "audio_chunk", audio_base64: float32ToBase64(pcm) };
    if (s.forceListen > 0) { msg.force_listen = true; s.forceListen -= 1; }
    if (camera && s.sock.buffered < MAX_BUFFERED) {
      const frame = camera.grab();
      if (frame) { msg.frame_base64_list = [frame]; s.frames += 1; }
    }
    if (s.sock.send(msg)) s.sent += 1;
  }

  function onLevel(rmsValue) {
    page.showLevel(rmsValue);
    const now = performance.now();
    metrics.onLevel(rmsValue, now);
    trace.level(now, rmsValue);
    if (!settings.get("local_barge_in")) return;
    const act = ducker.onLevel(rmsValue, now, page.player.playing);
    if (act) {
      page.player.setVolume(act === "duck" ? DUCK.gain : 1, DUCK.rampMs);
      trace.event(now, act);
    }
  }

  /** What the browser saw, for the operator (the gateway stores it with the session). */
  function diagnostic() {
    const p = page.player;
    return {
      type: "client_diagnostic", units: metrics.units, chunks_sent: s.sent, frames_sent: s.frames,
      avg_cost_all_ms: metrics.avgCostMs, overruns: metrics.overruns, avg_ttfs_ms: metrics.avgTtfsMs,
      playback: { chunks: p.chunks, received_s: p.receivedSec, played_s: p.playedSec, gaps: p.gaps, flushes: p.flushes },
      user_agent: navigator.userAgent,
    };
  }

  function toggleButtons() {
    const live = !!s.sock;
    $("#start").hidden = live;
    $("#stop").hidden = !live;
    $("#pause").hidden = !live || s.paused;
    $("#resume").hidden = !live || !s.paused;
    $("#force-listen").hidden = !live;
  }

  async function start() {
    clearNotice("session-end");
    if (!(await keyReady())) return;
    $("#start").disabled = true;
    showState("connecting");
    await page.player.ensure();
    metrics = new DuplexMetrics(settings.get("chunk_ms"));
    barge = new BargeIn();
    ducker = new Ducker();
    page.player.setVolume(1, 0);
    let ref = null;
    try { ref = await page.voices.selectedBase64(); } catch (e) { notify("warn", e.message, { timeoutMs: 6000 }); }
    if (camera) {
      try {
        await camera.start();
        $("#cam-placeholder").hidden = true;
      } catch (e) {
        notify("error", e instanceof CameraDeniedError ? t("err.camera_denied") : e.message, { id: "camera" });
        $("#start").disabled = false; showState("idle");
        return;
      }
    }
    s.mic = await openMic({ chunkSamples: Math.round(settings.get("chunk_ms") * 16), onChunk, onLevel });
    if (!s.mic) { if (camera) camera.stop(); $("#start").disabled = false; showState("idle"); return; }
    const queue = new QueueView($("#queue"));
    Object.assign(s, { prepared: false, paused: false, forceListen: 0, reply: null, user: null, sent: 0, frames: 0 });
    const sock = new ServiceSocket(`/ws/duplex/${newSessionId(prefix)}`, {
      onQueue: (q) => { queue.update(q); if (q) showState("queued"); },
      onMessage,
      onError: (text, fatal) => { notify("error", text, { id: "session-error" }); if (fatal) end(false); },
      onClose: () => { queue.hide(); end(false); },
    });
    s.sock = sock;
    try { await sock.connect(); } catch { return; }
    const prompt = $("#system").value.trim();
    const prep = {
      type: "prepare",
      config: {
        generate_audio: settings.get("generate_audio"), force_listen_count: settings.get("force_listen_count"),
        max_new_speak_tokens_per_chunk: settings.get("max_new_speak_tokens_per_chunk"),
        temperature: settings.get("temperature"), top_p: settings.get("top_p"), top_k: settings.get("top_k"),
        listen_prob_scale: settings.get("listen_prob_scale"), length_penalty: settings.get("length_penalty"),
        chunk_ms: settings.get("chunk_ms"), sample_rate: 16000, language: speechLanguage(settings.get("language")),
      },
    };
    if (prompt) prep.system_prompt = prompt;
    if (ref) { prep.ref_audio_base64 = ref; prep.tts_ref_audio_base64 = ref; }
    sock.send(prep);
    $("#start").disabled = false;
    toggleButtons();
  }

  function end(sendStop) {
    const sock = s.sock;
    if (sock && sendStop) {
      sock.send(diagnostic());
      sock.send({ type: "stop" });
      setTimeout(() => sock.close(), 1500);
    } else if (sock) sock.close();
    s.sock = null;
    s.prepared = false;
    if (s.mic) { s.mic.stop(); s.mic = null; }
    if (camera) { camera.stop(); $("#cam-placeholder").hidden = false; }
    page.player.flush();
    clock.stop();
    page.showLevel(0);
    lamp("idle");
    showState("idle");
    overlay("");
    renderMetrics();
    toggleButtons();
  }

  showState("idle");
  lamp("idle");
  $("#start").onclick = start;
  $("#stop").onclick = () => end(true);
  $("#pause").onclick = () => { if (s.sock) { s.sock.send({ type: "pause" }); page.player.flush(); } };
  $("#resume").onclick = () => { if (s.sock) s.sock.send({ type: "resume" }); };
  $("#force-listen").onclick = () => {
    s.forceListen = Math.max(1, Math.min(3, settings.get("force_listen_count") || 1));
    dropAudio("force listen");
  };
  if (camera) {
    $("#switch-cam").onclick = async () => {
      try {
        const label = await camera.next();
        if (!label) notify("info", t("omni.one_camera"), { timeoutMs: 4000 });
      } catch (e) { notify("error", e.message, { timeoutMs: 6000 }); }
    };
  }
  markReady();
}
