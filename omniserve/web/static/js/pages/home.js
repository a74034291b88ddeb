/** Home: enabled modes as cards, recent sessions, notice when redirected from a disabled mode. */
import { initPage, notify, markReady, MODES } from "../layout.js";
import { api, asList } from "../api.js";
import { h, fill, $, fmtTime } from "../dom.js";
import { t } from "../i18n.js";
import { icon } from "../icons.js";
import { recentSessions, forgetSessions } from "../recent.js";

async function renderModes() {
  const box = $("#modes");
  let apps = null;
  try { apps = asList(await api("/api/apps"), "apps"); } catch (e) {
    notify("error", t("home.apps_failed", { error: e.message }), { id: "apps" });
  }
  const byId = new Map((apps || []).map((a) => [a.app_id, a]));
  const cards = MODES.filter((m) => !apps || (byId.has(m.app) && byId.get(m.app).enabled !== false)).map((m) =>
    h("a.card.mode-card", { href: m.href, dataset: { app: m.app, testid: `mode-${m.app}` } },
      h("div.mode-icon", icon(m.icon, 22)),
      h("h3", t(m.key)),
      h("p", t(m.desc)),
      h("span.go", t("home.open"))));
  fill(box, cards.length ? cards : h("div.card.empty", t("home.no_modes")));
}

function renderRecent() {
  const list = recentSessions();
  fill($("#recent"), list.length ? list.map((s) => h("li",
    h("div", h("a", { href: `/s/${encodeURIComponent(s.id)}` }, s.id), " ", s.mode ? h("span.badge", t(`modename.${s.mode}`)) : null),
    h("small.faint", fmtTime(s.at)))) : h("li.empty", t("home.no_recent")));
}

async function main() {
  await initPage("home");
  const disabled = new URLSearchParams(location.search).get("disabled");
  if (disabled) notify("warn", t("home.disabled_notice", { mode: t(`modename.${disabled}`) }), { id: "disabled" });
  $("#clear-recent").onclick = () => { forgetSessions(); renderRecent(); };
  document.addEventListener("langchange", () => { renderModes(); renderRecent(); });
  renderRecent();
  await renderModes();
  markReady();
}

main();
