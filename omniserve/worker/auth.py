"""The worker token: when set, every HTTP request and WebSocket handshake must carry it.

The gateway sends ``Authorization: Bearer <worker token>`` on ``/health`` and on every WebSocket
it opens to a worker. Without a valid token an HTTP request gets ``401`` and a WebSocket
handshake is refused before it is accepted (``403``: an ASGI ``websocket.close`` before
``accept``). The check is ASGI middleware in front of the whole app, so no route (present or
future) can be reached without it. A worker bound beyond loopback must have a token
(``main.run`` refuses to start otherwise). ``GET /metrics`` also takes ``worker.metrics_token``
(a Prometheus server need not hold the worker token).
"""
from __future__ import annotations

import ipaddress
from typing import Any, Awaitable, Callable, Optional

from ..config import WorkerSettings
from ..metrics_common import METRICS_PATH
from ..tokens import bearer_ok

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

_UNAUTHORIZED = b'{"detail":"Unauthorized"}'


def worker_token(w: WorkerSettings) -> Optional[str]:
    """``worker.token``, else the deprecated ``worker.register_token``; None when neither is set."""
    return w.token or w.register_token or None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the worker reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _authorization(scope: dict) -> Optional[str]:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            return value.decode("latin-1")
    return None


class RequireToken:
    """ASGI middleware: pass a request on only when it carries ``Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str, metrics_token: Optional[str] = None) -> None:
        self.app = app
        self.token = token
        self.metrics_token = metrics_token or ""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        auth = _authorization(scope)
        scrape = kind == "http" and scope.get("path") == METRICS_PATH and bearer_ok(auth, self.metrics_token)
        if kind not in ("http", "websocket") or bearer_ok(auth, self.token) or scrape:
            await self.app(scope, receive, send)
            return
        if kind == "http":
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
        else:  # before accept: the server answers the handshake with HTTP 403
            await send({"type": "websocket.close", "code": 1008})
