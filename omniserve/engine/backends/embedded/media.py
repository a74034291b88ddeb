"""Check and decode the media a conversation carries: images and video containers (PCM audio is
checked in ``omniserve.engine.checks``).

The cascade checks here, before any model runs, so bad input fails fast with a message a user
can act on (``EngineInputError``). Headers come first (``omniserve.mediaprobe``): an image's
format and pixel count, a video's container, its frame size and length are checked before
anything is decoded. Video is split by ffmpeg in a box (``omniserve.ffbox``: a private copy, one
whitelisted demuxer, the file protocol only, a deadline and an output cap): a few evenly spaced
frames as JPEG, and the audio track as 16 kHz mono float32. Errors never quote ffmpeg.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from omniserve import ffbox, mediaprobe
from omniserve.engine.api import EngineInputError
from omniserve.engine.checks import MAX_AUDIO_S, SAMPLE_RATE

from .components.vision import MAX_PIXELS, header_checked, imdecode   # also sets the decoders' limits

MAX_VIDEO_FRAMES = 4
_FFMPEG_TIMEOUT_S = 60.0       # for all ffprobe/ffmpeg runs of one video together
_PROBE_OUTPUT = 64 * 1024
_FRAME_WIDTH = 640             # extracted frames are scaled down to this width
_VIDEO_HINT = "send an MP4, WebM or Ogg file"


def check_image(data: object, *, what: str = "image") -> bytes:
    """Image bytes of an accepted format and size that decode; raise EngineInputError otherwise.
    The header is checked before the pixels are decoded."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise EngineInputError(f"{what} is empty")
    data = bytes(data)
    try:
        header = header_checked(data, what)
    except mediaprobe.UnsupportedFormat:
        header = None
    if header is None or imdecode(data, header) is None:
        raise EngineInputError(f"{what} cannot be decoded (send JPEG, PNG or WebP bytes)")
    return bytes(data)


@dataclass
class VideoParts:
    duration_s: float
    frames: list[tuple[float, bytes]] = field(default_factory=list)   # (time s, JPEG bytes)
    audio: Optional[np.ndarray] = None                                 # 16 kHz float32, None = no track


@dataclass
class _Streams:
    duration_s: float
    width: int
    height: int
    has_audio: bool


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise EngineInputError(f"video took longer than {_FFMPEG_TIMEOUT_S:.0f} s to decode")
    return left


def _probe(box: ffbox.Box, deadline: float) -> _Streams:
    """Length, the largest frame size and audio presence from the container's headers (ffprobe)."""
    out = box.run("ffprobe", [*box.input_args(), "-show_entries", "format=duration:stream=codec_type,width,height",
                              "-of", "json"], timeout_s=_remaining(deadline), max_output=_PROBE_OUTPUT)
    try:
        info = json.loads(out or b"{}")
        streams = [s for s in info.get("streams", []) if isinstance(s, dict)]
        sizes = [(int(s.get("width") or 0), int(s.get("height") or 0)) for s in streams
                 if s.get("codec_type") == "video"]
        duration = float(info.get("format", {}).get("duration", 0.0) or 0.0)
    except (ValueError, TypeError, AttributeError):
        raise ffbox.ToolError("unreadable stream list") from None
    if not sizes:
        raise EngineInputError(f"video has no picture ({_VIDEO_HINT})")
    w, h = max(sizes, key=lambda wh: wh[0] * wh[1])   # ffmpeg may pick any of them: check the biggest
    return _Streams(duration if np.isfinite(duration) and duration > 0 else 0.0, w, h,
                    any(s.get("codec_type") == "audio" for s in streams))


def split_video(data: bytes, *, max_frames: int = MAX_VIDEO_FRAMES, max_seconds: float = MAX_AUDIO_S) -> VideoParts:
    """Evenly spaced JPEG frames (at most ``max_frames``) and the 16 kHz audio track of a video file.

    Only MP4/MOV/3GP, WebM/Matroska and Ogg are accepted, told apart by their magic bytes; the
    frame size (at most MAX_PIXELS) and the length (at most ``max_seconds``) are read from the
    headers before any frame is decoded."""
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise EngineInputError("video is empty")
    kind = mediaprobe.container(data)
    if kind not in mediaprobe.VIDEO_CONTAINERS:
        raise EngineInputError(f"video cannot be decoded ({_VIDEO_HINT})")
    if not ffbox.available("ffmpeg", "ffprobe"):
        raise EngineInputError("video input needs ffmpeg, which is not installed on this server")
    deadline = time.monotonic() + _FFMPEG_TIMEOUT_S
    try:
        with ffbox.Box(data, kind) as box:
            return _split(box, deadline, max(1, int(max_frames)), max_seconds)
    except ffbox.ToolError as e:
        raise EngineInputError(f"video cannot be decoded ({e}; {_VIDEO_HINT})") from None


def _split(box: ffbox.Box, deadline: float, n: int, max_seconds: float) -> VideoParts:
    info = _probe(box, deadline)
    if info.width < 1 or info.height < 1 or info.width * info.height > MAX_PIXELS:
        raise EngineInputError(f"video frames too large: {info.width}x{info.height} pixels "
                               f"(max {MAX_PIXELS / 1e6:.1f} MP)")
    if info.duration_s > max_seconds:
        raise EngineInputError(f"video too long ({info.duration_s:.0f} s, max {max_seconds:.0f} s)")
    duration = info.duration_s
    fps = n / duration if duration > 0 else 1.0
    frame_cap = n * _FRAME_WIDTH * _FRAME_WIDTH * 3      # generous for q:v 4 JPEGs of at most 640 px wide
    box.run("ffmpeg", [*box.input_args(), "-t", f"{max_seconds:.3f}", "-an", "-sn", "-dn",
                       "-vf", f"fps={fps:.6f},scale='min({_FRAME_WIDTH},iw)':-2",
                       "-frames:v", str(n), "-q:v", "4", "f%03d.jpg"],
            timeout_s=_remaining(deadline), max_output=frame_cap)
    files = sorted(box.folder.glob("f*.jpg"))
    if not files:
        raise EngineInputError(f"video cannot be decoded (no video frames; {_VIDEO_HINT})")
    step = duration / n if duration > 0 else 1.0
    frames = [(round(i * step + step / 2, 1), f.read_bytes()) for i, f in enumerate(files[:n])]
    audio = _audio_track(box, deadline, max_seconds) if info.has_audio else None
    return VideoParts(duration_s=duration, frames=frames, audio=audio)


def _audio_track(box: ffbox.Box, deadline: float, max_seconds: float) -> Optional[np.ndarray]:
    """The audio as 16 kHz mono float32, or None when there is none worth hearing (or it fails)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    try:
        audio = box.audio(rate=SAMPLE_RATE, max_seconds=max_seconds, timeout_s=left)
    except ffbox.ToolError:
        return None
    if audio.size < SAMPLE_RATE // 10 or not np.isfinite(audio).all():
        return None
    return audio
