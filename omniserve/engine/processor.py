"""``UnifiedProcessor``: load the models once, hand out one of four views over them.

The views are built once, at load time, and hold only a reference to the backend; switching
mode closes the previous view's session and returns another object — no model is loaded,
copied or moved, so a switch costs microseconds (``bench/engine.py`` measures it).
"""
from __future__ import annotations

import threading
import time
from typing import Optional, Protocol, Union

import numpy as np

from ..config import ENGINE_BACKENDS, EngineSettings
from .api import Capabilities, Voice
from .backends.base import Backend
from .views import ChatSessionView, DuplexSessionView, HalfDuplexSessionView, RealtimeSessionView

View = Union[ChatSessionView, HalfDuplexSessionView, DuplexSessionView, RealtimeSessionView]


class BackendType(Protocol):
    """A backend's class: what it serves is known before it loads anything."""
    capabilities: Capabilities

    def __call__(self, settings: EngineSettings) -> Backend: ...


def backend_type(name: str) -> BackendType:
    """The backend named ``name`` (``engine.backend``): one package under ``backends/`` each.
    Importing it loads no model (the worker reads ``capabilities`` before the engine loads)."""
    if name == "embedded":
        from .backends.embedded import EmbeddedBackend

        return EmbeddedBackend
    raise ValueError(f"unknown engine backend {name!r}; choose one of {ENGINE_BACKENDS}")


def make_backend(settings: EngineSettings) -> Backend:
    return backend_type(settings.backend)(settings)


class UnifiedProcessor:
    """``api.Processor``. One per worker; one view active at a time (one session per worker)."""

    def __init__(self, settings: Optional[EngineSettings] = None, *, backend: Optional[Backend] = None) -> None:
        t0 = time.monotonic()
        self.settings = settings or EngineSettings()
        self.backend: Backend = backend if backend is not None else make_backend(self.settings)
        self.capabilities: Capabilities = self.backend.capabilities
        self.load_s = time.monotonic() - t0
        self._chat = ChatSessionView(self.backend)
        self._half = HalfDuplexSessionView(self.backend)
        self._duplex = DuplexSessionView(self.backend)
        self._realtime = RealtimeSessionView(self.backend)
        self._active: Optional[View] = None
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return {id(self._chat): "chat", id(self._half): "half_duplex", id(self._duplex): "duplex",
                id(self._realtime): "realtime"}.get(id(self._active), "")

    def _switch(self, view: View) -> None:
        with self._lock:
            if self._active is not view and self._active is not None:
                self._active.reset()
            self._active = view

    def set_chat_mode(self) -> ChatSessionView:
        self._switch(self._chat)
        return self._chat

    def set_half_duplex_mode(self) -> HalfDuplexSessionView:
        self._switch(self._half)
        return self._half

    def set_duplex_mode(self) -> DuplexSessionView:
        self._switch(self._duplex)
        return self._duplex

    def set_realtime_mode(self) -> RealtimeSessionView:
        self._switch(self._realtime)
        return self._realtime

    def voice(self, reference_pcm: Optional[np.ndarray] = None) -> Voice:
        """The voice to speak with: matched to (or, by a cloning backend, made from) a reference."""
        return self.backend.voice(reference_pcm)


def load_processor(settings: Optional[EngineSettings] = None) -> UnifiedProcessor:
    return UnifiedProcessor(settings)
