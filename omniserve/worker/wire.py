"""The wire writers: per mode, session events → the protocol messages of PROTOCOL.md.

An observer (``events.Observer``) beside the recorder; what it sends is all it does. Messages
that do not come from events (``prepared``, ``stopped``, ``error``) are sent by the session.
"""
from __future__ import annotations

import time
from typing import Awaitable, Callable, Optional

from pydantic import BaseModel

from ..audio import OUT_RATE, encode_f32
from ..engine.api import Prefilled, SpeechEnded, SpeechStarted, ToolCall
from ..protocol.messages import (ChatChunkMsg, ChatDoneMsg, ChatToolCall, GeneratingMsg, HDChunkMsg, PausedMsg,
                                 PrefillDoneMsg, ResultMsg, ResumedMsg, TimeoutMsg, ToolCallFunction, TurnDoneMsg,
                                 VadStateMsg)
from .events import ChatEvent, Chunk, DuplexEvent, Paused, Reply, UnitAnswered, VoiceEvent
from .lifecycle import Deadline

Send = Callable[[BaseModel], Awaitable[bool]]


class ChatWire:
    """``/ws/chat``: ``prefill_done`` → ``chunk``… (when streaming) → ``done``."""

    def __init__(self, send: Send, *, streaming: bool, recording_id: Optional[str]) -> None:
        self.send = send
        self.streaming = streaming
        self.recording_id = recording_id

    async def on(self, ev: ChatEvent) -> None:
        if isinstance(ev, Prefilled):
            await self.send(PrefillDoneMsg(input_tokens=ev.input_tokens))
        elif isinstance(ev, Chunk):
            if self.streaming:
                await self.send(ChatChunkMsg(text_delta=ev.text or None,
                                             audio_data=None if ev.audio is None else encode_f32(ev.audio)))
        else:
            whole = None if self.streaming or ev.audio is None else encode_f32(ev.audio)
            await self.send(ChatDoneMsg(text=ev.text, generated_tokens=ev.generated_tokens,
                                        input_tokens=ev.input_tokens, audio_data=whole,
                                        recording_session_id=self.recording_id, stopped=True if ev.cut else None,
                                        tool_calls=tool_calls(ev.tool_calls) or None))


def tool_calls(calls: list[ToolCall]) -> list[ChatToolCall]:
    """A reply's function calls as ``done`` carries them (OpenAI shape; the client sends them back
    in the assistant message of its next request)."""
    return [ChatToolCall(id=c.id, function=ToolCallFunction(name=c.name, arguments=c.arguments)) for c in calls]


class HalfDuplexWire:
    """``/ws/half_duplex``: ``vad_state`` → ``generating`` → ``chunk``… → final ``chunk`` + ``turn_done``."""

    def __init__(self, send: Send) -> None:
        self.send = send

    async def on(self, ev: VoiceEvent) -> None:
        if isinstance(ev, SpeechStarted):
            await self.send(VadStateMsg(speaking=True))
        elif isinstance(ev, SpeechEnded):
            await self.send(VadStateMsg(speaking=False))
            await self.send(GeneratingMsg(speech_duration_ms=round(float(ev.duration_ms), 1)))
        elif isinstance(ev, Chunk):
            a = ev.audio
            await self.send(HDChunkMsg(text_delta=ev.text, audio_data="" if a is None else encode_f32(a),
                                       chunk_index=ev.index,
                                       duration_ms=0.0 if a is None else round(1000 * len(a) / OUT_RATE, 1)))
        elif isinstance(ev, Reply) and ev.complete and not ev.stopped:   # a cut turn ends silently
            await self.send(HDChunkMsg(chunk_index=ev.chunks, is_final=True))
            await self.send(TurnDoneMsg(turn_index=ev.turn, text=ev.text, user_text=ev.heard))

    @staticmethod
    def timeout(d: Deadline) -> TimeoutMsg:
        """``elapsed_s`` counts the span the deadline bounds (idle: since the last audio)."""
        return TimeoutMsg(elapsed_s=d.elapsed_s(), reason=d.limit.value)


class DuplexWire:
    """``/ws/duplex``: one ``result`` per unit; ``paused`` / ``resumed``."""

    def __init__(self, send: Send) -> None:
        self.send = send

    async def on(self, ev: DuplexEvent) -> None:
        if isinstance(ev, UnitAnswered):
            await self.send(result(ev))
        elif isinstance(ev, Paused):
            await self.send(PausedMsg(timeout=ev.timeout_s))
        else:
            await self.send(ResumedMsg())

    @staticmethod
    def timeout(d: Deadline) -> TimeoutMsg:
        """``elapsed_s`` counts from the session start, whatever the reason."""
        return TimeoutMsg(reason=d.limit.value, elapsed_s=d.session_elapsed_s())


def result(ev: UnitAnswered) -> ResultMsg:
    res, tm = ev.result, ev.result.timings or {}
    return ResultMsg(
        is_listen=res.is_listen, text=ev.text, audio_data="" if ev.speech is None else encode_f32(ev.speech),
        end_of_turn=res.end_of_turn, current_time=ev.index,
        cost_llm_ms=round(float(tm.get("cost_llm_ms", 0.0)), 2), cost_tts_ms=round(float(tm.get("cost_tts_ms", 0.0)), 2),
        cost_all_ms=ev.cost_all_ms, wall_clock_ms=ev.wall_clock_ms, n_tokens=res.n_tokens,
        n_tts_tokens=res.n_tts_tokens, kv_cache_length=res.kv_cache_length, server_send_ts=time.time(),
        user_text=res.user_text or None)
