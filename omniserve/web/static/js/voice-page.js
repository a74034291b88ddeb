/**
 * Common setup of the voice pages (half-duplex, omni, audio duplex): settings form, voice and
 * preset pickers, device selects, the speech player and the microphone level meter.
 */
import { notify } from "./layout.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";
import { bindSettings } from "./settings.js";
import { PcmPlayer } from "./player.js";
import { VoicePicker } from "./voices.js";
import { PresetPicker } from "./presets.js";
import { bindDeviceSelect, savedDevice } from "./devices.js";
import { MicCapture, MicDeniedError } from "./capture.js";
import { levelFromRms } from "./pcm.js";

export function setupVoicePage(mode, settings, { onPlayerIdle, onPlayerStart } = {}) {
  bindSettings(document, settings);
  const player = new PcmPlayer({
    startDelayMs: settings.get("start_delay_ms"), sinkId: savedDevice("speaker"),
    onIdle: () => onPlayerIdle && onPlayerIdle(), onStart: () => onPlayerStart && onPlayerStart(),
  });
  const voices = new VoicePicker($("#voice"), $("#voice-upload"), { onError: (m) => notify("error", m, { timeoutMs: 8000 }) });
  voices.refresh();
  new PresetPicker($("#preset"), $("#system"), mode, {
    onPick: (p) => { if (p.audio_url) voices.addUrlVoice(t("voice.preset", { name: p.name ?? p.id }), p.audio_url); },
  }).load();
  bindDeviceSelect($("#mic-device"), "mic");
  bindDeviceSelect($("#speaker-device"), "speaker", (id) => player.setSink(id));
  const delay = document.querySelector('[data-setting="start_delay_ms"]');
  if (delay) delay.addEventListener("change", () => { player.startDelay = settings.get("start_delay_ms") / 1000; });
  const meter = $("#level");
  const showLevel = (rms) => { if (meter) meter.style.width = `${Math.round(levelFromRms(rms) * 100)}%`; };
  return { player, voices, showLevel };
}

/** Opens the microphone; shows a clear notice and returns null when it is denied. */
export async function openMic({ chunkSamples, onChunk, onLevel }) {
  const mic = new MicCapture({ chunkSamples, onChunk, onLevel, deviceId: savedDevice("mic") });
  try {
    await mic.start();
  } catch (e) {
    notify("error", e instanceof MicDeniedError ? t("err.mic_denied") : t("err.mic_failed", { error: e.message }), { id: "mic" });
    mic.stop();
    return null;
  }
  const sel = $("#mic-device");
  if (sel && sel.refreshDevices) sel.refreshDevices();  // labels are visible now
  return mic;
}

/** Sets the big status label and the orb's look. state: idle|connecting|listening|hearing|thinking|speaking|paused */
export function showState(state) {
  const label = $("#state-label");
  if (label) {
    label.textContent = t(`state.${state}`);
    label.dataset.state = state;
    label.className = `badge ${{ listening: "ok", hearing: "accent", thinking: "warn", speaking: "danger" }[state] || ""}`;
  }
  const orb = $("#orb");
  if (orb) orb.className = `orb ${{ speaking: "speak", listening: "listen", hearing: "listen" }[state] || (state === "idle" ? "idle" : "")}`;
}
