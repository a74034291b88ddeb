"""Several gateway processes sharing one FIFO on a real ``redis-server`` (``gateway.redis_url``):
one global order across gateways and modes, contiguous positions, a gateway killed with waiters
and a running session, Redis restarted under load, a worker with several slots.

Workers are ``tests/support/fake_worker.py`` (zero compute); Redis is ``tests/support/redis_server.py``.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
import websockets

from tests.integration.test_gateway_queue import recv, recv_type, status
from tests.support.gateway_procs import start_fake_worker, start_gateway
from tests.support.redis_server import RedisServer, available

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed (setup.sh installs it)")

LEASE_S = 2.0
ENV = {"OMNISERVE_GATEWAY__LEASE_S": str(LEASE_S), "OMNISERVE_GATEWAY__QUEUE_UPDATE_INTERVAL_S": "1.0"}


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path).start()
    yield r
    r.kill()


@pytest.fixture
def gateways(tmp_path, redis_server):
    """Three gateway processes on one Redis, one fake worker with one slot."""
    w = start_fake_worker(tmp_path, "--chat-delay", "0.3")
    env = dict(ENV, OMNISERVE_GATEWAY__REDIS_URL=redis_server.url)
    gs = [start_gateway(tmp_path, [w.url], 1, env, data_dir=tmp_path / f"gw{i}") for i in range(3)]
    yield gs, w
    for g in gs:
        g.stop(signal.SIGKILL)
    w.stop()


async def hold(g, sid: str):
    """A duplex session that holds the worker until it sends stop."""
    ws = await websockets.connect(f"{g.ws}/ws/duplex/{sid}", max_size=None)
    await recv_type(ws, "queue_done")
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "hold"}))
    await recv_type(ws, "prepared")
    return ws


async def finish(ws) -> None:
    await ws.send(json.dumps({"type": "stop"}))
    await recv_type(ws, "stopped")
    await ws.close()


MODES = [("chat", "/ws/chat"), ("half_duplex_audio", "/ws/half_duplex/hd_{i}"), ("audio_duplex", "/ws/duplex/adx_{i}"),
         ("omni_duplex", "/ws/duplex/omni_{i}")]


async def join(g, i: int):
    kind, path = MODES[i % len(MODES)]
    ws = await websockets.connect(g.ws + path.format(i=i), max_size=None)
    if kind == "chat":
        await ws.send(json.dumps({"messages": [{"role": "user", "content": f"client {i}"}]}))
    else:
        await ws.send(json.dumps({"type": "prepare", "system_prompt": f"client {i}"}))
    return kind, ws, await recv(ws)


async def serve_through(i: int, kind: str, ws, served: list[int], assigned: bool = False) -> None:
    if not assigned:
        await recv_type(ws, "queue_done", 30)
    served.append(i)
    if kind == "chat":
        assert (await recv_type(ws, "done"))["text"] == f"echo: client {i}"
    else:
        await recv_type(ws, "prepared")
        await finish(ws)


async def test_one_fifo_across_three_gateways_and_four_modes(gateways):
    gs, _ = gateways
    holder = await hold(gs[0], "omni_holder")
    clients, tickets = [], []
    for i in range(8):                       # round robin over the gateways, mixed modes
        kind, ws, q = await join(gs[i % 3], i)
        assert q["type"] == "queued", q
        assert (q["position"], q["queue_length"]) == (i + 1, i + 1), q      # contiguous across gateways
        clients.append((kind, ws))
        tickets.append(q["ticket_id"])
    # every gateway's /status shows the global queue, and so does its /api/queue listing
    await asyncio.sleep(0.6)
    assert [status(g)["queue_length"] for g in gs] == [8, 8, 8]
    w_url = gateways[1].url
    for g in gs:
        for admin in (True, False):
            listed = httpx.get(g.url + "/api/queue", headers=g.admin if admin else {}, trust_env=False).json()
            items = listed["items"]
            assert listed["queue_length"] == 8 and [x["position"] for x in items] == list(range(1, 9)), listed
            assert [x["request_type"] for x in items] == [MODES[i % 4][0] for i in range(8)]
            ids = [x["ticket_id"] for x in items]
            assert ids == tickets if admin else (all(t.startswith("pub_") for t in ids) and not set(ids) & set(tickets))
            assert all(x["waited_s"] >= 0 and x["estimated_wait_s"] >= 0 for x in items)
            assert [(r["worker_url"], r["request_type"]) for r in listed["running_tasks"]] == [(w_url, "omni_duplex")]
    served: list[int] = []
    tasks = [asyncio.create_task(serve_through(i, k, ws, served)) for i, (k, ws) in enumerate(clients)]
    await asyncio.sleep(0.3)
    await finish(holder)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert served == list(range(8))          # the global order, whichever gateway held the client
    await asyncio.sleep(0.6)
    st = status(gs[1])
    assert st["queue_length"] == 0 and st["free_slots"] == 1 and st["running_tasks"] == 0, st


async def test_a_killed_gateway_loses_only_its_own_clients(tmp_path, redis_server):
    w = start_fake_worker(tmp_path, "--slots", "2", "--chat-delay", "0.3")
    env = dict(ENV, OMNISERVE_GATEWAY__REDIS_URL=redis_server.url)
    gs = [start_gateway(tmp_path, [w.url], 1, env, data_dir=tmp_path / f"gw{i}") for i in range(3)]
    try:
        victim = gs[1]
        victim_id = httpx.get(victim.url + "/health", trust_env=False).json()["gateway_id"]
        holder = await hold(gs[0], "omni_holder")                   # one slot: a survivor's session
        held = await hold(victim, "omni_victims_session")           # the other: the victim's
        waiters = []
        for i in range(6):
            kind, ws, q = await join(gs[i % 3], i)
            assert q["position"] == i + 1
            waiters.append((i, kind, ws))
        killed_at = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(5)
        survivors = [(i, k, ws) for i, k, ws in waiters if i % 3 != 1]
        # the others close the gap: the survivors still waiting hold positions 1..k, within a lease
        # and the protocol's 3 s update promise (the head may be served meanwhile: the victim's slot frees)
        latest: dict[int, object] = {}
        deadline = killed_at + LEASE_S + 0.5 + 3.0
        while True:
            for i, _, ws in survivors:
                if latest.get(i) == "served":
                    continue
                try:
                    m = await recv(ws, 0.02)
                except asyncio.TimeoutError:
                    continue
                latest[i] = "served" if m["type"] == "queue_done" else m["position"]
            places = sorted(v for v in latest.values() if v != "served")
            if len(latest) == len(survivors) and places == list(range(1, len(places) + 1)):
                break
            assert time.monotonic() < deadline, f"survivors' places {time.monotonic() - killed_at:.1f} s after the kill: {latest}"
        # no slot is left claimed by the dead gateway after its lease
        await asyncio.sleep(max(0.0, killed_at + LEASE_S + 1.0 - time.monotonic()))
        c = redis_server.client()
        for key in c.scan_iter("omniserve:slot:*"):
            assert c.hget(key, "gw") != victim_id, c.hgetall(key)
        assert not c.exists(f"omniserve:gwt:{victim_id}") and not c.exists(f"omniserve:gwc:{victim_id}")
        # the slot its session held is free again once the worker saw the socket close: all are served
        served: list[int] = []
        tasks = [asyncio.create_task(serve_through(i, k, ws, served, assigned=latest.get(i) == "served"))
                 for i, k, ws in survivors]
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
        assert served == [i for i, _, _ in survivors]
        assert c.zcard("omniserve:q") == 0
        await finish(holder)
        await held.close()
    finally:
        for g in gs:
            g.stop(signal.SIGKILL)
        w.stop()


async def test_redis_restarted_under_load(gateways, redis_server):
    gs, _ = gateways
    running = await hold(gs[0], "omni_running")                  # a session that must go on
    waiting = []
    for i in range(3):
        kind, ws, q = await join(gs[1 + i % 2], i)
        assert q["type"] == "queued"
        waiting.append((i, kind, ws))
    redis_server.kill()
    await asyncio.sleep(0.3)
    # a new client gets a clear error, not a hang
    ws = await websockets.connect(gs[2].ws + "/ws/chat")
    await ws.send(json.dumps({"messages": [{"role": "user", "content": "while down"}]}))
    m = await recv(ws, 5)
    assert m["type"] == "error" and "unreachable" in m["error"], m
    await asyncio.sleep(0.6)          # past the listing's cache
    r = httpx.get(gs[1].url + "/api/queue", trust_env=False)
    assert r.status_code == 503 and "unreachable" in r.json()["detail"], r.text
    # the running session goes on while Redis is away
    await running.send(json.dumps({"type": "pause"}))
    await running.send(json.dumps({"type": "resume"}))
    await asyncio.sleep(1.0)
    redis_server.restart()                                        # empty: persistence is off
    # the gateways put their waiters and their sessions back by themselves; the queue moves on
    served: list[int] = []
    tasks = [asyncio.create_task(serve_through(i, k, ws, served)) for i, k, ws in waiting]
    await asyncio.sleep(LEASE_S + 1.0)
    c = redis_server.client()
    assert c.zcard("omniserve:q") == 3, "the waiters were not restored"
    await finish(running)
    await asyncio.wait_for(asyncio.gather(*tasks), 40)
    assert served == [0, 1, 2]
    # and new clients are served again: at once, with a slot free (only queue_done, PROTOCOL.md)
    kind, ws, q = await join(gs[2], 8)
    assert q["type"] == "queue_done", q
    await serve_through(8, kind, ws, [], assigned=True)


async def test_a_worker_with_three_slots_serves_three_sessions_at_once(tmp_path, redis_server):
    w = start_fake_worker(tmp_path, "--slots", "3")
    env = dict(ENV, OMNISERVE_GATEWAY__REDIS_URL=redis_server.url)
    gs = [start_gateway(tmp_path, [w.url], 1, env, data_dir=tmp_path / f"gw{i}") for i in range(2)]
    try:
        held = [await hold(gs[i % 2], f"omni_s{i}") for i in range(3)]      # three at once, no queue
        views = httpx.get(gs[0].url + "/workers", timeout=5, trust_env=False).json()
        assert views[0]["slots_total"] == 3
        kind, fourth, q = await join(gs[1], 3)
        assert q["type"] == "queued" and q["position"] == 1
        await finish(held[1])
        await recv_type(fourth, "queue_done", 10)
        await recv_type(fourth, "prepared")
        health = httpx.get(w.url + "/health", timeout=5, trust_env=False).json()
        assert health["slots_free"] == 0, health
        for ws in (held[0], held[2], fourth):
            await finish(ws)
    finally:
        for g in gs:
            g.stop()
        w.stop()


async def test_a_registered_worker_is_known_to_every_gateway_until_its_heartbeats_stop(tmp_path, redis_server):
    env = dict(ENV, OMNISERVE_GATEWAY__REDIS_URL=redis_server.url)
    gs = [start_gateway(tmp_path, [], 0, env, data_dir=tmp_path / "gw_shared") for _ in range(2)]   # one worker token
    w = start_fake_worker(tmp_path)
    try:
        token = (tmp_path / "gw_shared" / "worker_token").read_text().strip()
        r = httpx.post(gs[0].url + "/api/workers/register", json={"url": w.url, "ttl_s": 5},
                       headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        assert r.status_code == 200, r.text
        assert r.json()["registered"] is True

        def listed(g) -> bool:
            return any(v["url"] == w.url for v in httpx.get(g.url + "/workers", trust_env=False).json())

        deadline = time.monotonic() + 3
        while not listed(gs[1]):              # the other gateway learns it from Redis
            assert time.monotonic() < deadline, "the second gateway never learned the registered worker"
            await asyncio.sleep(0.1)
        kind, ws, q = await join(gs[1], 0)    # and dispatches to it, at once
        assert q["type"] == "queue_done", q
        await serve_through(0, kind, ws, [], assigned=True)
        await asyncio.sleep(5.5)              # no heartbeat: forgotten by both
        deadline = time.monotonic() + 3
        while listed(gs[0]) or listed(gs[1]):
            assert time.monotonic() < deadline, "a worker without heartbeats was never forgotten"
            await asyncio.sleep(0.1)
    finally:
        for g in gs:
            g.stop()
        w.stop()


async def test_a_ticket_is_found_and_cancelled_through_any_gateway(gateways):
    gs, _ = gateways
    holder = await hold(gs[0], "omni_holder")
    kind, ws, q = await join(gs[1], 0)
    kind2, ws2, q2 = await join(gs[2], 1)
    tid = q2["ticket_id"]
    got = httpx.get(gs[0].url + f"/api/queue/{tid}", trust_env=False).json()   # asked of another process
    assert (got["position"], got["request_type"]) == (2, "half_duplex_audio"), got
    assert httpx.delete(gs[0].url + f"/api/queue/{tid}", trust_env=False).json() == {"cancelled": True}
    m = await recv_type(ws2, "error", 5)
    assert "cancelled" in m["error"], m
    deadline = time.monotonic() + 5
    while (await recv_type(ws, "queue_update", 5))["queue_length"] != 1:   # the waiter ahead sees it go
        assert time.monotonic() < deadline
    assert httpx.get(gs[0].url + f"/api/queue/{tid}", trust_env=False).status_code == 404
    await finish(holder)
    await serve_through(0, kind, ws, [])


async def test_a_refusal_puts_the_ticket_back_and_the_same_slot_serves_it(tmp_path, redis_server):
    """The worker refuses twice (busy); each time the ticket goes back to the head and the one slot is
    claimed for it again — a new claim, not a repeat of the old notice — until it is served."""
    w = start_fake_worker(tmp_path, "--busy-first", "2")
    env = dict(ENV, OMNISERVE_GATEWAY__REDIS_URL=redis_server.url)
    gs = [start_gateway(tmp_path, [w.url], 1, env, data_dir=tmp_path / f"gw{i}") for i in range(2)]
    try:
        for g in gs:
            ws = await websockets.connect(g.ws + "/ws/chat")
            await ws.send(json.dumps({"messages": [{"role": "user", "content": "refused first"}]}))
            seen = []
            while not seen or seen[-1] not in ("done", "error"):
                seen.append((await recv(ws, 15))["type"])
            assert seen[-1] == "done" and "error" not in seen, seen
            await ws.close()
        c = redis_server.client()
        await asyncio.sleep(0.5)
        assert [c.hget(k, "state") for k in c.scan_iter("omniserve:slot:*")] == ["free"]
    finally:
        for g in gs:
            g.stop()
        w.stop()


async def test_the_per_address_socket_limit_holds_for_all_gateways_together(tmp_path, redis_server):
    """max_ws_per_ip 4 on two gateways: two sockets on each, and a fifth is refused on either
    (each alone would take two more); one closed, a new one is taken again. The counts travel
    once a second (``state.shared_ips``)."""
    w = start_fake_worker(tmp_path)
    env = dict(ENV, OMNISERVE_GATEWAY__REDIS_URL=redis_server.url, OMNISERVE_GATEWAY__EDGE__MAX_WS_PER_IP="4")
    a, b = [start_gateway(tmp_path, [w.url], 1, env, data_dir=tmp_path / f"gw{i}") for i in range(2)]
    try:
        holder = await hold(a, "omni_holder")
        waiters = [(await join(g, 3))[1] for g in (a, b, b)]          # omni_duplex waiters: a 2, b 2
        await asyncio.sleep(2.0)                                       # a report each way, and then some

        async def refused(g) -> bool:
            try:
                ws = await websockets.connect(g.ws + "/ws/duplex/omni_extra", open_timeout=5)
            except websockets.exceptions.InvalidStatus as e:
                assert e.response.status_code == 403
                return True
            await ws.close()
            return False

        assert await refused(a) and await refused(b)
        await waiters[2].close()
        await asyncio.sleep(2.0)
        assert not await refused(a)
        for ws in waiters[:2]:
            await ws.close()
        await finish(holder)
    finally:
        for g in (a, b):
            g.stop(signal.SIGKILL)
        w.stop()
