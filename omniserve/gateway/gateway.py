"""``Gateway``: everything one gateway process holds — the worker pool, the wait queue and its
ETA, the registries (apps, presets, voices), who holds which recording and the proxy to it, the
per-address counters and the tokens — and its start/stop.

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
from .ephemeral import EphemeralTokens
from .key_auth import KeyAuth
from .keys import ApiKeyStore
from .metrics import GatewayMetrics
from .pool import WorkerPool
from .presets import Presets
from .queue import WaitQueue
from .ref_audio import RefAudioRegistry
from .recording_owners import recording_owners
from .recording_proxy import RecordingProxy
from .state.link import Outbox, RedisLink, new_gateway_id
from .state.scripts import Scripts
from .state.shared_ips import SharedIpCounts
from .state.shared_listing import SharedListing
from .state.shared_pool import SharedPool
from .state.shared_queue import SharedQueue
from .state.shared import SharedMaps
from .state.shared_voices import SharedVoices

log = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_id = new_gateway_id()   # this process (one of gateway.processes); in /health
        s = settings.gateway
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis_link = RedisLink(s.redis_url, gateway_id=self.gateway_id) if s.redis_url else None
        # registries every gateway mirrors from Redis (apps, API keys, ETA); loaded in start()
        self.shared = SharedMaps(self.redis_link) if self.redis_link else None
        self.eta = EtaEstimator(self.data_dir / "eta_config.json", self.shared)
        self.queue: WaitQueue | SharedQueue
        if self.redis_link is not None:   # the FIFO and the slot claims in Redis (state/)
            scripts, outbox = Scripts(self.redis_link), Outbox(self.redis_link)
            self.queue = SharedQueue(self.redis_link, scripts, outbox, self.eta, s.max_queue_size,
                                     interval_s=s.queue_update_interval_s)
        else:
            self.queue = WaitQueue(s.max_queue_size, interval_s=s.queue_update_interval_s)
        self.worker_token, _ = load_or_create(s.worker_token, self.data_dir, WORKER_TOKEN_FILE)
        self.pool = WorkerPool(s.workers, self.queue, self.eta, s.health_interval_s, s.health_timeout_s,
                               worker_token=self.worker_token, release_idle_timeout_s=s.release_idle_timeout_s)
        self.shared_pool = SharedPool(self.redis_link, scripts, outbox, self.pool, self.queue, s.lease_s) \
            if self.redis_link is not None and isinstance(self.queue, SharedQueue) else None
        self.listing = SharedListing(scripts, self.queue, self.pool) \
            if self.redis_link is not None and isinstance(self.queue, SharedQueue) else None   # GET /api/queue
        self.metrics = GatewayMetrics(self.pool, self.queue)   # /metrics (docs/metrics.md)
        self.waiter_budget = BufferBudget(s.edge.max_total_waiter_buffer_bytes)
        self.ip_sockets = IpCounter(s.edge.max_ws_per_ip)
        self.ip_queued = IpCounter(s.edge.max_queued_per_ip)
        self.shared_ips = SharedIpCounts(self.redis_link, scripts, {"ws": self.ip_sockets, "queued": self.ip_queued}) \
            if self.redis_link is not None else None      # the per-address limits for all gateways together
        self.apps = AppRegistry(self.data_dir / "apps.json", self.shared)
        self.presets = Presets()
        self.ref_audio = RefAudioRegistry(self.data_dir / "ref_audio", s.max_ref_audio_bytes, s.max_ref_audio_s,
                                          s.edge.max_voices)
        self.voices = None if self.shared is None or self.redis_link is None else \
            SharedVoices(self.shared, self.redis_link, scripts, self.ref_audio.local, s.edge.max_voices)
        self.ref_audio.shared = self.voices     # uploaded voices in Redis, for every gateway
        # recordings stay on the worker that made them: who holds which, and the proxy to it
        self.recording_owners = recording_owners(s, self.redis_link)
        self.recordings = RecordingProxy(self.recording_owners, lambda: [w.url for w in self.pool.workers],
                                         self.worker_token, connect_timeout_s=s.worker_connect_timeout_s)
        self.hosts = HostPolicy(s.public_names, s.allowed_origins)
        token, self.token_generated = load_admin_token(s.admin_token, self.data_dir)
        self.admin_token = token
        self.auth = AdminAuth(token, self.worker_token)
        self.keys = ApiKeyStore(self.data_dir / "api_keys.json", s.max_api_keys, self.shared)
        self.tokens = EphemeralTokens(self.keys, s.ephemeral_token_ttl_s, self.redis_link)
        self.key_auth = KeyAuth(self.keys, self.tokens, self.auth.ok)
        self._tasks: list[asyncio.Task] = []

    async def store_diagnostic(self, worker_url: str, key: str, text: str) -> None:
        """A client_diagnostic frame, for the worker of its session (queued, never waited for)."""
        self.recordings.diagnostic(worker_url, key, text)

    def recorded(self, recording_id: str, worker_url: str) -> None:
        """The relay saw a recording id from ``worker_url``: remember who holds it."""
        self.recordings.learned(recording_id, worker_url)

    async def start(self) -> None:
        import gc
        gc.freeze()  # startup objects (modules, routes) never need another GC scan: shorter pauses at scale
        # Thousands of long-lived sockets make a full (generation 2) collection cost ~0.5 s on 2 busy
        # cores; short-lived cycles die young, so collect young generations in bigger, rarer batches
        # and let full collections come far less often (bench/gateway.py: max update gap).
        gc.set_threshold(50_000, 20, 100)
        _log_long_gc()
        if self.shared is not None:
            await self.shared.start()     # the registries' first view, before anyone is served
        if self.shared_ips is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.shared_ips.run(), name="ip-counts"))
        if self.voices is not None:       # our spares reconciled with Redis (state/shared_voices.py)
            self._tasks.append(asyncio.get_running_loop().create_task(self.voices.run(), name="voices"))
        self.queue.start()
        await self.pool.start()
        if self.shared_pool is not None:
            await self.shared_pool.start(self.settings.gateway.health_interval_s)
        self._tasks.append(asyncio.get_running_loop().create_task(_watch_loop_lag()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.shared_ips is not None:
            await self.shared_ips.forget()
        await self.queue.stop()
        if self.shared_pool is not None:
            await self.shared_pool.stop()
        await self.pool.stop()
        await self.recordings.close()
        if self.shared is not None:
            await self.shared.stop()
        if self.redis_link is not None:
            await self.redis_link.close()


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
