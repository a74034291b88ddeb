"""``/ws/chat``: one request per connection, streamed reply, ``stop`` honoured within one chunk.

Flow: request → ``prefill_done`` → ``chunk``… → ``done`` (or ``error``), then the worker is
released and the socket closed. A reader task runs beside generation so a ``stop`` (or a
disconnect) sets the engine's stop event while the engine thread is busy.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Optional, Union

import numpy as np

from ..audio import OUT_RATE, encode_f32
from ..engine.api import Delta, EngineBackendError, EngineInputError, Prefilled, ReplyDone
from ..protocol.affinity import prefix_hashes
from ..protocol.messages import (ChatChunkMsg, ChatDoneMsg, PrefillDoneMsg, ProtocolError, Stop, load_json,
                                 parse_chat_control, parse_chat_request)
from ..engine import api
from . import convert, limits
from .recorder import image_ext
from .session import Disconnected, ReaderFailed, Session
from .state import Status

DECODE_ON_THREAD_CHARS = 256 * 1024


class ChatSession(Session):
    status = Status.BUSY_CHAT
    request_type = "chat"

    async def main(self) -> str:
        try:  # a silent client must not hold the worker
            raw = await asyncio.wait_for(self.receive(self.cfg.max_chat_frame_bytes, fatal=True), self.cfg.prepare_wait_s)
        except asyncio.TimeoutError:
            self.error_text = f"No chat request received within {self.cfg.prepare_wait_s:g} s"
            await self.send_error(self.error_text)
            return "timeout_request"
        try:
            obj = await self._decode(raw)
            req = parse_chat_request(obj)
            msgs = convert.chat_messages(req)
            ref = convert.reference_pcm(req.tts.ref_audio_data, "tts.ref_audio_data") if req.tts.enabled else None
        except (ProtocolError, limits.InputError) as e:
            self.error_text = str(e)
            await self.send_error(str(e))
            return "invalid_request"
        raw_messages = obj["messages"]
        self.state.cached_prefix_hashes = []
        self.open_recording(request={k: v for k, v in obj.items() if k != "messages"} | {
            "tts": {"enabled": req.tts.enabled, "ref_audio": ref is not None}})
        self._record_inputs(msgs)
        self.spawn_reader(self._read_controls())

        proc = self.state.processor
        t0 = time.monotonic()
        pre: Optional[Prefilled] = None
        result: Optional[ReplyDone] = None
        audio_parts: list[np.ndarray] = []
        n_chunks = 0
        t_prefill: Optional[float] = None
        t_first: Optional[float] = None
        try:
            view = await self.engine(proc.set_chat_mode)
            voice = await self.engine(proc.voice, ref) if req.tts.enabled else None
            generation = convert.generation(req.generation)
            async for ev in self.engine_stream(lambda: view.reply(msgs, generation=generation, voice=voice, stop=self.stop)):
                if isinstance(ev, Prefilled):
                    pre, t_prefill = ev, time.monotonic()
                    await self.send(PrefillDoneMsg(input_tokens=ev.input_tokens))
                elif isinstance(ev, Delta):
                    has_audio = ev.audio is not None and len(ev.audio) > 0
                    if has_audio:
                        audio_parts.append(ev.audio)
                    if not ev.text and not has_audio:
                        continue
                    t_first = t_first or time.monotonic()
                    n_chunks += 1
                    if req.streaming:
                        await self.send(ChatChunkMsg(text_delta=ev.text or None,
                                                     audio_data=encode_f32(ev.audio) if has_audio else None))
                elif isinstance(ev, ReplyDone):
                    result = ev
        except EngineInputError as e:
            self.error_text = str(e)
            await self.send_error(str(e))
            return "invalid_request"
        except EngineBackendError as e:
            self.error_text = str(e)
            await self.send_error(str(e))
            return "backend_error"
        if self.reader_failed:
            raise ReaderFailed()
        input_tokens = result.input_tokens if result is not None else pre.input_tokens if pre is not None else 0
        text = result.text if result is not None else ""
        generated = result.generated_tokens if result is not None else 0
        stopped = bool(result is None or result.stopped or self.stop.is_set())
        whole_audio = np.concatenate(audio_parts) if audio_parts else None
        ai_wav = self.rec.write_wav("ai.wav", whole_audio, OUT_RATE)
        self.rec.add_event({"t_prefill_done_s": None if t_prefill is None else round(t_prefill - t0, 3),
                            "t_first_chunk_s": None if t_first is None else round(t_first - t0, 3),
                            "t_done_s": round(time.monotonic() - t0, 3), "input_tokens": input_tokens,
                            "generated_tokens": generated, "chunks": n_chunks,
                            "text": text, "ai_audio": ai_wav, "stopped": stopped})
        done = ChatDoneMsg(text=text, generated_tokens=generated, input_tokens=input_tokens,
                           audio_data=None if req.streaming or whole_audio is None else encode_f32(whole_audio),
                           recording_session_id=self.rec.id, stopped=True if stopped else None)
        self.state.cached_prefix_hashes = prefix_hashes(raw_messages + [{"role": "assistant", "content": text}])
        self.state.kv_cache_length = input_tokens + generated
        await self.send(done)
        self.state.release(self)  # PROTOCOL.md: released as soon as done is sent
        return "disconnect" if self.disconnected else "stopped" if stopped else "done"

    @staticmethod
    async def _decode(raw: Union[str, bytes]) -> Any:
        """The request's JSON (bounded, ``ProtocolError`` only); a big frame is decoded on a
        thread so the event loop keeps answering ``/health`` and pings meanwhile."""
        if len(raw) < DECODE_ON_THREAD_CHARS:
            return load_json(raw)
        return await asyncio.to_thread(load_json, raw)

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

    def _record_inputs(self, msgs: list[api.Message]) -> None:
        """User media of the request as files (as decoded for the engine); the text goes into
        recording.json."""
        messages = []
        for i, m in enumerate(msgs):
            items: list[dict] = []
            for j, it in enumerate(m.items):
                name = f"input_{i:02d}_{j:02d}"
                if isinstance(it, api.Text):
                    items.append({"type": "text", "text": it.text})
                elif isinstance(it, api.Audio):
                    items.append({"type": "audio", "file": self.rec.write_wav(f"{name}.wav", it.pcm, it.sample_rate)})
                elif isinstance(it, api.Image):
                    items.append({"type": "image", "file": self.rec.write_blob(f"{name}.{image_ext(it.data)}", it.data)})
                elif isinstance(it, api.Video):
                    ext = "webm" if it.data[:4] == b"\x1a\x45\xdf\xa3" else "mp4"
                    items.append({"type": "video", "file": self.rec.write_blob(f"{name}.{ext}", it.data)})
            messages.append({"role": m.role, "items": items})
        self.rec.add_event({"messages": messages})


def new_chat_id() -> str:
    """A label for a chat connection (the gateway has none to give on /ws/chat)."""
    return "chat_" + secrets.token_urlsafe(8)
