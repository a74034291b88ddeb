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
from ..engine.api import ChatResult, EngineInputError
from ..protocol.affinity import prefix_hashes
from ..protocol.messages import (ChatChunkMsg, ChatDoneMsg, PrefillDoneMsg, ProtocolError, Stop, load_json,
                                 parse_chat_control, parse_chat_request)
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
        self._record_inputs(req)
        self.spawn_reader(self._read_controls())

        proc = self.state.processor
        t0 = time.monotonic()
        try:
            view = await self.engine(proc.set_chat_mode)
            voice = None
            if req.tts.enabled:
                voice = await self.engine(proc.voice_from_reference, ref) if ref is not None \
                    else await self.engine(proc.default_voice)
            pre = await self.engine(view.prefill, msgs, tts=req.tts.enabled, voice=voice,
                                    generation=convert.generation(req.generation), stop=self.stop)
        except EngineInputError as e:
            self.error_text = str(e)
            await self.send_error(str(e))
            return "invalid_request"
        t_prefill = time.monotonic()
        await self.send(PrefillDoneMsg(input_tokens=pre.input_tokens))

        audio_parts: list[np.ndarray] = []
        n_chunks = 0
        t_first: Optional[float] = None
        if req.streaming:
            async for d in self.engine_stream(lambda: view.generate(True, self.stop)):
                if d.audio is not None and len(d.audio):
                    audio_parts.append(d.audio)
                if not d.text and (d.audio is None or not len(d.audio)):
                    continue
                t_first = t_first or time.monotonic()
                n_chunks += 1
                await self.send(ChatChunkMsg(text_delta=d.text or None,
                                             audio_data=encode_f32(d.audio) if d.audio is not None and len(d.audio) else None))
            result: ChatResult = view.last_result
        else:
            result = await self.engine(view.generate, False, self.stop)
            if result.audio is not None:
                audio_parts.append(result.audio)
        if self.reader_failed:
            raise ReaderFailed()
        stopped = bool(result.stopped or self.stop.is_set())
        whole_audio = np.concatenate(audio_parts) if audio_parts else None
        ai_wav = self.rec.write_wav("ai.wav", whole_audio, OUT_RATE)
        self.rec.add_event({"t_prefill_done_s": round(t_prefill - t0, 3),
                            "t_first_chunk_s": None if t_first is None else round(t_first - t0, 3),
                            "t_done_s": round(time.monotonic() - t0, 3), "input_tokens": pre.input_tokens,
                            "generated_tokens": result.generated_tokens, "chunks": n_chunks,
                            "text": result.text, "ai_audio": ai_wav, "stopped": stopped})
        done = ChatDoneMsg(text=result.text, generated_tokens=result.generated_tokens,
                           input_tokens=result.input_tokens or pre.input_tokens,
                           audio_data=None if req.streaming or whole_audio is None else encode_f32(whole_audio),
                           recording_session_id=self.rec.id, stopped=True if stopped else None)
        self.state.cached_prefix_hashes = prefix_hashes(raw_messages + [{"role": "assistant", "content": result.text}])
        self.state.kv_cache_length = (result.input_tokens or pre.input_tokens) + result.generated_tokens
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

    def _record_inputs(self, req) -> None:
        """User media of the request as files; the text goes into recording.json."""
        messages = []
        for i, m in enumerate(req.messages):
            items = []
            for j, it in enumerate(m.items()):
                entry = {"type": it.type}
                if it.type == "text":
                    entry["text"] = it.text
                else:
                    try:
                        if it.type == "audio":
                            pcm = limits.audio_at(it.data, it.sample_rate, max_s=convert.MAX_CHAT_AUDIO_S)
                            entry["file"] = self.rec.write_wav(f"input_{i:02d}_{j:02d}.wav", pcm, 16000)
                        else:
                            data = limits.blob(it.data, what=it.type, max_bytes=convert.MAX_MEDIA_BYTES)
                            ext = image_ext(data) if it.type == "image" else \
                                "webm" if data[:4] == b"\x1a\x45\xdf\xa3" else "mp4"
                            entry["file"] = self.rec.write_blob(f"input_{i:02d}_{j:02d}.{ext}", data)
                    except limits.InputError:
                        entry["file"] = None
                items.append(entry)
            messages.append({"role": m.role, "items": items})
        self.rec.add_event({"messages": messages})


def new_chat_id() -> str:
    """A label for a chat connection (the gateway has none to give on /ws/chat)."""
    return "chat_" + secrets.token_urlsafe(8)
