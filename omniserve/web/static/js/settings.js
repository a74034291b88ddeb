/**
 * Persistent per-page settings in localStorage, with defaults. Values keep their types; a
 * corrupt stored value falls back to the default rather than breaking the page.
 */
const PREFIX = "omniserve.";

export function loadJSON(key, fallback) {
  try {
    const raw = localStorage.getItem(PREFIX + key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function saveJSON(key, value) {
  try { localStorage.setItem(PREFIX + key, JSON.stringify(value)); } catch { /* quota or private mode */ }
}

/** Settings object for one page: `s.get(k)`, `s.set(k, v)`, `s.all()`. Only the values that differ
 * from the page's defaults are stored, so a default changed later reaches those who never set it. */
export class Settings {
  constructor(page, defaults) {
    this.key = `settings.${page}`;
    this.defaults = defaults;
    const stored = loadJSON(this.key, {});
    this.values = { ...defaults };
    for (const [k, v] of Object.entries(stored || {})) {
      if (k in defaults && typeof v === typeof defaults[k]) this.values[k] = v;
    }
  }
  get(k) { return this.values[k]; }
  set(k, v) { this.values[k] = v; this._save(); }
  all() { return { ...this.values }; }
  reset() { this.values = { ...this.defaults }; this._save(); }
  _save() {
    saveJSON(this.key, Object.fromEntries(Object.entries(this.values).filter(([k, v]) => v !== this.defaults[k])));
  }
}

/**
 * Two-way binds form controls to settings: each element with data-setting="key" shows the
 * stored value and saves on change. Numbers from number/range inputs stay numbers.
 */
export function bindSettings(root, settings) {
  for (const el of root.querySelectorAll("[data-setting]")) {
    const k = el.dataset.setting;
    const v = settings.get(k);
    if (el.type === "checkbox") el.checked = !!v; else if (v !== undefined) el.value = String(v);
    el.addEventListener("change", () => {
      let val = el.type === "checkbox" ? el.checked : el.value;
      if (typeof settings.defaults[k] === "number") {
        val = Number(val);
        if (!Number.isFinite(val)) { el.value = String(settings.get(k)); return; }
      }
      settings.set(k, val);
    });
  }
}
