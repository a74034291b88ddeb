// node:test for ducking the assistant's voice under the user's (static/js/duck.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Ducker, DUCK } from "../../omniserve/web/static/js/duck.js";

/** Feeds levels every 50 ms from t0; returns [[t, action]] for the non-null actions. */
function run(d, levels, audible = true, t0 = 0) {
  const out = [];
  levels.forEach((rms, i) => {
    const a = d.onLevel(rms, t0 + i * 50, typeof audible === "function" ? audible(i) : audible);
    if (a) out.push([t0 + i * 50, a]);
  });
  return out;
}

const LOUD = 0.2, QUIET = 0.001;

test("the voice ducks on the second loud reading and comes back after releaseMs of quiet", () => {
  const d = new Ducker();
  const levels = [QUIET, QUIET, LOUD, LOUD, LOUD, QUIET, ...Array(12).fill(QUIET)];
  const acts = run(d, levels);
  assert.deepEqual(acts[0], [150, "duck"]);                  // loud from 100 ms: ducked 50 ms later
  assert.equal(acts[1][1], "restore");
  assert.ok(acts[1][0] - 200 >= DUCK.releaseMs && acts[1][0] - 200 < DUCK.releaseMs + 50, acts);  // last loud at 200
  assert.equal(acts.length, 2);
});

test("a single loud reading (a click) does not duck", () => {
  assert.deepEqual(run(new Ducker(), [QUIET, LOUD, QUIET, QUIET, LOUD, QUIET]), []);
});

test("nothing ducks while the assistant is silent, and a ducked voice is restored when it stops", () => {
  assert.deepEqual(run(new Ducker(), Array(10).fill(LOUD), false), []);
  const d = new Ducker();
  const acts = run(d, Array(10).fill(LOUD), (i) => i < 5);     // the reply was cut (or ended) at 250 ms
  assert.deepEqual(acts, [[50, "duck"], [250, "restore"]]);
  assert.equal(d.ducked, false);
});

test("talking on keeps it ducked; the levels below the threshold count as quiet", () => {
  const d = new Ducker({ level: 0.05, releaseMs: 300 });
  const acts = run(d, [0.1, 0.1, 0.04, 0.1, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04]);
  assert.deepEqual(acts.map(([, a]) => a), ["duck", "restore"]);
  assert.equal(acts[1][0], 150 + 300);
});
