"""Realtime bench: the same spoken questions through ``/v1/realtime`` and through ``/ws/half_duplex``.

    .venv/bin/python bench/realtime.py [--turns N] [--silence-ms MS]

Starts ``omniserve up --http`` (one real worker, loopback, a temporary data folder). Each endpoint
gets one session in which the questions are spoken one after another, in real time (100 ms of
audio every 100 ms, the speech then silence until the answer), with the same end-of-turn silence
(``--silence-ms``) and the same low temperature. For each turn it times, from the moment the last
sample of speech was sent: the first transcript text and the first audio of the answer. It prints
p50 / p95 of both per endpoint and the realtime adapter's per-turn overhead (realtime − native,
p50) — the figures docs/benchmarks.md quotes.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from faults import System  # noqa: E402

from omniserve.audio import encode_f32, resample  # noqa: E402
from tests.conftest import piper_speech, silence  # noqa: E402

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?",
             "What color is the sky on a clear day?", "What is two plus two?", "Name a large animal.",
             "What is the opposite of hot?", "Which planet do we live on?", "What do bees make?"]
STEP_S = 0.1


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _turn(ws, speech: np.ndarray, frame, is_text, is_audio, is_end) -> tuple[float, float]:
    """Speak in real time; returns (first text, first audio) after the end of speech, in ms."""
    chunks = [speech[i:i + int(16000 * STEP_S)] for i in range(0, speech.size, int(16000 * STEP_S))]
    t_end = 0.0
    first_text = first_audio = None
    done = asyncio.Event()

    async def reader():
        nonlocal first_text, first_audio
        async for raw in ws:
            m = json.loads(raw)
            now = time.monotonic()
            if first_text is None and is_text(m):
                first_text = now
            if first_audio is None and is_audio(m):
                first_audio = now
            if is_end(m):
                done.set()
                return

    task = asyncio.create_task(reader())
    start = time.monotonic()
    for k, c in enumerate(chunks):
        await asyncio.sleep(max(0.0, start + k * STEP_S - time.monotonic()))
        await ws.send(frame(c))
    t_end = time.monotonic()
    quiet = silence(STEP_S)
    k = len(chunks)
    while not done.is_set() and time.monotonic() - t_end < 60:
        await asyncio.sleep(max(0.0, start + k * STEP_S - time.monotonic()))
        k += 1
        await ws.send(frame(quiet))
    await task
    for _ in range(10):                    # a little silence between turns
        await ws.send(frame(quiet))
    assert first_text is not None and first_audio is not None, "no answer"
    return (first_text - t_end) * 1000, (first_audio - t_end) * 1000


async def native(url: str, speeches: list[np.ndarray], silence_ms: int) -> list[tuple[float, float]]:
    async with websockets.connect(url + "/ws/half_duplex/hd_bench", max_size=None) as ws:
        while json.loads(await ws.recv())["type"] != "queue_done":     # queued while the last session ends
            pass
        await ws.send(json.dumps({"type": "prepare", "system_prompt": "Answer in one short sentence.",
                                  "config": {"vad": {"min_silence_duration_ms": silence_ms, "threshold": 0.5},
                                             "generation": {"temperature": 0.1, "max_new_tokens": 40}}}))
        while json.loads(await ws.recv())["type"] != "prepared":
            pass
        await asyncio.sleep(0.6)
        out = []
        for sp in speeches:
            out.append(await _turn(ws, sp, lambda c: json.dumps({"type": "audio_chunk", "audio_base64": encode_f32(c)}),
                                   lambda m: m["type"] == "chunk" and bool(m.get("text_delta")),
                                   lambda m: m["type"] == "chunk" and bool(m.get("audio_data")),
                                   lambda m: m["type"] in ("turn_done", "error")))
        await ws.send(json.dumps({"type": "stop"}))
    return out


def _pcm16(c: np.ndarray) -> str:
    x = np.clip(resample(c, 16000, 24000), -1, 1)
    return base64.b64encode((x * 32767).astype("<i2").tobytes()).decode()


async def realtime(url: str, speeches: list[np.ndarray], silence_ms: int) -> list[tuple[float, float]]:
    async with websockets.connect(url + "/v1/realtime?model=omniserve", max_size=None) as ws:
        while json.loads(await ws.recv())["type"] != "session.created":
            pass
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "instructions": "Answer in one short sentence.", "temperature": 0.1,
            "max_output_tokens": 40, "audio": {"input": {"turn_detection": {
                "type": "server_vad", "threshold": 0.5, "silence_duration_ms": silence_ms, "prefix_padding_ms": 30}}}}}))
        while json.loads(await ws.recv())["type"] != "session.updated":
            pass
        out = []
        for sp in speeches:
            out.append(await _turn(ws, sp, lambda c: json.dumps({"type": "input_audio_buffer.append", "audio": _pcm16(c)}),
                                   lambda m: m["type"] == "response.output_audio_transcript.delta",
                                   lambda m: m["type"] == "response.output_audio.delta",
                                   lambda m: m["type"] in ("response.done", "error")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=8, help="questions per endpoint (default 8)")
    ap.add_argument("--silence-ms", type=int, default=500, help="end-of-turn silence for both (default 500)")
    a = ap.parse_args()
    speeches = [np.concatenate([silence(0.3), piper_speech(q)]) for q in (QUESTIONS * 4)[:a.turns]]
    with tempfile.TemporaryDirectory() as tmp:
        sysm = System(Path(tmp))
        try:
            rows = {}
            asyncio.run(native(sysm.ws, speeches[:1], a.silence_ms))         # warm-up (first TTS, caches)
            rows["/ws/half_duplex"] = asyncio.run(native(sysm.ws, speeches, a.silence_ms))
            rows["/v1/realtime"] = asyncio.run(realtime(sysm.ws, speeches, a.silence_ms))
        finally:
            sysm.stop()
    print(f"\nrealtime bench — {a.turns} spoken turns per endpoint, end-of-turn silence {a.silence_ms} ms, "
          f"omniserve up (real engine), loopback\n")
    print(f"{'endpoint':<18}{'first text p50':>16}{'p95':>8}{'first audio p50':>17}{'p95':>8}")
    for name, r in rows.items():
        text, audio = [x[0] for x in r], [x[1] for x in r]
        print(f"{name:<18}{pct(text, .5):>14.0f}ms{pct(text, .95):>6.0f}ms{pct(audio, .5):>15.0f}ms{pct(audio, .95):>6.0f}ms")
    over = [b[1] - a_[1] for a_, b in zip(rows["/ws/half_duplex"], rows["/v1/realtime"])]
    print(f"\nrealtime − native, first audio, per turn: p50 {statistics.median(over):+.0f} ms "
          f"(p50 of the two columns: {pct([x[1] for x in rows['/v1/realtime']], .5) - pct([x[1] for x in rows['/ws/half_duplex']], .5):+.0f} ms)")


if __name__ == "__main__":
    main()
