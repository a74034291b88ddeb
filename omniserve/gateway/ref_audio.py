"""RefAudioRegistry: uploaded reference voices, stored as 16 kHz mono WAV in ``<data_dir>/ref_audio``
(``LocalVoices``), or, with ``gateway.redis_url``, in Redis for every gateway (``state.shared_voices``).

Uploads are size- and duration-capped and decoded off the event loop, header first: the
container comes from the magic bytes (``omniserve.mediaprobe``), and a WAV/FLAC/Ogg header's rate
(8-48 kHz), channels (at most 2) and length are checked before a sample is decoded (by
``omniserve.audio.read_audio_bytes``). Browser WebM/Opus, MP4/M4A and MP3 (and Ogg/Opus that
libsndfile cannot read) go through ffmpeg in a box (``omniserve.ffbox``: one whitelisted demuxer,
the file protocol only, ``-t``, an output cap and a deadline). Anything else is refused before any
decoder runs, and no error quotes a decoder. Names are validated (printable, no markup characters)
and HTML-escaped on output; ids are random and checked against a strict pattern before any file use.
"""
from __future__ import annotations

import asyncio
import html
import logging
import secrets
import time
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from .. import ffbox, mediaprobe
from ..audio import IN_RATE, SOUNDFILE_CONTAINERS, AudioError, decode_f32, read_audio_bytes, to_wav_bytes
from ..protocol.rest import RefAudioOut
from .presets import DEFAULT_VOICE
from .voice_files import ID_RE, NAME_RE, LocalVoices

DEFAULT_ID = "default"
FFMPEG_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class RefAudioError(ValueError):
    """An upload that cannot be accepted; the text says why (HTTP 400/413)."""


class VoicesFull(Exception):
    """``gateway.edge.max_voices`` voices are stored already (HTTP 507)."""


class VoiceStore(Protocol):
    """Where the voices live when several gateways share them (``state.shared_voices``)."""
    items: dict[str, dict]

    async def add(self, ref_id: str, meta: dict, wav: bytes) -> None: ...
    async def delete(self, ref_id: str) -> bool: ...
    async def audio(self, ref_id: str) -> Optional[bytes]: ...


class RefAudioRegistry:
    """The voices: on this gateway's disk, or, with ``shared`` (``gateway.redis_url``), in Redis for
    every gateway (``state.shared_voices``; the disk then keeps this gateway's uploads as a spare)."""

    def __init__(self, folder: Path, max_bytes: int, max_seconds: float, max_voices: int) -> None:
        self.local = LocalVoices(folder)
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.max_voices = max_voices
        self.shared: Optional[VoiceStore] = None

    # ------------------------------------------------------------------ read
    def _items(self) -> dict[str, dict]:
        return self.shared.items if self.shared is not None else self.local.items

    def count(self) -> int:
        """Stored voices, the default one not counted."""
        return len(self._items())

    def list(self) -> list[RefAudioOut]:
        out = [RefAudioOut(id=DEFAULT_ID, name="Default voice", duration_s=_wav_seconds(DEFAULT_VOICE),
                           created_at=0.0, builtin=True)]
        for k, v in sorted(self._items().items(), key=lambda kv: kv[1]["created_at"]):
            out.append(RefAudioOut(id=k, name=html.escape(v["name"], quote=False), duration_s=v["duration_s"],
                                   created_at=v["created_at"]))
        return out

    async def audio(self, ref_id: str) -> Optional[Path | bytes]:
        """The voice's WAV: a file to send, or its bytes (from Redis); None when there is no such voice."""
        if ref_id == DEFAULT_ID:
            return DEFAULT_VOICE
        if not ID_RE.match(ref_id):
            return None
        if self.shared is not None:
            return await self.shared.audio(ref_id)
        return self.local.path(ref_id)

    # ----------------------------------------------------------------- write
    async def add(self, name: str, data: bytes, fmt: Optional[str] = None) -> RefAudioOut:
        """``RefAudioError``; ``VoicesFull``; ``StateUnavailable`` when the shared store is unreachable."""
        name = name.strip()
        if not NAME_RE.match(name) or not name.isprintable():
            raise RefAudioError('name: 1-64 printable characters, without < > & " ` or \\')
        if not data:
            raise RefAudioError("empty upload")
        if len(data) > self.max_bytes:
            raise RefAudioError(f"file too large ({len(data)} bytes, max {self.max_bytes})")
        pcm = await self._decode(data, fmt)
        seconds = pcm.size / IN_RATE
        if seconds < 0.5:
            raise RefAudioError(f"audio too short ({seconds:.2f} s, min 0.5 s)")
        if seconds > self.max_seconds:
            raise RefAudioError(f"audio too long ({seconds:.1f} s, max {self.max_seconds:.0f} s)")
        ref_id = "ra_" + secrets.token_hex(8)
        wav = await asyncio.to_thread(to_wav_bytes, pcm, IN_RATE)
        meta: dict = {"name": name, "duration_s": round(seconds, 2), "created_at": time.time()}
        if self.shared is not None:
            await self.shared.add(ref_id, meta, wav)
        else:
            await asyncio.to_thread(self.local.put, ref_id, meta, wav)
        return RefAudioOut(id=ref_id, name=html.escape(name, quote=False), duration_s=meta["duration_s"],
                           created_at=meta["created_at"])

    async def delete(self, ref_id: str) -> bool:
        if not ID_RE.match(ref_id):
            return False
        if self.shared is not None:
            return await self.shared.delete(ref_id)
        return await asyncio.to_thread(self.local.remove, ref_id)

    # ---------------------------------------------------------------- decode
    async def _decode(self, data: bytes, fmt: Optional[str]) -> np.ndarray:
        if fmt == "pcm_f32":
            if len(data) // 4 > self.max_seconds * IN_RATE:
                raise RefAudioError(f"audio too long ({len(data) / 4 / IN_RATE:.1f} s, max {self.max_seconds:.0f} s)")
            import base64
            try:
                return await asyncio.to_thread(decode_f32, base64.b64encode(data).decode())
            except AudioError as e:
                raise RefAudioError(str(e)) from None
        try:   # header first: nothing is decoded before its rate, channels and length are known good
            header = mediaprobe.check_audio_header(mediaprobe.audio_header(data), max_seconds=self.max_seconds)
        except mediaprobe.MediaError as e:
            raise RefAudioError(str(e)) from None
        if header.container in SOUNDFILE_CONTAINERS:
            try:
                return await asyncio.to_thread(read_audio_bytes, data, IN_RATE, max_seconds=self.max_seconds)
            except AudioError as e:
                if header.container != "ogg":      # Ogg/Opus may need ffmpeg; the rest is final
                    raise RefAudioError(str(e)) from None
                log.debug("ref audio: libsndfile could not read an Ogg upload; trying ffmpeg")
        if not ffbox.available("ffmpeg"):
            raise RefAudioError(f"cannot decode {header.container.upper()} audio (install ffmpeg for WebM/Opus/MP4/MP3)")
        try:
            # 0.5 s over the cap, so that "too long" is still told apart from "exactly the cap"
            return await asyncio.to_thread(ffbox.decode_audio, data, header.container, rate=IN_RATE,
                                           max_seconds=self.max_seconds + 0.5, timeout_s=FFMPEG_TIMEOUT_S)
        except ffbox.ToolError as e:
            raise RefAudioError(f"cannot decode audio file: {e}") from None


def _wav_seconds(path: Path) -> float:
    try:
        import soundfile as sf
        info = sf.info(str(path))
        return round(info.frames / info.samplerate, 2)
    except Exception:
        return 0.0
