"""The backend seam: the few primitives the views call, whatever does the inference.

The views (chat, half-duplex, duplex) own request validation and conversation bookkeeping; a
backend owns the models. The embedded CPU cascade (``embedded.py``) is one implementation; an
end-to-end omni model (MiniCPM-o on a GPU) is meant to be another, behind the same methods:

- ``encode``        read one message's items (text, image, audio, video) into what the model sees
- ``prefill``       make the model's context hold a conversation, reusing the cached prefix
- ``reply``         stream the answer as text deltas and 24 kHz audio chunks (a ``ReplyStream``)
- ``segmenter``     streaming speech start/end detection for half-duplex turn taking
- ``duplex``        a per-session full-duplex policy: ``unit(chunk, frames)`` → listen or speak
- ``reset`` / ``cache_length`` and the voice primitives

Nothing here knows about WebSockets or about which view is active.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np

from ..api import (Delta, DuplexSettings, GenerationParams, Message, UnitResult, VadEvent, VadSettings,
                   Voice)


@dataclass
class EncodedMessage:
    """One message as the backend's model will read it (for the embedded cascade: plain text)."""
    role: str
    text: str
    transcript: str = ""       # what the message's audio said, if it had audio


@dataclass
class PrefillStats:
    input_tokens: int          # tokens in the context after the prefill
    evaluated: int             # tokens that had to be computed now (the rest came from the cache)
    prompt: str = ""           # the rendered prompt (diagnostics, tests)


class ReplyStream(Protocol):
    """An answer being produced in the background: text tokens and speech audio."""

    text: str                  # all text so far
    n_tokens: int

    def __iter__(self) -> Iterator[Delta]: ...       # blocks; ends when the reply is complete or cancelled
    def take(self, max_tokens: int, max_samples: int) -> tuple[str, int, Optional[np.ndarray]]: ...
    # non-blocking: up to max_tokens tokens of text and max_samples of audio produced so far
    @property
    def done(self) -> bool: ...                      # nothing more will come and nothing is left to take
    def cancel(self) -> None: ...                    # stop now, drop what is buffered


class Segmenter(Protocol):
    def feed(self, pcm16k: np.ndarray) -> list[VadEvent]: ...
    def reset(self) -> None: ...


class DuplexSession(Protocol):
    def prepare(self) -> int: ...                    # evaluate the system prompt; returns its tokens
    def unit(self, audio: np.ndarray, frames: Optional[list[bytes]], force_listen: bool) -> UnitResult: ...
    def close(self) -> None: ...                     # stop background work, free buffers
    def kv_cache_length(self) -> int: ...


class Backend(Protocol):
    name: str
    n_ctx: int

    def encode(self, message: Message, stop: Optional[threading.Event] = None) -> EncodedMessage: ...
    def system_prompt(self, system: str, *, spoken: bool = False, media: bool = False) -> str: ...
    # the user's system prompt plus what the model must know (speakable replies, how media arrives)
    def count_tokens(self, messages: Sequence[dict]) -> int: ...
    def prefill(self, messages: Sequence[dict]) -> PrefillStats: ...
    # messages: [{"role", "content": text}] from ``encode``; ends with the turn to answer
    def reply(self, params: GenerationParams, *, speak: bool, voice: Optional[Voice],
              stop: Optional[threading.Event] = None) -> ReplyStream: ...
    def append_reply(self, text: str) -> None: ...   # the reply became history (cache already holds it)
    def prefill_next_turn(self, messages: Sequence[dict]) -> int: ...   # idle time: evaluate the next turn's fixed start
    def segmenter(self, settings: VadSettings) -> Segmenter: ...
    def duplex(self, system_prompt: str, voice: Optional[Voice], config: DuplexSettings) -> DuplexSession: ...
    def transcribe(self, pcm16k: np.ndarray) -> str: ...
    def describe_image(self, data: bytes) -> str: ...
    def voice_from_reference(self, pcm16k: np.ndarray) -> Voice: ...
    def default_voice(self) -> Voice: ...
    def cache_length(self) -> int: ...
    def reset(self) -> None: ...
