"""``EmbeddedDuplex``: one duplex session; every unit runs VAD, then makes at most one move of
the state machine (state.py) — the only place where the pieces below are told what to do:

    UtteranceTracker (utterance.py)   VAD windows → utterance open/close, voiced / silence ms
    Captioner (captions.py)           live captions in the background + warming the LLM with them
    CameraNotes (camera.py)           frame descriptions at most every FRAME_EVERY_S
    ReplyTurn (turn.py)               the reply: start, confirm, discard, drain per unit, cut
    Overlap, Audible (overlap.py)     speech over the assistant's voice: backchannel or interruption
    UnitCosts (costs.py)              timings: the call plus the background work since the last unit
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from omniserve.engine.api import DuplexSettings, EngineInputError, UnitResult, Voice
from omniserve.engine.checks import check_audio

from ..cascade import EAGER_CHECK_MS, Cascade
from ..conversation import Conversation
from ..media import check_image
from ..reply import SpokenReply
from .background import Background
from .camera import CameraNotes
from .captions import Captioner
from .costs import UnitCosts
from .overlap import Audible, Overlap, Verdict
from .state import Machine, DuplexPhase
from ..components.turn import COMPLETE as TURN_COMPLETE
from .tuning import DISCARD_MS, END_SILENCE_MS, MIN_UTTERANCE_MS, SPECULATE_MS, WAIT_MAX_MS, WAIT_SHARE
from ..components.unfinished import sounds_unfinished
from .turn import ReplyTurn
from .utterance import UtteranceTracker

CAMERA_NOTE = "\nYou also see through the user's camera: what it shows is given as (Camera: ...)."


class EmbeddedDuplex:
    """``backends.base.DuplexSession`` for the cascade."""

    def __init__(self, backend: Cascade, system_prompt: str, voice: Voice, cfg: DuplexSettings) -> None:
        self.b = backend
        cfg = replace(cfg, language=backend.language(cfg.language, system_prompt))   # what the ASR hears
        self.cfg = cfg
        self.voice = voice
        system = backend.system_prompt(system_prompt, spoken=cfg.generate_audio)
        if cfg.omni:
            system += CAMERA_NOTE
        self.machine = Machine()
        self.end_silence_ms = END_SILENCE_MS * min(max(float(cfg.listen_prob_scale), 0.25), 4.0)
        self.background = Background()
        self.utterance = UtteranceTracker(backend.vad_stream())
        self.camera = CameraNotes(backend, self.background, int(cfg.chunk_ms))
        closed = self._is_closed
        self.captions = Captioner(backend, self.background, lambda words: self.turn.context(words),
                                  model_free=lambda: self.turn.reply is None, closed=closed, language=cfg.language)
        self.turn = ReplyTurn(backend, cfg, voice, Conversation(system), self.background, self.captions,
                              self.camera, closed)
        self.costs = UnitCosts(self.background.meter)
        self.overlap = Overlap()
        self.audible = Audible(int(cfg.chunk_ms))
        self.wait_s = min(WAIT_SHARE * int(cfg.chunk_ms), WAIT_MAX_MS) / 1000
        self._waited = 0.0
        self._units = 0
        self._turn_verdict: tuple[object, bool] = (None, False)   # (the pause it is about, complete)

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> int:
        return self.b.prefill(self.conv.messages()).input_tokens

    def close(self) -> None:
        self.machine.to(DuplexPhase.CLOSED, "closed")
        self.turn.interrupt()
        self.background.shutdown()
        self.utterance.clear()

    def _is_closed(self) -> bool:
        return self.machine.phase is DuplexPhase.CLOSED

    @property
    def phase(self) -> DuplexPhase:
        return self.machine.phase

    @property
    def conv(self) -> Conversation:
        return self.turn.conv

    @property
    def _utt(self) -> list[np.ndarray]:           # the open utterance's windows (a memory bound test reads it)
        return self.utterance.windows

    @property
    def _preroll(self):                           # likewise
        return self.utterance.preroll

    # ------------------------------------------------------------------ one unit
    def unit(self, audio: np.ndarray, frames: Optional[list[bytes]], force_listen: bool) -> UnitResult:
        t0 = time.perf_counter()
        if self._is_closed():
            raise EngineInputError("this duplex session is closed; prepare a new one")
        pcm = check_audio(audio, self.cfg.sample_rate, what="audio chunk", max_seconds=10.0)
        frame = check_image(frames[-1], what="camera frame") if frames else None
        index, self._units = self._units, self._units + 1
        forced = bool(force_listen) or index < int(self.cfg.force_listen_count)
        if frame is not None and self.cfg.omni:
            self.camera.offer(frame, index)

        tv = time.perf_counter()
        opened = self.utterance.scan(pcm)
        vad_ms = (time.perf_counter() - tv) * 1000

        res = UnitResult(is_listen=True)
        reply = self.turn.reply
        self._waited = 0.0
        self._step(res, opened, forced)
        utt = self.utterance
        if utt.open and (self.phase is DuplexPhase.LISTENING or self.overlap.pending(utt)):
            self.captions.maybe_start(utt)
        self.audible.unit(0 if res.audio is None else res.audio.size)
        res.user_text = self.captions.new_text()
        res.kv_cache_length = self.b.cache_length()
        res.timings = self.costs.take(reply, vad_ms, t0 + self._waited)     # waiting for output is no work
        return res

    def _step(self, res: UnitResult, opened: bool, forced: bool) -> None:
        """The state machine: at most one move per unit."""
        m, turn, utt = self.machine, self.turn, self.utterance
        assert (m.phase is DuplexPhase.LISTENING) == (turn.reply is None), (m.phase, turn.reply)
        if turn.reply is not None and turn.reply.cancelled:
            self._cut(res)                              # stopped from elsewhere
            return
        if opened:
            if self.audible.heard or (turn.reply is not None and turn.emitted):
                self.overlap.begin(utt)                 # over the assistant's voice: judged, not obeyed
            elif turn.reply is not None:
                self._cut(res)                          # nothing of it was heard yet: the user spoke on
                return
        if self.overlap.pending(utt) and self._overlapped(res, forced):
            return
        if m.phase is DuplexPhase.SPECULATING:
            if utt.voiced_ms > turn.spec_voiced + DISCARD_MS:      # the user went on speaking
                turn.discard()
                m.to(DuplexPhase.LISTENING, "discard")
            elif not forced and self._turn_complete():
                utt.close()
                m.to(DuplexPhase.SPEAKING, "confirm")
                self._speak(res)
        elif m.phase is DuplexPhase.SPEAKING:
            if not forced:
                self._speak(res)
        elif utt.open:
            self._end_of_turn(res, forced)

    def _end_of_turn(self, res: UnitResult, forced: bool) -> None:
        """Listening with an utterance open: start the reply, confirmed after the end-of-turn
        silence (or at the monologue cap), speculatively after a shorter pause — or while
        listening is forced: it is prepared then, and handed out once the force ends."""
        utt = self.utterance
        voiced = utt.voiced_ms
        heard = self.captions.words_of(utt.serial, voiced)
        if not forced and self._turn_complete():
            audio = utt.close()
            if voiced >= MIN_UTTERANCE_MS:
                self._start(self.turn.start(audio, heard))
                self.machine.to(DuplexPhase.SPEAKING, "end of turn")
                self._speak(res)
        elif utt.silence_ms >= min(SPECULATE_MS, self.end_silence_ms) and voiced >= MIN_UTTERANCE_MS:
            self._start(self.turn.start(utt.audio(), heard, spec_voiced=voiced))
            self.machine.to(DuplexPhase.SPECULATING, "pause")

    def _turn_complete(self) -> bool:
        """The open utterance has ended (``api.END_OF_TURN_MODES``, the engine's mode): at the
        monologue cap; else after ``end_silence_ms`` — or, with an end-of-turn model, when it hears
        a finished turn after a short pause — unless the words so far sound unfinished (any mode
        but "silence"): such a pause may go on up to the cap."""
        utt, p = self.utterance, self.b.parts
        if utt.at_cap:
            return True
        if p.turn_mode == "silence":
            return utt.silence_ms >= self.end_silence_ms
        if utt.silence_ms >= max(self.end_silence_ms, p.turn_max_silence_ms):
            return True
        return self._sound_over() and not self._words_unfinished()

    def _words_unfinished(self) -> bool:
        """The words of the whole utterance — the speculative reply's transcript, or a live caption
        that heard all of it — stop where a sentence cannot."""
        utt = self.utterance
        if self.machine.phase is DuplexPhase.SPECULATING and self.turn.words:
            return sounds_unfinished(self.turn.words)
        words = self.captions.words_of(utt.serial, utt.voiced_ms)
        if words is None or not words.done() or words.exception() is not None:
            return False
        return sounds_unfinished(words.result())

    def _sound_over(self) -> bool:
        utt, p = self.utterance, self.b.parts
        if p.turn is None or p.turn_mode == "words":
            return utt.silence_ms >= self.end_silence_ms
        if utt.silence_ms < (min(EAGER_CHECK_MS, self.end_silence_ms) if p.turn_mode == "eager" else self.end_silence_ms):
            return False
        key = (utt.serial, utt.voiced_ms)               # one verdict per pause
        if self._turn_verdict[0] != key:
            self._turn_verdict = (key, p.turn.complete(utt.audio()) >= TURN_COMPLETE)
        return self._turn_verdict[1]

    def _start(self, reply: SpokenReply) -> None:
        self.costs.watch(reply)

    def _overlapped(self, res: UnitResult, forced: bool) -> bool:
        """Judge the speech over the assistant's voice; True when this unit's move is made."""
        m, turn, utt = self.machine, self.turn, self.utterance
        verdict = self.overlap.judge(utt, self.captions.heard(utt.serial))
        if verdict is Verdict.INTERRUPTION:
            if turn.reply is None:
                return False                            # the reply had ended: an ordinary utterance now
            self._cut(res)
            return True
        if verdict is Verdict.BACKCHANNEL:
            utt.close()                                 # dropped: never a turn of its own
        if m.phase is DuplexPhase.SPEAKING and not forced and turn.emitted:
            self._speak(res, wait=False)                # the reply goes on (the page ducks it meanwhile)
        return True

    def _cut(self, res: UnitResult) -> None:
        res.end_of_turn = self.turn.interrupt()        # the reply is cut: tell the client to stop playing
        self.audible.clear()
        self.machine.to(DuplexPhase.LISTENING, "barge-in")

    def _speak(self, res: UnitResult, wait: bool = True) -> None:
        """Hand out this unit's share of the reply. With nothing to hand out yet and the client's
        audio about to run dry, wait (a share of the unit at most) for it: out as soon as it exists."""
        if wait and self.audible.running_low:
            self._waited += self.turn.wait_for_output(self.wait_s)
        if self.turn.drain(res):
            self.machine.to(DuplexPhase.LISTENING, "reply handed out")
            self.turn.finish()

    # ------------------------------------------------------------------ test seam
    def wait_idle(self, timeout: float = 5.0, *, lm_waiting: Callable[[], bool] = lambda: False) -> bool:
        """Block until the session's background work has stopped: the caption / camera thread is
        idle and every reply it started has ended — or, while ``lm_waiting()`` says the language
        model is waiting (a test's gated LM), has voiced everything written so far. For tests:
        between units, this makes a run deterministic. True when idle within ``timeout``."""
        deadline = time.monotonic() + timeout
        if not self.background.wait_idle(timeout):
            return False
        return all(r.wait_quiet(deadline - time.monotonic(), lm_waiting) for r in self.costs.replies())
