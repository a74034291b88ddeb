"""Pick a shipped TTS voice for a reference recording: match, do not clone.

The embedded engine cannot clone a voice. It measures the reference's median pitch (F0) and its
speaking rate, picks the shipped voice nearest in pitch (on a log scale, which is how pitch is
heard), and sets the speaking speed to bring that voice's rate toward the reference's. The
result is a ``Voice`` whose name carries the speed: ``"kokoro:jf_alpha@1.10"``.

``VoiceBank`` is the cascade's speech output: the shipped synthesizers, their voices, the default.
Text that is mainly Chinese is spoken by a voice that speaks Mandarin (an engine's
``chinese_voices``), whatever voice the session picked: the picked one when it is among them, else
the one nearest to it in pitch (Piper's joe → Kokoro's jm_kumo). Other text keeps the picked voice.
"""
from __future__ import annotations

import math
from typing import Optional, Protocol, Sequence

import numpy as np

from omniserve.engine.api import EngineInputError, Voice
from .components.base import SpeechSynthesizer, VoiceInfo
from .components.text import is_mainly_chinese, normalize_for_speech
from .components.voiceprint import median_pitch, speaking_rate

MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 60.0
SPEED_RANGE = (0.8, 1.25)


def parse_voice(voice: Voice) -> tuple[str, float]:
    """("piper:joe", 1.0) from a Voice name like "piper:joe" or "kokoro:jf_alpha@1.10"."""
    name, _, speed = voice.name.partition("@")
    try:
        s = float(speed) if speed else 1.0
    except ValueError:
        raise EngineInputError(f"bad voice name {voice.name!r}") from None
    if not math.isfinite(s) or not 0.5 <= s <= 2.0:
        raise EngineInputError(f"bad voice speed in {voice.name!r}")
    return name, s


def check_reference(pcm16k: object) -> np.ndarray:
    if not isinstance(pcm16k, np.ndarray) or pcm16k.dtype.kind != "f" or pcm16k.ndim != 1:
        raise EngineInputError("reference audio must be mono float32 PCM at 16 kHz")
    if pcm16k.size == 0:
        raise EngineInputError("reference audio is empty")
    if not np.isfinite(pcm16k).all():
        raise EngineInputError("reference audio contains NaN or infinite samples")
    seconds = pcm16k.size / 16000
    if seconds < MIN_REFERENCE_S:
        raise EngineInputError(f"reference audio is too short ({seconds:.1f} s); give at least {MIN_REFERENCE_S:.0f} s of speech")
    if seconds > MAX_REFERENCE_S:
        pcm16k = pcm16k[: int(MAX_REFERENCE_S * 16000)]
    if float(np.max(np.abs(pcm16k))) < 1e-3:
        raise EngineInputError("reference audio is silent")
    return pcm16k.astype(np.float32, copy=False)


def match_voice(pcm16k: np.ndarray, voices: Sequence[VoiceInfo]) -> Voice:
    """The shipped voice closest to the reference in pitch, at a speed near its rate."""
    pcm = check_reference(pcm16k)
    pitch = median_pitch(pcm, 16000)
    if pitch <= 0:
        raise EngineInputError("no voiced speech found in the reference audio")
    rate = speaking_rate(pcm, 16000)
    usable = [v for v in voices if v.pitch_hz > 0]
    if not usable:
        raise EngineInputError("no TTS voice is available to match")
    best = min(usable, key=lambda v: _distance(pitch, rate, v))
    speed = 1.0
    if rate > 0 and best.rate_sps > 0:
        speed = min(max(rate / best.rate_sps, SPEED_RANGE[0]), SPEED_RANGE[1])
    name = best.name if abs(speed - 1.0) < 0.03 else f"{best.name}@{speed:.2f}"
    desc = (f"matched (not cloned): reference {pitch:.0f} Hz, {rate:.1f} syll/s → {best.name} "
            f"({best.pitch_hz:.0f} Hz) at speed {speed:.2f}")
    return Voice(name, desc)


def _distance(pitch: float, rate: float, v: VoiceInfo) -> float:
    d = abs(math.log2(pitch / v.pitch_hz))          # octaves apart
    if rate > 0 and v.rate_sps > 0:
        d += 0.1 * abs(math.log2(rate / v.rate_sps))  # rate matters less: speed can fix it
    return d


class Speaker(Protocol):
    """What the cascade's sessions need from speech output."""

    def synthesize(self, text: str, voice: Voice) -> np.ndarray: ...   # 24 kHz float32
    def voice(self, reference_pcm: Optional[np.ndarray]) -> Voice: ...   # None = the default voice


class VoiceBank:
    """``Speaker`` over synthesizers keyed by name prefix (``"piper"``, ``"kokoro"``)."""

    def __init__(self, engines: dict[str, SpeechSynthesizer], default: Voice) -> None:
        self.engines = engines
        self.default = default
        self._voices = [v for e in engines.values() for v in e.voices()]
        chinese = {n for e in engines.values() for n in getattr(e, "chinese_voices", ())}
        self._chinese = [v for v in self._voices if v.name in chinese]

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        name, speed = parse_voice(voice)
        engine = self.engines.get(name.partition(":")[0])
        if engine is None:
            raise EngineInputError(f"unknown voice {voice.name!r}")
        if self._chinese and isinstance(text, str) and is_mainly_chinese(normalize_for_speech(text)):
            name = self.chinese_voice(name)
            engine = self.engines[name.partition(":")[0]]
        return engine.synthesize(text, voice=name, speed=speed)

    def chinese_voice(self, name: str) -> str:
        """The voice that speaks Chinese for voice ``name``: itself if it can, else the Mandarin
        voice nearest to it in pitch."""
        if not self._chinese or any(v.name == name for v in self._chinese):
            return name
        me = next((v for v in self._voices if v.name == name and v.pitch_hz > 0), None)
        if me is None:
            return self._chinese[0].name
        usable = [v for v in self._chinese if v.pitch_hz > 0] or self._chinese
        return min(usable, key=lambda v: abs(math.log2(me.pitch_hz / v.pitch_hz)) if v.pitch_hz > 0 else 9).name

    def voice(self, reference_pcm: Optional[np.ndarray]) -> Voice:
        if reference_pcm is None:
            return self.default
        matched = match_voice(reference_pcm, self._voices)
        matched.reference = reference_pcm
        return matched
