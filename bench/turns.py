"""Turn-taking bench: how a voice turn ends (``engine.api.END_OF_TURN_MODES``), in one run, on the
real embedded engine: "silence" (the timer alone), "words" (the timer, held while the turn's
transcript sounds unfinished), "semantic" (and Smart Turn v3.2 may hold a pause it hears
unfinished) and "eager" (Smart Turn is also asked after 300 ms, so a finished turn ends sooner).

    .venv/bin/python bench/turns.py [--turns 20] [--skip duplex]

Speech is made here, in 6 voices: espeak-ng en-us and en-gb, male and female, at two speaking rates,
plus Piper and Kokoro (nothing is checked in). "silence" is the behaviour before any end-of-turn
judge, so the columns are an A/B. Figures:

- half-duplex: true end of speech (the last sample of the question) → first reply audio, p50 / p95,
  spoken in real time in 100 ms chunks with the protocol's default VAD (800 ms silence);
- turns cut inside a 500–900 ms mid-sentence pause, 20 utterances, half-duplex in real time;
- duplex, 1 s units: end of speech → first reply audio, p50;
- Smart Turn inference per call (p50, on one thread);
- right answers on simple spoken questions (keyword-checked) and the word error of the turn's
  transcript (bench/answers.py compares the ASR settings).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omniserve.audio import resample  # noqa: E402
from omniserve.engine import load_processor  # noqa: E402
from omniserve.knobs import DUPLEX_PAGE  # noqa: E402
from omniserve.engine.api import (Delta, DuplexSettings, GenerationParams, Prefilled, SpeechEnded,  # noqa: E402
                                  VadSettings, Voice)
from omniserve.engine.backends.embedded.components.turn import SmartTurn  # noqa: E402
from tests.conftest import espeak_speech, piper_speech, silence, word_error_rate  # noqa: E402

QUESTIONS = [("What is two plus three?", ["five", "5"]), ("How many legs does a spider have?", ["eight", "8"]),
             ("What is the capital of France?", ["paris"]), ("What color is the sky on a clear day?", ["blue"]),
             ("How many days are there in a week?", ["seven", "7"]), ("What is the opposite of hot?", ["cold"]),
             ("Which planet do we live on?", ["earth"]), ("What do bees make?", ["honey"]),
             ("What is ten minus four?", ["six", "6"]), ("What animal says moo?", ["cow"]),
             ("How many hours are in a day?", ["twenty-four", "twenty four", "24"]),
             ("What is the capital of Japan?", ["tokyo"]), ("What is frozen water called?", ["ice"]),
             ("How many months are in a year?", ["twelve", "12"]), ("What color is grass?", ["green"]),
             ("What is three times three?", ["nine", "9"]), ("Which is bigger, an elephant or a mouse?", ["elephant"]),
             ("What do cows drink?", ["water"]), ("What is the first letter of the alphabet?", ["a"]),
             ("How many wheels does a bicycle have?", ["two", "2"])]
PAUSED = [("I'd like to go to", "the train station, please."), ("My phone number is five five five", "one two three four."),
          ("Can you tell me", "what the weather is like today?"), ("I was thinking about", "buying a new car."),
          ("and then we went to the", "beach for the whole day."), ("The meeting is on", "Tuesday at ten."),
          ("So the reason I am calling is", "my order has not arrived."), ("I would like to order a", "large pizza."),
          ("Could you remind me to", "call my mother tomorrow?"), ("What I really want is", "a quiet evening at home.")]
ESPEAK = [("en-us", 165), ("en-gb", 165), ("en-us+f3", 140), ("en-gb+f2", 190)]


class Voices:
    """Six voices: four espeak-ng variants (two accents, male and female, two rates), Piper, Kokoro."""

    def __init__(self, proc) -> None:
        self.speaker = proc.backend.cascade.parts.speaker
        self.names = [f"espeak {v} {wpm}wpm" for v, wpm in ESPEAK] + ["piper joe", "kokoro jf_alpha"]

    def say(self, k: int, text: str) -> np.ndarray:
        k %= len(self.names)
        if k < len(ESPEAK):
            v, wpm = ESPEAK[k]
            return espeak_speech(text, voice=v, wpm=wpm)
        if k == len(ESPEAK):
            return piper_speech(text)
        pcm = self.speaker.synthesize(text, Voice("kokoro:jf_alpha"))   # the shipped voices are Kokoro's Japanese ones
        return resample(np.asarray(pcm, np.float32), 24000, 16000)


def trim(pcm: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """The speech without the synthesizer's leading and trailing silence (end of speech is exact)."""
    loud = np.flatnonzero(np.abs(pcm) > floor)
    return pcm[loud[0]:loud[-1] + 1] if loud.size else pcm


def pct(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if x == x)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def answered(text: str, keys: list[str]) -> bool:
    """A keyword of the right answer is in the reply (a whole word, for words in Latin letters)."""
    t = text.lower()
    return any(re.search(rf"\b{re.escape(kw)}\b", t) if kw.isascii() else kw in t for kw in keys)


def half_duplex(proc, voices: Voices, n: int, mode: str, *, language: str = "",
                prompt: str = "You are a friendly voice assistant.", questions=QUESTIONS, say=None) -> dict:
    """Real-time turns; returns latencies (ms), transcripts, replies (text, and their speech at 24 kHz)."""
    view = proc.set_half_duplex_mode()
    view.prepare(prompt, generation=GenerationParams(max_new_tokens=48, language=language),
                 voice=proc.voice(), vad=VadSettings(end_of_turn=mode))
    out: dict[str, list] = {"lat": [], "heard": [], "said": [], "ok": [], "audio": []}
    step = 1600
    for k, (q, keys) in enumerate((list(questions) * 4)[:n]):
        sp = trim(say(k, q) if say else voices.say(k, q))
        stream = np.concatenate([silence(0.4), sp, silence(3.0)])
        end = time.monotonic()                           # set when the last speech sample goes in
        first, heard, said, audio, t_start = None, "", [], [], time.monotonic()
        ended = False
        for i in range(0, stream.size, step):
            time.sleep(max(0.0, t_start + i / 16000 - time.monotonic()))
            if i <= 6400 + sp.size < i + step:
                end = time.monotonic() + ((6400 + sp.size) - i) / 16000
            for e in view.feed(stream[i:i + step]):
                if isinstance(e, SpeechEnded):
                    ended = True
                elif isinstance(e, Prefilled):
                    heard = e.heard
                elif isinstance(e, Delta):
                    said.append(e.text)
                    if e.audio is not None:
                        audio.append(e.audio)
                        first = first or time.monotonic()
            if ended:
                break
        out["lat"].append((first - end) * 1000 if first else float("nan"))
        out["heard"].append((q, heard))
        text = "".join(said)
        out["said"].append(text)
        out["ok"].append(answered(text, keys))
        out["audio"].append(np.concatenate(audio) if audio else np.zeros(0, np.float32))
    view.reset()
    return out


PAUSES_S = (0.5, 0.6, 0.7, 0.8, 0.9)


def splits(proc, voices: Voices, mode: str) -> int:
    """Turns cut inside a 500–900 ms mid-sentence pause, over 20 utterances (voices and pauses vary),
    with the protocol's default VAD: half-duplex sessions fed in real time (the words' judge needs
    the turn's transcript, made while the user pauses)."""
    cuts = 0
    view = proc.set_half_duplex_mode()
    for k, (a, b) in enumerate(PAUSED * 2):
        view.prepare("You are a friendly voice assistant.", generation=GenerationParams(max_new_tokens=8),
                     voice=None, vad=VadSettings(end_of_turn=mode))
        pause = PAUSES_S[k % len(PAUSES_S)]
        pcm = np.concatenate([silence(0.3), trim(voices.say(k, a)), silence(pause), trim(voices.say(k, b)), silence(2.0)])
        ends, t0 = 0, time.monotonic()
        for i in range(0, pcm.size, 1600):
            time.sleep(max(0.0, t0 + i / 16000 - time.monotonic()))
            ends += sum(isinstance(e, SpeechEnded) for e in view.feed(pcm[i:i + 1600]))
        cuts += ends > 1
        view.reset()
    return cuts


def duplex_splits(proc, voices: Voices, chunk_ms: int) -> int:
    """The same 20 paused utterances in duplex (our pages' unit), in real time: a turn cut inside
    the pause is answered twice (the first half, then the rest)."""
    cuts = 0
    n = chunk_ms * 16
    view = proc.set_duplex_mode()
    for k, (a, b) in enumerate(PAUSED * 2):
        view.prepare("You are a friendly voice assistant.", config=DuplexSettings(chunk_ms=chunk_ms, force_listen_count=1))
        pause = PAUSES_S[k % len(PAUSES_S)]
        pcm = np.concatenate([silence(0.5), trim(voices.say(k, a)), silence(pause), trim(voices.say(k, b)), silence(4.0)])
        pcm = np.concatenate([pcm, silence((-pcm.size % n) / 16000)])
        replies, listening, nxt = 0, True, time.monotonic()
        for i in range(0, pcm.size, n):
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt += chunk_ms / 1000
            r = view.unit(pcm[i:i + n])
            if listening and not r.is_listen:
                replies += 1
            listening = r.is_listen
        cuts += replies > 1
        view.reset()
    return cuts


def duplex(proc, voices: Voices, turns: int) -> list[float]:
    view = proc.set_duplex_mode()
    view.prepare("You are a friendly voice assistant.", config=DuplexSettings(chunk_ms=1000, force_listen_count=1))
    n = 16000
    parts, ends, pos = [], [], 0
    for k in range(turns):
        q = trim(voices.say(k, QUESTIONS[k % len(QUESTIONS)][0]))
        pad = (-q.size) % n
        parts += [silence(2.0), q, silence(0.0 + (6 * n + pad) / 16000)]
        ends.append(pos + 2 * n + q.size)
        pos += 2 * n + q.size + 6 * n + pad
    stream = np.concatenate(parts)
    first: dict[int, float] = {}
    t0 = time.monotonic()                 # when the stream's first sample is captured
    for i in range(0, stream.size - n + 1, n):
        time.sleep(max(0.0, t0 + (i + n) / 16000 - time.monotonic()))   # the unit exists once captured
        r = view.unit(stream[i:i + n])
        if r.audio is not None:
            k = max((j for j, e in enumerate(ends) if e <= i + n), default=None)
            if k is not None and k not in first:
                first[k] = time.monotonic()       # the result carrying the reply's first audio is back
    view.reset()
    return [(t - (t0 + ends[k] / 16000)) * 1000 for k, t in first.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=20, help="spoken questions per configuration (default 20)")
    ap.add_argument("--duplex-turns", type=int, default=6)
    ap.add_argument("--skip", default="", help="comma-separated: duplex, splits, duplex_splits, half_duplex")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    proc = load_processor()
    parts = proc.backend.cascade.parts
    model = parts.turn or SmartTurn()
    voices = Voices(proc)
    rows: list[tuple[str, ...]] = []
    cost = []
    probe = np.concatenate([piper_speech("What is the capital of France?"), silence(0.3)])
    for _ in range(20):
        t0 = time.perf_counter()
        model.complete(probe)
        cost.append((time.perf_counter() - t0) * 1000)
    rows.append(("Smart Turn inference per call, p50 / max (one thread)", "", "",
                 f"{statistics.median(cost):.1f} / {max(cost):.1f} ms", ""))
    res = {}
    default = parts.turn_mode
    modes = ("silence", "words", "semantic", "eager")
    for mode in modes:
        parts.turn, parts.turn_mode = model, mode         # duplex follows the engine's mode (no VAD settings)
        if "half_duplex" not in skip:
            res[mode] = half_duplex(proc, voices, a.turns, mode)
        if "splits" not in skip:
            res[mode + "_splits"] = splits(proc, voices, mode)
        if "duplex_splits" not in skip:
            res[mode + "_dsplits"] = duplex_splits(proc, voices, DUPLEX_PAGE.chunk_ms.default)
        if "duplex" not in skip:
            res[mode + "_duplex"] = duplex(proc, voices, a.duplex_turns)
    parts.turn, parts.turn_mode = model, default

    def cols(f) -> tuple[str, ...]:
        return tuple(f(m) for m in modes)

    if "half_duplex" not in skip:
        rows.append(("half-duplex end of speech → first audio p50 / p95",
                     *cols(lambda m: f"{pct(res[m]['lat'], 50):.0f} / {pct(res[m]['lat'], 95):.0f} ms")))
        rows.append(("right answers (keyword-checked)", *cols(lambda m: f"{sum(res[m]['ok'])}/{len(res[m]['ok'])}")))
        rows.append(("ASR word error of the turns",
                     *cols(lambda m: f"{statistics.mean(word_error_rate(q, h) for q, h in res[m]['heard']) * 100:.1f} %")))
    if "splits" not in skip:
        rows.append(("turns cut inside a 500–900 ms mid-sentence pause", *cols(lambda m: f"{res[m + '_splits']}/20")))
    if "duplex_splits" not in skip:
        rows.append((f"… duplex ({DUPLEX_PAGE.chunk_ms.default} ms units)", *cols(lambda m: f"{res[m + '_dsplits']}/20")))
    if "duplex" not in skip:
        rows.append(("duplex (1 s units) end of speech → first audio p50",
                     *cols(lambda m: f"{pct(res[m + '_duplex'], 50):.0f} ms")))
    load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:3]
    print(f"\nturns bench — real engine, {len(voices.names)} voices ({', '.join(voices.names)}), load {' '.join(load)}\n")
    print(f"{'figure':<54}" + "".join(f"{m + (' (default)' if m == default else ''):>20}" for m in modes))
    for name, *vals in rows:
        print(f"{name:<54}" + "".join(f"{v:>20}" for v in vals))
    if "half_duplex" not in skip:
        r = res["semantic"]
        misses = [(q, h, s) for (q, h), s, ok in zip(r["heard"], r["said"], r["ok"]) if not ok]
        print("\nwrong answers (semantic run): heard → said")
        for q, h, s in misses:
            print(f"  {q!r}: {h!r} → {s.strip()[:80]!r}")


if __name__ == "__main__":
    main()
