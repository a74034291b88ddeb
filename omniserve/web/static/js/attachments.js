/**
 * Composer attachments for turn-based chat: images and videos (file picker, drag-drop, paste)
 * and recorded voice clips. Each becomes a protocol content item; chips show what is attached.
 */
import { h, fill, fileToBase64 } from "./dom.js";
import { t } from "./i18n.js";
import { icon } from "./icons.js";
import { float32ToBase64, float32ToWav } from "./pcm.js";

const MAX_BYTES = 12 * 1024 * 1024;

export class Attachments {
  constructor(box, { onError } = {}) {
    this.box = box;
    this.items = [];
    this.onError = onError || (() => {});
  }

  async addFile(file) {
    const kind = file.type.startsWith("image/") ? "image" : file.type.startsWith("video/") ? "video" : null;
    if (!kind) { this.onError(t("chat.bad_file", { name: file.name })); return; }
    if (file.size > MAX_BYTES) { this.onError(t("chat.too_big", { name: file.name, mb: MAX_BYTES >> 20 })); return; }
    const data = await fileToBase64(file);
    this.items.push({ kind, data, name: file.name, url: URL.createObjectURL(file) });
    this.render();
  }

  addAudio(pcm, sampleRate = 16000) {
    if (pcm.length < sampleRate * 0.2) { this.onError(t("chat.too_short")); return; }
    const url = URL.createObjectURL(new Blob([float32ToWav(pcm, sampleRate)], { type: "audio/wav" }));
    this.items.push({ kind: "audio", data: float32ToBase64(pcm), seconds: pcm.length / sampleRate, url });
    this.render();
  }

  /** Wire content items (text first, then media) — and clears the composer's attachments. */
  take(text) {
    const items = [];
    for (const a of this.items) {
      if (a.kind === "image") items.push({ type: "image", data: a.data });
      else if (a.kind === "video") items.push({ type: "video", data: a.data, stack_frames: 1 });
      else items.push({ type: "audio", data: a.data, sample_rate: 16000 });
    }
    if (text) items.unshift({ type: "text", text });
    const shown = this.items;
    this.items = [];
    this.render();
    return { items, shown };
  }

  get count() { return this.items.length; }

  render() {
    fill(this.box, this.items.map((a, i) => h("span.chip", { dataset: { kind: a.kind } },
      a.kind === "image" ? h("img", { src: a.url, alt: "" }) : icon(a.kind === "video" ? "video" : "mic", 15),
      a.kind === "audio" ? t("chat.voice_clip", { s: a.seconds.toFixed(1) }) : a.name,
      h("button", { type: "button", "aria-label": t("chat.remove"), onclick: () => { this.items.splice(i, 1); this.render(); } }, "×"))));
  }

  /** Drag-drop and paste onto the composer. */
  bindDrop(zone) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("drag"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("drag"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("drag");
      for (const f of e.dataTransfer.files) this.addFile(f);
    });
    zone.addEventListener("paste", (e) => {
      for (const it of e.clipboardData.items) {
        if (it.kind === "file") { const f = it.getAsFile(); if (f) this.addFile(f); }
      }
    });
  }
}
