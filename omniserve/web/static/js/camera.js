/**
 * Camera for the omni mode: preview in a <video>, switch between cameras, and grab JPEG frames
 * (base64, no data: prefix) scaled to at most maxWidth for each audio chunk.
 */
import { listDevices } from "./devices.js";
import { saveJSON, loadJSON } from "./settings.js";

export class CameraDeniedError extends Error {}

export class Camera {
  constructor(video, { maxWidth = 640, quality = 0.7 } = {}) {
    this.video = video;
    this.maxWidth = maxWidth;
    this.quality = quality;
    this.stream = null;
    this.deviceId = loadJSON("device.camera", "");
    this.canvas = document.createElement("canvas");
    this.frames = 0;
  }

  async start(deviceId = this.deviceId) {
    this.stopTracks();
    const video = { width: { ideal: 640 }, height: { ideal: 480 } };
    if (deviceId) video.deviceId = { exact: deviceId };
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
    } catch (e) {
      if (deviceId && e && e.name === "OverconstrainedError") return this.start("");
      throw new CameraDeniedError(e && e.message ? e.message : String(e));
    }
    this.deviceId = deviceId;
    this.video.srcObject = this.stream;
    this.video.muted = true;
    this.video.playsInline = true;
    await this.video.play().catch(() => {});
  }

  /** Moves to the next camera in the device list; returns its label. */
  async next() {
    const cams = await listDevices("camera");
    if (cams.length < 2) return null;
    const cur = this.stream ? this.stream.getVideoTracks()[0].getSettings().deviceId : this.deviceId;
    const i = cams.findIndex((c) => c.deviceId === cur);
    const nxt = cams[(i + 1) % cams.length];
    saveJSON("device.camera", nxt.deviceId);
    await this.start(nxt.deviceId);
    return nxt.label;
  }

  /** One JPEG frame as base64, or null when the camera has no picture yet. */
  grab() {
    const v = this.video;
    if (!this.stream || !v.videoWidth) return null;
    const scale = Math.min(1, this.maxWidth / v.videoWidth);
    this.canvas.width = Math.round(v.videoWidth * scale);
    this.canvas.height = Math.round(v.videoHeight * scale);
    this.canvas.getContext("2d").drawImage(v, 0, 0, this.canvas.width, this.canvas.height);
    this.frames += 1;
    return this.canvas.toDataURL("image/jpeg", this.quality).replace(/^data:[^,]*,/, "");
  }

  stopTracks() {
    if (this.stream) for (const tr of this.stream.getTracks()) tr.stop();
    this.stream = null;
  }

  stop() {
    this.stopTracks();
    this.video.srcObject = null;
  }
}
