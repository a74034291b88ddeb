"""Turn-based chat: the client sends the whole history each request; the last turn is answered.

The view validates the request (roles, order, settings, audio) before the backend spends
anything on it; what the answer takes is the backend's business.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional, Sequence

from ..api import (Audio, EngineInputError, Event, GenerationParams, Image, Message, Text, Tool, ToolChoice, Video,
                   Voice)
from ..backends.base import Backend
from ..checks import check_audio, check_generation, check_tools

ROLES = ("system", "user", "assistant", "tool")


class ChatSessionView:
    """``api.ChatView``."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend

    def reply(self, messages: Sequence[Message], *, generation: GenerationParams = GenerationParams(),
              voice: Optional[Voice] = None, stop: Optional[threading.Event] = None,
              tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]:
        check_messages(messages)
        check_generation(generation)
        check_tools(tools, tool_choice)
        ev = stop if stop is not None else threading.Event()
        if tools:             # only then: a backend without tool support keeps its four-argument calls
            return self._b.chat(list(messages), generation, voice, ev, list(tools), tool_choice)
        return self._b.chat(list(messages), generation, voice, ev)

    def reset(self) -> None:
        """Nothing is held between requests (a backend's cache is what makes the next one cheap)."""


def check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise EngineInputError("messages is empty")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise EngineInputError(f"unknown role {m.role!r} (use system, user, assistant or tool)")
        if m.role == "tool" and not m.tool_call_id:
            raise EngineInputError(f"message {i + 1}: a tool result needs the tool_call_id it answers")
        for k, item in enumerate(m.items):
            if isinstance(item, Audio):
                check_audio(item.pcm, item.sample_rate, what=f"message {i + 1} audio item {k + 1}")
            elif isinstance(item, (Image, Video)):
                if not item.data:
                    raise EngineInputError(f"message {i + 1} {type(item).__name__.lower()} item {k + 1} is empty")
            elif not isinstance(item, Text):
                raise EngineInputError(f"unknown content item {type(item).__name__}")
    if messages[-1].role == "assistant" and not messages[-1].tool_calls:
        raise EngineInputError("the last message must be from the user (there is nothing to answer)")
    if messages[-1].role == "assistant":
        raise EngineInputError("the assistant's tool calls need their results (role tool) before it answers")
