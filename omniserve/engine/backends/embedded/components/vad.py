"""Voice activity: the Silero VAD ONNX model run with onnxruntime (no torch), and a streaming
segmenter that turns a microphone stream of any chunk size into ``SpeechStarted`` /
``SpeechEnded`` events.

The model is recurrent: each 512-sample window (32 ms at 16 kHz) is scored together with the
last 64 samples of the previous window (its "context") and a (2, 1, 128) state carried across
calls — the same protocol as silero's own ``OnnxWrapper``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np

from omniserve.engine.api import EngineInputError, SpeechEnded, SpeechStarted
from omniserve.knobs import VAD as _VAD          # the one statement of the VAD defaults

from .base import EndOfTurnModel, VoiceActivityModel
from .turn import COMPLETE as TURN_COMPLETE

TURN_RECHECK_MS = 400       # a pause the end-of-turn model heard unfinished is heard again this often

VadEvent = Union[SpeechStarted, SpeechEnded]

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64


class SileroVAD:
    """``base.VoiceActivityModel``. One instance holds one stream's state: use one per session
    (the ONNX session is shared when built with ``share_session_with``)."""

    sample_rate = SAMPLE_RATE
    window = WINDOW

    def __init__(self, model_path: Optional[str] = None, *, share_session_with: Optional["SileroVAD"] = None) -> None:
        self._session: Any
        if share_session_with is not None:
            self._session = share_session_with._session
        else:
            import onnxruntime as ort

            from .. import models

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1   # a 32 ms window takes well under 1 ms; threads only add overhead
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(model_path or models.silero_onnx_path()), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def fork(self) -> "SileroVAD":
        """A fresh stream state over the same loaded model."""
        return SileroVAD(share_session_with=self)

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)

    def prob(self, window: np.ndarray) -> float:
        """Speech probability of the next 512-sample window of the stream."""
        x = np.asarray(window, np.float32).reshape(1, -1)
        if x.shape[1] != WINDOW:
            raise EngineInputError(f"VAD window must be {WINDOW} samples, got {x.shape[1]}")
        if not np.isfinite(x).all():
            raise EngineInputError("audio contains NaN or infinite samples")
        x = np.concatenate([self._context, x], axis=1)
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])

    def probs(self, pcm: np.ndarray) -> np.ndarray:
        """Probabilities of every window of a whole clip (state reset first; tail zero-padded)."""
        self.reset()
        pcm = np.asarray(pcm, np.float32)
        pad = (-pcm.size) % WINDOW
        if pad:
            pcm = np.concatenate([pcm, np.zeros(pad, np.float32)])
        return np.array([self.prob(pcm[i:i + WINDOW]) for i in range(0, pcm.size, WINDOW)], np.float32)


class VadSegmenter:
    """Streaming speech segmentation with silero's hysteresis.

    Speech starts when a window's probability reaches ``threshold`` and has lasted
    ``min_speech_duration_ms`` (shorter blips are dropped); it ends after
    ``min_silence_duration_ms`` of windows below ``threshold - 0.15``. The segment handed out
    with ``SpeechEnded`` is padded by ``speech_pad_ms`` on both sides. Segments longer than
    ``max_speech_s`` are cut there (a ``SpeechEnded`` followed by a new ``SpeechStarted``).
    """

    def __init__(self, model: VoiceActivityModel, threshold: float = _VAD.threshold.default,
                 min_speech_duration_ms: int = _VAD.min_speech_duration_ms.default,
                 min_silence_duration_ms: int = _VAD.min_silence_duration_ms.default,
                 speech_pad_ms: int = _VAD.speech_pad_ms.default, max_speech_s: float = 60.0,
                 end_of_turn: Optional[EndOfTurnModel] = None, turn_check_ms: Optional[int] = None,
                 turn_max_silence_ms: int = 1600) -> None:
        if not 0.0 < threshold < 1.0:
            raise EngineInputError(f"VAD threshold must be between 0 and 1, got {threshold}")
        self.model = model
        self.threshold = float(threshold)
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_speech = int(min_speech_duration_ms * SAMPLE_RATE / 1000)
        self.min_silence = int(min_silence_duration_ms * SAMPLE_RATE / 1000)
        self.pad = int(speech_pad_ms * SAMPLE_RATE / 1000)
        self.max_speech = int(max_speech_s * SAMPLE_RATE)
        # semantic end of turn: after ``turn_check_ms`` of silence (None: ``min_silence_duration_ms``)
        # the model hears the turn; complete ends it there, incomplete waits up to
        # ``turn_max_silence_ms`` (never less than min_silence). With the default check the model can
        # only lengthen a pause; an earlier check also ends finished turns sooner ("eager").
        self.end_of_turn = end_of_turn
        check_ms = min_silence_duration_ms if turn_check_ms is None else min(turn_check_ms, min_silence_duration_ms)
        self.turn_check = int(check_ms * SAMPLE_RATE / 1000)
        self.turn_cap = int(max(turn_max_silence_ms, min_silence_duration_ms) * SAMPLE_RATE / 1000)
        self.turn_recheck = int(TURN_RECHECK_MS * SAMPLE_RATE / 1000)   # a "not yet" is asked again after this
        self.turn_checks = 0                       # model calls so far (diagnostics, tests)
        self.last_turn_p: Optional[float] = None   # the last call's P(complete)
        # a second judge, from the words (``unfinished.sounds_unfinished`` on the turn's transcript,
        # asked by the session that has one): True holds a pause the timer or the model would
        # end, up to ``turn_cap``; it can only lengthen a pause
        self.hold: Optional[Callable[[], bool]] = None
        self.holds = 0                             # pauses held by it (diagnostics, tests)
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self._pending = np.zeros(0, np.float32)   # samples not yet forming a whole window
        self._pos = 0                              # samples scored so far
        self._audio: list[np.ndarray] = []         # kept audio, starting at sample _audio_start
        self._audio_start = 0
        self._start: Optional[int] = None          # first sample of the current (candidate) speech
        self._temp_end: Optional[int] = None       # where the current silence began
        self._last_speech_end = 0
        self.speaking = False                      # SpeechStarted emitted, SpeechEnded not yet
        self.last_prob = 0.0
        self.last_segment_ms: Optional[tuple[float, float]] = None   # (start, end) of the last padded segment in the stream
        self._held_at: Optional[int] = None        # the last pause ``hold`` lengthened
        self._asked_at: Optional[int] = None       # the pause (its first silent sample) the model heard
        self._asks = 0                             # how often it was asked about that pause
        self._complete = False

    # ---------------------------------------------------------------- state
    @property
    def silence_ms(self) -> float:
        """Trailing silence so far (in speech: since the last speech window; idle: since the last segment)."""
        if self._start is not None:
            return 0.0 if self._temp_end is None else (self._pos - self._temp_end) * 1000 / SAMPLE_RATE
        return (self._pos - self._last_speech_end) * 1000 / SAMPLE_RATE

    @property
    def speech_ms(self) -> float:
        """Duration of the current speech so far (0 when idle)."""
        if self._start is None:
            return 0.0
        end = self._temp_end if self._temp_end is not None else self._pos
        return (end - self._start) * 1000 / SAMPLE_RATE

    @property
    def position_ms(self) -> float:
        return self._pos * 1000 / SAMPLE_RATE

    # ---------------------------------------------------------------- streaming
    def feed(self, pcm: np.ndarray) -> list[VadEvent]:
        """Score the new samples (any length) and return the events they complete."""
        from omniserve.engine.checks import check_pcm

        pcm = np.asarray(pcm)
        if pcm.size == 0:
            return []
        check_pcm(pcm, what="audio chunk")
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = buf.size - buf.size % WINDOW
        self._pending = buf[n:].copy()
        events: list[VadEvent] = []
        for i in range(0, n, WINDOW):
            events += self._step(buf[i:i + WINDOW])
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open segment."""
        if self.speaking:
            return [self._end(self._temp_end if self._temp_end is not None else self._pos)]
        self._start = self._temp_end = None
        return []

    def _step(self, window: np.ndarray) -> list[VadEvent]:
        p = self.last_prob = self.model.prob(window)
        start_of_window = self._pos
        self._pos += WINDOW
        self._audio.append(window)
        events: list[VadEvent] = []
        if p >= self.threshold:
            self._temp_end = None
            if self._start is None:
                self._start = start_of_window
        elif p < self.neg_threshold and self._start is not None:
            if self._temp_end is None:
                self._temp_end = start_of_window
            if not self.speaking:
                self._start = self._temp_end = None        # a blip shorter than min_speech: drop it
            elif self._turn_over(self._pos - self._temp_end):
                events.append(self._end(self._temp_end))
        if self._start is not None and not self.speaking:
            end = self._temp_end if self._temp_end is not None else self._pos
            if end - self._start >= self.min_speech:
                self.speaking = True
                events.append(SpeechStarted())
        if self.speaking and self._start is not None and self._pos - self._start >= self.max_speech:
            events.append(self._end(self._pos))
            self._start = self._pos                          # speech continues: a new segment begins
            self.speaking = False
        self._trim()
        return events

    def _turn_over(self, silence: int) -> bool:
        """Whether ``silence`` samples after speech end the turn: the silence timer, or with an
        end-of-turn model its verdict (asked once per pause, at ``turn_check``) — either held while
        ``hold`` says the words are unfinished — and, whatever they say, ``turn_cap``."""
        if silence >= self.turn_cap:
            return True
        if not self._sound_over(silence):
            return False
        if self.hold is not None and self.hold():
            if self._held_at != self._temp_end:
                self._held_at, self.holds = self._temp_end, self.holds + 1
            return False
        return True

    def _sound_over(self, silence: int) -> bool:
        if self.end_of_turn is None:
            return silence >= self.min_silence
        if silence < self.turn_check:
            return False
        due = 1 + (silence - self.turn_check) // self.turn_recheck if self.turn_recheck else 1
        if self._asked_at != self._temp_end:
            self._asked_at, self._asks, self._complete = self._temp_end, 0, False
        if not self._complete and self._asks < due:      # once at the check, then again every recheck
            self._asks = due
            self.turn_checks += 1
            self.last_turn_p = self.end_of_turn.complete(self.current_audio())
            self._complete = self.last_turn_p >= TURN_COMPLETE
        return self._complete

    def current_audio(self) -> np.ndarray:
        """The current speech (from its padded start) up to now; call it while ``speaking``."""
        assert self._start is not None
        a = max(self._start - self.pad, self._audio_start)
        whole = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        return whole[a - self._audio_start:]

    def _end(self, end: int) -> SpeechEnded:
        assert self._start is not None      # only called in speech
        a = max(self._start - self.pad, self._audio_start)
        b = min(end + self.pad, self._pos)
        whole = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        seg = whole[a - self._audio_start:b - self._audio_start].astype(np.float32, copy=True)
        self._last_speech_end = end
        self.last_segment_ms = (a * 1000 / SAMPLE_RATE, b * 1000 / SAMPLE_RATE)
        self._start = self._temp_end = None
        self.speaking = False
        return SpeechEnded(duration_ms=seg.size * 1000 / SAMPLE_RATE, segment=seg)

    def _trim(self) -> None:
        """Keep only what a future segment can need: pre-roll when idle, everything in speech."""
        keep_from = (self._start if self._start is not None else self._pos) - self.pad - WINDOW
        while self._audio and self._audio_start + self._audio[0].size <= keep_from:
            self._audio_start += self._audio.pop(0).size
