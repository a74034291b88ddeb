"""The worker's runtime: what it is doing now, who holds it, the loaded engine and its thread.

One worker owns one engine and serves one session at a time. ``WorkerRuntime`` is the single
place that knows whether a new session may start (``try_acquire``) and that reports to
``/health``. All engine calls run on ONE dedicated thread (``run_engine``): the engine is not
thread-safe, and keeping inference off the event loop is what lets ``/health``, ``stop``,
``pause`` and barge-in answer while a model is busy.

States::

    loading ──load ok──▶ idle ◀──release── busy_chat | busy_half_duplex | duplex_active ⇄ duplex_paused
       └────load failed──▶ error

While a session holds the worker its status follows the session's phase (``lifecycle.py``;
each connection maps phases to statuses: a paused duplex session is ``duplex_paused``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
import time
import traceback
from typing import Any, Callable, Optional, TypeVar

from ..engine.api import Processor
from ..protocol import modes

log = logging.getLogger("omniserve.worker")

T = TypeVar("T")


class Status(str, enum.Enum):
    """``/health`` ``worker_status``; the names are the mode table's (``protocol/modes.py``)."""
    LOADING = modes.LOADING
    IDLE = modes.IDLE
    BUSY_CHAT = modes.CHAT.worker_status
    BUSY_HALF_DUPLEX = modes.HALF_DUPLEX.worker_status
    DUPLEX_ACTIVE = modes.OMNI_DUPLEX.worker_status
    DUPLEX_PAUSED = modes.DUPLEX_PAUSED
    BUSY_REALTIME = modes.REALTIME.worker_status
    ERROR = modes.ERROR


BUSY = {Status.BUSY_CHAT, Status.BUSY_HALF_DUPLEX, Status.DUPLEX_ACTIVE, Status.DUPLEX_PAUSED, Status.BUSY_REALTIME}


class Busy(Exception):
    """The worker cannot take a session now; ``str(e)`` is the client-facing reason."""


class WorkerRuntime:
    """Status, the current session and the loaded engine (``processor``)."""

    def __init__(self, index: int, backend: str) -> None:
        self.index = index
        self.backend = backend
        self.status = Status.LOADING
        self.error: Optional[str] = None
        self.processor: Optional[Processor] = None
        self.session_id: Optional[str] = None
        self._holder: object = None
        self.session_type: Optional[str] = None
        self.session_started_at: Optional[float] = None
        self.kv_cache_length = 0
        self.cached_prefix_hashes: list[str] = []
        self.load_seconds: Optional[float] = None
        self._lock = threading.Lock()
        # one thread for every engine call, for the life of the process
        self._engine = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

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
                    self.status, self.error = Status.ERROR, f"engine load failed: {type(e).__name__}: {e}"
                return
            with self._lock:
                self.processor = proc
                self.load_seconds = time.monotonic() - t0
                self.status = Status.IDLE
            log.info("engine loaded in %.1f s", self.load_seconds)

        self._engine.submit(_load)

    # ------------------------------------------------------------------ sessions
    def try_acquire(self, holder: object, status: Status, session_id: str, session_type: str) -> None:
        """Claim the worker for one session or raise ``Busy`` with the reason."""
        with self._lock:
            if self.status == Status.LOADING:
                raise Busy("Worker loading")
            if self.status == Status.ERROR:
                raise Busy(f"Worker error: {self.error}")
            if self.status != Status.IDLE:
                raise Busy("Worker busy")
            self.status = status
            self._holder = holder
            self.session_id = session_id
            self.session_type = session_type
            self.session_started_at = time.time()

    def set_status(self, holder: object, status: Status) -> None:
        with self._lock:
            if self.status in BUSY and self._holder is holder:
                self.status = status

    def release(self, holder: object) -> None:
        """Back to idle (the one cleanup path of every session calls this). Only the holder
        releases: a late second call from a finished session never frees someone else's claim."""
        with self._lock:
            if self._holder is not holder:
                return
            self._holder = None
            if self.status in BUSY:
                self.status = Status.IDLE
            self.session_id = self.session_type = None
            self.session_started_at = None

    # -------------------------------------------------------------------- engine
    async def run_engine(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._engine, fn, *args)

    def submit_engine(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        return self._engine.submit(fn, *args)

    # -------------------------------------------------------------------- health
    def health(self) -> dict:
        with self._lock:
            out: dict[str, Any] = {
                "status": "ok",
                "worker_status": self.status.value,
                "model_loaded": self.processor is not None,
                "current_session_id": self.session_id,
                "kv_cache_length": self.kv_cache_length,
                "index": self.index,
                "backend": self.backend,
                "cached_prefix_hashes": list(self.cached_prefix_hashes),
            }
            if self.error:
                out["error"] = self.error
            if self.status in BUSY and self.session_started_at is not None:
                out["session_started_at"] = self.session_started_at
                out["session_type"] = self.session_type
                out["elapsed_s"] = round(time.time() - self.session_started_at, 3)
            return out

    def shutdown(self) -> None:
        self._engine.shutdown(wait=False, cancel_futures=True)
