"""The gateway's FastAPI application: wires what one process holds (``gateway.Gateway``: the pool,
queue, registries and session store) to the REST routes of PROTOCOL.md (status, queue, ETA, apps, workers here; voices/presets in
``routes_media``; sessions in ``routes_sessions``), the three WebSocket endpoints and the pages.

Nothing here runs a model, and nothing here blocks the event loop: file and audio work is moved
to threads. Admin routes take ``Authorization: Bearer <token>``, checked before their body is
parsed; worker registration takes the worker token. Every request first passes the edge
(``edge.install``: security headers, Host allow-list, body caps).
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Callable, TypeVar

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp

from ..config import Settings
from ..protocol import modes
from ..protocol.rest import AppOut, AppUpdate, EtaConfigUpdate, EtaOut, QueueOut, StatusOut, WorkerOut
from ..protocol.worker import WorkerRegister
from . import ws as ws_endpoints
from .edge import install as install_edge
from .gateway import Gateway
from .metrics import add_metrics_route
from .pages import mount_pages
from .routes_keys import add_key_routes
from .state.shared_queue import SharedQueue
from .routes_media import add_media_routes
from .routes_sessions import add_session_routes
from .state.link import UNAVAILABLE, StateUnavailable


class GatewayApp(FastAPI):
    """FastAPI whose whole middleware stack (error pages included) sits behind the edge."""

    edge: Callable[[ASGIApp], ASGIApp] = staticmethod(lambda app: app)

    def build_middleware_stack(self) -> ASGIApp:
        return self.edge(super().build_middleware_stack())


_M = TypeVar("_M", bound=BaseModel)


async def _parse(request: Request, model: type[_M]) -> _M:
    """The JSON body as ``model`` (after the caller checked the token); 422 like FastAPI's own."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


def create_app(settings: Settings) -> FastAPI:
    gw = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = GatewayApp(title="omniserve gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.edge = lambda inner: install_edge(inner, settings.gateway, gw.hosts)
    app.state.gateway = gw

    @app.exception_handler(StateUnavailable)
    async def state_unavailable(request: Request, e: StateUnavailable) -> JSONResponse:
        """Redis (``gateway.redis_url``) cannot be reached: a write is refused, try again soon."""
        return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "2"})

    # ------------------------------------------------------------ WebSockets
    # plain Starlette routes: no dependency injection on the hot path of 10,000 handshakes
    async def ws_chat(ws: WebSocket) -> None:
        await ws_endpoints.serve(gw, ws, modes.CHAT)

    async def ws_half_duplex(ws: WebSocket) -> None:
        await ws_endpoints.serve(gw, ws, modes.HALF_DUPLEX, ws.path_params["session_id"])

    async def ws_duplex(ws: WebSocket) -> None:
        sid = ws.path_params["session_id"]
        await ws_endpoints.serve(gw, ws, modes.duplex_mode(sid), sid)

    async def ws_realtime(ws: WebSocket) -> None:
        await ws_endpoints.serve_realtime(gw, ws)

    app.router.routes.extend([WebSocketRoute(modes.CHAT.endpoint, ws_chat),
                              WebSocketRoute(modes.REALTIME_PATH, ws_realtime),
                              WebSocketRoute(modes.HALF_DUPLEX.endpoint + "/{session_id}", ws_half_duplex),
                              WebSocketRoute(modes.OMNI_DUPLEX.endpoint + "/{session_id}", ws_duplex)])

    # -------------------------------------------------------- status / queue
    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "role": "gateway", "workers_ready": sum(1 for w in gw.pool.workers if w.ready),
                "queue_length": len(gw.queue), "gateway_id": gw.gateway_id}

    @app.get("/status", response_model=StatusOut)
    def status() -> StatusOut:
        return gw.pool.status()

    @app.get("/workers", response_model=list[WorkerOut])
    def workers() -> list[WorkerOut]:
        return gw.pool.worker_views()

    @app.post("/api/workers/register", response_model=WorkerOut)
    async def register_worker(request: Request) -> WorkerOut:
        gw.auth.require_worker(request)
        body = await _parse(request, WorkerRegister)
        w = gw.pool.add(body.url, ttl_s=body.ttl_s)
        if gw.shared_pool is not None:   # every gateway learns it
            try:
                await gw.shared_pool.register(body.url, body.ttl_s)
            except UNAVAILABLE:
                raise HTTPException(503, "shared state unreachable; registered with this gateway only") from None
        await gw.pool.check(w)
        return next(v for v in gw.pool.worker_views() if v.url == w.url)

    @app.get("/api/queue", response_model=QueueOut)
    async def queue(request: Request, limit: int = 10000) -> JSONResponse:
        """Shaped like ``QueueOut``; ``items`` holds the first ``limit`` entries (with shared state:
        of the whole queue, at most ``shared_listing.LIST_MAX``)."""
        admin = gw.auth.is_admin(request)
        if gw.listing is not None:
            length, items, running = await _shared(gw.listing.listing(admin, max(0, limit)))
            return JSONResponse({"queue_length": length, "items": items, "running_tasks": running})
        items = gw.pool.queue_items(reveal_ids=admin, limit=max(0, limit))
        return JSONResponse({"queue_length": len(gw.queue), "items": items,
                             "running_tasks": [r.model_dump() for r in gw.pool.running()]})

    def _find_ticket(ticket_id: str, request: Request):
        t = gw.queue.get(ticket_id)
        if t is None and gw.auth.is_admin(request):
            t = next((x for x in gw.queue if x.public_id == ticket_id), None)
        if t is None:
            raise HTTPException(404, "no such ticket in the queue")
        return t

    @app.get("/api/queue/{ticket_id}")
    async def queue_item(ticket_id: str, request: Request) -> dict:
        if gw.shared_pool is not None:    # its global position, whichever process holds it
            t = gw.queue.get(ticket_id)
            if t is not None:
                return {"ticket_id": ticket_id, "request_type": t.request_type, "position": t.position,
                        "estimated_wait_s": round(t.estimated_wait_s, 1), "queue_length": len(gw.queue)}
            found = await _shared(gw.shared_pool.lookup(ticket_id))
            if found is None:
                t = _find_ticket(ticket_id, request)    # an admin's public id of a local waiter, else 404
                return {"ticket_id": ticket_id, "request_type": t.request_type, "position": t.position,
                        "estimated_wait_s": round(t.estimated_wait_s, 1), "queue_length": len(gw.queue)}
            return {"ticket_id": ticket_id, "request_type": found[0], "position": found[2] + 1,
                    "estimated_wait_s": round(gw.queue.eta_at(found[2]) if isinstance(gw.queue, SharedQueue) else 0.0, 1),
                    "queue_length": len(gw.queue)}
        t = _find_ticket(ticket_id, request)
        items = list(gw.queue)
        pos = items.index(t) + 1
        etas, _ = gw.pool._layout([x.request_type for x in items[:pos]])
        return {"ticket_id": ticket_id, "request_type": t.request_type, "position": pos,
                "estimated_wait_s": round(etas[-1], 1), "queue_length": len(items)}

    @app.delete("/api/queue/{ticket_id}")
    async def cancel(ticket_id: str, request: Request) -> dict:
        # the secret ticket id is proof of ownership; else admin
        if gw.shared_pool is not None and gw.queue.get(ticket_id) is None \
                and await _shared(gw.shared_pool.cancel(ticket_id)):
            return {"cancelled": True}      # the process holding the client removes it
        gw.queue.remove(_find_ticket(ticket_id, request), "cancelled")
        return {"cancelled": True}

    async def _shared(op):
        try:
            return await op
        except UNAVAILABLE:
            raise HTTPException(503, "shared state unreachable") from None

    # -------------------------------------------------------------------- ETA
    @app.get("/api/config/eta", response_model=EtaOut)
    def eta_get() -> EtaOut:
        return gw.eta.snapshot()

    @app.put("/api/config/eta", response_model=EtaOut)
    async def eta_put(request: Request) -> EtaOut:
        gw.auth.require(request)
        body = await _parse(request, EtaConfigUpdate)
        await gw.eta.update(body)      # writes eta_config.json (or the shared map)
        gw.queue.invalidate()
        return gw.eta.snapshot()

    # ------------------------------------------------------------------- apps
    @app.get("/api/apps", response_model=list[AppOut])
    def apps_list() -> list[AppOut]:
        return gw.apps.all()

    @app.get("/api/admin/apps", response_model=list[AppOut])
    def admin_apps(request: Request) -> list[AppOut]:
        gw.auth.require(request)
        return gw.apps.all()

    @app.put("/api/admin/apps/{app_id}", response_model=AppOut)
    async def admin_app_set(app_id: str, request: Request) -> AppOut:
        gw.auth.require(request)
        body = await _parse(request, AppUpdate)
        try:
            return await gw.apps.set(app_id, body.enabled)   # writes apps.json (or the shared map)
        except KeyError:
            raise HTTPException(404, f"unknown app {app_id!r}") from None

    add_key_routes(app, gw)
    add_media_routes(app, gw)
    add_session_routes(app, gw)
    add_metrics_route(app, gw.metrics, (gw.admin_token, settings.gateway.metrics_token))

    mount_pages(app, gw.apps)
    return app
