"""The worker's Prometheus metrics, served at ``/metrics`` (docs/metrics.md has every name).

Sessions by mode and end reason and errors by kind come from the one cleanup path of every session
(``session.py``); slots by state are read from ``/health``'s model when scraped. Stage latencies
come from the session's event stream: a meter is one more observer beside the wire writer and the
recorder (``events.Observer``), so no timing code sits in the engine —

- ``ChatMeter``: time to first token / first audio, from when the reply was asked for (the same
  origin as the recording's ``t_first_chunk_s``);
- ``VoiceMeter`` (half-duplex): the same, from the turn's end of speech (the engine's ``SpeechEnded``,
  the VAD endpoint), and end of speech → first audio;
- ``DuplexMeter``: each unit's compute (the engine's ``cost_all_ms``) and wall time (chunk arrival →
  answer, ``wall_clock_ms``).

A worker is one process: a plain registry of its own.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric

from ..engine.api import EngineInputError, SpeechEnded
from ..metrics_common import CONTENT_TYPE, LATENCY_BUCKETS, METRICS_PATH, UNIT_BUCKETS, count_family, exposition, \
    scrape_allowed
from ..protocol.modes import WORKER_STATUSES
from ..protocol.worker import WorkerHealth
from .events import ChatEvent, Chunk, DuplexEvent, Reply, UnitAnswered, VoiceEvent

REFUSED = "refused"         # sessions_total reason: no slot for it (busy, loading, engine error)

# a session's end reason → the errors_total kind it counts as
ENDING_ERRORS = {"error": "internal", "backend_error": "engine_backend", "invalid_request": "invalid_request",
                 "frame_too_big": "frame_too_big"}
ENGINE_STUCK = "engine_stuck"               # the engine did not return within the drain bound after stop
CLIENT_NOT_READING = "client_not_reading"   # a send passed its deadline: the client was dropped
ENGINE_INPUT = "engine_input"               # the engine refused an input; the session goes on
ENGINE_BACKEND = "engine_backend"           # the inference failed; the session goes on (or ends: see above)

_UNAUTHORIZED = b'{"detail":"Unauthorized"}'


class _Slots:
    """Slots by state, from ``/health``'s model at scrape time."""

    def __init__(self, health: Callable[[], dict]) -> None:
        self.health = health

    def collect(self) -> Iterable[Metric]:
        h = WorkerHealth.model_validate(self.health())
        states = [s.status.value for s in h.slots] or [h.worker_status.value]
        return [count_family("omniserve_worker_slots", "This worker's slots by state", "state", states,
                             WORKER_STATUSES)]


class WorkerMetrics:
    def __init__(self, health: Optional[Callable[[], dict]] = None) -> None:
        self.registry = r = CollectorRegistry()
        self.sessions = Counter("omniserve_worker_sessions", "Sessions that ended, by mode and end reason",
                                ["mode", "reason"], registry=r)
        self.errors = Counter("omniserve_worker_errors", "Errors by kind", ["kind"], registry=r)
        self.ttft = Histogram("omniserve_worker_ttft_seconds", "Time to the reply's first text, by mode",
                              ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttfa = Histogram("omniserve_worker_ttfa_seconds", "Time to the reply's first audio, by mode",
                              ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.speech_to_audio = Histogram("omniserve_worker_end_of_speech_to_first_audio_seconds",
                                         "From the end of the user's speech (the VAD endpoint) to the reply's "
                                         "first audio, by mode", ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.unit_compute = Histogram("omniserve_worker_duplex_unit_compute_seconds", "One duplex unit's work "
                                      "(the engine's cost_all_ms), by mode", ["mode"], buckets=UNIT_BUCKETS,
                                      registry=r)
        self.unit_wall = Histogram("omniserve_worker_duplex_unit_wall_seconds", "One duplex unit from its "
                                   "chunk's arrival to its answer, by mode", ["mode"], buckets=UNIT_BUCKETS,
                                   registry=r)
        if health is not None:
            r.register(_Slots(health))

    # ------------------------------------------------------------------- hooks
    def session_ended(self, mode: str, reason: str) -> None:
        self.sessions.labels(mode, reason).inc()
        kind = ENDING_ERRORS.get(reason)
        if kind is not None:
            self.error(kind)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def engine_error(self, e: Exception) -> None:
        """An engine call failed and the session goes on (the client got ``error``)."""
        self.error(ENGINE_INPUT if isinstance(e, EngineInputError) else ENGINE_BACKEND)

    def chat(self, mode: str) -> "ChatMeter":
        return ChatMeter(self, mode)

    def voice(self, mode: str) -> "VoiceMeter":
        return VoiceMeter(self, mode)

    def duplex(self, mode: str) -> "DuplexMeter":
        return DuplexMeter(self, mode)

    def exposition(self) -> bytes:
        return exposition(self.registry)


class _FirstPieces:
    """The first text and the first audio of one reply, from ``t0``."""

    def __init__(self, m: WorkerMetrics, mode: str) -> None:
        self.ttft, self.ttfa = m.ttft.labels(mode), m.ttfa.labels(mode)
        self.t0: Optional[float] = None
        self.text_seen = self.audio_seen = True      # nothing is measured until a reply starts

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.text_seen = self.audio_seen = False

    def end(self) -> None:
        self.t0 = None

    def chunk(self, c: Chunk) -> Optional[float]:
        """Observe what this chunk is the first of; returns the seconds to it when it is the first audio."""
        if self.t0 is None:
            return None
        dt = time.monotonic() - self.t0
        if c.text and not self.text_seen:
            self.text_seen = True
            self.ttft.observe(dt)
        if c.audio is not None and not self.audio_seen:
            self.audio_seen = True
            self.ttfa.observe(dt)
            return dt
        return None


class ChatMeter:
    """``/ws/chat``: one reply per session, timed from the meter's creation (generation asked for)."""

    def __init__(self, m: WorkerMetrics, mode: str) -> None:
        self.first = _FirstPieces(m, mode)
        self.first.begin()

    async def on(self, ev: ChatEvent) -> None:
        if isinstance(ev, Chunk):
            self.first.chunk(ev)


class VoiceMeter:
    """Half-duplex: each turn's reply, timed from its end of speech."""

    def __init__(self, m: WorkerMetrics, mode: str) -> None:
        self.first = _FirstPieces(m, mode)
        self.speech_to_audio = m.speech_to_audio.labels(mode)

    async def on(self, ev: VoiceEvent) -> None:
        if isinstance(ev, SpeechEnded):
            self.first.begin()
        elif isinstance(ev, Chunk):
            dt = self.first.chunk(ev)
            if dt is not None:
                self.speech_to_audio.observe(dt)
        elif isinstance(ev, Reply):
            self.first.end()


class DuplexMeter:
    """Full duplex: every answered unit."""

    def __init__(self, m: WorkerMetrics, mode: str) -> None:
        self.compute, self.wall = m.unit_compute.labels(mode), m.unit_wall.labels(mode)

    async def on(self, ev: DuplexEvent) -> None:
        if isinstance(ev, UnitAnswered):
            self.compute.observe(ev.cost_all_ms / 1000)
            self.wall.observe(ev.wall_clock_ms / 1000)


def add_metrics_route(app: FastAPI, metrics: WorkerMetrics, tokens: tuple[Optional[str], ...]) -> None:
    """``GET /metrics``: open on a worker with neither a worker token nor ``worker.metrics_token``
    (loopback only, like its other routes); else ``Authorization: Bearer`` one of them."""

    @app.get(METRICS_PATH, include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if any(tokens) and not scrape_allowed(request.headers.get("authorization"), tokens):
            return Response(_UNAUTHORIZED, 401, {"WWW-Authenticate": "Bearer"}, media_type="application/json")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)
