"""Which container a media file is, from its magic bytes alone."""
from __future__ import annotations

from typing import Optional

VIDEO_CONTAINERS = frozenset({"mp4", "webm", "ogg"})


def container(data: bytes) -> Optional[str]:
    """The container a media file's magic bytes name: "wav", "flac", "ogg", "webm" (any
    Matroska), "mp4" (MP4/MOV/3GP/M4A: an ``ftyp`` box first), "mp3"; None otherwise."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "mp3"     # MPEG audio frame sync, layer III (ADTS AAC has layer bits 00)
    return None
