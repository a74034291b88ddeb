"""REST routes for recorded sessions: metadata, recording, assets, zip download, uploads, comments.

Registered by ``app.create_app``; every path goes through ``SessionStore`` (no traversal). A
recording upload is streamed to disk in pieces of about ``FLUSH_BYTES`` (never held whole); the
edge already capped its size, the store checks its own cap and the storage budget on each piece.
"""
from __future__ import annotations

import asyncio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError

from ..protocol.rest import CommentIn
from .gateway import Gateway
from .http import read_capped
from .sessions import BadUpload, RecordingUpload, SessionNotFound, StorageFull, TooLarge

FLUSH_BYTES = 1024 * 1024


async def _receive_into(request: Request, up: RecordingUpload) -> None:
    """Body pieces go to ``up`` from a thread, about ``FLUSH_BYTES`` at a time."""
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) >= FLUSH_BYTES:
            await asyncio.to_thread(up.write, bytes(buf))
            buf.clear()
    if buf:
        await asyncio.to_thread(up.write, bytes(buf))


def add_session_routes(app: FastAPI, gw: Gateway) -> None:
    # --------------------------------------------------------------- sessions
    def _nf(e: Exception) -> HTTPException:
        return HTTPException(404, "no such session or file")

    @app.get("/api/sessions/{session_id}")
    async def session_meta(session_id: str) -> dict:
        try:
            return await asyncio.to_thread(gw.sessions.meta, session_id)
        except SessionNotFound as e:
            raise _nf(e) from None

    @app.get("/api/sessions/{session_id}/recording")
    async def session_recording(session_id: str) -> JSONResponse:
        try:
            return JSONResponse(await asyncio.to_thread(gw.sessions.recording, session_id))
        except (SessionNotFound, ValueError) as e:
            raise _nf(e) from None

    @app.get("/api/sessions/{session_id}/assets/{path:path}")
    def session_asset(session_id: str, path: str) -> FileResponse:
        try:
            return FileResponse(gw.sessions.file(session_id, path))
        except SessionNotFound as e:
            raise _nf(e) from None

    @app.get("/api/sessions/{session_id}/download")
    def session_download(session_id: str) -> StreamingResponse:
        try:
            gw.sessions.dir(session_id)
        except SessionNotFound as e:
            raise _nf(e) from None
        return StreamingResponse(gw.sessions.zip_stream(session_id), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{session_id}.zip"'})

    @app.post("/api/sessions/{session_id}/upload-recording")
    async def session_upload(session_id: str, request: Request) -> dict:
        try:
            up = await asyncio.to_thread(gw.sessions.open_upload, session_id, request.headers.get("content-type", ""))
        except SessionNotFound as e:
            raise _nf(e) from None
        except BadUpload as e:
            raise HTTPException(415, str(e)) from None
        committed = False
        try:
            await _receive_into(request, up)
            name = await asyncio.to_thread(up.commit)
            committed = True
        except BadUpload as e:
            raise HTTPException(415, str(e)) from None
        except TooLarge as e:
            raise HTTPException(413, str(e)) from None
        except StorageFull as e:
            raise HTTPException(507, str(e)) from None
        except OSError:
            raise HTTPException(507, "the upload could not be stored") from None
        finally:
            if not committed:
                await asyncio.to_thread(up.abort)
        return {"stored": name, "bytes": up.size}

    @app.get("/api/sessions/{session_id}/comment")
    def session_comments(session_id: str) -> list[dict]:
        try:
            return gw.sessions.comments(session_id)
        except SessionNotFound as e:
            raise _nf(e) from None

    @app.post("/api/sessions/{session_id}/comment", status_code=201)
    async def session_comment(session_id: str, request: Request) -> dict:
        body = await read_capped(request, gw.sessions.max_comment_bytes + 1024)
        try:
            c = CommentIn.model_validate_json(body)
        except ValidationError as e:
            raise HTTPException(422, str(e.errors()[:3])) from None
        try:
            return await asyncio.to_thread(gw.sessions.add_comment, session_id, c.text, c.rating)
        except SessionNotFound as e:
            raise _nf(e) from None
        except BadUpload as e:
            raise HTTPException(413, str(e)) from None
        except StorageFull as e:
            raise HTTPException(507, str(e)) from None
