"""The public edge: pure ASGI middlewares that run before any route, token check or body parsing.

- ``SecurityHeaders`` — ``nosniff``, a CSP the pages work with, no framing, no referrer, mic and
  camera for this origin only; on every HTTP response, errors included.
- ``HostGuard`` — the Host allow-list (``auth.HostPolicy``) for pages, REST and WebSocket
  handshakes (HTTP 421 / 400, a refused handshake is HTTP 403), and the Origin rule for WebSockets.
  ``/metrics`` passes under any Host: it needs a token, and a Prometheus server names its targets
  by address (docs/metrics.md).
- ``BodyCap`` — a body cap per route class, by ``Content-Length`` at once (413) and by counting
  streamed bytes, so no route ever receives more than its cap and nothing is buffered first.

``install(app, settings)`` wraps a finished ASGI app in all three (outermost first). Client
addresses and the per-address limiter live in ``clients`` and are re-exported here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, MutableMapping

from ..config import GatewaySettings
from ..metrics_common import METRICS_PATH
from .auth import HostPolicy
from .clients import RateLimiter, client_ip, rate_key

__all__ = ["BodyCap", "BodyLimits", "HostGuard", "RateLimiter", "SecurityHeaders", "client_ip", "install",
           "rate_key"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_RECORDING_PATH = re.compile(r"^/api/sessions/[^/]+/upload-recording$")


async def _plain(send: Send, status: int, text: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v.decode("latin-1")
    return None


# --------------------------------------------------------------- security headers
_STATIC_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(self), microphone=(self), geolocation=(), payment=(), usb=()"),
)
# The pages: module scripts and CSS from /static, style attributes set by markup and scripts,
# blob:/data: images and audio (attachments, replies, the favicon), the AudioWorklet from 'self',
# WebSockets to this host. Nothing inline runs, nothing is framed, nothing is fetched elsewhere.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "media-src 'self' data: blob:; font-src 'self'; worker-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; connect-src 'self'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts

    def csp(self, host: str | None) -> bytes:
        """``connect-src`` names this host's ws:/wss: explicitly (older browsers do not match
        them with 'self'); only an allowed Host is echoed."""
        if host and self.hosts.host_allowed(host):
            return f"{_CSP} ws://{host} wss://{host}".encode("latin-1")
        return _CSP.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.csp(_header(scope, b"host"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers") or ()}
                extra = [(k, v) for k, v in _STATIC_HEADERS if k not in have]
                if b"content-security-policy" not in have:
                    extra.append((b"content-security-policy", csp))
                message["headers"] = [*(message.get("headers") or ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ------------------------------------------------------------------- Host / Origin
class HostGuard:
    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        host_ok = self.hosts.host_allowed(host)
        if kind == "websocket":
            if host_ok and self.hosts.origin_allowed(_header(scope, b"origin")):
                await self.app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})   # before accept: HTTP 403
            return
        if host_ok or scope.get("path") == METRICS_PATH:   # token-guarded; scrapers name us by address
            await self.app(scope, receive, send)
        elif host is None:
            await _plain(send, 400, "a Host header is required")
        else:
            await _plain(send, 421, "unknown host name (add it to gateway.public_names)")


# ----------------------------------------------------------------------- body caps
@dataclass(frozen=True)
class BodyLimits:
    default: int
    admin: int
    voice: int
    recording: int

    @classmethod
    def of(cls, s: GatewaySettings) -> "BodyLimits":
        return cls(default=s.edge.max_body_bytes, admin=s.edge.max_admin_body_bytes,
                   voice=s.max_ref_audio_bytes * 4 // 3 + 4096,       # the JSON form carries base64
                   recording=s.max_upload_recording_bytes)

    def cap_for(self, method: str, path: str) -> int:
        if (path.startswith("/api/admin/") or method == "DELETE" or (method == "PUT" and path == "/api/config/eta")
                or (method == "POST" and path == "/api/workers/register")):
            return self.admin
        if method == "POST" and path == "/api/assets/ref_audio":
            return self.voice
        if method == "POST" and _RECORDING_PATH.match(path):
            return self.recording
        return self.default


class BodyCap:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.cap_for(scope.get("method", ""), scope.get("path", ""))
        text = f"request body too large (max {cap} bytes)"
        length = (_header(scope, b"content-length") or "0").strip()
        if not length.isdigit():
            await _plain(send, 400, "invalid Content-Length")
            return
        if int(length) > cap:
            await _plain(send, 413, text)          # refused before a byte of the body is read
            return
        # a body the route answers before reading to its end is not drained: the socket closes
        unread = int(length) > 0 or _header(scope, b"transfer-encoding") is not None
        state = {"seen": 0, "over": False, "started": False, "unread": unread}

        async def capped_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                if not message.get("more_body", False):
                    state["unread"] = False
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > cap:
                    state["over"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _plain(send, 413, text)
                    return {"type": "http.disconnect"}    # the route sees a client that went away
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return                                     # our 413 already answered
            if message["type"] == "http.response.start":
                state["started"] = True
                if state["unread"]:
                    message["headers"] = [*(message.get("headers") or ()), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise                                      # the route's reaction to the cut-off body is moot


def install(app: ASGIApp, settings: GatewaySettings, hosts: HostPolicy) -> ASGIApp:
    """``app`` behind the edge: headers outermost (so refusals carry them), then Host, then caps."""
    return SecurityHeaders(HostGuard(BodyCap(app, BodyLimits.of(settings)), hosts), hosts)
