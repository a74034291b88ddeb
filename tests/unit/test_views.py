"""The engine's three views on the real embedded models (no network; speech made by our TTS)."""
from __future__ import annotations

import numpy as np
import pytest

from omniserve.audio import OUT_RATE, resample
from omniserve.engine.api import (Audio, Delta, EngineInputError, GenerationParams, Image, Message, Prefilled, ReplyDone,
                                  Text, VadSettings, Video)
from tests.conftest import piper_speech, silence, text_image, word_error_rate
from tests.unit.engine_support import Pacer, duplex_settings, first_speaking, get_processor, run_duplex, units

GREEDY = GenerationParams(max_new_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def proc():
    return get_processor()


def _hear(proc, audio24k: np.ndarray) -> str:
    return proc.backend.cascade.transcribe(resample(audio24k, OUT_RATE, 16000))


# ------------------------------------------------------------------------------ chat
def ask(chat, messages, stop=None, **kw):
    """Run one chat reply; returns (Prefilled, deltas, ReplyDone) and checks the event order."""
    events = list(chat.reply(messages, stop=stop, **kw))
    assert isinstance(events[0], Prefilled) and isinstance(events[-1], ReplyDone), events
    deltas = events[1:-1]
    assert all(isinstance(d, Delta) for d in deltas)
    return events[0], deltas, events[-1]


def audio_of(deltas):
    parts = [d.audio for d in deltas if d.audio is not None]
    return np.concatenate(parts) if parts else None


def test_chat_answers_paris_in_text_and_speech(proc):
    chat = proc.set_chat_mode()
    pre, deltas, done = ask(chat, [Message("user", [Text("What is the capital of France?")])],
                            generation=GREEDY, voice=proc.voice())
    assert pre.input_tokens > 10
    assert "paris" in done.text.lower()
    audio = audio_of(deltas)
    assert audio is not None
    assert "".join(d.text for d in deltas) == done.text
    assert word_error_rate(done.text, _hear(proc, audio)) <= 0.4     # a short reply: 2 words in 6 may differ
    assert done.generated_tokens > 0 and not done.stopped


def test_chat_follow_up_reuses_cached_prefix(proc):
    chat = proc.set_chat_mode()
    first = [Message("user", [Text("Name one primary colour.")])]
    _, deltas, reply = ask(chat, first, generation=GREEDY)
    assert reply.text and audio_of(deltas) is None
    history = first + [Message("assistant", [Text(reply.text)]), Message("user", [Text("Name another one.")])]
    pre, _, again = ask(chat, history, generation=GREEDY)
    assert pre.evaluated < pre.input_tokens / 2
    assert again.text


def test_chat_spoken_question_and_image_text(proc):
    chat = proc.set_chat_mode()
    question = piper_speech("Please read the sign in this picture.")
    sign = text_image("OPEN 24 HOURS")
    pre, _, done = ask(chat, [Message("user", [Audio(question), Image(sign)])], generation=GREEDY)
    assert word_error_rate("please read the sign in this picture", pre.heard) <= 0.3, pre.heard
    prompt = pre.prompt.upper()
    assert "OPEN" in prompt and "24" in prompt and "HOURS" in prompt, pre.prompt
    assert "open" in done.text.lower()


def _video(image: bytes, speech16k: np.ndarray) -> bytes:
    """An MP4 made with ffmpeg: a still picture and a speech track."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from omniserve.audio import to_wav_bytes

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f.png").write_bytes(image)
        (Path(tmp) / "a.wav").write_bytes(to_wav_bytes(speech16k, 16000))
        subprocess.run(["ffmpeg", "-v", "error", "-loop", "1", "-i", "f.png", "-i", "a.wav", "-shortest",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "out.mp4"],
                       cwd=tmp, check=True, timeout=60)
        return (Path(tmp) / "out.mp4").read_bytes()


def test_chat_video_frames_and_audio_track(proc):
    chat = proc.set_chat_mode()
    clip = _video(text_image("FRESH BREAD"), piper_speech("Look at this bakery sign."))
    pre, _, _ = ask(chat, [Message("user", [Video(clip), Text("What does the sign say?")])], generation=GREEDY)
    prompt = pre.prompt.upper()
    assert "FRESH BREAD" in prompt, pre.prompt
    assert word_error_rate("look at this bakery sign", pre.heard) <= 0.4, pre.heard
    with pytest.raises(EngineInputError, match="video"):
        list(chat.reply([Message("user", [Video(b"not a video at all")])]))


def test_chat_stop_returns_within_a_chunk(proc):
    import threading

    chat = proc.set_chat_mode()
    stop = threading.Event()
    n = 0
    events = []
    for ev in chat.reply([Message("user", [Text("Count from one to one hundred in words.")])],
                         generation=GenerationParams(max_new_tokens=300, temperature=0.0), stop=stop):
        events.append(ev)
        if isinstance(ev, Delta):
            n += 1
            if n == 3:
                stop.set()
    assert n <= 4 and isinstance(events[-1], ReplyDone) and events[-1].stopped


# ------------------------------------------------------------------------------ half duplex
def _turn(view, text: str) -> tuple[str, Prefilled, np.ndarray]:
    """Speak ``text`` into the VAD in 0.5 s chunks; the events must be one whole turn."""
    stream = np.concatenate([silence(0.5), piper_speech(text), silence(1.2)])
    events = []
    for i in range(0, stream.size, 8000):
        events += list(view.feed(stream[i:i + 8000]))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["SpeechStarted", "SpeechEnded", "Prefilled"] and kinds[-1] == "ReplyDone", kinds
    assert set(kinds[3:-1]) <= {"Delta"} and kinds.count("SpeechEnded") == 1, kinds
    return events[-1].text, events[2], audio_of(events[3:-1])


def test_half_duplex_remembers_a_name_across_turns(proc):
    view = proc.set_half_duplex_mode()
    view.prepare("You are a friendly assistant.", generation=GREEDY, voice=proc.voice(),
                 vad=VadSettings(threshold=0.5, min_silence_duration_ms=500))
    reply1, _, _ = _turn(view, "Hello, my name is Peter.")
    assert reply1
    reply2, pre, audio = _turn(view, "What is my name?")
    assert "peter" in reply2.lower(), reply2
    assert pre.evaluated < pre.input_tokens / 2     # only the new turn was evaluated, not the whole history
    assert audio is not None
    assert [m["role"] for m in view.session.history()] == ["system", "user", "assistant", "user", "assistant"]


# ------------------------------------------------------------------------------ duplex
QUESTION = "What is the capital of France?"


def _question_3s() -> np.ndarray:
    q = piper_speech(QUESTION)
    assert q.size <= 48000
    return np.concatenate([q, silence((48000 - q.size) / 16000)])


def test_duplex_listens_during_question_then_speaks(proc):
    view = proc.set_duplex_mode()
    assert view.prepare("You are a helpful assistant.", config=duplex_settings(force_listen_count=3)) > 0
    question = piper_speech(QUESTION)
    assert question.size <= 48000
    stream = np.concatenate([silence(3), question, silence(9 - question.size / 16000)])
    results = run_duplex(view, units(stream))
    last_speech_unit = int((3 * 16000 + question.size) // 16000)       # the unit where the question ends
    assert all(r.is_listen for r in results[:last_speech_unit + 1]), [r.is_listen for r in results]
    first = first_speaking(results)
    assert first is not None and first <= last_speech_unit + 2, [(r.is_listen, r.text) for r in results]
    spoken = "".join(r.text for r in results)
    assert spoken.strip()
    assert any(r.audio is not None for r in results)
    assert all(r.timings["cost_unit_ms"] < 300 for r in results)      # the unit call itself stays short
    assert any("capital" in r.user_text.lower() for r in results), [r.user_text for r in results]


def test_duplex_stops_when_user_talks_over_the_reply(proc):
    view = proc.set_duplex_mode()
    view.prepare("You are a storyteller. Tell long stories.", config=duplex_settings(force_listen_count=1))
    request = piper_speech("Tell me a long story about a dragon.")
    interruption = piper_speech("Wait, stop, I have another question for you.")
    pacer = Pacer()
    results = run_duplex(view, units(np.concatenate([silence(1), request])), pacer)
    # feed silence until the reply is being spoken, then talk over it
    for _ in range(6):
        results += run_duplex(view, units(silence(1)), pacer)
        if first_speaking(results) is not None:
            break
    assert first_speaking(results) is not None, "the assistant never started speaking"
    assert not results[-1].end_of_turn
    talk = run_duplex(view, units(np.concatenate([interruption, silence(1)])), pacer)
    stop_at = next(i for i, r in enumerate(talk) if r.end_of_turn)
    assert stop_at <= 1
    assert talk[stop_at].is_listen
    # silent while the user is still talking (after that it may well answer the interruption)
    talking_units = -(-interruption.size // 16000)
    assert all(r.audio is None and r.is_listen for r in talk[stop_at:talking_units]), \
        [(r.is_listen, r.end_of_turn) for r in talk]


def test_duplex_force_listen(proc):
    view = proc.set_duplex_mode()
    view.prepare("You are a helpful assistant.", config=duplex_settings(force_listen_count=6, generate_audio=False))
    stream = units(np.concatenate([silence(0.5), _question_3s(), silence(8.5)]))
    frame = text_image("EXIT")
    results = run_duplex(view, stream, force={6}, frames=[frame])
    assert all(r.is_listen for r in results[:7])
    first = first_speaking(results)
    assert first is not None and first >= 7
    assert all(r.audio is None for r in results)          # generate_audio=False: text only
    assert all(r.n_tokens <= 20 for r in results)
    user_turn = view.session.conv.messages()[1]["content"]      # omni: the camera is part of the turn
    assert "(Camera:" in user_turn and "EXIT" in user_turn, user_turn


# ------------------------------------------------------------------------------ errors, voices, switching
def test_bad_input_raises_clear_errors(proc):
    chat = proc.set_chat_mode()
    with pytest.raises(EngineInputError, match="16000"):
        chat.reply([Message("user", [Audio(np.zeros(16000, np.float32), sample_rate=44100)])])
    with pytest.raises(EngineInputError, match="empty"):
        chat.reply([Message("user", [Audio(np.zeros(0, np.float32))])])
    with pytest.raises(EngineInputError, match="decoded"):
        list(chat.reply([Message("user", [Image(b"this is not an image")])]))
    with pytest.raises(EngineInputError, match="NaN"):
        chat.reply([Message("user", [Audio(np.full(16000, np.nan, np.float32))])])
    with pytest.raises(EngineInputError):
        chat.reply([Message("user", [Text("hi")])], generation=GenerationParams(temperature=-1))
    with pytest.raises(EngineInputError, match="last message"):
        chat.reply([Message("user", [Text("hi")]), Message("assistant", [Text("hello")])])
    half = proc.set_half_duplex_mode()
    with pytest.raises(EngineInputError, match="threshold"):
        half.prepare("", vad=VadSettings(threshold=1.5))
    half.prepare("")
    with pytest.raises(EngineInputError, match="NaN"):
        half.feed(np.full(8000, np.nan, np.float32))
    duplex = proc.set_duplex_mode()
    with pytest.raises(EngineInputError, match="prepare"):
        duplex.unit(silence(1))
    with pytest.raises(EngineInputError, match="16000"):
        duplex.prepare("", config=duplex_settings(sample_rate=8000))
    duplex.prepare("", config=duplex_settings())
    with pytest.raises(EngineInputError, match="empty"):
        duplex.unit(np.zeros(0, np.float32))
    with pytest.raises(EngineInputError, match="camera frame"):
        duplex.unit(silence(1), frames=[b"garbage"])
    assert duplex.unit(silence(1)).is_listen     # the session survives bad input
    for bad in (np.zeros(0, np.float32), np.zeros(4000, np.float32), np.full(32000, np.nan, np.float32)):
        with pytest.raises(EngineInputError):
            proc.voice(bad)


def test_voice_matching_picks_by_pitch(proc):
    low = proc.voice(piper_speech("The quick brown fox jumps over the lazy dog near the river bank."))
    assert low.name.startswith(("piper:joe", "kokoro:jm")), low
    assert "not cloned" in low.description
    t = np.arange(3 * 16000) / 16000
    high = (0.3 * np.sign(np.sin(2 * np.pi * 260 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    voice = proc.voice(high)
    assert voice.name.startswith("kokoro:jf"), voice
    assert voice.reference is high
    assert proc.backend.cascade.parts.speaker.synthesize("Hello there.", voice).size > 0


def test_duplex_buffers_stay_bounded_in_a_long_monologue(proc):
    from omniserve.engine.backends.embedded.duplex import tuning

    view = proc.set_duplex_mode()
    view.prepare("", config=duplex_settings(force_listen_count=0))
    talk = piper_speech("I keep on talking and talking without any pause at all, on and on.")
    talk = np.tile(talk, int(np.ceil(40 * 16000 / talk.size)))[: 40 * 16000]
    for chunk in units(talk):                 # 40 s of speech, every unit forced to listen
        assert view.unit(chunk, force_listen=True).is_listen
    session = view.session
    assert len(session._utt) <= tuning._MAX_UTT_WINDOWS
    assert len(session._preroll) <= session._preroll.maxlen
    view.reset()
