"""``/ws/half_duplex/{session_id}``: voice turns found by server VAD; the worker is held all session.

Reader task → ``Inbox`` → the loop of ``StreamingConnection`` (await-prepare → active → ending).
The reader validates every frame and answers bad ones with ``error`` at once; ``stop`` sets the
engine's stop event immediately, so a reply being generated ends within one chunk. Audio that
arrives while a reply is generated stays queued (oldest dropped past
``half_duplex_max_queued_audio_s``) and is fed to the VAD after the reply. The engine's events go
to the wire writer and the recorder (``HalfDuplexWire``, ``HalfDuplexTimeline``).
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from ..engine.api import (Delta, EngineBackendError, EngineInputError, HalfDuplexView, SpeechEnded, SpeechStarted,
                          VadSettings)
from ..protocol import modes
from ..protocol.messages import AudioChunkHD, HalfDuplexPrepare, HDPreparedMsg, Stop, parse_half_duplex
from . import convert, limits
from .events import Observers, Reply, VoiceEvent
from .lifecycle import Phase
from .state import Status
from .streaming import StreamingConnection
from .timeline import HalfDuplexTimeline
from .wire import HalfDuplexWire

MAX_CHUNK_S = 5.0   # one audio_chunk is ~0.5 s; more than this is a client bug


class HalfDuplexConnection(StreamingConnection):
    request_type = modes.HALF_DUPLEX.request_type
    statuses = {Phase.AWAIT_PREPARE: Status.BUSY_HALF_DUPLEX, Phase.ACTIVE: Status.BUSY_HALF_DUPLEX}
    stream_kind = "half_duplex"
    prepare_type = HalfDuplexPrepare
    parse = staticmethod(parse_half_duplex)
    timeout_message = staticmethod(HalfDuplexWire.timeout)
    observe: Observers[VoiceEvent]

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.view: Optional[HalfDuplexView] = None
        self.turns = 0
        self.listen_from = 0.0     # VAD results are ignored until then (0.5 s after prepare)

    async def main(self) -> str:
        self.open_recording(label=self.session_id)
        self.observe = Observers(HalfDuplexTimeline(self.rec), self.metrics.voice(self.request_type),
                                 HalfDuplexWire(self.send))
        return await self.run()

    # ------------------------------------------------------------------- reader
    def take(self, msg: Any) -> None:
        if isinstance(msg, AudioChunkHD):
            pcm = limits.audio(msg.audio_base64, max_s=MAX_CHUNK_S, what="audio_base64")
            self.life.heard_audio()
            self.inbox.put(pcm)
            keep = int(self.cfg.half_duplex_max_queued_audio_s / 0.5)
            self.inbox.drop_oldest(lambda x: isinstance(x, np.ndarray), keep)
            return
        if isinstance(msg, Stop):
            self.stop.set()
        self.inbox.put(msg)

    # ------------------------------------------------------------------ phases
    async def before_prepare(self, item: Any) -> None:
        if isinstance(item, np.ndarray):
            await self.send_error("Send prepare before audio_chunk")

    async def prepare(self, p: HalfDuplexPrepare) -> float:
        cfg = p.config
        ref = convert.reference_pcm(p.ref_audio_base64 or convert.first_audio(p.system_content), "ref_audio_base64")
        prompt = convert.system_text(p.system_prompt, p.system_content)
        timeout_s = limits.capped(cfg.session.timeout_s, 180.0, self.cfg.half_duplex_timeout_cap_s)
        view, voice = await self.open_view(self.processor.set_half_duplex_mode, ref, speak=cfg.tts.enabled)
        self.view = view
        tokens = await self.engine.call(view.prepare, prompt, voice=voice, generation=convert.generation(cfg.generation),
                                        vad=VadSettings(**cfg.vad.model_dump()))
        self.rec.update_meta(system_prompt=prompt, voice=voice.name if voice else None, prompt_tokens=tokens,
                             config=cfg.model_dump(), timeout_s=timeout_s, ref_audio=ref is not None)
        await self.send(HDPreparedMsg(session_id=self.session_id, timeout_s=timeout_s, recording_session_id=self.rec.id))
        self.listen_from = time.monotonic() + limits.VAD_GRACE_S
        return timeout_s

    async def handle(self, item: Any) -> None:
        if isinstance(item, HalfDuplexPrepare):
            await self.send_error("Session already prepared")
        elif isinstance(item, np.ndarray) and time.monotonic() >= self.listen_from:
            await self._feed(item)

    # -------------------------------------------------------------------- turns
    async def _feed(self, pcm: np.ndarray) -> None:
        """Feed one chunk; the events it brings go to both observers, a turn's reply among them
        (after a stop, its chunks are dropped: the reply ends within one chunk)."""
        view = self.view
        assert view is not None    # active: prepared
        reply: Optional[Reply] = None
        try:
            async for ev in self.engine.stream(lambda: view.feed(pcm, self.stop)):
                if isinstance(ev, SpeechEnded):
                    reply = Reply(turn=self.turns, speech=ev)
                if isinstance(ev, (SpeechStarted, SpeechEnded)):
                    await self.observe(ev)
                elif reply is not None and not (isinstance(ev, Delta) and self.stop.is_set()):
                    heard = reply.take(ev)
                    if heard is not None:
                        await self.observe(heard)
                    if reply.complete:
                        await self._end_turn(reply)
                        reply = None
        except (EngineInputError, EngineBackendError) as e:
            self.metrics.engine_error(e)
            await self.send_error(str(e))
            if reply is not None and reply.pre is None:
                reply = None             # nothing was answered ("no words were recognized"): no turn
        if reply is not None:            # a turn cut by a stop or an error: record what there is
            await self._end_turn(reply)
        # the engine's own count, once the feed is over (an engine call made inside the stream
        # would wait for the feed while nobody reads the stream)
        self.runtime.kv_cache_length = await self.engine.call(view.kv_cache_length)

    async def _end_turn(self, reply: Reply) -> None:
        """The reply is over: both observers hear of it (the recording's entry; the last ``chunk``
        and ``turn_done`` unless it was cut); ``/health`` learns the context's length from the
        reply's tokens before ``turn_done`` goes out."""
        self.runtime.kv_cache_length = reply.input_tokens + reply.generated_tokens
        await self.observe(reply.close(self.stop.is_set()))
        self.turns += 1

    async def after_engine_idle(self) -> None:
        if self.view is not None:
            await self.engine.call(self.view.reset)
        self.rec.update_meta(turns=self.turns, audio_dropped_chunks=self.inbox.dropped)
