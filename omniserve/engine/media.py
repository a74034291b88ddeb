"""Check and decode the media a conversation carries: PCM audio, images, video containers.

The views validate here, before any model runs, so bad input fails fast with a message a user
can act on (``EngineInputError``). Video is split with the ``ffmpeg`` command (a subprocess with
a time limit, so a hostile file cannot hang or crash the worker): a few evenly spaced frames as
JPEG, and the audio track as 16 kHz mono float32.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .api import EngineInputError
from .components.asr import check_pcm

SAMPLE_RATE = 16000
MAX_AUDIO_S = 600.0
MAX_VIDEO_FRAMES = 4
_FFMPEG_TIMEOUT_S = 60.0


def check_audio(pcm: object, sample_rate: int = SAMPLE_RATE, *, what: str = "audio",
                max_seconds: float = MAX_AUDIO_S) -> np.ndarray:
    """Return ``pcm`` as 1-D float32 16 kHz, or raise EngineInputError saying what is wrong."""
    if sample_rate != SAMPLE_RATE:
        raise EngineInputError(f"{what}: sample rate {sample_rate} Hz is not supported; "
                               f"send mono float32 PCM at {SAMPLE_RATE} Hz")
    if isinstance(pcm, np.ndarray) and pcm.dtype.kind == "f":
        pcm = pcm.astype(np.float32, copy=False)   # float64 from numpy/soundfile is fine
    return check_pcm(pcm, what=what, max_seconds=max_seconds)


def check_image(data: object, *, what: str = "image") -> bytes:
    """Image bytes that decode (JPEG/PNG/WebP …); raise EngineInputError otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise EngineInputError(f"{what} is empty")
    import cv2

    arr = np.frombuffer(bytes(data), dtype=np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise EngineInputError(f"{what} cannot be decoded (send JPEG or PNG bytes)")
    return bytes(data)


@dataclass
class VideoParts:
    duration_s: float
    frames: list[tuple[float, bytes]] = field(default_factory=list)   # (time s, JPEG bytes)
    audio: Optional[np.ndarray] = None                                 # 16 kHz float32, None = no track


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise EngineInputError("video input needs the ffmpeg command, which is not installed on this server")
    return exe


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise EngineInputError(f"video took longer than {_FFMPEG_TIMEOUT_S:.0f} s to decode") from None


def _duration(path: Path) -> float:
    probe = shutil.which("ffprobe")
    if not probe:
        return 0.0
    r = _run([probe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)])
    if r.returncode != 0:
        raise EngineInputError("video cannot be decoded (send an MP4 or WebM file)")
    try:
        return float(json.loads(r.stdout or b"{}").get("format", {}).get("duration", 0.0))
    except (ValueError, TypeError):
        return 0.0


def split_video(data: bytes, *, max_frames: int = MAX_VIDEO_FRAMES, max_seconds: float = MAX_AUDIO_S) -> VideoParts:
    """Evenly spaced JPEG frames (at most ``max_frames``) and the 16 kHz audio track of a video file."""
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise EngineInputError("video is empty")
    ffmpeg = _ffmpeg()
    with tempfile.TemporaryDirectory(prefix="omniserve-video-") as tmp:
        src = Path(tmp) / "in.bin"
        src.write_bytes(bytes(data))
        duration = _duration(src)
        n = max(1, int(max_frames))
        fps = n / duration if duration > 0 else 1.0
        r = _run([ffmpeg, "-nostdin", "-v", "error", "-i", str(src), "-an", "-vf", f"fps={fps:.6f},scale='min(640,iw)':-2",
                  "-frames:v", str(n), "-q:v", "4", str(Path(tmp) / "f%03d.jpg")])
        files = sorted(Path(tmp).glob("f*.jpg"))
        if r.returncode != 0 or not files:
            why = (r.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no video frames"]
            raise EngineInputError(f"video cannot be decoded (send an MP4 or WebM file): {why[0][:200]}")
        step = duration / n if duration > 0 else 1.0
        frames = [(round(i * step + step / 2, 1), f.read_bytes()) for i, f in enumerate(files)]
        a = _run([ffmpeg, "-nostdin", "-v", "error", "-i", str(src), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                  "-t", str(max_seconds), "-f", "f32le", "-"])
        audio = np.frombuffer(a.stdout, dtype="<f4").astype(np.float32) if a.returncode == 0 and a.stdout else None
        if audio is not None and (audio.size < SAMPLE_RATE // 10 or not np.isfinite(audio).all()):
            audio = None
    return VideoParts(duration_s=duration, frames=frames, audio=audio)
