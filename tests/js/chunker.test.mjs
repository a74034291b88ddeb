// node:test for the fixed-size chunker (protocol chunk sizes: 8000 samples half-duplex, chunk_ms*16 duplex).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Chunker } from "../../omniserve/web/static/js/chunker.js";

test("cuts arbitrary blocks into exact chunks in order", () => {
  const c = new Chunker(8000);
  const out = [];
  let v = 0;
  for (const n of [320, 320, 7000, 5000, 3360, 1]) {
    const block = new Float32Array(n).map(() => v++);
    out.push(...c.push(block));
  }
  assert.equal(out.length, 2);
  for (const ch of out) assert.equal(ch.length, 8000);
  assert.equal(out[0][0], 0);
  assert.equal(out[1][0], 8000);
  assert.equal(out[1][7999], 15999);
  const rest = c.flush();
  assert.equal(rest.length, 1);
  assert.equal(rest[0], 16000);
  assert.equal(c.flush().length, 0);
});

test("chunks are independent copies", () => {
  const c = new Chunker(2);
  const [a] = c.push(Float32Array.from([1, 2]));
  const [b] = c.push(Float32Array.from([3, 4]));
  assert.deepEqual([...a], [1, 2]);
  assert.deepEqual([...b], [3, 4]);
});

test("rejects a non-positive size", () => {
  assert.throws(() => new Chunker(0));
});
