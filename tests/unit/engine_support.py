"""One real UnifiedProcessor per test process (models load once, ~6 s), shared by the engine tests."""
from __future__ import annotations

import time
from typing import Iterable, Optional

import numpy as np

from omniserve.engine.api import DuplexSettings, UnitResult

_PROCESSOR = None


def get_processor():
    global _PROCESSOR
    if _PROCESSOR is None:
        from omniserve.config import EngineSettings
        from omniserve.engine import UnifiedProcessor

        _PROCESSOR = UnifiedProcessor(EngineSettings())
    return _PROCESSOR


def units(stream: np.ndarray, chunk_ms: int = 1000) -> list[np.ndarray]:
    n = chunk_ms * 16
    stream = np.concatenate([stream, np.zeros((-stream.size) % n, np.float32)])
    return [stream[i:i + n] for i in range(0, stream.size, n)]


class Pacer:
    """Hands out unit start times one ``chunk_ms`` apart, like a live microphone, across calls."""

    def __init__(self, chunk_ms: int = 1000) -> None:
        self.chunk_s = chunk_ms / 1000
        self.next = None

    def wait(self) -> None:
        now = time.monotonic()
        if self.next is None or self.next < now - self.chunk_s:
            self.next = now
        if self.next > now:
            time.sleep(self.next - now)
        self.next += self.chunk_s


def run_duplex(view, chunks: Iterable[np.ndarray], pacer: Optional[Pacer] = None,
               force: Optional[set[int]] = None, frames: Optional[list[bytes]] = None) -> list[UnitResult]:
    """Feed units at the pace a microphone would (one per ``chunk_ms``) and collect the results."""
    pacer = pacer or Pacer()
    out = []
    for i, c in enumerate(chunks):
        pacer.wait()
        out.append(view.unit(c, frames=frames, force_listen=bool(force and i in force)))
    return out


def first_speaking(results: list[UnitResult]) -> Optional[int]:
    for i, r in enumerate(results):
        if not r.is_listen and (r.audio is not None or r.text):
            return i
    return None


def duplex_settings(**kw) -> DuplexSettings:
    base = dict(temperature=0.2, force_listen_count=1)
    base.update(kw)
    return DuplexSettings(**base)
