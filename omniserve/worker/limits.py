"""Input limits and decoding of client payloads, so every session checks them the same way.

Everything here raises ``InputError`` with a user-facing text; sessions turn that into an
``error`` frame and carry on. Limits come from ``WorkerSettings`` and cannot be raised by a client.
"""
from __future__ import annotations

import base64
import binascii
from typing import Optional

import numpy as np

from ..audio import IN_RATE, AudioError, decode_f32, resample
from ..config import WorkerSettings
from ..mediaprobe import MAX_AUDIO_RATE, MIN_AUDIO_RATE


class InputError(ValueError):
    """A client payload we cannot use; ``str(e)`` goes back to the client."""


class FrameTooBig(InputError):
    """A frame over its size cap. ``fatal`` frames end the session (close 1009)."""

    def __init__(self, size: int, cap: int, fatal: bool = False) -> None:
        super().__init__(f"Frame too large: {size} bytes (limit {cap} bytes)")
        self.size, self.cap, self.fatal = size, cap, fatal


# Half-duplex VAD results are ignored this long after prepare (PROTOCOL.md).
VAD_GRACE_S = 0.5
# Longest reference audio we turn into a voice (seconds at 16 kHz).
MAX_REF_AUDIO_S = 30.0


def biggest_frame(ws: WorkerSettings) -> int:
    """The transport limit handed to uvicorn: above every per-message cap, so that a frame between
    a cap and this limit gets a readable ``error`` instead of a bare close."""
    return max(ws.max_chat_frame_bytes, ws.max_prepare_frame_bytes, ws.max_duplex_frame_bytes,
               ws.max_audio_frame_bytes, ws.max_realtime_frame_bytes) + 1024 * 1024


def stream_cap(ws: WorkerSettings, mode: str) -> int:
    """Cap of a non-prepare frame on a voice endpoint."""
    if mode == "realtime":
        return ws.max_realtime_frame_bytes
    return ws.max_audio_frame_bytes if mode == "half_duplex" else ws.max_duplex_frame_bytes


def audio(b64: str, *, max_s: float, what: str = "audio") -> np.ndarray:
    """base64 float32 16 kHz → samples; empty or too long is an error (the length is checked on
    the base64 text, before anything is decoded)."""
    max_samples = int(max_s * IN_RATE)
    if isinstance(b64, str) and len(b64) > (max_samples * 4 + 2) // 3 * 4 + 4:
        raise InputError(f"{what}: audio too long (max {max_samples} samples)")
    try:
        pcm = decode_f32(b64, max_samples=max_samples)
    except AudioError as e:
        raise InputError(f"{what}: {e}") from None
    if pcm.size == 0:
        raise InputError(f"{what}: empty audio")
    return pcm


def audio_at(b64: str, rate: int, *, max_s: float, what: str = "audio") -> np.ndarray:
    """base64 float32 at ``rate`` (8-48 kHz) → 16 kHz samples. The rate and the sample cap
    (``max_s`` seconds at ``rate``) are checked before anything is decoded or resampled."""
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:
        raise InputError(f"{what}: sample_rate must be {MIN_AUDIO_RATE}-{MAX_AUDIO_RATE} Hz")
    pcm = audio(b64, max_s=max_s * rate / IN_RATE, what=what)
    return resample(pcm, rate, IN_RATE) if rate != IN_RATE else pcm


def unit_audio(b64: str, chunk_ms: int) -> np.ndarray:
    """One duplex unit: must be ``chunk_ms`` of audio (±25 %, the rest padded or cut)."""
    want = chunk_ms * IN_RATE // 1000
    pcm = audio(b64, max_s=2 * chunk_ms / 1000, what="audio_base64")
    if not (0.75 * want <= pcm.size <= 1.25 * want):
        raise InputError(f"audio_base64: expected {want} samples ({chunk_ms} ms at 16 kHz), got {pcm.size}")
    if pcm.size < want:
        pcm = np.pad(pcm, (0, want - pcm.size))
    return pcm[:want]


def blob(b64: str, *, what: str, max_bytes: int) -> bytes:
    """base64 → bytes (images, frames, video)."""
    if not isinstance(b64, str):
        raise InputError(f"{what}: expected a base64 string")
    if ";base64," in b64[:100]:  # tolerate data URLs from browsers
        b64 = b64.split(";base64,", 1)[1]
    if len(b64) > max_bytes * 4 // 3 + 4:
        raise InputError(f"{what}: too large (limit {max_bytes} bytes)")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: not valid base64") from None
    if not raw:
        raise InputError(f"{what}: empty")
    return raw


def capped(requested: Optional[float], default: float, cap: float) -> float:
    """A client-chosen timeout, never above the server's cap."""
    value = default if requested is None else float(requested)
    return max(0.1, min(value, cap))
