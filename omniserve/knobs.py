"""The per-session settings a client may send — generation, VAD, duplex — each stated ONCE: its
default and its accepted range.

Three shapes derive from this module and must never state a figure of their own: the wire models
(``protocol.messages``: ``GenerationConfig``, ``HDGenerationConfig``, ``VADConfig``,
``HDSessionConfig``, ``DuplexConfig``, through ``Knob.bounds``), the engine's dataclasses
(``engine.api``: ``GenerationParams``, ``VadSettings``, ``DuplexSettings``, through
``Knob.default``) and the engine's checks (``engine.checks``, through ``Knob.problem``). The wire
must not be imported by the engine, nor the engine by the gateway, so this module imports neither:
it is plain data. ``tests/unit/test_knobs.py`` proves the shapes (and the web pages' defaults) agree.

The figures are PROTOCOL.md's defaults; the ranges are the wire's, which clients have always been
held to (the engine's own checks used to be looser in places: ``max_new_tokens`` up to 8192,
``speech_pad_ms`` up to 10000, no upper bound on ``top_k``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional


@dataclass(frozen=True)
class Knob:
    """A default and a range, in pydantic's words: ``ge``/``gt`` below, ``le``/``lt`` above
    (``None`` = unbounded), or a fixed set of ``choices``."""

    default: Any
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: tuple = ()

    def bounds(self) -> dict[str, float]:
        """The range as ``pydantic.Field`` keyword arguments."""
        return {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le), ("lt", self.lt)) if v is not None}

    def accepts(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if isinstance(self.default, bool):
            return isinstance(value, bool)
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            return False
        if math.isnan(v):
            return False
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def describe(self) -> str:
        """The range in words: "between 1 and 4096", "in (0, 1]", ">= 0", "16000"."""
        if self.choices:
            return " or ".join(f"{c:g}" if isinstance(c, (int, float)) else repr(c) for c in self.choices)
        lo, lo_open = (self.gt, True) if self.gt is not None else (self.ge, False)
        hi, hi_open = (self.lt, True) if self.lt is not None else (self.le, False)
        if lo is None and hi is None:
            return "a boolean" if isinstance(self.default, bool) else "a number"
        if hi is None:
            return f"{'>' if lo_open else '>='} {lo:g}"
        if lo is None:
            return f"{'<' if hi_open else '<='} {hi:g}"
        if not lo_open and not hi_open:
            return f"between {lo:g} and {hi:g}"
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def problem(self, name: str, value: Any) -> Optional[str]:
        """``None`` when ``value`` is accepted, else a user-facing sentence naming ``name``."""
        return None if self.accepts(value) else f"{name} must be {self.describe()}, got {value!r}"


class Group:
    """A settings group: its knobs as typed attributes, iterable as ``(name, knob)``."""

    def items(self) -> Iterator[tuple[str, Knob]]:
        for f in fields(self):  # type: ignore[arg-type]   # every subclass is a dataclass
            yield f.name, getattr(self, f.name)

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.items())

    def defaults(self) -> dict[str, Any]:
        return {n: k.default for n, k in self.items()}


# Sampling: shared by chat, half-duplex and duplex (the same Knob objects, so one statement each).
MAX_NEW_TOKENS = Knob(256, ge=1, le=4096)
TEMPERATURE = Knob(0.7, ge=0.0, le=2.0)
TOP_P = Knob(0.8, gt=0.0, le=1.0)
TOP_K = Knob(20, ge=0, le=1000)
LENGTH_PENALTY = Knob(1.1, gt=0.0, le=5.0)
# The language the session hears and answers in (an addition to PROTOCOL.md): "en" English (the
# fast English-only ASR), "zh" Mandarin Chinese, "auto" whichever of the two each turn is spoken
# in; "" = the engine decides ("auto" when the system prompt is written in Chinese, else its
# ``engine.language`` setting).
LANGUAGE = Knob("", choices=("", "auto", "en", "zh"))


@dataclass(frozen=True)
class Generation(Group):
    """``/ws/chat`` ``generation`` (PROTOCOL.md); the engine's ``GenerationParams``."""
    max_new_tokens: Knob = MAX_NEW_TOKENS
    temperature: Knob = TEMPERATURE
    top_p: Knob = TOP_P
    top_k: Knob = TOP_K
    length_penalty: Knob = LENGTH_PENALTY
    language: Knob = LANGUAGE


@dataclass(frozen=True)
class HalfDuplexGeneration(Group):
    """Half-duplex ``prepare.config.generation``: the subset of ``Generation`` it carries."""
    max_new_tokens: Knob = MAX_NEW_TOKENS
    length_penalty: Knob = LENGTH_PENALTY
    temperature: Knob = TEMPERATURE
    language: Knob = LANGUAGE


@dataclass(frozen=True)
class Vad(Group):
    """Half-duplex ``prepare.config.vad``; the engine's ``VadSettings``."""
    threshold: Knob = Knob(0.8, gt=0.0, lt=1.0)
    min_speech_duration_ms: Knob = Knob(128, ge=0, le=10_000)
    min_silence_duration_ms: Knob = Knob(800, ge=50, le=10_000)
    speech_pad_ms: Knob = Knob(30, ge=0, le=2_000)


@dataclass(frozen=True)
class HalfDuplexTimeouts(Group):
    """Half-duplex ``prepare.config.session`` (the worker caps it: ``half_duplex_timeout_cap_s``)."""
    timeout_s: Knob = Knob(180, gt=0)


@dataclass(frozen=True)
class Duplex(Group):
    """Full-duplex ``prepare.config``; the engine's ``DuplexSettings`` (which adds ``omni``, from
    the session id, not from the client)."""
    generate_audio: Knob = Knob(True)
    force_listen_count: Knob = Knob(3, ge=0, le=1000)
    max_new_speak_tokens_per_chunk: Knob = Knob(20, ge=1, le=200)
    temperature: Knob = TEMPERATURE
    top_p: Knob = TOP_P
    top_k: Knob = TOP_K
    listen_prob_scale: Knob = Knob(1.0, gt=0.0, le=10.0)
    length_penalty: Knob = LENGTH_PENALTY
    chunk_ms: Knob = Knob(1000, ge=100, le=5000)
    sample_rate: Knob = Knob(16000, choices=(16000,))
    language: Knob = LANGUAGE


@dataclass(frozen=True)
class DuplexPage(Group):
    """What our own duplex pages (omni, audio duplex) send where it differs from the protocol's
    default: a shorter unit. Third-party clients keep ``Duplex.chunk_ms`` (1000). Measured with
    ``bench/duplex_feel.py``: end of speech → first reply audio falls with the unit, and 250 ms
    units still keep pace on 2 CPU cores without playback gaps (docs/engine.md has the table)."""
    chunk_ms: Knob = Knob(250, ge=100, le=5000)


GENERATION = Generation()
HALF_DUPLEX_GENERATION = HalfDuplexGeneration()
VAD = Vad()
HALF_DUPLEX_SESSION = HalfDuplexTimeouts()
DUPLEX = Duplex()
DUPLEX_PAGE = DuplexPage()
