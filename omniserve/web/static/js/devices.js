/**
 * Microphone / speaker / camera choice. Fills <select>s from enumerateDevices (labels appear once
 * a permission was granted), remembers the choice, and hides the speaker choice where the browser
 * cannot route audio (no AudioContext.setSinkId).
 */
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { loadJSON, saveJSON } from "./settings.js";

const KIND = { mic: "audioinput", speaker: "audiooutput", camera: "videoinput" };

export function savedDevice(role) { return loadJSON(`device.${role}`, ""); }

export async function listDevices(role) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
  const all = await navigator.mediaDevices.enumerateDevices();
  return all.filter((d) => d.kind === KIND[role]);
}

/** Binds a <select> to a device role; `onChange(id)` runs when the user picks another one. */
export async function bindDeviceSelect(select, role, onChange) {
  if (!select) return;
  if (role === "speaker" && !("setSinkId" in AudioContext.prototype)) {
    const wrap = select.closest("label") || select;
    wrap.hidden = true;
    return;
  }
  const refresh = async () => {
    const devs = await listDevices(role).catch(() => []);
    const saved = savedDevice(role);
    fill(select, h("option", { value: "" }, t("device.default")),
      devs.filter((d) => d.deviceId && d.deviceId !== "default").map((d, i) =>
        h("option", { value: d.deviceId, selected: d.deviceId === saved }, d.label || `${t(`device.${role}`)} ${i + 1}`)));
  };
  select.onchange = () => { saveJSON(`device.${role}`, select.value); if (onChange) onChange(select.value); };
  await refresh();
  if (navigator.mediaDevices) navigator.mediaDevices.addEventListener("devicechange", refresh);
  select.refreshDevices = refresh;
}
