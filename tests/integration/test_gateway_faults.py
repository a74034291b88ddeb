"""Gateway faults with real processes on loopback (the zero-compute test worker): a client that
stops reading, an error frame mid-chat, deep JSON, a worker that refuses, lingers, gets stuck, hangs
(SIGSTOP) or stops answering units, audio streamed while queued, per-address limits, and which
endings feed the ETA. After each case the next client is served and the gateway did not grow."""
from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed

from omniserve.audio import encode_f32
from tests.support.faults import CHAT, next_chat_served, rss_mb
from tests.support.gateway_procs import fake_system

from .test_gateway_queue import finish_session, hold_worker, recv, recv_type, status


def workers(g) -> list[dict]:
    return httpx.get(g.url + "/workers", timeout=5, trust_env=False).json()


async def wait_for(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(step)
    raise AssertionError(f"not within {timeout} s")


async def close_code(ws, timeout: float = 5.0):
    """The close code the server sent (None: closed without one)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def test_client_that_stops_reading_is_dropped_and_frees_the_worker(tmp_path):
    with fake_system(tmp_path, "--chat-chunks", "300", "--chunk-bytes", "100000",   # a 30 MB reply
                     env={"OMNISERVE_GATEWAY__EDGE__CLIENT_SEND_TIMEOUT_S": "2"}) as (g, w):
        rss0 = rss_mb(g.proc.pid)
        ws = await websockets.connect(g.ws + "/ws/chat", max_size=None, max_queue=1)
        await ws.send(CHAT)
        t0 = time.monotonic()
        # never read again: the gateway's send blocks, its deadline drops us, the worker goes idle
        await wait_for(lambda: workers(g)[0]["status"] == "idle" and not workers(g)[0]["assigned"], 10)
        assert time.monotonic() - t0 < 2 + 5
        assert rss_mb(g.proc.pid) - rss0 < 100
        assert await next_chat_served(g.ws, 5) < 5
        assert await close_code(ws) in (1008, None)   # what it finally reads: its data, then 1008 or an abort


async def test_error_frame_mid_chat_does_not_release_the_worker(tmp_path):
    with fake_system(tmp_path, "--chat-delay", "1.5") as (g, w):
        a = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await a.send(CHAT)
        await recv_type(a, "chunk")
        await a.send('{"type":"bogus"}')
        assert (await recv_type(a, "error"))["error"]
        b = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await b.send(CHAT)
        assert (await recv(b))["type"] == "queued"          # the worker is still A's
        assert status(g)["busy_workers"] == 1
        done = await recv_type(a, "done")
        assert done["text"]
        assert (await recv_type(b, "queue_done"))
        assert (await recv_type(b, "done"))["text"]
        await a.close()
        await b.close()


async def test_deep_json_first_chat_frame_gets_error_not_a_bare_close(tmp_path):
    with fake_system(tmp_path) as (g, w):
        for bomb in ("[" * 50000, '{"messages":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"):
            ws = await websockets.connect(g.ws + "/ws/chat", max_size=None)
            await ws.send(bomb)
            m = await recv(ws)
            assert m["type"] == "error"
            assert await close_code(ws) == 1008
        assert "Exception in ASGI application" not in g.tail(20000)
        assert await next_chat_served(g.ws, 5) < 5


async def test_busy_refusal_is_retried_not_shown(tmp_path):
    with fake_system(tmp_path, "--busy-first", "2") as (g, w):
        ws = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await ws.send(CHAT)
        seen = []
        while True:
            m = await recv(ws)
            seen.append(m["type"])
            if m["type"] in ("done", "error"):
                break
        assert "error" not in seen and seen[-1] == "done", seen
        assert seen.count("queue_done") == 1


async def test_dispatch_waits_until_the_worker_reports_idle(tmp_path):
    with fake_system(tmp_path, "--chat-delay", "0.2", "--linger", "1.5") as (g, w):
        a = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await a.send(CHAT)
        await recv_type(a, "queue_done")
        b = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await b.send(CHAT)
        assert (await recv(b))["type"] == "queued"
        await recv_type(a, "done")
        t_done = time.monotonic()
        m = await recv_type(b, "queue_done")
        assert time.monotonic() - t_done >= 1.0, m          # not before the worker said idle
        assert (await recv_type(b, "done"))["text"]           # and no "Worker busy" on the way


async def test_worker_that_never_reports_idle_is_marked_stuck(tmp_path):
    with fake_system(tmp_path, "--chat-delay", "0.1", "--stuck", env={"OMNISERVE_GATEWAY__RELEASE_IDLE_TIMEOUT_S": "2"}) as (g, w):
        a = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await a.send(CHAT)
        await recv_type(a, "done")
        await wait_for(lambda: workers(g)[0]["status"] == "stuck", 5)
        b = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        await b.send(CHAT)
        assert (await recv(b))["type"] == "queued"        # waits; is never sent to the stuck worker
        assert (await recv(b, 4))["type"] == "queue_update"
        await b.close()


async def test_hung_worker_ends_the_session_with_error_within_5s(tmp_path):
    with fake_system(tmp_path) as (g, w):
        ws = await hold_worker(g, "omni_hung")
        w.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            m = await recv_type(ws, "error", timeout=8)
            assert time.monotonic() - t0 < 5, m
        finally:
            w.proc.send_signal(signal.SIGCONT)
        assert await next_chat_served(g.ws, 10) < 10


async def test_duplex_worker_silent_after_a_unit_ends_the_session(tmp_path):
    with fake_system(tmp_path, "--unit-delay", "6", env={"OMNISERVE_GATEWAY__DUPLEX_UNIT_DEADLINE_S": "2"}) as (g, w):
        ws = await hold_worker(g, "adx_slow")
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": encode_f32(np.zeros(16000, np.float32))}))
        t0 = time.monotonic()
        m = await recv_type(ws, "error", timeout=6)
        assert 2 <= time.monotonic() - t0 < 4, m
        assert await next_chat_served(g.ws, 8) < 8


async def test_audio_streamed_while_queued_keeps_the_newest_seconds(tmp_path):
    with fake_system(tmp_path, env={"OMNISERVE_GATEWAY__EDGE__QUEUED_AUDIO_KEEP_S": "3"}) as (g, w):
        holder = await hold_worker(g)
        hd = await websockets.connect(g.ws + "/ws/half_duplex/hd_waiting", max_size=None)
        assert (await recv(hd))["type"] == "queued"
        await hd.send(json.dumps({"type": "prepare", "system_prompt": "hi"}))
        chunk = json.dumps({"type": "audio_chunk", "audio_base64": encode_f32(np.zeros(8000, np.float32))})
        for _ in range(120):        # a minute of audio while queued: more than any buffer cap
            await hd.send(chunk)
        await asyncio.sleep(0.5)
        await finish_session(holder)
        await recv_type(hd, "queue_done")
        await recv_type(hd, "prepared")
        got = httpx.get(w.url + "/debug/received", trust_env=False).json()
        kinds = [d["type"] for d in got]
        assert kinds[0] == "prepare"
        assert 4 <= kinds.count("audio_chunk") <= 8, kinds     # ~3 s of 0.5 s chunks
        await finish_session(hd)


async def test_queue_places_per_address_are_capped(tmp_path):
    with fake_system(tmp_path, env={"OMNISERVE_GATEWAY__EDGE__MAX_QUEUED_PER_IP": "2"}) as (g, w):
        holder = await hold_worker(g)    # holds one of the two places
        one = await websockets.connect(g.ws + "/ws/half_duplex/hd_one", max_size=None)
        assert (await recv(one))["type"] == "queued"
        two = await websockets.connect(g.ws + "/ws/half_duplex/hd_two", max_size=None)
        m = await recv(two)
        assert m["type"] == "error" and "Too many" in m["error"]
        assert await close_code(two) == 1013
        await one.close()
        await finish_session(holder)


async def test_only_normal_endings_feed_the_eta(tmp_path):
    with fake_system(tmp_path) as (g, w):
        def samples() -> int:
            return httpx.get(g.url + "/api/config/eta", trust_env=False).json()["samples"]["omni_duplex"]

        ws = await hold_worker(g, "omni_abort")
        ws.transport.abort()            # the client vanishes: not a finished session
        await wait_for(lambda: status(g)["idle_workers"] == 1, 5)
        assert samples() == 0
        ws = await hold_worker(g, "omni_stop")
        await finish_session(ws)
        await wait_for(lambda: samples() == 1, 5)
