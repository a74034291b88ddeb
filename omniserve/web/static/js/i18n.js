/**
 * English / 中文 strings. Elements carry data-i18n="key" (text), data-i18n-placeholder,
 * data-i18n-title; code calls t("key", {vars}). The choice persists in localStorage.
 */
import { loadJSON, saveJSON } from "./settings.js";

export const LANGS = { en: "English", zh: "中文" };
let strings = {};
let fallback = {};
let lang = "en";

export function currentLang() { return lang; }

/** The spoken language a voice session asks for (generation/config ``language``): the page's own
 * setting if the user chose one, else "auto" (English or Chinese, per turn) when the page is in
 * Chinese, else "" (the server's default). */
export function speechLanguage(chosen) { return chosen || (lang === "zh" ? "auto" : ""); }

function pickLang() {
  const saved = loadJSON("lang", null);
  if (saved && saved in LANGS) return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

async function loadStrings(code) {
  const res = await fetch(new URL(`../i18n/${code}.json`, import.meta.url));
  if (!res.ok) throw new Error(`i18n ${code}: ${res.status}`);
  return res.json();
}

export async function initI18n() {
  lang = pickLang();
  try {
    fallback = await loadStrings("en");
    strings = lang === "en" ? fallback : await loadStrings(lang);
  } catch (e) {
    console.warn("i18n load failed", e);
  }
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  applyI18n(document);
}

export async function setLang(code) {
  if (!(code in LANGS)) return;
  saveJSON("lang", code);
  await initI18n();
  document.dispatchEvent(new CustomEvent("langchange", { detail: code }));
}

/** Translates a key; {name} placeholders are filled from vars. Unknown keys show the key. */
export function t(key, vars) {
  let s = strings[key] ?? fallback[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}
