"""``RedisLink``: the gateway's connections to Redis, its key names and its health.

Every key lives under ``omniserve:`` (``key(...)``), so one Redis can be shared with other
software. Every command has a deadline (``socket_timeout``): a Redis that stops answering makes
calls fail within a second instead of hanging a handler. ``ok()`` / ``failed()`` log once when
Redis is lost and once when it is back; callers turn a failure into a clear client error (new
clients) or keep their cached view (registries), and the link recovers by itself when Redis
answers again. ``Outbox`` runs the writes that need no answer, in order.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from typing import Any, Optional

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

PREFIX = "omniserve:"
RAW_POOL = 8                 # connections of the binary client (voices' audio)
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class StateUnavailable(Exception):
    """The shared state (Redis) cannot be reached; the text is client-facing."""

    def __init__(self) -> None:
        super().__init__("The server's shared queue is unreachable; try again in a few seconds")


def new_gateway_id() -> str:
    """A gateway process's name in the shared state (and in its ``/health``)."""
    return "gw_" + secrets.token_hex(6)


def key(*parts: Any) -> str:
    return PREFIX + ":".join(str(p) for p in parts)


class RedisLink:
    def __init__(self, url: str, *, timeout_s: float = 1.0, gateway_id: Optional[str] = None) -> None:
        self.url = url
        self.gateway_id = gateway_id or new_gateway_id()
        # a bounded pool that makes a caller wait for a free connection (up to ``timeout_s``) instead
        # of failing: a burst of handshakes must queue for Redis, not be told it is unreachable
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            url, max_connections=32, timeout=timeout_s, decode_responses=True, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, health_check_interval=10))
        # the lease has its own connection: renewing it must never wait behind a burst of clients
        self.lease_client: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            max_connections=2)
        # binary values (voices' audio): replies left as bytes
        self.raw: aioredis.Redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            url, max_connections=RAW_POOL, timeout=timeout_s, decode_responses=False, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, health_check_interval=10))
        self.up = True          # the last command got through

    def ok(self) -> None:
        if not self.up:
            log.warning("Redis at %s reachable again", _safe(self.url))
        self.up = True

    def failed(self, e: BaseException) -> None:
        if self.up:
            log.error("Redis at %s unreachable: %s", _safe(self.url), e)
        self.up = False

    async def close(self) -> None:
        await self.client.aclose()
        await self.lease_client.aclose()
        await self.raw.aclose()


def _safe(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


class Outbox:
    """Redis writes that need no answer (a client left, a slot released, a health report), run one
    at a time in the order they were given, by one task. A write that fails because Redis is
    unreachable is retried (with backoff) until it gets through, so nothing this gateway owes the
    shared state is lost while Redis is away; later writes wait behind it, in order. Nothing is
    dropped; writes given a ``merge`` key (a worker's health report) replace the one with the same
    key still waiting, so a long outage does not pile up reports."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._ops: collections.deque[tuple[Optional[str], Any]] = collections.deque()
        self._merged: dict[str, Any] = {}
        self._running: Optional[str] = None   # the merge key of the write being run
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = None

    def put(self, op: Any, merge: Optional[str] = None) -> None:
        """``op``: a coroutine function of no arguments."""
        if merge is not None:
            if merge in self._merged and merge != self._running:
                self._merged[merge] = op     # runs in the place of the older one, still waiting
                return
            self._merged[merge] = op
        self._ops.append((merge, op))
        self._wake.set()

    def __len__(self) -> int:
        return len(self._ops)

    async def run(self) -> None:
        delay = 0.05
        while True:
            if not self._ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            merge, op = self._ops[0]
            if merge is not None:
                op = self._merged.get(merge, op)
            self._running = merge
            try:
                await op()
            except UNAVAILABLE as e:
                self._running = None        # while it waits to retry, newer reports merge into it
                self.link.failed(e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception:
                log.exception("shared-state write failed; dropped")
            else:
                self.link.ok()
                delay = 0.05
            self._running = None
            self._ops.popleft()
            if merge is not None and self._merged.get(merge) is op:
                del self._merged[merge]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="redis-outbox")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._task = None
