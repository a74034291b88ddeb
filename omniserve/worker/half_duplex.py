"""``/ws/half_duplex/{session_id}``: voice turns found by server VAD; the worker is held all session.

Reader task → ``Inbox`` → main loop. The reader validates every frame and answers bad ones with
``error`` at once; ``stop`` sets the engine's stop event immediately, so a reply being generated
ends within one chunk. Audio that arrives while a reply is generated stays queued (oldest dropped
past ``half_duplex_max_queued_audio_s``) and is fed to the VAD after the reply.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import numpy as np

from ..audio import IN_RATE, OUT_RATE, encode_f32
from ..engine.api import EngineInputError, VadSettings
from ..protocol.messages import (AudioChunkHD, GeneratingMsg, HalfDuplexPrepare, HDChunkMsg, HDPreparedMsg,
                                 StoppedMsg, Stop, TimeoutMsg, TurnDoneMsg, VadStateMsg,
                                 parse_half_duplex)
from . import convert, limits
from .streaming import StreamingSession
from .state import Status

MAX_CHUNK_S = 5.0   # one audio_chunk is ~0.5 s; more than this is a client bug


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
            try:
                events = await self.engine(self.view.feed, item)
            except EngineInputError as e:
                await self.send_error(str(e))
                continue
            for ev in events:
                if ev.kind == "speech_start":
                    speech_start = self.rec.now()
                    await self.send(VadStateMsg(speaking=True))
                elif ev.kind == "speech_end":
                    await self.send(VadStateMsg(speaking=False))
                    await self._turn(ev, speech_start)
                    speech_start = None
                    if self.stop.is_set():
                        break

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
        voice = await self.engine(proc.voice_from_reference, ref) if ref is not None else await self.engine(proc.default_voice)
        self.view = await self.engine(proc.set_half_duplex_mode)
        vad = VadSettings(**cfg.vad.model_dump())
        tokens = await self.engine(self.view.prepare, prompt, voice=voice, generation=convert.generation(cfg.generation),
                                   tts=cfg.tts.enabled, vad=vad)
        self.rec.update_meta(system_prompt=prompt, voice=getattr(voice, "name", None), prompt_tokens=tokens,
                             config=cfg.model_dump(), timeout_s=timeout_s, ref_audio=ref is not None)
        await self.send(HDPreparedMsg(session_id=self.session_id, timeout_s=timeout_s, recording_session_id=self.rec.id))
        return timeout_s

    # --------------------------------------------------------------------- turn
    async def _turn(self, ev: Any, speech_start: Optional[float]) -> None:
        """One reply: generating → chunk… (last one is_final) → turn_done."""
        t_end = self.rec.now()
        seg = ev.segment if ev.segment is not None else np.zeros(0, np.float32)
        await self.send(GeneratingMsg(speech_duration_ms=round(float(ev.speech_duration_ms), 1)))
        try:
            pre = await self.engine(self.view.prefill, seg, self.stop)
        except EngineInputError as e:
            await self.send_error(str(e))
            return
        idx, texts, audio = 0, [], []
        t_first = None
        async for d in self.engine_stream(lambda: self.view.generate(self.stop)):
            if self.stop.is_set():
                break
            has_audio = d.audio is not None and len(d.audio) > 0
            if not d.text and not has_audio:
                continue
            t_first = t_first or self.rec.now()
            texts.append(d.text or "")
            if has_audio:
                audio.append(d.audio)
            await self.send(HDChunkMsg(text_delta=d.text or "", audio_data=encode_f32(d.audio) if has_audio else "",
                                       chunk_index=idx, duration_ms=round(1000 * len(d.audio) / OUT_RATE, 1) if has_audio else 0.0))
            idx += 1
        stopped = self.stop.is_set()
        # after a stop the engine thread may still be winding down: only a finished stream's result is ours
        result = None if stopped else self.view.last_result
        text = result.text if result is not None and result.text else "".join(texts)
        if not stopped:
            await self.send(HDChunkMsg(chunk_index=idx, is_final=True))
            await self.send(TurnDoneMsg(turn_index=self.turn_index, text=text, user_text=pre.transcript))
        self.state.kv_cache_length = await self.engine(self.view.kv_cache_length)
        n = self.turn_index
        ai = np.concatenate(audio) if audio else None
        self.rec.add_event({
            "turn_index": n, "t_speech_start_s": None if speech_start is None else round(speech_start, 3), "t_speech_end_s": round(t_end, 3),
            "speech_duration_ms": float(ev.speech_duration_ms),
            "user_audio": self.rec.write_wav(f"user_turn_{n:03d}.wav", seg, IN_RATE), "user_text": pre.transcript,
            "input_tokens": pre.input_tokens, "t_first_chunk_s": t_first, "t_done_s": round(self.rec.now(), 3),
            "ai_text": text, "ai_audio": self.rec.write_wav(f"ai_turn_{n:03d}.wav", ai, OUT_RATE),
            "chunks": idx, "generated_tokens": getattr(result, "generated_tokens", 0), "stopped": stopped})
        self.rec.flush_timeline()
        self.turn_index += 1

    async def after_engine_idle(self) -> None:
        if self.view is not None:
            await self.engine(self.view.reset)
        self.rec.update_meta(turns=self.turn_index, audio_dropped_chunks=self.inbox.dropped)
