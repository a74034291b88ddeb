/**
 * Voice choice shared by every page that speaks: "default" (the server's voice) or an uploaded
 * reference voice from /api/assets/ref_audio. The chosen voice is fetched once, decoded to
 * 16 kHz mono float32 and sent as base64 (tts.ref_audio_data / ref_audio_base64).
 */
import { api, asList } from "./api.js";
import { h, fill, fileToBase64 } from "./dom.js";
import { t } from "./i18n.js";
import { decodeToMono16k } from "./capture.js";
import { float32ToBase64 } from "./pcm.js";
import { loadJSON, saveJSON } from "./settings.js";

export const voiceId = (v) => String(v.id ?? v.ref_audio_id ?? v.asset_id ?? "");
export const voiceName = (v) => String(v.name ?? v.display_name ?? v.filename ?? voiceId(v));
export const voiceAudioUrl = (id) => `/api/assets/ref_audio/${encodeURIComponent(id)}/audio`;

export async function listVoices() {
  return asList(await api("/api/assets/ref_audio"), "ref_audios", "voices", "assets").filter(voiceId);
}

/**
 * Uploads a voice file as JSON {name, data: base64 of the file} (RefAudioUpload in
 * protocol/rest.py; the gateway decodes WAV/FLAC/OGG/WebM). Returns the server's record.
 */
export async function uploadVoice(file, name, { admin = false } = {}) {
  const data = await fileToBase64(file);
  const clean = (name || file.name.replace(/\.[^.]+$/, "")).trim().slice(0, 64) || "voice";
  return api("/api/assets/ref_audio", { method: "POST", body: { name: clean, data }, admin });
}

const cache = new Map();

/** base64 16 kHz float32 PCM of a stored voice (cached per page). */
export async function voiceBase64(id) {
  if (cache.has(id)) return cache.get(id);
  const res = await fetch(id.startsWith("url:") ? id.slice(4) : voiceAudioUrl(id));
  if (!res.ok) throw new Error(t("voice.load_failed", { status: res.status }));
  const pcm = await decodeToMono16k(await res.arrayBuffer());
  const b64 = float32ToBase64(pcm);
  cache.set(id, b64);
  return b64;
}

/**
 * A <select> of voices plus an upload button. `picker.selectedBase64()` → base64 or null
 * (default voice).
 */
export class VoicePicker {
  constructor(select, uploadInput, { onError } = {}) {
    this.select = select;
    this.upload = uploadInput;
    this.onError = onError || ((e) => console.warn(e));
    this.select.onchange = () => saveJSON("voice", this.select.value);
    if (this.upload) {
      this.upload.onchange = async () => {
        const f = this.upload.files && this.upload.files[0];
        this.upload.value = "";
        if (!f) return;
        try {
          const rec = await uploadVoice(f);
          await this.refresh(voiceId(rec) || undefined);
        } catch (e) { this.onError(t("voice.upload_failed", { error: e.message })); }
      };
    }
  }

  async refresh(selectId) {
    let voices = [];
    try { voices = await listVoices(); } catch (e) { /* list not available: default only */ }
    voices = voices.filter((v) => voiceId(v) !== "default");   // the server's default is the first option already
    const want = selectId ?? loadJSON("voice", "");
    fill(this.select, h("option", { value: "" }, t("voice.default")),
      voices.map((v) => h("option", { value: voiceId(v), selected: voiceId(v) === want }, voiceName(v))));
    if (selectId) { this.select.value = selectId; saveJSON("voice", selectId); }
  }

  /** Offers a preset's own voice (e.g. /api/presets/{mode}/{id}/audio) and selects it. */
  addUrlVoice(name, url) {
    const value = `url:${url}`;
    let opt = [...this.select.options].find((o) => o.value === value);
    if (!opt) { opt = h("option", { value }, name); this.select.append(opt); }
    this.select.value = value;
  }

  async selectedBase64() {
    const id = this.select.value;
    return id ? voiceBase64(id) : null;
  }
}
