"""The backend contract (``omniserve/engine/backends/base.py``), run over every backend.

Each case is a backend plus the input it can hear: the embedded cascade with the LLM in process,
the same cascade with its LLM on a real OpenAI-compatible server on loopback (llama_cpp.server),
and the scripted test double (its VAD, ASR, tokens and speech come from lists). A new backend
joins by adding a case; views, worker and gateway tests then hold for it too.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pytest

from omniserve.config import EngineSettings, LLMSettings
from omniserve.engine.api import (Capabilities, Delta, DuplexSettings, GenerationParams, Message, Prefilled,
                                  ReplyDone, SpeechEnded, SpeechStarted, Text, UnitResult, VadSettings, Voice)
from omniserve.engine.backends.base import Backend
from tests.conftest import piper_speech, silence

GEN = GenerationParams(max_new_tokens=40, temperature=0.0)
LONG_GEN = GenerationParams(max_new_tokens=200, temperature=0.0)
QUESTION = "What is the capital of France?"


@dataclass
class Case:
    backend: Backend
    speech: Callable[[str], np.ndarray]     # 16 kHz speech this backend will hear as the text
    answer: str                             # a word the answer to QUESTION contains


def _embedded() -> Case:
    from tests.unit.engine_support import get_processor

    return Case(get_processor().backend, piper_speech, "paris")


def _openai() -> Iterator[Case]:
    from omniserve.engine.backends.embedded import EmbeddedBackend
    from tests.support.llm_server import start_llm_server

    server = start_llm_server(n_ctx=2048)
    try:
        llm = LLMSettings(kind="openai", base_url=server.base_url, model=server.model, n_ctx=2048, timeout_s=30)
        yield Case(EmbeddedBackend(EngineSettings(threads=2, llm=llm)), piper_speech, "paris")
    finally:
        server.stop()


def _scripted() -> Case:
    from tests.support.scripted import scripted_contract_case

    return Case(*scripted_contract_case(QUESTION))


@pytest.fixture(scope="module", params=["embedded", "embedded-openai", "scripted"])
def case(request) -> Iterator[Case]:
    if request.param == "embedded":
        yield _embedded()
    elif request.param == "embedded-openai":
        yield from _openai()
    else:
        yield _scripted()


def _ask(b: Backend, text: str, voice=None, params: GenerationParams = GEN, stop=None) -> list:
    return list(b.chat([Message("user", [Text(text)])], params, voice, stop or threading.Event()))


def _check_reply(events: list) -> tuple[Prefilled, list[Delta], ReplyDone]:
    assert isinstance(events[0], Prefilled) and isinstance(events[-1], ReplyDone), events
    deltas = events[1:-1]
    assert deltas and all(isinstance(d, Delta) for d in deltas), events
    return events[0], deltas, events[-1]


# ------------------------------------------------------------------------------ identity, voices
def test_declares_name_and_capabilities(case):
    assert isinstance(case.backend.name, str) and case.backend.name
    assert isinstance(case.backend.capabilities, Capabilities)
    assert "text" in case.backend.capabilities.media


def test_voice_default_and_from_a_reference(case):
    default = case.backend.voice(None)
    assert isinstance(default, Voice) and default.name
    ref = case.speech("The quick brown fox jumps over the lazy dog near the river bank.")
    matched = case.backend.voice(ref)
    assert isinstance(matched, Voice) and matched.reference is ref     # a cloning backend can use it


# ------------------------------------------------------------------------------ chat
def test_chat_events_in_order_text_only(case):
    pre, deltas, done = _check_reply(_ask(case.backend, QUESTION))
    assert pre.input_tokens > 0
    assert all(d.audio is None for d in deltas)          # no voice: no speech
    assert "".join(d.text for d in deltas) == done.text
    assert case.answer in done.text.lower(), done.text
    assert done.generated_tokens > 0 and not done.stopped
    assert case.backend.cache_length() >= 0


def test_chat_with_a_voice_speaks(case):
    _, deltas, done = _check_reply(_ask(case.backend, QUESTION, voice=case.backend.voice(None)))
    audio = [d.audio for d in deltas if d.audio is not None]
    assert audio and all(a.dtype == np.float32 and a.ndim == 1 for a in audio)
    assert done.text


def test_chat_stop_ends_the_reply_promptly(case):
    stop = threading.Event()
    events = []
    t_stop = None
    for ev in case.backend.chat([Message("user", [Text("Count from one to one hundred in words.")])], LONG_GEN,
                                None, stop):
        events.append(ev)
        if isinstance(ev, Delta) and t_stop is None:
            stop.set()
            t_stop = time.monotonic()
    assert t_stop is not None and time.monotonic() - t_stop < 2.0
    assert isinstance(events[-1], ReplyDone) and events[-1].stopped


def test_chat_abandoned_mid_reply_leaves_the_backend_usable(case):
    it = case.backend.chat([Message("user", [Text("Write a long story about a dragon.")])], LONG_GEN, None,
                           threading.Event())
    for ev in it:
        if isinstance(ev, Delta):
            break
    it.close()                                           # the consumer went away
    t0 = time.monotonic()
    _check_reply(_ask(case.backend, QUESTION))
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------ voice session
def test_voice_session_answers_a_spoken_turn(case):
    s = case.backend.voice_session("You are a helpful assistant. Answer briefly.",
                                   VadSettings(threshold=0.5, min_silence_duration_ms=500), GEN, case.backend.voice(None))
    try:
        assert s.prepare() >= 0
        stop = threading.Event()
        assert list(s.feed(silence(1.0), stop)) == []
        stream = np.concatenate([case.speech(QUESTION), silence(1.5)])
        events = []
        for i in range(0, stream.size, 8000):
            events += list(s.feed(stream[i:i + 8000], stop))
        kinds = [type(e).__name__ for e in events]
        assert kinds[:3] == ["SpeechStarted", "SpeechEnded", "Prefilled"], kinds
        assert isinstance(events[0], SpeechStarted) and isinstance(events[1], SpeechEnded)
        assert events[1].segment.dtype == np.float32 and events[1].duration_ms > 500
        pre, deltas, done = _check_reply(events[2:])
        assert "capital" in pre.heard.lower(), pre.heard
        assert case.answer in done.text.lower(), done.text
        assert any(d.audio is not None for d in deltas)
    finally:
        s.close()


# ------------------------------------------------------------------------------ duplex
def test_duplex_listens_then_speaks(case):
    d = case.backend.duplex("You are a helpful assistant. Answer briefly.", case.backend.voice(None),
                            DuplexSettings(force_listen_count=1, temperature=0.0))
    try:
        assert d.prepare() >= 0
        q = case.speech(QUESTION)
        stream = np.concatenate([silence(1.0), q, silence(8.0 - q.size / 16000 % 1.0)])
        results: list[UnitResult] = []
        t0 = time.monotonic()
        for k, i in enumerate(range(0, stream.size - 15999, 16000)):
            time.sleep(max(0.0, t0 + k - time.monotonic()))        # one unit a second, like a microphone
            r = d.unit(stream[i:i + 16000], None, False)
            assert isinstance(r, UnitResult)
            results.append(r)
            if not r.is_listen and r.end_of_turn:
                break
        assert results[0].is_listen
        spoken = "".join(r.text for r in results if not r.is_listen)
        assert spoken.strip(), [(r.is_listen, r.text) for r in results]
        assert any(r.audio is not None for r in results if not r.is_listen)
        assert all("cost_all_ms" in r.timings for r in results)
    finally:
        d.close()
