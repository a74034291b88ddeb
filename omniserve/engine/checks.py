"""Validation the views do before any backend runs: settings and PCM audio (clear errors early)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..knobs import DUPLEX, GENERATION, VAD, Group
from .api import DuplexSettings, EngineInputError, GenerationParams, VadSettings

SAMPLE_RATE = 16000
MAX_AUDIO_S = 600.0

DEFAULT_SYSTEM = "You are a helpful assistant."


def _check(group: Group, values: object, what: str = "") -> None:
    """Every knob of ``group`` read from ``values``; the first out of range is an EngineInputError."""
    for name, knob in group.items():
        problem = knob.problem(what + name, getattr(values, name))
        if problem is not None:
            raise EngineInputError(problem)


def check_generation(params: GenerationParams) -> GenerationParams:
    """Ranges: ``omniserve.knobs.GENERATION`` (the wire's ``GenerationConfig`` has the same)."""
    _check(GENERATION, params)
    return params


def check_vad(vad: VadSettings) -> VadSettings:
    """Ranges: ``omniserve.knobs.VAD`` (the wire's ``VADConfig`` has the same)."""
    _check(VAD, vad, "VAD ")
    return vad


def check_duplex(cfg: DuplexSettings) -> DuplexSettings:
    """Ranges: ``omniserve.knobs.DUPLEX`` (the wire's ``DuplexConfig`` has the same)."""
    _check(DUPLEX, cfg, "duplex ")
    return cfg


def check_pcm(pcm: np.ndarray, *, what: str = "audio", max_seconds: Optional[float] = None) -> np.ndarray:
    """Validate 16 kHz mono float32 PCM; raise EngineInputError with a readable reason."""
    if not isinstance(pcm, np.ndarray):
        raise EngineInputError(f"{what} must be a numpy array of float32 samples, got {type(pcm).__name__}")
    if pcm.dtype != np.float32:
        raise EngineInputError(f"{what} must be float32 PCM, got {pcm.dtype}")
    if pcm.ndim != 1:
        raise EngineInputError(f"{what} must be mono (1-D), got shape {pcm.shape}")
    if pcm.size == 0:
        raise EngineInputError(f"{what} is empty")
    if not np.isfinite(pcm).all():
        raise EngineInputError(f"{what} contains NaN or infinite samples")
    if max_seconds is not None and pcm.size > max_seconds * SAMPLE_RATE:
        raise EngineInputError(f"{what} too long: {pcm.size / SAMPLE_RATE:.1f} s (max {max_seconds:g} s)")
    return pcm


def check_audio(pcm: object, sample_rate: int = SAMPLE_RATE, *, what: str = "audio",
                max_seconds: float = MAX_AUDIO_S) -> np.ndarray:
    """Return ``pcm`` as 1-D float32 16 kHz, or raise EngineInputError saying what is wrong."""
    if sample_rate != SAMPLE_RATE:
        raise EngineInputError(f"{what}: sample rate {sample_rate} Hz is not supported; "
                               f"send mono float32 PCM at {SAMPLE_RATE} Hz")
    if not isinstance(pcm, np.ndarray):
        raise EngineInputError(f"{what} must be a numpy array of float32 samples, got {type(pcm).__name__}")
    if pcm.dtype.kind == "f":
        pcm = pcm.astype(np.float32, copy=False)   # float64 from numpy/soundfile is fine
    return check_pcm(pcm, what=what, max_seconds=max_seconds)
