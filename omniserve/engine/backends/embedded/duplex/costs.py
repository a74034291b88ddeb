"""What a unit cost: the unit call itself plus the background work done since the previous unit.

The unit call only runs VAD and moves buffers; the real work — captions, the final ASR, prefills,
token generation, speech, camera notes — runs in background threads. Timing only the call (as
this policy once did) gives a few ms whatever happens, so "keeps pace" (``cost_all_ms <
chunk_ms``, PROTOCOL.md) could never fail. Each unit's ``timings`` therefore are:

- ``cost_unit_ms``: wall time inside the ``unit`` call (VAD + moving buffers);
- ``cost_vad_ms``: the VAD part of it;
- ``cost_asr_ms``: background ASR (captions, final transcripts) busy since the previous unit;
- ``cost_llm_ms``: background LLM busy since the previous unit (caption and reply prefills,
  token generation, warming the next turn);
- ``cost_tts_ms``: background speech synthesis busy since the previous unit;
- ``cost_vision_ms``: camera descriptions busy since the previous unit;
- ``cost_all_ms`` = ``cost_unit_ms + cost_asr_ms + cost_llm_ms + cost_tts_ms + cost_vision_ms``:
  the unit's work as if done in series;
- ``bg_asr_prefill_ms``: the current reply's ASR + prefill time (its start, once known).

"Busy" is wall time while a stage has a call in flight (the elapsed part of a call still running
counts in the unit it is read in, the rest in the next), union over that stage's threads, since a
stage's calls queue on one lock. Work of a reply that was cut or discarded is still counted until
its threads end. Any stage busy through a whole unit makes ``cost_all_ms >= chunk_ms``: that
cascade cannot keep up. Stages run in parallel threads, so on several cores a session whose sum is
a little above ``chunk_ms`` may still keep pace; below it, it surely does.
"""
from __future__ import annotations

import time
from typing import Optional

from ..reply import SpokenReply, WorkMeter

STAGES = ("asr", "llm", "tts", "vision")
REPLY_STAGES = ("llm", "tts")


class UnitCosts:
    def __init__(self, meter: WorkMeter) -> None:
        self.meter = meter
        self._seen = meter.totals()
        self._replies: list[tuple[SpokenReply, dict[str, float]]] = []   # started, not yet fully counted

    def watch(self, reply: SpokenReply) -> None:
        self._replies.append((reply, {}))

    def replies(self) -> list[SpokenReply]:
        """Replies whose work is still being counted (the current one, and cut ones still running)."""
        return [r for r, _ in self._replies]

    def _background(self) -> dict[str, float]:
        """Busy ms per stage since the previous call."""
        now = self.meter.totals()
        out = {s: now.get(s, 0.0) - self._seen.get(s, 0.0) for s in STAGES}
        self._seen = now
        kept = []
        for reply, seen in self._replies:
            ended = not reply.producing            # read first: nothing it does after is missed
            t = reply.work.totals()
            for s in REPLY_STAGES:
                out[s] += t.get(s, 0.0) - seen.get(s, 0.0)
            if not ended:
                kept.append((reply, t))
        self._replies = kept
        return out

    def take(self, reply: Optional[SpokenReply], vad_ms: float, t0: float) -> dict:
        """The timings of the unit whose call started at ``t0`` (``time.perf_counter``);
        ``reply``: the reply the unit started with."""
        bg = self._background()
        unit_ms = (time.perf_counter() - t0) * 1000
        return {"cost_vad_ms": round(vad_ms, 2), "cost_asr_ms": round(bg["asr"], 1),
                "cost_llm_ms": round(bg["llm"], 1), "cost_tts_ms": round(bg["tts"], 1),
                "cost_vision_ms": round(bg["vision"], 1),
                "bg_asr_prefill_ms": round(reply.before_ms, 1) if reply is not None else 0.0,
                "cost_unit_ms": round(unit_ms, 2),
                "cost_all_ms": round(unit_ms + sum(bg.values()), 2)}
