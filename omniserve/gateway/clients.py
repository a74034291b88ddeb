"""Client addresses and per-address rate limits.

``client_ip`` is the socket peer, or — only when that peer is one of ``gateway.edge.trusted_proxies``
(addresses or networks) — the right-most ``X-Forwarded-For`` entry that is not itself a trusted
proxy. uvicorn's own proxy-header rewriting is switched off (``main.py``), so ``scope["client"]``
is always the real peer here.

``RateLimiter`` is a token bucket per key (``limit`` per ``window_s``, bursts up to ``limit``) in
bounded memory: past ``max_keys`` the least recently seen key is forgotten. ``rate_key`` groups an
IPv6 client by its /64, which one host usually owns whole.
"""
from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Mapping, Optional, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    out: list[Network] = []
    for t in trusted:
        try:
            out.append(ipaddress.ip_network(t.strip(), strict=False))
        except ValueError:
            continue
    return tuple(out)


def _parse(addr: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        ip = ipaddress.ip_address(addr.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Optional[ipaddress.IPv4Address | ipaddress.IPv6Address], nets: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in nets)


def _header(scope: Mapping[str, Any], name: bytes) -> Optional[str]:
    values = [v for k, v in scope.get("headers") or () if k == name]
    return ",".join(v.decode("latin-1") for v in values) if values else None


def client_ip(scope: Mapping[str, Any], trusted_proxies: Sequence[str]) -> str:
    """The client's address for an ASGI ``http``/``websocket`` scope ("" when unknown)."""
    peer_addr = (scope.get("client") or ("",))[0] or ""
    peer = _parse(peer_addr)
    nets = _networks(tuple(trusted_proxies))
    if not nets or not _trusted(peer, nets):
        return str(peer) if peer is not None else peer_addr
    xff = _header(scope, b"x-forwarded-for")
    if not xff:
        return str(peer)
    hops = [h for h in (p.strip() for p in xff[:4096].split(",")) if h]
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            break                      # garbage: believe no further than the last good proxy
        if not _trusted(ip, nets):
            return str(ip)
        peer = ip
    return str(peer)


def rate_key(ip: str) -> str:
    """IPv4 as is; IPv6 by its /64."""
    addr = _parse(ip)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr) if addr is not None else ip


class RateLimiter:
    """``limit`` events per ``window_s`` per key, as a token bucket."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 65536) -> None:
        self.limit = max(0, int(limit))
        self.window_s = float(window_s)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.limit), now))
        return min(float(self.limit), tokens + (now - at) * self.limit / self.window_s)

    def allow(self, key: str, now: Optional[float] = None) -> bool:
        """Take one token for ``key``; False (nothing taken) when none is left."""
        now = time.monotonic() if now is None else now
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return False
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return True

    def retry_after_s(self, key: str, now: Optional[float] = None) -> float:
        """Seconds until ``key`` has a token again (0 when it has one now)."""
        if self.limit == 0:
            return self.window_s
        now = time.monotonic() if now is None else now
        missing = 1.0 - self._tokens(key, now)
        return max(0.0, missing * self.window_s / self.limit)
