"""Audio headers: container, sample rate, channels and length of WAV, FLAC and Ogg (Vorbis/Opus)
files, so a file that claims 1 Hz or an hour is refused before it is decoded."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from .containers import container
from .errors import TooLarge, UnsupportedFormat

# What the models are built for (8 kHz telephone .. 48 kHz studio), mono or stereo.
MIN_AUDIO_RATE = 8000
MAX_AUDIO_RATE = 48000
MAX_AUDIO_CHANNELS = 2
_MAX_CHUNKS = 1024                         # RIFF chunks walked before giving up


@dataclass(frozen=True)
class AudioHeader:
    container: str                  # "wav" | "flac" | "ogg" | "webm" | "mp4" | "mp3"
    sample_rate: Optional[int]      # None: only the decoder knows (webm, mp4, mp3)
    channels: Optional[int]
    frames: Optional[int]           # None: the header does not say

    @property
    def seconds(self) -> Optional[float]:
        if self.frames is None or not self.sample_rate:
            return None
        return self.frames / self.sample_rate


def audio_header(data: bytes) -> AudioHeader:
    """Container, rate, channels and length from an audio file's header (UnsupportedFormat when
    the magic bytes name nothing we decode). WebM, MP4 and MP3 report the container only."""
    data = bytes(data)
    kind = container(data)
    try:
        if kind == "wav":
            return _wav(data)
        if kind == "flac":
            return _flac(data)
        if kind == "ogg":
            return _ogg(data)
    except (struct.error, IndexError):
        raise UnsupportedFormat(f"damaged {str(kind).upper()} header") from None
    if kind in ("webm", "mp4", "mp3"):
        return AudioHeader(kind, None, None, None)
    raise UnsupportedFormat("not a WAV, FLAC, Ogg, WebM, MP4 or MP3 audio file")


def check_audio_header(h: AudioHeader, *, max_seconds: float) -> AudioHeader:
    """Refuse a rate outside 8-48 kHz, more than 2 channels or more than ``max_seconds``."""
    if h.sample_rate is not None and not MIN_AUDIO_RATE <= h.sample_rate <= MAX_AUDIO_RATE:
        raise TooLarge(f"sample rate {h.sample_rate} Hz is not supported "
                       f"(use {MIN_AUDIO_RATE // 1000}-{MAX_AUDIO_RATE // 1000} kHz)")
    if h.channels is not None and not 1 <= h.channels <= MAX_AUDIO_CHANNELS:
        raise TooLarge(f"{h.channels} audio channels (mono or stereo only)")
    seconds = h.seconds
    if seconds is not None and seconds > max_seconds:
        raise TooLarge(f"audio too long ({seconds:.1f} s, max {max_seconds:.0f} s)")
    return h


def _wav(data: bytes) -> AudioHeader:
    """RIFF chunks: ``fmt `` gives channels and rate; ``data`` the length (clamped to the bytes
    actually present, as decoders do)."""
    i, n = 12, len(data)
    channels = rate = align = None
    for _ in range(_MAX_CHUNKS):
        if i + 8 > n:
            break
        cid, size = data[i:i + 4], struct.unpack_from("<I", data, i + 4)[0]
        if cid == b"fmt ":
            _tag, channels, rate, _byte_rate, align = struct.unpack_from("<HHIIH", data, i + 8)
        elif cid == b"data":
            if channels is None or not align:
                break
            return AudioHeader("wav", rate, channels, min(size, n - i - 8) // align)
        i += 8 + size + (size & 1)
    raise UnsupportedFormat("damaged WAV header")


def _flac(data: bytes) -> AudioHeader:
    if data[4] & 0x7F != 0:                    # the first metadata block must be STREAMINFO
        raise UnsupportedFormat("damaged FLAC header")
    bits = int.from_bytes(data[18:26], "big")  # rate 20 | channels-1 3 | bits-1 5 | samples 36
    rate, channels, total = bits >> 44, ((bits >> 41) & 0x7) + 1, bits & ((1 << 36) - 1)
    return AudioHeader("flac", rate, channels, total or None)


def _ogg(data: bytes) -> AudioHeader:
    """First page: the codec's id header (Vorbis or Opus). Length: the granule position of the
    stream's last page (Opus always decodes at 48 kHz, minus its pre-skip)."""
    segments = data[26]
    packet = data[27 + segments:27 + segments + 32]
    serial = data[14:18]
    if packet[:7] == b"\x01vorbis":
        channels, rate = packet[11], struct.unpack_from("<I", packet, 12)[0]
        skip = 0
    elif packet[:8] == b"OpusHead":
        channels, rate = packet[9], 48000
        skip = struct.unpack_from("<H", packet, 10)[0]
    else:
        raise UnsupportedFormat("an Ogg file without Vorbis or Opus audio")
    granule = _last_granule(data, serial)
    return AudioHeader("ogg", rate, channels, max(0, granule - skip) if granule is not None else None)


def _last_granule(data: bytes, serial: bytes) -> Optional[int]:
    """Granule position of the last page of stream ``serial`` (each byte is searched once)."""
    end = len(data)
    while True:
        at = data.rfind(b"OggS", 0, end)
        if at < 0:
            return None
        if at + 18 <= len(data) and data[at + 14:at + 18] == serial:
            g = struct.unpack_from("<q", data, at + 6)[0]
            if g >= 0:
                return g
        end = at
