/**
 * System-prompt presets from /api/presets for one mode: a <select> that fills the prompt
 * textarea. Accepts a list or a {mode: [...]} map; each preset has id, name and the prompt text
 * (system_prompt | prompt | text). Also reads /api/frontend_defaults for an initial prompt; a page
 * shown in Chinese starts from the mode's Chinese preset.
 */
import { api, asList } from "./api.js";
import { h, fill } from "./dom.js";
import { currentLang, t } from "./i18n.js";

const MODE_ALIASES = {
  turnbased: ["turnbased", "chat", "turn_based"],
  half_duplex: ["half_duplex", "half_duplex_audio"],
  omni: ["omni", "omni_duplex"],
  audio_duplex: ["audio_duplex"],
};

export const presetText = (p) => String(p.system_prompt ?? p.prompt ?? p.text ?? p.content ?? "");

export function presetsForMode(data, mode) {
  const names = MODE_ALIASES[mode] || [mode];
  if (data && !Array.isArray(data) && typeof data === "object") {
    for (const n of names) {
      if (Array.isArray(data[n])) return data[n];
      if (data.presets && Array.isArray(data.presets[n])) return data.presets[n];
    }
  }
  const list = asList(data, "presets");
  return list.filter((p) => !p.mode && !p.modes ? true
    : names.includes(p.mode) || (Array.isArray(p.modes) && p.modes.some((m) => names.includes(m))));
}

let defaultsPromise = null;
export function frontendDefaults() {
  defaultsPromise = defaultsPromise || api("/api/frontend_defaults").catch(() => ({}));
  return defaultsPromise;
}

export class PresetPicker {
  constructor(select, textarea, mode, { onPick } = {}) {
    this.select = select;
    this.textarea = textarea;
    this.mode = mode;
    this.presets = [];
    this.onPick = onPick || (() => {});
    select.onchange = () => {
      const p = this.presets.find((x) => String(x.id ?? x.name) === select.value);
      if (p) { textarea.value = presetText(p); textarea.dispatchEvent(new Event("change")); this.onPick(p); }
    };
  }

  async load() {
    try { this.presets = presetsForMode(await api("/api/presets"), this.mode); } catch { this.presets = []; }
    fill(this.select, h("option", { value: "" }, t("preset.custom")),
      this.presets.map((p) => h("option", { value: String(p.id ?? p.name) }, String(p.name ?? p.id))));
    this.select.closest("label").hidden = !this.presets.length;
    if (!this.textarea.value.trim()) {
      const d = await frontendDefaults();
      const key = this.mode === "turnbased" ? "chat" : this.mode;   // /api/frontend_defaults calls it "chat"
      const prompt = d && (d[key]?.system_prompt ?? d[this.mode]?.system_prompt);
      // a page shown in Chinese starts from a preset written in Chinese (the reply follows its language)
      const native = currentLang() === "zh" ? this.presets.find((p) => /[\u4e00-\u9fff]/.test(presetText(p))) : null;
      const first = this.presets[0];
      const text = native ? presetText(native) : typeof prompt === "string" && prompt ? prompt : first ? presetText(first) : "";
      if (text) { this.textarea.value = text; this.textarea.dispatchEvent(new Event("change")); }
    }
    const match = this.presets.find((p) => presetText(p).trim() === this.textarea.value.trim());
    if (match) this.select.value = String(match.id ?? match.name);
  }
}
