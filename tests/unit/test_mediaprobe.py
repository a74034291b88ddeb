"""Header readers (omniserve.mediaprobe) on crafted headers, and the header-first decoders that use
them (audio.read_audio_bytes, worker.limits, engine vision/media). Bombs are built by hand at
a tiny size; nothing here allocates more than a few MB."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from omniserve import mediaprobe
from omniserve.mediaprobe import TooLarge, UnsupportedFormat

HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"


# ------------------------------------------------------------------------------ crafted files
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(w: int = 16384, h: int = 16384) -> bytes:
    """A valid 1-bit grayscale PNG of w x h black pixels: 32 MB of rows deflate to ~33 KB."""
    row = b"\x00" * (1 + (w + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def pil_image(fmt: str, size: tuple[int, int] = (32, 24), **save) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt, **save)
    return buf.getvalue()


def webp_bomb(kind: bytes) -> bytes:
    """A small WebP of the given chunk kind whose header is patched to claim 16384 x 16384."""
    if kind == b"VP8X":
        data = bytearray(pil_image("WEBP", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"))
    else:
        data = bytearray(pil_image("WEBP", lossless=kind == b"VP8L"))
    assert bytes(data[12:16]) == kind, bytes(data[12:16])
    if kind == b"VP8X":
        data[24:30] = (16383).to_bytes(3, "little") * 2
    elif kind == b"VP8L":
        bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
        data[21:25] = (bits | 16383 | (16383 << 14)).to_bytes(4, "little")
    else:
        data[26:30] = struct.pack("<HH", 16383, 16383)
    return bytes(data)


def bmp_bomb() -> bytes:
    data = bytearray(pil_image("BMP"))
    data[18:26] = struct.pack("<ii", 30000, -30000)
    return bytes(data)


def tiff_bomb() -> bytes:
    """A little-endian TIFF whose first IFD claims 100000 x 100000 (LONG values)."""
    entries = [(256, 4, 1, 100000), (257, 4, 1, 100000), (258, 3, 1, 8), (262, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 64


def wav(rate: int, channels: int = 1, seconds: float = 1.0, *, data_size: int | None = None) -> bytes:
    """A 16-bit PCM WAV; ``data_size`` overrides the data chunk's declared length."""
    body = b"\x00\x01" * int(rate * seconds * channels) if data_size is None or data_size < 1 << 20 else b"\0" * 4096
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    size = len(body) if data_size is None else data_size
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + body)


def flac_header(rate: int, channels: int, total: int) -> bytes:
    info = struct.pack(">HH", 4096, 4096) + b"\0" * 6
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | total).to_bytes(8, "big") + b"\0" * 16
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def sf_bytes(fmt: str, subtype: str, rate: int = 16000, seconds: float = 1.0, channels: int = 1) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(rate * seconds)) / rate
    pcm = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], channels, axis=1).astype(np.float32)
    sf.write(buf, pcm, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


# ------------------------------------------------------------------------------ images
def test_png_bomb_is_refused_from_its_header():
    bomb = png_bomb()
    assert len(bomb) < 64 * 1024
    assert mediaprobe.image_header(bomb) == mediaprobe.ImageHeader("png", 16384, 16384)
    with pytest.raises(TooLarge, match="16384x16384"):
        mediaprobe.check_image(bomb)


@pytest.mark.parametrize("kind", [b"VP8 ", b"VP8L", b"VP8X"])
def test_webp_headers_of_every_kind(kind):
    small = pil_image("WEBP", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00") if kind == b"VP8X" \
        else pil_image("WEBP", lossless=kind == b"VP8L")
    assert mediaprobe.check_image(small) == mediaprobe.ImageHeader("webp", 32, 24)
    bomb = webp_bomb(kind)
    h = mediaprobe.image_header(bomb)
    assert h is not None and h.format == "webp" and h.width >= 16383 and h.height >= 16383
    with pytest.raises(TooLarge):
        mediaprobe.check_image(bomb)


def test_jpeg_header_after_exif_and_a_patched_bomb():
    from PIL import Image

    img = Image.new("RGB", (40, 30), (10, 200, 10))
    exif = Image.Exif()
    exif[0x010E] = "x" * 3000                       # a long EXIF block before the frame header
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, progressive=True)
    data = bytearray(buf.getvalue())
    assert mediaprobe.check_image(bytes(data)) == mediaprobe.ImageHeader("jpeg", 40, 30)
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(TooLarge, match="60000x60000"):
        mediaprobe.check_image(bytes(data))


@pytest.mark.parametrize("data, fmt, size", [
    (bmp_bomb(), "bmp", (30000, 30000)),
    (tiff_bomb(), "tiff", (100000, 100000)),
    (pil_image("GIF"), "gif", (32, 24)),
])
def test_other_formats_are_read_but_refused(data, fmt, size):
    assert mediaprobe.image_header(data) == mediaprobe.ImageHeader(fmt, *size)
    with pytest.raises(UnsupportedFormat, match="JPEG, PNG or WebP"):
        mediaprobe.check_image(data)


def test_pixel_and_side_caps():
    ok = png_bomb(4096, 4096)
    assert mediaprobe.check_image(ok).pixels == mediaprobe.MAX_IMAGE_PIXELS
    with pytest.raises(TooLarge):
        mediaprobe.check_image(png_bomb(4097, 4096))
    with pytest.raises(TooLarge, match="px a side"):
        mediaprobe.check_image(png_bomb(8193, 16))         # few pixels, but one side too long
    with pytest.raises(UnsupportedFormat):
        mediaprobe.check_image(png_bomb(0, 16))


@pytest.mark.parametrize("data", [b"", b"not an image", HLS, b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff" + b"\xff" * 5000,
                                  b"\xff\xd8\xff\xe0\x00\x00", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\x00\xff\xff\xff\x7f"])
def test_junk_and_truncated_images_are_unsupported(data):
    assert mediaprobe.image_header(data) is None
    with pytest.raises(UnsupportedFormat):
        mediaprobe.check_image(data)


def test_every_prefix_of_real_files_is_safe():
    """Truncated headers never raise anything but MediaError (no IndexError / struct.error)."""
    files = [pil_image("PNG"), pil_image("JPEG"), pil_image("WEBP"), pil_image("WEBP", lossless=True),
             pil_image("BMP"), pil_image("TIFF"), pil_image("GIF")]
    for f in files:
        for n in range(0, min(len(f), 300)):
            mediaprobe.image_header(f[:n])
    for f in [wav(16000), flac_header(16000, 1, 100), sf_bytes("OGG", "VORBIS")]:
        for n in range(0, min(len(f), 300)):
            try:
                mediaprobe.audio_header(f[:n])
            except mediaprobe.MediaError:
                pass


# ------------------------------------------------------------------------------ containers
@pytest.mark.parametrize("data, kind", [
    (b"\x00\x00\x00\x18ftypisom" + b"\0" * 8, "mp4"), (b"\x00\x00\x00\x14ftypqt  " + b"\0" * 8, "mp4"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "webm"), (b"OggS\x00\x02" + b"\0" * 8, "ogg"),
    (b"ID3\x04\x00" + b"\0" * 8, "mp3"), (b"\xff\xfb\x90\x00" + b"\0" * 8, "mp3"), (b"\xff\xf1\x50\x80", None),
    (b"RIFF\0\0\0\0WAVE", "wav"), (b"fLaC\0", "flac"), (HLS, None), (b"ffconcat version 1.0\n", None),
    (b"<?xml version='1.0'?><MPD>", None), (b"", None),
])
def test_container_from_magic_bytes(data, kind):
    assert mediaprobe.container(data) == kind


# ------------------------------------------------------------------------------ audio headers
def test_wav_claiming_1_hz_is_refused():
    h = mediaprobe.audio_header(wav(1, seconds=16000))       # 32 KB of samples "at 1 Hz"
    assert (h.container, h.sample_rate, h.channels, h.frames) == ("wav", 1, 1, 16000)
    with pytest.raises(TooLarge, match="1 Hz"):
        mediaprobe.check_audio_header(h, max_seconds=30)


@pytest.mark.parametrize("data, message", [
    (wav(96000, seconds=0.1), "96000 Hz"), (wav(16000, channels=3, seconds=0.1), "3 audio channels"),
    (wav(8000, seconds=31), "too long"), (flac_header(1, 1, 100), "1 Hz"), (flac_header(48000, 8, 100), "8 audio"),
    (flac_header(48000, 2, 48000 * 3600), "too long"),
])
def test_audio_header_limits(data, message):
    with pytest.raises(TooLarge, match=message):
        mediaprobe.check_audio_header(mediaprobe.audio_header(data), max_seconds=30)


def test_wav_length_is_clamped_to_the_bytes_present():
    h = mediaprobe.audio_header(wav(16000, data_size=0xFFFFFFF0))   # declares 37 hours, holds 4 KB
    assert h.frames == 2048 and h.seconds == pytest.approx(0.128)


@pytest.mark.parametrize("fmt, subtype, rate, channels", [
    ("WAV", "PCM_16", 44100, 2), ("WAV", "FLOAT", 8000, 1), ("FLAC", "PCM_16", 22050, 1),
    ("OGG", "VORBIS", 48000, 2), ("OGG", "OPUS", 48000, 1)])
def test_audio_header_agrees_with_libsndfile(fmt, subtype, rate, channels):
    import soundfile as sf

    data = sf_bytes(fmt, subtype, rate, 1.5, channels)
    h = mediaprobe.audio_header(data)
    info = sf.info(io.BytesIO(data))
    assert (h.sample_rate, h.channels) == (info.samplerate, info.channels)
    assert h.seconds == pytest.approx(1.5, abs=0.03)


@pytest.mark.parametrize("data", [b"", HLS, b"RIFF\0\0\0\0WAVEjunk", b"OggS" + b"\0" * 40, b"\x7fELF"])
def test_unknown_audio_is_unsupported(data):
    with pytest.raises(UnsupportedFormat):
        mediaprobe.audio_header(data)


# ------------------------------------------------------------------------------ header-first decoders
def test_read_audio_bytes_refuses_before_decoding():
    from omniserve.audio import AudioError, read_audio_bytes

    t = time.monotonic()
    with pytest.raises(AudioError, match="1 Hz") as e:
        read_audio_bytes(wav(1, seconds=16000), max_seconds=30)
    assert time.monotonic() - t < 1.0 and "sndfile" not in str(e.value).lower()
    with pytest.raises(AudioError, match="too long"):
        read_audio_bytes(wav(16000, seconds=31), max_seconds=30)
    with pytest.raises(AudioError, match="WAV") as e:
        read_audio_bytes(b"RIFF\x10\0\0\0WAVEfmt \x10\0\0\0garbage!", max_seconds=30)
    assert "sndfile" not in str(e.value).lower() and "/" not in str(e.value)
    pcm = read_audio_bytes(sf_bytes("WAV", "PCM_16", 44100, 1.0, 2), 16000, max_seconds=30)
    assert pcm.dtype == np.float32 and pcm.size == 16000


def test_chat_audio_rate_and_length_checked_before_decoding():
    from omniserve.audio import encode_f32
    from omniserve.worker import limits

    one_s = encode_f32(np.zeros(48000, np.float32))
    assert limits.audio_at(one_s, 48000, max_s=1.0).size == 16000
    for rate in (1, 7999, 48001, 10**9):
        with pytest.raises(limits.InputError, match="sample_rate"):
            limits.audio_at(one_s, rate, max_s=600)
    with pytest.raises(limits.InputError, match="too long"):
        limits.audio_at(one_s, 48000, max_s=0.5)
    with pytest.raises(limits.InputError, match="too long"):
        limits.audio("A" * 10_000_000, max_s=1.0)     # refused on its length, never decoded


@pytest.mark.parametrize("bomb", [png_bomb(), webp_bomb(b"VP8 "), webp_bomb(b"VP8L"), webp_bomb(b"VP8X")])
def test_engine_image_checks_refuse_bombs_without_decoding(bomb):
    import resource

    from omniserve.engine.api import EngineInputError
    from omniserve.engine.backends.embedded.components.vision import decode_image
    from omniserve.engine.backends.embedded.media import check_image

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for check in (check_image, decode_image):
        with pytest.raises(EngineInputError, match="too large"):
            check(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024   # KiB


@pytest.mark.parametrize("data", [bmp_bomb(), tiff_bomb(), pil_image("GIF"), pil_image("BMP"), HLS])
def test_engine_refuses_formats_off_the_whitelist(data):
    from omniserve.engine.api import EngineInputError
    from omniserve.engine.backends.embedded.components.vision import decode_image
    from omniserve.engine.backends.embedded.media import check_image

    with pytest.raises(EngineInputError, match="decoded"):
        check_image(data)
    with pytest.raises(EngineInputError, match="cannot decode image"):
        decode_image(data)


def test_engine_decodes_accepted_images():
    from omniserve.engine.backends.embedded.components.vision import decode_image

    for data in (pil_image("PNG"), pil_image("JPEG"), pil_image("WEBP"), pil_image("WEBP", lossless=True)):
        assert decode_image(data).shape == (24, 32, 3)


def test_decoders_own_limits_are_set_before_cv2_loads():
    """The second line: OpenCV and Pillow refuse a bomb by themselves once the engine's vision
    module is imported (in a fresh process, where cv2 is not loaded yet)."""
    code = (
        "import omniserve.engine.backends.embedded.components.vision as v, cv2, numpy as np, zlib, struct\n"
        "from PIL import Image\n"
        "assert Image.MAX_IMAGE_PIXELS == v.MAX_PIXELS, Image.MAX_IMAGE_PIXELS\n"
        "from tests.unit.test_mediaprobe import png_bomb\n"
        "try:\n"
        "    img = cv2.imdecode(np.frombuffer(png_bomb(4200, 4200), np.uint8), cv2.IMREAD_GRAYSCALE)\n"
        "except cv2.error:\n"
        "    img = None\n"
        "print('refused' if img is None else 'decoded')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "refused", out.stderr[-2000:]
