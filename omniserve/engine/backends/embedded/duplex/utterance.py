"""The user's utterance, found by VAD: every 512-sample window of the units is scored once.

An utterance opens after ``START_MS`` of speech (Silero hysteresis: a window ≥ ``SPEECH_P``
counts as speech, one < ``SILENCE_P`` resets the run), and takes the pre-roll with it so the
first syllable is not cut. While it is open, voiced and trailing-silence time are counted (the
reply policy reads them); it is capped at ``MAX_UTTERANCE_S`` (the oldest windows go) and is
closed by the session when the turn ends.
"""
from __future__ import annotations

import collections

import numpy as np

from ..components.base import VoiceActivityModel
from .tuning import _MAX_UTT_WINDOWS, MAX_UTTERANCE_S, PREROLL_MS, SILENCE_P, SPEECH_P, START_MS, WINDOW, WINDOW_MS


class UtteranceTracker:
    def __init__(self, vad: VoiceActivityModel) -> None:
        self.vad = vad
        self._pending = np.zeros(0, np.float32)       # samples short of a whole window
        self.preroll: collections.deque[np.ndarray] = collections.deque(maxlen=int(PREROLL_MS / WINDOW_MS))
        self.windows: list[np.ndarray] = []          # the open utterance (pre-roll included)
        self.open = False
        self.serial = 0                               # utterances opened so far
        self.run_ms = 0.0                             # the current run of speech
        self.voiced_ms = 0.0
        self.silence_ms = 0.0                         # silence since the utterance's last speech

    def scan(self, pcm: np.ndarray) -> bool:
        """VAD over the new audio at the native window; True when an utterance opened in it."""
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = buf.size - buf.size % WINDOW
        self._pending = buf[n:].copy()
        opened = False
        for i in range(0, n, WINDOW):
            w = buf[i:i + WINDOW]
            p = self.vad.prob(w)
            if p >= SPEECH_P:
                self.run_ms += WINDOW_MS
            elif p < SILENCE_P:
                self.run_ms = 0.0
            if not self.open:
                self.preroll.append(w)
                if self.run_ms >= START_MS:
                    self._open()
                    opened = True
            else:
                self.windows.append(w)
                if len(self.windows) > _MAX_UTT_WINDOWS:     # forced listening through a monologue
                    del self.windows[0]
                if p >= SPEECH_P:
                    self.silence_ms = 0.0
                    self.voiced_ms += WINDOW_MS
                elif p < SILENCE_P:
                    self.silence_ms += WINDOW_MS
        return opened

    def _open(self) -> None:
        self.open = True
        self.serial += 1
        self.windows = list(self.preroll)
        self.preroll.clear()
        self.voiced_ms = self.run_ms
        self.silence_ms = 0.0

    @property
    def at_cap(self) -> bool:
        """The utterance is as long as one may be: answer it now."""
        return len(self.windows) * WINDOW_MS >= MAX_UTTERANCE_S * 1000

    def audio(self) -> np.ndarray:
        return np.concatenate(self.windows) if self.windows else np.zeros(0, np.float32)

    def close(self) -> np.ndarray:
        """End the utterance; returns its audio."""
        audio = self.audio()
        self.open = False
        self.windows = []
        self.run_ms = 0.0
        return audio

    def clear(self) -> None:
        self.windows.clear()
        self.preroll.clear()
