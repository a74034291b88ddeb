/**
 * Microphone capture: getUserMedia → AudioWorklet (audio-worklet.js) → 16 kHz mono float32,
 * cut into protocol-sized chunks. One class for every page (push-to-talk, half-duplex, duplex).
 */
import { Chunker } from "./chunker.js";

export const MIC_RATE = 16000;

export class MicDeniedError extends Error {}

export class MicCapture {
  /**
   * @param {object} o
   * @param {number} o.chunkSamples samples per chunk delivered to onChunk
   * @param {(pcm: Float32Array) => void} [o.onChunk]
   * @param {(rms: number) => void} [o.onLevel]
   * @param {string} [o.deviceId]
   */
  constructor({ chunkSamples, onChunk, onLevel, deviceId }) {
    this.chunker = new Chunker(chunkSamples);
    this.onChunk = onChunk || (() => {});
    this.onLevel = onLevel || (() => {});
    this.deviceId = deviceId || "";
    this.ctx = null;
    this.stream = null;
    this.node = null;
  }

  async start() {
    // Echo cancellation keeps the assistant's voice out of the microphone (full duplex); the
    // browser's noise suppression and gain control are off: they smear speech that the server's
    // VAD and Whisper would otherwise hear clearly.
    const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false };
    if (this.deviceId) audio.deviceId = { exact: this.deviceId };
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio });
    } catch (e) {
      if (this.deviceId && e && e.name === "OverconstrainedError") {
        this.deviceId = "";
        return this.start();  // the saved device is gone: fall back to the default one
      }
      throw new MicDeniedError(e && e.message ? e.message : String(e));
    }
    let src = null;
    try {
      this.ctx = new AudioContext({ sampleRate: MIC_RATE });
      src = this.ctx.createMediaStreamSource(this.stream);
    } catch {
      // Some browsers (Firefox) cannot connect a 48 kHz stream to a 16 kHz context:
      // run at the device rate and let the worklet resample.
      if (this.ctx) this.ctx.close().catch(() => {});
      this.ctx = new AudioContext();
      src = this.ctx.createMediaStreamSource(this.stream);
    }
    await this.ctx.audioWorklet.addModule(new URL("./audio-worklet.js", import.meta.url));
    this.node = new AudioWorkletNode(this.ctx, "omniserve-capture", {
      numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, processorOptions: { targetRate: MIC_RATE },
    });
    this.node.port.onmessage = (e) => {
      if (e.data.level !== undefined) this.onLevel(e.data.level);
      if (e.data.pcm) for (const c of this.chunker.push(e.data.pcm)) this.onChunk(c);
    };
    src.connect(this.node);
    if (this.ctx.state === "suspended") await this.ctx.resume();
  }

  /** Stops the microphone; returns the partial last chunk (push-to-talk keeps it). */
  stop() {
    if (this.node) { this.node.port.postMessage("stop"); this.node.disconnect(); this.node = null; }
    if (this.stream) { for (const t of this.stream.getTracks()) t.stop(); this.stream = null; }
    if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
    return this.chunker.flush();
  }
}

/** Decodes any audio file (WAV/MP3/…) to 16 kHz mono float32, e.g. a reference voice. */
export async function decodeToMono16k(arrayBuffer) {
  const probe = new OfflineAudioContext(1, 1, MIC_RATE);
  const buf = await probe.decodeAudioData(arrayBuffer);
  if (buf.numberOfChannels === 1) return buf.getChannelData(0).slice();
  const out = new Float32Array(buf.length);
  for (let c = 0; c < buf.numberOfChannels; c++) {
    const d = buf.getChannelData(c);
    for (let i = 0; i < d.length; i++) out[i] += d[i] / buf.numberOfChannels;
  }
  return out;
}
