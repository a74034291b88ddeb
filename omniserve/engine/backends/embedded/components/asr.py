"""Speech recognition: faster-whisper (CTranslate2, int8 on CPU) on Whisper base or tiny.en.

Tuned for short conversational turns: greedy decoding (beam 1), no internal VAD (our VAD has
already cut the segment), no timestamps, no conditioning on earlier windows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from omniserve.engine.checks import check_pcm

SAMPLE_RATE = 16000
ASR_MODELS = ("base", "tiny.en")


class WhisperASR:
    """``base.SpeechRecognizer`` over faster-whisper."""

    def __init__(self, model: str = "base", *, threads: int = 0, cache_dir: Optional[str] = None,
                 model_dir: Optional[str | Path] = None, max_seconds: float = 120.0) -> None:
        from faster_whisper import WhisperModel

        from .. import models

        if model not in ASR_MODELS and model_dir is None:
            raise ValueError(f"unknown ASR model {model!r}; choose one of {ASR_MODELS}")
        self.name = model
        self.english_only = model.endswith(".en")
        self.max_seconds = max_seconds
        path = Path(model_dir) if model_dir else models.whisper_dir(model, cache_dir)
        self._model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                   cpu_threads=threads or os.cpu_count() or 1, local_files_only=True)

    def transcribe(self, pcm16k: np.ndarray, *, language: Optional[str] = "en",
                   initial_prompt: Optional[str] = None) -> str:
        """Text of the speech in ``pcm16k`` ("" when there is none)."""
        pcm = check_pcm(pcm16k, max_seconds=self.max_seconds)
        if pcm.size < SAMPLE_RATE // 10:      # < 100 ms: nothing Whisper can read, only hallucinate
            return ""
        if self.english_only:
            language = "en"
        segments, _info = self._model.transcribe(
            pcm, language=language or None, beam_size=1, best_of=1, temperature=0.0,
            vad_filter=False, without_timestamps=True, condition_on_previous_text=False,
            initial_prompt=initial_prompt or None)
        return " ".join(s.text.strip() for s in segments if s.text.strip()).strip()
