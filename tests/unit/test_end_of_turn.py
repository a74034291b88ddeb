"""Semantic end of turn: Smart Turn v3.2's input matches the model's reference features, the real
model tells a finished question from an unfinished phrase, and the segmenter ends a turn early
when the model says it is complete and lets an unfinished one pause up to the cap."""
from __future__ import annotations

import numpy as np
import pytest

from omniserve.engine.api import SpeechEnded
from omniserve.engine.backends.embedded.components.turn import SmartTurn
from omniserve.engine.backends.embedded.components.vad import SileroVAD, VadSegmenter
from tests.conftest import piper_speech, silence


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    return SmartTurn()


def test_features_match_the_models_reference_extractor(smart_turn):
    # the reference ships beside the model in the pipecat-ai wheel (numpy only), loaded from its file
    # (pipecat's package itself needs more than we install): the oracle for our features
    import importlib.util

    from omniserve.engine.backends.embedded import models

    ref_file = models.package_dir("pipecat") / "audio/turn/smart_turn/_whisper_features.py"
    spec = importlib.util.spec_from_file_location("smart_turn_reference_features", ref_file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    compute_whisper_log_mel_features = mod.compute_whisper_log_mel_features

    rng = np.random.default_rng(1)
    for n in (16000 * 3, 16000 * 8, 16000 * 11):
        x = (0.1 * rng.standard_normal(n)).astype(np.float32)
        ref_in = x[-128000:] if n >= 128000 else np.concatenate([np.zeros(128000 - n, np.float32), x])
        ref = compute_whisper_log_mel_features(ref_in, do_normalize=True)
        assert np.abs(smart_turn.features(x) - ref).max() < 1e-4


def test_the_model_hears_finished_and_unfinished_turns(smart_turn):
    done = smart_turn.complete(np.concatenate([piper_speech("What is the capital of France?"), silence(0.3)]))
    # (synthetic voices end most phrases on a falling, final-sounding tone; this one stays open)
    open_ = smart_turn.complete(np.concatenate([piper_speech("and then we went to the"), silence(0.3)]))
    assert done > 0.5 > open_, (done, open_)


class _Verdict:
    """A test double of the end-of-turn model: always the same answer, counting its calls."""

    def __init__(self, p: float) -> None:
        self.p, self.calls = p, 0

    def complete(self, pcm16k: np.ndarray) -> float:
        self.calls += 1
        return self.p


def _endpoint_ms(model, speech: np.ndarray, check_ms=300) -> float:
    seg = VadSegmenter(SileroVAD(), threshold=0.5, min_silence_duration_ms=800, end_of_turn=model,
                       turn_check_ms=check_ms, turn_max_silence_ms=1600)
    pcm = np.concatenate([silence(0.3), speech, silence(2.5)])
    for i in range(0, pcm.size, 512):
        if any(isinstance(e, SpeechEnded) for e in seg.feed(pcm[i:i + 512])):
            return seg.position_ms - (4800 + speech.size) / 16
    raise AssertionError("no end of turn")


def test_complete_ends_after_the_short_pause_incomplete_waits_for_the_cap():
    speech = piper_speech("How many legs does a spider have?")
    silent = _endpoint_ms(None, speech)
    done, open_ = _Verdict(0.9), _Verdict(0.1)
    early, late = _endpoint_ms(done, speech), _endpoint_ms(open_, speech)
    assert early < 500 < silent < late, (early, silent, late)
    # a "done" is asked once; a "not yet" again every 400 ms of further silence, up to the cap
    assert late > 1400 and done.calls == 1 and 2 <= open_.calls <= 5


def test_by_default_the_model_only_lengthens_a_pause():
    speech = piper_speech("What is the capital of France?")
    silent = _endpoint_ms(None, speech)
    done, open_ = _Verdict(0.9), _Verdict(0.1)
    same, late = _endpoint_ms(done, speech, check_ms=None), _endpoint_ms(open_, speech, check_ms=None)
    assert abs(same - silent) < 70 and late > silent + 500, (silent, same, late)


# ------------------------------------------------------------------ the words' judge
@pytest.mark.parametrize("text, unfinished", [
    ("I'd like to go to.", True), ("and then we went to the", True), ("So the reason I am calling is", True),
    ("My number is five five five,", True), ("我想去北京，然后", True), ("我想要", True),
    ("I'd like to go to the station.", False), ("Where are you from?", False), ("Turn it on.", False),
    ("Yes I can.", False), ("我想去北京。", False), ("是的", False), ("", False),
])
def test_the_words_judge_hears_where_a_sentence_cannot_end(text, unfinished):
    from omniserve.engine.backends.embedded.components.unfinished import sounds_unfinished

    assert sounds_unfinished(text) is unfinished


def test_unfinished_words_hold_a_pause_up_to_the_cap_finished_ones_do_not():
    """``hold`` lengthens a pause the timer would end (only that: it never ends one sooner), up to
    ``turn_max_silence_ms``; each held pause is counted once."""
    speech = piper_speech("What is the capital of France?")

    def endpoint(hold) -> tuple[float, int]:
        seg = VadSegmenter(SileroVAD(), threshold=0.5, min_silence_duration_ms=800, turn_max_silence_ms=1600)
        seg.hold = hold
        pcm = np.concatenate([silence(0.3), speech, silence(2.5)])
        for i in range(0, pcm.size, 512):
            if any(isinstance(e, SpeechEnded) for e in seg.feed(pcm[i:i + 512])):
                return seg.position_ms - (4800 + speech.size) / 16, seg.holds
        raise AssertionError("no end of turn")

    timer, _ = endpoint(None)
    same, never = endpoint(lambda: False)
    held, holds = endpoint(lambda: True)
    assert abs(same - timer) < 1 and never == 0, (timer, same)
    assert 1300 < held < 1800 and held > timer + 600 and holds == 1, (timer, held, holds)
