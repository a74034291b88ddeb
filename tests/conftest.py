"""Shared test helpers (stable API — other test modules import these).

Import them as ``from tests.conftest import piper_speech, espeak_speech, word_error_rate, text_image``.

- ``espeak_speech(text, rate=16000, voice="en-us", wpm=165)`` → float32 mono speech from the
  espeak-ng binary (a second, very different synthetic voice; needs the Debian package).
- ``piper_speech(text, rate=16000, speed=1.0)`` → float32 mono speech from our Piper TTS
  (loaded once per test process).
- ``silence(seconds, rate=16000)``, ``noise(seconds, level=0.01, rate=16000, seed=0)``.
- ``word_error_rate(reference, hypothesis)`` → word-level Levenshtein distance / reference words,
  after lower-casing, dropping punctuation and writing number words up to twenty as digits
  (so "Paris." equals "paris" and "nine" equals "9").
- ``text_image(text, size=(640, 480), font_size=56, fmt="PNG")`` → image bytes with big dark text
  on a light background (DejaVu Sans Bold, else PIL's default font).

Fixtures: ``has_espeak`` (skips when espeak-ng is missing). ``HF_HUB_OFFLINE=1`` is set for every
test run so nothing can reach a model hub.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from typing import Optional
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_piper = None


def espeak_speech(text: str, rate: int = 16000, voice: str = "en-us", wpm: int = 165) -> np.ndarray:
    """Speech from the espeak-ng command line tool, resampled to ``rate``."""
    import soundfile as sf

    from omniserve.audio import resample

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(wpm), "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    pcm, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return resample(pcm.mean(axis=1), sr, rate)


def piper_speech(text: str, rate: int = 16000, speed: float = 1.0) -> np.ndarray:
    """Speech from our Piper TTS (24 kHz inside), resampled to ``rate``."""
    global _piper
    from omniserve.audio import OUT_RATE, resample
    from omniserve.engine.backends.embedded.components.tts import PiperTTS

    if _piper is None:
        _piper = PiperTTS()
    return resample(_piper.synthesize(text, speed=speed), OUT_RATE, rate)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def noise(seconds: float, level: float = 0.01, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """White noise at RMS ``level``."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * level).astype(np.float32)


_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}


def _words(text: str) -> list[str]:
    """Lower-case words without punctuation; number words up to twenty become digits."""
    return [_NUMBERS.get(w, w) for w in re.sub(r"[^\w\s']", " ", text.lower()).split()]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / number of reference words."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def text_image(text: str, size: tuple[int, int] = (640, 480), font_size: int = 56, fmt: str = "PNG",
               bg: tuple[int, int, int] = (240, 240, 230), fg: tuple[int, int, int] = (10, 10, 10),
               position: Optional[tuple[int, int]] = None) -> bytes:
    """Image bytes with ``text`` printed large (one line per ``\\n``)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", font_size)
    except OSError:
        font = ImageFont.load_default(size=font_size)
    x, y = position or (max(10, size[0] // 16), max(10, size[1] // 3))
    draw.multiline_text((x, y), text, fill=fg, font=font, spacing=font_size // 3)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def has_espeak() -> bool:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return True


def pytest_collection_modifyitems(session, config, items):
    """Run the browser tests last: Playwright's sync API keeps an event loop running in the main
    thread for as long as its session-scoped browser lives, and ``asyncio.run`` in any later test
    would fail with "cannot be called from a running event loop"."""
    browser_dir = Path(__file__).parent / "browser"
    items.sort(key=lambda it: Path(str(it.fspath)).is_relative_to(browser_dir))
