"""``SharedMap``: a Redis hash that every gateway process mirrors in memory (``gateway.redis_url``).

Reads are the local copy, ``SharedMap.data``: synchronous, never waiting on Redis (``AppRegistry.
enabled`` runs on every WebSocket handshake). A write is one Lua script — the change, then a notice
on ``CHANNEL`` naming the map — that answers with the whole map, which becomes this process's copy
at once; every other gateway reloads that map when the notice arrives, and ``SharedMaps`` reloads
every map every ``REFRESH_S`` anyway, so a missed notice heals within seconds.

While Redis is unreachable, reads keep serving the last copy and writes raise ``StateUnavailable``
(HTTP 503); the loop keeps retrying and picks everything up again when Redis answers (the
``RedisLink`` logs the loss once and the return once).

Every map holds a marker field. A map without it was never written, or was lost (a Redis restarted
without persistence): the first gateway to notice writes its copy back — fields written since then
win — so a Redis restart does not reset the registries to their defaults.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine, Iterable, Mapping, Optional

from .link import UNAVAILABLE, RedisLink, StateUnavailable, key

log = logging.getLogger(__name__)

CHANNEL = key("changed")       # notices: the payload is the changed map's name
REFRESH_S = 3.0                # every map is reloaded this often, notice or not
RETRY_S = 1.0                  # pause before re-subscribing after Redis failed
FIRST_LOAD_S = 3.0             # start() waits this long for the first view, then serves the seed
MAX_PENDING = 1000             # background writes in flight (``spawn``); past it they are dropped
_MARK = "_seeded"              # the marker field; data fields never start with "_"

# KEYS[1] map; ARGV: marker, then the seed as field, value pairs
_LOAD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], '1')
  for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] map; ARGV: marker, channel, notice ('' = none), cap (-1 = none), #seed pairs, #set pairs,
# #deletes, then the seed pairs, the set pairs and the deleted fields.
# Answers {deleted fields (-1: refused by the cap), the whole map}.
_WRITE = """
local i = 8
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], '1')
  for _ = 1, tonumber(ARGV[5]) do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
else
  i = i + 2 * tonumber(ARGV[5])
end
local nset, cap = tonumber(ARGV[6]), tonumber(ARGV[4])
if cap >= 0 then
  local new = 0          -- only fields not there yet count against the cap
  for j = i, i + 2 * nset - 2, 2 do new = new + 1 - redis.call('HEXISTS', KEYS[1], ARGV[j]) end
  if redis.call('HLEN', KEYS[1]) - 1 + new > cap then
    return {-1, redis.call('HGETALL', KEYS[1])}
  end
end
for _ = 1, nset do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
local deleted = 0
for _ = 1, tonumber(ARGV[7]) do deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return {deleted, redis.call('HGETALL', KEYS[1])}
"""


class MapFull(Exception):
    """A write with a cap found the map full."""


def _pairs(m: Mapping[str, str]) -> list[str]:
    return [x for kv in m.items() for x in kv]


def _as_dict(flat: Any) -> dict[str, str]:
    """HGETALL's answer (a dict from the client, a flat list from a script) without the marker."""
    items = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2])
    return {k: v for k, v in items if k != _MARK}


class SharedMap:
    """One Redis hash (``key("map", name)``) and this process's copy of it.

    ``on_change(data)`` runs whenever the copy changes (never with the marker); it must not block.
    ``notify=False``: writes send no notice (the periodic reload spreads them: statistics)."""

    def __init__(self, link: RedisLink, name: str, on_change: Callable[[dict[str, str]], None],
                 seed: Optional[Mapping[str, str]] = None, *, notify: bool = True) -> None:
        self.link = link
        self.name = name
        self.key = key("map", name)
        self.notify = notify
        self.data: dict[str, str] = dict(seed or {})    # until the first load: the local files' view
        self._on_change = on_change
        self._load = link.client.register_script(_LOAD)
        self._write = link.client.register_script(_WRITE)

    def _apply(self, data: dict[str, str]) -> None:
        if data == self.data:
            return
        self.data = data
        try:
            self._on_change(dict(data))
        except Exception:      # a bad entry must not stop the reload loop
            log.exception("shared map %s: applying a change failed", self.name)

    def merge_local(self, fields: Mapping[str, str]) -> None:
        """Fields this process just wrote to Redis itself (a script's answer)."""
        self._apply(self.data | dict(fields))

    async def load(self) -> None:
        """Reload from Redis (raises the client's errors: the caller decides)."""
        raw = await self.link.client.hgetall(self.key)
        if _MARK not in raw:          # never written, or lost with a Redis restart: write our copy back
            raw = await self._load(keys=[self.key], args=[_MARK, *_pairs(self.data)])
        self._apply(_as_dict(raw))

    async def write(self, fields: Optional[Mapping[str, str]] = None, delete: Iterable[str] = (),
                    cap: Optional[int] = None) -> int:
        """Set ``fields`` and delete ``delete`` in one step, tell every gateway; the number of fields
        deleted. ``cap``: refuse (``MapFull``) when the map would then hold more fields than that.
        ``StateUnavailable`` when Redis cannot be reached. Our copy goes along as the seed, for a
        map that Redis lost."""
        fields = dict(fields or {})
        delete = list(delete)
        args: list[str | int] = [
            _MARK, CHANNEL, self.name if self.notify else "", -1 if cap is None else cap,
            len(self.data), len(fields), len(delete), *_pairs(self.data), *_pairs(fields), *delete]
        try:
            deleted, raw = await self._write(keys=[self.key], args=args)
        except UNAVAILABLE as e:
            self.link.failed(e)
            raise StateUnavailable() from None      # the details are in the log, not for clients
        self.link.ok()
        self._apply(_as_dict(raw))
        if deleted < 0:
            raise MapFull(self.name)
        return int(deleted)


class SharedMaps:
    """Every ``SharedMap`` of one gateway, and the loop that keeps them fresh: it listens for notices
    and reloads the named map, and reloads them all every ``REFRESH_S``."""

    def __init__(self, link: RedisLink, refresh_s: float = REFRESH_S) -> None:
        self.link = link
        self.refresh_s = refresh_s
        self._maps: dict[str, SharedMap] = {}
        self._task: Optional[asyncio.Task] = None
        self._pending: set[asyncio.Task] = set()

    def map(self, name: str, on_change: Callable[[dict[str, str]], None],
            seed: Optional[Mapping[str, str]] = None, *, notify: bool = True) -> SharedMap:
        if name in self._maps:
            raise ValueError(f"shared map {name!r} exists already")
        m = self._maps[name] = SharedMap(self.link, name, on_change, seed, notify=notify)
        return m

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run a write in the background (from synchronous code); False (and the coroutine closed)
        when ``MAX_PENDING`` are in flight already, or no loop runs."""
        if len(self._pending) >= MAX_PENDING:
            coro.close()
            return False
        try:
            t = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return False
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)
        return True

    async def flush(self) -> None:
        """Wait for the background writes in flight (``spawn``)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def reload_all(self) -> None:
        for m in list(self._maps.values()):
            await m.load()
        self.link.ok()

    async def start(self) -> None:
        """Load every map (waiting up to ``FIRST_LOAD_S``), then keep them fresh in the background.
        A Redis that does not answer yet does not stop the gateway: it serves the seeds (the local
        files) until Redis answers."""
        try:
            await asyncio.wait_for(self.reload_all(), FIRST_LOAD_S)
        except (*UNAVAILABLE, asyncio.TimeoutError) as e:
            self.link.failed(e)
            log.warning("shared registries: serving the local files' view until Redis answers")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shared-maps")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except UNAVAILABLE as e:
                self.link.failed(e)
                # idle pooled connections may be to a Redis that is gone: after a restart each would
                # fail once more; drop them, the next command connects afresh
                await self.link.client.connection_pool.disconnect(inuse_connections=False)
            except Exception:      # a bug must not end the refreshing for good
                log.exception("shared registries: refresh failed")
            await asyncio.sleep(RETRY_S)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        ps = self.link.client.pubsub(ignore_subscribe_messages=True)
        try:
            await ps.subscribe(CHANNEL)
            await self.reload_all()        # after subscribing: no change can fall in between
            due = loop.time() + self.refresh_s
            while True:
                msg = await ps.get_message(timeout=max(0.01, due - loop.time()))
                names: set[str] = set()
                while msg is not None:     # a burst of notices: each map reloads once
                    if msg.get("type") == "message":
                        names.add(msg["data"])
                    msg = await ps.get_message(timeout=0)
                for n in names:
                    if n in self._maps:
                        await self._maps[n].load()
                if loop.time() >= due:
                    await self.reload_all()
                    due = loop.time() + self.refresh_s
        finally:
            await ps.aclose()


__all__ = ["CHANNEL", "MapFull", "REFRESH_S", "SharedMap", "SharedMaps"]
