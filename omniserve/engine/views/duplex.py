"""Full duplex: one call per unit of microphone audio (default 1 s) → listen, or speak a piece.

The view is thin on purpose: turn-taking is the backend's business (the embedded cascade uses a
VAD policy, an end-to-end model its own listen/speak tokens). The view validates the settings and
owns the session's life: prepare, one unit at a time, reset.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..api import DuplexSettings, EngineInputError, UnitResult, Voice
from ..backends.base import Backend, DuplexSession
from ..checks import check_duplex


class DuplexSessionView:
    """``api.DuplexView``."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self.session: Optional[DuplexSession] = None

    def prepare(self, system_prompt: str, voice: Optional[Voice] = None, config: DuplexSettings = DuplexSettings()) -> int:
        """Start a session (a previous one is closed); returns the prompt length in tokens."""
        check_duplex(config)
        self.reset()
        self.session = self._b.duplex(system_prompt, voice, config)
        return self.session.prepare()

    def unit(self, audio_chunk: np.ndarray, frames: Optional[list[bytes]] = None, force_listen: bool = False) -> UnitResult:
        if self.session is None:
            raise EngineInputError("prepare the duplex session first")
        return self.session.unit(audio_chunk, frames, force_listen)

    def reset(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None

    def kv_cache_length(self) -> int:
        return self._b.cache_length()
