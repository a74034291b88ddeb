"""Realtime (OpenAI Realtime protocol): the worker keeps the conversation's items; the engine
finds the user's turns (``listener``), reads them (``transcribe``) and answers (``reply``).

The view validates what it is handed and otherwise delegates: ``reply`` is the chat view's (the
same checks, tools included), so a backend serves realtime sessions with the calls it already has.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional, Sequence

import numpy as np

from ..api import EngineInputError, Event, GenerationParams, Listener, Message, Tool, ToolChoice, VadSettings, Voice
from ..backends.base import Backend
from ..checks import check_audio, check_vad
from ...knobs import LANGUAGE
from .chat import ChatSessionView

MAX_TURN_S = 120.0     # one user turn to transcribe (a client's commit of more is refused)


class RealtimeSessionView:
    """``api.RealtimeView``."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self._chat = ChatSessionView(backend)

    def listener(self, vad: VadSettings) -> Listener:
        return self._b.listener(check_vad(vad))

    def transcribe(self, pcm16k: np.ndarray, language: str = "", instructions: str = "") -> str:
        if language not in LANGUAGE.choices:
            raise EngineInputError(LANGUAGE.problem("language", language) or "")
        return self._b.transcribe(check_audio(pcm16k, what="input audio", max_seconds=MAX_TURN_S), language, instructions)

    def reply(self, messages: Sequence[Message], *, generation: GenerationParams = GenerationParams(),
              voice: Optional[Voice] = None, stop: Optional[threading.Event] = None,
              tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]:
        return self._chat.reply(messages, generation=generation, voice=voice, stop=stop, tools=tools,
                                tool_choice=tool_choice)

    def reset(self) -> None:
        """Nothing is held here between sessions (the worker's session holds the items)."""

    def kv_cache_length(self) -> int:
        return self._b.cache_length()
