"""The OpenAI Realtime audio formats: pcm16 (24 kHz) and G.711 μ-law / A-law (8 kHz), as base64.

Decoding checks size before it allocates; everything comes out as float32 at the engine's 16 kHz,
and speech goes back from float32 24 kHz. The G.711 tables are built once from the ITU-T G.711
definitions (segment + mantissa).
"""
from __future__ import annotations

import base64
import binascii

import numpy as np

from .audio import IN_RATE, OUT_RATE, AudioError, resample

_BYTES_PER_SAMPLE = {"pcm16": 2, "g711_ulaw": 1, "g711_alaw": 1}
_RATES = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return (np.where(sign, -mag, mag) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exp, mant = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return (np.where(sign, mag, -mag) / 32768.0).astype(np.float32)


_ULAW = _ulaw_table()
_ALAW = _alaw_table()


def _sorted(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The codes in the order of their values, and those values (for the nearest-code search)."""
    order = np.argsort(table, kind="stable")
    return order, table[order]


_ENCODE = {"g711_ulaw": _sorted(_ULAW), "g711_alaw": _sorted(_ALAW)}     # built once


def _encode_g711(x: np.ndarray, fmt: str) -> bytes:
    """Nearest code for each sample (both tables are monotonic within each sign half)."""
    order, sorted_vals = _ENCODE[fmt]
    idx = np.clip(np.searchsorted(sorted_vals, x), 1, 255)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    idx = np.where(np.abs(x - left) <= np.abs(right - x), idx - 1, idx)
    return order[idx].astype(np.uint8).tobytes()


def decode_input(b64: str, fmt: str, *, max_samples: int) -> np.ndarray:
    """base64 audio in ``fmt`` → float32 mono at 16 kHz; AudioError on bad input or past ``max_samples``
    (counted in the format's own rate, before anything is decoded)."""
    if fmt not in _BYTES_PER_SAMPLE:
        raise AudioError(f"unsupported audio format {fmt!r}")
    if not isinstance(b64, str):
        raise AudioError("audio must be a base64 string")
    width = _BYTES_PER_SAMPLE[fmt]
    if len(b64) * 3 // 4 > (max_samples + 2) * width:
        raise AudioError(f"audio too long: more than {max_samples} samples in one event")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise AudioError("audio is not valid base64") from None
    if fmt == "pcm16":
        if len(raw) % 2:
            raise AudioError(f"pcm16 audio has an odd byte length ({len(raw)})")
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    else:
        pcm = (_ULAW if fmt == "g711_ulaw" else _ALAW)[np.frombuffer(raw, dtype=np.uint8)]
    return resample(pcm, _RATES[fmt], IN_RATE)


def encode_output(pcm24k: np.ndarray, fmt: str) -> str:
    """float32 speech at 24 kHz (the engine's ``OUT_RATE``) → base64 in ``fmt``."""
    x = resample(np.clip(np.asarray(pcm24k, dtype=np.float32), -1.0, 1.0), OUT_RATE, _RATES[fmt])
    if fmt == "pcm16":
        return base64.b64encode((x * 32767.0).astype("<i2").tobytes()).decode("ascii")
    return base64.b64encode(_encode_g711(x, fmt)).decode("ascii")


def rate_of(fmt: str) -> int:
    return _RATES[fmt]
