"""Worker slots with real processes on loopback: the real worker's ``/health`` is a
``WorkerHealth`` and it honours (and refuses) the slot header; the zero-compute test worker with
3 slots serves 3 sessions at once, each in the slot its header names, and refuses a 4th."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from omniserve.protocol.worker import CONTRACT_VERSION, SLOT_HEADER, Capability, WorkerHealth, WorkerStatus
from omniserve.tokens import bearer
from tests.support.gateway_procs import start_fake_worker

from .conftest import WorkerHandle, health


async def open_ws(url: str, slot: Optional[str] = None, token: Optional[str] = None) -> Any:
    headers = bearer(token) | ({SLOT_HEADER: slot} if slot is not None else {})
    return await websockets.connect(url, additional_headers=headers, open_timeout=15, ping_interval=None)


async def recv(ws: Any, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def assert_refused(ws: Any, reason: str = "Worker busy") -> None:
    m = await recv(ws)
    assert m["type"] == "error" and m["error"].startswith(reason), m
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    assert ws.close_code == 1013


# ------------------------------------------------------------------ the real worker
async def test_real_worker_health_is_the_contract(idle: WorkerHandle):
    h = WorkerHealth.model_validate(await health(idle))
    assert (h.status, h.contract, h.worker_status, h.model_loaded) == ("ok", CONTRACT_VERSION, WorkerStatus.IDLE, True)
    assert (h.backend, h.slots_total, h.slots_free, h.paused) == ("embedded", 1, 1, False)
    assert [(s.index, s.status, s.session_id) for s in h.slots] == [(0, WorkerStatus.IDLE, None)]
    assert set(map(Capability, h.capabilities)) == {
        Capability.CHAT, Capability.HALF_DUPLEX, Capability.DUPLEX, Capability.REALTIME, Capability.VISION,
        Capability.RECORDINGS, Capability.METRICS}      # the last two: its /recordings/… and /metrics routes


async def test_real_worker_honours_the_slot_header(idle: WorkerHandle):
    for bad in ("1", "x", "-0"):          # out of range for its one slot, malformed
        await assert_refused(await open_ws(idle.ws + "/ws/half_duplex/hd_bad_slot", bad, idle.token))
    assert (await health(idle))["worker_status"] == "idle"          # a refusal holds nothing
    ws = await open_ws(idle.ws + "/ws/half_duplex/hd_slot0", "0", idle.token)
    try:
        for _ in range(100):              # claimed right after the handshake
            h = WorkerHealth.model_validate(await health(idle))
            if h.slots_free == 0:
                break
            await asyncio.sleep(0.05)
        assert (h.slots_free, h.slots[0].session_id, h.slots[0].status) == (0, "hd_slot0", WorkerStatus.BUSY_HALF_DUPLEX)
        assert h.current_session_id == "hd_slot0" and h.session_type == "half_duplex_audio"
        await assert_refused(await open_ws(idle.ws + "/ws/chat", "0", idle.token))
    finally:
        await ws.close()                  # a disconnect: the worker cleans up (the idle fixture checks)


# ------------------------------------------------------------------ the test worker, 3 slots
def fake_health(w: Any) -> WorkerHealth:
    raw = httpx.get(w.url + "/health", timeout=5, trust_env=False).json()
    assert "sessions_served" in raw                   # its own addition, ignored by the model
    return WorkerHealth.model_validate(raw)


async def test_three_slots_serve_three_sessions_at_once(tmp_path):
    w = start_fake_worker(tmp_path, "--slots", "3", "--load-delay", "0.5")
    socks: list[Any] = []
    try:
        h = fake_health(w)
        assert (h.worker_status, h.slots_total, h.slots_free, h.model_loaded) == (WorkerStatus.LOADING, 3, 0, False)
        await assert_refused(await open_ws(w.ws + "/ws/duplex/adx_early", "0"), "Worker loading")
        await asyncio.sleep(0.6)
        h = fake_health(w)
        assert (h.worker_status, h.slots_free) == (WorkerStatus.IDLE, 3)
        assert h.capabilities == ["chat", "half_duplex", "duplex"] and h.backend == "fake"

        # three sessions open together, each in its own slot (in reverse order: the header decides)
        for i in (2, 1, 0):
            ws = await open_ws(w.ws + f"/ws/duplex/adx_s{i}", str(i))
            await ws.send(json.dumps({"type": "prepare"}))
            assert (await recv(ws))["type"] == "prepared"
            socks.append(ws)
        h = fake_health(w)
        assert h.slots_free == 0 and [s.session_id for s in h.slots] == ["adx_s0", "adx_s1", "adx_s2"]
        assert {s.status for s in h.slots} == {WorkerStatus.DUPLEX_ACTIVE}
        assert (h.current_session_id, h.session_type) == ("adx_s0", "audio_duplex")

        # a 4th is refused, with or without a slot; bad headers too
        for slot in (None, "1", "3", "abc"):
            await assert_refused(await open_ws(w.ws + "/ws/chat", slot))
        # each session is served on its own, at the same time
        for ws in socks:
            await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": ""}))
        assert [(await recv(ws))["type"] for ws in socks] == ["result"] * 3
        await socks[1].send(json.dumps({"type": "pause"}))              # slot 1 (opened second)
        assert (await recv(socks[1]))["type"] == "paused"
        h = fake_health(w)
        assert h.slots[1].paused and not h.paused                        # not every busy slot is paused

        # slot 1 ends; a session without a header gets it
        await socks[1].send(json.dumps({"type": "stop"}))
        assert (await recv(socks[1]))["type"] == "stopped"
        await socks[1].wait_closed()
        assert fake_health(w).slots_free == 1
        chat = await open_ws(w.ws + "/ws/chat")
        await chat.send(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
        assert (await recv(chat))["type"] == "prefill_done"
        h = fake_health(w)
        assert h.slots[1].status == WorkerStatus.BUSY_CHAT and h.slots_free == 0
        while (await recv(chat))["type"] != "done":
            pass
        await chat.wait_closed()

        for ws in (socks[0], socks[2]):
            await ws.send(json.dumps({"type": "stop"}))
            await ws.wait_closed()
        h = fake_health(w)
        assert (h.slots_free, h.worker_status, h.current_session_id) == (3, WorkerStatus.IDLE, None)
        assert [s.status for s in h.slots] == [WorkerStatus.IDLE] * 3
        # what each slot received is kept apart
        got = httpx.get(w.url + "/debug/received?slot=2", trust_env=False).json()
        assert [d["type"] for d in got] == ["prepare", "audio_chunk", "stop"]
    finally:
        for ws in socks:
            await ws.close()
        w.stop()


async def test_one_slot_by_default(tmp_path):
    w = start_fake_worker(tmp_path)
    try:
        h = fake_health(w)
        assert (h.slots_total, h.slots_free, h.worker_status) == (1, 1, WorkerStatus.IDLE)
        ws = await open_ws(w.ws + "/ws/half_duplex/hd_one")
        await ws.send(json.dumps({"type": "prepare"}))
        assert (await recv(ws))["type"] == "prepared"
        h = fake_health(w)
        assert (h.worker_status, h.current_session_id, h.session_type) == (
            WorkerStatus.BUSY_HALF_DUPLEX, "hd_one", "half_duplex_audio")
        await assert_refused(await open_ws(w.ws + "/ws/duplex/adx_two"))
        await ws.close()
        await ws.wait_closed()
        await asyncio.sleep(0.1)
        assert fake_health(w).slots_free == 1
    finally:
        w.stop()
