"""Live captions: the open utterance is transcribed in the background while the user speaks.

Each caption is reported once (``UnitResult.user_text``), and its words are prefilled at once
(the conversation + the words so far, only when no reply holds the model), so the reply's own
prefill is a few tokens at most. A caption that heard every voiced window of the utterance is
also what the reply reads: the final ASR is skipped then (``words_of``).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Optional

from omniserve.engine.api import EngineInputError

from ..cascade import Cascade
from .background import Background
from .tuning import PARTIAL_MAX, PARTIAL_MIN
from .utterance import UtteranceTracker


class Captioner:
    def __init__(self, cascade: Cascade, jobs: Background, context: Callable[[str], list[dict]],
                 model_free: Callable[[], bool], closed: Callable[[], bool], language: str = "en") -> None:
        self.b = cascade
        self.language = language         # the session's (Cascade.transcribe)
        self.jobs = jobs
        self._context = context          # words → the messages a reply to them would read
        self._model_free = model_free    # no reply exists (so none holds the model)
        self._closed = closed
        self._lock = threading.Lock()
        self._job: Optional[Future] = None
        self._words: Optional[Future] = None      # the running/last caption's words, set before its prefill
        self._key: tuple = ()                     # (utterance, voiced ms, whole utterance) it heard
        self._text = ""                           # latest words heard (caption or final)
        self._reported = ""
        self._heard: tuple[int, str] = (0, "")     # (utterance, the latest caption of it)

    def maybe_start(self, utt: UtteranceTracker) -> None:
        """Caption the growing utterance (its last 10 s) when the background thread is free."""
        if self._job is not None and not self._job.done():
            return
        whole = utt.audio()
        audio = whole[-PARTIAL_MAX:]
        if audio.size < PARTIAL_MIN:
            return
        key = (utt.serial, utt.voiced_ms, whole.size <= PARTIAL_MAX)
        words: Future = Future()       # the words alone: a reply waits on these, never on the prefill
        meter = self.jobs.meter

        def job() -> None:
            try:
                with meter.busy("asr"):
                    text = self.b.transcribe(audio, fast=True, language=self.language).strip()
            except BaseException as e:
                words.set_exception(e)
                raise
            words.set_result(text)
            with self._lock:
                self._heard = (key[0], text)
            if not text or self._closed():
                return
            self.set_text(text)
            messages = self._context(text)
            # warm the KV cache with the words heard so far, unless a reply holds the model
            if self._model_free() and self.b.lm.lock.acquire(blocking=False):
                try:
                    with meter.busy("llm"):
                        self.b.prefill(messages)
                except EngineInputError:
                    pass
                finally:
                    self.b.lm.lock.release()

        self._key = key
        self._job = self.jobs.submit(job)
        self._words = words

    def words_of(self, serial: int, voiced_ms: float) -> Optional[Future]:
        """The last caption's words when it heard all of this utterance's voiced audio, else None."""
        return self._words if self._key == (serial, voiced_ms, True) else None

    def heard(self, serial: int) -> str:
        """The latest caption of utterance ``serial`` ("" when none came yet)."""
        with self._lock:
            return self._heard[1] if self._heard[0] == serial else ""

    def set_text(self, text: str) -> None:
        with self._lock:
            self._text = text

    def new_text(self) -> str:
        """The latest words, once: "" when nothing new was heard since the last call."""
        with self._lock:
            if self._text and self._text != self._reported:
                self._reported = self._text
                return self._text
        return ""
