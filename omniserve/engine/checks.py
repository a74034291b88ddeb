"""Validation the views do before any backend runs: settings and PCM audio (clear errors early)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .api import DuplexSettings, EngineInputError, GenerationParams, VadSettings

SAMPLE_RATE = 16000
MAX_AUDIO_S = 600.0

DEFAULT_SYSTEM = "You are a helpful assistant."


def check_generation(params: GenerationParams) -> GenerationParams:
    if not 1 <= int(params.max_new_tokens) <= 8192:
        raise EngineInputError(f"max_new_tokens must be between 1 and 8192, got {params.max_new_tokens}")
    if not 0.0 <= float(params.temperature) <= 2.0:
        raise EngineInputError(f"temperature must be between 0 and 2, got {params.temperature}")
    if not 0.0 < float(params.top_p) <= 1.0:
        raise EngineInputError(f"top_p must be in (0, 1], got {params.top_p}")
    if int(params.top_k) < 0:
        raise EngineInputError(f"top_k must be >= 0, got {params.top_k}")
    if not 0.0 < float(params.length_penalty) <= 5.0:
        raise EngineInputError(f"length_penalty must be in (0, 5], got {params.length_penalty}")
    return params


def check_vad(vad: VadSettings) -> VadSettings:
    if not 0.0 < float(vad.threshold) < 1.0:
        raise EngineInputError(f"VAD threshold must be between 0 and 1, got {vad.threshold}")
    for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
        v = getattr(vad, name)
        if not 0 <= int(v) <= 10000:
            raise EngineInputError(f"VAD {name} must be between 0 and 10000, got {v}")
    return vad


def check_duplex(cfg: DuplexSettings) -> DuplexSettings:
    if cfg.sample_rate != 16000:
        raise EngineInputError(f"duplex sample_rate must be 16000, got {cfg.sample_rate}")
    if not 100 <= int(cfg.chunk_ms) <= 5000:
        raise EngineInputError(f"chunk_ms must be between 100 and 5000, got {cfg.chunk_ms}")
    if int(cfg.force_listen_count) < 0:
        raise EngineInputError(f"force_listen_count must be >= 0, got {cfg.force_listen_count}")
    if int(cfg.max_new_speak_tokens_per_chunk) < 1:
        raise EngineInputError(f"max_new_speak_tokens_per_chunk must be >= 1, got {cfg.max_new_speak_tokens_per_chunk}")
    if not 0.0 < float(cfg.listen_prob_scale) <= 10.0:
        raise EngineInputError(f"listen_prob_scale must be in (0, 10], got {cfg.listen_prob_scale}")
    check_generation(GenerationParams(1, cfg.temperature, cfg.top_p, cfg.top_k, cfg.length_penalty))
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
