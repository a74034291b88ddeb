"""Engine benchmark: prints one table of the figures docs/engine.md quotes.

    .venv/bin/python bench/engine.py [--turns 8] [--duplex-seconds 40] [--threads 0]

Measures, on the real embedded models: view switch time, ASR real-time factor (Whisper base and
tiny.en), LLM time to first token and tokens/s, TTS real-time factor and time to first audio
(Piper, Kokoro), half-duplex end of speech (after the VAD endpoint) → first audio, duplex: the
unit call and the unit's real work (``cost_all_ms``: the call plus the background ASR, LLM, TTS
and vision time since the previous unit) as fractions of chunk_ms (fed at real time), and peak
RSS. Targets (2 cores): duplex unit call p95 ≤ 0.3 × chunk_ms, end of speech → first audio
p50 ≤ 600 ms, RSS ≤ 2 GB.

``--openai`` repeats the LLM, half-duplex and duplex figures with ``engine.llm.kind = openai``
against llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``) on
loopback, serving the same Qwen GGUF: what the HTTP hop and the lost KV-cache tricks cost.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omniserve.audio import OUT_RATE, resample  # noqa: E402
from omniserve.config import EngineSettings  # noqa: E402
from omniserve.engine import UnifiedProcessor  # noqa: E402
from omniserve.engine.api import (Delta, DuplexSettings, GenerationParams, Prefilled, SpeechEnded,  # noqa: E402
                                  VadSettings, Voice)
from omniserve.engine.backends.embedded import voice_session  # noqa: E402

ROWS: list[tuple[str, str, str]] = []
QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.", "How many legs does a spider have?",
             "What do bees make?", "Which planet is closest to the sun?", "What is two plus two?",
             "What colour is the sky on a clear day?", "Say something nice about mornings."]


def row(name: str, value: str, target: str = "") -> None:
    ROWS.append((name, value, target))
    print(f"  {name:52s} {value:>22s}  {target}", flush=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, float), q)) if xs else float("nan")


def parts(proc: UnifiedProcessor):
    return proc.backend.cascade.parts    # type: ignore[attr-defined]   # the embedded backend's models


def speech(proc: UnifiedProcessor, text: str) -> np.ndarray:
    return resample(parts(proc).speaker.synthesize(text, Voice("piper:joe")), OUT_RATE, 16000)


def bench_switch(proc: UnifiedProcessor) -> None:
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        proc.set_chat_mode()
        proc.set_half_duplex_mode()
        proc.set_duplex_mode()
    row("view switch", f"{(time.perf_counter() - t0) / (3 * n) * 1e6:.1f} µs", "≪ 100 µs")


def bench_asr(proc: UnifiedProcessor) -> None:
    clip = speech(proc, "The quick brown fox jumps over the lazy dog, and then it runs back into the quiet forest.")
    dur = clip.size / 16000
    b = parts(proc)
    for name, model in (("base", b.asr), ("tiny.en", b.fast_asr)):
        model.transcribe(clip[:16000])
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.transcribe(clip)
            ts.append(time.perf_counter() - t0)
        row(f"ASR real-time factor, Whisper {name} ({dur:.1f} s clip)", f"{statistics.median(ts) / dur:.3f}")


def bench_llm(proc: UnifiedProcessor, tag: str = "") -> None:
    c = proc.backend.cascade    # type: ignore[attr-defined]
    msgs = [{"role": "system", "content": c.system_prompt("You are a helpful assistant.", spoken=True)},
            {"role": "user", "content": "Tell me about the history of Paris in a few sentences."}]
    c.lm.reset()
    t0 = time.monotonic()
    stats = c.prefill(msgs)
    reply = c.reply(GenerationParams(max_new_tokens=96, temperature=0.0), voice=None)
    reply.wait()
    ttft = reply.first_token_at - t0
    decode_tps = reply.n_tokens / (reply.llm_ms / 1000) if reply.llm_ms else 0.0
    row(f"LLM time to first token ({stats.input_tokens}-token prompt, cold){tag}", f"{ttft * 1000:.0f} ms")
    row(f"LLM decode speed ({reply.n_tokens} tokens){tag}", f"{decode_tps:.1f} tok/s")


def bench_tts(proc: UnifiedProcessor) -> None:
    engines = parts(proc).speaker.engines
    text = "The weather is lovely today, so we are going for a walk in the park. Would you like to join us?"
    first = "The weather is lovely today,"
    for label, synth in (("Piper", lambda t: engines["piper"].synthesize(t)),
                         ("Kokoro", lambda t: engines["kokoro"].synthesize(t, voice=f"kokoro:{engines['kokoro'].default_voice}"))):
        synth("Warm up.")
        t0 = time.perf_counter()
        audio = synth(text)
        el = time.perf_counter() - t0
        t0 = time.perf_counter()
        synth(first)
        tfa = time.perf_counter() - t0
        row(f"TTS real-time factor, {label}", f"{el / (audio.size / OUT_RATE):.3f}")
        row(f"TTS time to first audio (first clause), {label}", f"{tfa * 1000:.0f} ms")


def bench_half_duplex(proc: UnifiedProcessor, turns: int, fast_asr: bool = True, tag: str = "") -> None:
    view = proc.set_half_duplex_mode()
    voice_session.TURN_ASR_FAST = fast_asr       # the cascade's turn ASR: tiny.en (default) or engine.asr_model
    tag = f"{turns} turns, turn ASR {'tiny.en' if fast_asr else proc.settings.asr_model}{tag}"
    view.prepare("You are a friendly voice assistant.", generation=GenerationParams(max_new_tokens=64, temperature=0.7),
                 voice=proc.voice(), vad=VadSettings(threshold=0.5, min_silence_duration_ms=600))
    lat, asr_ms, evaluated = [], [], []
    try:
        for q in (QUESTIONS * 4)[:turns]:
            stream = np.concatenate([np.zeros(8000, np.float32), speech(proc, q), np.zeros(16000, np.float32)])
            t0 = first = None
            nxt = time.monotonic()
            for i in range(0, stream.size, 8000):        # 0.5 s chunks at real time, as the worker receives them
                time.sleep(max(0.0, nxt - time.monotonic()))
                nxt += 0.5
                for e in view.feed(stream[i:i + 8000]):
                    if isinstance(e, SpeechEnded):       # the VAD endpoint: the turn's reply follows
                        t0 = time.perf_counter()
                    elif isinstance(e, Prefilled) and t0 is not None:
                        asr_ms.append((time.perf_counter() - t0) * 1000)
                        evaluated.append(e.evaluated)
                    elif isinstance(e, Delta) and e.audio is not None and t0 is not None and first is None:
                        first = time.perf_counter() - t0
                if t0 is not None:
                    break
            lat.append(first * 1000 if first else float("nan"))
        hits = getattr(view.session, "speculation_hits", 0)
    finally:
        voice_session.TURN_ASR_FAST = True
    row(f"half-duplex end of speech → first audio p50 ({tag})", f"{pct(lat, 50):.0f} ms", "≤ 600 ms")
    row("half-duplex end of speech → first audio p95", f"{pct(lat, 95):.0f} ms")
    row("  wait in prefill after the endpoint, p50", f"{pct(asr_ms, 50):.0f} ms")
    row("  tokens evaluated per turn p50 (prefix reuse)", f"{pct(evaluated, 50):.0f}")
    row("  turns answered from the speculative reply", f"{hits}/{turns}")


def bench_duplex(proc: UnifiedProcessor, seconds: int, chunk_ms: int = 1000, tag: str = "") -> None:
    """A scripted conversation fed at real time: 2 units of silence, a question, 6 units of silence …"""
    view = proc.set_duplex_mode()
    view.prepare("You are a friendly voice assistant.", config=DuplexSettings(chunk_ms=chunk_ms, force_listen_count=1))
    n = chunk_ms * 16
    parts: list[np.ndarray] = []
    speech_ends: list[int] = []          # sample where each question ends
    qi, pos = 0, 0
    while pos < seconds * 16000:
        q = speech(proc, QUESTIONS[qi % len(QUESTIONS)])
        qi += 1
        parts += [np.zeros(2 * n, np.float32), q, np.zeros(6 * n + (-q.size) % n, np.float32)]
        speech_ends.append(pos + 2 * n + q.size)
        pos += 2 * n + q.size + 6 * n + (-q.size) % n
    stream = np.concatenate(parts)[: seconds * 16000]
    costs: list[float] = []              # the unit call itself
    work: list[float] = []               # the unit's real work: the call plus background ASR/LLM/TTS/vision
    first_audio_unit: dict[int, int] = {}
    nxt = time.monotonic()
    for u, i in enumerate(range(0, stream.size - n + 1, n)):
        now = time.monotonic()
        if nxt > now:
            time.sleep(nxt - now)
        nxt += chunk_ms / 1000
        r = view.unit(stream[i:i + n])
        costs.append(r.timings.get("cost_unit_ms", r.timings["cost_all_ms"]))
        work.append(r.timings["cost_all_ms"])
        if r.audio is not None:
            k = max((j for j, e in enumerate(speech_ends) if e <= i + n), default=None)
            if k is not None and k not in first_audio_unit:
                first_audio_unit[k] = u
    view.reset()
    # audio of unit u reaches the client when unit u is answered, i.e. at (u + 1) * chunk_ms of stream time
    lat = [((u + 1) * n - speech_ends[k]) / 16 for k, u in first_audio_unit.items()]
    row(f"duplex unit call p50 / chunk_ms ({len(costs)} units of {chunk_ms} ms){tag}", f"{pct(costs, 50) / chunk_ms:.3f}")
    row(f"duplex unit call p95 / chunk_ms{tag}", f"{pct(costs, 95) / chunk_ms:.3f}", "≤ 0.30")
    row(f"duplex unit work (cost_all_ms) p50 / p95 / max ÷ chunk_ms{tag}",
        f"{pct(work, 50) / chunk_ms:.2f} / {pct(work, 95) / chunk_ms:.2f} / {max(work) / chunk_ms:.2f}")
    row(f"duplex end of speech → first audio unit p50 ({len(lat)} turns){tag}", f"{pct(lat, 50):.0f} ms")


def bench_openai(args: argparse.Namespace, skip: set[str]) -> None:
    """The same figures with the LLM behind llama-cpp-python's OpenAI-compatible server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from omniserve.config import LLMSettings
    from tests.support.llm_server import start_llm_server

    server = start_llm_server(n_ctx=4096, threads=args.threads or (os.cpu_count() or 1))
    try:
        llm = LLMSettings(kind="openai", base_url=server.base_url, model=server.model, n_ctx=4096)
        proc = UnifiedProcessor(EngineSettings(threads=args.threads, llm=llm))
        tag = " [openai]"
        if "llm" not in skip:
            bench_llm(proc, tag)
        if "half" not in skip:
            bench_half_duplex(proc, args.turns, tag=tag)
        if "duplex" not in skip:
            bench_duplex(proc, args.duplex_seconds, tag=tag)
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--duplex-seconds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of: switch,asr,llm,tts,half,halfbase,duplex")
    ap.add_argument("--openai", action="store_true",
                    help="also: LLM, half-duplex and duplex with engine.llm.kind=openai against llama_cpp.server")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"omniserve engine bench — {os.cpu_count()} CPUs, threads={args.threads or 'all'}", flush=True)
    t0 = time.perf_counter()
    proc = UnifiedProcessor(EngineSettings(threads=args.threads))
    row("load all models", f"{time.perf_counter() - t0:.1f} s")
    steps = [("switch", lambda: bench_switch(proc)), ("asr", lambda: bench_asr(proc)), ("llm", lambda: bench_llm(proc)),
             ("tts", lambda: bench_tts(proc)), ("half", lambda: bench_half_duplex(proc, args.turns)),
             ("halfbase", lambda: bench_half_duplex(proc, args.turns, fast_asr=False)),
             ("duplex", lambda: bench_duplex(proc, args.duplex_seconds))]
    for name, fn in steps:
        if name not in skip:
            fn()
    row("peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", "≤ 2048 MB")
    if args.openai:                      # a second processor (its LLM in another process): after the RSS row
        bench_openai(args, skip)
    print("\n| measure | value | target |\n| --- | --- | --- |")
    for name, value, target in ROWS:
        print(f"| {name.strip()} | {value} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
