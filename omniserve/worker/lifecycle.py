"""A session's life as one small state machine, and the ONE deadline that binds it at any moment.

::

    await_prepare ──prepared──▶ active ──pause───▶ paused       (duplex only)
          │                     │      ◀──resume──  │
          └─────────────────────┴───────────────────┴──▶ ending   (stop, timeout, gone, error, done)

Chat is the degenerate case: await request → active → ending.

Deadlines, each named by its reason (``timeout {reason}`` on the wire)::

    await_prepare   prepare_wait_s after the session started             no_prepare
    active          idle_s after the last audio_chunk (none in chat)      idle
    paused          the pause's own timeout                               pause_timeout
    active, paused  max_session_s after the start (wins a tie; not chat)  max_session

A phase change is reported to ``on_phase`` (the connection maps it to the worker's ``/health``
status). The clock starts at ``begin()``: once the session holds the worker.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Callable, Optional


class Phase(str, enum.Enum):
    AWAIT_PREPARE = "await_prepare"
    ACTIVE = "active"
    PAUSED = "paused"
    ENDING = "ending"


class Limit(str, enum.Enum):
    """What a deadline limits; the value is the wire's ``timeout.reason``."""
    PREPARE = "no_prepare"
    IDLE = "idle"
    PAUSE = "pause_timeout"
    MAX_SESSION = "max_session"

    @property
    def end_reason(self) -> str:
        """The recording's ``end_reason`` when this deadline ends the session."""
        return "timeout_prepare" if self is Limit.PREPARE else f"timeout_{self.value}"


@dataclass(frozen=True)
class Deadline:
    at: float          # time.monotonic() when it passes
    limit: Limit
    since: float       # when the span it bounds began: the session start, the last audio, the pause
    started: float     # when the session started

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def elapsed_s(self) -> float:
        """Seconds of the span it bounds, so far (rounded as on the wire)."""
        return round(time.monotonic() - self.since, 3)

    def session_elapsed_s(self) -> float:
        return round(time.monotonic() - self.started, 3)


class TransitionError(RuntimeError):
    """A phase change the state machine does not have (a bug in a session loop)."""


class Lifecycle:
    def __init__(self, *, prepare_wait_s: float, max_session_s: Optional[float],
                 on_phase: Optional[Callable[[Phase], None]] = None) -> None:
        self.prepare_wait_s = prepare_wait_s
        self.max_session_s = max_session_s      # None: no limit once active (chat)
        self.on_phase = on_phase
        self.phase = Phase.AWAIT_PREPARE
        self.started = self.last_audio = time.monotonic()
        self.idle_s: Optional[float] = None
        self._paused_at = 0.0
        self._pause_s = 0.0

    # ---------------------------------------------------------------- transitions
    def begin(self) -> None:
        """Start the clock (the session now holds the worker)."""
        self.started = self.last_audio = time.monotonic()

    def activate(self, idle_s: Optional[float]) -> None:
        """await_prepare → active; ``idle_s`` is how long the client may send no audio (None: no limit)."""
        self._move(Phase.ACTIVE, Phase.AWAIT_PREPARE)
        self.idle_s = idle_s
        self.last_audio = time.monotonic()

    def pause(self, timeout_s: float) -> None:
        """active → paused (a pause while paused starts its timeout again)."""
        self._move(Phase.PAUSED, Phase.ACTIVE, Phase.PAUSED)
        self._paused_at, self._pause_s = time.monotonic(), timeout_s

    def resume(self) -> bool:
        """paused → active; False (nothing changes) when not paused."""
        if self.phase is not Phase.PAUSED:
            return False
        self._move(Phase.ACTIVE, Phase.PAUSED)
        self.last_audio = time.monotonic()
        return True

    def end(self) -> None:
        """any → ending (the one cleanup path runs next)."""
        self._move(Phase.ENDING, *Phase)

    def heard_audio(self) -> None:
        """An ``audio_chunk`` arrived: the idle deadline starts again."""
        self.last_audio = time.monotonic()

    def _move(self, to: Phase, *allowed: Phase) -> None:
        if self.phase not in allowed:
            raise TransitionError(f"{self.phase.value} → {to.value}")
        changed = self.phase is not to
        self.phase = to
        if changed and self.on_phase is not None:
            self.on_phase(to)

    # ------------------------------------------------------------------ deadline
    def deadline(self) -> Optional[Deadline]:
        """The deadline that binds now (None: nothing limits this phase)."""
        if self.phase is Phase.AWAIT_PREPARE:
            return self._deadline(self.started + self.prepare_wait_s, Limit.PREPARE, self.started)
        if self.phase is Phase.ENDING:
            return None
        own: Optional[Deadline] = None
        if self.phase is Phase.PAUSED:
            own = self._deadline(self._paused_at + self._pause_s, Limit.PAUSE, self._paused_at)
        elif self.idle_s is not None:
            own = self._deadline(self.last_audio + self.idle_s, Limit.IDLE, self.last_audio)
        if self.max_session_s is None:
            return own
        session = self._deadline(self.started + self.max_session_s, Limit.MAX_SESSION, self.started)
        return session if own is None or session.at <= own.at else own

    def _deadline(self, at: float, limit: Limit, since: float) -> Deadline:
        return Deadline(at, limit, since, self.started)
