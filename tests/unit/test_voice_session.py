"""Half-duplex turns and speculation on a scripted cascade (tests/support/scripted.py): no models.

The microphone is fed one 512-sample window at a time and ``say`` makes one window per character
(the scripted VAD hears it as speech, the scripted ASR reads the text back). After every window
the session is settled (its speculation has finished, or waits at the gated LM), so each run is
deterministic.
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np
import pytest

from omniserve.engine.api import (Delta, EngineInputError, GenerationParams, Prefilled, ReplyDone, SpeechEnded,
                                  SpeechStarted, VadSettings)
from omniserve.engine.backends.embedded import voice_session as vs
from tests.support.scripted import Scripted, ScriptedASR, ScriptedLM, speech

WINDOW = 512
END_SILENCE_MS = 320                       # the VAD endpoint of these sessions
VAD = VadSettings(threshold=0.5, min_speech_duration_ms=128, min_silence_duration_ms=END_SILENCE_MS, speech_pad_ms=30)
PARAMS = GenerationParams(max_new_tokens=64, temperature=0.0)
SPEC_WINDOWS = -(-vs.SPECULATE_MS // 32)    # silent windows that start the speculation
END_WINDOWS = END_SILENCE_MS // 32          # silent windows that end the turn


def say(text: str) -> np.ndarray:
    return speech(text, samples_per_char=WINDOW)


def quiet(windows: int) -> np.ndarray:
    return np.zeros(windows * WINDOW, np.float32)


class Mic:
    """A voice session fed window by window, settled after each window."""

    def __init__(self, s: Optional[Scripted] = None, voice: bool = True) -> None:
        self.s = s or Scripted()
        b = self.s.backend
        self.v = b.voice_session("Be brief.", VAD, PARAMS, b.voice(None) if voice else None)
        assert self.v.prepare() > 0
        self.stop = threading.Event()

    def feed(self, audio: np.ndarray, on_event=None) -> list:
        events = []
        for i in range(0, audio.size, WINDOW):
            for ev in self.v.feed(audio[i:i + WINDOW], self.stop):
                events.append(ev)
                if on_event is not None:
                    on_event(ev)
            self.s.settle(self.v)
        return events

    def roles(self) -> list[str]:
        return [m["role"] for m in self.v.history()]


@pytest.fixture
def mics():
    made: list[Mic] = []

    def make(s: Optional[Scripted] = None, **kw) -> Mic:
        made.append(Mic(s, **kw))
        return made[-1]

    yield make
    for m in made:
        m.v.close()


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def check_turn(events: list) -> tuple[Prefilled, list[Delta], ReplyDone]:
    k = kinds(events)
    assert k[:3] == ["SpeechStarted", "SpeechEnded", "Prefilled"] and k[-1] == "ReplyDone", k
    assert set(k[3:-1]) <= {"Delta"}, k
    return events[2], events[3:-1], events[-1]


# ------------------------------------------------------------------------------ speculation
def test_a_speculation_is_adopted_at_the_endpoint_with_its_audio_ready(mics):
    mic = mics(Scripted(lm=ScriptedLM("Hi there, how can I help?")))
    head = mic.feed(np.concatenate([quiet(5), say("what is up"), quiet(SPEC_WINDOWS)]))
    assert kinds(head) == ["SpeechStarted"]
    spec = mic.v.speculation
    assert spec is not None                                     # started on the pause, before the endpoint
    assert not spec.producing and spec.buffered_samples() > 0   # … and its speech is ready already
    assert mic.s.asr.calls and mic.s.lm.streams == 1
    rest = mic.feed(quiet(END_WINDOWS))
    pre, deltas, done = check_turn(head + rest)
    assert mic.v.speculation_hits == 1
    assert mic.s.lm.streams == 1 and len(mic.s.asr.calls) == 1  # adopted: no second ASR, no second reply
    assert pre.heard == "what is up" and done.heard == "what is up"
    assert done.text == "Hi there, how can I help?" and not done.stopped
    assert any(d.audio is not None for d in deltas)
    assert "".join(d.text for d in deltas) == done.text
    assert mic.roles() == ["system", "user", "assistant"]
    assert mic.v.history()[1]["content"] == "what is up"


def test_a_speculation_is_dropped_when_the_user_speaks_on(mics):
    lm = ScriptedLM(["The speculative answer.", "The answer to all of it."])
    mic = mics(Scripted(lm=lm))
    events = mic.feed(np.concatenate([quiet(5), say("what is"), quiet(SPEC_WINDOWS)]))
    assert mic.v.speculation is not None and lm.streams == 1
    events += mic.feed(say(" up then"))                          # speaks on: more than 40 ms of speech
    assert mic.v.speculation is None
    events += mic.feed(quiet(END_WINDOWS))
    pre, deltas, done = check_turn(events)
    assert mic.v.speculation_hits == 1                         # the next pause's speculation was adopted
    assert lm.streams == 2 and len(mic.s.asr.calls) == 2
    assert pre.heard == "what is up then"
    assert done.text == "The answer to all of it."              # nothing of the dropped reply was heard
    assert mic.roles() == ["system", "user", "assistant"]       # its copy of the history never came back
    assert mic.v.history()[1]["content"] == "what is up then"


def test_a_speculation_that_heard_no_words_is_not_adopted(mics):
    asr = ScriptedASR(["", "hello"])                             # the speculation hears nothing, the turn does
    mic = mics(Scripted(asr=asr))
    events = mic.feed(np.concatenate([quiet(5), say("hello"), quiet(SPEC_WINDOWS + END_WINDOWS)]))
    pre, _, done = check_turn(events)
    assert mic.v.speculation_hits == 0 and len(asr.calls) == 2 and mic.s.lm.streams == 1
    assert pre.heard == "hello" and done.text


# ------------------------------------------------------------------------------ errors, stop, history
def test_no_words_recognised_is_an_input_error(mics):
    mic = mics(Scripted(asr=ScriptedASR("")))
    with pytest.raises(EngineInputError, match="no words"):
        mic.feed(np.concatenate([quiet(5), say("mumble"), quiet(SPEC_WINDOWS + END_WINDOWS)]))
    assert mic.roles() == ["system"] and mic.s.lm.streams == 0


def test_stop_mid_reply_ends_it_and_the_history_keeps_what_was_said(mics):
    long = " ".join(f"word{i}." for i in range(60))
    mic = mics(Scripted(lm=ScriptedLM(long, gated=True)))
    mic.s.lm.release(3)
    seen: list = []

    def on_event(ev) -> None:
        seen.append(ev)
        if isinstance(ev, Delta) and ev.text:
            mic.stop.set()                                       # the user pressed stop at the first words

    events = mic.feed(np.concatenate([quiet(5), say("tell me"), quiet(SPEC_WINDOWS + END_WINDOWS)]), on_event)
    pre, deltas, done = check_turn(events)
    assert done.stopped and done.finish_reason == "cancelled"
    said = "".join(d.text for d in deltas)
    assert said and said == done.text and said != long
    assert sum(1 for d in deltas if d.text) == 1                # nothing after the stop
    assert mic.roles() == ["system", "user", "assistant"]
    assert mic.v.history()[2]["content"] == said.strip()


def test_turns_keep_user_assistant_order(mics):
    lm = ScriptedLM(["First answer.", "Dropped answer.", "Second answer.", "Third answer."])
    mic = mics(Scripted(lm=lm))
    end = quiet(SPEC_WINDOWS + END_WINDOWS)
    check_turn(mic.feed(np.concatenate([quiet(5), say("number one"), end])))
    # a turn whose first speculation is dropped: the user paused, then went on
    _, _, done = check_turn(mic.feed(np.concatenate([say("number two"), quiet(SPEC_WINDOWS), say(" and more"), end])))
    assert done.text == "Second answer."
    check_turn(mic.feed(np.concatenate([say("number three"), end])))
    assert mic.roles() == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in mic.v.history()[1:]] == ["number one", "First answer.", "number two and more",
                                                           "Second answer.", "number three", "Third answer."]
    assert mic.v.speculation_hits == 3 and lm.streams == 4


def test_text_only_without_a_voice(mics):
    mic = mics(voice=False)
    _, deltas, done = check_turn(mic.feed(np.concatenate([quiet(5), say("hello"), quiet(SPEC_WINDOWS + END_WINDOWS)])))
    assert done.text and all(d.audio is None for d in deltas) and not mic.s.speaker.calls


def test_speech_events_carry_the_segment(mics):
    mic = mics()
    events = mic.feed(np.concatenate([quiet(5), say("hello"), quiet(SPEC_WINDOWS + END_WINDOWS)]))
    assert isinstance(events[0], SpeechStarted) and isinstance(events[1], SpeechEnded)
    seg = events[1].segment
    assert seg.dtype == np.float32 and mic.s.asr.calls[-1] > 0
    assert seg.size >= len("hello") * WINDOW
