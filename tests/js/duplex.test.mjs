// node:test for full-duplex metrics and barge-in decisions (static/js/duplex-metrics.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuplexMetrics, BargeIn, Trace } from "../../omniserve/web/static/js/duplex-metrics.js";

const listen = (t, extra = {}) => ({ is_listen: true, text: "", audio_data: "", current_time: t, cost_all_ms: 300, kv_cache_length: 100 + t, ...extra });
const speak = (t, extra = {}) => ({ is_listen: false, text: "hi", audio_data: "x", current_time: t, cost_all_ms: 800, n_tokens: 5, kv_cache_length: 100 + t, ...extra });

test("cost, pace and kv from results", () => {
  const m = new DuplexMetrics(1000);
  m.onUnit(listen(0), 0);
  m.onUnit(speak(1, { cost_all_ms: 1500 }), 1000);
  m.onUnit(speak(2), 2000);
  assert.equal(m.units, 3);
  assert.equal(m.speakUnits, 2);
  assert.equal(m.overruns, 1);
  assert.equal(m.lastCostMs, 800);
  assert.equal(m.kv, 102);
  assert.equal(m.tokens, 10);
  assert.ok(Math.abs(m.paceRatio - 2 / 3) < 1e-9);
  assert.equal(m.replies, 1);
});

test("time to first speech counts from the end of the user's speech", () => {
  const m = new DuplexMetrics(1000, { speechRms: 0.02, silenceMs: 400 });
  m.onLevel(0.2, 1000);
  m.onLevel(0.2, 2000);         // last loud frame
  m.onLevel(0.001, 2100);
  m.onLevel(0.001, 2500);       // 500 ms quiet: speech ended at 2000
  m.onUnit(listen(0), 2600);
  m.onUnit(speak(1), 3200);
  assert.equal(m.ttfsMs, 1200);
  m.onUnit(speak(2), 4200);     // same reply: unchanged
  assert.equal(m.ttfsMs, 1200);
  assert.equal(m.avgTtfsMs, 1200);
});

test("barge-in: listening again mid-reply drops audio, a finished reply does not", () => {
  const b = new BargeIn();
  assert.equal(b.onResult(listen(0)), false);
  assert.equal(b.onResult(speak(1)), false);
  assert.equal(b.onResult(listen(2)), true);            // cut off
  assert.equal(b.onResult(speak(3)), false);
  assert.equal(b.onResult(speak(4, { end_of_turn: true })), false);
  assert.equal(b.onResult(listen(5)), false);           // natural end: let the tail play
});

test("trace keeps the latest levels and events, bounded", () => {
  const tr = new Trace(3);
  for (let i = 0; i < 5; i++) tr.level(i * 50, i / 10);
  tr.event(260, "duck");
  assert.deepEqual(tr.levels.map(([t]) => t), [100, 150, 200]);
  assert.deepEqual(tr.events, [[260, "duck", ""]]);
});
