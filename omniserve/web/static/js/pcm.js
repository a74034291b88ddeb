/**
 * PCM codecs shared by every page: the wire carries mono float32 little-endian PCM as base64
 * (16 kHz microphone, 24 kHz speech). Pure functions, no DOM: also run under node:test.
 */

/** Bytes → base64 in blocks, so long recordings do not overflow the argument stack. */
export function bytesToBase64(bytes) {
  let bin = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
  }
  return btoa(bin);
}

export function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Float32Array → base64 float32 LE (explicit little-endian, whatever the host order). */
export function float32ToBase64(pcm) {
  const view = new DataView(new ArrayBuffer(pcm.length * 4));
  for (let i = 0; i < pcm.length; i++) view.setFloat32(i * 4, pcm[i], true);
  return bytesToBase64(new Uint8Array(view.buffer));
}

/** base64 float32 LE → Float32Array. A length that is not a multiple of 4 is an error. */
export function base64ToFloat32(b64) {
  if (!b64) return new Float32Array(0);
  const bytes = base64ToBytes(b64);
  if (bytes.length % 4 !== 0) throw new Error(`PCM byte length ${bytes.length} is not a multiple of 4`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

export function concatFloat32(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Float32Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Root mean square level of a block (0..1). */
export function rms(pcm) {
  if (!pcm.length) return 0;
  let s = 0;
  for (let i = 0; i < pcm.length; i++) s += pcm[i] * pcm[i];
  return Math.sqrt(s / pcm.length);
}

/** A level in 0..1 for meters: RMS on a dB scale from -60 dB to 0 dB. */
export function levelFromRms(value) {
  if (value <= 0) return 0;
  const db = 20 * Math.log10(value);
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

/** Float32 PCM → 16-bit PCM WAV bytes (for <audio> previews and downloads). */
export function float32ToWav(pcm, sampleRate) {
  const buf = new ArrayBuffer(44 + pcm.length * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + pcm.length * 2, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, sampleRate, true); v.setUint32(28, sampleRate * 2, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, pcm.length * 2, true);
  for (let i = 0; i < pcm.length; i++) {
    const s = Math.max(-1, Math.min(1, pcm[i]));
    v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Uint8Array(buf);
}

/** Linear-interpolation resampler (the worklet's fallback when the context is not at 16 kHz). */
export function resampleLinear(pcm, from, to) {
  if (from === to || !pcm.length) return pcm;
  const n = Math.max(1, Math.round(pcm.length * to / from));
  const out = new Float32Array(n);
  const step = from / to;
  for (let i = 0; i < n; i++) {
    const x = i * step;
    const i0 = Math.floor(x);
    const i1 = Math.min(i0 + 1, pcm.length - 1);
    const f = x - i0;
    out[i] = pcm[Math.min(i0, pcm.length - 1)] * (1 - f) + pcm[i1] * f;
  }
  return out;
}
