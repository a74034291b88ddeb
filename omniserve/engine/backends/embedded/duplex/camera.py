"""Camera notes (omni): the latest frame is described in the background, at most every
``FRAME_EVERY_S`` of session time (counted in units, not wall time) and never two at once. The
latest description joins the user's turn as ``(Camera: …)``."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Optional

from omniserve.engine.api import EngineInputError

from ..cascade import Cascade
from .background import Background
from .tuning import FRAME_EVERY_S


class CameraNotes:
    def __init__(self, cascade: Cascade, jobs: Background, chunk_ms: int) -> None:
        self.b = cascade
        self.jobs = jobs
        self.chunk_ms = chunk_ms
        self._lock = threading.Lock()
        self._job: Optional[Future] = None
        self._at = -1e9                 # session time (s) of the last description started
        self._note = ""

    def offer(self, frame: bytes, index: int) -> None:
        """The frame that came with unit ``index`` (already checked)."""
        now = index * self.chunk_ms / 1000
        if now - self._at < FRAME_EVERY_S or (self._job is not None and not self._job.done()):
            return
        self._at = now
        meter = self.jobs.meter

        def job() -> None:
            try:
                with meter.busy("vision"):
                    note = self.b.describe_image(frame)
            except EngineInputError:
                return
            with self._lock:
                self._note = note

        self._job = self.jobs.submit(job)

    @property
    def note(self) -> str:
        with self._lock:
            return self._note
