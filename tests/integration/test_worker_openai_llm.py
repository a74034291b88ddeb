"""The ``openai`` LLM kind end to end: a real worker whose cascade's LLM is a real
OpenAI-compatible server on loopback (llama-cpp-python's ``llama_cpp.server`` with the same Qwen
GGUF). Chat, a half-duplex turn, a duplex reply, stop mid-reply, and the server killed mid-reply
(the client gets a clear ``error`` and the worker serves the next request once the server is back).
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.llm_server import start_llm_server

from .conftest import TEST_ENV, connect, recv, recv_until, start_worker, stop_worker, wait_health, wait_idle
from .test_worker_chat import LONG, QUESTION
from .test_worker_duplex import converse
from .test_worker_duplex import prepare as duplex_prepare
from .test_worker_half_duplex import prepare as hd_prepare
from .test_worker_half_duplex import question, say


@pytest.fixture(scope="module")
def server():
    s = start_llm_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def oa_worker(server, tmp_path_factory):
    env = dict(TEST_ENV, OMNISERVE_ENGINE__LLM__KIND="openai", OMNISERVE_ENGINE__LLM__BASE_URL=server.base_url,
               OMNISERVE_ENGINE__LLM__MODEL=server.model, OMNISERVE_ENGINE__LLM__N_CTX="2048",
               OMNISERVE_ENGINE__LLM__TIMEOUT_S="20")
    h = start_worker(tmp_path_factory.mktemp("oa_worker"), env)
    try:
        wait_health(h, {"idle"}, 300)
        yield h
    finally:
        stop_worker(h)


async def _chat(worker, messages, **request):
    ws = await connect(worker.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": messages, "generation": {"temperature": 0.0, "max_new_tokens": 64}, **request}))
    return ws


async def test_chat_through_the_server(oa_worker):
    ws = await _chat(oa_worker, QUESTION)
    msgs = await recv_until(ws, {"done", "error"}, 120)
    types = [m["type"] for m in msgs]
    assert types[0] == "prefill_done" and msgs[0]["input_tokens"] > 10, msgs
    assert types[-1] == "done" and "chunk" in types, msgs
    assert "paris" in msgs[-1]["text"].lower(), msgs[-1]
    assert (await wait_idle(oa_worker, 10))["worker_status"] == "idle"


async def test_half_duplex_turn_through_the_server(oa_worker):
    ws = await connect(oa_worker.ws + "/ws/half_duplex/oa_hd")
    await hd_prepare(ws)
    await say(ws, question("What is the capital of France?"))
    msgs = await recv_until(ws, {"turn_done", "error"}, 120)
    assert msgs[-1]["type"] == "turn_done", msgs[-1]
    assert "paris" in msgs[-1]["text"].lower() and "capital" in msgs[-1]["user_text"].lower(), msgs[-1]
    assert any(m["type"] == "chunk" and m.get("audio_data") for m in msgs)
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 20)
    await ws.close()
    assert (await wait_idle(oa_worker, 10))["worker_status"] == "idle"


async def test_duplex_reply_through_the_server(oa_worker):
    ws = await connect(oa_worker.ws + "/ws/duplex/oa_adx")
    await duplex_prepare(ws)
    results = await converse(ws, "What is the capital of France?")
    spoken = "".join(r["text"] for r in results if not r["is_listen"])
    assert spoken.strip(), [(r["is_listen"], r["text"]) for r in results]
    assert any(r.get("audio_data") for r in results if not r["is_listen"])
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 20)
    await ws.close()
    assert (await wait_idle(oa_worker, 10))["worker_status"] == "idle"


async def test_stop_mid_reply_closes_the_stream(oa_worker):
    ws = await _chat(oa_worker, LONG, generation={"temperature": 0.0, "max_new_tokens": 400})
    await recv_until(ws, "chunk", 60)
    t0 = time.monotonic()
    await ws.send(json.dumps({"type": "stop"}))
    msgs = await recv_until(ws, {"done", "error"}, 30)
    assert msgs[-1]["type"] == "done" and msgs[-1].get("stopped") is True, msgs[-1]
    assert time.monotonic() - t0 < 2.0
    assert (await wait_idle(oa_worker, 10))["worker_status"] == "idle"


async def test_server_killed_mid_reply_is_a_clear_error_and_the_worker_goes_on(oa_worker, server):
    ws = await _chat(oa_worker, LONG, generation={"temperature": 0.0, "max_new_tokens": 400})
    await recv_until(ws, "chunk", 60)
    t0 = time.monotonic()
    server.kill()
    msgs = await recv_until(ws, {"done", "error"}, 30)
    assert msgs[-1]["type"] == "error", msgs[-1]
    assert "language model server" in msgs[-1]["error"] and server.base_url in msgs[-1]["error"], msgs[-1]
    assert time.monotonic() - t0 < 5.0
    assert (await wait_idle(oa_worker, 10))["worker_status"] == "idle"
    # while it is down: refused at once, clearly
    ws = await _chat(oa_worker, QUESTION)
    m = (await recv_until(ws, {"done", "error"}, 30))[-1]
    assert m["type"] == "error" and "could not connect" in m["error"], m
    # back on the same address: served again, no restart of the worker
    revived = start_llm_server(port=server.port)
    try:
        ws = await _chat(oa_worker, QUESTION)
        msgs = await recv_until(ws, {"done", "error"}, 120)
        assert msgs[-1]["type"] == "done" and "paris" in msgs[-1]["text"].lower(), msgs[-1]
    finally:
        revived.stop()
