"""The embedded backend: the CPU cascade as a ``backends.base.Backend``.

Each mode is one module of this package: ``chat.py`` (a reply to a chat history),
``voice_session.py`` (half-duplex turns with speculation), ``duplex/`` (listen or speak
per unit); realtime sessions use ``chat`` with ``listener`` (the VAD segmenter) and
``transcribe`` (the fast ASR that voice turns use). ``cascade.py`` holds what they share; the LLM stage is in process or any
OpenAI-compatible server (``lm.py``, ``engine.llm.kind``).
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional, Sequence

import numpy as np

from omniserve.config import EngineSettings
from omniserve.engine.api import (Capabilities, DuplexSettings, Event, GenerationParams, Message, Tool, ToolChoice,
                                  VadSettings, Voice)

from .cascade import Cascade, Parts, load_parts
from .chat import chat_reply
from .components.vad import VadSegmenter
from .duplex import EmbeddedDuplex
from .voice_session import TURN_ASR_FAST, EmbeddedVoiceSession


class EmbeddedBackend:
    name = "embedded"
    # One session at a time, whichever LLM: the cascade's VAD, Smart Turn, Whisper, Piper/Kokoro and
    # vision models run in this process on the worker's one engine thread, and a session's state
    # (the conversation, the in-process LLM's KV cache, speculation, duplex turn state) lives in the
    # one view the processor has active. With ``llm.kind = openai`` only the text generation moves
    # to the server; a second session would still share (and reset) that state.
    capabilities = Capabilities(chat=True, voice=True, duplex=True, camera=True,
                                media=("text", "image", "audio", "video"), voice_cloning=False, max_sessions=1)

    def __init__(self, settings: Optional[EngineSettings] = None, parts: Optional[Parts] = None) -> None:
        self.settings = settings or EngineSettings()
        self.cascade = Cascade(parts if parts is not None else load_parts(self.settings))

    def chat(self, messages: Sequence[Message], params: GenerationParams, voice: Optional[Voice],
             stop: threading.Event, tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]:
        return chat_reply(self.cascade, messages, params, voice, stop, tools, tool_choice)

    def voice_session(self, prompt: str, vad: VadSettings, params: GenerationParams,
                      voice: Optional[Voice]) -> EmbeddedVoiceSession:
        return EmbeddedVoiceSession(self.cascade, prompt, vad, params, voice)

    def duplex(self, prompt: str, voice: Optional[Voice], config: DuplexSettings) -> EmbeddedDuplex:
        return EmbeddedDuplex(self.cascade, prompt, voice or self.cascade.voice(None), config)

    def voice(self, reference_pcm: Optional[np.ndarray]) -> Voice:
        return self.cascade.voice(reference_pcm)

    def cache_length(self) -> int:
        return self.cascade.cache_length()

    def listener(self, vad: VadSettings) -> VadSegmenter:
        return self.cascade.segmenter(vad)

    def transcribe(self, pcm16k: np.ndarray, language: str = "", instructions: str = "") -> str:
        lang = self.cascade.language(language, instructions)
        return self.cascade.transcribe(pcm16k, fast=TURN_ASR_FAST, language=lang).strip()
