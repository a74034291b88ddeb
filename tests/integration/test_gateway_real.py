"""Through the gateway to a REAL embedded worker, one test per mode: chat, half-duplex, duplex.

Uses the shared ``real_worker`` of tests/integration/conftest.py (models load once per test run)
and a gateway with a data folder of its own: the recording is served through the gateway's session
API by the worker that made it.
Skipped with a clear reason when the worker package is absent.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import piper_speech, silence
from tests.support.gateway_procs import start_gateway

from .conftest import b64, chunks, connect, recv, recv_until

pytestmark = pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "omniserve" / "worker" / "main.py").exists(),
    reason="omniserve/worker/main.py is absent: the real worker has not landed yet")


@pytest.fixture
def gw(idle, tmp_path):
    g = start_gateway(tmp_path, [idle.base], 1)
    yield g
    g.stop()


async def test_chat_through_gateway(gw, idle):
    ws = await connect(gw.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": [{"role": "user", "content": "What is the capital of France? One word."}],
                              "streaming": True, "generation": {"max_new_tokens": 16, "temperature": 0.0}}))
    msgs = await recv_until(ws, {"done", "error"}, 180)
    types = [m["type"] for m in msgs]
    assert types[0] == "queue_done" and types[1] == "prefill_done" and types[-1] == "done", types
    done = msgs[-1]
    assert "paris" in done["text"].lower() and done["input_tokens"] > 0
    # the gateway serves the worker's recording of this session
    meta = httpx.get(f"{gw.url}/api/sessions/{done['recording_session_id']}", trust_env=False, timeout=10).json()
    assert meta["session_id"] == done["recording_session_id"] and "meta.json" in meta["files"]
    # the pool picked up the cached prefix right after the session (affinity)
    for _ in range(20):
        w = httpx.get(gw.url + "/workers", trust_env=False).json()[0]
        if w["cached_prefix_hashes"] >= 2 and not w["assigned"]:
            break
        import asyncio
        await asyncio.sleep(0.1)
    assert w["cached_prefix_hashes"] >= 2 and not w["assigned"]


async def test_half_duplex_through_gateway(gw, idle):
    ws = await connect(gw.ws + "/ws/half_duplex/hd_gw")
    assert (await recv(ws))["type"] == "queue_done"
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "Answer briefly.",
                              "config": {"vad": {"min_silence_duration_ms": 600},
                                         "generation": {"max_new_tokens": 30, "temperature": 0.0},
                                         "tts": {"enabled": True}, "session": {"timeout_s": 60}}}))
    prepared = (await recv_until(ws, "prepared", 60))[-1]
    assert prepared["session_id"] == "hd_gw"
    import asyncio
    await asyncio.sleep(0.6)
    pcm = np.concatenate([silence(1.0), piper_speech("What is the capital of France?"), silence(1.5)])
    for c in chunks(pcm, 8000):
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(c)}))
    msgs = await recv_until(ws, "turn_done", 180)
    assert any(m["type"] == "chunk" and m["audio_data"] for m in msgs)
    assert "paris" in msgs[-1]["text"].lower()
    await ws.send(json.dumps({"type": "stop"}))
    assert (await recv_until(ws, "stopped", 20))[-1]["type"] == "stopped"


async def test_audio_duplex_through_gateway(gw, idle):
    ws = await connect(gw.ws + "/ws/duplex/adx_gw")
    assert (await recv(ws))["type"] == "queue_done"
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "Answer briefly.",
                              "config": {"force_listen_count": 1, "chunk_ms": 1000}}))
    prepared = (await recv_until(ws, "prepared", 60))[-1]
    assert prepared["prompt_length"] > 0
    await ws.send(json.dumps({"type": "client_diagnostic", "note": "gateway test"}))  # kept with the recording
    pcm = np.concatenate([piper_speech("Hello, how are you today?"), silence(3.0)])
    results = []
    for c in chunks(pcm, 16000):
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(c)}))
        results.append(await recv(ws, 60))
    assert all(r["type"] == "result" for r in results), results
    assert [r["current_time"] for r in results] == list(range(len(results)))
    assert results[0]["is_listen"] is True
    await ws.send(json.dumps({"type": "stop"}))
    assert (await recv_until(ws, "stopped", 30))[-1]["type"] == "stopped"
    url = f"{gw.url}/api/sessions/{prepared['recording_session_id']}/assets/client_diagnostics.jsonl"
    for _ in range(50):          # the gateway hands diagnostics to the worker off the relay's path
        r = httpx.get(url, trust_env=False, timeout=10)
        if r.status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert r.status_code == 200 and "gateway test" in r.text
    assert not list(gw.data_dir.rglob("client_diagnostics.jsonl"))
