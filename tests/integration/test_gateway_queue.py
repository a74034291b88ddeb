"""Gateway scheduling with real processes on loopback: FIFO across modes, positions and ETAs,
queue full, cancellation, disconnects while queued, no leaked workers.

The workers are ``tests/support/fake_worker.py`` (zero compute, configurable delays): these tests
are about the gateway's queue, not the engine.
"""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support.gateway_procs import start_fake_worker, start_gateway


@pytest.fixture
def one(tmp_path):
    """One fake worker behind a gateway."""
    w = start_fake_worker(tmp_path, "--chat-delay", "0.3")
    g = start_gateway(tmp_path, [w.url], n_ready=1)
    yield g, w
    g.stop()
    w.stop()


async def recv(ws, timeout=10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, want: str, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.05, deadline - time.monotonic()))
        if m.get("type") == want:
            return m


async def hold_worker(g, sid="omni_holder"):
    """An omni session that keeps the only worker busy until it sends stop."""
    ws = await websockets.connect(f"{g.ws}/ws/duplex/{sid}", max_size=None)
    assert (await recv(ws))["type"] == "queue_done"
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "hi"}))
    assert (await recv(ws))["type"] == "prepared"
    return ws


async def finish_session(ws) -> None:
    await ws.send(json.dumps({"type": "stop"}))
    await recv_type(ws, "stopped")
    await ws.close()


def status(g) -> dict:
    return httpx.get(g.url + "/status", timeout=5, trust_env=False).json()


async def wait_idle(g, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = status(g)
        if st["idle_workers"] >= 1 or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


def queue(g, admin=False) -> dict:
    return httpx.get(g.url + "/api/queue", headers=g.admin if admin else None, timeout=5, trust_env=False).json()


async def test_fifo_order_mixed_modes_one_worker(one):
    g, _ = one
    holder = await hold_worker(g)
    order = [("chat", "/ws/chat"), ("half_duplex_audio", "/ws/half_duplex/hd_1"), ("audio_duplex", "/ws/duplex/adx_1"),
             ("omni_duplex", "/ws/duplex/omni_2"), ("chat", "/ws/chat")]
    clients = []
    for i, (kind, path) in enumerate(order):
        ws = await websockets.connect(g.ws + path, max_size=None)
        if kind == "chat":
            await ws.send(json.dumps({"messages": [{"role": "user", "content": f"client {i}"}]}))
        else:
            await ws.send(json.dumps({"type": "prepare", "system_prompt": f"client {i}"}))  # buffered while queued
        q = await recv(ws)
        assert q["type"] == "queued", q  # chat included
        assert q["position"] == i + 1 and q["queue_length"] == i + 1
        assert q["ticket_id"].startswith("tk_")
        clients.append((kind, ws))
    items = queue(g, admin=True)["items"]
    assert [it["position"] for it in items] == [1, 2, 3, 4, 5]
    assert [it["request_type"] for it in items] == [k for k, _ in order]

    served: list[int] = []

    async def run(i, kind, ws):
        await recv_type(ws, "queue_done", 30)
        served.append(i)
        if kind == "chat":
            done = await recv_type(ws, "done", 10)
            assert done["text"] == f"echo: client {i}"
        else:
            assert (await recv_type(ws, "prepared"))["type"] == "prepared"  # the buffered prepare reached the worker
            await finish_session(ws)

    tasks = [asyncio.create_task(run(i, k, ws)) for i, (k, ws) in enumerate(clients)]
    await asyncio.sleep(0.2)
    await finish_session(holder)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert served == [0, 1, 2, 3, 4]
    await asyncio.sleep(0.2)
    st = status(g)
    assert st["busy_workers"] == 0 and st["queue_length"] == 0 and st["idle_workers"] == 1


async def test_positions_and_etas_move(one):
    g, _ = one
    r = httpx.put(g.url + "/api/config/eta", json={"eta_omni_duplex_s": 100, "eta_chat_s": 10}, headers=g.admin,
                  trust_env=False)
    assert r.status_code == 200, r.text
    holder = await hold_worker(g)
    ws = []
    for i in range(3):
        c = await websockets.connect(g.ws + "/ws/chat")
        await c.send(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}))
        ws.append((c, await recv(c)))
    etas = [q["estimated_wait_s"] for _, q in ws]
    # the holder has ~100 s left; then each chat takes 10 s
    assert 95 <= etas[0] <= 100 and abs(etas[1] - etas[0] - 10) < 1.5 and abs(etas[2] - etas[1] - 10) < 1.5, etas
    # the first waiter leaves: everyone behind moves up by one, with the ETA of the place they took
    await ws[0][0].close()
    u1 = await recv_type(ws[1][0], "queue_update", 5)
    u2 = await recv_type(ws[2][0], "queue_update", 5)
    assert (u1["position"], u1["queue_length"]) == (1, 2) and (u2["position"], u2["queue_length"]) == (2, 2)
    assert 90 <= u1["estimated_wait_s"] <= 100 and abs(u2["estimated_wait_s"] - u1["estimated_wait_s"] - 10) < 1.5
    # updates keep coming at least every 3 s even when nothing changes
    t0 = time.monotonic()
    u = await recv_type(ws[2][0], "queue_update", 4)
    assert time.monotonic() - t0 <= 3.1 and u["position"] == 2
    assert u["estimated_wait_s"] <= u2["estimated_wait_s"]  # time passes, the wait shrinks
    await finish_session(holder)
    for c, _ in ws[1:]:
        await recv_type(c, "done", 10)
    assert queue(g)["queue_length"] == 0


async def test_queue_full(tmp_path):
    w = start_fake_worker(tmp_path)
    g = start_gateway(tmp_path, [w.url], 1, {"OMNISERVE_GATEWAY__MAX_QUEUE_SIZE": "2"})
    try:
        holder = await hold_worker(g)
        waiting = []
        for i in range(2):
            c = await websockets.connect(f"{g.ws}/ws/duplex/omni_w{i}")
            assert (await recv(c))["type"] == "queued"
            waiting.append(c)
        c = await websockets.connect(g.ws + "/ws/duplex/omni_x")
        m = await recv(c)
        assert m == {"type": "error", "error": "Queue full (2 requests)", "message": "Queue full (2 requests)"}
        with pytest.raises(ConnectionClosed):
            await recv(c)
        assert c.close_code == 1013
        for c in waiting:
            await c.close()
        await finish_session(holder)
    finally:
        g.stop()
        w.stop()


async def test_cancel_by_ticket_and_by_admin(one):
    g, _ = one
    holder = await hold_worker(g)
    a = await websockets.connect(g.ws + "/ws/duplex/omni_a")
    qa = await recv(a)
    b = await websockets.connect(g.ws + "/ws/duplex/omni_b")
    await recv(b)
    # the owner cancels with its secret ticket id
    r = httpx.delete(f"{g.url}/api/queue/{qa['ticket_id']}", trust_env=False)
    assert r.status_code == 200
    m = await recv_type(a, "error")
    assert "cancelled" in m["error"]
    # public listing hides ticket ids; a public id cannot cancel without the admin token
    pub = queue(g)["items"][0]["ticket_id"]
    assert pub.startswith("pub_")
    assert httpx.delete(f"{g.url}/api/queue/{pub}", trust_env=False).status_code == 404
    assert httpx.delete(f"{g.url}/api/queue/{pub}", headers=g.admin, trust_env=False).status_code == 200
    await recv_type(b, "error")
    assert queue(g)["queue_length"] == 0
    await finish_session(holder)
    await asyncio.sleep(0.2)
    assert status(g)["idle_workers"] == 1


async def test_queued_disconnect_frees_place_and_no_leak(one):
    g, w = one
    holder = await hold_worker(g)
    gone = await websockets.connect(g.ws + "/ws/chat")
    await gone.send(json.dumps({"messages": [{"role": "user", "content": "bye"}]}))
    await recv(gone)
    stay = await websockets.connect(g.ws + "/ws/chat")
    await stay.send(json.dumps({"messages": [{"role": "user", "content": "stay"}]}))
    assert (await recv(stay))["position"] == 2
    await gone.close()
    u = await recv_type(stay, "queue_update", 3)  # freed at once, not at the next periodic update
    assert u["position"] == 1 and u["queue_length"] == 1
    assert queue(g)["queue_length"] == 1
    # a client that vanishes exactly when it gets the worker does not keep it
    await stay.close()
    await finish_session(holder)
    await asyncio.sleep(0.3)
    st = status(g)
    assert st == {**st, "busy_workers": 0, "queue_length": 0, "idle_workers": 1}
    c = await websockets.connect(g.ws + "/ws/chat")
    await c.send(json.dumps({"messages": [{"role": "user", "content": "next"}]}))
    assert (await recv(c))["type"] == "queue_done"
    assert (await recv_type(c, "done"))["text"] == "echo: next"
    received = httpx.get(w.url + "/debug/received", trust_env=False).json()
    assert len(received) == 1  # the gone clients never reached the worker


async def test_disconnect_after_assignment_releases(one):
    """Many clients racing to leave right as they are assigned never leak the worker."""
    g, _ = one
    for _ in range(10):
        await wait_idle(g)
        holder = await hold_worker(g)
        c = await websockets.connect(g.ws + "/ws/duplex/adx_r")
        await recv(c)
        await holder.send(json.dumps({"type": "stop"}))
        await c.close()
        await holder.close()
    st = await wait_idle(g)
    assert st["busy_workers"] == 0 and st["idle_workers"] == 1 and st["queue_length"] == 0


async def test_a_worker_with_three_slots_serves_three_sessions_at_once(tmp_path):
    """Dispatch is per slot: three sessions run at once on one worker, the fourth waits for a slot."""
    w = start_fake_worker(tmp_path, "--slots", "3")
    g = start_gateway(tmp_path, [w.url], n_ready=1)
    try:
        held = [await hold_worker(g, f"omni_slot{i}") for i in range(3)]
        view = httpx.get(g.url + "/workers", timeout=5, trust_env=False).json()[0]
        assert view["slots_total"] == 3 and view["slots_free"] == 0, view
        st = status(g)
        assert (st["total_slots"], st["free_slots"], st["running_tasks"]) == (3, 0, 3), st
        fourth = await websockets.connect(g.ws + "/ws/duplex/omni_slot3", max_size=None)
        assert (await recv(fourth))["type"] == "queued"
        await finish_session(held[1])
        assert (await recv_type(fourth, "queue_done"))["type"] == "queue_done"
        await fourth.send(json.dumps({"type": "prepare", "system_prompt": "fourth"}))
        await recv_type(fourth, "prepared")
        sessions = {s["session_id"] for s in httpx.get(w.url + "/health", timeout=5, trust_env=False).json()["slots"]}
        assert sessions == {"omni_slot0", "omni_slot2", "omni_slot3"}, sessions
        for ws in (held[0], held[2], fourth):
            await finish_session(ws)
        await asyncio.sleep(0.3)
        assert status(g)["free_slots"] == 3
    finally:
        g.stop()
        w.stop()
