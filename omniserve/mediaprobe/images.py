"""Image headers: format and pixel size of PNG, JPEG and WebP (and GIF, BMP, TIFF, to name what
we refuse) from their first bytes, before any decoder runs."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from .errors import TooLarge, UnsupportedFormat

# 4096 x 4096 = 16.8 MP. A 12 MP phone photo (4032 x 3024) fits; a decoded frame at the cap is
# 50 MB of BGR. Captions work on a 960 px copy, so more pixels would only cost memory.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_SIDE = 8192                      # a 8192 x 2048 panorama is still 16.8 MP
IMAGE_FORMATS = frozenset({"jpeg", "png", "webp"})
_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}
_MAX_SEGMENTS = 1024                       # marker / IFD walks stop here: real files need a handful


@dataclass(frozen=True)
class ImageHeader:
    format: str          # "jpeg" | "png" | "webp" | "gif" | "bmp" | "tiff"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_header(data: bytes) -> Optional[ImageHeader]:
    """Format and size from an image's header; None when it is no image format we know."""
    b = bytes(data[:64])
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(b)
        if b[:3] == b"\xff\xd8\xff":
            return _jpeg(data)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            return _webp(b)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack_from("<HH", b, 6)
            return ImageHeader("gif", w, h)
        if b[:2] == b"BM":
            return _bmp(b)
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except (struct.error, IndexError):
        return None
    return None


def check_image(data: bytes, *, formats: frozenset[str] = IMAGE_FORMATS, max_pixels: int = MAX_IMAGE_PIXELS,
                max_side: int = MAX_IMAGE_SIDE) -> ImageHeader:
    """The header of an image we accept, else UnsupportedFormat / TooLarge. Reads the header only."""
    h = image_header(data)
    if h is None or h.format not in formats:
        names = sorted(_NAMES.get(f, f) for f in formats)
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise UnsupportedFormat(f"not a {listed} image")
    if h.width < 1 or h.height < 1:
        raise UnsupportedFormat("the image header has no size")
    if h.pixels > max_pixels or max(h.width, h.height) > max_side:
        raise TooLarge(f"{h.width}x{h.height} pixels (max {max_pixels / 1e6:.1f} MP, {max_side} px a side)")
    return h


def _png(b: bytes) -> Optional[ImageHeader]:
    if b[12:16] != b"IHDR":
        return None
    w, h = struct.unpack_from(">II", b, 16)
    return ImageHeader("png", w, h)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}


def _jpeg(data: bytes) -> Optional[ImageHeader]:
    """Walk the marker segments (APP/EXIF blocks may come first) up to the frame header."""
    i, n = 2, len(data)
    for _ in range(_MAX_SEGMENTS):
        if i + 4 > n or data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:                     # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        if marker in (0xD9, 0xDA):             # end of image / start of scan before any frame header
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack_from(">HH", data, i + 5)
            return ImageHeader("jpeg", w, h)
        seg = struct.unpack_from(">H", data, i + 2)[0]
        if seg < 2:
            return None
        i += 2 + seg
    return None


def _webp(b: bytes) -> Optional[ImageHeader]:
    kind, payload = b[12:16], b[20:]
    if kind == b"VP8X":                        # extended: the canvas (every frame fits inside it)
        w = int.from_bytes(payload[4:7], "little") + 1
        h = int.from_bytes(payload[7:10], "little") + 1
        return ImageHeader("webp", w, h)
    if kind == b"VP8L":                        # lossless: 14-bit width-1 and height-1
        if payload[0] != 0x2F:
            return None
        bits = int.from_bytes(payload[1:5], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8 ":                        # lossy key frame: start code, then 14-bit sizes
        if payload[3:6] != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack_from("<HH", payload, 6)
        return ImageHeader("webp", w & 0x3FFF, h & 0x3FFF)
    return None


def _bmp(b: bytes) -> ImageHeader:
    if struct.unpack_from("<I", b, 14)[0] == 12:      # OS/2 core header: 16-bit sizes
        w, h = struct.unpack_from("<HH", b, 18)
    else:
        w, h = struct.unpack_from("<ii", b, 18)       # height < 0: stored top-down
    return ImageHeader("bmp", abs(w), abs(h))


def _tiff(data: bytes) -> Optional[ImageHeader]:
    e = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(e + "I", data, 4)[0]
    count = struct.unpack_from(e + "H", data, ifd)[0]
    size: dict[int, int] = {}
    for k in range(min(count, _MAX_SEGMENTS)):
        tag, typ = struct.unpack_from(e + "HH", data, ifd + 2 + 12 * k)
        if tag in (256, 257):                  # ImageWidth, ImageLength: SHORT or LONG
            size[tag] = struct.unpack_from(e + ("H" if typ == 3 else "I"), data, ifd + 10 + 12 * k)[0]
    if 256 not in size or 257 not in size:
        return None
    return ImageHeader("tiff", size[256], size[257])
