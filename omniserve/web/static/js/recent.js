/** Recently recorded sessions this browser was given (recording_session_id), newest first. */
import { loadJSON, saveJSON } from "./settings.js";

const KEY = "recentSessions";
const MAX = 30;

export function recentSessions() {
  const v = loadJSON(KEY, []);
  return Array.isArray(v) ? v.filter((x) => x && typeof x.id === "string") : [];
}

export function rememberSession(id, mode) {
  if (!id || typeof id !== "string") return;
  const list = recentSessions().filter((x) => x.id !== id);
  list.unshift({ id, mode, at: Date.now() });
  saveJSON(KEY, list.slice(0, MAX));
}

export function forgetSessions() { saveJSON(KEY, []); }
