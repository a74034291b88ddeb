"""Two numbers that describe a voice: median pitch (F0) and speaking rate (syllables per second).

Used to describe the shipped TTS voices and to pick the closest one for a user's reference
recording. Both sides are measured with the same functions, so their errors cancel out; the
figures are approximate by design (plain numpy, no ML).
"""
from __future__ import annotations

import numpy as np

_FMIN, _FMAX = 60.0, 400.0


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    if x.size < size:
        return np.zeros((0, size), np.float32)
    n = 1 + (x.size - size) // hop
    idx = np.arange(size)[None, :] + hop * np.arange(n)[:, None]
    return x[idx]


def median_pitch(audio: np.ndarray, sr: int) -> float:
    """Median F0 in Hz over voiced frames (normalized autocorrelation); 0.0 if none is voiced."""
    x = np.asarray(audio, np.float64)
    if x.size == 0:
        return 0.0
    size, hop = int(0.04 * sr), int(0.01 * sr)
    fr = _frames(x, size, hop)
    if not len(fr):
        return 0.0
    rms = np.sqrt((fr ** 2).mean(axis=1))
    loud = rms > max(1e-4, 0.1 * np.percentile(rms, 95))
    lo, hi = int(sr / _FMAX), int(sr / _FMIN)
    f0s = []
    for f in fr[loud]:
        f = (f - f.mean()) * np.hanning(size)
        spec = np.fft.rfft(f, 2 * size)
        ac = np.fft.irfft(spec * np.conj(spec))[:size]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.45:
            f0s.append(sr / lag)
    return float(np.median(f0s)) if len(f0s) >= 3 else 0.0


def speaking_rate(audio: np.ndarray, sr: int) -> float:
    """Syllables per second of speech: peaks of the smoothed loudness envelope per second of
    non-silent audio (pauses do not count)."""
    x = np.asarray(audio, np.float64)
    hop = int(0.01 * sr)
    fr = _frames(x, 2 * hop, hop)
    if len(fr) < 10:
        return 0.0
    env = np.sqrt((fr ** 2).mean(axis=1))
    env = np.convolve(env, np.hanning(7) / np.hanning(7).sum(), mode="same")
    floor = 0.1 * np.percentile(env, 95)
    speech = env > floor
    if speech.sum() < 10:
        return 0.0
    peaks, last = 0, -100
    for i in range(1, len(env) - 1):
        if env[i] > floor * 2 and env[i] >= env[i - 1] and env[i] > env[i + 1] and i - last >= 10:
            # a nucleus must rise clearly above the nearest dip on the left
            dip = env[max(0, last if last > 0 else 0):i].min() if i > 0 else 0.0
            if env[i] > 1.25 * dip:
                peaks += 1
                last = i
    return float(peaks / (speech.sum() * 0.01))


def measure_voice(audio: np.ndarray, sr: int, _text: str = "") -> tuple[float, float]:
    """(median pitch Hz, syllables per second)."""
    return median_pitch(audio, sr), speaking_rate(audio, sr)
