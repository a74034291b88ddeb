"""API keys (``/api/admin/keys``, admin token) and ephemeral tokens (``/v1/realtime/client_secrets``,
OpenAI's GA path, and the beta ``/v1/realtime/sessions``: an API key or the admin token).

Minting is rate-limited per client address before the key is even checked (so guessing keys is
limited too); the admin token is not limited. See ``keys`` and ``ephemeral`` for what is stored and
how it is checked; with ``gateway.redis_url`` a write that cannot reach Redis is HTTP 503.
"""
from __future__ import annotations

import secrets
from typing import Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ..protocol.rest import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, BetaSessionRequest, ClientSecretRequest
from .auth import _unauthorized
from .clients import RateLimiter, client_ip, rate_key
from .gateway import Gateway
from .keys import TooManyKeys, bearer

MODEL_NAME = "omniserve"


def _validate(model, raw: bytes):
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


def add_key_routes(app: FastAPI, gw: Gateway) -> None:
    s = gw.settings.gateway
    minting = RateLimiter(s.client_secrets_per_ip_per_minute, 60.0)

    # ------------------------------------------------------------- API keys
    @app.get("/api/admin/keys", response_model=list[ApiKeyOut])
    def keys_list(request: Request) -> list[dict]:
        gw.auth.require(request)
        return gw.keys.list()

    @app.post("/api/admin/keys", response_model=ApiKeyCreated, status_code=201)
    async def keys_create(request: Request) -> dict:
        gw.auth.require(request)
        body = _validate(ApiKeyCreate, await request.body())
        try:
            return await gw.keys.create(body.name.strip() or "key")   # writes api_keys.json (or the shared map)
        except TooManyKeys as e:
            raise HTTPException(409, str(e)) from None

    @app.delete("/api/admin/keys/{key_id}")
    async def keys_revoke(key_id: str, request: Request) -> dict:
        gw.auth.require(request)
        if not await gw.keys.revoke(key_id):
            raise HTTPException(404, "no such API key")
        return {"revoked": True, "id": key_id}

    # ------------------------------------------------------ ephemeral tokens
    def authorise(request: Request) -> Optional[str]:
        """The minting key's id (None for the admin token); 429 / 401 otherwise."""
        if gw.auth.is_admin(request):
            return None
        ip = rate_key(client_ip(request.scope, s.edge.trusted_proxies))
        if not minting.allow(ip):
            wait = max(1, round(minting.retry_after_s(ip)))
            raise HTTPException(429, f"too many client secrets from your address "
                                     f"({s.client_secrets_per_ip_per_minute} per minute)",
                                headers={"Retry-After": str(wait)})
        key_id = gw.keys.check(bearer(request.headers.get("authorization")))
        if key_id is None:
            raise _unauthorized("API key required (Authorization: Bearer <API key>)")
        return key_id

    def session_view(model: Optional[str], expires_at: int) -> dict:
        return {"id": "sess_" + secrets.token_hex(12), "object": "realtime.session", "type": "realtime",
                "model": model or MODEL_NAME, "output_modalities": ["audio"], "expires_at": expires_at}

    @app.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request) -> dict:
        key_id = authorise(request)
        body = _validate(ClientSecretRequest, await request.body())
        session = body.session or {}
        if session.get("type", "realtime") != "realtime":
            # the answer's session is a realtime one: never claim a kind of session we do not serve
            raise HTTPException(400, f"session.type {session.get('type')!r} is not supported (only 'realtime')")
        ttl = body.expires_after.seconds if body.expires_after else None
        value, expires_at = await gw.tokens.mint(key_id, ttl)
        model = session.get("model")
        return {"value": value, "expires_at": expires_at,
                "session": session_view(model if isinstance(model, str) else None, expires_at)}

    @app.post("/v1/realtime/sessions")
    async def beta_sessions(request: Request) -> dict:
        key_id = authorise(request)
        body = _validate(BetaSessionRequest, await request.body())
        after = body.client_secret.expires_after if body.client_secret else None
        value, expires_at = await gw.tokens.mint(key_id, after.seconds if after else None)
        v = session_view(body.model, expires_at)
        return {"id": v["id"], "object": v["object"], "model": v["model"], "modalities": ["audio", "text"],
                "client_secret": {"value": value, "expires_at": expires_at}}


__all__ = ["add_key_routes"]
