"""UnifiedProcessor: models load once; switching view loads and copies nothing."""
from __future__ import annotations

import time

from omniserve.engine.backends.embedded.conversation import Conversation
from tests.unit.engine_support import get_processor


def test_view_switch_is_cheap_and_shares_models():
    proc = get_processor()
    chat = proc.set_chat_mode()
    half = proc.set_half_duplex_mode()
    duplex = proc.set_duplex_mode()
    assert proc.mode == "duplex"
    assert chat._b is half._b is duplex._b is proc.backend
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        proc.set_chat_mode()
        proc.set_half_duplex_mode()
        proc.set_duplex_mode()
    per_switch_ms = (time.perf_counter() - t0) * 1000 / (3 * n)
    assert per_switch_ms < 0.1, per_switch_ms
    assert proc.set_chat_mode() is chat


def test_sliding_window_keeps_system_prompt_and_newest_turn():
    conv = Conversation("SYSTEM")
    for i in range(50):
        conv.add("user", f"question {i} " + "word " * 20)
        conv.add("assistant", f"answer {i} " + "word " * 20)
    conv.add("user", "the last question")

    def count(messages):
        return sum(len(m["content"].split()) for m in messages)

    dropped = conv.fit(count, budget=300)
    msgs = conv.messages()
    assert dropped > 0 and count(msgs) <= 300 * 0.6
    assert msgs[0] == {"role": "system", "content": "SYSTEM"}
    assert msgs[1]["role"] == "user" and msgs[-1]["content"] == "the last question"
    assert conv.fit(count, budget=300) == 0      # fits now: nothing more dropped (prefix stays stable)
