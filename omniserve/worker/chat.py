"""``/ws/chat``: one request per connection, streamed reply, ``stop`` honoured within one chunk.

Flow: request → ``prefill_done`` → ``chunk``… → ``done`` (or ``error``), then the worker is
released and the socket closed. The session's state machine is the degenerate one (await request →
active → ending). A reader task runs beside generation so a ``stop`` (or a disconnect) sets the
engine's stop event while the engine thread is busy. The engine's events go to the wire writer and
the recorder (``ChatWire``, ``ChatTimeline``). A request with ``tools`` (an addition to PROTOCOL.md)
may be answered by function calls: ``done`` then carries ``tool_calls``.
"""
from __future__ import annotations

import asyncio
import secrets
from typing import Optional, Union

import numpy as np

from ..engine import api
from ..engine.api import Delta, EngineBackendError, EngineInputError, Prefilled, ReplyDone
from ..protocol import modes
from ..protocol.chat_request import read_chat_request_async
from ..protocol.messages import ChatRequest, ProtocolError, Stop, parse_chat_control
from . import convert, limits
from .events import ChatEvent, Observers, Reply
from .lifecycle import Phase
from .session import Connection, Disconnected, ReaderFailed
from .state import Status
from .timeline import ChatTimeline, record_request
from .wire import ChatWire, tool_calls

class ChatConnection(Connection):
    request_type = modes.CHAT.request_type
    statuses = {Phase.AWAIT_PREPARE: Status.BUSY_CHAT, Phase.ACTIVE: Status.BUSY_CHAT}

    async def main(self) -> str:
        raw = await self._request_frame()
        if raw is None:
            self.error_text = f"No chat request received within {self.cfg.prepare_wait_s:g} s"
            await self.send_error(self.error_text)
            return "timeout_request"
        try:
            frame = await read_chat_request_async(raw)     # decoded, validated and hashed once
            obj, req = frame.obj, frame.request
            msgs = convert.chat_messages(req)
            ref = convert.reference_pcm(req.tts.ref_audio_data, "tts.ref_audio_data") if req.tts.enabled else None
        except (ProtocolError, limits.InputError) as e:
            self.error_text = str(e)
            await self.send_error(str(e))
            return "invalid_request"
        self.life.activate(idle_s=None)
        self.open_recording(request={k: v for k, v in obj.items() if k != "messages"} | {
            "tts": {"enabled": req.tts.enabled, "ref_audio": ref is not None}})
        record_request(self.rec, msgs)
        self.spawn_reader(self._read_controls())
        observe = Observers[ChatEvent](ChatTimeline(self.rec), self.metrics.chat(self.request_type),
                                       ChatWire(self.send, streaming=req.streaming, recording_id=self.rec.id))
        try:
            reply = await self._generate(observe, req, msgs, ref)
        except (EngineInputError, EngineBackendError) as e:
            self.error_text = str(e)
            await self.send_error(str(e))
            return "invalid_request" if isinstance(e, EngineInputError) else "backend_error"
        if self.reader_failed:
            raise ReaderFailed()
        reply.close(self.stop.is_set())
        calls = [c.model_dump() for c in tool_calls(reply.tool_calls)]
        self.runtime.cached_prefix_hashes = list(frame.chain_after(reply.text, calls).hashes)   # one more link
        self.runtime.kv_cache_length = reply.input_tokens + reply.generated_tokens
        await observe(reply)            # the recording's entry, then ``done``
        self.runtime.release(self)      # PROTOCOL.md: released as soon as done is sent
        return "disconnect" if self.disconnected else "stopped" if reply.cut else "done"

    async def _generate(self, observe: Observers[ChatEvent], req: ChatRequest, msgs: list[api.Message],
                        ref: Optional[np.ndarray]) -> Reply:
        """The reply, its events routed to both observers as they come."""
        view, voice = await self.open_view(self.processor.set_chat_mode, ref, speak=req.tts.enabled)
        generation = convert.generation(req.generation)
        tools, tool_choice = convert.chat_tools(req)
        reply = Reply()
        async for ev in self.engine.stream(lambda: view.reply(msgs, generation=generation, voice=voice, stop=self.stop,
                                                              tools=tools, tool_choice=tool_choice)):
            if isinstance(ev, (Prefilled, Delta, ReplyDone)):    # a chat reply has no speech events
                heard = reply.take(ev)
                if heard is not None:
                    await observe(heard)
        return reply

    async def _request_frame(self) -> Optional[Union[str, bytes]]:
        """The request, or None when none came in time (a silent client must not hold the worker)."""
        d = self.life.deadline()
        try:
            return await asyncio.wait_for(self.receive(self.cfg.max_chat_frame_bytes, fatal=True),
                                          None if d is None else d.remaining())
        except asyncio.TimeoutError:
            return None

    async def _read_controls(self) -> None:
        """While generating: ``stop`` sets the engine's stop event; anything else gets an error."""
        try:
            while True:
                try:
                    msg = parse_chat_control(await self.receive(self.cfg.max_audio_frame_bytes))
                except (ProtocolError, limits.FrameTooBig) as e:
                    await self.send_error(str(e))
                    continue
                if isinstance(msg, Stop):
                    self.stop.set()
        except Disconnected:
            self.mark_gone()


def new_chat_id() -> str:
    """A label for a chat connection (the gateway has none to give on /ws/chat)."""
    return "chat_" + secrets.token_urlsafe(8)
