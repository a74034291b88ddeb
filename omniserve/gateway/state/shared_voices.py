"""``SharedVoices``: uploaded voices that every gateway sees (``gateway.redis_url``).

A voice's record (name, length, when) is a field of the shared map ``voices`` (``state.shared``):
every gateway lists them from its own copy, and the map's cap is ``gateway.edge.max_voices`` for
all gateways together. Its audio — a 16 kHz mono WAV, at most ``max_ref_audio_s`` (30 s, ~1 MB) —
is one binary Redis key, ``omniserve:voice:<id>``, read when a page asks for it.

The gateway that took an upload also keeps it on its disk (``LocalVoices``). A Redis restarted
without persistence gets the records back from the gateways' copies (the shared map does that)
and the audio from the disks: every ``PUT_BACK_EVERY_S`` (and at once when a page asks for a
voice Redis has lost) a gateway puts back the audio it holds. A voice whose uploading gateway is
gone for good is then listed without audio (404) until an admin deletes it. A voice deleted
through any gateway leaves every gateway's disk.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional

from ..ref_audio import ID_RE, LocalVoices, VoicesFull, valid_meta
from .link import UNAVAILABLE, RedisLink, StateUnavailable, key
from .shared import MapFull, SharedMaps

log = logging.getLogger(__name__)

PUT_BACK_EVERY_S = 5.0     # one pipelined EXISTS per voice this gateway took


def _audio_key(ref_id: str) -> str:
    return key("voice", ref_id)


class SharedVoices:
    def __init__(self, shared: SharedMaps, link: RedisLink, local: LocalVoices, max_voices: int) -> None:
        self.link, self.local, self.max_voices = link, local, max_voices
        self._shared = shared
        self.items: dict[str, dict] = dict(local.items)     # until the first load (Redis may be down)
        self._map = shared.map("voices", self._changed, {k: json.dumps(v) for k, v in local.items.items()})

    def _changed(self, data: dict[str, str]) -> None:
        items: dict[str, dict] = {}
        for k, v in data.items():
            try:
                meta = valid_meta(json.loads(v))
            except ValueError:
                meta = None
            if ID_RE.match(k) and meta is not None:
                items[k] = meta
        # the spares of voices no longer listed (deleted through any gateway, also while this one was down)
        deleted = [k for k in self.items if k not in items and k in self.local.items]
        self.items = items
        for k in deleted:        # deleted through another gateway: our spare goes too
            self._shared.spawn(self._drop_spare(k))

    async def _drop_spare(self, ref_id: str) -> None:
        await asyncio.to_thread(self.local.remove, ref_id)

    async def add(self, ref_id: str, meta: dict, wav: bytes) -> None:
        """The audio first, then the record (capped): a listed voice always has its audio."""
        try:
            await self.link.raw.set(_audio_key(ref_id), wav)
        except UNAVAILABLE as e:
            self.link.failed(e)
            raise StateUnavailable() from None
        try:
            await self._map.write({ref_id: json.dumps(meta)}, cap=self.max_voices)
        except (MapFull, StateUnavailable) as e:
            await self._forget_audio(ref_id)
            if isinstance(e, MapFull):
                raise VoicesFull() from None
            raise
        await asyncio.to_thread(self.local.put, ref_id, meta, wav)

    async def delete(self, ref_id: str) -> bool:
        deleted = await self._map.write(delete=[ref_id])
        await self._forget_audio(ref_id)
        await asyncio.to_thread(self.local.remove, ref_id)
        return deleted > 0

    async def audio(self, ref_id: str) -> Optional[bytes]:
        """A listed voice's WAV: from Redis, else from this disk (then put back into Redis)."""
        if ref_id not in self.items:
            return None
        data: Optional[bytes] = None
        try:
            got = await self.link.raw.get(_audio_key(ref_id))
            data = got if isinstance(got, bytes) else None       # the raw client does not decode
        except UNAVAILABLE as e:
            self.link.failed(e)
        if data is None:
            data = await asyncio.to_thread(self.local.read, ref_id)
            if data is not None:
                await self._put_back(ref_id, data)
        return data

    async def run(self) -> None:
        while True:
            try:
                await self.put_back()
            except Exception:       # a bug must not end the loop for good
                log.exception("voices: putting back lost audio failed")
            await asyncio.sleep(PUT_BACK_EVERY_S)

    async def put_back(self) -> int:
        """The listed voices on this disk whose audio Redis lacks (it restarted empty); how many were put back."""
        ids = [k for k in self.local.items if k in self.items]
        if not ids:
            return 0
        try:
            async with self.link.raw.pipeline(transaction=False) as pipe:
                for k in ids:
                    pipe.exists(_audio_key(k))
                present = await pipe.execute()
        except UNAVAILABLE as e:
            self.link.failed(e)
            return 0
        n = 0
        for k, there in zip(ids, present):
            if not there:
                data = await asyncio.to_thread(self.local.read, k)
                n += data is not None and await self._put_back(k, data)
        if n:
            log.warning("put back the audio of %d voice(s) that Redis had lost", n)
        return n

    async def _put_back(self, ref_id: str, data: bytes) -> bool:
        try:
            return bool(await self.link.raw.set(_audio_key(ref_id), data, nx=True))
        except UNAVAILABLE as e:
            self.link.failed(e)
            return False

    async def _forget_audio(self, ref_id: str) -> None:
        try:
            await self.link.raw.delete(_audio_key(ref_id))
        except UNAVAILABLE as e:
            self.link.failed(e)       # an orphan audio key is harmless: nothing lists it
