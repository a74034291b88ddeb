"""The worker's FastAPI app: ``/health``, the three WebSocket endpoints of PROTOCOL.md and the
realtime one (``/ws/realtime/{session_id}``, behind the gateway's ``/v1/realtime``).

The engine is loaded on the engine thread after the server starts listening (lifespan), so
``/health`` answers ``loading`` at once and ``error`` (with the reason) if loading fails.
With a worker token configured every route sits behind ``auth.RequireToken``.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Optional

from fastapi import FastAPI, WebSocket

from ..config import Settings
from ..engine.api import Processor
from .auth import RequireToken, worker_token
from .chat import ChatConnection, new_chat_id
from .duplex import DuplexConnection
from .half_duplex import HalfDuplexConnection
from .realtime import RealtimeConnection, beta_requested
from .register import register_forever
from .session import WorkerContext
from .state import WorkerRuntime

log = logging.getLogger("omniserve.worker")

MAX_SESSION_ID = 128


def default_loader(settings: Settings) -> Callable[[], Processor]:
    """The real engine (imported lazily: the worker answers /health while it loads)."""

    def load() -> Processor:
        from ..engine import load_processor

        return load_processor(settings.engine)

    return load


def create_app(settings: Settings, loader: Optional[Callable[[], Processor]] = None) -> FastAPI:
    runtime = WorkerRuntime(settings.worker.index, settings.engine.backend)
    ctx = WorkerContext(settings, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start_loading(loader or default_loader(settings))
        reg = asyncio.create_task(register_forever(settings.worker)) if settings.worker.gateway_url else None
        yield
        if reg is not None:
            reg.cancel()
        runtime.shutdown()

    app = FastAPI(title="omniserve worker", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = runtime
    token = worker_token(settings.worker)
    if token:
        app.add_middleware(RequireToken, token=token)

    @app.get("/health")
    async def health() -> dict:
        return runtime.health()

    @app.websocket("/ws/chat")
    async def ws_chat(ws: WebSocket) -> None:
        await ChatConnection(ws, ctx, new_chat_id()).serve()

    @app.websocket("/ws/half_duplex/{session_id}")
    async def ws_half_duplex(ws: WebSocket, session_id: str) -> None:
        await HalfDuplexConnection(ws, ctx, session_id[:MAX_SESSION_ID]).serve()

    @app.websocket("/ws/duplex/{session_id}")
    async def ws_duplex(ws: WebSocket, session_id: str) -> None:
        await DuplexConnection(ws, ctx, session_id[:MAX_SESSION_ID]).serve()

    @app.websocket("/ws/realtime/{session_id}")
    async def ws_realtime(ws: WebSocket, session_id: str) -> None:
        beta = beta_requested(ws.headers.get("openai-beta"), ws.query_params.get("beta"))
        await RealtimeConnection(ws, ctx, session_id[:MAX_SESSION_ID], beta=beta).serve()

    return app
