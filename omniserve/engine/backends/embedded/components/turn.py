"""Semantic end of turn: Smart Turn v3.2, an 8M-parameter audio model that tells from the last 8 s
of the user's speech whether they have finished ("…to the station, please." yes; "I'd like to go
to…" no), run with onnxruntime.

Its input is Whisper's log-mel spectrogram of exactly 8 s of 16 kHz audio (the newest 8 s,
zero-padded at the front when shorter), 80 mel bins × 800 frames, computed after normalising the
waveform to zero mean and unit variance; its one output is the probability that the turn is
complete. faster-whisper's own feature extractor makes the spectrogram. One call costs ~25 ms on
one core (``bench/turns.py``).
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000
WINDOW_S = 8
COMPLETE = 0.5            # the model's own decision threshold


class SmartTurn:
    """``base.EndOfTurnModel``; thread-safe (one ONNX session, one thread per call)."""

    def __init__(self, model_path: Optional[str] = None) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        from .. import models

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model_path or models.smart_turn_onnx_path()), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, chunk_length=WINDOW_S)
        self._lock = threading.Lock()

    def features(self, pcm16k: np.ndarray) -> np.ndarray:
        """(80, 800) log-mel of the newest 8 s."""
        n = SAMPLE_RATE * WINDOW_S
        x = np.asarray(pcm16k, np.float32)[-n:]
        if x.size < n:
            x = np.concatenate([np.zeros(n - x.size, np.float32), x])
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        return self._features(x, padding=0)[:, :WINDOW_S * 100].astype(np.float32)

    def complete(self, pcm16k: np.ndarray) -> float:
        feats = self.features(pcm16k)[None]
        with self._lock:
            out = self._session.run(None, {"input_features": feats})
        return float(np.asarray(out[0]).reshape(-1)[0])
