"""PCM codecs used on the wire (base64 float32 little-endian), resampling and WAV helpers.

Pure numpy + soundfile: imported by the gateway, the worker and the engine alike.
"""
from __future__ import annotations

import base64
import binascii
import io
from math import gcd

import numpy as np

IN_RATE = 16000   # microphone / reference audio on the wire
OUT_RATE = 24000  # speech from the server


class AudioError(ValueError):
    """Audio that cannot be used; the text says why."""


def decode_f32(b64: str, *, max_samples: int | None = None) -> np.ndarray:
    """base64 float32 LE PCM → 1-D float32 array. Raises AudioError on bad input."""
    if not isinstance(b64, str):
        raise AudioError("audio must be a base64 string")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise AudioError("audio is not valid base64") from None
    if len(raw) % 4:
        raise AudioError(f"audio byte length {len(raw)} is not a multiple of 4 (float32 PCM expected)")
    pcm = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if max_samples is not None and pcm.size > max_samples:
        raise AudioError(f"audio too long: {pcm.size} samples (max {max_samples})")
    if pcm.size and not np.isfinite(pcm).all():
        raise AudioError("audio contains NaN or infinite samples")
    return pcm


def encode_f32(pcm: np.ndarray) -> str:
    """1-D float array → base64 float32 LE PCM."""
    return base64.b64encode(np.asarray(pcm, dtype="<f4").tobytes()).decode("ascii")


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Polyphase resampling (band-limited) between integer rates."""
    pcm = np.asarray(pcm, dtype=np.float32)
    if src == dst or pcm.size == 0:
        return pcm
    from scipy.signal import resample_poly

    g = gcd(src, dst)
    return resample_poly(pcm, dst // g, src // g).astype(np.float32)


def to_wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(pcm, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# Containers libsndfile decodes here; anything else needs ffmpeg (``omniserve.ffbox``).
SOUNDFILE_CONTAINERS = frozenset({"wav", "flac", "ogg"})


def read_audio_bytes(data: bytes, rate: int = IN_RATE, *, max_seconds: float = 600.0) -> np.ndarray:
    """Decode a WAV/FLAC/Ogg file's bytes to mono float32 at ``rate``. Raises AudioError.

    Header first: the container comes from the magic bytes, and the rate (8-48 kHz), channels
    (at most 2) and length (at most ``max_seconds``) are checked — from our own header reader and
    again from libsndfile's — before any sample is decoded; the decode itself stops at
    ``max_seconds``. Error texts are short and never quote the library."""
    import soundfile as sf

    from . import mediaprobe

    try:
        header = mediaprobe.audio_header(data)
        if header.container not in SOUNDFILE_CONTAINERS:
            raise mediaprobe.UnsupportedFormat(f"cannot decode {header.container.upper()} audio here")
        mediaprobe.check_audio_header(header, max_seconds=max_seconds)
        with sf.SoundFile(io.BytesIO(data)) as f:
            mediaprobe.check_audio_header(mediaprobe.AudioHeader(header.container, f.samplerate, f.channels,
                                                                 f.frames if f.seekable() else None),
                                          max_seconds=max_seconds)
            cap = int(max_seconds * f.samplerate)
            pcm = f.read(frames=cap + 1, dtype="float32", always_2d=True)
            sr = f.samplerate
    except mediaprobe.MediaError as e:
        raise AudioError(str(e)) from None
    except Exception:  # soundfile raises its own LibsndfileError / RuntimeError; its text stays out
        raise AudioError("cannot decode audio file (damaged, or not WAV, FLAC or Ogg)") from None
    if len(pcm) > cap:
        raise AudioError(f"audio too long (more than {max_seconds:.0f} s)")
    return resample(pcm.mean(axis=1), sr, rate)
