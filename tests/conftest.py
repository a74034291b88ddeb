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
    return _edit_rate(_words(reference), _words(hypothesis))


# Traditional → simplified, for what Whisper base sometimes writes.
_T2S = str.maketrans(
    "這個們來時會說國學對麼為與後條氣園陽東興幫現萬億裡裏兩點鐘語話開關長門問間題電車馬鳥魚龍書見親觀聽體頭愛風飛雲動發經過還邊運進遠選讓認識讀寫買賣錢歲級紀約門壞歡樂謝請應該樣種師號實際價區醫藥聲響隻滿們網視覽溫熱騰並從則眾員變處帶將總",
    "这个们来时会说国学对么为与后条气园阳东兴帮现万亿里里两点钟语话开关长门问间题电车马鸟鱼龙书见亲观听体头爱风飞云动发经过还边运进远选让认识读写买卖钱岁级纪约门坏欢乐谢请应该样种师号实际价区医药声响只满们网视览温热腾并从则众员变处带将总")
_DIGITS = "零一二三四五六七八九"


def _small(n: int) -> str:
    """1..9999 in Chinese numerals (十二, 一百零五, 两 not used)."""
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d:
            if zero and out:
                out += "零"
            out += _DIGITS[d] + unit
            zero = False
        else:
            zero = True
    return out[1:] if out.startswith("一十") else out


def chinese_number(n: int) -> str:
    if n == 0:
        return "零"
    parts = []
    for value, unit in ((10**8, "亿"), (10**4, "万"), (1, "")):
        q = n // value % 10**4 if value < 10**8 else n // value
        if q:
            parts.append(_small(q) + unit)
    return "".join(parts)


def normalize_chinese(text: str) -> str:
    """Simplified characters, numbers as Chinese numerals, no punctuation or spaces."""
    t = text.translate(_T2S).lower()
    t = t.replace("+", "加").replace("=", "等于").replace("%", "百分之")
    t = re.sub(r"\d+", lambda m: chinese_number(int(m.group(0))), t)
    return re.sub(r"[\W_]+", "", t)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance over normalized characters (Chinese) / number of reference characters."""
    return _edit_rate(list(normalize_chinese(reference)), list(normalize_chinese(hypothesis)))


def _edit_rate(ref: list[str], hyp: list[str]) -> float:
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
