"""``SharedVoices`` against a real redis-server, in this process: the moments between an upload's
steps, and concurrent reads of one voice (found by review; each test fails on the code before it)."""
from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import soundfile as sf

from omniserve.gateway.state.link import RedisLink, key
from omniserve.gateway.state.scripts import Scripts
from omniserve.gateway.state.shared import SharedMaps
from omniserve.gateway.state.shared_voices import UPLOAD_EXPIRY_S, SharedVoices
from omniserve.gateway.voice_files import LocalVoices


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32) + 0.1, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def _voices(redis_url: str, tmp, max_voices: int = 3) -> tuple[SharedVoices, RedisLink, SharedMaps]:
    link = RedisLink(redis_url)
    await link.client.flushall()
    maps = SharedMaps(link)
    voices = SharedVoices(maps, link, Scripts(link), LocalVoices(tmp / "ref_audio"), max_voices)
    await maps.reload_all()
    return voices, link, maps


async def test_a_sync_during_an_upload_does_not_list_it_before_its_capped_write(redis_server, tmp_path):
    """The upload has written its audio (expiring) and its spare, not yet its record: a sync must
    not put the record back (uncapped), or the capped write finds it full and the voice stays
    listed without audio."""
    voices, link, maps = await _voices(redis_server.url, tmp_path, max_voices=1)
    try:
        ref_id, wav = "ra_" + "1" * 16, _wav()
        meta = {"name": "mid-upload", "duration_s": 1.0, "created_at": time.time()}
        await link.raw.set(key("voice", ref_id), wav, ex=UPLOAD_EXPIRY_S)
        await asyncio.to_thread(voices.local.put, ref_id, meta, wav)
        await voices.sync()
        assert not await link.client.hexists(key("map", "voices"), ref_id)
        await voices._map.write({ref_id: json.dumps(meta)}, cap=1)      # the upload's next step: room
        await link.raw.persist(key("voice", ref_id))
        assert ref_id in voices.items and await voices.audio(ref_id) == wav
    finally:
        await link.close()


async def test_concurrent_reads_of_one_voice_count_its_bytes_once(redis_server, tmp_path):
    voices, link, maps = await _voices(redis_server.url, tmp_path)
    try:
        wav = _wav()
        ref_id = "ra_" + "2" * 16
        await voices.add(ref_id, {"name": "read often", "duration_s": 1.0, "created_at": time.time()}, wav)
        for _ in range(3):
            voices._uncache(ref_id)
            got = await asyncio.gather(*(voices.audio(ref_id) for _ in range(4)))
            assert got == [wav] * 4
        assert voices._cached_bytes == len(wav)
    finally:
        await link.close()


async def test_a_deleted_voice_is_not_put_back_by_its_spare(redis_server, tmp_path):
    voices, link, maps = await _voices(redis_server.url, tmp_path)
    try:
        wav = _wav()
        ref_id = "ra_" + "3" * 16
        meta = {"name": "deleted", "duration_s": 1.0, "created_at": time.time()}
        await voices.add(ref_id, meta, wav)
        assert await voices.delete(ref_id)
        await asyncio.to_thread(voices.local.put, ref_id, meta, wav)   # a spare another process still holds
        assert await voices.sync() == (0, 1)                            # dropped, not put back
        assert not await link.client.hexists(key("map", "voices"), ref_id)
        assert not await link.raw.exists(key("voice", ref_id))
        assert ref_id not in voices.local.items
    finally:
        await link.close()
