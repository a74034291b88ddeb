"""Half-duplex voice: server VAD cuts the user's speech into turns; each turn is answered aloud.

The conversation lives here (a sliding window); the LLM cache holds its rendering, so a new turn
evaluates only its own tokens (plus the previous reply's closing tokens), never the whole history.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional

import numpy as np

from ..api import ChatResult, Delta, EngineInputError, GenerationParams, PrefillResult, VadEvent, VadSettings, Voice
from ..conversation import Conversation
from ..media import check_audio
from ..params import DEFAULT_SYSTEM, check_generation, check_vad
from .common import collect


class HalfDuplexSession:
    """``api.HalfDuplexView``."""

    def __init__(self, backend) -> None:
        self._b = backend
        self.last_result: Optional[ChatResult] = None
        self.last_prefill_evaluated = 0       # tokens computed by the last prefill (the rest was cached)
        self.last_prompt_tokens = 0
        self._conv: Optional[Conversation] = None
        self._segmenter = None
        self._voice: Optional[Voice] = None
        self._generation = GenerationParams()
        self._tts = True
        self._ready = False

    def prepare(self, system_prompt: str, *, voice: Optional[Voice] = None, generation: GenerationParams = GenerationParams(),
                tts: bool = True, vad: VadSettings = VadSettings()) -> int:
        """Start a session: evaluate the system prompt; returns its length in tokens."""
        check_generation(generation)
        check_vad(vad)
        system = (system_prompt or "").strip() or DEFAULT_SYSTEM
        self._conv = Conversation(self._b.spoken_style(system) if tts else system)
        self._segmenter = self._b.segmenter(vad)
        self._voice, self._generation, self._tts = voice, generation, bool(tts)
        self._ready = False
        self.last_result = None
        return self._b.prefill(self._conv.messages()).input_tokens

    def _session(self) -> Conversation:
        if self._conv is None:
            raise EngineInputError("prepare the half-duplex session first")
        return self._conv

    def feed(self, pcm16k: np.ndarray) -> list[VadEvent]:
        self._session()
        return self._segmenter.feed(check_audio(pcm16k, what="audio chunk", max_seconds=30.0))

    def prefill(self, speech16k: np.ndarray, stop: Optional[threading.Event] = None) -> PrefillResult:
        """Transcribe the user's turn, add it to the conversation, evaluate only the new tokens."""
        conv = self._session()
        pcm = check_audio(speech16k, what="speech segment", max_seconds=120.0)
        heard = self._b.transcribe(pcm).strip()
        if not heard:
            raise EngineInputError("no words were recognized in this speech segment")
        conv.add("user", heard)
        budget = self._b.n_ctx - int(self._generation.max_new_tokens) - 64
        conv.fit(self._b.count_tokens, budget)
        stats = self._b.prefill(conv.messages())
        self.last_prefill_evaluated = stats.evaluated
        self.last_prompt_tokens = stats.input_tokens
        self._ready = True
        return PrefillResult(input_tokens=stats.input_tokens, transcript=heard)

    def generate(self, stop: Optional[threading.Event] = None) -> Iterator[Delta]:
        conv = self._session()
        if not self._ready:
            raise EngineInputError("call prefill with the user's speech before generate")
        self._ready = False
        reply = self._b.reply(self._generation, speak=self._tts, voice=self._voice)
        texts: list[str] = []
        audio: list[np.ndarray] = []
        try:
            yield from collect(reply, stop, texts, audio)
        finally:
            reply.cancel()
            text = "".join(texts)
            conv.add("assistant", text.strip() or "…")
            self._b.append_reply(text)
            self.last_result = ChatResult(text=text, audio=np.concatenate(audio) if audio else None,
                                          generated_tokens=reply.n_tokens, input_tokens=self.last_prompt_tokens,
                                          stopped=bool(stop is not None and stop.is_set()))

    def history(self) -> list[dict]:
        return self._session().messages()

    def reset(self) -> None:
        """Forget the session (conversation, VAD state); the loaded models stay."""
        self._conv = None
        self._segmenter = None
        self._ready = False
        self.last_result = None

    def kv_cache_length(self) -> int:
        return self._b.cache_length()
