"""``RedisLink``: the gateway's one connection pool to Redis, its key names and its health.

Every key lives under ``omniserve:`` (``key(...)``), so one Redis can be shared with other
software. Every command has a deadline (``socket_timeout``): a Redis that stops answering makes
calls fail within a second instead of hanging a handler. ``up`` says whether the last command got
through; callers turn a failure into a clear client error (new clients) or keep their cached view
(registries), and the link recovers by itself when Redis answers again.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, Optional

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

PREFIX = "omniserve:"
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class StateUnavailable(Exception):
    """The shared state (Redis) cannot be reached; the text is client-facing."""

    def __init__(self, why: str = "") -> None:
        super().__init__("The server's shared queue is unreachable; try again in a few seconds"
                         + (f" ({why})" if why else ""))


def new_gateway_id() -> str:
    """A gateway process's name in the shared state (and in its ``/health``)."""
    return "gw_" + secrets.token_hex(6)


def key(*parts: Any) -> str:
    return PREFIX + ":".join(str(p) for p in parts)


class RedisLink:
    def __init__(self, url: str, *, timeout_s: float = 1.0, gateway_id: Optional[str] = None) -> None:
        self.url = url
        self.gateway_id = gateway_id or new_gateway_id()
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=10, retry_on_timeout=False, max_connections=64)
        self.up = True
        self.failures = 0

    def ok(self) -> None:
        if not self.up:
            log.warning("Redis at %s reachable again", _safe(self.url))
        self.up, self.failures = True, 0

    def failed(self, e: BaseException) -> None:
        self.failures += 1
        if self.up:
            log.error("Redis at %s unreachable: %s", _safe(self.url), e)
        self.up = False

    async def close(self) -> None:
        await self.client.aclose()


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
    shared state is lost while Redis is away; later writes wait behind it, in order."""

    def __init__(self, link: RedisLink, limit: int = 100_000) -> None:
        import asyncio
        import collections
        self.link = link
        self.limit = limit
        self._ops: collections.deque = collections.deque()
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = None

    def put(self, op: Any) -> None:
        """``op``: a coroutine function of no arguments."""
        if len(self._ops) >= self.limit:
            log.error("Redis outbox full (%d writes): dropping the oldest", self.limit)
            self._ops.popleft()
        self._ops.append(op)
        self._wake.set()

    def __len__(self) -> int:
        return len(self._ops)

    async def run(self) -> None:
        import asyncio
        delay = 0.05
        while True:
            if not self._ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            op = self._ops[0]
            try:
                await op()
            except UNAVAILABLE as e:
                self.link.failed(e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception:
                log.exception("shared-state write failed; dropped")
            else:
                self.link.ok()
                delay = 0.05
            self._ops.popleft()

    def start(self) -> None:
        import asyncio
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="redis-outbox")

    async def stop(self) -> None:
        from ..queue import cancel_and_wait
        await cancel_and_wait(self._task)
        self._task = None
