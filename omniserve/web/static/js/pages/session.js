/** Session viewer /s/<id>: metadata, timeline with per-item audio, stereo replay, download, comments. */
import { initPage, notify, markReady } from "../layout.js";
import { api, asList } from "../api.js";
import { h, fill, $, fmtTime } from "../dom.js";
import { t } from "../i18n.js";
import { timelineRows } from "../timeline-view.js";

const id = decodeURIComponent(location.pathname.replace(/^\/s\//, "").replace(/\/$/, "")) || new URLSearchParams(location.search).get("id") || "";
const base = `/api/sessions/${encodeURIComponent(id)}`;
/** URL of a recorded file; a media fragment (#t=a,b) is kept as is. */
function assetUrl(p) {
  const [path, frag] = String(p).split("#");
  return `${base}/assets/${path.split("/").map(encodeURIComponent).join("/")}${frag ? `#${frag}` : ""}`;
}

const META_KEYS = [
  ["type", "sv.type"], ["status", "sv.status"], ["started_at", "sv.started"], ["duration_s", "sv.duration"],
  ["end_reason", "sv.end_reason"], ["backend", "sv.backend"], ["worker_index", "sv.worker"], ["voice", "voice.label"],
  ["turns", "sv.turns"], ["system_prompt", "settings.system_prompt"],
];

function renderMeta(meta) {
  const rows = [];
  for (const [k, label] of META_KEYS) {
    let v = meta[k];
    if (v === null || v === undefined || v === "") continue;
    if (k === "started_at") v = fmtTime(v);
    if (k === "duration_s") v = `${Number(v).toFixed(1)} s`;
    rows.push(h("dt", t(label)), h("dd", String(v)));
  }
  fill($("#meta"), rows.length ? rows : h("dd.faint", t("sv.no_meta")));
  const files = Array.isArray(meta.files) ? meta.files : [];
  if (files.includes("replay.wav")) {
    $("#replay").src = assetUrl("replay.wav");
    $("#replay-card").hidden = false;
  }
}

async function loadComments() {
  try {
    const list = asList(await api(`${base}/comment`), "comments");
    fill($("#comments"), list.map((c) => h("div.turn",
      h("div.who", `${c.rating ? "★".repeat(Number(c.rating)) + " · " : ""}${c.created_at ? fmtTime(c.created_at) : ""}`),
      h("div.text", String(c.text ?? "")))));
  } catch { /* none yet */ }
}

async function main() {
  await initPage("session");
  $("#sid").textContent = id;
  $("#download").href = `${base}/download`;
  try {
    renderMeta(await api(base));
  } catch (e) {
    notify("error", e.status === 404 ? t("sv.not_found") : e.message, { id: "meta" });
    fill($("#timeline"), h("div.empty", t("sv.no_timeline")));
    markReady();
    return;
  }
  try {
    const rec = await api(`${base}/recording`);
    const rows = timelineRows(asList(rec, "timeline", "events"), assetUrl, { aiRate: rec?.sample_rates?.ai || 24000 });
    fill($("#timeline"), rows.length ? rows : h("div.empty", t("sv.no_timeline")));
  } catch (e) {
    fill($("#timeline"), h("div.empty", e.status === 404 ? t("sv.no_timeline") : e.message));
  }
  loadComments();
  markReady();
  $("#comment-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const text = $("#comment").value.trim();
    if (!text) return;
    const body = { text };
    if ($("#rating").value) body.rating = Number($("#rating").value);
    try {
      await api(`${base}/comment`, { method: "POST", body });
      ev.target.reset();
      notify("ok", t("sv.comment_saved"), { timeoutMs: 3000 });
      loadComments();
    } catch (e) { notify("error", e.message, { timeoutMs: 6000 }); }
  };
}

main();
