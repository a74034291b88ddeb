"""Validation of per-request settings, shared by the views and the backends (clear errors early)."""
from __future__ import annotations

from .api import EngineInputError, GenerationParams, VadSettings

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
