"""The worker's FastAPI app: ``/health``, the three WebSocket endpoints of PROTOCOL.md and the
realtime one (``/ws/realtime/{session_id}``, behind the gateway's ``/v1/realtime``).

The engine is loaded on the engine thread after the server starts listening (lifespan), so
``/health`` (a ``protocol.worker.WorkerHealth``) answers ``loading`` at once and ``error`` (with
the reason) if loading fails. Slots and capabilities come from the backend's class before it loads.
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
from ..engine.processor import backend_type
from ..protocol.worker import SLOT_HEADER
from .auth import RequireToken, worker_token
from .capacity import engine_capabilities, route_capabilities, slot_count
from .chat import ChatConnection, new_chat_id
from .duplex import DuplexConnection
from .half_duplex import HalfDuplexConnection
from .metrics import WorkerMetrics, add_metrics_route
from .realtime import RealtimeConnection, beta_requested
from .register import Heartbeat
from .routes_recordings import add_recording_routes
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
    # sized before the engine loads (the backend's class says what it serves): /health and the
    # registration tell the gateway the slots and capabilities from the first answer on
    caps = backend_type(settings.engine.backend).capabilities
    runtime = WorkerRuntime(settings.worker.index, settings.engine.backend,
                            slots=slot_count(settings.worker.slots, caps, settings.engine.backend),
                            capabilities=engine_capabilities(caps))
    ctx = WorkerContext(settings, runtime, WorkerMetrics(runtime.health))
    heartbeat = Heartbeat(settings.worker, lambda: runtime.slots_total) if settings.worker.gateway_url else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # every route is in place now: advertise the optional ones (/metrics, /recordings/…) that exist
        runtime.route_capabilities = route_capabilities(getattr(r, "path", "") for r in app.routes)
        runtime.start_loading(loader or default_loader(settings))
        reg = asyncio.create_task(heartbeat.run()) if heartbeat is not None else None
        yield
        if reg is not None:
            reg.cancel()
        runtime.shutdown()

    app = FastAPI(title="omniserve worker", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = runtime
    token = worker_token(settings.worker)
    if token:
        app.add_middleware(RequireToken, token=token, metrics_token=settings.worker.metrics_token)
    add_metrics_route(app, ctx.metrics, (token, settings.worker.metrics_token))   # Prometheus (docs/metrics.md)

    @app.get("/health")
    async def health() -> dict:
        """A ``protocol.worker.WorkerHealth`` (docs/worker.md, "Health, slots and registration")."""
        return runtime.health()

    # each session names the slot the gateway claimed for it (SLOT_HEADER; none: any idle slot)
    @app.websocket("/ws/chat")
    async def ws_chat(ws: WebSocket) -> None:
        await ChatConnection(ws, ctx, new_chat_id(), slot=ws.headers.get(SLOT_HEADER)).serve()

    @app.websocket("/ws/half_duplex/{session_id}")
    async def ws_half_duplex(ws: WebSocket, session_id: str) -> None:
        await HalfDuplexConnection(ws, ctx, session_id[:MAX_SESSION_ID], slot=ws.headers.get(SLOT_HEADER)).serve()

    @app.websocket("/ws/duplex/{session_id}")
    async def ws_duplex(ws: WebSocket, session_id: str) -> None:
        await DuplexConnection(ws, ctx, session_id[:MAX_SESSION_ID], slot=ws.headers.get(SLOT_HEADER)).serve()

    @app.websocket("/ws/realtime/{session_id}")
    async def ws_realtime(ws: WebSocket, session_id: str) -> None:
        beta = beta_requested(ws.headers.get("openai-beta"), ws.query_params.get("beta"))
        await RealtimeConnection(ws, ctx, session_id[:MAX_SESSION_ID], beta=beta,
                                 slot=ws.headers.get(SLOT_HEADER)).serve()

    add_recording_routes(app, settings)     # /recordings/…: the recordings this worker made
    return app
