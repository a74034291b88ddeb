"""REST routes for voices (reference audio), presets and front-end defaults (PROTOCOL.md).

Registered by ``app.create_app``; uploads are decoded off the event loop by the registry.
"""
from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError

from ..protocol.messages import DuplexConfig, GenerationConfig, HalfDuplexConfig
from ..protocol.rest import RefAudioOut, RefAudioUpload
from .http import read_capped
from .presets import DEFAULT_VOICE
from .ref_audio import RefAudioError

if TYPE_CHECKING:
    from .app import Gateway


def add_media_routes(app: FastAPI, gw: "Gateway") -> None:
    # -------------------------------------------------------------- ref audio
    @app.get("/api/assets/ref_audio", response_model=list[RefAudioOut])
    def ref_list() -> list[RefAudioOut]:
        return gw.ref_audio.list()

    @app.post("/api/assets/ref_audio", response_model=RefAudioOut, status_code=201)
    async def ref_upload(request: Request, name: Optional[str] = None, format: Optional[str] = None) -> RefAudioOut:
        cap = gw.ref_audio.max_bytes
        body = await read_capped(request, cap * 4 // 3 + 4096)
        if request.headers.get("content-type", "").startswith("application/json"):
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
        except RefAudioError as e:
            raise HTTPException(413 if "too large" in str(e) else 400, str(e)) from None

    @app.delete("/api/assets/ref_audio/{ref_id}")
    def ref_delete(ref_id: str, request: Request) -> dict:
        gw.auth.require(request)
        if not gw.ref_audio.delete(ref_id):
            raise HTTPException(404, "no such voice")
        return {"deleted": ref_id}

    @app.get("/api/assets/ref_audio/{ref_id}/audio")
    def ref_audio_file(ref_id: str) -> FileResponse:
        p = gw.ref_audio.path(ref_id)
        if p is None:
            raise HTTPException(404, "no such voice")
        return FileResponse(p, media_type="audio/wav")

    default_voice_cache: dict = {}

    @app.get("/api/default_ref_audio")
    async def default_ref_audio() -> dict:
        if not default_voice_cache:
            from ..audio import encode_f32, read_audio_bytes
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
        return {
            "chat": {"generation": GenerationConfig().model_dump(), "streaming": True, "tts": {"enabled": False},
                     "system_prompt": gw.presets.first_prompt("turnbased")},
            "half_duplex": {"config": HalfDuplexConfig().model_dump(), "system_prompt": gw.presets.first_prompt("half_duplex")},
            "omni": {"config": DuplexConfig().model_dump(), "system_prompt": gw.presets.first_prompt("omni")},
            "audio_duplex": {"config": DuplexConfig().model_dump(), "system_prompt": gw.presets.first_prompt("audio_duplex")},
            "apps": {a.app_id: a.enabled for a in gw.apps.all()},
            "default_ref_audio": "/api/default_ref_audio",
            "audio": {"input_sample_rate": 16000, "output_sample_rate": 24000},
        }

