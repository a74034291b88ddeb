"""A text conversation with a sliding window: the history half-duplex and duplex sessions keep.

The system prompt is never dropped. When the rendered prompt nears the context size the oldest
turns go, and enough of them at once (down to ``low_water`` of the budget) that the prompt's
prefix — and with it the LLM's cached prefix — changes rarely: each drop costs one re-evaluation
of what remains, so we want it once in many turns, not every turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

MAX_TURNS = 400          # hard bound on memory whatever the token counts say
MAX_TURN_CHARS = 4000    # one runaway turn cannot fill the context on its own


@dataclass
class Turn:
    role: str            # "system" | "user" | "assistant"
    text: str


class Conversation:
    """System prompt + alternating turns, bounded in tokens and in count."""

    def __init__(self, system: str = "") -> None:
        self.system = system
        self.turns: list[Turn] = []
        self.dropped = 0      # turns dropped by the window so far (for diagnostics)

    def messages(self) -> list[dict]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": t.role, "content": t.text} for t in self.turns]

    def add(self, role: str, text: str) -> None:
        text = (text or "").strip()[:MAX_TURN_CHARS]
        if self.turns and self.turns[-1].role == role:     # two user turns in a row: merge
            self.turns[-1].text = (self.turns[-1].text + " " + text).strip()[:MAX_TURN_CHARS]
        else:
            self.turns.append(Turn(role, text))
        while len(self.turns) > MAX_TURNS:
            self._drop_oldest()

    def clear(self) -> None:
        self.turns.clear()

    def _drop_oldest(self) -> None:
        self.turns.pop(0)
        self.dropped += 1
        while self.turns and self.turns[0].role != "user":   # keep user-first order
            self.turns.pop(0)
            self.dropped += 1

    def fit(self, count_tokens: Callable[[Sequence[dict]], int], budget: int, low_water: float = 0.6) -> int:
        """Drop oldest turns until the rendered prompt fits ``budget`` tokens; returns turns dropped.

        The last turn (the one about to be answered) is always kept.
        """
        if count_tokens(self.messages()) <= budget:
            return 0
        before = len(self.turns)
        target = int(budget * low_water)
        while len(self.turns) > 1 and count_tokens(self.messages()) > target:
            self._drop_oldest()
        return before - len(self.turns)
