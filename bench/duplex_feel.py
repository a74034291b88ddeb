"""Duplex conversation feel, on the real embedded engine: how soon a reply is heard per unit size,
whether units keep pace, and whether talking over a reply is told apart right (backchannel or
interruption).

    .venv/bin/python bench/duplex_feel.py [--chunks 1000,500,250] [--turns 6] [--barge 10] [--skip barge]

Speech is made here with espeak-ng (four voices) and Piper; nothing is checked in. Units are fed to
the duplex view in real time: unit ``u`` is handed over when its last sample would have been
captured, or when the previous unit returned if that is later (the worker runs units one by one).

- **end of speech → first reply audio**: from the moment the question's last sample was captured
  to the return of the first unit whose result carries audio, p50 / p95 per unit size;
- **keeps pace**: the share of units with ``cost_all_ms < chunk_ms`` (PROTOCOL.md) and the units'
  lag (return time − capture time of the unit's last sample), p95;
- **gaps**: a player like the page's (start delay 150 ms) fed each result's audio when it returns;
  an underrun mid-reply is a gap;
- **backchannels that cancelled / interruptions that did not**: a long reply is asked for; after
  it has spoken for a while, a backchannel ("yeah", "mm-hm", …) or a real interruption is spoken
  over it. A cancel is a result with ``end_of_turn`` that listens (the reply was cut); a
  backchannel is also counted as answered when it became a user turn of the conversation (which
  a reply would answer).

Machines are noisy: compare the columns of one run, not figures across runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omniserve.engine import load_processor  # noqa: E402
from omniserve.engine.api import DuplexSettings, UnitResult  # noqa: E402
from tests.conftest import espeak_speech, piper_speech, silence  # noqa: E402

PROMPT = "You are a friendly voice assistant. Answer in one or two short sentences."
QUESTIONS = ["What is two plus three?", "How many legs does a spider have?", "What is the capital of France?",
             "What color is the sky on a clear day?", "What do bees make?", "What animal says moo?",
             "How many days are there in a week?", "What is the opposite of hot?"]
STORY = ["Please tell me a long story about a brave knight and a dragon.",
         "Can you describe in detail how to bake a loaf of bread at home?"]
# espeak-ng says "mm-hm" / "mhm" in 0.5–0.95 s: longer than a backchannel (under ~400 ms), so not here
BACKCHANNELS = ["yeah", "uh huh", "okay", "right", "yes", "yep", "cool", "I see", "got it", "ok"]
INTERRUPTIONS = ["Wait, stop, what about the weather tomorrow?", "Hold on, I have a different question.",
                 "Sorry, can you tell me the time instead?", "No no, that is not what I asked.",
                 "Stop please, let me ask something else.", "Actually, tell me a joke instead.",
                 "Wait a second, I need help with my order.", "Excuse me, what is the capital of Spain?",
                 "Hang on, can we talk about music?", "Let me stop you there, thank you."]
ESPEAK = [("en-us", 165), ("en-gb", 165), ("en-us+f3", 140), ("en-gb+f2", 190)]
START_DELAY_S = 0.150          # the page's playback start delay (duplex-page.js start_delay_ms)


def say(k: int, text: str) -> np.ndarray:
    """Speech in voice ``k`` (four espeak-ng voices, then Piper), trimmed to the voiced part."""
    k %= len(ESPEAK) + 1
    pcm = piper_speech(text) if k == len(ESPEAK) else espeak_speech(text, voice=ESPEAK[k][0], wpm=ESPEAK[k][1])
    loud = np.flatnonzero(np.abs(pcm) > 0.01)
    pcm = pcm[loud[0]:loud[-1] + 1] if loud.size else pcm
    return (0.5 * pcm / max(1e-3, float(np.abs(pcm).max()))).astype(np.float32)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if x == x)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


@dataclass
class Feeder:
    """A duplex session fed in real time; every result is kept with its wall times."""
    view: object
    chunk_ms: int
    t0: float = 0.0
    sent: int = 0                                # samples handed over so far
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    log: list[tuple[int, float, UnitResult]] = field(default_factory=list)   # (end sample, returned at, result)
    lag_ms: list[float] = field(default_factory=list)
    cost_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.n = self.chunk_ms * 16
        self.t0 = time.monotonic()

    def captured_at(self, sample: int) -> float:
        """Wall time at which the microphone captured ``sample``."""
        return self.t0 + sample / 16000

    def feed(self, pcm: np.ndarray, until=None) -> list[UnitResult]:
        """Whole units of ``pcm`` (the rest waits); stops early once ``until(result)`` is true."""
        self.pending = np.concatenate([self.pending, pcm])
        out = []
        while self.pending.size >= self.n:
            chunk, self.pending = self.pending[:self.n], self.pending[self.n:]
            end = self.sent + self.n
            time.sleep(max(0.0, self.captured_at(end) - time.monotonic()))
            r = self.view.unit(chunk)
            now = time.monotonic()
            self.sent = end
            self.log.append((end, now, r))
            self.lag_ms.append((now - self.captured_at(end)) * 1000)
            self.cost_ms.append(float(r.timings.get("cost_all_ms", 0.0)))
            out.append(r)
            if until is not None and until(r):
                break
        return out

    def quiet_until(self, pred, max_s: float) -> Optional[UnitResult]:
        """Silence, unit by unit, until ``pred(result)`` (that result) or ``max_s``."""
        for _ in range(int(max_s * 1000 / self.chunk_ms) + 1):
            (r,) = self.feed(silence(self.chunk_ms / 1000))
            if pred(r):
                return r
        return None


def playback_gaps(arrivals: list[tuple[float, float]]) -> int:
    """Underruns of a player that starts START_DELAY_S after the first chunk: (arrived, seconds)."""
    gaps, end = 0, None
    for at, dur in arrivals:
        if end is None:
            end = at + START_DELAY_S
        elif at > end:
            gaps += 1
            end = at + 0.02
        end += dur
    return gaps


def latency(proc, chunk_ms: int, turns: int) -> dict:
    """End of speech → first reply audio over ``turns`` questions, with pace and gaps."""
    view = proc.set_duplex_mode()
    view.prepare(PROMPT, config=DuplexSettings(chunk_ms=chunk_ms, force_listen_count=1, omni=False))
    f = Feeder(view, chunk_ms)
    f.feed(silence(1.0))
    lat, gaps = [], 0
    for k in range(turns):
        q = say(k, QUESTIONS[k % len(QUESTIONS)])
        lead = 0.6 + (k * 0.37 % 1.0) * chunk_ms / 1000                 # the speech ends anywhere in a unit
        f.feed(np.concatenate([silence(lead), q]))
        spoken_end = f.sent + f.pending.size                         # the question's last sample
        t_end = f.captured_at(spoken_end)
        first = f.quiet_until(lambda r: r.audio is not None, 8.0)
        lat.append((f.log[-1][1] - t_end) * 1000 if first is not None else float("nan"))
        arrivals = [(f.log[-1][1], first.audio.size / 24000)] if first is not None else []
        done = first is not None and first.end_of_turn
        for _ in range(int(40_000 / chunk_ms)):                      # the rest of the reply
            if done:
                break
            (r,) = f.feed(silence(chunk_ms / 1000))
            if r.audio is not None:
                arrivals.append((f.log[-1][1], r.audio.size / 24000))
            done = r.end_of_turn
        gaps += playback_gaps(arrivals)
        f.feed(silence(1.0))
    view.reset()
    return {"lat": lat, "gaps": gaps, "pace": sum(c < chunk_ms for c in f.cost_ms) / len(f.cost_ms),
            "cost50": pct(f.cost_ms, 50), "lag95": pct(f.lag_ms, 95)}


def barge(proc, chunk_ms: int, kind: str, n: int) -> dict:
    """``n`` trials of speech over a reply; ``kind`` "backchannel" or "interruption"."""
    view = proc.set_duplex_mode()
    cut_wrong = answered = cut_units = 0
    cut_after: list[float] = []
    lengths: list[float] = []
    wrong: list[str] = []
    for k in range(n):
        view.prepare(PROMPT.split(".")[0] + ".", config=DuplexSettings(chunk_ms=chunk_ms, force_listen_count=1,
                                                                       omni=False))
        f = Feeder(view, chunk_ms)
        f.feed(np.concatenate([silence(0.8), say(k, STORY[k % 2])]))
        if f.quiet_until(lambda r: r.audio is not None, 10.0) is None:
            continue
        f.quiet_until(lambda r: r.end_of_turn, 1.5)                  # let it speak ~1.5 s
        if f.log[-1][2].end_of_turn:                                  # too short a reply to talk over
            continue
        words = BACKCHANNELS[k % len(BACKCHANNELS)] if kind == "backchannel" else INTERRUPTIONS[k % len(INTERRUPTIONS)]
        onset = f.sent + f.pending.size
        speech = say(k + 1, words)
        lengths.append(speech.size / 16)
        res = f.feed(np.concatenate([speech, silence(0.1)]), until=lambda r: r.end_of_turn)
        cut = next((r for r in res if r.end_of_turn), None)
        if cut is None and kind == "interruption":
            cut = f.quiet_until(lambda r: r.end_of_turn, 1.5)
        if cut is None and kind == "backchannel":
            cut = f.quiet_until(lambda r: r.end_of_turn, 2.0)
        was_cut = cut is not None and cut.is_listen                  # a listening end_of_turn: the reply was cut
        if was_cut:
            end_sample = next(e for e, _, r in f.log if r is cut)
            cut_after.append((end_sample - onset) / 16)
            cut_units += 1
        if was_cut != (kind == "interruption"):
            heard = " / ".join(r.user_text for _, _, r in f.log if r.user_text)
            wrong.append(f"{words!r} ({speech.size / 16:.0f} ms, voice {(k + 1) % (len(ESPEAK) + 1)}): heard {heard!r}")
        if kind == "backchannel":
            cut_wrong += was_cut
            # answered: the backchannel became a user turn of the conversation (a reply to it follows)
            answered += sum(m["role"] == "user" for m in view.session.conv.messages()) > 1
        else:
            cut_wrong += not was_cut
        view.reset()
    return {"wrong": cut_wrong, "answered": answered, "cut_after": cut_after, "trials": n, "lengths": lengths, "misjudged": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", default="1000,500,250", help="unit sizes in ms (default 1000,500,250)")
    ap.add_argument("--turns", type=int, default=6, help="questions per unit size (default 6)")
    ap.add_argument("--barge", type=int, default=10, help="backchannels and interruptions each (default 10)")
    ap.add_argument("--barge-chunk", type=int, default=0, help="unit for the barge-in trials (default: the last)")
    ap.add_argument("--skip", default="", help="comma-separated: latency, barge, interruptions")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    chunks = [int(c) for c in a.chunks.split(",")]
    proc = load_processor()
    load = open("/proc/loadavg").read().split()[:3]
    if "latency" not in skip:
        res = {c: latency(proc, c, a.turns) for c in chunks}
        print(f"\nduplex feel — real engine, {a.turns} questions per unit size, load {' '.join(load)}\n")
        print(f"{'chunk_ms':>9}{'speech end → audio p50':>24}{'p95':>8}{'cost_all<chunk':>16}"
              f"{'cost_all p50':>14}{'lag p95':>9}{'gaps':>6}")
        for c, r in res.items():
            print(f"{c:>9}{pct(r['lat'], 50):>21.0f} ms{pct(r['lat'], 95):>5.0f} ms{r['pace'] * 100:>15.0f}%"
                  f"{r['cost50']:>11.0f} ms{r['lag95']:>6.0f} ms{r['gaps']:>6}")
        for c, r in res.items():
            print(f"  {c} ms: " + " ".join(f"{x:.0f}" for x in r["lat"]))
    if "barge" not in skip:
        c = a.barge_chunk or chunks[-1]
        bc = barge(proc, c, "backchannel", a.barge)
        it = barge(proc, c, "interruption", 0 if "interruptions" in skip else a.barge)
        print(f"\nbarge-in — {c} ms units, load {' '.join(open('/proc/loadavg').read().split()[:3])}\n")
        print(f"backchannels that cancelled the reply: {bc['wrong']}/{bc['trials']}"
              f"   (answered as a new turn: {bc['answered']})")
        print(f"real interruptions that did not cancel: {it['wrong']}/{it['trials']}")
        for name, r in (("backchannels", bc), ("interruptions", it)):
            if not r["lengths"]:
                continue
            print(f"  {name}: {len(r['lengths'])} spoken, {min(r['lengths']):.0f}–{max(r['lengths']):.0f} ms long")
            for line in r["misjudged"]:
                print(f"    misjudged: {line}")
        if it["cut_after"]:
            print(f"interruption onset → cut (unit end), p50 / max: {pct(it['cut_after'], 50):.0f} / "
                  f"{max(it['cut_after']):.0f} ms")


if __name__ == "__main__":
    main()
