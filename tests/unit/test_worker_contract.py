"""The gateway⇄worker contract (``protocol/worker.py``) and the worker's side of it: the models,
``slot_from_header``, the slot machine of ``WorkerRuntime`` (no engine: it only tracks claims),
the slot count and capabilities the worker advertises, and the registration heartbeat against a
real HTTP server on loopback."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import SimpleNamespace

import pytest
import uvicorn
from fastapi import FastAPI, Request
from pydantic import ValidationError

from omniserve.child import Child, ChildSpec
from omniserve.config import Settings, WorkerSettings
from omniserve.engine.api import Capabilities
from omniserve.engine.backends.embedded import EmbeddedBackend
from omniserve.protocol.worker import (MAX_PREFIX_HASHES, SLOT_HEADER, Capability, WorkerHealth, WorkerRegister,
                                       WorkerStatus, slot_from_header)
from omniserve.worker.app import create_app
from omniserve.worker.capacity import engine_capabilities, route_capabilities, slot_count
from omniserve.worker.register import Heartbeat, heartbeat_interval
from omniserve.worker.session import requested_slot
from omniserve.worker.state import Busy, Status, WorkerRuntime
from tests.support.gateway_procs import free_port


# ------------------------------------------------------------------ slot header
@pytest.mark.parametrize("value,total,want", [(None, 1, None), ("", 3, None), ("0", 1, 0), ("2", 3, 2),
                                              ("007", 8, 7), ("255", 256, 255)])
def test_slot_from_header_reads_a_slot(value, total, want):
    assert slot_from_header(value, total) == want


@pytest.mark.parametrize("value", ["1", "3", "-1", "+1", " 1", "1 ", "1.0", "0x1", "abc", "١", "²", "1000",
                                   "9" * 10_000])
def test_slot_from_header_refuses_bad_and_out_of_range(value):
    with pytest.raises(ValueError) as e:
        slot_from_header(value, 1)
    assert SLOT_HEADER in str(e.value) and len(str(e.value)) < 100   # never echoes a long header


def test_a_bad_slot_header_is_refused_like_busy():
    rt = WorkerRuntime(0, "embedded", slots=2)
    assert requested_slot(None, rt) is None and requested_slot("1", rt) == 1
    for bad in ("2", "x"):
        with pytest.raises(Busy) as e:
            requested_slot(bad, rt)
        assert str(e.value).startswith("Worker busy")   # what the gateway's relay reads as a refusal


# ------------------------------------------------------------------ the models
def test_worker_health_validates_what_the_gateway_reads():
    h = WorkerHealth.model_validate({"worker_status": "idle", "slots_total": 2, "slots_free": 1, "future": 1,
                                     "slots": [{"index": 0, "status": "idle"}, {"index": 1, "status": "busy_chat"}]})
    assert h.slot_status(1) == WorkerStatus.BUSY_CHAT and h.slot_status(0) == WorkerStatus.IDLE
    assert h.slot_status(5) == WorkerStatus.ERROR                  # a slot it does not list is not usable
    old = WorkerHealth.model_validate({"status": "ok", "worker_status": "duplex_paused", "current_session_id": "x"})
    assert old.slots_total == 1 and old.slot_status(0) == WorkerStatus.DUPLEX_PAUSED   # a worker from before slots
    for bad in ({"worker_status": "sleeping"}, {"worker_status": "idle", "slots_total": 0},
                {"worker_status": "idle", "slots": [{"index": -1, "status": "idle"}]},
                {"worker_status": "idle", "cached_prefix_hashes": ["h"] * (MAX_PREFIX_HASHES + 1)}, {}):
        with pytest.raises(ValidationError):
            WorkerHealth.model_validate(bad)


def test_worker_register_body():
    r = WorkerRegister.model_validate({"url": " http://w:22400/ ", "ttl_s": 30, "slots": 4})
    assert (r.url, r.ttl_s, r.slots) == ("http://w:22400", 30, 4)
    assert WorkerRegister(url="https://w").ttl_s == 90.0
    for bad in ({"url": "ftp://w"}, {"url": ""}, {"url": "http://w", "ttl_s": 1}, {"url": "http://w", "slots": 0},
                {"url": "http://w", "extra": 1}):
        with pytest.raises(ValidationError):
            WorkerRegister.model_validate(bad)


# ------------------------------------------------------------------ WorkerRuntime's slots
def _health(rt: WorkerRuntime) -> WorkerHealth:
    return WorkerHealth.model_validate(rt.health())


def test_runtime_serves_each_slot_once():
    rt = WorkerRuntime(3, "embedded", slots=3, capabilities=[Capability.CHAT])
    try:
        a, b, c, d = object(), object(), object(), object()
        with pytest.raises(Busy, match="^Worker loading$"):
            rt.try_acquire(a, Status.BUSY_CHAT, "s_a", "chat")
        h = _health(rt)
        assert (h.worker_status, h.slots_total, h.slots_free, h.index) == (WorkerStatus.LOADING, 3, 0, 3)
        assert [s.status for s in h.slots] == [WorkerStatus.LOADING] * 3
        rt.status = Status.IDLE                                   # the engine is loaded
        assert rt.try_acquire(a, Status.BUSY_HALF_DUPLEX, "s_a", "half_duplex_audio", 1) == 1
        with pytest.raises(Busy, match="^Worker busy$"):
            rt.try_acquire(b, Status.BUSY_CHAT, "s_b", "chat", 1)   # that slot is taken
        assert rt.try_acquire(b, Status.BUSY_CHAT, "s_b", "chat") == 0    # any idle one: the first
        assert rt.try_acquire(c, Status.DUPLEX_ACTIVE, "s_c", "omni_duplex") == 2
        with pytest.raises(Busy, match="^Worker busy$"):
            rt.try_acquire(d, Status.BUSY_CHAT, "s_d", "chat")
        h = _health(rt)
        assert h.slots_free == 0 and [s.session_id for s in h.slots] == ["s_b", "s_a", "s_c"]
        assert (h.worker_status, h.current_session_id, h.session_type) == (WorkerStatus.BUSY_CHAT, "s_b", "chat")
        assert h.capabilities == ["chat"] and not h.paused
        rt.set_status(c, Status.DUPLEX_PAUSED)
        rt.set_status(d, Status.DUPLEX_PAUSED)                    # not a holder: nothing changes
        h = _health(rt)
        assert h.slots[2].paused and h.slots[2].status == WorkerStatus.DUPLEX_PAUSED and not h.paused
        rt.release(d)                                             # a stranger frees nothing
        rt.release(b)
        rt.release(b)                                             # a late second release is harmless
        h = _health(rt)
        assert h.slots_free == 1 and h.slots[0].status == WorkerStatus.IDLE and h.current_session_id is None
        assert h.worker_status == WorkerStatus.IDLE and h.session_type is None and h.elapsed_s is None
        rt.release(a)
        h = _health(rt)
        assert h.paused and h.slots_free == 2                     # every busy slot is paused
        rt.release(c)
        assert _health(rt).slots_free == 3
        rt.status = Status.ERROR
        rt.error = "engine load failed: X"
        with pytest.raises(Busy, match="^Worker error: engine load failed: X$"):
            rt.try_acquire(a, Status.BUSY_CHAT, "s", "chat")
        with pytest.raises(ValueError):
            rt.status = Status.BUSY_CHAT                          # a slot's status, not the engine's
    finally:
        rt.shutdown()


def test_health_is_complete_and_bounded():
    rt = WorkerRuntime(0, "embedded")
    try:
        rt.status = Status.IDLE
        rt.cached_prefix_hashes = [f"{i:064x}" for i in range(MAX_PREFIX_HASHES + 10)]   # a 5000-message chat
        raw = rt.health()
        assert set(WorkerHealth.model_fields) <= set(raw)         # every field present, null or not
        assert raw["cached_prefix_hashes"] == rt.cached_prefix_hashes[:MAX_PREFIX_HASHES]
        rt.try_acquire(rt, Status.BUSY_CHAT, "chat_x", "chat", 0)
        time.sleep(0.01)
        h = _health(rt)
        assert h.elapsed_s is not None and h.elapsed_s > 0 and h.session_started_at is not None
        assert h.slots[0].elapsed_s is not None
    finally:
        rt.shutdown()


def test_a_loaded_engine_that_serves_fewer_sessions_shrinks_the_slots(caplog):
    rt = WorkerRuntime(0, "remote", slots=4)
    try:
        engine = SimpleNamespace(capabilities=Capabilities(chat=True, voice=False, duplex=False, max_sessions=2))
        with caplog.at_level(logging.WARNING, "omniserve.worker"):
            rt.start_loading(lambda: engine)
            deadline = time.monotonic() + 5
            while rt.status == Status.LOADING and time.monotonic() < deadline:
                time.sleep(0.01)
        h = _health(rt)
        assert (h.slots_total, h.slots_free, h.model_loaded, h.capabilities) == (2, 2, True, ["chat"])
        assert "serves 2 sessions at once" in caplog.text
    finally:
        rt.shutdown()


# ------------------------------------------------------------------ slots and capabilities advertised
def test_the_embedded_engine_serves_one_session_and_says_what_it_serves(caplog):
    caps = EmbeddedBackend.capabilities
    assert caps.max_sessions == 1
    assert engine_capabilities(caps) == [Capability.CHAT, Capability.HALF_DUPLEX, Capability.DUPLEX,
                                         Capability.REALTIME, Capability.VISION]
    assert slot_count(1, caps, "embedded") == 1 and not caplog.text
    with caplog.at_level(logging.WARNING, "omniserve.worker"):
        assert slot_count(3, caps, "embedded") == 1
    assert "worker.slots is 3 but the embedded backend serves 1 session at once" in caplog.text
    assert slot_count(3, Capabilities(max_sessions=8), "remote") == 3


def test_a_worker_asked_for_more_slots_advertises_the_backends(caplog):
    settings = Settings()
    settings.worker.slots = 4
    with caplog.at_level(logging.WARNING, "omniserve.worker"):
        app = create_app(settings)          # the engine loads only when the server starts
    rt = app.state.worker
    h = _health(rt)
    assert (rt.slots_total, h.slots_total, h.worker_status) == (1, 1, WorkerStatus.LOADING)
    assert "worker.slots is 4" in caplog.text
    assert {"chat", "half_duplex", "duplex", "realtime", "vision"} <= set(h.capabilities)
    rt.shutdown()


def test_route_capabilities():
    assert route_capabilities(["/health", "/ws/chat"]) == []
    assert route_capabilities(["/recordings/{rid}/audio.wav", "/metrics"]) == [Capability.RECORDINGS,
                                                                              Capability.METRICS]
    assert route_capabilities(["/recordings"]) == [Capability.RECORDINGS]      # a mounted app
    assert route_capabilities(["/metricsx", "/recordingsx"]) == []


# ------------------------------------------------------------------ registration heartbeat
def test_heartbeat_interval_is_shorter_than_the_ttl(caplog):
    assert heartbeat_interval(WorkerSettings(register_interval_s=30, register_ttl_s=90)) == 30
    with caplog.at_level(logging.WARNING, "omniserve.worker.register"):
        assert heartbeat_interval(WorkerSettings(register_interval_s=90, register_ttl_s=60)) == 20
    assert "must be shorter than worker.register_ttl_s" in caplog.text


def test_settings_that_cannot_register_fail_at_startup():
    for bad in ({"public_url": "worker:22400"}, {"register_ttl_s": 1.0}):
        w = WorkerSettings(gateway_url="http://127.0.0.1:1", **bad)
        with pytest.raises(ValueError, match="cannot register"):
            Heartbeat(w, lambda: 1)


class Recorder:
    """A real HTTP server on loopback that records what is POSTed to /api/workers/register."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[tuple[float, dict, str]] = []
        app = FastAPI()

        @app.post("/api/workers/register")
        async def register(request: Request) -> dict:
            self.bodies.append((time.monotonic(), await request.json(), request.headers.get("authorization", "")))
            return {}

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Recorder":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def test_heartbeat_repeats_the_registration():
    with Recorder() as gw:
        w = WorkerSettings(gateway_url=f"http://127.0.0.1:{gw.port}", port=22999, token="tok-1",
                           register_interval_s=0.2, register_ttl_s=6)
        slots = [1]
        beat = Heartbeat(w, lambda: slots[0])
        task = asyncio.create_task(beat.run())
        await asyncio.sleep(0.5)
        slots[0] = 3                                  # the count it had shrunk or grown to
        await asyncio.sleep(0.5)
        task.cancel()
        bodies = list(gw.bodies)
    assert len(bodies) >= 4, bodies
    for _, body, auth in bodies:
        WorkerRegister.model_validate(body)
        assert body["url"] == "http://127.0.0.1:22999" and body["ttl_s"] == 6 and auth == "Bearer tok-1"
    assert bodies[0][1]["slots"] == 1 and bodies[-1][1]["slots"] == 3
    gaps = [b[0] - a[0] for a, b in zip(bodies, bodies[1:])]
    assert all(0.1 < g < 0.6 for g in gaps), gaps


# ------------------------------------------------------------------ `omniserve up`'s display
def test_the_launcher_shows_a_workers_status_and_free_slots():
    c = Child(ChildSpec("worker 0", ["true"], {}, None, "http://127.0.0.1:1/health"))
    assert c.label() == "starting"
    c.last_answer = time.monotonic()
    rt = WorkerRuntime(0, "remote", slots=3)
    try:
        c.body = rt.health()
        assert c.label() == "loading"
        rt.status = Status.IDLE
        rt.try_acquire(c, Status.BUSY_CHAT, "chat_1", "chat")
        c.body = rt.health()
        assert c.label() == "busy_chat 2/3 free"
    finally:
        rt.shutdown()
    c.body = {"status": "ok", "worker_status": "duplex_paused"}          # a worker from before slots
    assert c.label() == "duplex_paused"
    c.body = {"worker_status": "dreaming"}
    assert c.label() == "?"
