"""Which worker holds a recording: ``recording id → worker URL``, learned by the relay from the
worker's ``prepared``/``done`` frames, read by the recording proxy (``recording_proxy``).

Two places to keep it, by ``gateway.redis_url``: this process (``LocalOwners``, the newest
``MAX_LOCAL`` ids) or Redis (``RedisOwners``: key ``omniserve:rec:<id>`` with a TTL of
``gateway.recording_owner_ttl_days``), shared by every gateway process. Neither is the truth: a
worker is, and an id that is missing here (a restarted gateway, an expired key, Redis down) is
found by asking the workers (``recording_proxy.find_owner``). So nothing here raises: a Redis
failure reads as "unknown" and a lost write as "ask later".
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Optional, Protocol

from redis.exceptions import RedisError

from ..config import GatewaySettings
from .state.link import UNAVAILABLE, RedisLink, key

log = logging.getLogger(__name__)

MAX_LOCAL = 100_000


class RecordingOwners(Protocol):
    async def put(self, recording_id: str, worker_url: str) -> None: ...
    async def get(self, recording_id: str) -> Optional[str]: ...
    async def close(self) -> None: ...


class LocalOwners:
    """In this process: the newest ``max_entries`` ids."""

    def __init__(self, max_entries: int = MAX_LOCAL) -> None:
        self.max_entries = max_entries
        self._owners: OrderedDict[str, str] = OrderedDict()

    async def put(self, recording_id: str, worker_url: str) -> None:
        self._owners[recording_id] = worker_url
        self._owners.move_to_end(recording_id)
        while len(self._owners) > self.max_entries:
            self._owners.popitem(last=False)

    async def get(self, recording_id: str) -> Optional[str]:
        return self._owners.get(recording_id)

    async def close(self) -> None:
        pass


class RedisOwners:
    """In Redis, shared by every gateway process; each key expires after ``ttl_s``."""

    def __init__(self, link: RedisLink, ttl_s: float, *, owns_link: bool = False) -> None:
        self.link = link
        self.ttl_s = max(1, int(ttl_s))
        self.owns_link = owns_link

    async def put(self, recording_id: str, worker_url: str) -> None:
        try:
            await self.link.client.set(key("rec", recording_id), worker_url, ex=self.ttl_s)
            self.link.ok()
        except (*UNAVAILABLE, RedisError) as e:
            self.link.failed(e)

    async def get(self, recording_id: str) -> Optional[str]:
        try:
            url = await self.link.client.get(key("rec", recording_id))
            self.link.ok()
        except (*UNAVAILABLE, RedisError) as e:
            self.link.failed(e)
            return None
        return url if isinstance(url, str) else None

    async def close(self) -> None:
        if self.owns_link:
            await self.link.close()


def recording_owners(s: GatewaySettings, link: Optional[RedisLink] = None) -> RecordingOwners:
    """Redis when ``redis_url`` is set (on ``link`` if given, else a link of its own), else local."""
    if s.redis_url is None:
        return LocalOwners()
    ttl_s = s.recording_owner_ttl_days * 86400
    if link is not None:
        return RedisOwners(link, ttl_s)
    return RedisOwners(RedisLink(s.redis_url), ttl_s, owns_link=True)
