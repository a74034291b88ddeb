"""Validation the views do before any backend runs: settings and PCM audio (clear errors early)."""
from __future__ import annotations

import json
import re
from typing import Optional, Sequence

import numpy as np

from ..knobs import DUPLEX, GENERATION, VAD, Group
from .api import END_OF_TURN_MODES, DuplexSettings, EngineInputError, GenerationParams, Tool, ToolChoice, VadSettings

SAMPLE_RATE = 16000
MAX_AUDIO_S = 600.0

DEFAULT_SYSTEM = "You are a helpful assistant."

MAX_TOOLS = 32
MAX_TOOL_SPEC_CHARS = 8000        # one tool's name + description + JSON schema, as JSON
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")   # OpenAI's rule for function names


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
    if vad.end_of_turn not in ("", *END_OF_TURN_MODES):
        raise EngineInputError(f"VAD end_of_turn must be one of {', '.join(END_OF_TURN_MODES)}, "
                               f"not {str(vad.end_of_turn)[:40]!r}")
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


def check_tools(tools: Sequence[Tool], tool_choice: ToolChoice) -> None:
    """Tools a reply may call: a bounded number of named functions with object schemas."""
    if len(tools) > MAX_TOOLS:
        raise EngineInputError(f"at most {MAX_TOOLS} tools, got {len(tools)}")
    names = set()
    for t in tools:
        if not TOOL_NAME.match(t.name or ""):
            raise EngineInputError(f"tool name {t.name[:80]!r} must be 1-64 letters, digits, _ or -")
        if t.name in names:
            raise EngineInputError(f"tool {t.name!r} is declared twice")
        names.add(t.name)
        if not isinstance(t.parameters, dict):
            raise EngineInputError(f"tool {t.name!r}: parameters must be a JSON schema object")
        if len(json.dumps([t.description, t.parameters])) > MAX_TOOL_SPEC_CHARS:
            raise EngineInputError(f"tool {t.name!r}: its description and schema exceed {MAX_TOOL_SPEC_CHARS} characters")
    if tool_choice not in ("auto", "none", "required") and tool_choice not in names:
        raise EngineInputError(f"tool_choice {tool_choice[:80]!r} is not auto, none, required or a declared tool")
