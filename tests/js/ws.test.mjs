// node:test for the WebSocket client's message routing (static/js/ws.js): queue messages, errors,
// "Queue full" (also as close code 1013), refused handshakes and dropped connections.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceSocket } from "../../omniserve/web/static/js/ws.js";

function make() {
  const log = { queue: [], msgs: [], errors: [], closes: [] };
  const s = new ServiceSocket("/ws/chat", {
    onQueue: (q) => log.queue.push(q), onMessage: (m) => log.msgs.push(m),
    onError: (text, fatal) => log.errors.push([text, fatal]), onClose: (c) => log.closes.push(c),
  });
  return { s, log };
}

test("queue messages go to onQueue, others to onMessage, junk is ignored", () => {
  const { s, log } = make();
  s.dispatch(JSON.stringify({ type: "queued", position: 2, estimated_wait_s: 30, ticket_id: "t", queue_length: 3 }));
  s.dispatch(JSON.stringify({ type: "queue_update", position: 1, estimated_wait_s: 12, queue_length: 2 }));
  s.dispatch(JSON.stringify({ type: "queue_done" }));
  s.dispatch("not json");
  s.dispatch(JSON.stringify({ no_type: 1 }));
  s.dispatch(JSON.stringify({ type: "chunk", text_delta: "hi" }));
  assert.deepEqual(log.queue.map((q) => q && q.position), [2, 1, null]);
  assert.deepEqual(log.msgs, [{ type: "chunk", text_delta: "hi" }]);
});

test("a queue-full error is reported as such, and the close after it is not a second error", () => {
  const { s, log } = make();
  s.opened = true;
  s.dispatch(JSON.stringify({ type: "error", error: "Queue full (20000 requests)" }));
  assert.equal(log.errors.length, 1);
  assert.match(log.errors[0][0], /queue_full|Queue full/);
  assert.equal(log.errors[0][1], false);
  s.closed({ code: 1013, reason: "" });
  assert.equal(log.errors.length, 2);               // 1013 = try again later: fatal for the page
  assert.equal(log.errors[1][1], true);
  assert.equal(log.closes[0].expected, false);
});

test("refused handshake vs dropped connection vs normal end", () => {
  let { s, log } = make();
  s.closed({ code: 1006, reason: "" });             // never opened: refused (e.g. mode disabled)
  assert.match(log.errors[0][0], /refused/);
  ({ s, log } = make());
  s.opened = true;
  s.closed({ code: 1006, reason: "" });
  assert.match(log.errors[0][0], /dropped/);
  ({ s, log } = make());
  s.opened = true;
  s.dispatch(JSON.stringify({ type: "done", text: "x", generated_tokens: 1, input_tokens: 2 }));
  s.closed({ code: 1000, reason: "" });
  assert.equal(log.errors.length, 0);
  assert.equal(log.closes[0].expected, true);
});
