"""/ws/duplex against a real worker process: listen → speak across 1 s units (audio-only and
omni with camera frames), pause/resume, pause timeout, idle timeout, stop, bad input, and the
duplex recording (user/AI/stereo replay WAVs, frames, per-unit timeline)."""
from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import soundfile as sf

from omniserve.audio import decode_f32
from tests.conftest import piper_speech, silence, text_image

from .conftest import b64, chunks, connect, health, recv, recv_until, wait_idle

UNIT = 16000  # 1 s at 16 kHz


async def prepare(ws, **config) -> dict:
    cfg = {"force_listen_count": 2, "max_new_speak_tokens_per_chunk": 12, "temperature": 0.0}
    cfg.update(config)
    await ws.send(json.dumps({"type": "prepare", "prefix_system_prompt": "You are a helpful assistant. Answer briefly.",
                              "config": cfg}))
    return (await recv_until(ws, "prepared", 60))[-1]


async def unit(ws, pcm: np.ndarray, **extra) -> dict:
    """Send one unit and wait for its result (lock-step keeps the test deterministic)."""
    await ws.send(json.dumps({"type": "audio_chunk", "audio": b64(pcm), **extra}))
    msgs = await recv_until(ws, {"result", "error"}, 60)
    assert msgs[-1]["type"] == "result", msgs[-1]
    return msgs[-1]


async def assert_idle(worker) -> None:
    hl = await wait_idle(worker, 15)
    assert hl["worker_status"] == "idle" and hl["current_session_id"] is None, hl


async def converse(ws, question: str, frame: bytes | None = None, max_units: int = 14) -> list[dict]:
    """Silence, the spoken question, then silence until the reply ends — paced in real time
    (one unit per second, like a microphone), since the engine prepares replies in the background."""
    speech = np.concatenate([silence(2.0), piper_speech(question)])
    extra = {"frame_base64_list": [base64.b64encode(frame).decode()]} if frame else {}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    results: list[dict] = []
    for i, c in enumerate(chunks(speech, UNIT) + [silence(1.0)] * max_units):
        await asyncio.sleep(max(0.0, t0 + i - loop.time()))
        r = await unit(ws, c, **extra)
        results.append(r)
        if not r["is_listen"] and r["end_of_turn"]:
            break
    return results


async def test_audio_duplex_listens_then_speaks(idle):
    ws = await connect(idle.ws + "/ws/duplex/adx_e2e")
    p = await prepare(ws)
    assert p["prompt_length"] > 0 and p["recording_session_id"]
    results = await converse(ws, "What is the capital of France?")
    assert [r["current_time"] for r in results] == list(range(len(results)))
    assert all(r["is_listen"] for r in results[:2]), "force_listen_count units must listen"
    for r in results:
        if r["is_listen"]:
            assert r["text"] == "" and r["audio_data"] == ""
        for k in ("cost_llm_ms", "cost_tts_ms", "cost_all_ms", "wall_clock_ms", "n_tokens", "n_tts_tokens",
                  "kv_cache_length", "server_send_ts", "end_of_turn"):
            assert k in r
    speak = [r for r in results if not r["is_listen"]]
    assert speak, "the assistant never spoke"
    text = "".join(r["text"] for r in speak)
    assert text.strip()
    audio = np.concatenate([decode_f32(r["audio_data"]) for r in speak if r["audio_data"]])
    assert len(audio) > 24000 * 0.3
    assert (await health(idle))["worker_status"] == "duplex_active"
    await ws.send(json.dumps({"type": "stop"}))
    assert (await recv_until(ws, "stopped", 20))[-1] == {"type": "stopped", "session_id": "adx_e2e"}
    await assert_idle(idle)

    folder = idle.data_dir / "sessions" / p["recording_session_id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["type"] == "audio_duplex" and meta["status"] == "complete" and meta["units"] == len(results)
    rec = json.loads((folder / "recording.json").read_text())
    units = [e for e in rec["timeline"] if "unit" in e]
    assert len(units) == len(results) and units[-1]["t_sent_s"] >= units[0]["t_received_s"]
    heard = " ".join(u["user_text"] for u in units).lower()
    assert "capital" in heard, heard
    if "france" in heard:  # Piper's speech varies run to run and ASR sometimes mishears a word
        assert "paris" in text.lower(), (heard, text)
    user, sr = sf.read(folder / "user.wav")
    assert sr == 16000 and len(user) == UNIT * len(results)
    ai, sr = sf.read(folder / "ai.wav")
    assert sr == 24000 and abs(len(ai) - len(audio)) < 10
    replay, sr = sf.read(folder / "replay.wav")
    assert sr == 24000 and replay.shape[1] == 2
    assert len(replay) >= 24000 * len(results) * 0.9
    assert np.abs(replay[:, 1]).max() > 0.01 and np.abs(replay[:, 0]).max() > 0.01
    first_ai = next(u for u in units if u["ai_samples"])
    start = first_ai["replay_ai_start"]
    assert start == round(first_ai["replay_ai_start_s"] * 24000)
    np.testing.assert_allclose(replay[start:start + 2400, 1], ai[:2400], atol=2e-4)


async def test_omni_duplex_with_camera_frames(idle):
    ws = await connect(idle.ws + "/ws/duplex/omni_cam")
    p = await prepare(ws)
    frame = text_image("OPEN 24 HOURS", fmt="JPEG")
    await ws.send(json.dumps({"type": "video_frame", "frame": base64.b64encode(frame).decode()}))
    results = await converse(ws, "What does the sign say?", frame=frame, max_units=10)
    assert len(results) >= 4
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 20)
    await assert_idle(idle)
    folder = idle.data_dir / "sessions" / p["recording_session_id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["type"] == "omni_duplex"
    rec = json.loads((folder / "recording.json").read_text())
    first = next(e for e in rec["timeline"] if "unit" in e)
    assert len(first["frames"]) == 2  # the video_frame joined the first unit, plus its own frame
    assert (folder / first["frames"][0]).read_bytes() == frame


async def test_duplex_pause_resume_and_pause_timeout(idle):
    ws = await connect(idle.ws + "/ws/duplex/adx_pause")
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "Speak like a pirate.",
                              "tts_ref_audio_base64": b64(piper_speech("Hello there, this is a voice sample."))}))
    p = (await recv_until(ws, "prepared", 60))[-1]
    await unit(ws, silence(1.0))
    await ws.send(json.dumps({"type": "pause", "timeout": 30}))
    assert (await recv_until(ws, "paused", 20))[-1] == {"type": "paused", "timeout": 30}
    assert (await health(idle))["worker_status"] == "duplex_paused"
    # units sent while paused are dropped, not answered
    await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(silence(1.0))}))
    await ws.send(json.dumps({"type": "resume"}))
    assert (await recv(ws, 20))["type"] == "resumed"
    assert (await health(idle))["worker_status"] == "duplex_active"
    r = await unit(ws, silence(1.0))
    assert r["current_time"] == 1
    await ws.send(json.dumps({"type": "pause", "timeout": 99999}))
    assert (await recv_until(ws, "paused", 20))[-1]["timeout"] == 30   # capped by the server
    await ws.send(json.dumps({"type": "resume"}))
    await recv_until(ws, "resumed", 20)
    await ws.send(json.dumps({"type": "pause", "timeout": 1}))
    await recv_until(ws, "paused", 20)
    m = await recv(ws, 10)
    assert m["type"] == "timeout" and m["reason"] == "pause_timeout", m
    await assert_idle(idle)
    folder = idle.data_dir / "sessions" / p["recording_session_id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["system_prompt"] == "Speak like a pirate." and meta["ref_audio"] is True
    assert meta["end_reason"] == "timeout_pause_timeout" and meta["units"] == 2
    events = [e["event"] for e in json.loads((folder / "recording.json").read_text())["timeline"] if "event" in e]
    assert events == ["pause", "resume", "pause", "resume", "pause"]


async def test_duplex_idle_timeout(idle):
    ws = await connect(idle.ws + "/ws/duplex/adx_idle")
    await prepare(ws)
    await unit(ws, silence(1.0))
    m = await recv(ws, 15)  # the test worker's duplex_idle_timeout_s is 4
    assert m["type"] == "timeout" and m["reason"] == "idle", m
    await assert_idle(idle)


async def test_duplex_invalid_messages_keep_session(idle):
    ws = await connect(idle.ws + "/ws/duplex/omni_bad")
    for frame, expect in [
        (json.dumps({"type": "prepare", "config": {"chunk_ms": 5}}), "chunk_ms"),
        (json.dumps({"type": "prepare", "config": {"temperature": "hot"}}), "temperature"),
        (json.dumps({"type": "prepare", "config": {"sample_rate": 44100}}), "sample_rate"),
    ]:
        await ws.send(frame)
        m = await recv(ws, 20)
        assert m["type"] == "error" and expect in m["error"], m
    await prepare(ws, chunk_ms=500)
    for frame, expect in [
        (json.dumps({"type": "audio_chunk", "audio_base64": b64(silence(0.1))}), "expected 8000 samples"),
        (json.dumps({"type": "audio_chunk", "audio_base64": "***"}), "base64"),
        (json.dumps({"type": "audio_chunk", "audio_base64": b64(silence(0.5)), "frame_base64_list": ["@@"]}), "base64"),
        (json.dumps({"type": "pause", "timeout": -3}), "timeout"),
        (json.dumps({"type": "video_frame"}), "frame"),
        (json.dumps({"type": "bogus"}), "unknown"),
        ("[1, 2]", "json object"),
        (json.dumps({"type": "audio_chunk", "audio_base64": "A" * (2 * 1024 * 1024 + 100)}), "too large"),
    ]:
        await ws.send(frame)
        m = await recv(ws, 20)
        assert m["type"] == "error" and expect in m["error"].lower(), (frame[:80], m)
    await ws.send(json.dumps({"type": "client_diagnostic", "info": "ignored"}))
    r = await unit(ws, silence(0.5))
    assert r["current_time"] == 0
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 20)
    await assert_idle(idle)


async def test_duplex_disconnect_frees_worker(idle):
    ws = await connect(idle.ws + "/ws/duplex/adx_gone")
    await prepare(ws)
    await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(silence(1.0))}))
    await ws.close()
    await assert_idle(idle)
