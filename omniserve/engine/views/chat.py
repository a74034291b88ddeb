"""Turn-based chat: the client sends the whole history each request; we answer the last turn.

The LLM cache keeps the previous request's prompt + reply, so a follow-up request (same history
plus one turn) only evaluates its new tokens. ``cached_prefix_hashes`` names that history in the
gateway's affinity hash chain so the next request is routed back here.
"""
from __future__ import annotations

import base64
import threading
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from ...protocol.affinity import prefix_hashes
from ..api import (Audio, ChatResult, Delta, EngineInputError, GenerationParams, Image, Message, PrefillResult,
                   Text, Video, Voice)
from ..params import DEFAULT_SYSTEM, check_generation
from .common import collect


class ChatSession:
    """``api.ChatView``."""

    def __init__(self, backend) -> None:
        self._b = backend
        self.last_result: Optional[ChatResult] = None
        self.last_prompt = ""                 # the rendered prompt of the last prefill (diagnostics, tests)
        self.last_prefill_evaluated = 0       # tokens computed by the last prefill (the rest was cached)
        self._ready = False
        self._tts = False
        self._voice: Optional[Voice] = None
        self._generation = GenerationParams()
        self._input_tokens = 0
        self._wire: list[Any] = []
        self._hashes: list[str] = []

    def reset(self) -> None:
        """Per-view state only; the LLM cache stays (it is what makes the next request cheap)."""
        self._ready = False
        self.last_result = None

    def prefill(self, messages: Sequence[Message], *, tts: bool = False, voice: Optional[Voice] = None,
                generation: GenerationParams = GenerationParams(), stop: Optional[threading.Event] = None,
                wire_messages: Optional[Sequence[Any]] = None) -> PrefillResult:
        """Read every item of ``messages`` and fill the LLM context up to the assistant's turn.

        ``wire_messages`` (optional) are the request's messages as sent on the wire; when given the
        affinity hash chain is computed from them, so it matches what the gateway computes.
        """
        if not messages:
            raise EngineInputError("messages is empty")
        check_generation(generation)
        if messages[-1].role == "assistant":
            raise EngineInputError("the last message must be from the user (there is nothing to answer)")
        encoded = [self._b.encode(m, stop) for m in messages]
        convo = [{"role": e.role, "content": e.text} for e in encoded]
        media = any(isinstance(i, (Image, Video)) for m in messages for i in m.items)
        if convo[0]["role"] == "system":
            convo[0] = {"role": "system", "content": self._b.system_prompt(convo[0]["content"], spoken=tts, media=media)}
        else:
            convo.insert(0, {"role": "system", "content": self._b.system_prompt(DEFAULT_SYSTEM, spoken=tts, media=media)})
        budget = self._b.n_ctx - int(generation.max_new_tokens) - 8
        if self._b.count_tokens(convo) > budget:
            raise EngineInputError(f"the conversation is too long for the model's context ({self._b.n_ctx} tokens "
                                   f"including {generation.max_new_tokens} new tokens); shorten the history")
        stats = self._b.prefill(convo)
        self.last_prompt = stats.prompt
        self.last_prefill_evaluated = stats.evaluated
        self._input_tokens = stats.input_tokens
        self._tts, self._voice, self._generation = bool(tts), voice, generation
        self._wire = list(wire_messages) if wire_messages is not None else [_wire(m) for m in messages]
        self._hashes = []
        self._ready = True
        self.last_result = None
        transcript = " ".join(e.transcript for e in encoded if e.transcript and e.role == "user")
        return PrefillResult(input_tokens=stats.input_tokens, transcript=transcript)

    def generate(self, streaming: bool = True, stop: Optional[threading.Event] = None) -> Union[Iterator[Delta], ChatResult]:
        if not self._ready:
            raise EngineInputError("call prefill before generate")
        self._ready = False
        reply = self._b.reply(self._generation, speak=self._tts, voice=self._voice)
        if streaming:
            return self._stream(reply, stop)
        for _ in self._stream(reply, stop):
            pass
        assert self.last_result is not None
        return self.last_result

    def _stream(self, reply, stop: Optional[threading.Event]) -> Iterator[Delta]:
        texts: list[str] = []
        audio: list[np.ndarray] = []
        try:
            for d in collect(reply, stop, texts, audio):
                yield d
        finally:
            reply.cancel()   # a consumer that stops early must not leave threads running
            stopped = bool(stop is not None and stop.is_set())
            text = "".join(texts)
            self.last_result = ChatResult(text=text, audio=np.concatenate(audio) if audio else None,
                                          generated_tokens=reply.n_tokens, input_tokens=self._input_tokens,
                                          stopped=stopped)
            self._hashes = prefix_hashes([*self._wire, {"role": "assistant", "content": text}])

    def cached_prefix_hash(self) -> Optional[str]:
        return self._hashes[-1] if self._hashes else None

    def cached_prefix_hashes(self) -> list[str]:
        """The whole chain (one per message of the cached history, the reply included)."""
        return list(self._hashes)


def _wire(m: Message) -> dict:
    """A Message as a protocol message dict (what a client would send), for the affinity hash."""
    items = []
    for it in m.items:
        if isinstance(it, Text):
            items.append({"type": "text", "text": it.text})
        elif isinstance(it, Image):
            items.append({"type": "image", "data": base64.b64encode(it.data).decode()})
        elif isinstance(it, Audio):
            items.append({"type": "audio", "data": base64.b64encode(np.asarray(it.pcm, "<f4").tobytes()).decode(),
                          "sample_rate": it.sample_rate})
        elif isinstance(it, Video):
            items.append({"type": "video", "data": base64.b64encode(it.data).decode(), "stack_frames": it.stack_frames})
    if len(items) == 1 and items[0]["type"] == "text":
        return {"role": m.role, "content": items[0]["text"]}
    return {"role": m.role, "content": items}
