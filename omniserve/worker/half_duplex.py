"""``/ws/half_duplex/{session_id}``: voice turns found by server VAD; the worker is held all session.

Reader task → ``Inbox`` → main loop. The reader validates every frame and answers bad ones with
``error`` at once; ``stop`` sets the engine's stop event immediately, so a reply being generated
ends within one chunk. Audio that arrives while a reply is generated stays queued (oldest dropped
past ``half_duplex_max_queued_audio_s``) and is fed to the VAD after the reply.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..audio import IN_RATE, OUT_RATE, encode_f32
from ..engine.api import (Delta, EngineBackendError, EngineInputError, Prefilled, ReplyDone, SpeechEnded,
                          SpeechStarted, VadSettings)
from ..protocol.messages import (AudioChunkHD, GeneratingMsg, HalfDuplexPrepare, HDChunkMsg, HDPreparedMsg,
                                 StoppedMsg, Stop, TimeoutMsg, TurnDoneMsg, VadStateMsg,
                                 parse_half_duplex)
from . import convert, limits
from .streaming import StreamingSession
from .state import Status

MAX_CHUNK_S = 5.0   # one audio_chunk is ~0.5 s; more than this is a client bug


@dataclass
class _Turn:
    """A user turn being answered (what its recording entry needs)."""
    speech: SpeechEnded
    t_start: Optional[float]
    t_end: float
    pre: Optional[Prefilled] = None
    t_first: Optional[float] = None
    chunks: int = 0
    texts: list[str] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)


class HalfDuplexSession(StreamingSession):
    status = Status.BUSY_HALF_DUPLEX
    request_type = "half_duplex_audio"
    stream_kind = "half_duplex"
    prepare_type = HalfDuplexPrepare
    parse = staticmethod(parse_half_duplex)

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.view: Any = None
        self.turn_index = 0

    # ------------------------------------------------------------------- reader
    def take(self, msg: Any) -> None:
        if isinstance(msg, AudioChunkHD):
            pcm = limits.audio(msg.audio_base64, max_s=MAX_CHUNK_S, what="audio_base64")
            self.last_audio = time.monotonic()
            self.inbox.put(pcm)
            keep = int(self.cfg.half_duplex_max_queued_audio_s / 0.5)
            self.inbox.drop_oldest(lambda x: isinstance(x, np.ndarray), keep)
            return
        if isinstance(msg, Stop):
            self.stop.set()
        self.inbox.put(msg)

    # --------------------------------------------------------------------- main
    async def main(self) -> str:
        self.spawn_reader(self._reader())
        started = time.monotonic()
        self.open_recording(label=self.session_id)
        timeout_s = await self.await_prepare(started)
        if isinstance(timeout_s, str):
            return timeout_s
        self.last_audio = time.monotonic()
        grace_end = time.monotonic() + limits.VAD_GRACE_S
        session_end = started + self.cfg.max_session_s
        speech_start: Optional[float] = None
        while True:
            idle_end = self.last_audio + timeout_s
            # the binding deadline names the reason (timers may fire a hair early: don't re-check the clock)
            reason = "max_session" if session_end <= idle_end else "idle"
            try:
                item = await self.inbox.get(min(idle_end, session_end) - time.monotonic())
            except asyncio.TimeoutError:
                elapsed = time.monotonic() - (self.last_audio if reason == "idle" else started)
                await self.send(TimeoutMsg(elapsed_s=round(elapsed, 3), reason=reason))
                return f"timeout_{reason}"
            self.ensure_open(item)
            if isinstance(item, Stop) or self.stop.is_set():
                await self.send(StoppedMsg(session_id=self.session_id))
                return "stop"
            if isinstance(item, HalfDuplexPrepare):
                await self.send_error("Session already prepared")
                continue
            if not isinstance(item, np.ndarray) or time.monotonic() < grace_end:
                continue  # VAD results are ignored for 0.5 s after prepare
            speech_start = await self._feed(item, speech_start)
            if self.stop.is_set():
                self.ensure_open(None)           # a client gone mid-reply ends as a disconnect
                await self.send(StoppedMsg(session_id=self.session_id))
                return "stop"

    async def before_prepare(self, item: Any) -> None:
        if isinstance(item, np.ndarray):
            await self.send_error("Send prepare before audio_chunk")

    async def _prepare(self, p: HalfDuplexPrepare) -> float:
        cfg = p.config
        ref = convert.reference_pcm(p.ref_audio_base64 or convert.first_audio(p.system_content), "ref_audio_base64")
        prompt = convert.system_text(p.system_prompt, p.system_content)
        timeout_s = limits.capped(cfg.session.timeout_s, 180.0, self.cfg.half_duplex_timeout_cap_s)
        proc = self.state.processor
        self.state.cached_prefix_hashes = []
        voice = await self.engine(proc.voice, ref) if cfg.tts.enabled else None
        self.view = await self.engine(proc.set_half_duplex_mode)
        vad = VadSettings(**cfg.vad.model_dump())
        tokens = await self.engine(self.view.prepare, prompt, voice=voice, generation=convert.generation(cfg.generation),
                                   vad=vad)
        self.rec.update_meta(system_prompt=prompt, voice=getattr(voice, "name", None), prompt_tokens=tokens,
                             config=cfg.model_dump(), timeout_s=timeout_s, ref_audio=ref is not None)
        await self.send(HDPreparedMsg(session_id=self.session_id, timeout_s=timeout_s, recording_session_id=self.rec.id))
        return timeout_s

    # --------------------------------------------------------------------- turns
    async def _feed(self, pcm: np.ndarray, speech_start: Optional[float]) -> Optional[float]:
        """Feed one chunk; the events it brings go to the client (a turn's reply among them).
        Returns when the current speech started (recording clock), None when idle."""
        turn: Optional[_Turn] = None
        try:
            async for ev in self.engine_stream(lambda: self.view.feed(pcm, self.stop)):
                if isinstance(ev, SpeechStarted):
                    speech_start = self.rec.now()
                    await self.send(VadStateMsg(speaking=True))
                elif isinstance(ev, SpeechEnded):
                    await self.send(VadStateMsg(speaking=False))
                    await self.send(GeneratingMsg(speech_duration_ms=round(float(ev.duration_ms), 1)))
                    turn = _Turn(ev, speech_start, self.rec.now())
                    speech_start = None
                elif turn is not None and isinstance(ev, Prefilled):
                    turn.pre = ev
                elif turn is not None and isinstance(ev, Delta):
                    await self._chunk(turn, ev)
                elif turn is not None and isinstance(ev, ReplyDone):
                    await self._done(turn, ev)
                    turn = None
        except (EngineInputError, EngineBackendError) as e:
            await self.send_error(str(e))
        if turn is not None:            # a turn cut by a stop or an error: record what there is
            await self._done(turn, None)
        return speech_start

    async def _chunk(self, turn: "_Turn", d: Delta) -> None:
        if self.stop.is_set():
            return
        has_audio = d.audio is not None and len(d.audio) > 0
        if not d.text and not has_audio:
            return
        turn.t_first = turn.t_first or self.rec.now()
        turn.texts.append(d.text or "")
        if has_audio:
            turn.audio.append(d.audio)
        await self.send(HDChunkMsg(text_delta=d.text or "", audio_data=encode_f32(d.audio) if has_audio else "",
                                   chunk_index=turn.chunks, duration_ms=round(1000 * len(d.audio) / OUT_RATE, 1) if has_audio else 0.0))
        turn.chunks += 1

    async def _done(self, turn: "_Turn", result: Optional[ReplyDone]) -> None:
        """One reply ended: the last chunk (is_final) and turn_done, then the recording's entry."""
        stopped = self.stop.is_set() or (result is not None and result.stopped)
        text = result.text if result is not None and result.text else "".join(turn.texts)
        heard = turn.pre.heard if turn.pre is not None else ""
        if result is not None and not stopped:
            await self.send(HDChunkMsg(chunk_index=turn.chunks, is_final=True))
            await self.send(TurnDoneMsg(turn_index=self.turn_index, text=text, user_text=heard))
        self.state.kv_cache_length = await self.engine(self.view.kv_cache_length)
        n = self.turn_index
        ai = np.concatenate(turn.audio) if turn.audio else None
        ev = turn.speech
        self.rec.add_event({
            "turn_index": n, "t_speech_start_s": None if turn.t_start is None else round(turn.t_start, 3),
            "t_speech_end_s": round(turn.t_end, 3), "speech_duration_ms": float(ev.duration_ms),
            "user_audio": self.rec.write_wav(f"user_turn_{n:03d}.wav", ev.segment, IN_RATE), "user_text": heard,
            "input_tokens": turn.pre.input_tokens if turn.pre is not None else 0, "t_first_chunk_s": turn.t_first,
            "t_done_s": round(self.rec.now(), 3), "ai_text": text,
            "ai_audio": self.rec.write_wav(f"ai_turn_{n:03d}.wav", ai, OUT_RATE), "chunks": turn.chunks,
            "generated_tokens": result.generated_tokens if result is not None else 0, "stopped": stopped,
            "failed": result is None and not stopped})
        self.rec.flush_timeline()
        self.turn_index += 1

    async def after_engine_idle(self) -> None:
        if self.view is not None:
            await self.engine(self.view.reset)
        self.rec.update_meta(turns=self.turn_index, audio_dropped_chunks=self.inbox.dropped)
