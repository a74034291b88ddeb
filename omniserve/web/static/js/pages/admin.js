/**
 * Admin dashboard: workers, queue (cancel), running sessions, app toggles, ETA settings,
 * reference voices and API keys (admin-keys.js). The token lives in sessionStorage; every value
 * from the server is shown as text (h()/textContent), never as HTML.
 */
import { initPage, notify, clearNotice, markReady } from "../layout.js";
import { api, asList, adminToken, setAdminToken, ApiError } from "../api.js";
import { h, fill, $, fmtSeconds, fmtTime } from "../dom.js";
import { t } from "../i18n.js";
import { uploadVoice, voiceAudioUrl, voiceId, voiceName } from "../voices.js";
import { bindKeys } from "../admin-keys.js";

const ETA_FIELDS = [
  ["eta_chat_s", 1], ["eta_half_duplex_s", 1], ["eta_audio_duplex_s", 1], ["eta_omni_duplex_s", 1],
  ["eta_ema_alpha", 0.05], ["eta_ema_min_samples", 1],
];
let timer = null;
let keys = null;

const adm = (path, opts = {}) => api(path, { ...opts, admin: true });
const secs = (v) => (v == null || !Number.isFinite(Number(v)) ? "—" : fmtSeconds(Number(v)));

function statusBadge(st) {
  const s = String(st || "unknown");
  const kind = s === "idle" ? "ok" : s.startsWith("busy") || s.startsWith("duplex") ? "accent" : s === "loading" ? "warn" : "danger";
  return h(`span.badge.${kind}`, s);
}

function onAuthError(e) {
  if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
    setAdminToken("");
    showLogin(t("admin.bad_token"));
    return true;
  }
  return false;
}

async function refreshLive() {
  try {
    const [status, workers, queue] = await Promise.all([adm("/status"), adm("/workers"), adm("/api/queue")]);
    fill($("#status"), [
      ["admin.s_workers", status.total_workers], ["admin.s_idle", status.idle_workers], ["admin.s_busy", status.busy_workers],
      ["admin.s_queue", `${status.queue_length} / ${status.max_queue_size}`], ["admin.s_running", status.running_tasks],
      ["admin.s_slots", status.total_slots != null ? `${status.free_slots} / ${status.total_slots}` : null],
    ].map(([k, v]) => h("div.stat", h("span.k", t(k)), h("span.v", String(v ?? "—")))));
    const ws = asList(workers, "workers");
    fill($("#workers"), ws.length ? ws.map((w) => h("tr",
      h("td", String(w.index ?? "")), h("td.mono", String(w.url ?? "")), h("td", statusBadge(w.status), w.paused ? h("span.badge.warn", t("admin.paused")) : null,
        (w.slots_total ?? 1) > 1 ? h("span.faint", " " + t("admin.slots_free", { free: w.slots_free, total: w.slots_total })) : null),
      h("td", w.request_type ? `${w.request_type}${w.session_id ? ` · ${w.session_id}` : ""}` : "—"),
      h("td", secs(w.busy_for_s)), h("td.faint", w.online === false ? t("admin.offline") : w.last_health_s_ago != null ? t("admin.ago", { s: Number(w.last_health_s_ago).toFixed(1) }) : "—")))
      : h("tr", h("td.empty", { colSpan: 6 }, t("admin.no_workers"))));
    const items = asList(queue, "items");
    fill($("#queue"), items.length ? items.map((q) => h("tr",
      h("td", String(q.position)), h("td", String(q.request_type)), h("td", secs(q.waited_s)), h("td", secs(q.estimated_wait_s)),
      h("td", h("button.btn.small", { type: "button", onclick: () => cancel(q.ticket_id) }, t("admin.cancel")))))
      : h("tr", h("td.empty", { colSpan: 5 }, t("admin.queue_empty"))));
    const running = asList(queue.running_tasks ?? [], "running_tasks");
    fill($("#running"), running.length ? running.map((r) => h("tr",
      h("td", String(r.request_type)), h("td.mono", String(r.session_id ?? "—")), h("td", secs(r.elapsed_s)), h("td", secs(r.estimated_remaining_s))))
      : h("tr", h("td.empty", { colSpan: 4 }, t("admin.none_running"))));
    $("#updated").textContent = t("admin.updated", { time: new Date().toLocaleTimeString() });
  } catch (e) {
    if (!onAuthError(e)) $("#updated").textContent = t("admin.refresh_failed", { error: e.message });
  }
}

async function cancel(ticket) {
  try { await adm(`/api/queue/${encodeURIComponent(ticket)}`, { method: "DELETE" }); notify("ok", t("admin.cancelled"), { timeoutMs: 3000 }); } catch (e) { if (!onAuthError(e)) notify("error", e.message, { timeoutMs: 6000 }); }
  refreshLive();
}

async function loadApps() {
  const apps = asList(await adm("/api/admin/apps"), "apps");
  fill($("#apps"), apps.map((a) => {
    const box = h("input", { type: "checkbox", checked: a.enabled !== false, dataset: { testid: `toggle-${a.app_id}` } });
    box.onchange = async () => {
      try {
        await adm(`/api/admin/apps/${encodeURIComponent(a.app_id)}`, { method: "PUT", body: { enabled: box.checked } });
        notify("ok", t(box.checked ? "admin.enabled_msg" : "admin.disabled_msg", { name: a.name ?? a.app_id }), { timeoutMs: 3000 });
      } catch (e) { box.checked = !box.checked; if (!onAuthError(e)) notify("error", e.message, { timeoutMs: 6000 }); }
    };
    return h("tr", h("td", h("strong", String(a.name ?? a.app_id)), h("div.faint.mono", String(a.path ?? a.app_id))),
      h("td", { style: "text-align:right" }, h("label.switch", box, h("span"))));
  }));
}

async function loadEta() {
  const eta = await adm("/api/config/eta");
  fill($("#eta-fields"), ETA_FIELDS.map(([k, step]) => h("label.field", h("span", k),
    h("input", { type: "number", name: k, step: String(step), min: "0", value: String(eta[k] ?? "") }))));
  const eff = eta.effective_s || {};
  $("#eta-note").textContent = Object.keys(eff).length
    ? t("admin.effective", { list: Object.entries(eff).map(([k, v]) => `${k} ${Math.round(v)} s (${(eta.samples || {})[k] ?? 0})`).join(" · ") }) : "";
}

async function saveEta(ev) {
  ev.preventDefault();
  const body = {};
  for (const [k] of ETA_FIELDS) {
    const v = ev.target.elements[k].value;
    if (v !== "") body[k] = k === "eta_ema_min_samples" ? parseInt(v, 10) : Number(v);
  }
  try { await adm("/api/config/eta", { method: "PUT", body }); notify("ok", t("admin.saved"), { timeoutMs: 3000 }); loadEta(); } catch (e) { if (!onAuthError(e)) notify("error", e.message, { timeoutMs: 8000 }); }
}

async function loadVoices() {
  const voices = asList(await api("/api/assets/ref_audio"), "ref_audios", "voices");
  fill($("#voices"), voices.length ? voices.map((v) => h("tr",
    h("td", voiceName(v), v.builtin ? h("span.badge", { style: "margin-left:6px" }, t("admin.builtin")) : null),
    h("td", v.duration_s != null ? `${Number(v.duration_s).toFixed(1)} s` : "—"),
    h("td.faint", v.created_at ? fmtTime(v.created_at) : "—"),
    h("td", h("audio", { controls: true, preload: "none", src: voiceAudioUrl(voiceId(v)), style: "height:32px" })),
    h("td", v.builtin ? null : h("button.btn.small", { type: "button", onclick: () => deleteVoice(voiceId(v), voiceName(v)) }, t("admin.delete")))))
    : h("tr", h("td.empty", { colSpan: 5 }, t("admin.no_voices"))));
}

async function deleteVoice(id, name) {
  if (!confirm(t("admin.confirm_delete", { name }))) return;
  try { await adm(`/api/assets/ref_audio/${encodeURIComponent(id)}`, { method: "DELETE" }); } catch (e) { if (!onAuthError(e)) notify("error", e.message, { timeoutMs: 6000 }); }
  loadVoices();
}

async function submitVoice(ev) {
  ev.preventDefault();
  const f = $("#voice-file").files[0];
  if (!f) { notify("warn", t("admin.pick_file"), { timeoutMs: 4000 }); return; }
  try {
    await uploadVoice(f, $("#voice-name").value.trim(), { admin: true });
    ev.target.reset();
    $("#voice-file-name").textContent = "";
    notify("ok", t("admin.uploaded"), { timeoutMs: 3000 });
  } catch (e) { if (!onAuthError(e)) notify("error", t("voice.upload_failed", { error: e.message }), { timeoutMs: 8000 }); }
  loadVoices();
}

function showLogin(message) {
  clearInterval(timer);
  if (keys) keys.hideSecret();
  $("#dash").hidden = true;
  $("#login").hidden = false;
  if (message) notify("error", message, { id: "login", timeoutMs: 6000 });
  $("#token").focus();
}

async function showDash() {
  try {
    await loadApps();
  } catch (e) {
    if (!onAuthError(e)) notify("error", e.message, { id: "dash" });
    return;
  }
  clearNotice("login");
  $("#login").hidden = true;
  $("#dash").hidden = false;
  loadEta().catch((e) => notify("error", e.message, { timeoutMs: 6000 }));
  loadVoices().catch((e) => notify("error", e.message, { timeoutMs: 6000 }));
  keys.load().catch((e) => { if (!onAuthError(e)) notify("error", e.message, { timeoutMs: 6000 }); });
  refreshLive();
  clearInterval(timer);
  timer = setInterval(refreshLive, 3000);
}

async function main() {
  await initPage("admin");
  $("#login-form").onsubmit = (ev) => { ev.preventDefault(); setAdminToken($("#token").value.trim()); showDash(); };
  $("#logout").onclick = () => { setAdminToken(""); showLogin(); };
  $("#eta-form").onsubmit = saveEta;
  $("#voice-form").onsubmit = submitVoice;
  keys = bindKeys(adm, onAuthError);
  $("#voice-file").onchange = () => { const f = $("#voice-file").files[0]; $("#voice-file-name").textContent = f ? f.name : ""; };
  if (adminToken()) showDash(); else showLogin();
  markReady();
}

main();
