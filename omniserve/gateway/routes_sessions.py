"""The public routes of recorded sessions (PROTOCOL.md: metadata, recording, assets, zip download,
upload, comments), proxied to the worker that made the recording (``recording_proxy``): the
gateway keeps no recording on its own disk.

Before anything is forwarded the id is checked (``recordings.ids``) and an asset path is split
into segments, each refused if it is empty, ``.`` or ``..`` and sent percent-encoded, so a path
can only ever name a file under that recording on the worker (which checks again). The edge has
already capped the request body (``gateway.max_upload_recording_bytes`` for an upload); a comment
is validated here and sent on re-serialized. Bodies stream both ways, never held whole.
"""
from __future__ import annotations

from typing import AsyncIterator
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from ..protocol.rest import COMMENT_BODY_BYTES, CommentIn
from ..recordings.ids import valid_id
from .gateway import Gateway
from ..http_body import read_capped

def _nf() -> HTTPException:
    return HTTPException(404, "no such session or file")


def _checked(session_id: str) -> str:
    if not valid_id(session_id):
        raise _nf()
    return session_id


def _asset_path(path: str) -> str:
    """``path`` as URL segments, each percent-encoded; 404 for anything but plain names."""
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise _nf()
    return "/".join(quote(p, safe="") for p in parts)


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def add_session_routes(app: FastAPI, gw: Gateway) -> None:
    proxy = gw.recordings

    @app.get("/api/sessions/{session_id}")
    async def session_meta(session_id: str, request: Request) -> StreamingResponse:
        return await proxy.open("GET", _checked(session_id), "", request.headers)

    @app.get("/api/sessions/{session_id}/recording")
    async def session_recording(session_id: str, request: Request) -> StreamingResponse:
        return await proxy.open("GET", _checked(session_id), "/recording", request.headers)

    @app.get("/api/sessions/{session_id}/assets/{path:path}")
    async def session_asset(session_id: str, path: str, request: Request) -> StreamingResponse:
        return await proxy.open("GET", _checked(session_id), "/assets/" + _asset_path(path), request.headers)

    @app.get("/api/sessions/{session_id}/download")
    async def session_download(session_id: str, request: Request) -> StreamingResponse:
        return await proxy.open("GET", _checked(session_id), "/download", request.headers)

    @app.post("/api/sessions/{session_id}/upload-recording")
    async def session_upload(session_id: str, request: Request) -> StreamingResponse:
        return await proxy.open("POST", _checked(session_id), "/upload-recording", request.headers, _body(request))

    @app.get("/api/sessions/{session_id}/comment")
    async def session_comments(session_id: str, request: Request) -> StreamingResponse:
        return await proxy.open("GET", _checked(session_id), "/comment", request.headers)

    @app.post("/api/sessions/{session_id}/comment", status_code=201)
    async def session_comment(session_id: str, request: Request) -> StreamingResponse:
        sid = _checked(session_id)
        body = await read_capped(request, COMMENT_BODY_BYTES)
        try:
            c = CommentIn.model_validate_json(body)
        except ValidationError as e:
            raise HTTPException(422, str(e.errors()[:3])) from None
        return await proxy.open("POST", sid, "/comment", {"content-type": "application/json"},
                                c.model_dump_json().encode())
