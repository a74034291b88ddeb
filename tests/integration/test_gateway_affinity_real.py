"""Chat cache affinity with two REAL workers: the follow-up turn is routed to the worker whose
engine holds the conversation, and its prefill is measurably faster than the same request on a
warm worker without that prefix. Slow (loads two engines): run with ``-m slow``."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.gateway_procs import start_gateway

from .conftest import TEST_ENV, connect, recv_until, start_worker, stop_worker, wait_health

pytestmark = [pytest.mark.slow]

SYSTEM = ("You are a meticulous assistant for a small bakery. " * 40).strip()


async def ask(url: str, messages: list[dict], via_gateway: bool) -> tuple[float, dict]:
    ws = await connect(url + "/ws/chat")
    await ws.send(json.dumps({"messages": messages, "generation": {"max_new_tokens": 12, "temperature": 0.0}}))
    t0 = time.monotonic()
    msgs = await recv_until(ws, {"prefill_done", "error"}, 300)
    dt = time.monotonic() - t0
    assert msgs[-1]["type"] == "prefill_done", msgs
    done = (await recv_until(ws, {"done", "error"}, 300))[-1]
    assert done["type"] == "done", done
    await ws.close()
    return dt, done


async def test_follow_up_turn_reuses_the_cached_prefix(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_worker(tmp_path / "a", TEST_ENV)
    b = start_worker(tmp_path / "b", TEST_ENV)
    g = None
    try:
        for w in (a, b):
            wait_health(w, {"idle"}, 600)
        g = start_gateway(tmp_path, [a.base, b.base], 2)
        convo = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "When do you open?"}]
        _, done1 = await ask(g.ws, convo, True)
        time.sleep(0.5)
        views = httpx.get(g.url + "/workers", trust_env=False).json()
        holder = next(v["url"] for v in views if v["cached_prefix_hashes"] > 0)
        other = next(w for w in (a, b) if w.base != holder)
        # warm the other worker with an unrelated conversation (its first call pays one-off costs)
        await ask(other.ws, [{"role": "user", "content": "Say hi."}], False)
        follow = convo + [{"role": "assistant", "content": done1["text"]}, {"role": "user", "content": "And on Sunday?"}]
        t_cold, _ = await ask(other.ws, follow, False)          # same request, no cached prefix
        t_aff, _ = await ask(g.ws, follow, True)                # through the gateway: affinity
        views = {v["url"]: v for v in httpx.get(g.url + "/workers", trust_env=False).json()}
        assert views[holder]["cached_prefix_hashes"] >= 4   # the holder served the follow-up
        print(f"\nprefill of the follow-up turn: {t_aff * 1000:.0f} ms with affinity vs {t_cold * 1000:.0f} ms cold "
              f"({(1 - t_aff / t_cold) * 100:.0f}% saved)")
        assert t_aff < t_cold
    finally:
        if g is not None:
            g.stop()
        stop_worker(a)
        stop_worker(b)
