// node:test for the PCM codecs shared by every page (static/js/pcm.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { float32ToBase64, base64ToFloat32, concatFloat32, rms, levelFromRms, float32ToWav, resampleLinear } from "../../omniserve/web/static/js/pcm.js";

test("float32 base64 round trip is exact and little-endian", () => {
  const pcm = Float32Array.from([0, 1, -1, 0.5, -0.25, 1e-7, 3.4e38]);
  const b64 = float32ToBase64(pcm);
  assert.deepEqual(base64ToFloat32(b64), pcm);
  // 1.0f LE = 00 00 80 3f
  assert.deepEqual([...Buffer.from(float32ToBase64(Float32Array.from([1])), "base64")], [0, 0, 0x80, 0x3f]);
});

test("matches Python's numpy '<f4' encoding of the same samples", () => {
  // base64.b64encode(np.array([0.25, -2.0], '<f4').tobytes())
  assert.equal(float32ToBase64(Float32Array.from([0.25, -2])), "AACAPgAAAMA=");
});

test("long buffers do not overflow the call stack", () => {
  const pcm = new Float32Array(16000 * 30).map((_, i) => Math.sin(i / 10));
  assert.equal(base64ToFloat32(float32ToBase64(pcm)).length, pcm.length);
});

test("empty and malformed input", () => {
  assert.equal(base64ToFloat32("").length, 0);
  assert.throws(() => base64ToFloat32(Buffer.from([1, 2, 3]).toString("base64")), /multiple of 4/);
});

test("concat, rms and level", () => {
  const c = concatFloat32([Float32Array.from([1, 2]), new Float32Array(0), Float32Array.from([3])]);
  assert.deepEqual([...c], [1, 2, 3]);
  assert.equal(rms(Float32Array.from([0.5, -0.5])), 0.5);
  assert.equal(rms(new Float32Array(0)), 0);
  assert.equal(levelFromRms(1), 1);
  assert.equal(levelFromRms(0.001), 0);
  assert.ok(levelFromRms(0.1) > 0.6 && levelFromRms(0.1) < 0.7);
});

test("WAV header describes 16-bit mono PCM", () => {
  const wav = float32ToWav(Float32Array.from([0, 1, -1]), 24000);
  const v = new DataView(wav.buffer);
  assert.equal(String.fromCharCode(...wav.slice(0, 4)), "RIFF");
  assert.equal(v.getUint32(24, true), 24000);
  assert.equal(v.getUint16(34, true), 16);
  assert.equal(v.getUint32(40, true), 6);
  assert.equal(v.getInt16(46, true), 32767);
  assert.equal(v.getInt16(48, true), -32768);
});

test("linear resampling keeps duration", () => {
  const x = new Float32Array(48000).fill(0.5);
  const y = resampleLinear(x, 48000, 16000);
  assert.equal(y.length, 16000);
  assert.ok(Math.abs(y[100] - 0.5) < 1e-6);
});
