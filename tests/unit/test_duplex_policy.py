"""The duplex policy's moves on a scripted cascade (tests/support/scripted.py): no models, no sleeps.

Units are 160 ms = 5 VAD windows, and ``say`` makes one window per character (the scripted VAD
hears speech in it, the scripted ASR reads the text back), so every expectation below is an exact
unit index derived from the policy's constants. Before every unit the session is settled (its
background work done, or the gated LM waiting), which makes each run deterministic.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from omniserve import knobs
from omniserve.engine.api import DuplexSettings, EngineBackendError, EngineInputError, UnitResult
from omniserve.engine.backends.embedded.duplex import DuplexPhase
from omniserve.engine.backends.embedded.duplex import tuning as T
from omniserve.engine.backends.embedded.duplex.state import MOVES, Machine
from omniserve.engine.backends.embedded.reply import WorkMeter
from tests.support.scripted import (Scripted, ScriptedASR, ScriptedLM, ScriptedSpeaker, ScriptedVision, heard, speech,
                                    tiny_png)

CHUNK_MS = 160
WPU = 5                                   # VAD windows per unit
UNIT = WPU * T.WINDOW
L, SP, SK = DuplexPhase.LISTENING, DuplexPhase.SPECULATING, DuplexPhase.SPEAKING


def say(text: str) -> np.ndarray:
    return speech(text, samples_per_char=T.WINDOW)          # one window per character


def quiet(windows: int) -> np.ndarray:
    return np.zeros(windows * T.WINDOW, np.float32)


def ms(n_windows: int) -> float:
    return n_windows * T.WINDOW_MS


def windows_for(ms_: float) -> int:
    return math.ceil(ms_ / T.WINDOW_MS)


class Run:
    """One duplex session on a scripted cascade, fed unit by unit and settled before each unit."""

    def __init__(self, s: Optional[Scripted] = None, **cfg) -> None:
        self.s = s or Scripted()
        base: dict = dict(chunk_ms=CHUNK_MS, force_listen_count=0, omni=False)
        base.update(cfg)
        self.cfg = DuplexSettings(**base)
        self.d = self.s.backend.duplex("Be brief.", self.s.backend.voice(None), self.cfg)
        assert self.d.prepare() > 0
        self.results: list[UnitResult] = []
        self.phases: list[DuplexPhase] = []
        self._pending = np.zeros(0, np.float32)

    def feed(self, audio: np.ndarray, force: bool = False, frames=None) -> list[UnitResult]:
        """Units of ``audio`` (whole units only; the rest waits for the next feed)."""
        self._pending = np.concatenate([self._pending, audio])
        out = []
        while self._pending.size >= UNIT:
            chunk, self._pending = self._pending[:UNIT], self._pending[UNIT:]
            self.s.settle(self.d)
            r = self.d.unit(chunk, frames, force)
            self.results.append(r)
            self.phases.append(self.d.phase)
            out.append(r)
        self.s.settle(self.d)
        return out

    def roles(self) -> list[str]:
        return [m["role"] for m in self.d.conv.messages()]

    def user_turns(self) -> list[str]:
        return [m["content"] for m in self.d.conv.messages() if m["role"] == "user"]

    def close(self) -> None:
        self.d.close()


def first(phases: list[DuplexPhase], phase: DuplexPhase, start: int = 0) -> int:
    return next(i for i in range(start, len(phases)) if phases[i] is phase)


@pytest.fixture
def runs():
    made: list[Run] = []

    def make(s: Optional[Scripted] = None, **cfg) -> Run:
        made.append(Run(s, **cfg))
        return made[-1]

    yield make
    for r in made:
        r.close()


# The standard turn: 5 silent windows, "hello there" (11 windows), then silence.
LEAD, WORDS = 5, "hello there"
OPEN_W = LEAD + windows_for(T.START_MS) - 1                  # the window that opens the utterance
SILENCE_FROM = LEAD + len(WORDS)                             # the first silent window after the words
SPEC_UNIT = (SILENCE_FROM + windows_for(T.SPECULATE_MS) - 1) // WPU
CONFIRM_UNIT = (SILENCE_FROM + windows_for(T.END_SILENCE_MS) - 1) // WPU


def turn_audio(tail_windows: int = 60) -> np.ndarray:
    return np.concatenate([quiet(LEAD), say(WORDS), quiet(tail_windows)])


# ------------------------------------------------------------------------------ the state machine
def test_only_declared_moves_are_made():
    m = Machine()
    with pytest.raises(RuntimeError, match="no move"):
        m.to(DuplexPhase.LISTENING, "nothing happened")
    for (a, b) in [(L, SP), (SP, SK), (SK, L), (L, SK), (SK, L), (L, SP), (SP, L), (L, SK)]:
        m.to(b, "test")
        assert m.phase is b and m.last == (a, b, "test")
    with pytest.raises(RuntimeError):
        m.to(DuplexPhase.SPECULATING, "a confirmed reply never goes back to speculation")
    assert (SK, SP) not in MOVES                               # a confirmed reply never goes back to speculation
    m.to(DuplexPhase.CLOSED, "closed")
    assert m.phase is DuplexPhase.CLOSED


def test_the_policy_keeps_its_documented_timings():
    """docs/engine.md states these; the tests below derive their expectations from them."""
    assert (T.START_MS, T.SPECULATE_MS, T.END_SILENCE_MS, T.MIN_UTTERANCE_MS, T.MAX_UTTERANCE_S, T.PREROLL_MS,
            T.FRAME_EVERY_S, T.AUDIO_LEAD_MS, T.REPLY_MAX_TOKENS, T.FIRST_WORDS, T.PARTIAL_MAX) == \
        (190, 128, 480, 250, 30.0, 400, 3.0, 200, 120, 3, 160000)
    assert (T.WINDOW, T.SPEECH_P, T.SILENCE_P, T.DISCARD_MS) == (512, 0.5, 0.35, 64.0)
    assert (T.BARGE_IN_MS, T.BARGE_IN_WORDS, T.WORDS_MIN_MS, T.BACKCHANNEL_END_MS, T.WAIT_SHARE, T.WAIT_MAX_MS) == \
        (500, 2, 300, 320, 0.7, 700)
    assert T.START_MS < T.BARGE_IN_MS and T.BACKCHANNEL_END_MS < T.END_SILENCE_MS


# ------------------------------------------------------------------------------ listen → speculate → confirm
def test_listens_while_the_user_speaks_then_speculates_then_confirms(runs):
    run = runs(Scripted(lm=ScriptedLM("Hi there, how are you today?")))
    run.feed(turn_audio())
    ph = run.phases
    assert all(p is L for p in ph[:SPEC_UNIT]), ph
    assert ph[SPEC_UNIT] is SP, ph                            # SPECULATE_MS of silence: the reply starts unheard
    assert all(p is SP for p in ph[SPEC_UNIT:CONFIRM_UNIT]), ph
    assert ph[CONFIRM_UNIT] is SK, ph                         # END_SILENCE_MS: confirmed and handed out at once
    assert all(r.is_listen and not r.text and r.audio is None for r in run.results[:CONFIRM_UNIT])
    assert not run.results[CONFIRM_UNIT].is_listen and run.results[CONFIRM_UNIT].text
    assert run.s.lm.streams == 1                              # the speculative reply is the one spoken
    assert run.user_turns() == [WORDS]
    assert run.roles() == ["system", "user", "assistant"]
    assert run.d.conv.messages()[2]["content"] == "Hi there, how are you today?"
    assert any(r.user_text == WORDS for r in run.results)     # the caption / final words are reported once
    assert sum(r.user_text == WORDS for r in run.results) == 1


def test_listen_prob_scale_stretches_the_end_of_turn_silence(runs):
    run = runs(listen_prob_scale=2.0)
    run.feed(turn_audio(80))
    confirm = (SILENCE_FROM + windows_for(2 * T.END_SILENCE_MS) - 1) // WPU
    assert run.phases[SPEC_UNIT] is SP
    assert first(run.phases, SK) == confirm, run.phases


def test_the_reply_is_handed_out_a_unit_at_a_time(runs):
    text = "one two three four five six seven eight nine ten."
    run = runs(Scripted(lm=ScriptedLM(text), speaker=ScriptedSpeaker(samples_per_char=400)),
               max_new_speak_tokens_per_chunk=3)
    run.feed(turn_audio(100))
    speaking = [r for r in run.results if not r.is_listen]
    assert speaking and run.results.index(speaking[0]) == CONFIRM_UNIT
    out_chunk = CHUNK_MS * 24
    sizes = [0 if r.audio is None else r.audio.size for r in speaking]
    assert sizes[0] == out_chunk + T.AUDIO_LEAD_MS * 24 > sizes[1]   # the first speaking unit has the lead
    assert all(n == out_chunk for n in sizes[1:-1]), sizes     # then about chunk_ms a unit
    assert 0 < sizes[-1] <= out_chunk
    assert all(r.n_tokens <= 3 for r in speaking)
    assert [r.n_tokens for r in speaking][:4] == [3, 3, 3, 1]
    assert "".join(r.text for r in speaking) == text
    assert all(r.n_tts_tokens == (0 if r.audio is None else r.audio.size // 960) for r in speaking)
    audio = np.concatenate([r.audio for r in speaking if r.audio is not None])
    expected = np.concatenate([speech(c, samples_per_char=400) for c in run.s.speaker.calls])
    assert np.array_equal(audio, expected)                     # every sample, in order, nothing dropped
    assert heard(audio).replace(" ", "") == text.replace(" ", "")
    assert [r.end_of_turn for r in run.results].count(True) == 1 and speaking[-1].end_of_turn
    after = run.results.index(speaking[-1]) + 1
    assert all(p is L for p in run.phases[after - 1:])         # the unit that hands out the end listens again
    assert run.roles() == ["system", "user", "assistant"]


def test_text_only_when_audio_is_off(runs):
    run = runs(Scripted(lm=ScriptedLM("Just words here.")), generate_audio=False)
    run.feed(turn_audio())
    assert "".join(r.text for r in run.results) == "Just words here."
    assert all(r.audio is None for r in run.results) and not run.s.speaker.calls


# ------------------------------------------------------------------------------ discard
@pytest.mark.parametrize("held", [True, False], ids=["reply-held", "reply-finished"])
def test_speech_resuming_before_confirmation_discards_the_speculation(runs, held):
    """The speculative reply is dropped unheard whether it is still being written or had
    finished, and neither its user turn nor its answer stays in the conversation."""
    lm = ScriptedLM(["Speculative answer.", "The real answer."], gated=held)
    run = runs(Scripted(lm=lm))
    spoken = LEAD + len("hello my")
    pause = -(-(spoken + windows_for(T.SPECULATE_MS)) // WPU) * WPU - spoken     # to a unit's end
    assert ms(pause) < T.END_SILENCE_MS
    run.feed(np.concatenate([quiet(LEAD), say("hello my"), quiet(pause)]))
    assert run.d.phase is SP and lm.streams == 1
    resumed = windows_for(T.DISCARD_MS) + 1          # a little more voiced time than DISCARD_MS
    run.feed(np.concatenate([say(" " * resumed), quiet(WPU - resumed)]))
    assert run.d.phase is L and run.d.utterance.open            # the utterance goes on
    run.s.settle(run.d)                                         # the cancelled reply's thread tidies up
    assert run.user_turns() == [] and run.roles() == ["system"]
    lm.gated = False
    lm.release(100)
    run.feed(np.concatenate([say("friend"), quiet(60)]))
    assert lm.streams == 2
    assert run.user_turns() == ["hello my friend"]               # one turn: the whole utterance
    assert run.roles() == ["system", "user", "assistant"]
    assert run.d.conv.messages()[2]["content"] == "The real answer."
    assert "".join(r.text for r in run.results) == "The real answer."     # nothing of the first was heard
    assert [m["role"] for m in lm.prefills[-1]] == ["system", "user"]


def test_a_blip_of_speech_shorter_than_the_discard_margin_keeps_the_speculation(runs):
    run = runs()
    run.feed(np.concatenate([quiet(LEAD), say(WORDS), quiet(windows_for(T.SPECULATE_MS))]))
    assert run.d.phase is SP
    blip = windows_for(T.DISCARD_MS)                             # voiced exactly DISCARD_MS more: kept
    run.feed(np.concatenate([say(" " * blip), quiet(60)]))
    assert SK in run.phases and L not in run.phases[run.phases.index(SP):run.phases.index(SK)]
    assert run.s.lm.streams == 1


# ------------------------------------------------------------------------------ barge-in
# Speech over a reply opens an utterance after START_MS; it cuts the reply once it has BARGE_IN_MS of
# voiced time (the window index below, counted from the start of the speech) or BARGE_IN_WORDS words.
CUT_W = windows_for(T.BARGE_IN_MS) - 1
OPEN_OVER_W = windows_for(T.START_MS) - 1


def speaking_reply(lm: ScriptedLM, **cfg) -> Run:
    """A confirmed reply of which "alpha … epsilon" was handed out, and more is waiting."""
    run = Run(Scripted(lm=lm), **cfg)
    run.feed(turn_audio(30))
    assert run.d.phase is SK and run.results[-1].is_listen       # confirmed, nothing written yet
    lm.release(5)                                                 # "alpha … epsilon": a 3-word piece is voiced
    (r,) = run.feed(quiet(WPU))
    assert not r.is_listen and r.text == "alpha beta gamma delta epsilon" and r.audio is not None
    lm.release(3)
    run.s.settle(run.d)
    reply = run.d.turn.reply
    assert reply.buffered_samples() > 0 or reply._text            # more is waiting to be handed out
    return run


LONG = "alpha beta gamma delta epsilon zeta eta theta iota kappa."


def test_a_real_interruption_cuts_the_reply_and_is_the_next_turn(runs):
    """One long word (its caption never has two words): cut by its voiced time alone."""
    lm = ScriptedLM([LONG, "Sure, go ahead."], gated=True)
    run = speaking_reply(lm)
    reply = run.d.turn.reply
    interruption = "w" * (CUT_W + 1 + WPU)
    cut = run.feed(say(interruption)[: UNIT * (CUT_W // WPU + 1)])
    at = next(i for i, r in enumerate(cut) if r.end_of_turn)
    assert at == CUT_W // WPU
    assert all(not r.end_of_turn for r in cut[:at])
    assert not cut[0].is_listen and cut[0].text == " zeta eta theta"     # the reply went on meanwhile (ducked)
    assert cut[at].is_listen and cut[at].audio is None and not cut[at].text
    assert reply.cancelled and reply.take(100, 10 ** 6) == ("", 0, None)    # buffers dropped
    assert run.d.phase is L and run.d.utterance.open
    said = "".join(r.text for r in run.results)
    assert said == "alpha beta gamma delta epsilon zeta eta theta"
    deadline = time.monotonic() + 2.0        # the cut reply's thread writes what was heard as it ends
    while len(run.d.conv.messages()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.d.conv.messages()[2] == {"role": "assistant", "content": said}   # what was handed out
    lm.gated = False
    lm.release(100)
    run.feed(quiet(60))
    assert run.user_turns() == [WORDS, "w" * (CUT_W // WPU + 1) * WPU]    # the interruption is the next turn
    assert run.roles() == ["system", "user", "assistant", "user", "assistant"]
    assert run.d.conv.messages()[-1]["content"] == "Sure, go ahead."
    run.close()


def test_two_words_heard_over_the_reply_cut_it_before_the_time_limit(runs):
    """A two-word interruption shorter than BARGE_IN_MS: its live caption cuts the reply."""
    lm = ScriptedLM([LONG, "Okay."], gated=True)
    run = speaking_reply(lm)
    try:
        words = "no, wait now"                               # three words, not backchannel words
        assert T.WORDS_MIN_MS <= ms(len(words)) < T.BARGE_IN_MS
        cut = run.feed(np.concatenate([say(words), quiet(WPU * 4)]))
        at = next(i for i, r in enumerate(cut) if r.end_of_turn)   # too short for the time rule: the words cut it
        assert cut[at].is_listen and cut[at].user_text == words     # (the caption that decided it)
        lm.gated = False
        lm.release(100)
        run.feed(quiet(60))
        assert run.user_turns() == [WORDS, words]              # and it is the next turn
    finally:
        run.close()


@pytest.mark.parametrize("words", ["yeah yeah", "mmmmmmmm", "uh-huh"])
def test_a_backchannel_does_not_cut_the_reply_and_is_not_answered(runs, words):
    lm = ScriptedLM([LONG, "This must never be said."], gated=True)
    run = speaking_reply(lm)
    try:
        assert ms(len(words)) >= T.START_MS and ms(len(words)) < T.BARGE_IN_MS   # opens an utterance, short
        over = run.feed(np.concatenate([say(words), quiet(windows_for(T.BACKCHANNEL_END_MS) + WPU)]))
        assert not any(r.end_of_turn for r in over)
        assert all(not r.is_listen for r in over[:2])        # the reply kept being handed out
        assert run.d.phase is SK and not run.d.utterance.open   # the backchannel was dropped
        lm.gated = False
        lm.release(100)
        run.feed(quiet(WPU * 40))
        assert "".join(r.text for r in run.results) == LONG    # the whole reply, nothing cut
        ends = [r for r in run.results if r.end_of_turn]
        assert len(ends) == 1 and not ends[0].is_listen      # ended by itself: the last piece spoke
        assert lm.streams == 1                               # never answered
        assert run.roles() == ["system", "user", "assistant"] and run.user_turns() == [WORDS]
    finally:
        run.close()


def test_a_backchannel_while_the_last_audio_still_plays_is_not_answered(runs):
    """The reply has been handed out, but the client is still playing its end: still a backchannel."""
    run = runs(Scripted(lm=ScriptedLM(["Hi.", "This must never be said."]), speaker=ScriptedSpeaker(samples_per_char=2400)))
    run.feed(turn_audio(0))
    while not any(r.end_of_turn for r in run.results):
        run.feed(quiet(WPU))
    assert run.d.phase is L and run.d.audible.heard          # handed out, not yet all played
    run.feed(np.concatenate([say("yeah yeah"), quiet(60)]))
    assert run.s.lm.streams == 1 and run.roles() == ["system", "user", "assistant"]
    assert all(r.is_listen for r in run.results[-5:])


def test_the_same_speech_with_no_reply_playing_is_an_ordinary_turn(runs):
    """Overlap rules apply only over the assistant's voice: a short turn in silence is answered."""
    run = runs()
    run.feed(np.concatenate([quiet(LEAD), say("yeah yeah"), quiet(60)]))
    assert run.s.lm.streams == 1 and run.user_turns() == ["yeah yeah"]


def test_barge_in_after_the_reply_was_written_keeps_only_what_was_handed_out(runs):
    long = " ".join(f"word{i}" for i in range(40)) + "."
    lm = ScriptedLM([long, "Sure."])
    run = runs(Scripted(lm=lm), max_new_speak_tokens_per_chunk=1)
    run.feed(turn_audio(30))
    run.s.settle(run.d)                                           # the whole reply is written already
    reply = run.d.turn.reply
    assert reply is not None and not reply.producing
    assert run.d.conv.messages()[-1]["content"] == long         # written whole into the history
    run.feed(quiet(WPU))                                          # one unit of it is handed out
    cut = run.feed(say("w" * (CUT_W + WPU))[: UNIT * (CUT_W // WPU + 1)])
    assert any(r.end_of_turn for r in cut)
    said = "".join(r.text for r in run.results).strip()
    assert said and len(said.split()) < 40
    assert run.d.conv.messages()[2] == {"role": "assistant", "content": said}     # …cut to what was heard


def test_speech_during_the_speculation_is_not_a_barge_in(runs):
    run = runs(Scripted(lm=ScriptedLM("Fine.", gated=True)))
    run.feed(np.concatenate([quiet(LEAD), say(WORDS), quiet(windows_for(T.SPECULATE_MS))]))
    assert run.d.phase is SP
    res = run.feed(say(" " * 10))
    assert not any(r.end_of_turn for r in res)                  # nothing was heard: a discard, not a cut
    assert run.d.phase is L


# ------------------------------------------------------------------------------ forced listening
def test_force_listen_holds_the_reply_and_resumes_it(runs):
    text = "one two three four five six seven eight nine ten eleven twelve."
    run = runs(Scripted(lm=ScriptedLM(text), speaker=ScriptedSpeaker(samples_per_char=400)))
    run.feed(turn_audio(int(CONFIRM_UNIT * WPU - SILENCE_FROM - LEAD + 2 * WPU)))
    speaking = [i for i, r in enumerate(run.results) if not r.is_listen]
    assert speaking and not run.results[-1].end_of_turn
    held = run.feed(quiet(WPU * 2), force=True)
    assert all(r.is_listen and r.audio is None and not r.text and not r.end_of_turn for r in held)
    assert run.d.phase is SK and not run.d.turn.reply.cancelled
    run.feed(quiet(WPU * 30))
    spoken = [r for r in run.results if not r.is_listen]
    assert "".join(r.text for r in spoken) == text
    audio = np.concatenate([r.audio for r in spoken if r.audio is not None])
    assert np.array_equal(audio, np.concatenate([speech(c, samples_per_char=400) for c in run.s.speaker.calls]))


def test_force_listen_count_prepares_the_reply_but_hands_it_out_only_after(runs):
    forced = CONFIRM_UNIT + 4
    run = runs(force_listen_count=forced)
    run.feed(turn_audio(80))
    assert all(r.is_listen and not r.text for r in run.results[:forced])
    assert run.phases[SPEC_UNIT] is SP
    assert all(p is SP for p in run.phases[SPEC_UNIT:forced])      # ended long ago, but listening is forced
    assert run.phases[forced] is SK and not run.results[forced].is_listen
    assert run.s.lm.streams == 1


# ------------------------------------------------------------------------------ what gets no reply, what gets cut
@pytest.mark.parametrize("voiced_windows,answered", [(windows_for(T.MIN_UTTERANCE_MS) - 1, False),
                                                     (windows_for(T.MIN_UTTERANCE_MS), True)])
def test_an_utterance_shorter_than_min_utterance_gets_no_reply(runs, voiced_windows, answered):
    run = runs()
    run.feed(np.concatenate([quiet(LEAD), say("x" * voiced_windows), quiet(60)]))
    assert (run.s.lm.streams == 1) is answered
    assert (SK in run.phases) is answered
    assert not run.d.utterance.open                              # closed at the end of turn either way
    if not answered:
        assert all(p is L for p in run.phases) and run.roles() == ["system"]


def test_a_monologue_is_answered_at_the_cap(runs):
    run = runs(Scripted(lm=ScriptedLM("Let me answer that.", gated=True)))
    cap = int(T.MAX_UTTERANCE_S * 1000 / T.WINDOW_MS) + (T.MAX_UTTERANCE_S * 1000 % T.WINDOW_MS > 0)
    preroll = int(T.PREROLL_MS / T.WINDOW_MS)
    opened_len = min(OPEN_W + 1, preroll)                        # the utterance starts with the pre-roll
    cap_window = OPEN_W + cap - opened_len                       # the window that makes it MAX_UTTERANCE_S long
    run.feed(np.concatenate([quiet(LEAD), say("a" * (cap_window - LEAD + 2 * WPU))]))
    assert first(run.phases, SK) == cap_window // WPU, run.phases
    assert SP not in run.phases                                   # no pause: answered without speculation
    assert len(run.d._utt) <= T._MAX_UTT_WINDOWS


def test_forced_listening_through_a_monologue_keeps_the_buffers_bounded(runs):
    run = runs()
    run.feed(say("a" * (T._MAX_UTT_WINDOWS + 10 * WPU)), force=True)
    assert all(p is L for p in run.phases) and run.s.lm.streams == 0
    assert len(run.d._utt) == T._MAX_UTT_WINDOWS
    assert len(run.d._preroll) <= run.d._preroll.maxlen


# ------------------------------------------------------------------------------ camera
def test_camera_notes_join_the_user_turn_at_most_every_frame_every_s(runs):
    vision = ScriptedVision(["a red door", "a blue door", "a green door"])
    run = runs(Scripted(vision=vision), omni=True)
    frames = [tiny_png()]
    every = math.ceil(T.FRAME_EVERY_S * 1000 / CHUNK_MS)           # units between two descriptions
    run.feed(quiet(WPU * (every - 1)), frames=frames)
    assert vision.calls == 1
    run.feed(turn_audio(60), frames=frames)
    n = len(run.results)
    assert vision.calls == len(range(0, n, every))
    user = run.user_turns()
    assert len(user) == 1 and user[0].startswith(WORDS + " (Camera: a ") and user[0].endswith(" door)"), user
    assert "camera" in run.d.conv.messages()[0]["content"].lower()


def test_a_bad_camera_frame_is_an_input_error_and_the_session_goes_on(runs):
    run = runs(omni=True)
    with pytest.raises(EngineInputError, match="camera frame"):
        run.d.unit(quiet(WPU), [b"garbage"], False)
    assert run.d.unit(quiet(WPU), None, False).is_listen


@pytest.mark.parametrize("caption,content", [("Yeah.", 0), ("Uh-uh. Okay!", 0), ("I see, got it.", 0),
                                             ("Mm-hmm, right", 0), ("No, wait.", 2), ("I see, but why?", 2),
                                             ("Kill them.", 2), ("嗯，对对对。", 0), ("好的好的", 0),
                                             ("不是，等一下", 4), ("是的，不过", 2)])
def test_backchannel_words_and_phrases_are_not_counted(caption, content):
    from omniserve.engine.backends.embedded.duplex.overlap import Verdict, content_words, judge
    assert content_words(caption) == content
    words_rule = Verdict.INTERRUPTION if content >= T.BARGE_IN_WORDS else Verdict.UNDECIDED
    assert judge(T.WORDS_MIN_MS, 0, caption) is words_rule
    assert judge(T.WORDS_MIN_MS - 1, 0, caption) is Verdict.UNDECIDED       # a blip's caption is not trusted
    assert judge(T.BARGE_IN_MS, 0, caption) is Verdict.INTERRUPTION
    assert judge(0, T.BACKCHANNEL_END_MS, "") is Verdict.BACKCHANNEL


# ------------------------------------------------------------------------------ audio as soon as it exists
def test_a_reply_started_in_a_unit_speaks_in_that_unit_once_its_audio_exists(runs):
    """A long unit that holds the whole turn and END_SILENCE_MS after it: the reply starts,
    confirmed, inside the unit, and the unit waits (a share of chunk_ms) for its first audio
    instead of handing it out a unit later. The wait is not counted as the unit's work."""
    tts_s = 0.05
    s = Scripted(lm=ScriptedLM("Hi there."), speaker=ScriptedSpeaker(work_s=tts_s))
    run = runs(s, chunk_ms=1000)
    tail = windows_for(T.END_SILENCE_MS) + 1
    t0 = time.perf_counter()
    r = run.d.unit(turn_audio(tail), None, False)
    took = time.perf_counter() - t0
    assert run.d.phase in (SK, L) and run.s.lm.streams == 1
    assert not r.is_listen and r.audio is not None and r.text      # spoken in this very unit
    assert took >= tts_s and r.timings["cost_unit_ms"] < took * 1000 - tts_s * 1000 * 0.5


def test_the_wait_for_audio_is_bounded_by_a_share_of_the_unit(runs):
    s = Scripted(lm=ScriptedLM("held", gated=True))
    run = runs(s, chunk_ms=200)
    t0 = time.perf_counter()
    r = run.d.unit(turn_audio(windows_for(T.END_SILENCE_MS) + 1), None, False)
    took = time.perf_counter() - t0
    assert run.d.phase is SK and r.is_listen and r.audio is None   # nothing to hand out yet
    assert T.WAIT_SHARE * 0.2 * 0.9 <= took < T.WAIT_SHARE * 0.2 + 0.1
    assert r.timings["cost_unit_ms"] < 50                           # the wait is no work


def test_while_the_client_has_audio_enough_units_do_not_wait(runs):
    s = Scripted(lm=ScriptedLM(LONG, gated=True), speaker=ScriptedSpeaker(samples_per_char=4000))
    run = runs(s)
    run.feed(turn_audio(30))
    s.lm.release(5)
    (first_unit,) = run.feed(quiet(WPU))
    assert first_unit.audio is not None and run.d.audible.ms > 2 * CHUNK_MS    # seconds of speech buffered
    t0 = time.perf_counter()
    run.d.unit(quiet(WPU), None, False)
    assert time.perf_counter() - t0 < T.WAIT_SHARE * CHUNK_MS / 1000 * 0.5


# ------------------------------------------------------------------------------ short units (our pages)
def test_the_pages_unit_is_a_valid_unit_and_the_policy_answers_with_it(runs):
    """Our pages' unit (knobs.DUPLEX_PAGE, not a whole number of VAD windows): the turn is heard,
    answered once, and handed out about chunk_ms of audio a unit, every sample in order."""
    page_ms = knobs.DUPLEX_PAGE.chunk_ms.default
    assert knobs.DUPLEX.chunk_ms.accepts(page_ms) and page_ms < knobs.DUPLEX.chunk_ms.default
    text = "one two three four five six seven eight."
    s = Scripted(lm=ScriptedLM(text), speaker=ScriptedSpeaker(samples_per_char=400))
    run = runs(s, chunk_ms=page_ms)
    n = page_ms * 16
    audio = np.concatenate([turn_audio(int(3000 / T.WINDOW_MS))])
    results = []
    for i in range(0, audio.size - n + 1, n):
        s.settle(run.d)
        results.append(run.d.unit(audio[i:i + n], None, False))
    speaking = [r for r in results if not r.is_listen]
    assert s.lm.streams == 1 and "".join(r.text for r in speaking) == text
    confirm_ms = (SILENCE_FROM + windows_for(T.END_SILENCE_MS)) * T.WINDOW_MS
    assert results.index(speaking[0]) == math.ceil(confirm_ms / page_ms) - 1     # the unit that confirms it
    sizes = [0 if r.audio is None else r.audio.size for r in speaking]
    assert sizes[0] == (page_ms + T.AUDIO_LEAD_MS) * 24 and all(x == page_ms * 24 for x in sizes[1:-1])
    out = np.concatenate([r.audio for r in speaking if r.audio is not None])
    assert np.array_equal(out, np.concatenate([speech(c, samples_per_char=400) for c in s.speaker.calls]))


def test_the_duplex_page_sends_the_pages_unit():
    """The page's default is the knob (one statement: omniserve/knobs.py)."""
    js = (Path(__file__).resolve().parents[2] / "omniserve/web/static/js/duplex-page.js").read_text()
    m = re.search(r"new Settings\([^)]*?chunk_ms:\s*(\d+)", js, re.S)
    assert m and int(m.group(1)) == knobs.DUPLEX_PAGE.chunk_ms.default


# ------------------------------------------------------------------------------ timings
def test_work_meter_counts_union_of_calls_in_flight():
    now = [0.0]
    m = WorkMeter(clock=lambda: now[0])
    with m.busy("asr"):
        now[0] = 0.1
        with m.busy("asr"):                 # a second call queued on the same lock: not counted twice
            now[0] = 0.3
        assert m.totals()["asr"] == pytest.approx(300)     # in flight: counted so far
        now[0] = 0.4
    now[0] = 1.0
    with m.busy("tts"):
        now[0] = 1.25
        assert m.active("tts") and not m.active("asr")
        assert m.totals() == pytest.approx({"asr": 400, "tts": 250})
    assert m.totals() == pytest.approx({"asr": 400, "tts": 250})


def test_cost_all_ms_includes_background_work(runs):
    """A voice too slow for real time (each piece takes longer than a unit) shows
    cost_all_ms >= chunk_ms, though the unit call itself stays a few ms."""
    tts_s, asr_s = 0.2, 0.05
    s = Scripted(asr=ScriptedASR(work_s=asr_s), lm=ScriptedLM("Hi. Hello. Hey."), speaker=ScriptedSpeaker(work_s=tts_s))
    run = runs(s)
    run.feed(turn_audio())
    t = [r.timings for r in run.results]
    keys = {"cost_vad_ms", "cost_asr_ms", "cost_llm_ms", "cost_tts_ms", "cost_vision_ms", "bg_asr_prefill_ms",
            "cost_unit_ms", "cost_all_ms"}
    assert all(set(x) == keys for x in t)
    for x in t:
        bg = x["cost_asr_ms"] + x["cost_llm_ms"] + x["cost_tts_ms"] + x["cost_vision_ms"]
        assert x["cost_all_ms"] == pytest.approx(x["cost_unit_ms"] + bg, abs=0.3)   # each rounded
    # the speculative reply starts in SPEC_UNIT (that unit sees the first moments of its ASR in
    # flight) and runs — ASR, then the slow TTS — before the next unit, which reports the rest
    started, ran = t[SPEC_UNIT], t[SPEC_UNIT + 1]
    assert started["cost_asr_ms"] + ran["cost_asr_ms"] >= asr_s * 1000
    assert started["cost_tts_ms"] == 0.0 and ran["cost_tts_ms"] >= tts_s * 1000 * len(s.speaker.calls)
    assert ran["cost_all_ms"] >= CHUNK_MS > ran["cost_unit_ms"]       # this unit did not keep pace
    assert ran["bg_asr_prefill_ms"] >= asr_s * 1000
    # the other units did no background work at all
    for x in t[:SPEC_UNIT] + t[SPEC_UNIT + 2:]:
        assert x["cost_asr_ms"] == x["cost_llm_ms"] == x["cost_tts_ms"] == x["cost_vision_ms"] == 0.0, x
        assert x["cost_all_ms"] == x["cost_unit_ms"]
    assert sum(x["cost_tts_ms"] for x in t) >= tts_s * 1000 * len(s.speaker.calls)


def test_work_of_a_cut_reply_is_still_counted(runs):
    s = Scripted(lm=ScriptedLM(["a b c d e f g h.", "ok."], gated=True), speaker=ScriptedSpeaker(work_s=0.05))
    run = runs(s)
    run.feed(turn_audio(30))
    s.lm.release(4)
    run.feed(quiet(WPU))
    cut = run.feed(say(" " * (CUT_W + WPU)))
    assert any(r.end_of_turn for r in cut)
    total = sum(r.timings["cost_tts_ms"] for r in run.results)
    assert total >= 50 * len(s.speaker.calls) and s.speaker.calls


# ------------------------------------------------------------------------------ errors, close
def test_a_backend_error_in_the_reply_is_raised_and_the_session_goes_on(runs):
    def fail(messages):
        raise EngineBackendError("the model server went away")

    run = runs(Scripted(lm=ScriptedLM(fail)))
    with pytest.raises(EngineBackendError, match="went away"):
        run.feed(turn_audio())
    assert run.d.phase is L
    assert run.d.unit(quiet(WPU), None, False).is_listen


def test_a_closed_session_refuses_units(runs):
    run = runs(Scripted(lm=ScriptedLM("held", gated=True)))
    run.feed(turn_audio(30))
    reply = run.d.turn.reply
    run.d.close()
    assert run.d.phase is DuplexPhase.CLOSED and reply.cancelled
    with pytest.raises(EngineInputError, match="closed"):
        run.d.unit(quiet(WPU), None, False)


# ------------------------------------------------------------------------------ the words' judge
@pytest.mark.parametrize("mode", ["silence", "words"])
def test_unfinished_words_hold_the_end_of_turn_up_to_the_cap(runs, mode):
    """With ``engine.end_of_turn`` "words", a caption that stops where a sentence cannot ("… go to
    the") holds the confirm past END_SILENCE_MS, up to ``turn_max_silence_ms``; "silence" does not."""
    s = Scripted(lm=ScriptedLM("Where would you like to go? To the station, or to the beach?"))
    parts = s.backend.cascade.parts
    parts.turn_mode = mode
    words = "i would like to go to the"
    run = runs(s)
    run.feed(np.concatenate([quiet(LEAD), say(words), quiet(80)]))
    silence_from = LEAD + len(words)
    confirm = (silence_from + windows_for(T.END_SILENCE_MS) - 1) // WPU
    cap = (silence_from + windows_for(parts.turn_max_silence_ms) - 1) // WPU
    expected = confirm if mode == "silence" else cap
    assert first(run.phases, SK) == expected, (mode, run.phases)
    assert run.user_turns() == [words]
