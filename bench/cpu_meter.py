"""CPU seconds of named sets of processes, and of the whole machine, over an interval (psutil):
what each part of a bench cost, and whether the cores were full."""
from __future__ import annotations

import time
from typing import Iterable

import psutil


class CpuMeter:
    """CPU seconds of named process sets and of the whole machine between ``start()`` and ``stop()``."""

    def __init__(self, groups: dict[str, Iterable[psutil.Process]]) -> None:
        self.groups = {name: list(ps) for name, ps in groups.items()}

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.NoSuchProcess:
            return 0.0

    def _sample(self) -> tuple[float, dict[str, list[float]], float]:
        m = psutil.cpu_times()
        busy = m.user + m.nice + m.system + m.irq + m.softirq + getattr(m, "steal", 0.0)
        return time.monotonic(), {n: [self._cpu(p) for p in ps] for n, ps in self.groups.items()}, busy

    def start(self) -> None:
        self.t0, self.c0, self.m0 = self._sample()

    def stop(self) -> dict:
        """{"wall", "machine_pct", "groups": {name: {"cpu_s", "pct", "max_pct"}}} (pct: of one core)."""
        t1, c1, m1 = self._sample()
        wall = max(1e-9, t1 - self.t0)
        groups = {}
        for n in self.groups:
            each = [b - a for a, b in zip(self.c0[n], c1[n])]
            groups[n] = {"cpu_s": sum(each), "pct": 100 * sum(each) / wall, "max_pct": 100 * max(each, default=0) / wall}
        return {"wall": wall, "machine_pct": 100 * (m1 - self.m0) / wall, "groups": groups}
