/**
 * The common frame of every page: header (brand, nav, language and theme switch), notices area
 * and footer. `initPage("omni")` renders it, loads strings and returns once the page can start.
 */
import { h, fill, $ } from "./dom.js";
import { initI18n, t, LANGS, currentLang, setLang } from "./i18n.js";
import { loadJSON, saveJSON } from "./settings.js";
import { applyIcons, icon } from "./icons.js";

export const MODES = [
  { app: "turnbased", href: "/turnbased", key: "nav.chat", icon: "chat", desc: "mode.turnbased.desc" },
  { app: "half_duplex_audio", href: "/half_duplex", key: "nav.voice", icon: "wave", desc: "mode.half_duplex.desc" },
  { app: "omni", href: "/omni", key: "nav.omni", icon: "video", desc: "mode.omni.desc" },
  { app: "audio_duplex", href: "/audio_duplex", key: "nav.duplex", icon: "headphones", desc: "mode.audio_duplex.desc" },
];

function applyTheme() {
  const theme = loadJSON("theme", "auto");
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

function header(active) {
  const links = [
    { id: "home", href: "/", key: "nav.home" },
    ...MODES.map((m) => ({ id: m.app, href: m.href, key: m.key })),
    { id: "admin", href: "/admin", key: "nav.admin" },
  ];
  const langSel = h("select.lang-select", { "aria-label": "Language", onchange: (e) => setLang(e.target.value) },
    Object.entries(LANGS).map(([code, name]) => h("option", { value: code, selected: code === currentLang() }, name)));
  const themeBtn = h("button.btn.ghost.small.theme-btn", {
    type: "button", title: t("theme.toggle"),
    onclick: () => {
      const order = ["auto", "light", "dark"];
      const next = order[(order.indexOf(loadJSON("theme", "auto")) + 1) % order.length];
      saveJSON("theme", next);
      applyTheme();
      themeBtn.textContent = themeIcon();
    },
  }, themeIcon());
  return h("div.inner",
    h("a.brand", { href: "/" }, h("span.brand-mark", icon("wave", 18)), "omniserve"),
    h("nav.nav", links.map((l) => h("a", { href: l.href, "aria-current": l.id === active ? "page" : null, dataset: { app: l.id } }, t(l.key)))),
    h("div.header-tools", langSel, themeBtn));
}

function themeIcon() { return { auto: "◐", light: "☀", dark: "☾" }[loadJSON("theme", "auto")] || "◐"; }

/** Hides nav links of modes the administrator turned off. */
async function hideDisabled(nav) {
  try {
    const res = await fetch("/api/apps");
    if (!res.ok) return;
    const data = await res.json();
    const apps = Array.isArray(data) ? data : data.apps || [];
    for (const a of apps) {
      const link = nav.querySelector(`a[data-app="${CSS.escape(a.app_id)}"]`);
      if (link) link.hidden = a.enabled === false;
    }
  } catch { /* offline preview: keep all */ }
}

export async function initPage(active) {
  applyTheme();
  await initI18n();
  applyIcons(document);
  const head = $("#app-header");
  head.className = "app-header";
  fill(head, header(active));
  hideDisabled(head);
  const foot = $("#app-footer");
  if (foot) { foot.className = "app-footer"; fill(foot, t("footer.text")); }
  document.addEventListener("langchange", () => {
    fill(head, header(active));
    hideDisabled(head);
    if (foot) fill(foot, t("footer.text"));
  });
}

/** Marks the page as wired up (controls bound, settings shown): <body data-ready="1">. */
export function markReady() { document.body.dataset.ready = "1"; }

/** Shows a notice at the top of the page; `timeoutMs` 0 keeps it until closed. Returns it. */
export function notify(kind, text, { timeoutMs = 0, id } = {}) {
  const box = $("#notices");
  if (!box) { console.log(kind, text); return null; }
  if (id) { const old = box.querySelector(`[data-id="${CSS.escape(id)}"]`); if (old) old.remove(); }
  const close = h("button.close", { type: "button", "aria-label": "close" }, "×");
  const n = h(`div.notice.${kind}`, { role: kind === "error" ? "alert" : "status", dataset: { id: id || "" } }, h("span", text), close);
  close.onclick = () => n.remove();
  box.append(n);
  if (timeoutMs) setTimeout(() => n.remove(), timeoutMs);
  return n;
}

export function clearNotice(id) {
  const n = document.querySelector(`#notices [data-id="${CSS.escape(id)}"]`);
  if (n) n.remove();
}
