"""The three WebSocket endpoints: admission, queueing, then the relay.

While a client waits, its socket is read the whole time (``ClientSide``): what it sends is
buffered for the worker (audio only the newest seconds) and a disconnect removes its ticket at
once. Once a worker is assigned, ``Relay`` connects to it; a worker that turns out unreachable or
busy gives the ticket back at the head of the queue and the client waits on, so "Worker busy" never
reaches a client the queue could still serve. ``queue_done`` is sent once, when the first worker
link is open.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Callable, Optional

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from ..protocol import realtime
from ..protocol.chat_request import read_chat_request_async
from ..protocol.messages import CLOSE_POLICY, CLOSE_TRY_AGAIN, ProtocolError, QueueDoneMsg, QueuedMsg, error
from ..protocol.modes import CHAT, REALTIME, Mode
from .admission import session_id_ok
from .client_side import ClientSide, WaiterBuffer
from .clients import client_ip
from .gateway import Gateway
from .metrics import HANDSHAKE_REFUSED, IP_LIMIT, QUEUE_FULL, STATE_UNAVAILABLE, UNAUTHORIZED
from .proxy import Relay, RelayOptions
from .queue import QueueFull, Ticket
from .state.link import StateUnavailable

log = logging.getLogger(__name__)

CHAT_FIRST_FRAME_TIMEOUT_S = 60.0
_QUEUE_UPDATE = '{"type":"queue_update","position":%d,"estimated_wait_s":%r,"queue_length":%d}'


@dataclass(frozen=True)
class Dialect:
    """What the gateway itself says to a client, in that client's protocol."""
    queued: Callable[[Ticket], str]
    update: Callable[[Ticket], str]
    assigned: Callable[[], str]
    error: Callable[[str], str]


NATIVE = Dialect(
    queued=lambda t: QueuedMsg(position=t.position, estimated_wait_s=round(t.estimated_wait_s, 1),
                               ticket_id=t.ticket_id, queue_length=t.queue_length).dump(),
    # the hottest message at scale: formatted directly (same JSON as QueueUpdateMsg.dump())
    update=lambda t: _QUEUE_UPDATE % (t.position, float(t.estimated_wait_s), t.queue_length),
    assigned=lambda: QueueDoneMsg().dump(),
    error=error)

OPENAI_REALTIME = Dialect(      # omniserve.* extension events (docs/realtime.md)
    queued=lambda t: realtime.queue_event(t.position, t.estimated_wait_s, t.queue_length, t.ticket_id),
    update=lambda t: realtime.queue_event(t.position, t.estimated_wait_s, t.queue_length, t.ticket_id),
    assigned=realtime.assigned_event,
    error=lambda text: realtime.error_event(text, kind="server_error"))


async def serve_realtime(gw: Gateway, ws: WebSocket) -> None:
    """``/v1/realtime``: a realtime session id of ours; a beta client (``OpenAI-Beta: realtime=v1``)
    is told to the worker as ``?beta=1``. API keys are required as soon as one exists."""
    beta = "realtime=v1" in (ws.headers.get("openai-beta") or "") \
        or "openai-beta.realtime-v1" in (ws.scope.get("subprotocols") or ())     # a browser's beta client
    sid = "rt_" + secrets.token_urlsafe(16)
    await serve(gw, ws, REALTIME, sid, dialect=OPENAI_REALTIME, worker_query="?beta=1" if beta else "",
                need_key=gw.settings.gateway.require_keys or gw.keys.any())


async def serve(gw: Gateway, ws: WebSocket, mode: Mode, session_id: Optional[str] = None, *,
                dialect: Dialect = NATIVE, worker_query: str = "", need_key: Optional[bool] = None) -> None:
    """One client socket of ``mode`` (``session_id``: from the path, except for chat)."""
    edge = gw.settings.gateway.edge
    # ---- admission: a refused handshake is an HTTP 403 (401 for a missing or bad key)
    if not gw.hosts.origin_allowed(ws.headers.get("origin")) \
            or not gw.apps.enabled(mode.app_id) or not session_id_ok(session_id):
        gw.metrics.error(HANDSHAKE_REFUSED)
        await ws.close(CLOSE_POLICY)
        return
    if need_key is None:
        need_key = gw.settings.gateway.require_keys
    offered = tuple(ws.scope.get("subprotocols") or ())
    if need_key:
        try:
            key_ok = await gw.key_auth.handshake_ok(ws.headers.get("authorization"),
                                                    ws.query_params.get("token"), offered)
        except StateUnavailable as e:     # a token another gateway minted, and Redis cannot be asked
            gw.metrics.error(STATE_UNAVAILABLE)
            await ws.send_denial_response(PlainTextResponse(str(e), status_code=503, headers={"Retry-After": "2"}))
            return
        if not key_ok:
            # a refused handshake is an HTTP 401 (403 where the server cannot send a denial response)
            gw.metrics.error(UNAUTHORIZED)
            await ws.send_denial_response(PlainTextResponse(
                "API key or ephemeral token required (Authorization: Bearer <key>, or ?token=<ephemeral token>)",
                status_code=401, headers={"WWW-Authenticate": "Bearer"}))
            return
    ip = client_ip(ws.scope, edge.trusted_proxies)
    if not gw.ip_sockets.acquire(ip):
        gw.metrics.error(IP_LIMIT)
        await ws.close(CLOSE_POLICY)
        return
    try:
        # a browser's OpenAI Realtime client offers "realtime" (+ its token as a subprotocol)
        await ws.accept(subprotocol="realtime" if mode is REALTIME and "realtime" in offered else None)
        await _serve_accepted(gw, ws, mode, session_id, ip, dialect, worker_query)
    finally:
        gw.ip_sockets.release(ip)


async def _serve_accepted(gw: Gateway, ws: WebSocket, mode: Mode, session_id: Optional[str], ip: str,
                          dialect: Dialect, worker_query: str) -> None:
    s = gw.settings.gateway
    edge = s.edge
    request_type = mode.request_type
    worker_path = (mode.endpoint if session_id is None else f"{mode.endpoint}/{session_id}") + worker_query
    chat = mode is CHAT
    max_frame = s.max_chat_frame_bytes if chat else s.max_frame_bytes
    buffer = WaiterBuffer(max(edge.max_waiter_buffer_bytes, max_frame), edge.queued_audio_keep_s, gw.waiter_budget)
    client = ClientSide(ws, max_frame, buffer, send_timeout_s=edge.client_send_timeout_s)
    client.error_frame = dialect.error
    client.start()
    ticket: Optional[Ticket] = None
    relay: Optional[Relay] = None
    queued_here = False
    meter = gw.metrics.session(request_type)     # its wait, its relay, why it ended (metrics.py)
    try:
        hashes: list[str] = []
        if chat:
            got = await _first_frame(client)
            if got is None:
                return
            hashes = got
        if not gw.ip_queued.acquire(ip):
            meter.refused(IP_LIMIT)
            await client.refuse(f"Too many requests from your address ({edge.max_queued_per_ip} at most)",
                                CLOSE_TRY_AGAIN)
            return
        queued_here = True
        ticket = Ticket(request_type=request_type, session_id=session_id, prefix_hashes=hashes)
        try:
            await gw.queue.enqueue(ticket)
        except (QueueFull, StateUnavailable) as e:
            meter.refused(QUEUE_FULL if isinstance(e, QueueFull) else STATE_UNAVAILABLE)
            await client.refuse(str(e), CLOSE_TRY_AGAIN)
            return
        meter.enqueued()
        t = ticket

        def left() -> None:
            gw.queue.remove(t, "client left")
        client.on_gone = left
        if client.gone.is_set():
            return   # left before on_gone was set (request and close in one read): the finally removes it
        gw.pool.dispatch()
        opts = RelayOptions(
            request_type=request_type, max_diagnostic_bytes=s.max_diagnostic_bytes,
            store_diagnostic=gw.store_diagnostic, recorded=gw.recorded, session_key=session_id or ticket.ticket_id,
            connect_timeout_s=s.worker_connect_timeout_s, worker_headers=gw.pool.headers,
            send_timeout_s=s.worker_send_timeout_s, ping_interval_s=s.worker_ping_interval_s,
            ping_timeout_s=s.worker_ping_timeout_s, unit_deadline_s=s.duplex_unit_deadline_s, meter=meter.relay())
        told_queued = told_done = False
        while True:
            if ticket.worker is None:
                if not told_done and not told_queued:
                    told_queued = True
                    meter.told(ticket.estimated_wait_s)
                    await client.send(dialect.queued(ticket))
                if not await _wait(client, ticket, dialect, silent=told_done):
                    return
            worker = ticket.worker
            relay = Relay(client, gw.pool, worker, opts)
            try:
                connected = await relay.connect(worker.ws_base + worker_path)
                if connected and not told_done:
                    told_done = True
                    meter.started()
                    await client.send(dialect.assigned())
            except BaseException:   # cancelled (shutdown) before the relay's own cleanup could run
                if relay.upstream is not None:
                    relay.upstream.transport.abort()
                    relay.release()
                else:
                    gw.pool.refused(worker, ticket, "cancelled", reachable=True, requeue=False)
                raise
            if connected:
                await relay.run()
            if relay.refused is None:
                return
            # the worker would not start it: back to the head of the queue (unless the client left)
            meter.worker_refused(reachable=relay.upstream is not None)
            gw.pool.refused(worker, ticket, relay.refused, reachable=relay.upstream is not None,
                            requeue=not client.gone.is_set())
            if client.gone.is_set():
                return
    finally:
        meter.end(client, ticket, relay)
        if ticket is not None and ticket.worker is None:
            gw.queue.remove(ticket, "gone")
        elif ticket is not None and (relay is None or relay.worker is not ticket.worker):
            # assigned while its last queue update could not be sent (the client stopped reading):
            # the slot never saw the session; it must not stay assigned to nobody
            gw.pool.refused(ticket.worker, ticket, "client left", reachable=True, requeue=False)
        if queued_here:
            gw.ip_queued.release(ip)
        await client.stop()
        if not client.gone.is_set():
            await client.close(1000)  # never end with a bare TCP close (a no-op if already closed)


async def _first_frame(client: ClientSide) -> Optional[list[str]]:
    """Chat: the request arrives first. It is read once here (decoded, validated, hashed: a bad one
    is refused before it takes a queue place, with the text the worker would send); its message
    history picks the worker (affinity). The frame itself is relayed as the client sent it."""
    arrived = asyncio.create_task(client.arrived.wait())
    gone = asyncio.create_task(client.gone.wait())
    await asyncio.wait({arrived, gone}, timeout=CHAT_FIRST_FRAME_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    arrived.cancel()
    gone.cancel()
    raw = client.buffer.first()
    if raw is None:
        if not client.gone.is_set():
            await client.refuse("No chat request received", CLOSE_POLICY)
        return None
    try:
        frame = await read_chat_request_async(raw)
    except ProtocolError as e:
        await client.refuse(str(e), CLOSE_POLICY)
        return None
    return frame.hashes


async def _wait(client: ClientSide, ticket: Ticket, dialect: Dialect, silent: bool = False) -> bool:
    """Sleep until assigned (True) or gone/cancelled (False), sending queue_update on changes
    (``silent``: after ``queue_done`` was sent, a requeued client just waits)."""
    seen = ticket.update_seq
    while True:
        await ticket.event.wait()
        ticket.event.clear()
        if ticket.worker is not None:
            return True
        if client.gone.is_set():
            return False
        if ticket.cancelled is not None:
            await client.send(dialect.error(f"Removed from the queue ({ticket.cancelled})"))
            await client.close(1000)
            return False
        if ticket.update_seq != seen:
            seen = ticket.update_seq
            if silent:
                continue
            if not await client.send(dialect.update(ticket)):
                return False
