"""The WebSocket server protocol of the gateway and the worker: uvicorn's ``websockets-sansio``
plus an ``abort``.

Why: uvicorn's WebSocket implementations (sansio — the default, ``auto`` — wsproto, and the
legacy ``websockets`` one) apply flow control: once the transport's write buffer passes its high
water mark (asyncio's default, 64 KiB) a send waits until the peer reads. So a peer that never
reads does not make the worker buffer without bound, but it blocks the send for ever. The
sender's deadline (the worker's ``send_timeout_s``, the gateway's ``edge.client_send_timeout_s``)
ends that wait; what ASGI cannot do then is drop the connection: a
``websocket.close`` is itself a send that waits for the same full buffer, and closing a transport
with unsent data waits for the peer too. This subclass puts ``abort`` (``transport.abort()``:
buffers dropped, socket closed at once, the app sees a disconnect) into the scope's extensions.

It also fixes the socket's kernel send buffer at ``SEND_BUFFER_BYTES``. Left to autotuning
(Linux: up to ``tcp_wmem`` max, 4 MiB) the kernel takes ~30 s of streamed speech from a peer
that reads nothing before a send even starts to wait, and the worker stays held that much longer
than ``send_timeout_s``. Measured on loopback (chat reply with speech, client that never reads,
3 s deadline): idle 18 s after the first reply bytes with autotuning, 4 s after the client
stopped reading with this buffer. 128 KiB in effect still carries ~13 MB/s at a 10 ms round
trip, about 100 times a session's streamed speech (~130 KB/s of base64).
"""
from __future__ import annotations

import socket
from asyncio import BaseTransport
from typing import Any, Callable, Optional

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

ABORT_EXTENSION = "omniserve.abort"
SEND_BUFFER_BYTES = 64 * 1024   # Linux doubles it for bookkeeping: 128 KiB in effect


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            except OSError:
                pass
        super().connection_made(transport)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only when the handshake goes on to the app
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = {"abort": self.abort}

    def abort(self) -> None:
        """Drop the connection now, unsent data included (safe to call more than once)."""
        if self.transport is not None:
            self.transport.abort()


def abort_function(scope: dict[str, Any]) -> Optional[Callable[[], None]]:
    """The connection's ``abort``, when the server that runs the app provides one."""
    ext = (scope.get("extensions") or {}).get(ABORT_EXTENSION) or {}
    fn = ext.get("abort")
    return fn if callable(fn) else None
