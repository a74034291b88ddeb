"""``Gateway``: everything one gateway process holds — the worker pool, the wait queue and its
ETA, the registries (apps, presets, voices), the session store, the per-address counters and the
tokens — and its start/stop.

The routes (``app``, ``routes_media``, ``routes_sessions``, ``ws``) take a ``Gateway``; nothing
here knows about routes, so no route module needs ``app`` (no import cycle).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..config import Settings
from ..tokens import WORKER_TOKEN_FILE, load_or_create
from .admission import IpCounter
from .apps import AppRegistry
from .auth import AdminAuth, HostPolicy, load_admin_token
from .client_side import BufferBudget
from .eta import EtaEstimator
from .keys import ApiKeyStore, EphemeralTokens, KeyAuth
from .pool import WorkerPool
from .presets import Presets
from .queue import WaitQueue
from .ref_audio import RefAudioRegistry
from .sessions import SessionStore

log = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings.gateway
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.eta = EtaEstimator(self.data_dir / "eta_config.json")
        self.queue = WaitQueue(s.max_queue_size, interval_s=s.queue_update_interval_s)
        self.worker_token, _ = load_or_create(s.worker_token, self.data_dir, WORKER_TOKEN_FILE)
        self.pool = WorkerPool(s.workers, self.queue, self.eta, s.health_interval_s, s.health_timeout_s,
                               worker_token=self.worker_token, release_idle_timeout_s=s.release_idle_timeout_s)
        self.waiter_budget = BufferBudget(s.edge.max_total_waiter_buffer_bytes)
        self.ip_sockets = IpCounter(s.edge.max_ws_per_ip)
        self.ip_queued = IpCounter(s.edge.max_queued_per_ip)
        self.apps = AppRegistry(self.data_dir / "apps.json")
        self.presets = Presets()
        self.ref_audio = RefAudioRegistry(self.data_dir / "ref_audio", s.max_ref_audio_bytes, s.max_ref_audio_s)
        self.sessions = SessionStore(self.data_dir / "sessions", s.max_upload_recording_bytes, s.max_comment_bytes,
                                     cap_bytes=int(s.session_storage_cap_mb * 1024 * 1024),
                                     max_diagnostics_bytes=s.max_diagnostics_file_bytes)
        self.hosts = HostPolicy(s.public_names, s.allowed_origins)
        token, self.token_generated = load_admin_token(s.admin_token, self.data_dir)
        self.admin_token = token
        self.auth = AdminAuth(token, self.worker_token)
        self.keys = ApiKeyStore(self.data_dir / "api_keys.json", s.max_api_keys)
        self.tokens = EphemeralTokens(self.keys, s.ephemeral_token_ttl_s)
        self.key_auth = KeyAuth(self.keys, self.tokens, self.auth.ok)
        self._tasks: list[asyncio.Task] = []

    async def store_diagnostic(self, key: str, text: str) -> None:
        await asyncio.to_thread(self.sessions.append_diagnostic, key, text)

    async def start(self) -> None:
        import gc
        gc.freeze()  # startup objects (modules, routes) never need another GC scan: shorter pauses at scale
        # Thousands of long-lived sockets make a full (generation 2) collection cost ~0.5 s on 2 busy
        # cores; short-lived cycles die young, so collect young generations in bigger, rarer batches
        # and let full collections come far less often (bench/gateway.py: max update gap).
        gc.set_threshold(50_000, 20, 100)
        _log_long_gc()
        self.queue.start()
        await self.pool.start()
        s = self.settings.gateway
        self._tasks.append(asyncio.get_running_loop().create_task(self.sessions.cleanup_loop(
            s.session_cleanup_interval_s, s.session_retention_days * 86400, int(s.session_storage_cap_mb * 1024 * 1024))))

        self._tasks.append(asyncio.get_running_loop().create_task(_watch_loop_lag()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.queue.stop()
        await self.pool.stop()


def _log_long_gc(warn_s: float = 0.1) -> None:
    import gc
    import time
    started: list[float] = [0.0]

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif time.perf_counter() - started[0] > warn_s:
            log.warning("GC generation %d took %.0f ms (%d collected)", info.get("generation", -1),
                        (time.perf_counter() - started[0]) * 1000, info.get("collected", 0))
    gc.callbacks.append(cb)


async def _watch_loop_lag(period: float = 0.1, warn_s: float = 0.25) -> None:
    """Log when the event loop was blocked: every waiting client feels it."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(period)
        lag = loop.time() - t - period
        if lag > warn_s:
            log.warning("event loop blocked for %.0f ms", lag * 1000)
