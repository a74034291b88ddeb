"""Per-client-address limits on WebSockets (open sockets, queue places) and the session id rule.

Counting is per address as ``clients.client_ip`` sees it (the peer, or ``X-Forwarded-For`` from a
trusted proxy), in plain dicts: checks are O(1) and entries vanish when they reach zero.
"""
from __future__ import annotations

import heapq
import re
from typing import Optional

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")


class IpCounter:
    """How many of something each client address holds, against one limit. With several gateways
    (``state.shared_ips``) ``others`` holds what the other gateways last reported of the addresses
    that hold many there, and the limit is for all of them together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._n: dict[str, int] = {}
        self.others: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        n = self._n.get(ip, 0)
        if n + self.others.get(ip, 0) >= self.limit:
            return False
        self._n[ip] = n + 1
        return True

    def heavy(self, most: int) -> dict[str, int]:
        """The addresses holding at least a sixteenth of the limit here (at least 2), the ``most``
        heaviest: what the other gateways must know of. One under it adds at most that much per
        gateway unseen."""
        least = max(2, self.limit // 16)
        found = [(n, ip) for ip, n in self._n.items() if n >= least]
        return {ip: n for n, ip in (heapq.nlargest(most, found) if len(found) > most else found)}

    def release(self, ip: str) -> None:
        n = self._n.get(ip, 0) - 1
        if n > 0:
            self._n[ip] = n
        else:
            self._n.pop(ip, None)


def session_id_ok(session_id: Optional[str]) -> bool:
    return session_id is None or bool(SESSION_ID_RE.fullmatch(session_id))

