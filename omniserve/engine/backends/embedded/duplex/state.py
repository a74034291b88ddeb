"""The duplex session's state: one phase at a time, and the only moves between phases.

    LISTENING   ─pause───────────────▶ SPECULATING   (reply prepared, not handed out)
    LISTENING   ─end of turn / cap───▶ SPEAKING
    SPECULATING ─confirm─────────────▶ SPEAKING      (units hand the reply out)
    SPECULATING ─discard / cut───────▶ LISTENING     (the user spoke on)
    SPEAKING    ─done / barge-in─────▶ LISTENING
    any         ─close───────────────▶ CLOSED

- LISTENING: no reply exists. The user may be mid-utterance (captions run) or silent.
- SPECULATING: a reply is being prepared on a pause; nothing of it is handed out, and it is
  dropped unheard (with its user turn) if the user goes on speaking.
- SPEAKING: the turn is confirmed; units hand the reply out (unless listening is forced) until
  it ends or the user barges in.
- CLOSED: the session was closed; every unit is refused.

``EmbeddedDuplex._step`` (session.py) is the one place that decides a move; ``Machine.to``
refuses any move not in ``MOVES``.
"""
from __future__ import annotations

from enum import Enum
from typing import Optional


class DuplexPhase(Enum):
    LISTENING = "listening"
    SPECULATING = "speculating"
    SPEAKING = "speaking"
    CLOSED = "closed"


L, SP, SK = DuplexPhase.LISTENING, DuplexPhase.SPECULATING, DuplexPhase.SPEAKING

MOVES: dict[tuple[DuplexPhase, DuplexPhase], str] = {
    (L, SP): "a pause of SPECULATE_MS after MIN_UTTERANCE_MS of voiced speech: start the reply unheard",
    (L, SK): "end of turn (END_SILENCE_MS of silence) or the monologue cap: start the reply, confirmed",
    (SP, SK): "the pause reached END_SILENCE_MS: confirm the speculative reply",
    (SP, L): "the user went on speaking (discard), or the reply was cut",
    (SK, L): "the reply was handed out to its end, or the user barged in",
}


class Machine:
    def __init__(self) -> None:
        self.phase = DuplexPhase.LISTENING
        self.last: Optional[tuple[DuplexPhase, DuplexPhase, str]] = None    # the latest move and why (diagnostics)

    def to(self, new: DuplexPhase, why: str) -> None:
        old = self.phase
        if new is not DuplexPhase.CLOSED and (old, new) not in MOVES:
            raise RuntimeError(f"duplex: no move from {old.name} to {new.name} ({why})")
        self.phase = new
        self.last = (old, new, why)
