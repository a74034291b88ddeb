"""Who may open a WebSocket and hold a queue place: Origin, the mode's app switch, the session id,
and per-client-address limits (open sockets, queue places).

Counting is per address as the gateway sees it (the peer, or ``X-Forwarded-For`` from a trusted
proxy), in plain dicts: checks are O(1) and entries vanish when they reach zero.
"""
from __future__ import annotations

import re
from typing import Optional

from starlette.websockets import WebSocket

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class IpCounter:
    """How many of something each client address holds, against one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._n: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        n = self._n.get(ip, 0)
        if n >= self.limit:
            return False
        self._n[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self._n.get(ip, 0) - 1
        if n > 0:
            self._n[ip] = n
        else:
            self._n.pop(ip, None)

    def count(self, ip: str) -> int:
        return self._n.get(ip, 0)


def session_id_ok(session_id: Optional[str]) -> bool:
    return session_id is None or bool(SESSION_ID_RE.match(session_id))


def peer_ip(ws: WebSocket, trusted_proxies: list[str]) -> str:
    """The client's address: the socket peer, or the last X-Forwarded-For hop a trusted proxy added."""
    peer = ws.client.host if ws.client else "?"
    if peer in trusted_proxies:
        fwd = ws.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in fwd.split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return peer
