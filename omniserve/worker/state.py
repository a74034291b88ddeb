"""The worker's runtime: what each of its slots is doing now, who holds it, the loaded engine and
its thread.

One worker owns one engine and serves ``slots`` sessions at once (``capacity.slot_count``: the
embedded CPU engine 1). ``WorkerRuntime`` is the single place that knows whether a new session may
start (``try_acquire``, per slot) and that reports to ``/health`` (``protocol.worker.WorkerHealth``).
All engine calls run on ONE dedicated thread (``run_engine``): the engine is not thread-safe, and
keeping inference off the event loop is what lets ``/health``, ``stop``, ``pause`` and barge-in
answer while a model is busy.

States (of the engine, then of each slot once it is loaded)::

    loading ──load ok──▶ idle ◀──release── busy_chat | busy_half_duplex | busy_realtime | duplex_active ⇄ duplex_paused
       └────load failed──▶ error

While a session holds a slot the slot's status follows the session's phase (``lifecycle.py``;
each connection maps phases to statuses: a paused duplex session is ``duplex_paused``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar

from ..engine.api import Processor
from ..protocol.worker import (BUSY_STATUSES, MAX_PREFIX_HASHES, Capability, SlotHealth, WorkerHealth,
                               WorkerStatus)
from .capacity import engine_capabilities, slot_count

log = logging.getLogger("omniserve.worker")

T = TypeVar("T")

Status = WorkerStatus                      # the worker's name for it
BUSY = BUSY_STATUSES
ENGINE_STATES = (Status.LOADING, Status.IDLE, Status.ERROR)


class Busy(Exception):
    """The worker cannot take a session now; ``str(e)`` is the client-facing reason."""


@dataclass
class Slot:
    """One session's place on this worker."""
    index: int
    status: Status = Status.IDLE           # idle or busy_*; while the engine loads or failed, it reports that
    holder: object = None
    session_id: Optional[str] = None
    session_type: Optional[str] = None
    started_at: Optional[float] = None     # time.time() of the claim

    def clear(self) -> None:
        self.status, self.holder = Status.IDLE, None
        self.session_id = self.session_type = None
        self.started_at = None


class WorkerRuntime:
    """The slots, the engine's state and the loaded engine (``processor``)."""

    def __init__(self, index: int, backend: str, slots: int = 1, capabilities: Sequence[Capability] = ()) -> None:
        self.index = index
        self.backend = backend
        self.engine_status = Status.LOADING   # loading | idle (loaded) | error
        self.error: Optional[str] = None
        self.processor: Optional[Processor] = None
        self._slots = [Slot(i) for i in range(max(1, slots))]
        self.capabilities: list[Capability] = list(capabilities)   # the engine's (replaced once it loads)
        self.route_capabilities: list[Capability] = []             # routes the app serves (/metrics, …)
        self.kv_cache_length = 0               # the engine's, whichever session last set it
        self.cached_prefix_hashes: list[str] = []
        self.load_seconds: Optional[float] = None
        self._lock = threading.Lock()
        # one thread for every engine call, for the life of the process
        self._engine = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    @property
    def slots_total(self) -> int:
        return len(self._slots)

    @property
    def status(self) -> Status:
        """Slot 0's status (the whole worker's, for one slot)."""
        with self._lock:
            return self._status(self._slots[0])

    @status.setter
    def status(self, value: Status) -> None:
        """Set the engine's state (loading, idle = loaded, error); slots follow their sessions."""
        if value not in ENGINE_STATES:
            raise ValueError(f"{value} is a slot's status, not the engine's")
        with self._lock:
            self.engine_status = value

    def _status(self, slot: Slot) -> Status:
        return slot.status if self.engine_status == Status.IDLE else self.engine_status

    # -------------------------------------------------------------------- loading
    def start_loading(self, loader: Callable[[], Processor]) -> None:
        """Load the engine on the engine thread; the server is already listening."""

        def _load() -> None:
            t0 = time.monotonic()
            try:
                proc = loader()
            except BaseException as e:  # a load failure must never kill the process
                log.error("engine load failed: %s\n%s", e, traceback.format_exc())
                with self._lock:
                    self.engine_status, self.error = Status.ERROR, f"engine load failed: {type(e).__name__}: {e}"
                return
            with self._lock:
                self.processor = proc
                self.load_seconds = time.monotonic() - t0
                # the loaded engine is the truth: it may serve fewer sessions at once than were sized for
                del self._slots[slot_count(len(self._slots), proc.capabilities, self.backend):]
                self.capabilities = engine_capabilities(proc.capabilities)
                self.engine_status = Status.IDLE
            log.info("engine loaded in %.1f s (%d slot%s)", self.load_seconds, len(self._slots),
                     "" if len(self._slots) == 1 else "s")

        self._engine.submit(_load)

    # ------------------------------------------------------------------ sessions
    def try_acquire(self, holder: object, status: Status, session_id: str, session_type: str,
                    slot: Optional[int] = None) -> int:
        """Claim slot ``slot`` (None: any idle one) for one session and return its index, or raise
        ``Busy`` with the reason."""
        with self._lock:
            if self.engine_status == Status.LOADING:
                raise Busy("Worker loading")
            if self.engine_status == Status.ERROR:
                raise Busy(f"Worker error: {self.error}")
            if slot is not None and not 0 <= slot < len(self._slots):
                raise Busy(f"Worker busy (no slot {slot})")
            wanted = self._slots if slot is None else [self._slots[slot]]
            free = next((s for s in wanted if s.status == Status.IDLE and s.holder is None), None)
            if free is None:
                raise Busy("Worker busy")
            free.status, free.holder = status, holder
            free.session_id, free.session_type = session_id, session_type
            free.started_at = time.time()
            return free.index

    def _held(self, holder: object) -> Optional[Slot]:
        return next((s for s in self._slots if s.holder is holder), None) if holder is not None else None

    def set_status(self, holder: object, status: Status) -> None:
        with self._lock:
            s = self._held(holder)
            if s is not None and s.status in BUSY:
                s.status = status

    def release(self, holder: object) -> None:
        """The holder's slot back to idle (the one cleanup path of every session calls this). Only
        the holder releases: a late second call from a finished session never frees someone else's claim."""
        with self._lock:
            s = self._held(holder)
            if s is not None:
                s.clear()

    # -------------------------------------------------------------------- engine
    async def run_engine(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._engine, fn, *args)

    def submit_engine(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        return self._engine.submit(fn, *args)

    # -------------------------------------------------------------------- health
    def health(self) -> dict:
        """``/health``: a ``WorkerHealth``, every field present (slot 0's in the fields that
        predate slots)."""
        now = time.time()
        with self._lock:
            slots = [self._slot_health(s, now) for s in self._slots]
            busy = [s for s in slots if s.status in BUSY]
            first, s0 = self._slots[0], slots[0]
            held = s0.status in BUSY
            h = WorkerHealth(
                worker_status=s0.status, model_loaded=self.processor is not None, index=self.index,
                backend=self.backend, slots_total=len(slots),
                slots_free=sum(1 for s in slots if s.status == Status.IDLE), slots=slots,
                paused=bool(busy) and all(s.paused for s in busy),
                capabilities=[c.value for c in self.capabilities + self.route_capabilities],
                cached_prefix_hashes=self.cached_prefix_hashes[:MAX_PREFIX_HASHES],
                current_session_id=first.session_id, kv_cache_length=self.kv_cache_length, error=self.error,
                session_started_at=first.started_at if held else None,
                session_type=s0.session_type if held else None, elapsed_s=s0.elapsed_s if held else None)
        return h.model_dump(mode="json")

    def _slot_health(self, s: Slot, now: float) -> SlotHealth:
        status = self._status(s)
        elapsed = round(now - s.started_at, 3) if status in BUSY and s.started_at is not None else None
        return SlotHealth(index=s.index, status=status, session_id=s.session_id, session_type=s.session_type,
                          elapsed_s=elapsed, paused=status == Status.DUPLEX_PAUSED)

    def shutdown(self) -> None:
        self._engine.shutdown(wait=False, cancel_futures=True)
