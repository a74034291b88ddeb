/**
 * API keys on the session pages. When the gateway requires keys (`require_keys` in
 * /api/frontend_defaults), the page shows an "API key" field; the key stays in this module's memory
 * (never in storage, a cookie or a URL) and is forgotten with the page. Before each WebSocket the
 * page trades it for a short-lived token (POST /v1/realtime/client_secrets) and connects with
 * ?token=<token> — a browser cannot set an Authorization header on a WebSocket. Without
 * require_keys nothing here does anything.
 */
import { h, $ } from "./dom.js";
import { t } from "./i18n.js";
import { notify } from "./layout.js";
import { frontendDefaults } from "./presets.js";

let apiKey = "";
let input = null;

export async function keysRequired() {
  const d = await frontendDefaults();
  return Boolean(d && d.require_keys === true);
}

/** Shows the API-key field under the page's title when keys are required (once per page). */
export async function mountKeyField() {
  if (input || !(await keysRequired())) return;
  input = h("input", {
    type: "password", autocomplete: "off", spellcheck: "false", placeholder: "osk_…", dataset: { testid: "api-key" },
    oninput: () => { apiKey = input.value.trim(); },
  });
  const box = h("section.card.key-bar", { dataset: { testid: "key-bar" } },
    h("label.field", h("span", { dataset: { i18n: "access.key" } }, t("access.key")), input),
    h("small.faint", { dataset: { i18n: "access.hint" } }, t("access.hint")));
  const anchor = $("main > .page-head") || $("#notices");
  if (anchor) anchor.after(box); else document.querySelector("main")?.prepend(box);
}

/** True when a session may start; false (after pointing at the field) when a key is required and
 * none was entered — so a page can stop before it opens the microphone or clears the input. */
export async function keyReady() {
  if (apiKey || !(await keysRequired())) return true;
  await mountKeyField();
  notify("warn", t("access.need_key"), { id: "api-key", timeoutMs: 6000 });
  if (input) input.focus();
  return false;
}

export class AccessError extends Error {}

/**
 * The ephemeral token for one WebSocket, or null when keys are not required. Throws AccessError
 * (with a message for the page) when no key was entered or the gateway refused it.
 */
export async function socketToken() {
  if (!(await keysRequired())) return null;
  if (!apiKey) {
    await mountKeyField();
    if (input) input.focus();
    throw new AccessError(t("access.need_key"));
  }
  let res;
  try {
    res = await fetch("/v1/realtime/client_secrets", {
      method: "POST", headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" }, body: "{}",
    });
  } catch {
    throw new AccessError(t("err.connect"));
  }
  if (res.status === 401) { if (input) input.focus(); throw new AccessError(t("access.bad_key")); }
  if (res.status === 429) throw new AccessError(t("access.rate_limited", { s: res.headers.get("retry-after") || "60" }));
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok || !body || typeof body.value !== "string") {
    throw new AccessError(t("access.failed", { status: res.status }));
  }
  return body.value;
}
