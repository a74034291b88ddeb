"""/ws/chat against a real worker process: streaming answer, TTS, stop, disconnect, bad input,
busy rejection, size caps, prefix-cache hashes in /health, and the chat recording."""
from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed

from omniserve.audio import decode_f32
from omniserve.protocol.affinity import prefix_hashes

from .conftest import connect, health, recv, recv_until, wait_idle

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread. Make it at least 20 sentences."}]


async def chat(worker, request: dict) -> list[dict]:
    ws = await connect(worker.ws + "/ws/chat")
    await ws.send(json.dumps(request))
    msgs = await recv_until(ws, {"done", "error"}, 180)
    await ws.close()
    return msgs


async def test_chat_streams_answer_and_records(idle):
    req = {"messages": QUESTION, "streaming": True, "generation": {"max_new_tokens": 48, "temperature": 0.0}}
    msgs = await chat(idle, req)
    types = [m["type"] for m in msgs]
    assert types[0] == "prefill_done" and msgs[0]["input_tokens"] > 5, msgs[:2]
    assert types[-1] == "done", msgs[-1]
    chunks = [m for m in msgs if m["type"] == "chunk"]
    assert len(chunks) >= 2, "reply was not streamed"
    done = msgs[-1]
    assert "paris" in done["text"].lower(), done["text"]
    assert "".join(c.get("text_delta", "") for c in chunks).strip() == done["text"].strip()
    assert done["generated_tokens"] > 0 and done["input_tokens"] > 0
    rid = done["recording_session_id"]
    assert rid and len(rid) >= 22

    hl = await wait_idle(idle)
    assert hl["cached_prefix_hashes"] == prefix_hashes(QUESTION + [{"role": "assistant", "content": done["text"]}])

    folder = idle.data_dir / "sessions" / rid
    for _ in range(50):
        if (folder / "meta.json").exists() and json.loads((folder / "meta.json").read_text())["status"] == "complete":
            break
        await asyncio.sleep(0.1)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["type"] == "chat" and meta["end_reason"] == "done" and meta["recording_session_id"] == rid
    rec = json.loads((folder / "recording.json").read_text())
    assert rec["timeline"][0]["messages"][0]["items"][0]["text"] == QUESTION[0]["content"]
    assert rec["timeline"][1]["text"] == done["text"]


async def test_chat_with_tts_streams_audio(idle):
    req = {"messages": [{"role": "user", "content": "Say hello to me in one short sentence."}], "streaming": True,
           "generation": {"max_new_tokens": 24}, "tts": {"enabled": True}}
    msgs = await chat(idle, req)
    assert msgs[-1]["type"] == "done", msgs[-1]
    audio = [decode_f32(m["audio_data"]) for m in msgs if m["type"] == "chunk" and m.get("audio_data")]
    assert audio, "no audio chunks with tts enabled"
    pcm = np.concatenate(audio)
    assert len(pcm) > 24000 * 0.3 and np.abs(pcm).max() > 0.01
    folder = idle.data_dir / "sessions" / msgs[-1]["recording_session_id"]
    await asyncio.sleep(0.5)
    data, sr = sf.read(folder / "ai.wav")
    assert sr == 24000 and abs(len(data) - len(pcm)) < 10


async def test_chat_non_streaming(idle):
    req = {"messages": QUESTION, "streaming": False, "generation": {"max_new_tokens": 32, "temperature": 0.0}}
    msgs = await chat(idle, req)
    assert [m["type"] for m in msgs] == ["prefill_done", "done"], msgs
    assert "paris" in msgs[-1]["text"].lower()


async def test_chat_stop_within_a_chunk(idle):
    ws = await connect(idle.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": LONG, "generation": {"max_new_tokens": 400}}))
    before = await recv_until(ws, "chunk", 120)
    await ws.send(json.dumps({"type": "stop"}))
    after = await recv_until(ws, {"done", "error"}, 30)
    done = after[-1]
    assert done["type"] == "done" and done.get("stopped") is True, done
    assert len([m for m in after if m["type"] == "chunk"]) <= 3, "stop took more than a chunk or two"
    assert done["generated_tokens"] < 400
    streamed = "".join(m.get("text_delta") or "" for m in before + after if m["type"] == "chunk")
    assert streamed and done["text"] == streamed, (done["text"], streamed)   # done says what was sent


async def test_chat_disconnect_mid_generation_frees_worker(idle):
    ws = await connect(idle.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": LONG, "generation": {"max_new_tokens": 400}}))
    await recv_until(ws, "chunk", 120)
    await ws.close()
    hl = await wait_idle(idle, 20)
    assert hl["worker_status"] == "idle", hl


@pytest.mark.parametrize("frame, expect", [
    ("not json", "Invalid JSON"),
    (json.dumps({"messages": []}), "messages"),
    (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), "role"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "data": "%%%"}]}]}), "base64"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "audio", "data": base64.b64encode(b"abc").decode()}]}]}),
     "multiple of 4"),
    (json.dumps({"messages": QUESTION, "generation": {"temperature": 99}}), "temperature"),
])
async def test_chat_bad_request_gets_error(idle, frame, expect):
    ws = await connect(idle.ws + "/ws/chat")
    await ws.send(frame)
    m = await recv(ws, 30)
    assert m["type"] == "error" and expect.lower() in m["error"].lower(), m
    assert m["message"] == m["error"]


async def test_chat_undecodable_image_is_engine_error(idle):
    bogus = base64.b64encode(b"this is not an image at all").decode()
    msgs = await chat(idle, {"messages": [{"role": "user", "content": [
        {"type": "image", "data": bogus}, {"type": "text", "text": "What is this?"}]}]})
    assert msgs[-1]["type"] == "error", msgs


async def test_chat_oversized_frame_closes_1009(idle):
    ws = await connect(idle.ws + "/ws/chat")
    big = "x" * (4 * 1024 * 1024 + 10)   # the test worker's chat cap is 4 MiB
    await ws.send(json.dumps({"messages": [{"role": "user", "content": big}]}))
    m = await recv(ws, 30)
    assert m["type"] == "error" and "too large" in m["error"].lower(), m
    with pytest.raises(ConnectionClosed):
        await recv(ws, 10)
    assert ws.close_code == 1009


async def test_busy_worker_rejects_second_connection(idle):
    hd = await connect(idle.ws + "/ws/half_duplex/hd_busy_test")
    await hd.send(json.dumps({"type": "prepare", "config": {"session": {"timeout_s": 30}}}))
    prepared = await recv_until(hd, "prepared", 60)
    assert prepared[-1]["session_id"] == "hd_busy_test"
    hl = await health(idle)
    assert hl["worker_status"] == "busy_half_duplex" and hl["current_session_id"] == "hd_busy_test"
    assert hl["session_type"] == "half_duplex_audio" and hl["elapsed_s"] >= 0
    for path in ("/ws/chat", "/ws/half_duplex/other", "/ws/duplex/adx_other"):
        ws = await connect(idle.ws + path)
        m = await recv(ws, 10)
        assert m == {"type": "error", "error": "Worker busy", "message": "Worker busy"}
        with pytest.raises(ConnectionClosed):
            await recv(ws, 10)
        assert ws.close_code == 1013
    await hd.send(json.dumps({"type": "stop"}))
    assert (await recv_until(hd, "stopped", 20))[-1]["session_id"] == "hd_busy_test"
