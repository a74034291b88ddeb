"""The gateway's Prometheus metrics, served at ``/metrics`` (docs/metrics.md has every name).

Stored as they happen: client sessions by mode and end reason, sessions in progress, the wait from
enqueue to the worker link (and its error against the estimate the client was told), frames and
bytes relayed each way, errors by kind. Read when scraped, never stored: the queue length and the
slots by state, from the pool's public attributes (``workers``, each with ``slots``, each with
``status`` and ``ticket``; a worker without ``slots`` counts as one slot).

Hooks: ``ws.py`` holds one ``SessionMeter`` per client socket; ``proxy.py`` one ``RelayMeter`` per
relay, whose counter children are resolved once, so a relayed frame costs two increments.

Several processes (``gateway.processes``): the parent calls ``prepare_multiprocess(folder)`` before it
starts them and passes the environment it returns; every process then writes its metrics to
memory-mapped files in that folder (prometheus_client's multiprocess mode) and ``/metrics`` of any
of them merges all. Without it, one process's own registry.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..metrics_common import (CONTENT_TYPE, ETA_ERROR_BUCKETS, METRICS_PATH, WAIT_BUCKETS, Snapshot, count_family,
                              exposition, scrape_allowed)
from ..protocol.modes import REQUEST_TYPES, WORKER_STATUSES

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# omniserve_gateway_sessions_total{reason}
NORMAL = "normal"                  # ended by its protocol (done, stopped, timeout) or a proper client close
CLIENT_LEFT = "client_left"        # the client went away (while queued, or without a proper close)
CLIENT_DROPPED = "client_dropped"  # we dropped it: it stopped reading
REFUSED = "refused"                # refused after accept: queue full, per-address limit, a bad request, too much data
CANCELLED = "cancelled"            # removed from the queue (DELETE /api/queue/{ticket}, the queue's own reasons)
WORKER_FAILED = "worker_failed"    # the worker died, hung or stopped answering (errors_total says how)
ERROR = "error"                    # anything else (the worker closed it with an error)

# omniserve_gateway_errors_total{kind}
HANDSHAKE_REFUSED = "handshake_refused"    # origin, disabled app or bad session id (HTTP 403)
UNAUTHORIZED = "unauthorized"              # API key or ephemeral token missing or wrong (HTTP 401)
IP_LIMIT = "ip_limit"                      # too many sockets or queued requests from one address
QUEUE_FULL = "queue_full"
STATE_UNAVAILABLE = "state_unavailable"    # the shared state (Redis) did not answer
WORKER_UNREACHABLE = "worker_unreachable"  # a worker link could not be opened (the ticket is requeued)
WORKER_REFUSED = "worker_refused"          # the worker said busy / loading (the ticket is requeued)
WORKER_LOST = "worker_lost"                # the worker link dropped without a close
WORKER_NOT_READING = "worker_not_reading"  # a send to the worker passed its deadline
WORKER_UNIT_DEADLINE = "worker_unit_deadline"  # duplex: no answer to a unit within the deadline

ASSIGNED = "assigned"                      # a slot this gateway gave a ticket, whose worker still says idle
SLOT_STATES = (*WORKER_STATUSES, ASSIGNED, "releasing", "stuck", "offline")
_CLIENT_GONE_REASONS = frozenset({"client left", "gone"})   # Ticket.cancelled when the client itself left


# ----------------------------------------------------------------- several processes
def prepare_multiprocess(folder: Path) -> dict[str, str]:
    """For the parent of ``gateway.processes`` > 1, before it starts any process: empties ``folder``
    (the processes' metric files; one folder per group of processes) and returns the environment
    to give every process. prometheus_client chooses its mode when first imported, so the
    processes must be started as new interpreters with it (``processes.py`` does), not forked from
    a parent that imported prometheus_client without it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for f in folder.glob("*.db"):
        f.unlink()
    return {MULTIPROC_ENV: str(folder)}


_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _forget_dead(folder: str) -> None:
    """Live gauges of processes that exited (a restarted process) must not count: their files go."""
    pids = {int(m.group(1)) for m in (_LIVE_FILE.match(n) for n in os.listdir(folder)) if m}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:
            pass


# ----------------------------------------------------------------------------- relay
class _Nop:
    def inc(self, amount: float = 1) -> None:
        pass


class RelayMeter:
    """One relay's counters: frames and bytes (characters of the text frames) each way."""
    __slots__ = ("_up_frames", "_up_bytes", "_down_frames", "_down_bytes", "_error")

    def __init__(self, up: tuple[Any, Any] = (_Nop(), _Nop()), down: tuple[Any, Any] = (_Nop(), _Nop()),
                 error: Callable[[str], None] = lambda kind: None) -> None:
        self._up_frames, self._up_bytes = up
        self._down_frames, self._down_bytes = down
        self._error = error

    def up(self, n: int) -> None:
        """A frame of ``n`` characters went to the worker."""
        self._up_frames.inc()
        self._up_bytes.inc(n)

    def down(self, n: int) -> None:
        """A frame of ``n`` characters went to the client."""
        self._down_frames.inc()
        self._down_bytes.inc(n)

    def failed(self, kind: str) -> None:
        self._error(kind)


# --------------------------------------------------------------------------- metrics
class GatewayMetrics:
    """The stored metrics of this process and what a scrape reads from ``pool`` and ``queue``."""

    def __init__(self, pool: Any, queue: Any) -> None:
        self.pool, self.queue = pool, queue
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Counter("omniserve_gateway_sessions", "Client sessions that ended, by mode and end reason",
                                ["mode", "reason"], registry=r)
        self.active = Gauge("omniserve_gateway_sessions_active", "Client sessions accepted and not yet ended "
                            "(queued or relayed), by mode", ["mode"], registry=r, multiprocess_mode="livesum")
        self.wait = Histogram("omniserve_gateway_queue_wait_seconds", "From enqueue to the open worker link "
                              "(queue_done), by mode", ["mode"], buckets=WAIT_BUCKETS, registry=r)
        self.eta_error = Histogram("omniserve_gateway_eta_error_seconds", "Actual wait minus the estimate the "
                                   "client was told when queued, by mode", ["mode"], buckets=ETA_ERROR_BUCKETS,
                                   registry=r)
        frames = Counter("omniserve_gateway_relay_frames", "Frames relayed, by mode and direction (up: to the "
                         "worker)", ["mode", "direction"], registry=r)
        chars = Counter("omniserve_gateway_relay_bytes", "Bytes (text frame characters) relayed, by mode and "
                        "direction (up: to the worker)", ["mode", "direction"], registry=r)
        self.errors = Counter("omniserve_gateway_errors", "Errors by kind", ["kind"], registry=r)
        self._relay = {m: RelayMeter((frames.labels(m, "up"), chars.labels(m, "up")),
                                     (frames.labels(m, "down"), chars.labels(m, "down")), self.error)
                       for m in REQUEST_TYPES}

    # ------------------------------------------------------------------- hooks
    def session(self, mode: str) -> "SessionMeter":
        return SessionMeter(self, mode)

    def relay(self, mode: str) -> RelayMeter:
        return self._relay.get(mode) or RelayMeter()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    # ------------------------------------------------------------------ scrape
    def live_families(self) -> list[Metric]:
        """Read on the event loop (the pool and queue are the loop's)."""
        queue = GaugeMetricFamily("omniserve_gateway_queue_length", "Requests waiting in the queue",
                                  value=len(self.queue))
        slots = count_family("omniserve_gateway_slots", "Worker slots by state, as this gateway sees them",
                             "state", slot_states(list(self.pool.workers)), SLOT_STATES)
        return [queue, slots]

    async def scrape(self) -> bytes:
        live = Snapshot(self.live_families())
        folder = self.multiproc_dir
        if folder is None:
            return await asyncio.to_thread(exposition, self.registry, live)

        def merged() -> bytes:
            _forget_dead(folder)
            stored: Collector = multiprocess.MultiProcessCollector(None, path=folder)
            return exposition(stored, live)
        return await asyncio.to_thread(merged)


def slot_states(workers: list[Any]) -> list[str]:
    out = []
    for w in workers:
        online = getattr(w, "online", True)
        for s in getattr(w, "slots", None) or (w,):
            st = getattr(s, "status", "offline")
            st = str(getattr(st, "value", st))
            if not online:
                st = "offline"
            elif getattr(s, "ticket", None) is not None and st == "idle":
                st = ASSIGNED
            out.append(st)
    return out


class SessionMeter:
    """One client socket of one mode, from accept to close (``ws.py``)."""

    def __init__(self, m: GatewayMetrics, mode: str) -> None:
        self.m, self.mode = m, mode
        self.enqueued_at: Optional[float] = None
        self.told_eta_s: Optional[float] = None
        self.assigned = False
        self.reason: Optional[str] = None
        self.ended = False
        self.active = m.active.labels(mode)
        self.active.inc()

    def enqueued(self) -> None:
        self.enqueued_at = time.monotonic()

    def told(self, eta_s: float) -> None:
        """The estimate the client was told in ``queued``."""
        self.told_eta_s = float(eta_s)

    def started(self) -> None:
        """The first worker link is open (``queue_done``): the wait is over."""
        if self.assigned or self.enqueued_at is None:
            return
        self.assigned = True
        waited = time.monotonic() - self.enqueued_at
        self.m.wait.labels(self.mode).observe(waited)
        if self.told_eta_s is not None:
            self.m.eta_error.labels(self.mode).observe(waited - self.told_eta_s)

    def refused(self, kind: str) -> None:
        """Refused after accept (``kind``: an errors_total kind)."""
        self.reason = REFUSED
        self.m.error(kind)

    def worker_refused(self, reachable: bool) -> None:
        self.m.error(WORKER_REFUSED if reachable else WORKER_UNREACHABLE)

    def relay(self) -> RelayMeter:
        return self.m.relay(self.mode)

    def end(self, client: Any, ticket: Any, relay: Any) -> None:
        """Runs first in the session's cleanup: it must never raise."""
        if self.ended:
            return
        self.ended = True
        self.active.dec()
        try:
            reason = self.reason or outcome(client, ticket, relay)
        except Exception:
            log.exception("session end reason unknown")
            reason = ERROR
        self.m.sessions.labels(self.mode, reason).inc()


def outcome(client: Any, ticket: Any, relay: Any) -> str:
    """Why a client session ended, from its ``ClientSide``, ``Ticket`` and last ``Relay``."""
    if relay is not None and getattr(relay, "failure", None) is not None:
        return WORKER_FAILED
    if relay is not None and relay.ended_normally:
        return NORMAL
    if getattr(client, "refused", False):
        return REFUSED
    if client.dropped:
        return CLIENT_DROPPED
    if ticket is not None and ticket.worker is None and ticket.cancelled is not None \
            and ticket.cancelled not in _CLIENT_GONE_REASONS:
        return CANCELLED
    if client.gone.is_set():
        return CLIENT_LEFT
    return ERROR


def add_metrics_route(app: FastAPI, metrics: GatewayMetrics, tokens: tuple[Optional[str], ...]) -> None:
    """``GET /metrics`` with ``Authorization: Bearer <admin token or gateway.metrics_token>``."""

    @app.get(METRICS_PATH, include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if not scrape_allowed(request.headers.get("authorization"), tokens):
            raise HTTPException(401, "admin or metrics token required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        return Response(await metrics.scrape(), media_type=CONTENT_TYPE)
