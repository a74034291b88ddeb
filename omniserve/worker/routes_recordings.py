"""The worker serves the recordings it made (``recordings.RecordingStore`` over its own
``data_dir``), for the gateway, which proxies the public ``/api/sessions/...`` routes here.

Routes (behind the worker token like every worker route; docs/worker.md):

    GET  /recordings/{id}                   meta.json + file list
    GET  /recordings/{id}/recording         recording.json
    GET  /recordings/{id}/assets/{path}     one file (Range requests work)
    GET  /recordings/{id}/download          the folder as a zip, streamed while it is written
    POST /recordings/{id}/upload-recording  a browser recording, raw body, streamed to disk
    GET|POST /recordings/{id}/comment       comments ({text, rating?})
    POST /recordings/{key}/diagnostics      one client_diagnostic frame (the recording, else the session key)

File work runs on threads. ``add_recording_routes`` also runs the cleanup (age, then storage cap)
for as long as the app runs, wrapped around the app's own lifespan.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError

from ..config import Settings
from ..protocol.rest import COMMENT_BODY_BYTES, CommentIn
from ..recordings.cleanup import cleanup_loop
from ..http_body import read_capped
from ..recordings.store import RecordingNotFound, RecordingStore
from ..recordings.uploads import BadUpload, RecordingUpload, StorageFull, TooLarge

FLUSH_BYTES = 1024 * 1024          # an upload goes to disk about this much at a time


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


def _nf() -> HTTPException:
    return HTTPException(404, "no such session or file")


def add_recording_routes(app: FastAPI, settings: Settings) -> RecordingStore:
    store = RecordingStore.of(settings)
    w = settings.worker

    @app.get("/recordings/{rec_id}")
    async def rec_meta(rec_id: str) -> dict:
        try:
            return await asyncio.to_thread(store.meta, rec_id)
        except RecordingNotFound:
            raise _nf() from None

    @app.get("/recordings/{rec_id}/recording")
    async def rec_timeline(rec_id: str) -> FileResponse:
        try:
            return FileResponse(await asyncio.to_thread(store.recording, rec_id), media_type="application/json")
        except RecordingNotFound:
            raise _nf() from None

    @app.get("/recordings/{rec_id}/assets/{path:path}")
    async def rec_asset(rec_id: str, path: str) -> FileResponse:
        try:
            return FileResponse(await asyncio.to_thread(store.file, rec_id, path))
        except RecordingNotFound:
            raise _nf() from None

    @app.get("/recordings/{rec_id}/download")
    async def rec_download(rec_id: str) -> StreamingResponse:
        try:
            await asyncio.to_thread(store.dir, rec_id)
        except RecordingNotFound:
            raise _nf() from None
        return StreamingResponse(store.zip_stream(rec_id), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{rec_id}.zip"'})

    @app.post("/recordings/{rec_id}/upload-recording")
    async def rec_upload(rec_id: str, request: Request) -> dict:
        try:
            up = await asyncio.to_thread(store.open_upload, rec_id, request.headers.get("content-type", ""))
        except RecordingNotFound:
            raise _nf() from None
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

    @app.get("/recordings/{rec_id}/comment")
    async def rec_comments(rec_id: str) -> list[dict]:
        try:
            return await asyncio.to_thread(store.comments, rec_id)
        except RecordingNotFound:
            raise _nf() from None

    @app.post("/recordings/{rec_id}/comment", status_code=201)
    async def rec_comment(rec_id: str, request: Request) -> dict:
        body = await read_capped(request, COMMENT_BODY_BYTES)
        try:
            c = CommentIn.model_validate_json(body)
        except ValidationError as e:
            raise HTTPException(422, str(e.errors()[:3])) from None
        try:
            return await asyncio.to_thread(store.add_comment, rec_id, c.text, c.rating)
        except RecordingNotFound:
            raise _nf() from None
        except BadUpload as e:
            raise HTTPException(413, str(e)) from None
        except StorageFull as e:
            raise HTTPException(507, str(e)) from None

    @app.post("/recordings/{key}/diagnostics")
    async def rec_diagnostic(key: str, request: Request) -> dict:
        body = await read_capped(request, store.max_diagnostics_bytes)
        text = body.decode("utf-8", errors="replace")
        return {"stored": await asyncio.to_thread(store.append_diagnostic, key, text)}

    _run_cleanup(app, store, w.session_cleanup_interval_s, w.session_retention_days, w.session_storage_cap_mb)
    return store


def _run_cleanup(app: FastAPI, store: RecordingStore, interval_s: float, retention_days: float,
                 cap_mb: float) -> None:
    """The cleanup task lives as long as the app: started before, cancelled after its lifespan."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        task = asyncio.create_task(cleanup_loop(store, interval_s, retention_days, cap_mb))
        try:
            async with inner(a) as state:
                yield state
        finally:
            task.cancel()

    app.router.lifespan_context = lifespan
