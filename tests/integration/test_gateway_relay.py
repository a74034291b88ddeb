"""Gateway relay and routing with real processes: bytes preserved, client_diagnostic kept back,
frame caps, pause/resume state, a worker killed mid-session, chat cache affinity, disabled apps,
Origin checks."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import time

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.gateway_procs import start_fake_worker, start_gateway, wait_ready

from .test_gateway_queue import finish_session, hold_worker, recv, recv_type, status


def workers(g) -> list[dict]:
    return httpx.get(g.url + "/workers", timeout=5, trust_env=False).json()


async def test_relay_preserves_bytes_and_keeps_diagnostics(tmp_path):
    w = start_fake_worker(tmp_path, "--echo")
    g = start_gateway(tmp_path, [w.url], 1)
    try:
        audio = base64.b64encode(np.random.default_rng(1).standard_normal(16000).astype("<f4").tobytes()).decode()
        frames = [
            '{"type":"prepare","system_prompt":"caf\u00e9 \\u00e9 \U0001F600","config":{"chunk_ms":1000}}',
            '{ "type" : "audio_chunk" ,  "audio_base64" : "' + audio + '" }',
            '{"audio_base64":"' + audio + '","force_listen":true,"type":"audio_chunk"}',   # type last
            '{"type":"pause","timeout":30}',
            '{"type":"resume"}',
        ]
        diag = '{"type":"client_diagnostic","rtt_ms":12,"ua":"test"}'
        ws = await websockets.connect(g.ws + "/ws/duplex/omni_bytes", max_size=None)
        assert (await recv(ws))["type"] == "queue_done"
        await ws.send(frames[0])
        await ws.send(diag)
        await recv_type(ws, "prepared")
        for f in frames[1:3]:
            await ws.send(f)
            r = await recv_type(ws, "result")
            assert r["audio_data"] == audio  # 85 KB back, intact
        await ws.send(frames[3])
        await recv_type(ws, "paused")
        assert workers(g)[0]["paused"] is True
        await ws.send(frames[4])
        await recv_type(ws, "resumed")
        assert workers(g)[0]["paused"] is False
        await finish_session(ws)
        got = httpx.get(w.url + "/debug/received", trust_env=False).json()
        want = [hashlib.sha256(f.encode()).hexdigest() for f in frames]
        assert [d["sha256"] for d in got[:5]] == want
        assert all(d["type"] != "client_diagnostic" for d in got)
        # kept with the worker's recording (test_recordings_remote.py), never on the gateway's disk
        assert not list(g.data_dir.rglob("client_diagnostics.jsonl"))
    finally:
        g.stop()
        w.stop()


async def test_frame_too_large_closes_1009(tmp_path):
    w = start_fake_worker(tmp_path)
    g = start_gateway(tmp_path, [w.url], 1, {"OMNISERVE_GATEWAY__MAX_FRAME_BYTES": "100000"})
    try:
        ws = await websockets.connect(g.ws + "/ws/duplex/adx_big", max_size=None)
        await recv(ws)
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": "A" * 200_000}))
        m = await recv_type(ws, "error")
        assert "too large" in m["error"]
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1009
        await asyncio.sleep(0.3)
        assert status(g)["idle_workers"] == 1
    finally:
        g.stop()
        w.stop()


async def test_worker_killed_mid_session(tmp_path):
    w = start_fake_worker(tmp_path)
    g = start_gateway(tmp_path, [w.url], 1)
    try:
        ws = await hold_worker(g, "omni_kill")
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGKILL)
        m = await recv(ws, 1.0)
        assert m["type"] == "error" and time.monotonic() - t0 < 1.0
        with pytest.raises(ConnectionClosed):
            await recv(ws, 1.0)
        ws_ = workers(g)[0]
        assert ws_["online"] is False and ws_["assigned"] is False
        # a newcomer waits (no worker) instead of failing
        c = await websockets.connect(g.ws + "/ws/duplex/omni_next")
        assert (await recv(c))["type"] == "queued"
        # the worker comes back on the same port: it rejoins and serves the waiting client
        w2 = start_fake_worker(tmp_path, port=w.port)
        try:
            assert (await recv_type(c, "queue_done", 10))["type"] == "queue_done"
            await c.send(json.dumps({"type": "prepare"}))
            await recv_type(c, "prepared")
            await finish_session(c)
            assert workers(g)[0]["online"] is True
        finally:
            w2.stop()
    finally:
        g.stop()
        w.stop()


async def test_chat_affinity_routes_to_cached_prefix(tmp_path):
    """Two workers; the follow-up turn of a conversation goes to the worker holding its prefix even
    though the other one is idle, empty and less recently used — and prefill is measurably shorter."""
    per_msg = 0.15
    a = start_fake_worker(tmp_path, "--chat-delay", "0", "--prefill-per-msg", str(per_msg))
    b = start_fake_worker(tmp_path, "--chat-delay", "0", "--prefill-per-msg", str(per_msg))
    g = start_gateway(tmp_path, [a.url, b.url], 2)
    try:
        async def chat(messages):
            ws = await websockets.connect(g.ws + "/ws/chat", max_size=None)
            await ws.send(json.dumps({"messages": messages}))
            t0 = time.monotonic()
            assert (await recv(ws))["type"] == "queue_done"
            pre = await recv_type(ws, "prefill_done")
            dt = time.monotonic() - t0
            done = await recv_type(ws, "done")
            await ws.close()
            return pre, done, dt

        convo = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"}]
        pre1, done1, t1 = await chat(convo)
        assert pre1["cached_messages"] == 0
        first = [w for w in workers(g) if w["cached_prefix_hashes"] > 0]
        await asyncio.sleep(0.5)  # the hashes refresh right after the session; give the poll a moment
        first = [w for w in workers(g) if w["cached_prefix_hashes"] > 0]
        assert len(first) == 1
        convo += [{"role": "assistant", "content": done1["text"]}, {"role": "user", "content": "And again"}]
        pre2, _, t2 = await chat(convo)
        assert pre2["cached_messages"] == 3  # system + user + assistant came from the cache
        served = [w for w in workers(g) if w["cached_prefix_hashes"] >= 5]
        assert [w["url"] for w in served] == [first[0]["url"]]
        # without affinity all 4 messages would be prefilled: 4 × per_msg; with it, one
        print(f"\naffinity: prefill {t2 * 1000:.0f} ms for 4 messages (1 uncached) vs {t1 * 1000:.0f} ms for 2 uncached; "
              f"saved ≈ {3 * per_msg * 1000:.0f} ms")
        assert t2 < 2 * per_msg + 0.1
        # an unrelated conversation prefers the worker with nothing cached
        await chat([{"role": "user", "content": "unrelated"}])
        assert all(w["cached_prefix_hashes"] > 0 for w in workers(g))
    finally:
        g.stop()
        a.stop()
        b.stop()


async def test_chat_request_is_read_once_at_the_gateway(tmp_path):
    """The gateway validates the chat request it reads for affinity: a bad one is refused there
    (the worker's text, close 1008) and never reaches a worker; a good one is relayed byte for byte
    as the request, whatever a "type" inside it says."""
    w = start_fake_worker(tmp_path, "--chat-delay", "0")
    g = start_gateway(tmp_path, [w.url], 1)
    try:
        bad = websockets.connect(g.ws + "/ws/chat", max_size=None)
        async with bad as ws:
            await ws.send(json.dumps({"messages": [{"role": "robot", "content": "hi"}]}))
            m = await recv(ws)
            assert m["type"] == "error" and m["error"].startswith("Invalid 'chat' message: messages.0.role"), m
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 1008
        # a top-level object whose first "type" is a control word: still the request, relayed as sent
        text = '{"meta":{"type":"client_diagnostic"},"messages":[{"role":"user","content":"hi"}]}'
        async with websockets.connect(g.ws + "/ws/chat", max_size=None) as ws:
            await ws.send(text)
            assert (await recv_type(ws, "done"))["text"] == "echo: hi"
        got = httpx.get(w.url + "/debug/received", trust_env=False).json()
        assert [d["sha256"] for d in got] == [hashlib.sha256(text.encode()).hexdigest()]   # the bad one never came
    finally:
        g.stop()
        w.stop()


async def test_disabled_app_rejects_new_sessions_only(tmp_path):
    w = start_fake_worker(tmp_path, "--echo")
    w2 = start_fake_worker(tmp_path, "--echo")
    g = start_gateway(tmp_path, [w.url, w2.url], 2)
    try:
        running = await hold_worker(g, "omni_running")
        r = httpx.put(g.url + "/api/admin/apps/omni", json={"enabled": False}, headers=g.admin, trust_env=False)
        assert r.status_code == 200 and r.json()["enabled"] is False
        assert {a["app_id"]: a["enabled"] for a in httpx.get(g.url + "/api/apps", trust_env=False).json()}["omni"] is False
        with pytest.raises(InvalidStatus) as e:
            await websockets.connect(g.ws + "/ws/duplex/omni_new")
        assert e.value.response.status_code == 403
        page = httpx.get(g.url + "/omni", follow_redirects=False, trust_env=False)
        assert page.status_code == 302 and page.headers["location"] == "/?disabled=omni"
        # audio duplex shares the endpoint but is a separate app: still allowed
        other = await websockets.connect(g.ws + "/ws/duplex/adx_ok")
        assert (await recv(other))["type"] == "queue_done"
        await other.close()
        # the running omni session continues
        await running.send(json.dumps({"type": "audio_chunk", "audio_base64": "AAAAAA=="}))
        assert (await recv_type(running, "result"))["audio_data"] == "AAAAAA=="
        await finish_session(running)
        # the setting persists across a restart
        g.stop()
        g = start_gateway(tmp_path, [w.url, w2.url], 2)
        with pytest.raises(InvalidStatus):
            await websockets.connect(g.ws + "/ws/duplex/omni_new")
        httpx.put(g.url + "/api/admin/apps/omni", json={"enabled": True}, headers=g.admin, trust_env=False)
        ok = await websockets.connect(g.ws + "/ws/duplex/omni_new")
        assert (await recv(ok))["type"] == "queue_done"
        await ok.close()
    finally:
        g.stop()
        w.stop()
        w2.stop()


async def test_origin_check(tmp_path):
    w = start_fake_worker(tmp_path)
    g = start_gateway(tmp_path, [w.url], 1)
    try:
        with pytest.raises(InvalidStatus) as e:
            await websockets.connect(g.ws + "/ws/chat", origin="https://evil.example")
        assert e.value.response.status_code == 403
        same = await websockets.connect(g.ws + "/ws/chat", origin=f"http://127.0.0.1:{g.port}")
        await same.close()
        bare = await websockets.connect(g.ws + "/ws/chat")  # no Origin: a non-browser client
        await bare.close()
    finally:
        g.stop()
        w.stop()


async def test_worker_registers_and_loading_worker_is_not_used(tmp_path):
    g = start_gateway(tmp_path, [])
    w = start_fake_worker(tmp_path, "--load-delay", "1.5")
    try:
        r = httpx.post(g.url + "/api/workers/register", json={"url": w.url}, trust_env=False)
        assert r.status_code == 401
        r = httpx.post(g.url + "/api/workers/register", json={"url": w.url}, headers=g.admin, trust_env=False)
        assert r.status_code == 200 and r.json()["status"] == "loading"
        c = await websockets.connect(g.ws + "/ws/duplex/omni_wait")
        assert (await recv(c))["type"] == "queued"   # loading: not assigned yet
        assert (await recv_type(c, "queue_done", 10))["type"] == "queue_done"
        await c.close()
        wait_ready(g, 1)
    finally:
        g.stop()
        w.stop()
