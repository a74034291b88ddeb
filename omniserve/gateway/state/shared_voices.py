"""``SharedVoices``: uploaded voices that every gateway sees (``gateway.redis_url``).

A voice's record (name, length, when) is a field of the shared map ``voices`` (``state.shared``):
every gateway lists them from its own copy, and the map's cap is ``gateway.edge.max_voices`` for
all gateways together. Its audio — a 16 kHz mono WAV, at most ``max_ref_audio_s`` (30 s, ~1 MB) —
is one binary Redis key, ``omniserve:voice:<id>``, read when a page asks for it; the last
``CACHE_BYTES`` of audio read are kept in the process (a voice's audio never changes).

The gateway that took an upload keeps a spare on its disk (``voice_files.LocalVoices``), and every
``SYNC_S`` it reconciles its spares with Redis in one script (``voice_sync``): a listed voice whose
audio Redis lost gets it back; a voice deleted through any gateway (a ``voice_gone`` tombstone,
kept ``TOMBSTONE_S``) loses its spare; an unlisted voice without a tombstone was lost with a Redis
restarted empty, and its record goes back. So a Redis restart without persistence loses no voice
while its uploading gateway's disk lives, however the gateways restart.

An upload writes the audio with an expiry, then the spare, then the record (capped), then makes
the audio stay: a failure at any step leaves nothing listed without audio for longer than a sync.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any, Optional

from ..ref_audio import VoicesFull
from ..voice_files import ID_RE, LocalVoices, valid_meta
from .link import RAW_POOL, UNAVAILABLE, RedisLink, StateUnavailable, key
from .scripts import Scripts
from .shared import CHANNEL, MapFull, SharedMaps

log = logging.getLogger(__name__)

MAP = "voices"
SYNC_S = 5.0                    # spares reconciled with Redis this often
UPLOAD_EXPIRY_S = 120           # an upload's audio before its record is written
TOMBSTONE_S = 30 * 86400        # a deleted voice's spare is dropped by a gateway back within this
CACHE_BYTES = 32 * 1024 * 1024  # audio kept in the process


def _audio_key(ref_id: str) -> str:
    return key("voice", ref_id)


class SharedVoices:
    def __init__(self, shared: SharedMaps, link: RedisLink, scripts: Scripts, local: LocalVoices,
                 max_voices: int) -> None:
        self.link, self.scripts, self.local, self.max_voices = link, scripts, local, max_voices
        self.items: dict[str, dict] = dict(local.items)     # until the first load (Redis may be down)
        self._map = shared.map(MAP, self._changed, {k: json.dumps(v) for k, v in local.items.items()})
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cached_bytes = 0
        self._loading: dict[str, asyncio.Future] = {}
        self._reads = asyncio.Semaphore(RAW_POOL)

    def _changed(self, data: dict[str, str]) -> None:
        items: dict[str, dict] = {}
        for k, v in data.items():
            try:
                meta = valid_meta(json.loads(v))
            except ValueError:
                meta = None
            if ID_RE.match(k) and meta is not None:
                items[k] = meta
        self.items = items
        for k in [k for k in self._cache if k not in items]:      # deleted through another gateway
            self._uncache(k)

    # ----------------------------------------------------------------- write
    async def add(self, ref_id: str, meta: dict, wav: bytes) -> None:
        """``VoicesFull``; ``StateUnavailable`` (the voice may still appear: the spare is written
        first, and the next sync puts back what the record step may have left undone)."""
        try:
            await self.link.raw.set(_audio_key(ref_id), wav, ex=UPLOAD_EXPIRY_S)
        except UNAVAILABLE as e:
            await self._raw_failed(e)
            raise StateUnavailable() from None
        await asyncio.to_thread(self.local.put, ref_id, meta, wav)
        try:
            await self._map.write({ref_id: json.dumps(meta)}, cap=self.max_voices)
        except MapFull:
            await asyncio.to_thread(self.local.remove, ref_id)
            await self._forget_audio(ref_id)
            raise VoicesFull() from None
        try:
            await self.link.raw.persist(_audio_key(ref_id))
        except UNAVAILABLE as e:
            await self._raw_failed(e)       # the next sync makes it stay

    async def delete(self, ref_id: str) -> bool:
        """Tombstone, audio and record in one script (``voice_gone``): a spare never brings back a
        voice deleted through another gateway. ``StateUnavailable`` when Redis cannot be reached."""
        try:
            deleted = await self.scripts.call("voice_gone", ref_id, TOMBSTONE_S, CHANNEL, MAP)
        except UNAVAILABLE as e:
            self.link.failed(e)
            raise StateUnavailable() from None
        self._uncache(ref_id)
        # our copy at once (a new dict: listings iterate it in other threads); the map's reload follows
        self.items = {k: v for k, v in self.items.items() if k != ref_id}
        await asyncio.to_thread(self.local.remove, ref_id)
        return int(deleted) > 0

    # ------------------------------------------------------------------ read
    async def audio(self, ref_id: str) -> Optional[bytes]:
        """A listed voice's WAV: from this process's cache, Redis, or this disk (then put back).
        ``StateUnavailable`` when only Redis could have it and cannot be reached."""
        if ref_id not in self.items:
            return None
        data = self._cache.get(ref_id)
        if data is not None:
            self._cache.move_to_end(ref_id)
            return data
        loading = self._loading.get(ref_id)
        if loading is None:          # one read per voice, whoever else asks meanwhile
            loading = self._loading[ref_id] = asyncio.ensure_future(self._load(ref_id))
            loading.add_done_callback(lambda f: (self._loading.pop(ref_id, None), f.cancelled() or f.exception()))
        return await asyncio.shield(loading)

    async def _load(self, ref_id: str) -> Optional[bytes]:
        data: Optional[bytes] = None
        unreachable = False
        try:
            async with self._reads:      # never more than the pool holds: a burst waits here, not failing there
                got = await self.link.raw.get(_audio_key(ref_id))
            data = got if isinstance(got, bytes) else None       # the raw client does not decode
        except UNAVAILABLE as e:
            await self._raw_failed(e)
            unreachable = True
        if data is None:
            data = await asyncio.to_thread(self.local.read, ref_id)
            if data is not None and not unreachable:
                await self._put_back(ref_id, data)
        if data is None and unreachable:
            raise StateUnavailable()
        if data is not None:
            self._remember(ref_id, data)
        return data

    def _remember(self, ref_id: str, data: bytes) -> None:
        self._uncache(ref_id)
        self._cache[ref_id] = data
        self._cached_bytes += len(data)
        while self._cached_bytes > CACHE_BYTES and self._cache:
            self._cached_bytes -= len(self._cache.popitem(last=False)[1])

    def _uncache(self, ref_id: str) -> None:
        data = self._cache.pop(ref_id, None)
        if data is not None:
            self._cached_bytes -= len(data)

    # ------------------------------------------------------------------ sync
    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except UNAVAILABLE as e:
                await self._raw_failed(e)
            except Exception:       # a bug must not end the loop for good
                log.exception("voices: reconciling the spares with Redis failed")
            await asyncio.sleep(SYNC_S)

    async def sync(self) -> tuple[int, int]:
        """Reconcile this disk's spares with Redis (raises the client's errors); (audio put back,
        spares dropped)."""
        await asyncio.to_thread(self.local.refresh)      # other processes on this data folder
        spares = dict(self.local.items)
        if not spares:
            return 0, 0
        args: list[Any] = [CHANNEL, MAP]
        for k, meta in spares.items():
            args += [k, json.dumps(meta)]
        need, gone = await self.scripts.call("voice_sync", *args)
        back = 0
        for k in need:
            data = await asyncio.to_thread(self.local.read, str(k))
            back += data is not None and await self._put_back(str(k), data)
        for k in gone:
            await asyncio.to_thread(self.local.remove, str(k))
            self._uncache(str(k))
        if back or gone:
            log.warning("voices: put back the audio of %d voice(s) Redis had lost; dropped %d spare(s) of "
                        "voices deleted elsewhere", back, len(gone))
        return back, len(gone)

    async def _put_back(self, ref_id: str, data: bytes) -> bool:
        """Only for a listed voice (``voice_audio``), so a deleted one never comes back."""
        try:
            return bool(await self.scripts.call("voice_audio", ref_id, data))
        except UNAVAILABLE as e:
            self.link.failed(e)
            return False

    async def _forget_audio(self, ref_id: str) -> None:
        try:
            await self.link.raw.delete(_audio_key(ref_id))
        except UNAVAILABLE as e:
            await self._raw_failed(e)       # it expires by itself (UPLOAD_EXPIRY_S)

    async def _raw_failed(self, e: BaseException) -> None:
        """Redis failed a binary command: idle connections may be to a Redis that is gone (restarted)."""
        self.link.failed(e)
        await self.link.raw.connection_pool.disconnect(inuse_connections=False)
