"""The three WebSocket endpoints: admission (Origin, app switch), queueing, then the relay.

While a client waits, its socket is read the whole time (``ClientSide``): what it sends is
buffered for the worker and a disconnect removes its ticket at once. After assignment everything
runs inside ``Relay.run``, whose cleanup always releases the worker.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import TYPE_CHECKING, Optional

from starlette.websockets import WebSocket

from ..protocol.affinity import prefix_hashes
from ..protocol.messages import CLOSE_POLICY, CLOSE_TRY_AGAIN, QueueDoneMsg, QueuedMsg, error
from .apps import APP_OF_REQUEST
from .auth import origin_allowed
from .proxy import ClientSide, Relay, RelayOptions
from .queue import QueueFull, Ticket

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
CHAT_FIRST_FRAME_TIMEOUT_S = 60.0
_QUEUE_UPDATE = '{"type":"queue_update","position":%d,"estimated_wait_s":%r,"queue_length":%d}'


async def serve(gw: "Gateway", ws: WebSocket, request_type: str, worker_path: str,
                session_id: Optional[str] = None) -> None:
    s = gw.settings.gateway
    # ---- admission: a refused handshake is an HTTP 403
    if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), s.allowed_origins):
        await ws.close(CLOSE_POLICY)
        return
    if not gw.apps.enabled(APP_OF_REQUEST[request_type]):
        await ws.close(CLOSE_POLICY)
        return
    if session_id is not None and not SESSION_ID_RE.match(session_id):
        await ws.close(CLOSE_POLICY)
        return
    await ws.accept()
    chat = request_type == "chat"
    max_frame = s.max_chat_frame_bytes if chat else s.max_frame_bytes
    client = ClientSide(ws, max_frame, max_buffer_bytes=max_frame + 1024 * 1024)
    client.start()
    ticket: Optional[Ticket] = None
    try:
        hashes: list[str] = []
        if chat:
            got = await _first_frame(client)
            if got is None:
                return
            hashes = got
        ticket = Ticket(request_type=request_type, session_id=session_id, prefix_hashes=hashes)
        try:
            gw.queue.enqueue(ticket)
        except QueueFull as e:
            await client.send(error(str(e)))
            await client.close(CLOSE_TRY_AGAIN)
            return
        t = ticket
        client.on_gone = lambda: gw.queue.remove(t, "client left")
        gw.pool.dispatch()
        if ticket.worker is None:
            await client.send(QueuedMsg(position=ticket.position, estimated_wait_s=round(ticket.estimated_wait_s, 1),
                                        ticket_id=ticket.ticket_id, queue_length=ticket.queue_length).dump())
            if not await _wait(client, ticket):
                return
        worker = ticket.worker
        await client.send(QueueDoneMsg().dump())
        relay = Relay(client, gw.pool, worker, RelayOptions(
            request_type=request_type, max_diagnostic_bytes=s.max_diagnostic_bytes,
            store_diagnostic=gw.store_diagnostic, session_key=session_id or ticket.ticket_id,
            connect_timeout_s=s.worker_connect_timeout_s))
        await relay.run(worker.ws_base + worker_path)
    finally:
        if ticket is not None and ticket.worker is None:
            gw.queue.remove(ticket, "gone")
        await client.stop()
        if not client.gone.is_set():
            await client.close(1000)  # never end with a bare TCP close (a no-op if already closed)


async def _first_frame(client: ClientSide) -> Optional[list[str]]:
    """Chat: the request arrives first; its message history picks the worker (affinity)."""
    arrived = asyncio.create_task(client.arrived.wait())
    gone = asyncio.create_task(client.gone.wait())
    await asyncio.wait({arrived, gone}, timeout=CHAT_FIRST_FRAME_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    arrived.cancel()
    gone.cancel()
    if not client.buffer:
        if not client.gone.is_set():
            await client.send(error("No chat request received"))
            await client.close(CLOSE_POLICY)
        return None
    raw = client.buffer[0]
    try:
        obj = json.loads(raw) if len(raw) < 256 * 1024 else await asyncio.to_thread(json.loads, raw)
    except ValueError as e:
        await client.send(error(f"Invalid JSON: {e}"))
        await client.close(CLOSE_POLICY)
        return None
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        await client.send(error("Invalid 'chat' message: messages: a non-empty list of messages is required"))
        await client.close(CLOSE_POLICY)
        return None
    try:
        if len(raw) < 256 * 1024:
            return prefix_hashes(msgs)
        return await asyncio.to_thread(prefix_hashes, msgs)
    except Exception:
        return []  # malformed content: no affinity; the worker reports the precise error


async def _wait(client: ClientSide, ticket: Ticket) -> bool:
    """Sleep until assigned (True) or gone/cancelled (False), sending queue_update on changes."""
    seen = ticket.update_seq
    while True:
        await ticket.event.wait()
        ticket.event.clear()
        if ticket.worker is not None:
            return True
        if client.gone.is_set():
            return False
        if ticket.cancelled is not None:
            await client.send(error(f"Removed from the queue ({ticket.cancelled})"))
            await client.close(1000)
            return False
        if ticket.update_seq != seen:
            seen = ticket.update_seq
            # the hottest message at scale: formatted directly (same JSON as QueueUpdateMsg.dump())
            if not await client.send(_QUEUE_UPDATE % (ticket.position, float(ticket.estimated_wait_s),
                                                      ticket.queue_length)):
                return False
