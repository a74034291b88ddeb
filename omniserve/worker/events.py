"""What a session's observers hear, and how a session routes it to them.

Every mode has two observers (``Observer``): its wire writer (``wire.py``: event → protocol
message) and its recorder (``timeline.py``: event → timeline entries, WAVs). A session loop only
routes events to both; the counting both rely on is done once, here (``Reply``).

What is routed:
- from the engine as is: ``SpeechStarted``, ``SpeechEnded``, ``Prefilled``;
- ``Chunk``: an engine ``Delta`` that carries something, numbered;
- ``Reply``: once a reply is over (complete, stopped, or cut by an error);
- duplex: ``UnitAnswered`` per unit, ``Paused`` / ``Resumed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Optional, Protocol, TypeVar, Union

import numpy as np

from ..engine.api import Delta, Prefilled, ReplyDone, SpeechEnded, SpeechStarted, ToolCall, UnitResult

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)


class Observer(Protocol[E_contra]):
    async def on(self, ev: E_contra) -> None: ...


class Observers(Generic[E]):
    """Routes each event to every observer, in order: the recorder first (it only queues writes,
    so it never waits, and its timestamps are not skewed by a client that reads slowly)."""

    def __init__(self, *observers: Observer[E]) -> None:
        self._all = observers

    async def __call__(self, ev: E) -> None:
        for o in self._all:
            await o.on(ev)


@dataclass(frozen=True)
class Chunk:
    """A piece of the reply with text, speech or both; ``index`` counts from 0 per reply."""
    index: int
    text: str
    audio: Optional[np.ndarray] = field(default=None, repr=False)   # 24 kHz; None when no speech


@dataclass
class Reply:
    """One reply as it streams; routed to the observers when it is over (``close``)."""
    turn: int = 0                            # half-duplex: the turn's index
    speech: Optional[SpeechEnded] = field(default=None, repr=False)   # half-duplex: what it answers
    pre: Optional[Prefilled] = None
    result: Optional[ReplyDone] = None       # None when the reply was cut before its end
    chunks: int = 0
    texts: list[str] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list, repr=False)
    stopped: bool = False                    # set by close: a stop was asked for, or the engine says so
    audio: Optional[np.ndarray] = field(default=None, repr=False)   # set by close: the whole speech

    def take(self, ev: Union[Prefilled, Delta, ReplyDone]) -> Optional[Union[Prefilled, Chunk]]:
        """Count one engine event of this reply; returns what the observers hear of it now."""
        if isinstance(ev, Prefilled):
            self.pre = ev
            return ev
        if isinstance(ev, ReplyDone):
            self.result = ev
            return None
        audio = ev.audio if ev.audio is not None and len(ev.audio) > 0 else None
        if not ev.text and audio is None:
            return None
        chunk = Chunk(self.chunks, ev.text or "", audio)
        self.chunks += 1
        self.texts.append(chunk.text)
        if audio is not None:
            self.parts.append(audio)
        return chunk

    def close(self, stop_requested: bool) -> "Reply":
        self.stopped = stop_requested or (self.result is not None and self.result.stopped)
        self.audio = np.concatenate(self.parts) if self.parts else None
        return self

    @property
    def complete(self) -> bool:
        """The engine's ``ReplyDone`` arrived."""
        return self.result is not None

    @property
    def cut(self) -> bool:
        """Stopped, or over without ``ReplyDone`` (what chat reports as ``stopped``)."""
        return self.stopped or self.result is None

    @property
    def text(self) -> str:
        """The engine's text of the reply, else (cut by a stop before ``ReplyDone``) what was streamed."""
        return self.result.text if self.result is not None and self.result.text else "".join(self.texts)

    @property
    def input_tokens(self) -> int:
        if self.result is not None:
            return self.result.input_tokens
        return self.pre.input_tokens if self.pre is not None else 0

    @property
    def generated_tokens(self) -> int:
        return self.result.generated_tokens if self.result is not None else 0

    @property
    def heard(self) -> str:
        return self.pre.heard if self.pre is not None else ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The functions the reply calls (chat with tools; none when it was stopped)."""
        return self.result.tool_calls if self.result is not None and not self.stopped else []


@dataclass(frozen=True)
class UnitAnswered:
    """Duplex: one unit went through the engine. Times ``t_*`` are on the session clock."""
    index: int                               # ``current_time`` on the wire
    pcm: np.ndarray = field(repr=False)      # the unit's microphone audio, 16 kHz
    frames: list[bytes] = field(repr=False)  # the camera frames it was given
    force_listen: bool
    result: UnitResult
    cost_all_ms: float                       # the engine's figure, else measured around the call
    wall_clock_ms: float                     # from the chunk's arrival to the answer
    t_received: float
    t_sent: float

    @property
    def text(self) -> str:
        return "" if self.result.is_listen else self.result.text

    @property
    def speech(self) -> Optional[np.ndarray]:
        a = self.result.audio
        return a if a is not None and len(a) > 0 and not self.result.is_listen else None


@dataclass(frozen=True)
class Paused:
    timeout_s: float


@dataclass(frozen=True)
class Resumed:
    was_paused: bool                         # a resume while active only answers ``resumed``


ChatEvent = Union[Prefilled, Chunk, Reply]
VoiceEvent = Union[SpeechStarted, SpeechEnded, Prefilled, Chunk, Reply]
DuplexEvent = Union[UnitAnswered, Paused, Resumed]
