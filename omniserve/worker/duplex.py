"""``/ws/duplex/{session_id}``: full duplex, one engine unit per ``audio_chunk``; omni or audio-only.

Reader task → ``Inbox`` → main loop, one unit at a time on the engine thread. ``pause`` takes
effect after the unit in progress: units queued before it are dropped, and so are units that
arrive while paused. Timeouts: pause (client's ``timeout``, capped), idle (no ``audio_chunk``
while active), and the maximum session length — each ends the session with ``timeout {reason}``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..audio import encode_f32
from ..engine.api import DuplexSettings, EngineBackendError, EngineInputError
from ..protocol.messages import (AudioChunkDuplex, ClientDiagnostic, DuplexPrepare, DuplexPreparedMsg, Pause,
                                 PausedMsg, Resume, ResumedMsg, ResultMsg, StoppedMsg, Stop,
                                 TimeoutMsg, VideoFrame, duplex_variant, parse_duplex)
from . import convert, limits
from .recorder import image_ext
from .streaming import StreamingSession
from .state import Status

MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_PENDING_FRAMES = 4


@dataclass
class _Unit:
    pcm: np.ndarray
    frames: list[bytes] = field(default_factory=list)
    force_listen: bool = False
    t_received: float = 0.0          # recording clock
    mono_received: float = 0.0


class DuplexSession(StreamingSession):
    status = Status.DUPLEX_ACTIVE
    stream_kind = "duplex"
    prepare_type = DuplexPrepare
    parse = staticmethod(parse_duplex)

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.request_type = duplex_variant(self.session_id)
        self.omni = self.request_type == "omni_duplex"
        self.view: Any = None
        self.chunk_ms: Optional[int] = None
        self.pending_pauses = 0
        self.units = 0
        self.frames_pending: list[bytes] = []

    # ------------------------------------------------------------------- reader
    def take(self, msg: Any) -> None:
        """Validate and queue one message (runs on the reader task, so errors answer at once)."""
        if isinstance(msg, AudioChunkDuplex):
            if self.chunk_ms is None:
                raise limits.InputError("Send prepare before audio_chunk")
            pcm = limits.unit_audio(msg.audio_base64, self.chunk_ms)
            frames = [limits.blob(f, what=f"frame_base64_list[{i}]", max_bytes=MAX_FRAME_BYTES)
                      for i, f in enumerate(msg.frame_base64_list or [])]
            self.last_audio = time.monotonic()
            self.inbox.put(_Unit(pcm, frames, msg.force_listen, self.rec.now(), self.last_audio))
            self.inbox.drop_oldest(lambda x: isinstance(x, _Unit), self.cfg.duplex_max_backlog_units)
        elif isinstance(msg, VideoFrame):
            self.inbox.put(limits.blob(msg.frame, what="frame", max_bytes=MAX_FRAME_BYTES))
            self.inbox.drop_oldest(lambda x: isinstance(x, bytes), MAX_PENDING_FRAMES)
        elif isinstance(msg, ClientDiagnostic):
            return  # the gateway stores these; nothing to do here
        else:
            if isinstance(msg, Pause):
                self.pending_pauses += 1
            elif isinstance(msg, Stop):
                self.stop.set()
            self.inbox.put(msg)

    # --------------------------------------------------------------------- main
    async def main(self) -> str:
        self.spawn_reader(self._reader())
        started = time.monotonic()
        self.open_recording(label=self.session_id, variant=self.request_type)
        prepared = await self.await_prepare(started)
        if isinstance(prepared, str):
            return prepared
        session_end = started + self.cfg.max_session_s
        paused_until: Optional[float] = None
        self.last_audio = time.monotonic()
        while True:
            if paused_until is not None:
                deadline, reason = paused_until, "pause_timeout"
            else:
                deadline, reason = self.last_audio + self.cfg.duplex_idle_timeout_s, "idle"
            if session_end <= deadline:  # the binding deadline names the reason
                deadline, reason = session_end, "max_session"
            try:
                item = await self.inbox.get(deadline - time.monotonic())
            except asyncio.TimeoutError:
                await self.send(TimeoutMsg(reason=reason, elapsed_s=round(time.monotonic() - started, 3)))
                return f"timeout_{reason}"
            self.ensure_open(item)
            if isinstance(item, Stop) or self.stop.is_set():
                await self.send(StoppedMsg(session_id=self.session_id))
                return "stop"
            if isinstance(item, Pause):
                self.pending_pauses -= 1
                timeout = limits.capped(item.timeout, self.cfg.duplex_pause_timeout_default_s,
                                        self.cfg.duplex_pause_timeout_cap_s)
                paused_until = time.monotonic() + timeout
                self.inbox.discard(lambda x: isinstance(x, _Unit))
                self.state.set_status(self, Status.DUPLEX_PAUSED)
                self.rec.add_event({"event": "pause", "t_s": round(self.rec.now(), 3), "timeout_s": timeout})
                await self.send(PausedMsg(timeout=timeout))
            elif isinstance(item, Resume):
                if paused_until is not None:
                    paused_until = None
                    self.last_audio = time.monotonic()
                    self.state.set_status(self, Status.DUPLEX_ACTIVE)
                    self.rec.add_event({"event": "resume", "t_s": round(self.rec.now(), 3)})
                await self.send(ResumedMsg())
            elif isinstance(item, DuplexPrepare):
                await self.send_error("Session already prepared")
            elif isinstance(item, bytes):
                self.frames_pending = (self.frames_pending + [item])[-MAX_PENDING_FRAMES:]
            elif isinstance(item, _Unit) and paused_until is None and self.pending_pauses == 0:
                await self._unit(item)

    async def before_prepare(self, item: Any) -> None:
        if isinstance(item, Pause):
            self.pending_pauses -= 1

    async def _prepare(self, p: DuplexPrepare) -> bool:
        c = p.config
        ref = convert.reference_pcm(p.tts_ref_audio_base64 or p.ref_audio_base64, "ref_audio_base64")
        settings = DuplexSettings(**c.model_dump(), omni=self.omni)
        proc = self.state.processor
        self.state.cached_prefix_hashes = []
        voice = await self.engine(proc.voice, ref)
        self.view = await self.engine(proc.set_duplex_mode)
        prompt_length = await self.engine(self.view.prepare, p.system_prompt or "", voice, settings)
        self.chunk_ms = c.chunk_ms
        self.rec.update_meta(system_prompt=p.system_prompt or "", voice=getattr(voice, "name", None),
                             prompt_tokens=prompt_length, config=c.model_dump(), ref_audio=ref is not None,
                             chunk_ms=c.chunk_ms)
        await self.send(DuplexPreparedMsg(prompt_length=prompt_length, recording_session_id=self.rec.id))
        return True

    # --------------------------------------------------------------------- unit
    async def _unit(self, u: _Unit) -> None:
        frames = (self.frames_pending + u.frames) if self.omni else []
        self.frames_pending = []
        t0 = time.monotonic()
        try:
            res = await self.engine(self.view.unit, u.pcm, frames or None, u.force_listen)
        except (EngineInputError, EngineBackendError) as e:
            await self.send_error(str(e))
            return
        cost_all = (time.monotonic() - t0) * 1000
        tm = res.timings or {}
        has_audio = res.audio is not None and len(res.audio) > 0 and not res.is_listen
        idx = self.units
        self.units += 1
        msg = ResultMsg(
            is_listen=res.is_listen, text="" if res.is_listen else res.text,
            audio_data=encode_f32(res.audio) if has_audio else "", end_of_turn=res.end_of_turn, current_time=idx,
            cost_llm_ms=round(float(tm.get("cost_llm_ms", 0.0)), 2), cost_tts_ms=round(float(tm.get("cost_tts_ms", 0.0)), 2),
            cost_all_ms=round(float(tm.get("cost_all_ms", cost_all)), 2),
            wall_clock_ms=round((time.monotonic() - u.mono_received) * 1000, 2),
            n_tokens=res.n_tokens, n_tts_tokens=res.n_tts_tokens, kv_cache_length=res.kv_cache_length,
            server_send_ts=time.time(), user_text=res.user_text or None)
        t_sent = self.rec.now()
        await self.send(msg)
        self.state.kv_cache_length = res.kv_cache_length
        offsets = self.rec.duplex_unit(u.pcm, u.t_received, res.audio if has_audio else None, t_sent)
        files = [self.rec.write_blob(f"frames/unit_{idx:06d}_{i}.{image_ext(f)}", f) for i, f in enumerate(frames)]
        self.rec.add_event({
            "unit": idx, "t_received_s": round(u.t_received, 3), "t_sent_s": round(t_sent, 3),
            "is_listen": res.is_listen, "text": msg.text, "user_text": res.user_text, "end_of_turn": res.end_of_turn,
            "force_listen": u.force_listen, "frames": [f for f in files if f], "n_tokens": res.n_tokens,
            "kv_cache_length": res.kv_cache_length, "cost_all_ms": msg.cost_all_ms, "wall_clock_ms": msg.wall_clock_ms,
            "timings": {k: v for k, v in tm.items() if isinstance(v, (int, float))}, **offsets})
        if self.units % 10 == 0:
            self.rec.flush_timeline()

    async def after_engine_idle(self) -> None:
        if self.view is not None:
            await self.engine(self.view.reset)
        self.rec.update_meta(units=self.units, units_dropped=self.inbox.dropped)
