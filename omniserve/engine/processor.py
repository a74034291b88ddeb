"""``UnifiedProcessor``: load the models once, hand out one of three views over them.

The views are built once, at load time, and hold only a reference to the backend; switching
mode closes the previous view's session state and returns another object — no model is loaded,
copied or moved, so a switch costs microseconds (``bench/engine.py`` measures it).
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np

from ..config import EngineSettings
from .api import Voice
from .views import ChatSession, DuplexSessionView, HalfDuplexSession

BACKENDS = ("embedded", "minicpmo")


def make_backend(settings: EngineSettings):
    if settings.backend == "embedded":
        from .backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings)
    if settings.backend == "minicpmo":
        raise NotImplementedError("the MiniCPM-o backend is not part of this build yet; use engine.backend=embedded")
    raise ValueError(f"unknown engine backend {settings.backend!r}; choose one of {BACKENDS}")


class UnifiedProcessor:
    """``api.Processor``. One per worker; one view active at a time (one session per worker)."""

    def __init__(self, settings: Optional[EngineSettings] = None, *, backend=None) -> None:
        t0 = time.monotonic()
        self.settings = settings or EngineSettings()
        self.backend = backend if backend is not None else make_backend(self.settings)
        self.load_s = time.monotonic() - t0
        self._chat = ChatSession(self.backend)
        self._half = HalfDuplexSession(self.backend)
        self._duplex = DuplexSessionView(self.backend)
        self._active: object = None
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return {id(self._chat): "chat", id(self._half): "half_duplex", id(self._duplex): "duplex"}.get(id(self._active), "")

    def _switch(self, view):
        with self._lock:
            if self._active is not view and self._active is not None:
                self._active.reset()
            self._active = view
        return view

    def set_chat_mode(self) -> ChatSession:
        return self._switch(self._chat)

    def set_half_duplex_mode(self) -> HalfDuplexSession:
        return self._switch(self._half)

    def set_duplex_mode(self) -> DuplexSessionView:
        return self._switch(self._duplex)

    def voice_from_reference(self, pcm16k: np.ndarray) -> Voice:
        return self.backend.voice_from_reference(pcm16k)

    def default_voice(self) -> Voice:
        return self.backend.default_voice()

    def describe_image(self, data: bytes) -> str:
        return self.backend.describe_image(data)


def load_processor(settings: Optional[EngineSettings] = None) -> UnifiedProcessor:
    return UnifiedProcessor(settings)
