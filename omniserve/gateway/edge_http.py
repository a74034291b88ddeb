"""uvicorn's httptools HTTP/1.1 protocol with the deadlines it lacks (slowloris).

uvicorn arms only a keep-alive timer *after* a response: a connection that sends half a request
line, or headers one byte at a time, or a body that stops arriving, is held forever. This
subclass adds three limits and is handed to uvicorn as ``http=`` (``main.py``):

- the request line and headers must be complete within ``header_timeout_s`` of the connection
  (or of the first byte of the next request on a kept-alive connection), else the socket closes;
- they must not exceed ``max_header_bytes`` (HTTP 431, then close);
- once headers are in, body bytes must keep arriving: ``body_timeout_s`` without any while the
  route is waiting for them closes the socket (time the route itself takes is never counted);
- uvicorn's ``limit_concurrency`` (HTTP 503) covers WebSocket handshakes too (uvicorn checks only
  plain requests).

WebSocket upgrades leave this protocol when their headers complete, so the limits end there.
TLS is below the protocol and unaffected.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Optional[asyncio.TimerHandle] = None
        self._body_timer: Optional[asyncio.TimerHandle] = None
        self._awaiting_headers = True   # the next bytes start (or continue) a request's headers
        self._in_body = False
        self._header_bytes = 0
        self._headers_too_large = False

    # ------------------------------------------------------------ timers
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _arm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_idle)

    def _cancel_timers(self) -> None:
        for t in (self._header_timer, self._body_timer):
            if t is not None:
                t.cancel()
        self._header_timer = self._body_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _body_idle(self) -> None:
        self._body_timer = None
        if not self._in_body:
            return
        if self.flow is not None and self.flow.read_paused:
            self._arm_body_timer()       # the route is not reading: its time, not the client's
            return
        self._expire()

    # ---------------------------------------------------------- protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._arm_header_timer()
        elif self._in_body:
            self._arm_body_timer()
        super().data_received(data)

    # ------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self._awaiting_headers = True
        self._header_bytes = 0
        self._arm_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            self._headers_too_large = True
            raise ValueError("request headers too large")   # the parser stops; see send_400_response

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        self._in_body = not (self.parser.should_upgrade() and self._should_upgrade())   # an upgrade leaves us
        if self._in_body:
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._awaiting_headers = True   # armed again by the next request's first byte
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self._send_plain(503, b"too many connections")
            return
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if not self._headers_too_large:
            super().send_400_response(msg)
            return
        self._send_plain(431, b"request headers too large")

    def _send_plain(self, status: int, text: bytes) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: text/plain; charset=utf-8\r\n", b"x-content-type-options: nosniff\r\n",
                        b"content-length: " + str(len(text)).encode() + b"\r\n", b"connection: close\r\n\r\n", text])
        self.transport.write(b"".join(content))
        self.transport.close()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float, max_header_bytes: int) -> type[GuardedHttpProtocol]:
    """A ``GuardedHttpProtocol`` subclass with these limits (uvicorn instantiates it per connection)."""
    return type("GatewayHttpProtocol", (GuardedHttpProtocol,), {
        "header_timeout_s": float(header_timeout_s), "body_timeout_s": float(body_timeout_s),
        "max_header_bytes": int(max_header_bytes)})
