"""The recorder observers: per mode, session events → timeline entries and WAVs (``recording.json``,
layout in docs/worker.md). They only queue writes on the ``Recorder``; nothing here waits.
"""
from __future__ import annotations

import time
from typing import Optional

from ..audio import IN_RATE, OUT_RATE
from ..engine import api
from ..engine.api import Prefilled, SpeechEnded, SpeechStarted
from .events import ChatEvent, Chunk, DuplexEvent, Paused, Reply, UnitAnswered, VoiceEvent
from .recorder import TIMELINE_FLUSH_EVERY, AnyRecorder, image_ext


def record_request(rec: AnyRecorder, msgs: list[api.Message]) -> None:
    """A chat request's user media as files (as decoded for the engine), its text in the timeline."""
    messages = []
    for i, m in enumerate(msgs):
        items: list[dict] = []
        for j, it in enumerate(m.items):
            name = f"input_{i:02d}_{j:02d}"
            if isinstance(it, api.Text):
                items.append({"type": "text", "text": it.text})
            elif isinstance(it, api.Audio):
                items.append({"type": "audio", "file": rec.write_wav(f"{name}.wav", it.pcm, it.sample_rate)})
            elif isinstance(it, api.Image):
                items.append({"type": "image", "file": rec.write_blob(f"{name}.{image_ext(it.data)}", it.data)})
            elif isinstance(it, api.Video):
                ext = "webm" if it.data[:4] == b"\x1a\x45\xdf\xa3" else "mp4"
                items.append({"type": "video", "file": rec.write_blob(f"{name}.{ext}", it.data)})
        entry: dict = {"role": m.role, "items": items}
        if m.tool_calls:
            entry["tool_calls"] = [_call(c) for c in m.tool_calls]
        if m.tool_call_id:
            entry["tool_call_id"] = m.tool_call_id
        messages.append(entry)
    rec.add_event({"messages": messages})


def _call(c: api.ToolCall) -> dict:
    return {"id": c.id, "name": c.name, "arguments": c.arguments}


class ChatTimeline:
    """One entry for the reply (times from when generation was asked for) and ``ai.wav``."""

    def __init__(self, rec: AnyRecorder) -> None:
        self.rec = rec
        self.t0 = time.monotonic()
        self.t_prefill: Optional[float] = None
        self.t_first: Optional[float] = None

    async def on(self, ev: ChatEvent) -> None:
        if isinstance(ev, Prefilled):
            self.t_prefill = time.monotonic()
        elif isinstance(ev, Chunk):
            self.t_first = self.t_first or time.monotonic()
        else:
            ai_wav = self.rec.write_wav("ai.wav", ev.audio, OUT_RATE)
            entry: dict = {"t_prefill_done_s": self._since_t0(self.t_prefill),
                           "t_first_chunk_s": self._since_t0(self.t_first),
                           "t_done_s": self._since_t0(time.monotonic()), "input_tokens": ev.input_tokens,
                           "generated_tokens": ev.generated_tokens, "chunks": ev.chunks,
                           "text": ev.text, "ai_audio": ai_wav, "stopped": ev.cut}
            if ev.tool_calls:
                entry["tool_calls"] = [_call(c) for c in ev.tool_calls]
            self.rec.add_event(entry)

    def _since_t0(self, t: Optional[float]) -> Optional[float]:
        return None if t is None else round(t - self.t0, 3)


class HalfDuplexTimeline:
    """One entry per turn (session clock) with ``user_turn_NNN.wav`` and ``ai_turn_NNN.wav``."""

    def __init__(self, rec: AnyRecorder) -> None:
        self.rec = rec
        self._speech_start: Optional[float] = None   # of the speech going on (it may span feeds)
        self._t_start: Optional[float] = None        # of the turn being answered
        self._t_end = 0.0
        self._t_first: Optional[float] = None

    async def on(self, ev: VoiceEvent) -> None:
        if isinstance(ev, SpeechStarted):
            self._speech_start = self.rec.now()
        elif isinstance(ev, SpeechEnded):
            self._t_start, self._t_end, self._t_first = self._speech_start, self.rec.now(), None
            self._speech_start = None
        elif isinstance(ev, Chunk):
            self._t_first = self._t_first or self.rec.now()
        elif isinstance(ev, Reply):
            self._turn(ev)

    def _turn(self, r: Reply) -> None:
        n, rec, speech = r.turn, self.rec, r.speech
        rec.add_event({
            "turn_index": n, "t_speech_start_s": None if self._t_start is None else round(self._t_start, 3),
            "t_speech_end_s": round(self._t_end, 3),
            "speech_duration_ms": float(speech.duration_ms) if speech is not None else 0.0,
            "user_audio": rec.write_wav(f"user_turn_{n:03d}.wav", None if speech is None else speech.segment, IN_RATE),
            "user_text": r.heard, "input_tokens": r.input_tokens, "t_first_chunk_s": self._t_first,
            "t_done_s": round(rec.now(), 3), "ai_text": r.text,
            "ai_audio": rec.write_wav(f"ai_turn_{n:03d}.wav", r.audio, OUT_RATE), "chunks": r.chunks,
            "generated_tokens": r.generated_tokens, "stopped": r.stopped,
            "failed": not r.complete and not r.stopped})
        rec.flush_timeline()


class DuplexTimeline:
    """Per unit: an entry, the audio on ``user.wav`` / ``ai.wav`` / ``replay.wav``, the frames as
    files; pause and resume as events."""

    def __init__(self, rec: AnyRecorder) -> None:
        self.rec = rec

    async def on(self, ev: DuplexEvent) -> None:
        rec = self.rec
        if isinstance(ev, UnitAnswered):
            self._unit(ev)
        elif isinstance(ev, Paused):
            rec.add_event({"event": "pause", "t_s": round(rec.now(), 3), "timeout_s": ev.timeout_s})
        elif ev.was_paused:
            rec.add_event({"event": "resume", "t_s": round(rec.now(), 3)})

    def _unit(self, u: UnitAnswered) -> None:
        rec, res = self.rec, u.result
        offsets = rec.duplex_unit(u.pcm, u.t_received, u.speech, u.t_sent)
        files = [rec.write_blob(f"frames/unit_{u.index:06d}_{i}.{image_ext(f)}", f) for i, f in enumerate(u.frames)]
        rec.add_event({
            "unit": u.index, "t_received_s": round(u.t_received, 3), "t_sent_s": round(u.t_sent, 3),
            "is_listen": res.is_listen, "text": u.text, "user_text": res.user_text, "end_of_turn": res.end_of_turn,
            "force_listen": u.force_listen, "frames": [f for f in files if f], "n_tokens": res.n_tokens,
            "kv_cache_length": res.kv_cache_length, "cost_all_ms": u.cost_all_ms, "wall_clock_ms": u.wall_clock_ms,
            "timings": {k: v for k, v in (res.timings or {}).items() if isinstance(v, (int, float))}, **offsets})
        if (u.index + 1) % TIMELINE_FLUSH_EVERY == 0:
            rec.flush_timeline()
