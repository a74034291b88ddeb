"""The backend seam: a backend is a factory of sessions, one per mode.

    view (validation + lifecycle)            backend (whatever does the inference)
    ChatView.reply(messages, …)        ──▶   chat(messages, params, voice, stop[, tools, tool_choice]) → Iterator[Event]
    HalfDuplexView.prepare / feed      ──▶   voice_session(prompt, vad, params, voice) → VoiceSession
    DuplexView.prepare / unit          ──▶   duplex(prompt, voice, config)         → DuplexSession
    Processor.voice(reference)         ──▶   voice(reference_pcm)                  → Voice
    RealtimeView.listener / transcribe ──▶   listener(vad) → Listener;  transcribe(pcm) → str
    RealtimeView.reply(messages, …)    ──▶   chat(…) as above (the worker keeps the items)

Inputs are typed multimodal messages (``api.Message``: text / image / audio / video items);
outputs are the typed events of ``api`` (``Prefilled``, ``Delta``, ``ReplyDone``, ``SpeechStarted``,
``SpeechEnded``) and, in duplex, one ``UnitResult`` per unit. Everything one backend needs on top
of its models (for the embedded cascade: ASR-to-text, a text conversation, speculation, KV-cache
tricks) lives in that backend's package; adding a backend means one package under ``backends/``
and its name in ``config.ENGINE_BACKENDS`` and ``processor.backend_type``. Nothing here knows
about WebSockets or the wire.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np

from ..api import (Capabilities, DuplexSettings, Event, GenerationParams, Listener, Message, Tool, ToolChoice,
                   UnitResult, VadSettings, Voice)


class VoiceSession(Protocol):
    """Half-duplex: the backend finds the user's turns in a microphone stream and answers each."""

    def prepare(self) -> int: ...                    # ready the system prompt; returns its tokens
    def feed(self, pcm16k: np.ndarray, stop: threading.Event) -> Iterator[Event]: ...
    # ``SpeechStarted``; ``SpeechEnded`` then ``Prefilled``, ``Delta``…, ``ReplyDone`` (a stop ends the reply)
    def close(self) -> None: ...                     # stop background work, free buffers


class DuplexSession(Protocol):
    """Full duplex: one call per unit of microphone audio decides to listen or to speak a piece."""

    def prepare(self) -> int: ...
    def unit(self, audio: np.ndarray, frames: Optional[list[bytes]], force_listen: bool) -> UnitResult: ...
    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def chat(self, messages: Sequence[Message], params: GenerationParams, voice: Optional[Voice],
             stop: threading.Event, tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]: ...
    # ``Prefilled``, ``Delta``…, ``ReplyDone``; speech only when ``voice`` is given; closing the
    # iterator early (or setting ``stop``) cancels the reply; ``tools`` (the view passes them only
    # when there are some): the reply may end in ``ReplyDone.tool_calls``, finish_reason "tool_calls"
    def voice_session(self, prompt: str, vad: VadSettings, params: GenerationParams,
                      voice: Optional[Voice]) -> VoiceSession: ...
    def duplex(self, prompt: str, voice: Optional[Voice], config: DuplexSettings) -> DuplexSession: ...
    def voice(self, reference_pcm: Optional[np.ndarray]) -> Voice: ...
    def listener(self, vad: VadSettings) -> Listener: ...          # voice activity only (realtime turns)
    # one user turn's words; ``language`` as GenerationParams.language, ``instructions`` the
    # session's system prompt (a backend may read its language from it)
    def transcribe(self, pcm16k: np.ndarray, language: str = "", instructions: str = "") -> str: ...
    def cache_length(self) -> int: ...               # tokens the model's context holds now (health, results)
