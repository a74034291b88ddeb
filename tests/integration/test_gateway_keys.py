"""API keys, ephemeral tokens and ``gateway.require_keys`` against a real gateway process (and a
fake worker) on loopback: the key's secret is shown once and only its hash is stored; with keys
required a WebSocket handshake without a valid key or token is HTTP 401; both minting paths answer
in the shapes of the installed ``openai`` package, and its own client mints tokens here."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
import websockets
from openai.types.beta.realtime.session_create_response import SessionCreateResponse
from openai.types.realtime.client_secret_create_response import ClientSecretCreateResponse
from websockets.exceptions import InvalidStatus

from omniserve.gateway.ephemeral import EphemeralTokens
from omniserve.gateway.key_auth import KeyAuth
from omniserve.gateway.keys import ApiKeyStore
from tests.support.gateway_procs import start_fake_worker, start_gateway

TTL_S = 3


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gwkeys")
    w = start_fake_worker(tmp)
    g = start_gateway(tmp, [w.url], 1, {"OMNISERVE_GATEWAY__REQUIRE_KEYS": "true",
                                        "OMNISERVE_GATEWAY__EPHEMERAL_TOKEN_TTL_S": str(TTL_S)})
    yield g
    g.stop()
    w.stop()


@pytest.fixture(scope="module")
def c(system):
    with httpx.Client(base_url=system.url, trust_env=False, timeout=10) as client:
        yield client


def new_key(c, g, name="test") -> dict:
    r = c.post("/api/admin/keys", json={"name": name}, headers=g.admin)
    assert r.status_code == 201, r.text
    return r.json()


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def mint(c, key: str, **body) -> dict:
    r = c.post("/v1/realtime/client_secrets", json=body, headers=bearer(key))
    assert r.status_code == 200, r.text
    return r.json()


async def accepted(g, path: str = "/ws/duplex/omni_keys", **kw) -> None:
    ws = await websockets.connect(g.ws + path, **kw)
    try:
        assert json.loads(await ws.recv())["type"] in ("queue_done", "queued")
    finally:
        await ws.close()


async def refused(g, path: str = "/ws/duplex/omni_keys", **kw) -> None:
    with pytest.raises(InvalidStatus) as e:
        await websockets.connect(g.ws + path, **kw)
    assert e.value.response.status_code == 401


def test_keys_need_the_admin_token(c):
    for method, path, body in (("GET", "/api/admin/keys", None), ("POST", "/api/admin/keys", {"name": "x"}),
                               ("DELETE", "/api/admin/keys/key_0000000000000000", None)):
        for headers in ({}, bearer("wrong")):
            assert c.request(method, path, json=body, headers=headers).status_code == 401


def test_create_list_revoke(c, system):
    g = system
    k = new_key(c, g, "my app")
    assert set(k) == {"id", "name", "created_at", "last_used_at", "key"} and k["name"] == "my app"
    assert k["key"].startswith("osk_") and len(k["key"]) >= 40
    listed = c.get("/api/admin/keys", headers=g.admin).json()
    mine = [x for x in listed if x["id"] == k["id"]]
    assert len(mine) == 1 and "key" not in mine[0] and "hash" not in mine[0]
    assert k["key"] not in json.dumps(listed)
    f = g.data_dir / "api_keys.json"
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    text = f.read_text()
    assert k["key"] not in text and k["key"][4:] not in text
    assert k["id"] in text and "hash" in text
    # a key (or a token minted with it) is not an admin token
    assert c.get("/api/admin/keys", headers=bearer(k["key"])).status_code == 401
    tok = mint(c, k["key"])["value"]
    assert c.get("/api/admin/keys", headers=bearer(tok)).status_code == 401
    assert c.post("/api/admin/keys", json={"name": ""}, headers=g.admin).status_code == 422
    assert c.post("/api/admin/keys", json={"name": "x", "extra": 1}, headers=g.admin).status_code == 422
    assert c.delete(f"/api/admin/keys/{k['id']}", headers=g.admin).json()["revoked"] is True
    assert c.delete(f"/api/admin/keys/{k['id']}", headers=g.admin).status_code == 404
    assert all(x["id"] != k["id"] for x in c.get("/api/admin/keys", headers=g.admin).json())


async def test_handshake_needs_a_key(c, system):
    g = system
    k = new_key(c, g)
    await refused(g)
    await refused(g, "/ws/chat")
    await refused(g, "/ws/half_duplex/hd_keys")
    await refused(g, additional_headers=bearer("osk_not-a-key"))
    await refused(g, additional_headers={"Authorization": f"Basic {k['key']}"})
    await accepted(g, additional_headers=bearer(k["key"]))
    used = [x for x in c.get("/api/admin/keys", headers=g.admin).json() if x["id"] == k["id"]][0]
    assert used["last_used_at"] is not None
    # a long-lived key is never accepted in a URL
    await refused(g, f"/ws/duplex/omni_keys?token={k['key']}")
    c.delete(f"/api/admin/keys/{k['id']}", headers=g.admin)
    await refused(g, additional_headers=bearer(k["key"]))


async def test_ephemeral_tokens(c, system):
    g = system
    k = new_key(c, g)
    r = c.post("/v1/realtime/client_secrets", json={"session": {"type": "realtime", "model": "gpt-realtime"}},
               headers=bearer(k["key"]))
    assert r.status_code == 200, r.text
    ga = ClientSecretCreateResponse.model_validate(r.json())
    assert ga.value.startswith("ek_") and ga.session.type == "realtime"
    assert abs(ga.expires_at - (time.time() + TTL_S)) <= 2
    r = c.post("/v1/realtime/sessions", json={"model": "gpt-4o-realtime-preview"}, headers=bearer(k["key"]))
    assert r.status_code == 200, r.text
    beta = SessionCreateResponse.model_validate(r.json())
    assert beta.client_secret.value.startswith("ek_") and beta.client_secret.value != ga.value
    # an empty body is fine too
    assert c.post("/v1/realtime/client_secrets", headers=bearer(k["key"])).status_code == 200
    # usable for its lifetime, by header or in the URL
    await accepted(g, additional_headers=bearer(ga.value))
    await accepted(g, f"/ws/duplex/omni_keys?token={ga.value}")
    await accepted(g, f"/ws/duplex/omni_keys2?token={beta.client_secret.value}")
    # an ephemeral token mints nothing
    assert c.post("/v1/realtime/client_secrets", headers=bearer(ga.value)).status_code == 401
    time.sleep(TTL_S + 0.5)
    await refused(g, additional_headers=bearer(ga.value))
    await refused(g, f"/ws/duplex/omni_keys?token={ga.value}")


async def test_a_token_opens_every_endpoint(c, system):
    g = system
    tok = mint(c, new_key(c, g)["key"])["value"]
    # turn-based chat: one request through the gateway to the worker and back
    async with websockets.connect(g.ws + f"/ws/chat?token={tok}") as ws:
        await ws.send(json.dumps({"messages": [{"role": "user", "content": "hi"}], "streaming": True}))
        seen = []
        while not seen or seen[-1]["type"] not in ("done", "error"):
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
    assert "queue_done" in [m["type"] for m in seen]
    assert seen[-1]["type"] == "done" and seen[-1]["text"] == "echo: hi"
    await accepted(g, f"/ws/half_duplex/hd_keys?token={tok}")
    await accepted(g, f"/ws/duplex/adx_keys?token={tok}")


async def test_expires_after_shortens_a_token(c, system):
    g = system
    k = new_key(c, g)
    t0 = time.time()
    one_second = {"expires_after": {"anchor": "created_at", "seconds": 1}}
    ga = mint(c, k["key"], **one_second)
    assert ga["expires_at"] <= t0 + 2
    r = c.post("/v1/realtime/sessions", json={"client_secret": one_second}, headers=bearer(k["key"]))
    beta = r.json()["client_secret"]
    assert r.status_code == 200 and beta["expires_at"] <= t0 + 2
    # asking for more than the configured lifetime gets the configured lifetime
    assert mint(c, k["key"], expires_after={"seconds": 7200})["expires_at"] <= time.time() + TTL_S + 1
    await asyncio.sleep(1.6)
    await refused(g, f"/ws/duplex/omni_keys?token={ga['value']}")
    await refused(g, f"/ws/duplex/omni_keys?token={beta['value']}")
    for bad in ({"expires_after": {"seconds": 0}}, {"expires_after": {"anchor": "now", "seconds": 5}},
                {"expires_after": "soon"}, {"session": "x"}):
        assert c.post("/v1/realtime/client_secrets", json=bad, headers=bearer(k["key"])).status_code == 422, bad
    # a transcription session is not something this server makes
    r = c.post("/v1/realtime/client_secrets", json={"session": {"type": "transcription"}}, headers=bearer(k["key"]))
    assert r.status_code == 400


async def test_openai_sdk_mints_tokens(c, system):
    """The official client's ephemeral-token calls (GA and beta) against this gateway."""
    g = system
    k = new_key(c, g, "sdk")
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        client = openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=k["key"], http_client=http, max_retries=0)
        got = await client.realtime.client_secrets.create(
            session={"type": "realtime", "model": "gpt-realtime"},
            expires_after={"anchor": "created_at", "seconds": 60})
        assert isinstance(got, ClientSecretCreateResponse) and got.value.startswith("ek_")
        assert got.session.type == "realtime" and got.session.model == "gpt-realtime"
        assert got.expires_at <= time.time() + TTL_S + 1           # 60 s asked, the configured TTL given
        # the SDK does not validate what it parses: validate the raw answer against its type
        raw = await client.realtime.client_secrets.with_raw_response.create()
        ClientSecretCreateResponse.model_validate(json.loads(raw.http_response.text))
        beta = await client.beta.realtime.sessions.create(model="gpt-4o-realtime-preview")
        assert beta.client_secret.value.startswith("ek_")
        await accepted(g, f"/ws/duplex/omni_sdk?token={got.value}")
        await accepted(g, f"/ws/duplex/omni_sdk?token={beta.client_secret.value}")
        wrong = openai.AsyncOpenAI(base_url=g.url + "/v1", api_key="osk_wrong", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.realtime.client_secrets.create()
        with pytest.raises(openai.BadRequestError):
            await client.realtime.client_secrets.create(session={"type": "transcription"})


async def test_revoking_a_key_ends_its_tokens(c, system):
    g = system
    k = new_key(c, g)
    tok = c.post("/v1/realtime/client_secrets", headers=bearer(k["key"])).json()["value"]
    await accepted(g, f"/ws/duplex/omni_keys?token={tok}")
    c.delete(f"/api/admin/keys/{k['id']}", headers=g.admin)
    await refused(g, f"/ws/duplex/omni_keys?token={tok}")


def test_minting_needs_a_key(c, system):
    for path in ("/v1/realtime/client_secrets", "/v1/realtime/sessions"):
        for headers in ({}, bearer("wrong"), bearer("osk_wrong"), {"Authorization": "Basic abc"}):
            r = c.post(path, json={}, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
    # the admin token may mint (operators, the admin page)
    r = c.post("/v1/realtime/client_secrets", headers=system.admin)
    assert r.status_code == 200 and r.json()["value"].startswith("ek_")


def test_key_count_is_capped_and_minting_rate_limited(tmp_path):
    g = start_gateway(tmp_path, [], 0, {"OMNISERVE_GATEWAY__MAX_API_KEYS": "2",
                                        "OMNISERVE_GATEWAY__CLIENT_SECRETS_PER_IP_PER_MINUTE": "3"})
    try:
        with httpx.Client(base_url=g.url, trust_env=False, timeout=10) as c:
            k = new_key(c, g)
            new_key(c, g)
            assert c.post("/api/admin/keys", json={"name": "third"}, headers=g.admin).status_code == 409
            codes = [c.post("/v1/realtime/client_secrets", headers=bearer(k["key"])).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = c.post("/v1/realtime/client_secrets", headers=bearer("osk_guess"))
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            # the admin token is not limited
            assert c.post("/v1/realtime/client_secrets", headers=g.admin).status_code == 200
    finally:
        g.stop()


def test_keys_survive_a_restart_and_pages_are_told(tmp_path):
    g = start_gateway(tmp_path, [], 0, {"OMNISERVE_GATEWAY__REQUIRE_KEYS": "true"})
    try:
        with httpx.Client(base_url=g.url, trust_env=False, timeout=10) as c:
            assert c.get("/api/frontend_defaults").json()["require_keys"] is True
            k = new_key(c, g, "kept")
    finally:
        g.stop()
    g = start_gateway(tmp_path, [], 0, {"OMNISERVE_GATEWAY__REQUIRE_KEYS": "true"}, data_dir=g.data_dir)
    try:
        with httpx.Client(base_url=g.url, trust_env=False, timeout=10) as c:
            assert [x["name"] for x in c.get("/api/admin/keys", headers=g.admin).json()] == ["kept"]
            assert mint(c, k["key"])["value"].startswith("ek_")
    finally:
        g.stop()


async def test_keys_not_required_by_default(tmp_path):
    w = start_fake_worker(tmp_path)
    g = start_gateway(tmp_path, [w.url], 1)
    try:
        await accepted(g)
        with httpx.Client(base_url=g.url, trust_env=False, timeout=10) as c:
            assert c.get("/api/frontend_defaults").json()["require_keys"] is False
            # keys can still be made (and tokens minted) before they are required
            assert mint(c, new_key(c, g)["key"])["value"].startswith("ek_")
    finally:
        g.stop()
        w.stop()


async def test_key_auth_rules(tmp_path):
    """``KeyAuth`` in process, as the WebSocket endpoints ask it, with the subprotocol form that
    OpenAI's browser clients use (``openai-insecure-api-key.<token>``)."""
    store = ApiKeyStore(tmp_path / "api_keys.json", 5)
    tokens = EphemeralTokens(store, 60)
    auth = KeyAuth(store, tokens, lambda a: a == "Bearer admin-token")
    k = await store.create("x")
    tok, _ = await tokens.mint(k["id"])
    assert await auth.handshake_ok(f"Bearer {k['key']}", None)
    assert await auth.handshake_ok(f"Bearer {tok}", None)
    assert await auth.handshake_ok("Bearer admin-token", None)
    assert await auth.handshake_ok(None, tok)
    assert await auth.handshake_ok(None, None, ["realtime", f"openai-insecure-api-key.{tok}"])
    # a long-lived key only in a header
    assert not await auth.handshake_ok(None, k["key"])
    assert not await auth.handshake_ok(None, None, ["realtime", f"openai-insecure-api-key.{k['key']}"])
    assert not await auth.handshake_ok(None, None) and not await auth.handshake_ok(None, None, ["realtime"])
    assert not await auth.handshake_ok("Bearer osk_nope", tok)        # a wrong header is not rescued by the URL
    assert not await auth.handshake_ok(None, "ek_" + "x" * 43)
    assert await store.revoke(k["id"])
    assert not await auth.handshake_ok(None, tok) and not await auth.handshake_ok(f"Bearer {k['key']}", None)
    # an admin-minted token lives its time whatever happens to keys
    admin_tok, _ = await tokens.mint(None)
    assert await auth.handshake_ok(None, admin_tok)
