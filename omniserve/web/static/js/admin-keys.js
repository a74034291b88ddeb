/**
 * The admin page's "API keys" card: list (name, id, created, last used), create (the secret is
 * shown once, with a copy button) and revoke, through /api/admin/keys with the admin token. Whether
 * the gateway requires keys comes from /api/frontend_defaults (`require_keys`). The secret lives in
 * the read-only field until "Done" (or the next key) clears it; it is never stored.
 */
import { notify } from "./layout.js";
import { h, fill, $, fmtTime } from "./dom.js";
import { t } from "./i18n.js";
import { frontendDefaults } from "./presets.js";

/** `adm(path, opts)`: an admin API call; `onAuthError(e)`: true when it handled a refused token. */
export function bindKeys(adm, onAuthError) {
  const fail = (e) => { if (!onAuthError(e)) notify("error", e.message, { timeoutMs: 8000 }); };

  async function load() {
    const keys = await adm("/api/admin/keys");
    const list = Array.isArray(keys) ? keys : [];
    fill($("#keys"), list.length ? list.map((k) => h("tr", { dataset: { keyId: String(k.id) } },
      h("td", h("strong", String(k.name ?? ""))),
      h("td.mono", String(k.id ?? "")),
      h("td.faint", k.created_at ? fmtTime(k.created_at) : "—"),
      h("td.faint", k.last_used_at ? fmtTime(k.last_used_at) : t("admin.key_never")),
      h("td", { style: "text-align:right" }, h("button.btn.small", {
        type: "button", dataset: { testid: "key-revoke" }, onclick: () => revoke(k),
      }, t("admin.key_revoke"))))) : h("tr", h("td.empty", { colSpan: 5 }, t("admin.no_keys"))));
    const d = await frontendDefaults();
    $("#keys-mode").textContent = t(d && d.require_keys === true ? "admin.keys_required" : "admin.keys_optional");
  }

  function showSecret(k) {
    $("#key-secret-title").textContent = t("admin.key_secret_title", { name: String(k.name ?? "") });
    $("#key-secret-value").value = String(k.key ?? "");
    $("#key-secret").hidden = false;
    $("#key-secret-value").select();
  }

  function hideSecret() {
    $("#key-secret-value").value = "";
    $("#key-secret").hidden = true;
  }

  async function copy() {
    const field = $("#key-secret-value");
    try {
      await navigator.clipboard.writeText(field.value);       // secure contexts only (HTTPS, localhost)
      notify("ok", t("admin.key_copied"), { timeoutMs: 3000 });
    } catch {
      field.focus();
      field.select();
      notify("info", t("admin.key_copy_manual"), { timeoutMs: 6000 });
    }
  }

  async function create(ev) {
    ev.preventDefault();
    const name = $("#key-name").value.trim();
    if (!name) return;
    try {
      const k = await adm("/api/admin/keys", { method: "POST", body: { name } });
      ev.target.reset();
      showSecret(k);
    } catch (e) { fail(e); }
    load().catch(fail);
  }

  async function revoke(k) {
    const name = String(k.name ?? k.id);
    if (!confirm(t("admin.key_confirm_revoke", { name }))) return;
    try {
      await adm(`/api/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
      notify("ok", t("admin.key_revoked", { name }), { timeoutMs: 3000 });
    } catch (e) { fail(e); }
    load().catch(fail);
  }

  $("#key-form").onsubmit = create;
  $("#key-copy").onclick = copy;
  $("#key-secret-done").onclick = hideSecret;
  return { load, hideSecret };
}
