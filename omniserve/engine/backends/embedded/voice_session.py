"""Half-duplex voice on the cascade: VAD cuts the user's speech into turns; each is answered.

The conversation is a sliding window (``conversation.py``); with the in-process LLM its
rendering stays in the KV cache, so a new turn evaluates only its own tokens (plus the previous
reply's closing tokens, evaluated while the user listened).

Speculation: the VAD needs ``min_silence_duration_ms`` (800 ms by default) of silence to call
the end of a turn, and that wait is dead time. So once the user has been quiet for
``SPECULATE_MS`` we already transcribe, prefill and start the reply (LLM + TTS) in the background
on a copy of the conversation. If the user goes on speaking it is thrown away (the LLM cache
simply rolls back on the next prefill); if the endpoint comes, the turn adopts it and its audio
is often ready already.
"""
from __future__ import annotations

import collections
import copy
import threading
import time
from typing import Callable, Iterator, Optional

import numpy as np

from omniserve.engine.api import (Delta, EngineInputError, Event, GenerationParams, Prefilled, SpeechEnded, SpeechStarted,
                                  VadSettings, Voice)

from .cascade import Cascade
from .chat import stream_reply
from .conversation import Conversation
from .lm import PrefillStats
from .components.unfinished import sounds_unfinished
from .reply import SpokenReply

SPECULATE_MS = 96           # silence after speech that starts the speculative reply
PREROLL_CHUNKS = 3          # audio kept from before speech_start (the segmenter pads inside it)
CONTEXT_SLACK = 64          # tokens kept free besides max_new_tokens when the window slides
# An English-only session ("en") transcribes its turns with the fast ASR (Whisper tiny.en); False =
# engine.asr_model (Whisper base) for those too. "auto" and "zh" sessions need Whisper base: read
# in a short window it is about as fast (bench/answers.py).
TURN_ASR_FAST = True


class _Speculation:
    """A reply started before the VAD endpoint, on a copy of the conversation."""

    def __init__(self, s: "EmbeddedVoiceSession", audio: np.ndarray, speech_ms: float) -> None:
        self.speech_ms = speech_ms
        self.conv = copy.deepcopy(s.conv)
        self.heard = ""
        self.stats: Optional[PrefillStats] = None
        self.ready = threading.Event()
        c = s.c

        def before() -> bool:
            try:
                self.heard = c.transcribe(audio, fast=TURN_ASR_FAST, language=s.language).strip()
                if not self.heard:
                    return False
                self.conv.add("user", self.heard)
                self.conv.fit(c.count_tokens, s.budget)
                self.stats = c.prefill(self.conv.messages())
                return True
            finally:
                self.ready.set()

        self.reply = c.reply(s.params, voice=s.voice, before=before)

    def adopt(self) -> bool:
        """Wait for its transcript; True when it heard words and prefilled them."""
        while not self.ready.wait(0.05) and self.reply.producing:
            pass
        return self.stats is not None and self.reply.error is None

    def cancel(self) -> None:
        self.reply.cancel(wait=0)     # never block the caller on ASR; the LLM lock orders the rest


class EmbeddedVoiceSession:
    """``backends.base.VoiceSession`` for the cascade."""

    def __init__(self, c: Cascade, prompt: str, vad: VadSettings, params: GenerationParams,
                 voice: Optional[Voice]) -> None:
        self.c = c
        self.params = params
        self.voice = voice
        self.language = c.language(params.language, prompt)
        self.budget = c.n_ctx - int(params.max_new_tokens) - CONTEXT_SLACK
        self.conv = Conversation(c.system_prompt(prompt, spoken=voice is not None))
        self.segmenter = c.segmenter(vad)
        if c.turn_mode(vad) != "silence":
            self.segmenter.hold = self._words_unfinished
        self.speculation_hits = 0
        self._spec: Optional[_Speculation] = None
        self._dropped: list[SpokenReply] = []  # cancelled speculations, until their threads end
        self._rec: list[np.ndarray] = []      # audio of the current speech (plus pre-roll)
        self._preroll: collections.deque[np.ndarray] = collections.deque(maxlen=PREROLL_CHUNKS)

    def prepare(self) -> int:
        return self.c.prefill(self.conv.messages()).input_tokens

    def history(self) -> list[dict]:
        return self.conv.messages()

    # ------------------------------------------------------------------ listening
    def feed(self, pcm16k: np.ndarray, stop: threading.Event) -> Iterator[Event]:
        seg = self.segmenter
        events = seg.feed(pcm16k)
        ended = any(isinstance(e, SpeechEnded) for e in events)
        for e in events:
            if isinstance(e, SpeechStarted):
                self._rec = list(self._preroll)
                self._drop_speculation()
        if seg.speaking or ended:
            self._rec.append(pcm16k)
        else:
            self._preroll.append(pcm16k)
        if ended:
            self._rec = []
            if seg.speaking:                      # cut at max length and still speaking: start over
                self._drop_speculation()
        elif seg.speaking:
            spec = self._spec
            if spec is not None and seg.speech_ms > spec.speech_ms + 40:
                self._drop_speculation()          # the user went on speaking
            elif spec is None and seg.silence_ms >= SPECULATE_MS and self._rec:
                self._spec = _Speculation(self, np.concatenate(self._rec), seg.speech_ms)
        for e in events:
            yield e
            if isinstance(e, SpeechEnded):
                yield from self._turn(e.segment, stop)
                if stop.is_set():
                    return

    def _words_unfinished(self) -> bool:
        """The VAD's second judge: the speculation (started at ``SPECULATE_MS`` of silence) has
        heard the turn, and its words stop where a sentence cannot ("I'd like to go to")."""
        spec = self._spec
        return spec is not None and sounds_unfinished(spec.heard)      # "" until it has heard

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            self._spec.cancel()
            self._forget(self._spec)
            self._spec = None

    def _forget(self, spec: _Speculation) -> None:
        self._dropped = [r for r in self._dropped if r.producing] + [spec.reply]

    @property
    def speculation(self) -> Optional[SpokenReply]:
        """The reply started before the endpoint, while it may still be adopted."""
        return self._spec.reply if self._spec is not None else None

    def wait_idle(self, timeout: float = 5.0, *, lm_waiting: Callable[[], bool] = lambda: False) -> bool:
        """Test seam: block until no speculation works in the background — each has ended or,
        while ``lm_waiting()`` says the language model is waiting (a test's gated LM), has voiced
        everything written so far. True when idle within ``timeout``."""
        deadline = time.monotonic() + timeout
        replies = self._dropped + ([self._spec.reply] if self._spec is not None else [])
        return all(r.wait_quiet(deadline - time.monotonic(), lm_waiting) for r in replies)

    # ------------------------------------------------------------------ answering
    def _turn(self, segment: np.ndarray, stop: threading.Event) -> Iterator[Event]:
        reply: Optional[SpokenReply] = None
        spec, self._spec = self._spec, None
        if spec is not None:
            if spec.adopt():
                self.conv, reply, stats, heard = spec.conv, spec.reply, spec.stats, spec.heard
                self.speculation_hits += 1
            else:
                spec.cancel()
                self._forget(spec)
        if reply is None:
            heard = self.c.transcribe(segment, fast=TURN_ASR_FAST, language=self.language).strip()
            if not heard:
                raise EngineInputError("no words were recognized in this speech segment")
            self.conv.add("user", heard)
            self.conv.fit(self.c.count_tokens, self.budget)
            stats = self.c.prefill(self.conv.messages(), stop)
            if stop.is_set():             # stopped while the turn was read: no reply
                return
            reply = self.c.reply(self.params, voice=self.voice)
        assert stats is not None
        said: list[str] = []
        try:
            yield Prefilled(stats.input_tokens, stats.evaluated, heard, stats.prompt)
            for ev in stream_reply(reply, stop, stats.input_tokens, heard):
                if isinstance(ev, Delta):
                    said.append(ev.text)
                yield ev
        finally:
            reply.cancel(wait=0)          # however the consumer ends, the reply's threads stop
            self.conv.add("assistant", "".join(said).strip() or "…")
            if self._spec is None:
                self.c.warm_next_turn(self.conv.messages())

    def close(self) -> None:
        self._drop_speculation()
        self._dropped = []
        self._rec = []
        self._preroll.clear()
