"""``/ws/duplex/{session_id}``: full duplex, one engine unit per ``audio_chunk``; omni or audio-only.

Reader task → ``Inbox`` → the loop of ``StreamingConnection`` (await-prepare → active ⇄ paused →
ending), one unit at a time on the engine thread. ``pause`` takes effect after the unit in
progress: units queued before it are dropped, and so are units that arrive while paused.
Deadlines (``lifecycle.py``): pause (client's ``timeout``, capped), idle (no ``audio_chunk``
while active), and the maximum session length — each ends the session with ``timeout {reason}``.
Each answered unit goes to the wire writer and the recorder (``DuplexWire``, ``DuplexTimeline``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..engine.api import DuplexSettings, DuplexView, EngineBackendError, EngineInputError
from ..protocol import modes
from ..protocol.messages import (AudioChunkDuplex, ClientDiagnostic, DuplexPrepare, DuplexPreparedMsg, Pause, Resume,
                                 Stop, VideoFrame, parse_duplex)
from . import convert, limits
from .events import DuplexEvent, Observers, Paused, Resumed, UnitAnswered
from .lifecycle import Phase
from .state import Status
from .streaming import StreamingConnection
from .timeline import DuplexTimeline
from .wire import DuplexWire

MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_PENDING_FRAMES = 4


@dataclass
class _Unit:
    pcm: np.ndarray
    frames: list[bytes] = field(default_factory=list)
    force_listen: bool = False
    t_received: float = 0.0          # session clock
    mono_received: float = 0.0


class DuplexConnection(StreamingConnection):
    statuses = {Phase.AWAIT_PREPARE: Status.DUPLEX_ACTIVE, Phase.ACTIVE: Status.DUPLEX_ACTIVE,
                Phase.PAUSED: Status.DUPLEX_PAUSED}
    stream_kind = "duplex"
    prepare_type = DuplexPrepare
    parse = staticmethod(parse_duplex)
    timeout_message = staticmethod(DuplexWire.timeout)
    observe: Observers[DuplexEvent]

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        mode = modes.duplex_mode(self.session_id)
        self.request_type = mode.request_type
        self.omni = mode is modes.OMNI_DUPLEX
        self.view: Optional[DuplexView] = None
        self.chunk_ms: Optional[int] = None
        self.pending_pauses = 0
        self.units = 0
        self.frames_pending: list[bytes] = []

    async def main(self) -> str:
        self.open_recording(label=self.session_id, variant=self.request_type)
        self.observe = Observers(DuplexTimeline(self.rec), self.metrics.duplex(self.request_type),
                                 DuplexWire(self.send))
        return await self.run()

    # ------------------------------------------------------------------- reader
    def take(self, msg: Any) -> None:
        """Validate and queue one message (runs on the reader task, so errors answer at once)."""
        if isinstance(msg, AudioChunkDuplex):
            if self.chunk_ms is None:
                raise limits.InputError("Send prepare before audio_chunk")
            pcm = limits.unit_audio(msg.audio_base64, self.chunk_ms)
            frames = [limits.blob(f, what=f"frame_base64_list[{i}]", max_bytes=MAX_FRAME_BYTES)
                      for i, f in enumerate(msg.frame_base64_list or [])]
            self.life.heard_audio()
            self.inbox.put(_Unit(pcm, frames, msg.force_listen, self.rec.now(), self.life.last_audio))
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

    # ------------------------------------------------------------------ phases
    async def before_prepare(self, item: Any) -> None:
        if isinstance(item, Pause):
            self.pending_pauses -= 1

    async def prepare(self, p: DuplexPrepare) -> float:
        c = p.config
        ref = convert.reference_pcm(p.tts_ref_audio_base64 or p.ref_audio_base64, "ref_audio_base64")
        settings = DuplexSettings(**c.model_dump(), omni=self.omni)
        view, voice = await self.open_view(self.processor.set_duplex_mode, ref)
        self.view = view
        prompt_length = await self.engine.call(view.prepare, p.system_prompt or "", voice, settings)
        self.chunk_ms = c.chunk_ms
        self.rec.update_meta(system_prompt=p.system_prompt or "", voice=voice.name if voice else None,
                             prompt_tokens=prompt_length, config=c.model_dump(), ref_audio=ref is not None,
                             chunk_ms=c.chunk_ms)
        await self.send(DuplexPreparedMsg(prompt_length=prompt_length, recording_session_id=self.rec.id))
        return self.cfg.duplex_idle_timeout_s

    async def handle(self, item: Any) -> None:
        if isinstance(item, Pause):
            self.pending_pauses -= 1
            timeout = limits.capped(item.timeout, self.cfg.duplex_pause_timeout_default_s,
                                    self.cfg.duplex_pause_timeout_cap_s)
            self.life.pause(timeout)
            self.inbox.discard(lambda x: isinstance(x, _Unit))
            await self.observe(Paused(timeout))
        elif isinstance(item, Resume):
            await self.observe(Resumed(was_paused=self.life.resume()))
        elif isinstance(item, DuplexPrepare):
            await self.send_error("Session already prepared")
        elif isinstance(item, bytes):
            self.frames_pending = (self.frames_pending + [item])[-MAX_PENDING_FRAMES:]
        elif isinstance(item, _Unit) and self.life.phase is Phase.ACTIVE and self.pending_pauses == 0:
            await self._unit(item)

    # --------------------------------------------------------------------- unit
    async def _unit(self, u: _Unit) -> None:
        view = self.view
        assert view is not None    # active: prepared
        frames = (self.frames_pending + u.frames) if self.omni else []
        self.frames_pending = []
        t0 = time.monotonic()
        try:
            res = await self.engine.call(view.unit, u.pcm, frames or None, u.force_listen)
        except (EngineInputError, EngineBackendError) as e:
            self.metrics.engine_error(e)
            await self.send_error(str(e))
            return
        measured_ms = (time.monotonic() - t0) * 1000
        answered = UnitAnswered(
            index=self.units, pcm=u.pcm, frames=frames, force_listen=u.force_listen, result=res,
            cost_all_ms=round(float((res.timings or {}).get("cost_all_ms", measured_ms)), 2),
            wall_clock_ms=round((time.monotonic() - u.mono_received) * 1000, 2),
            t_received=u.t_received, t_sent=self.rec.now())
        self.units += 1
        self.runtime.kv_cache_length = res.kv_cache_length
        await self.observe(answered)

    async def after_engine_idle(self) -> None:
        if self.view is not None:
            await self.engine.call(self.view.reset)
        self.rec.update_meta(units=self.units, units_dropped=self.inbox.dropped)
