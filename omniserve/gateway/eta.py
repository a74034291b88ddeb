"""Wait-time estimates (PROTOCOL.md, "ETA").

Each request type has an estimate: the configured value until ``eta_ema_min_samples`` successful
sessions finished, then an exponential moving average of their durations. A busy worker's remaining
time is its estimate minus elapsed, or a 15 s floor once it overran. Queued entries are laid, in
order, onto whichever worker is free soonest (a heap), so one pass over the queue gives every ETA.
"""
from __future__ import annotations

import heapq
import logging
from pathlib import Path
from typing import Iterable, Optional

from pydantic import BaseModel

from ..protocol.modes import REQUEST_TYPES
from ..protocol.rest import EtaConfig, EtaOut

log = logging.getLogger(__name__)

OVERRUN_FLOOR_S = 15.0


class EtaEstimator:
    """Per-type duration estimates; the config is persisted in ``<data_dir>/eta_config.json``."""

    def __init__(self, path: Optional[Path] = None) -> None:
        self._path = path
        self.config = EtaConfig()
        if path is not None and path.is_file():
            try:
                self.config = EtaConfig.model_validate_json(path.read_text())
            except Exception as e:  # a corrupt file must not stop the gateway
                log.warning("ignoring %s: %s", path, e)
        self._ema: dict[str, Optional[float]] = {t: None for t in REQUEST_TYPES}
        self._samples: dict[str, int] = {t: 0 for t in REQUEST_TYPES}

    # ---------------------------------------------------------------- config
    def update(self, upd: BaseModel) -> EtaConfig:   # an ``EtaConfigUpdate``
        """Apply only the given fields, then persist."""
        merged = self.config.model_dump() | upd.model_dump(exclude_none=True)
        self.config = EtaConfig.model_validate(merged)
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text(self.config.model_dump_json(indent=2))
        return self.config

    def snapshot(self) -> EtaOut:
        return EtaOut(**self.config.model_dump(), ema_s=dict(self._ema), samples=dict(self._samples),
                      effective_s={t: self.estimate(t) for t in REQUEST_TYPES})

    # ------------------------------------------------------------- estimates
    def estimate(self, request_type: str) -> float:
        ema = self._ema.get(request_type)
        if ema is not None and self._samples[request_type] >= self.config.eta_ema_min_samples:
            return ema
        return self.config.base_for(request_type)

    def record(self, request_type: str, duration_s: float) -> None:
        """One finished, successful session of this type."""
        if request_type not in self._ema or duration_s < 0:
            return
        a = self.config.eta_ema_alpha
        prev = self._ema[request_type]
        self._ema[request_type] = duration_s if prev is None else a * duration_s + (1 - a) * prev
        self._samples[request_type] += 1

    def remaining(self, request_type: str, elapsed_s: float) -> float:
        rem = self.estimate(request_type) - elapsed_s
        return rem if rem > 0 else OVERRUN_FLOOR_S

    def lay_out(self, free_in_s: list[float], queued_types: Iterable[str]) -> tuple[list[float], list[float]]:
        """Wait of each queued entry, in order, given when each usable worker is free (seconds).

        Also returns the final heap of free-times, so a newcomer can be laid on the tail."""
        heap = list(free_in_s) or [0.0]
        heapq.heapify(heap)
        est = {t: self.estimate(t) for t in REQUEST_TYPES}
        out: list[float] = []
        for t in queued_types:
            start = heapq.heappop(heap)
            out.append(start)
            heapq.heappush(heap, start + est.get(t, 0.0))
        return out, heap
