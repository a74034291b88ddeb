/**
 * REST helpers for the gateway API. Errors become ApiError with the server's message (FastAPI's
 * {"detail": …} or our {"error": …}), so pages can show it as is.
 */
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const ADMIN_KEY = "omniserve.adminToken";

export function adminToken() { return sessionStorage.getItem(ADMIN_KEY) || ""; }
export function setAdminToken(t) { if (t) sessionStorage.setItem(ADMIN_KEY, t); else sessionStorage.removeItem(ADMIN_KEY); }

async function errorText(res) {
  try {
    const j = await res.json();
    const d = j.detail ?? j.error ?? j.message;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((x) => x.msg || JSON.stringify(x)).join("; ");
    return JSON.stringify(j);
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

/** fetch + JSON with errors thrown; `admin: true` adds the Bearer token. */
export async function api(path, { method = "GET", body, admin = false, form } = {}) {
  const headers = {};
  if (admin && adminToken()) headers.Authorization = `Bearer ${adminToken()}`;
  let payload;
  if (form) payload = form;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(path, { method, headers, body: payload });
  if (!res.ok) throw new ApiError(res.status, await errorText(res));
  const type = res.headers.get("content-type") || "";
  return type.includes("application/json") ? res.json() : res.text();
}

/** Lists in responses come bare or wrapped ({items|apps|voices|presets: [...]}). */
export function asList(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of [...keys, "items", "data"]) if (data && Array.isArray(data[k])) return data[k];
  return [];
}
