"""The assistant's turn: one reply at a time, from its start (speculative or confirmed) until it
is handed out, discarded or cut, and the conversation it writes to.

The reply runs in its own threads (``reply.SpokenReply``): ``before`` takes the user's words (the
caption's when it heard everything, else a final ASR), adds the user turn (with the camera note)
and prefills; ``after`` writes the assistant turn — what was actually handed out when the reply
was cut, nothing (and the user turn removed) when it was discarded — and warms the next turn.
Units ``drain`` it: at most ``max_new_speak_tokens_per_chunk`` tokens and about ``chunk_ms`` of
audio each, ``AUDIO_LEAD_MS`` more on the first unit with audio.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from omniserve.engine.api import (DuplexSettings, EngineBackendError, EngineInputError, GenerationParams, UnitResult,
                                  Voice)

from ..cascade import Cascade
from ..conversation import Conversation
from ..reply import SpokenReply
from .background import Background
from .camera import CameraNotes
from .captions import Captioner
from .tuning import (AUDIO_LEAD_MS, CAPTION_POLL_S, CAPTION_WAIT_S, FINAL_ASR_FAST, FIRST_WORDS, OUT_SAMPLES_PER_MS,
                     REPLY_MAX_TOKENS, TTS_FRAME)

WAIT_POLL_S = 0.005

CONTEXT_SLACK = 64      # tokens kept free besides the reply's when the conversation window slides


@dataclass
class _Attempt:
    user_added: bool = False     # ``before`` wrote the user turn
    answered: bool = False       # ``after`` wrote the assistant turn
    discarded: bool = False      # a speculative start the user talked through


class ReplyTurn:
    def __init__(self, cascade: Cascade, cfg: DuplexSettings, voice: Voice, conv: Conversation, jobs: Background,
                 captions: Captioner, camera: CameraNotes, closed: Callable[[], bool]) -> None:
        self.b = cascade
        self.cfg = cfg
        self.voice = voice
        self.conv = conv
        self.lock = threading.Lock()            # the conversation (written by reply threads)
        self.meter = jobs.meter
        self.captions = captions
        self.camera = camera
        self._closed = closed
        self.params = GenerationParams(REPLY_MAX_TOKENS, cfg.temperature, cfg.top_p, cfg.top_k, cfg.length_penalty)
        self.out_chunk = int(cfg.chunk_ms) * OUT_SAMPLES_PER_MS
        self.reply: Optional[SpokenReply] = None
        self.spec_voiced = 0.0                  # voiced ms of the utterance when the reply started unconfirmed
        self.words = ""                         # the words the current reply answers, once they are known
        self.emitted = False                    # some text or audio was handed out
        self._audio_started = False
        self._attempt = _Attempt()

    def context(self, words: str) -> list[dict]:
        """The messages a reply to ``words`` would read now."""
        with self.lock:
            return [*self.conv.messages(), {"role": "user", "content": words}]

    # ------------------------------------------------------------------ start
    def start(self, audio: np.ndarray, heard: Optional[Future], spec_voiced: Optional[float] = None) -> SpokenReply:
        """Start the reply to the utterance ``audio``; ``heard``: a caption of all its voiced audio;
        ``spec_voiced``: the utterance's voiced ms when this is a speculative start."""
        attempt = _Attempt()
        meter, b = self.meter, self.b

        def transcript() -> str:
            if heard is not None:
                text = ""
                for _ in range(int(CAPTION_WAIT_S / CAPTION_POLL_S)):   # a job dropped at close never answers
                    try:
                        text = heard.result(timeout=CAPTION_POLL_S)
                        break
                    except TimeoutError:
                        if self._closed():
                            return ""
                    except Exception:    # noqa: BLE001 - a failed caption: transcribe afresh
                        break
                if text:
                    return text
            with meter.busy("asr"):
                return b.transcribe(audio, fast=FINAL_ASR_FAST, language=self.cfg.language).strip()

        def before() -> bool:
            words = transcript()
            if self._attempt is attempt:
                self.words = words
            if not words or self._closed():
                return False
            self.captions.set_text(words)
            note = self.camera.note if self.cfg.omni else ""
            with self.lock:
                self.conv.add("user", words + (f" (Camera: {note})" if note else ""))
                attempt.user_added = True
                self.conv.fit(b.count_tokens, b.n_ctx - REPLY_MAX_TOKENS - CONTEXT_SLACK)
                messages = self.conv.messages()
            with meter.busy("llm"):
                b.prefill(messages)
            return True

        def after(reply: SpokenReply) -> None:
            if not attempt.user_added:
                return
            with self.lock:
                if attempt.discarded:        # a speculative start the user talked through: forget it
                    self._forget(attempt)
                else:
                    said = reply.spoken if reply.cancelled else reply.text
                    self.conv.add("assistant", said.strip() or "…")
                    attempt.answered = True
                messages = self.conv.messages()
            if not self._closed():
                with meter.busy("llm"):
                    b.warm_next_turn(messages)

        self._attempt = attempt
        self.words = ""
        self.spec_voiced = spec_voiced or 0.0
        self.emitted = self._audio_started = False
        self.reply = b.reply(self.params, voice=self.voice if self.cfg.generate_audio else None,
                             before=before, after=after, first_words=FIRST_WORDS)
        return self.reply

    # ------------------------------------------------------------------ hand out
    def wait_for_output(self, budget_s: float) -> float:
        """Wait, at most ``budget_s``, until the reply has something new to hand out (audio when
        it speaks, else text) or has ended; returns the seconds waited."""
        reply = self.reply
        t0 = time.perf_counter()
        while reply is not None and reply.producing and not reply.cancelled and not self._has_output(reply):
            if time.perf_counter() - t0 >= budget_s:
                break
            time.sleep(WAIT_POLL_S)
        return time.perf_counter() - t0

    def _has_output(self, reply: SpokenReply) -> bool:
        if self.cfg.generate_audio:
            return reply.buffered_samples() > 0
        return len(reply.text) > len(reply.spoken)

    def drain(self, res: UnitResult) -> bool:
        """Hand this unit's share of the reply out into ``res``; True when the reply has ended
        (``end_of_turn`` is set if any of it was handed out; ``finish`` it then)."""
        reply = self.reply
        assert reply is not None
        want = self.out_chunk + (0 if self._audio_started else AUDIO_LEAD_MS * OUT_SAMPLES_PER_MS)
        text, n, audio = reply.take(int(self.cfg.max_new_speak_tokens_per_chunk),
                                    want if self.cfg.generate_audio else 0)
        res.text, res.n_tokens, res.audio = text, n, audio
        res.n_tts_tokens = 0 if audio is None else audio.size // TTS_FRAME
        self._audio_started = self._audio_started or audio is not None
        self.emitted = self.emitted or bool(text) or audio is not None
        res.is_listen = not self.emitted
        if reply.done:
            res.end_of_turn = self.emitted
            return True
        return False

    def finish(self) -> None:
        """The reply ended; raise what made it fail, if anything did (an input error only ends it)."""
        reply, self.reply = self.reply, None
        if reply is None:
            return
        if isinstance(reply.error, EngineBackendError):
            raise reply.error
        if reply.error is not None and not isinstance(reply.error, EngineInputError):
            raise RuntimeError(f"reply failed: {reply.error}") from reply.error

    # ------------------------------------------------------------------ stop
    def interrupt(self) -> bool:
        """Barge-in: cut the reply now (buffers dropped); True when some of it had been handed out.
        The history keeps what was handed out, also when the reply had finished writing."""
        reply, attempt = self.reply, self._attempt
        self._cancel()           # from here on ``after`` writes only what was handed out
        if reply is not None and attempt is not None:
            with self.lock:
                turns = self.conv.turns
                if attempt.answered and turns and turns[-1].role == "assistant":
                    turns[-1].text = reply.spoken.strip() or "…"
        return self.emitted

    def discard(self) -> None:
        """Drop a speculative reply unheard; its user turn goes with it (and its assistant turn,
        when it had finished writing before the user spoke on)."""
        attempt = self._attempt
        with self.lock:
            attempt.discarded = True
            if attempt.answered:
                self._forget(attempt)
        self._cancel()

    def _forget(self, attempt: _Attempt) -> None:
        """Take the attempt's turns out of the conversation (``lock`` held)."""
        turns = self.conv.turns
        if attempt.answered and turns and turns[-1].role == "assistant":
            turns.pop()
        if attempt.user_added and turns and turns[-1].role == "user":
            turns.pop()
        attempt.answered = attempt.user_added = False

    def _cancel(self) -> None:
        if self.reply is not None:
            self.reply.cancel(wait=0)
            self.reply = None
