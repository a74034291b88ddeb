"""Interfaces of the cascade's components. Each is one small class behind one of these, so
another implementation (a test's scripted one, say) can replace it without touching the sessions.

All audio in is float32 mono 16 kHz; TTS output is float32 mono 24 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np


class VoiceActivityModel(Protocol):
    sample_rate: int          # 16000
    window: int               # native window in samples (Silero: 512 at 16 kHz)

    def reset(self) -> None: ...
    def prob(self, window: np.ndarray) -> float: ...   # speech probability of one window (stateful, streaming)
    def fork(self) -> "VoiceActivityModel": ...        # a fresh stream state sharing the loaded model


class EndOfTurnModel(Protocol):
    def complete(self, pcm16k: np.ndarray) -> float: ...   # P(the user's turn is complete), from its audio


class SpeechRecognizer(Protocol):
    def transcribe(self, pcm16k: np.ndarray, *, language: Optional[str] = "en",
                   initial_prompt: Optional[str] = None) -> str: ...
    # (text, language): the likeliest of ``languages`` picked from the audio, then transcribed in it
    def hear(self, pcm16k: np.ndarray, languages: Sequence[str] = ("en", "zh")) -> tuple[str, str]: ...


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repeat_penalty: float = 1.1


@dataclass
class VoiceInfo:
    name: str                 # e.g. "piper:joe", "kokoro:af_heart"
    pitch_hz: float           # median F0 of the voice
    rate_sps: float           # speaking rate, syllables per second (approx.)
    gender: str = ""          # "f" | "m" | ""


class SpeechSynthesizer(Protocol):
    sample_rate: int          # always 24000 (resampled inside when the model's rate differs)

    def voices(self) -> list[VoiceInfo]: ...
    def synthesize(self, text: str, voice: Optional[str] = None, speed: float = 1.0) -> np.ndarray: ...


class ImageDescriber(Protocol):
    def describe(self, image: bytes) -> str: ...   # short caption; EngineInputError if undecodable
