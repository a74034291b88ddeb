"""Half-duplex voice: the backend finds the user's turns in a microphone stream and answers each.

The view validates the session's settings and every chunk, and owns the session's life: one
voice session at a time, closed on reset or on the next prepare.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional

import numpy as np

from ..api import EngineInputError, Event, GenerationParams, VadSettings, Voice
from ..backends.base import Backend, VoiceSession
from ..checks import check_audio, check_generation, check_vad

MAX_CHUNK_S = 30.0


class HalfDuplexSessionView:
    """``api.HalfDuplexView``."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self.session: Optional[VoiceSession] = None

    def prepare(self, system_prompt: str, *, voice: Optional[Voice] = None, generation: GenerationParams = GenerationParams(),
                vad: VadSettings = VadSettings()) -> int:
        """Start a session (a previous one is closed); returns the prompt length in tokens."""
        check_generation(generation)
        check_vad(vad)
        self.reset()
        self.session = self._b.voice_session(system_prompt or "", vad, generation, voice)
        return self.session.prepare()

    def feed(self, pcm16k: np.ndarray, stop: Optional[threading.Event] = None) -> Iterator[Event]:
        if self.session is None:
            raise EngineInputError("prepare the half-duplex session first")
        pcm = check_audio(pcm16k, what="audio chunk", max_seconds=MAX_CHUNK_S)
        return self.session.feed(pcm, stop if stop is not None else threading.Event())

    def reset(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None

    def kv_cache_length(self) -> int:
        return self._b.cache_length()
