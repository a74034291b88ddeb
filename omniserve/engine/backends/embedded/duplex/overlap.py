"""Speech over the assistant's voice: a backchannel ("yeah", "mm-hm") or a real interruption.

An utterance that opens while the assistant is still heard (a reply is being handed out, or its
last audio is still playing at the client) does not cut the reply at once: the page ducks the
voice on its own, the reply goes on, and the utterance is judged every unit from its voiced time
and its live caption:

- an **interruption**: ``BARGE_IN_MS`` of voiced speech, or ``BARGE_IN_WORDS`` words in its caption
  that are not backchannel words or phrases, once it has ``WORDS_MIN_MS`` of voiced speech (on a
  shorter sound Whisper tiny.en invents words: "cool" → "Kill them."). The reply is cut (``end_of_turn``), and the utterance goes on
  as the user's next turn;
- a **backchannel**: the utterance falls silent for ``BACKCHANNEL_END_MS`` before that. It is
  dropped: the reply goes on, and it is never answered as a turn of its own (also when the reply
  ended meanwhile).

``Audible`` estimates what the client still has to play: what units handed out minus the time
that passed (``chunk_ms`` a unit).
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Optional

from ..components.text import HAN
from .tuning import (BACKCHANNEL_END_MS, BACKCHANNEL_HAN, BACKCHANNEL_PHRASES, BACKCHANNEL_WORDS, BARGE_IN_MS,
                     BARGE_IN_WORDS, OUT_SAMPLES_PER_MS, WORDS_MIN_MS)
from .utterance import UtteranceTracker


class Verdict(Enum):
    UNDECIDED = "undecided"
    BACKCHANNEL = "backchannel"
    INTERRUPTION = "interruption"


def content_words(text: str) -> int:
    """Words of ``text`` that are not backchannel words or phrases (a Chinese character is a word)."""
    words = " ".join(w for w in re.findall(r"[a-z0-9'-]+", text.lower()) if w.strip("'-"))
    for phrase in BACKCHANNEL_PHRASES:
        words = re.sub(rf"\b{re.escape(phrase)}\b", " ", words)
    han = sum(ch not in BACKCHANNEL_HAN for ch in HAN.findall(text))
    return han + sum(w not in BACKCHANNEL_WORDS for w in words.split())


def judge(voiced_ms: float, silence_ms: float, words: str) -> Verdict:
    if voiced_ms >= BARGE_IN_MS or (voiced_ms >= WORDS_MIN_MS and content_words(words) >= BARGE_IN_WORDS):
        return Verdict.INTERRUPTION
    if silence_ms >= BACKCHANNEL_END_MS:
        return Verdict.BACKCHANNEL
    return Verdict.UNDECIDED


class Overlap:
    """The open utterance that started over the assistant's voice, until it is judged."""

    def __init__(self) -> None:
        self._serial: Optional[int] = None

    def begin(self, utt: UtteranceTracker) -> None:
        self._serial = utt.serial

    def pending(self, utt: UtteranceTracker) -> bool:
        return utt.open and self._serial == utt.serial

    def judge(self, utt: UtteranceTracker, words: str) -> Verdict:
        """The verdict on the pending utterance; once decided, it is no longer pending."""
        v = judge(utt.voiced_ms, utt.silence_ms, words)
        if v is not Verdict.UNDECIDED:
            self._serial = None
        return v


class Audible:
    """How much of the handed-out reply audio the client has still to play (an estimate)."""

    def __init__(self, chunk_ms: int) -> None:
        self.chunk_ms = chunk_ms
        self.ms = 0.0

    def unit(self, handed_out_samples: int) -> None:
        """A unit went by, handing out this much audio."""
        self.ms = max(0.0, self.ms - self.chunk_ms) + handed_out_samples / OUT_SAMPLES_PER_MS

    def clear(self) -> None:
        self.ms = 0.0

    @property
    def heard(self) -> bool:
        """The client was still playing some of it while the latest unit was captured."""
        return self.ms > 0

    @property
    def running_low(self) -> bool:
        """By the next unit's result the client will have less than a unit left to play."""
        return self.ms < 2 * self.chunk_ms
