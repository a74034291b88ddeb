"""The gateway's record of its workers and their slots.

A worker serves ``slots_total`` sessions at once (``protocol/worker.py``): the embedded CPU engine
one, a worker whose backend is a remote server several. The gateway dispatches per **slot**:
everything that used to be per worker (the ticket it serves, since when, paused, the release and
its confirmation) is per slot; what is per worker (online, the latest ``/health``, the cached
prefix hashes for chat affinity) stays on ``PooledWorker``.

Slot statuses are the worker's own (``WorkerStatus`` values, from its latest ``/health``) plus three
of the gateway's: ``offline`` (the worker does not answer), ``releasing`` (the gateway ended the
slot's session and waits for a report sent after that, saying idle) and ``stuck`` (it did not
report idle within ``release_idle_timeout_s``).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Optional

from ..protocol.modes import ERROR, IDLE, LOADING
from .queue import Ticket

OFFLINE = "offline"       # gateway-side: /health does not answer
RELEASING = "releasing"   # gateway-side: released, waiting for the worker to report this slot idle
STUCK = "stuck"           # gateway-side: did not report idle within the bound after a release
NOT_READY = {OFFLINE, LOADING, ERROR, STUCK}


@dataclass(eq=False)
class Slot:
    """One session place on one worker: the gateway's assignment and what the worker said of it."""
    worker: "PooledWorker"
    index: int
    status: str = OFFLINE
    ticket: Optional[Ticket] = None  # the gateway's assignment
    busy_since: float = 0.0
    last_used: float = 0.0
    paused: bool = False
    status_at: float = 0.0           # when the gateway last learned the status itself (a release, the
                                     # worker's own close): health reports sent before it are stale
    idle_deadline: float = 0.0       # releasing: idle by then, else stuck
    confirm_task: Optional[asyncio.Task] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.worker.url

    @property
    def ws_base(self) -> str:
        return self.worker.ws_base

    @property
    def key(self) -> str:
        """Names the slot across gateways (Redis): ``<worker url>#<index>``."""
        return f"{self.worker.url}#{self.index}"

    @property
    def ready(self) -> bool:
        """Usable now or soon (counted for ETAs)."""
        return self.worker.online and self.status not in NOT_READY

    @property
    def free(self) -> bool:
        """Dispatchable: the worker's own latest health says this slot is idle and nobody holds it."""
        return self.worker.online and self.status == IDLE and self.ticket is None


@dataclass(eq=False)
class PooledWorker:
    """One worker as the pool knows it: its URL, whether it answers, its slots and its chat cache."""
    url: str                         # http(s)://host:port
    index: int
    online: bool = False
    backend: str = ""
    cached_prefix_hashes: frozenset[str] = frozenset()
    last_health: Optional[float] = None
    failures: int = 0
    expires_at: Optional[float] = None   # registered workers: forgotten after this (monotonic) without a heartbeat
    slots: list[Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots.append(Slot(self, 0))

    @property
    def ws_base(self) -> str:
        return "ws" + self.url[len("http"):]

    @property
    def assigned(self) -> list[Slot]:
        return [s for s in self.slots if s.ticket is not None]

    @property
    def ready(self) -> bool:
        return any(s.ready for s in self.slots)

    @property
    def has_free(self) -> bool:
        return any(s.free for s in self.slots)

    @property
    def status(self) -> str:
        """One word for the whole worker: ``idle`` if a slot is free, else the first held slot's
        (its worker's word for it, or releasing / stuck), else slot 0's."""
        if self.has_free:
            return IDLE
        held = [s for s in self.slots if s.ticket is not None]
        return (held[0] if held else self.slots[0]).status

    def resize(self, total: int) -> None:
        """The worker now reports ``total`` slots: add the new ones; drop trailing ones nobody holds."""
        while len(self.slots) < total:
            self.slots.append(Slot(self, len(self.slots), status=OFFLINE))
        while len(self.slots) > max(1, total) and self.slots[-1].ticket is None:
            self.slots.pop()
