"""Wait-time estimates (PROTOCOL.md, "ETA").

Each request type has an estimate: the configured value until ``eta_ema_min_samples`` successful
sessions finished, then an exponential moving average of their durations. A busy worker's remaining
time is its estimate minus elapsed, or a 15 s floor once it overran. Queued entries are laid, in
order, onto whichever worker is free soonest (a heap), so one pass over the queue gives every ETA.

With ``gateway.redis_url`` the config and the statistics are shared by every gateway (two shared
maps, ``state.shared``): ``estimate`` stays a lookup in this process's copy; ``record`` updates the
shared EMA in one Lua script (read, apply alpha, write: two gateways recording at once never lose
an update) in the background; a config update reaches every gateway within a second, new
statistics within ``shared.REFRESH_S``.
"""
from __future__ import annotations

import asyncio
import heapq
import json
import logging
from pathlib import Path
from typing import Iterable, Optional

from pydantic import BaseModel, ValidationError

from ..protocol.modes import REQUEST_TYPES
from ..protocol.rest import EtaConfig, EtaOut
from .state.link import UNAVAILABLE
from .state.shared import SharedMaps

log = logging.getLogger(__name__)

OVERRUN_FLOOR_S = 15.0

# KEYS[1] the statistics map, KEYS[2] the config map; ARGV: request type, duration, alpha (when the
# shared config has none). Answers {ema, samples} after this sample.
_RECORD = """
local a = tonumber(redis.call('HGET', KEYS[2], 'eta_ema_alpha') or ARGV[3])
local prev = redis.call('HGET', KEYS[1], 'ema:' .. ARGV[1])
local d = tonumber(ARGV[2])
local ema = d
if prev then ema = a * d + (1 - a) * tonumber(prev) end
local n = redis.call('HINCRBY', KEYS[1], 'samples:' .. ARGV[1], 1)
local s = string.format('%.17g', ema)
redis.call('HSET', KEYS[1], 'ema:' .. ARGV[1], s)
return {s, n}
"""


class EtaEstimator:
    """Per-type duration estimates; the config is persisted in ``<data_dir>/eta_config.json`` (or shared)."""

    def __init__(self, path: Optional[Path] = None, shared: Optional[SharedMaps] = None) -> None:
        self._path = path
        self.config = EtaConfig.model_validate({})
        if path is not None and path.is_file():
            try:
                self.config = EtaConfig.model_validate_json(path.read_text())
            except Exception as e:  # a corrupt file must not stop the gateway
                log.warning("ignoring %s: %s", path, e)
        self._ema: dict[str, Optional[float]] = {t: None for t in REQUEST_TYPES}
        self._samples: dict[str, int] = {t: 0 for t in REQUEST_TYPES}
        self._shared = shared
        if shared is not None:      # the file is the first view only; the shared maps rule from now on
            self._config_map = shared.map("eta_config", self._config_changed,
                                          {f: json.dumps(v) for f, v in self.config.model_dump().items()})
            self._stats_map = shared.map("eta_stats", self._stats_changed, notify=False)
            self._record_script = shared.link.client.register_script(_RECORD)

    def _config_changed(self, data: dict[str, str]) -> None:
        try:
            self.config = EtaConfig.model_validate({f: json.loads(v) for f, v in data.items()})
        except (ValueError, ValidationError) as e:
            log.warning("ignoring the ETA config in Redis: %s", e)

    def _stats_changed(self, data: dict[str, str]) -> None:
        for t in REQUEST_TYPES:
            try:
                self._ema[t] = float(data["ema:" + t]) if "ema:" + t in data else None
                self._samples[t] = int(data.get("samples:" + t, 0))
            except ValueError:
                log.warning("ignoring the ETA statistics of %s in Redis: not a number", t)

    # ---------------------------------------------------------------- config
    async def update(self, upd: BaseModel) -> EtaConfig:   # an ``EtaConfigUpdate``
        """Apply only the given fields, then persist (the shared map: ``StateUnavailable`` when
        Redis cannot be reached)."""
        given = upd.model_dump(exclude_none=True)
        merged = EtaConfig.model_validate(self.config.model_dump() | given)
        if self._shared is not None:
            await self._config_map.write({f: json.dumps(getattr(merged, f)) for f in given})
            return self.config
        self.config = merged
        if self._path is not None:
            await asyncio.to_thread(self._save, self._path, merged)
        return self.config

    @staticmethod
    def _save(path: Path, config: EtaConfig) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.model_dump_json(indent=2))

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
        """One finished, successful session of this type (shared: written to Redis in the background)."""
        if request_type not in self._ema or duration_s < 0:
            return
        if self._shared is None or not self._shared.spawn(self._record_shared(request_type, duration_s)):
            self._record_here(request_type, duration_s)

    def _record_here(self, request_type: str, duration_s: float) -> None:
        a = self.config.eta_ema_alpha
        prev = self._ema[request_type]
        self._ema[request_type] = duration_s if prev is None else a * duration_s + (1 - a) * prev
        self._samples[request_type] += 1

    async def _record_shared(self, request_type: str, duration_s: float) -> None:
        keys = [self._stats_map.key, self._config_map.key]
        try:
            ema, n = await self._record_script(keys=keys, args=[request_type, repr(duration_s),
                                                                repr(self.config.eta_ema_alpha)])
        except UNAVAILABLE as e:      # counted here at least; the next reload brings Redis's view back
            self._stats_map.link.failed(e)
            self._record_here(request_type, duration_s)
            return
        self._stats_map.merge_local({"ema:" + request_type: ema, "samples:" + request_type: str(n)})

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
