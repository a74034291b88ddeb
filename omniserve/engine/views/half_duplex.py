"""Half-duplex voice: server VAD cuts the user's speech into turns; each turn is answered aloud.

The conversation lives here (a sliding window); the LLM cache holds its rendering, so a new turn
evaluates only its own tokens (plus the previous reply's closing tokens), never the whole history.

Speculation: the VAD needs ``min_silence_duration_ms`` (800 ms by default) of silence to call
the end of a turn, and that wait is dead time. So once the user has been quiet for
``SPECULATE_MS`` we already transcribe, prefill and start the reply (LLM + TTS) in the
background on a copy of the conversation. If the user goes on speaking it is thrown away (the
LLM cache simply rolls back on the next prefill); if the endpoint comes, ``prefill`` adopts it and
``generate`` streams audio that is often ready already.
"""
from __future__ import annotations

import collections
import copy
import threading
from typing import Iterator, Optional

import numpy as np

from ..api import ChatResult, Delta, EngineInputError, GenerationParams, PrefillResult, VadEvent, VadSettings, Voice
from ..conversation import Conversation
from ..media import check_audio
from ..params import DEFAULT_SYSTEM, check_generation, check_vad
from .common import collect

SPECULATE_MS = 96           # silence after speech that starts the speculative reply
PREROLL_CHUNKS = 3          # audio kept from before speech_start (the segmenter pads inside it)


class _Speculation:
    """A reply started before the VAD endpoint, on a copy of the conversation."""

    def __init__(self, view: "HalfDuplexSession", audio: np.ndarray, speech_ms: float) -> None:
        self.speech_ms = speech_ms
        self.conv = copy.deepcopy(view._conv)
        self.heard = ""
        self.stats = None
        self.ready = threading.Event()
        b = view._b

        def before() -> bool:
            try:
                self.heard = b.transcribe(audio, fast=view.asr_fast).strip()
                if not self.heard:
                    return False
                self.conv.add("user", self.heard)
                self.conv.fit(b.count_tokens, b.n_ctx - int(view._generation.max_new_tokens) - 64)
                self.stats = b.prefill(self.conv.messages())
                return True
            finally:
                self.ready.set()

        self.reply = b.reply(view._generation, speak=view._tts, voice=view._voice, before=before)

    def cancel(self) -> None:
        self.reply.cancel(wait=0)     # never block the caller on ASR; the LLM lock orders the rest


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
        self._reply = None                    # the reply generate() will stream (speculative or not)
        self._spec: Optional[_Speculation] = None
        self._rec: list[np.ndarray] = []      # audio of the current speech (plus pre-roll)
        self._preroll: collections.deque = collections.deque(maxlen=PREROLL_CHUNKS)
        self.speculation_hits = 0
        # Turns are transcribed with the fast ASR (Whisper tiny.en): it halves the end of speech →
        # first audio latency (bench/engine.py). False = use engine.asr_model (Whisper base).
        self.asr_fast = True
        self._generating = False

    def prepare(self, system_prompt: str, *, voice: Optional[Voice] = None, generation: GenerationParams = GenerationParams(),
                tts: bool = True, vad: VadSettings = VadSettings()) -> int:
        """Start a session: evaluate the system prompt; returns its length in tokens."""
        check_generation(generation)
        check_vad(vad)
        system = (system_prompt or "").strip() or DEFAULT_SYSTEM
        self._conv = Conversation(self._b.system_prompt(system, spoken=bool(tts)))
        self._segmenter = self._b.segmenter(vad)
        self._voice, self._generation, self._tts = voice, generation, bool(tts)
        self._drop_speculation()
        self.speculation_hits = 0
        self._rec, self._ready, self._reply = [], False, None
        self._preroll.clear()
        self.last_result = None
        return self._b.prefill(self._conv.messages()).input_tokens

    def _session(self) -> Conversation:
        if self._conv is None:
            raise EngineInputError("prepare the half-duplex session first")
        return self._conv

    def feed(self, pcm16k: np.ndarray) -> list[VadEvent]:
        self._session()
        pcm = check_audio(pcm16k, what="audio chunk", max_seconds=30.0)
        seg = self._segmenter
        events = seg.feed(pcm)
        for e in events:
            if e.kind == "speech_start":
                self._rec = list(self._preroll)
                self._drop_speculation()
        if seg.speaking or any(e.kind == "speech_end" for e in events):
            self._rec.append(pcm)
        else:
            self._preroll.append(pcm)
        if any(e.kind == "speech_end" for e in events):
            self._rec = []
            if seg.speaking:                      # cut at max length and still speaking: start over
                self._drop_speculation()
        elif seg.speaking:
            spec = self._spec
            if spec is not None and seg.speech_ms > spec.speech_ms + 40:
                self._drop_speculation()          # the user went on speaking
            elif spec is None and seg.silence_ms >= SPECULATE_MS and self._rec and not (self._ready or self._generating):
                self._spec = _Speculation(self, np.concatenate(self._rec), seg.speech_ms)
        return events

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            self._spec.cancel()
            self._spec = None

    def prefill(self, speech16k: np.ndarray, stop: Optional[threading.Event] = None) -> PrefillResult:
        """Transcribe the user's turn, add it to the conversation, evaluate only the new tokens."""
        conv = self._session()
        pcm = check_audio(speech16k, what="speech segment", max_seconds=120.0)
        if self._reply is not None:               # a prefilled turn never generated: drop it
            self._reply.cancel()
            self._reply = None
        spec, self._spec = self._spec, None
        if spec is not None:
            while not spec.ready.wait(0.05) and spec.reply.producing:
                pass
            if spec.stats is not None and spec.reply.error is None:
                self._conv = spec.conv
                self._reply = spec.reply
                self.speculation_hits += 1
                return self._prefilled(spec.stats, spec.heard)
            spec.cancel()
        heard = self._b.transcribe(pcm, fast=self.asr_fast).strip()
        if not heard:
            raise EngineInputError("no words were recognized in this speech segment")
        conv.add("user", heard)
        budget = self._b.n_ctx - int(self._generation.max_new_tokens) - 64
        conv.fit(self._b.count_tokens, budget)
        return self._prefilled(self._b.prefill(conv.messages()), heard)

    def _prefilled(self, stats, heard: str) -> PrefillResult:
        self.last_prefill_evaluated = stats.evaluated
        self.last_prompt_tokens = stats.input_tokens
        self._ready = True
        return PrefillResult(input_tokens=stats.input_tokens, transcript=heard)

    def generate(self, stop: Optional[threading.Event] = None) -> Iterator[Delta]:
        conv = self._session()
        if not self._ready:
            raise EngineInputError("call prefill with the user's speech before generate")
        self._ready = False
        reply, self._reply = self._reply, None
        if reply is None:
            reply = self._b.reply(self._generation, speak=self._tts, voice=self._voice)
        texts: list[str] = []
        audio: list[np.ndarray] = []
        self._generating = True
        try:
            yield from collect(reply, stop, texts, audio)
        finally:
            self._generating = False
            reply.cancel()
            text = "".join(texts)
            conv.add("assistant", text.strip() or "…")
            self._b.append_reply(text)
            if not self._ready and self._spec is None:
                self._b.prefill_next_turn(conv.messages())
            self.last_result = ChatResult(text=text, audio=np.concatenate(audio) if audio else None,
                                          generated_tokens=reply.n_tokens, input_tokens=self.last_prompt_tokens,
                                          stopped=bool(stop is not None and stop.is_set()))

    def history(self) -> list[dict]:
        return self._session().messages()

    def reset(self) -> None:
        """Forget the session (conversation, VAD state); the loaded models stay."""
        self._drop_speculation()
        if self._reply is not None:
            self._reply.cancel()
            self._reply = None
        self._rec = []
        self._preroll.clear()
        self._conv = None
        self._segmenter = None
        self._ready = False
        self.last_result = None

    def kv_cache_length(self) -> int:
        return self._b.cache_length()
