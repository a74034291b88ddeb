"""The registries several gateways share through Redis (``gateway.redis_url``, docs/scaling.md):
two real gateway processes on one real redis-server. What one gateway's admin changes — a disabled
app, an API key, an ephemeral token, the ETA config — holds on the other within a second; with
Redis killed the cached registries keep answering while admin writes are refused (503), and once
Redis is back (empty: no persistence) writes work again and the registries are whole, without
restarting a gateway. First, in process: two gateways recording ETA samples at once lose none."""
from __future__ import annotations

import asyncio
import secrets
import time
from typing import Optional

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from omniserve.gateway.eta import EtaEstimator
from omniserve.gateway.state.link import RedisLink, key
from omniserve.gateway.state.shared import SharedMaps
from omniserve.protocol.rest import EtaConfigUpdate
from tests.support.gateway_procs import GatewayProc, start_gateway_pair

ADMIN = "admin-" + secrets.token_hex(12)
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
OMNI = "/ws/duplex/omni_shared"
AUDIO = "/ws/duplex/adx_shared"
PROPAGATION_S = 1.0          # what one gateway's admin changes holds on the others within this


@pytest.fixture(scope="module")
def gateways(redis_server, tmp_path_factory):
    """Gateways A and B: separate data folders (nothing shared on disk), one Redis, keys required."""
    tmp = tmp_path_factory.mktemp("gwshared")
    env = {"OMNISERVE_GATEWAY__REQUIRE_KEYS": "true", "OMNISERVE_GATEWAY__ADMIN_TOKEN": ADMIN}
    a, b = start_gateway_pair(tmp, env, (tmp / "a", tmp / "b"), redis_server.url)
    yield a, b
    a.stop()
    b.stop()


def call(g: GatewayProc, method: str, path: str, json: Optional[dict] = None, headers: Optional[dict] = None):
    return httpx.request(method, g.url + path, json=json, headers=ADMIN_H if headers is None else headers,
                         timeout=5, trust_env=False)


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


async def handshake(g: GatewayProc, path: str, headers: Optional[dict] = None, token: Optional[str] = None) -> int:
    """The HTTP status of a WebSocket handshake: 101 when it was accepted."""
    url = g.ws + path + (f"?token={token}" if token else "")
    try:
        ws = await websockets.connect(url, additional_headers=headers or {}, open_timeout=5)
    except InvalidStatus as e:
        return e.response.status_code
    await ws.close()
    return 101


async def until(g: GatewayProc, path: str, want: int, within: float = PROPAGATION_S, **kw) -> float:
    """Seconds until the handshake answers ``want``; fails after ``within``."""
    t0 = time.monotonic()
    while True:
        got = await handshake(g, path, **kw)
        if got == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > within:
            raise AssertionError(f"{g.url}{path}: still {got} (want {want}) after {within} s")
        await asyncio.sleep(0.02)


def new_key(g: GatewayProc) -> dict:
    r = call(g, "POST", "/api/admin/keys", {"name": "shared"})
    assert r.status_code == 201, r.text
    return r.json()


def mint(g: GatewayProc, api_key: str) -> str:
    r = call(g, "POST", "/v1/realtime/client_secrets", {}, bearer(api_key))
    assert r.status_code == 200, r.text
    return r.json()["value"]


# ----------------------------------------------------------------------------- in process

async def test_two_gateways_recording_at_once_lose_no_update(redis_server):
    """The shared EMA is updated by one Lua script: concurrent records from two gateways (two links,
    two connections) never overwrite each other. With alpha 0.5, a seed of 1024 and then 40 zeros
    in any order the EMA must be exactly 1024 / 2**40; one lost update would double it."""
    url = redis_server.url.rsplit("/", 1)[0] + "/1"      # its own database: the gateways use /0
    links = [RedisLink(url), RedisLink(url)]
    maps = [SharedMaps(link) for link in links]
    etas = [EtaEstimator(None, m) for m in maps]
    try:
        for m in maps:
            await m.start()
        await etas[0].update(EtaConfigUpdate(eta_ema_alpha=0.5, eta_ema_min_samples=1))
        etas[0].record("chat", 1024.0)
        await maps[0].flush()
        for _ in range(20):
            for e in etas:
                e.record("chat", 0.0)
        await asyncio.gather(*(m.flush() for m in maps))
        stats = await links[0].client.hgetall(key("map", "eta_stats"))
        assert int(stats["samples:chat"]) == 41
        assert float(stats["ema:chat"]) == 1024.0 / 2 ** 40
        await maps[1].reload_all()          # the other gateway's copy: what its estimate() reads
        assert etas[1].config.eta_ema_alpha == 0.5
        assert etas[1].estimate("chat") == 1024.0 / 2 ** 40
    finally:
        for m, link in zip(maps, links):
            await m.stop()
            await link.close()


# ------------------------------------------------------------------------ two gateways

async def test_app_disabled_on_one_gateway_is_refused_on_the_other(gateways):
    a, b = gateways
    await until(b, OMNI, 101, headers=ADMIN_H)
    assert call(a, "PUT", "/api/admin/apps/omni", {"enabled": False}).status_code == 200
    took = await until(b, OMNI, 403, headers=ADMIN_H)
    assert took < PROPAGATION_S
    assert {x["app_id"]: x["enabled"] for x in call(b, "GET", "/api/apps").json()}["omni"] is False
    assert call(b, "PUT", "/api/admin/apps/omni", {"enabled": True}).status_code == 200
    await until(a, OMNI, 101, headers=ADMIN_H)


async def test_api_key_made_on_one_gateway_opens_sockets_on_the_other(gateways):
    a, b = gateways
    k = new_key(a)
    await until(b, OMNI, 101, headers=bearer(k["key"]))
    assert k["id"] in {x["id"] for x in call(b, "GET", "/api/admin/keys").json()}
    # revoked on B: A refuses the key, and the tokens it minted
    tok = mint(a, k["key"])
    await until(a, OMNI, 101, token=tok)
    r = call(b, "DELETE", f"/api/admin/keys/{k['id']}")
    assert r.status_code == 200, r.text
    await until(a, OMNI, 401, headers=bearer(k["key"]))
    assert await handshake(a, OMNI, token=tok) == 401
    assert call(a, "DELETE", f"/api/admin/keys/{k['id']}").status_code == 404


async def test_ephemeral_token_minted_on_one_gateway_opens_sockets_on_the_other(gateways, redis_server):
    a, b = gateways
    k = new_key(a)
    tok = mint(a, k["key"])
    assert await handshake(b, OMNI, token=tok) == 101          # B never saw it: one GET in Redis
    assert await handshake(b, OMNI, headers=bearer(tok)) == 101
    assert await handshake(b, OMNI, token="ek_" + secrets.token_urlsafe(32)) == 401
    # stored hashed, expiring with the token
    with redis_server.client() as r:
        stored = {name: r.get(name) for name in r.scan_iter(key("token", "*"))}
        assert stored and all(tok not in name and tok not in (v or "") for name, v in stored.items())
        assert all(0 < r.pttl(name) <= 60_000 for name in stored)


async def test_eta_config_put_on_one_gateway_is_read_on_the_other(gateways):
    a, b = gateways
    assert call(a, "PUT", "/api/config/eta", {"eta_chat_s": 7}).status_code == 200
    assert call(b, "PUT", "/api/config/eta", {"eta_half_duplex_s": 100}).status_code == 200
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        seen = [call(g, "GET", "/api/config/eta").json() for g in (a, b)]
        if all(s["eta_chat_s"] == 7 and s["eta_half_duplex_s"] == 100 for s in seen):
            break       # partial updates on two gateways: neither lost the other's field
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.05)
    assert seen[1]["effective_s"]["chat"] == 7


async def test_redis_down_then_back(gateways, redis_server):
    """Killed: cached registries answer at once, admin writes are 503, a token this gateway never saw
    cannot be checked (503). Restarted empty: the gateways write their view back, writes work
    again, notices flow again — no gateway restarted."""
    a, b = gateways
    assert call(a, "PUT", "/api/admin/apps/audio_duplex", {"enabled": False}).status_code == 200
    k = new_key(a)
    seen_tok, unseen_tok = mint(a, k["key"]), mint(a, k["key"])
    await until(b, AUDIO, 403, headers=ADMIN_H)
    await until(b, OMNI, 101, headers=bearer(k["key"]))
    assert await handshake(b, OMNI, token=seen_tok) == 101

    redis_server.kill()
    down_at = time.monotonic()
    for g in (a, b):
        t0 = time.monotonic()
        apps = {x["app_id"]: x["enabled"] for x in call(g, "GET", "/api/apps").json()}
        assert apps["audio_duplex"] is False and apps["omni"] is True
        assert call(g, "GET", "/api/config/eta").json()["eta_chat_s"] == 7
        assert k["id"] in {x["id"] for x in call(g, "GET", "/api/admin/keys").json()}
        assert time.monotonic() - t0 < 1.0, "reads waited on Redis"
    assert await handshake(b, AUDIO, headers=ADMIN_H) == 403
    assert await handshake(b, OMNI, headers=bearer(k["key"])) == 101
    assert await handshake(b, OMNI, token=seen_tok) == 101
    assert await handshake(b, OMNI, token=unseen_tok) == 503
    for g, method, path, body in ((a, "PUT", "/api/admin/apps/omni", {"enabled": False}),
                                  (b, "POST", "/api/admin/keys", {"name": "x"}),
                                  (b, "DELETE", f"/api/admin/keys/{k['id']}", None),
                                  (a, "PUT", "/api/config/eta", {"eta_chat_s": 9})):
        r = call(g, method, path, body)
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert "try again" in r.json()["detail"]
    r = call(b, "POST", "/v1/realtime/client_secrets", {}, bearer(k["key"]))
    assert r.status_code == 503, r.text
    await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))   # several of the loop's retries

    redis_server.restart()             # a new, empty Redis on the same port
    deadline = time.monotonic() + 10
    while (r := call(a, "PUT", "/api/admin/apps/omni", {"enabled": False})).status_code != 200:
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        await asyncio.sleep(0.2)
    await until(b, OMNI, 403, headers=ADMIN_H)           # notices flow again
    # the gateways wrote their view back: nothing was reset to the defaults
    assert await handshake(b, AUDIO, headers=ADMIN_H) == 403
    with redis_server.client() as rc:
        assert rc.hget(key("map", "apps"), "audio_duplex") == "0"
        assert k["id"] in rc.hgetall(key("map", "api_keys"))
    k2 = new_key(b)
    assert call(a, "PUT", "/api/admin/apps/omni", {"enabled": True}).status_code == 200
    await until(a, OMNI, 101, headers=bearer(k2["key"]))
    await until(b, OMNI, 101, headers=bearer(k["key"]))
    for g in (a, b):   # the loss and the return are logged, not every failed retry
        log = g.tail(200_000)
        assert 1 <= log.count("unreachable") <= 2, log[-3000:]
        assert "reachable again" in log, log[-3000:]
