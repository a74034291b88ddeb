"""REST routes for voices (reference audio), presets and front-end defaults (PROTOCOL.md).

Registered by ``app.create_app``; uploads are decoded off the event loop by the registry.
Anonymous voice uploads are refused cross-site (a foreign ``Origin`` or ``Sec-Fetch-Site:
cross-site``), limited per client address (``gateway.edge.uploads_per_ip_per_hour``; admin callers
are exempt) and capped in number (``gateway.edge.max_voices``; with ``gateway.redis_url`` for all
gateways together: the voices are shared, ``state.shared_voices``).
"""
from __future__ import annotations

import asyncio
import base64
from typing import Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError

from ..audio import IN_RATE, OUT_RATE, encode_f32, read_audio_bytes
from ..protocol.messages import ChatRequest, DuplexConfig, GenerationConfig, HalfDuplexConfig, TTSConfig
from ..protocol.modes import CHAT, HALF_DUPLEX, MODES, Mode
from ..protocol.rest import RefAudioOut, RefAudioUpload
from .clients import RateLimiter, client_ip, rate_key
from .gateway import Gateway
from ..http_body import read_capped
from .presets import DEFAULT_VOICE
from .ref_audio import RefAudioError, VoicesFull


def add_media_routes(app: FastAPI, gw: Gateway) -> None:
    edge = gw.settings.gateway.edge
    uploads = RateLimiter(edge.uploads_per_ip_per_hour, 3600.0)
    in_flight: list[int] = [0]     # uploads being decoded: they count against max_voices too

    def admit_upload(request: Request) -> None:
        """Cross-site, rate and count checks, before a byte of the body is read."""
        origin = request.headers.get("origin")
        if request.headers.get("sec-fetch-site", "").lower() == "cross-site" or not gw.hosts.origin_allowed(origin):
            raise HTTPException(403, "voice uploads are accepted from this site's own pages only")
        if gw.ref_audio.count() + in_flight[0] >= edge.max_voices:
            raise HTTPException(507, voices_full())
        if not gw.auth.is_admin(request):
            key = rate_key(client_ip(request.scope, edge.trusted_proxies))
            if not uploads.allow(key):
                wait = max(1, round(uploads.retry_after_s(key)))
                raise HTTPException(429, f"too many voice uploads from your address ({edge.uploads_per_ip_per_hour} "
                                         "per hour); try again later", headers={"Retry-After": str(wait)})

    def voices_full() -> str:
        return f"voice storage is full ({edge.max_voices} voices); an admin can delete some"

    # -------------------------------------------------------------- ref audio
    @app.get("/api/assets/ref_audio", response_model=list[RefAudioOut])
    def ref_list() -> list[RefAudioOut]:
        return gw.ref_audio.list()

    @app.post("/api/assets/ref_audio", response_model=RefAudioOut, status_code=201)
    async def ref_upload(request: Request, name: Optional[str] = None, format: Optional[str] = None) -> RefAudioOut:
        admit_upload(request)
        in_flight[0] += 1
        try:
            return await _store_voice(request, name, format)
        finally:
            in_flight[0] -= 1

    async def _store_voice(request: Request, name: Optional[str], format: Optional[str]) -> RefAudioOut:
        cap = gw.ref_audio.max_bytes
        is_json = request.headers.get("content-type", "").startswith("application/json")
        body = await read_capped(request, cap * 4 // 3 + 4096 if is_json else cap)
        if is_json:
            try:
                up = RefAudioUpload.model_validate_json(body)
                data = base64.b64decode(up.data, validate=True)
            except (ValidationError, ValueError) as e:
                raise HTTPException(400, f"invalid upload: {e}") from None
            name, format = up.name, up.format
        else:
            data = body
        if not name:
            raise HTTPException(400, "name is required (?name=... or JSON {name, data})")
        try:
            return await gw.ref_audio.add(name, data, format)
        except VoicesFull:      # other gateways' uploads took the last places meanwhile (shared store)
            raise HTTPException(507, voices_full()) from None
        except RefAudioError as e:
            raise HTTPException(413 if "too large" in str(e) else 400, str(e)) from None

    @app.delete("/api/assets/ref_audio/{ref_id}")
    async def ref_delete(ref_id: str, request: Request) -> dict:
        gw.auth.require(request)
        if not await gw.ref_audio.delete(ref_id):
            raise HTTPException(404, "no such voice")
        return {"deleted": ref_id}

    @app.get("/api/assets/ref_audio/{ref_id}/audio")
    async def ref_audio_file(ref_id: str) -> Response:
        got = await gw.ref_audio.audio(ref_id)
        if got is None:
            raise HTTPException(404, "no such voice")
        if isinstance(got, bytes):
            return Response(got, media_type="audio/wav")
        return FileResponse(got, media_type="audio/wav")

    default_voice_cache: dict = {}

    @app.get("/api/default_ref_audio")
    async def default_ref_audio() -> dict:
        if not default_voice_cache:
            pcm = await asyncio.to_thread(read_audio_bytes, DEFAULT_VOICE.read_bytes(), 16000)
            default_voice_cache.update(id="default", name="Default voice", sample_rate=16000,
                                       duration_s=round(pcm.size / 16000, 2), audio_base64=encode_f32(pcm),
                                       audio_url="/api/assets/ref_audio/default/audio")
        return default_voice_cache

    # ---------------------------------------------------------------- presets
    @app.get("/api/presets")
    def presets() -> dict:
        return gw.presets.listing()

    @app.get("/api/presets/{mode}/{preset_id}/audio")
    def preset_audio(mode: str, preset_id: str) -> FileResponse:
        p = gw.presets.audio_path(mode, preset_id)
        if p is None:
            raise HTTPException(404, "no audio for this preset")
        return FileResponse(p, media_type="audio/wav")

    @app.get("/api/frontend_defaults")
    def frontend_defaults() -> dict:
        out: dict = {m.defaults_key: {**_wire_defaults(m), "system_prompt": gw.presets.first_prompt(m.presets)}
                     for m in MODES}
        return out | {"apps": {a.app_id: a.enabled for a in gw.apps.all()},
                      "default_ref_audio": "/api/default_ref_audio",
                      "audio": {"input_sample_rate": IN_RATE, "output_sample_rate": OUT_RATE},
                      "require_keys": gw.settings.gateway.require_keys}   # pages then mint tokens (docs/security.md)


def _wire_defaults(mode: Mode) -> dict:
    """A mode's settings as the wire models default them (``omniserve.knobs``' figures)."""
    if mode is CHAT:
        return {"generation": GenerationConfig().model_dump(), "streaming": ChatRequest.model_fields["streaming"].default,
                "tts": {"enabled": TTSConfig().enabled}}
    return {"config": (HalfDuplexConfig() if mode is HALF_DUPLEX else DuplexConfig()).model_dump()}

