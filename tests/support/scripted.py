"""A scripted cascade: the embedded backend over test doubles of its parts, fast and deterministic.

A test double only: it lives under tests/ and no configuration can select it. Build it as

    s = Scripted(vad=ScriptedVAD(windows((SPEECH, 10), (SILENCE, 20))),
                 asr=ScriptedASR("hello there"), lm=ScriptedLM("Hi! How are you?", gated=True))
    session = s.backend.duplex("", s.backend.voice(None), DuplexSettings(chunk_ms=160))
    r = session.unit(np.zeros(2560, np.float32), None, False)
    s.settle(session)        # background work done (or the gated LM waiting): the next unit is deterministic
    s.lm.release(3)          # the gated LM writes 3 more tokens

``s.backend`` is a real ``EmbeddedBackend(parts=s.parts())``: the sessions, the reply threads and
the conversation are the product's own; only the models are scripted.

The parts (each records its calls; ``work_s`` makes a call take that long, simulating compute):

- ``ScriptedVAD(probs=None)``: the speech probability of each 512-sample window: from a list (by
  window index; silence after its end), a function of the window index, or — ``None`` — from
  the audio itself (speech where a window reaches ``SPEECH_LEVEL``, as ``speech()`` makes it).
- ``ScriptedASR(script=None)``: a transcript per call: always one string, one per call from a
  list (the last repeats), a function of the audio, or — ``None`` — the text ``speech()``
  encoded in the audio (``heard``).
- ``ScriptedLM(replies, gated=False)``: a ``TextLM``; each reply's tokens are its words (each
  with its leading space): one string for every reply, one per reply from a list (the last
  repeats), or a function of the prefilled messages. Gated, each token waits for ``release()``
  (so a reply can be held mid-speech); ``parked()`` says it is waiting. ``prefills``,
  ``streams``, ``warmed`` record what it was asked; a simulated KV cache makes
  ``PrefillStats.evaluated`` count only a prompt's new tokens.
- ``ScriptedSpeaker(samples_per_char=960)``: ``synthesize`` returns ``speech(text)`` at that many
  24 kHz samples per character (deterministic; ``heard(audio)`` reads the text back).
- ``ScriptedVision(script="a scripted picture")``: a description per image.

``speech(text)`` is 16 kHz "speech" this cascade hears as ``text`` (50 ms a character, one
constant level per character); ``silence(seconds)``; ``windows(*runs)`` builds a VAD script;
``tiny_png()`` is a camera frame that decodes. ``scripted_contract_case(question)`` is the case
for the backend contract suite (tests/integration/test_backend_contract.py).
"""
from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

from omniserve.engine.api import EngineInputError, Voice
from omniserve.engine.backends.embedded import EmbeddedBackend
from omniserve.engine.backends.embedded.cascade import Parts
from omniserve.engine.backends.embedded.components.base import SamplingParams
from omniserve.engine.backends.embedded.lm import PrefillStats
from omniserve.engine.backends.embedded.voices import check_reference

RATE = 16000
WINDOW = 512
CHAR_MS = 50                   # speech(): one character lasts this long
LEVEL = 0.25                   # speech(): |sample| = LEVEL + code / 512 (exact in float32)
SPEECH_LEVEL = 0.2             # ScriptedVAD(None): a window reaching this is speech
SPEECH, SILENCE = 0.9, 0.0     # VAD probabilities for scripts

Script = Union[str, Sequence[str], Callable[..., str]]


# ------------------------------------------------------------------------------ audio
def speech(text: str, *, samples_per_char: int = RATE * CHAR_MS // 1000) -> np.ndarray:
    """Float32 "speech" of ``text``: each character a run of one level, alternating in sign (so
    repeated letters stay apart), ``samples_per_char`` long. ``heard`` reads it back."""
    codes = np.array([ord(c) % 256 for c in text], np.float32)
    signs = np.where(np.arange(codes.size) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return np.repeat((LEVEL + codes / 512) * signs, samples_per_char).astype(np.float32)


def heard(pcm: np.ndarray) -> str:
    """The text ``speech`` encoded in ``pcm`` (pieces of it, where cut); silences read as spaces."""
    x = np.asarray(pcm, np.float32)
    if x.size == 0:
        return ""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(x) != 0) + 1])
    out = []
    for v in x[starts]:
        a = abs(float(v))
        out.append(chr(int(round((a - LEVEL) * 512))) if a >= LEVEL - 1e-6 else " ")
    return " ".join("".join(out).split())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * RATE)), np.float32)


def windows(*runs: tuple[float, int]) -> list[float]:
    """A VAD script: ``windows((SPEECH, 8), (SILENCE, 20))`` = 8 windows of speech, then 20 of silence."""
    return [float(p) for p, n in runs for _ in range(int(n))]


def tiny_png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return buf.getvalue()


def _pick(script: Script, calls: int, *args) -> str:
    if callable(script):
        return script(*args)
    if isinstance(script, str):
        return script
    return script[min(calls, len(script) - 1)] if len(script) else ""


def _work(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)        # simulated compute: the call takes this long


# ------------------------------------------------------------------------------ parts
class ScriptedVAD:
    """``VoiceActivityModel``; ``fork()`` gives a fresh stream (window index 0) over the same script."""

    sample_rate = RATE
    window = WINDOW

    def __init__(self, probs: Union[None, Sequence[float], Callable[[int], float]] = None) -> None:
        self.script = probs
        self.index = 0                        # windows scored by this stream
        self.forks: list[ScriptedVAD] = []

    def reset(self) -> None:
        self.index = 0

    def prob(self, window: np.ndarray) -> float:
        w = np.asarray(window, np.float32)
        if w.size != WINDOW:
            raise EngineInputError(f"VAD window must be {WINDOW} samples, got {w.size}")
        i, self.index = self.index, self.index + 1
        if self.script is None:
            return SPEECH if w.size and float(np.max(np.abs(w))) >= SPEECH_LEVEL else 0.02
        if callable(self.script):
            return float(self.script(i))
        return float(self.script[i]) if i < len(self.script) else SILENCE

    def fork(self) -> "ScriptedVAD":
        f = ScriptedVAD(self.script)
        self.forks.append(f)
        return f


class ScriptedASR:
    """``SpeechRecognizer``: ``script`` None (decode ``speech()``), a string, a list (one per call,
    the last repeats) or ``f(pcm) -> str``."""

    def __init__(self, script: Optional[Script] = None, *, work_s: float = 0.0) -> None:
        self.script = script
        self.work_s = work_s
        self.calls: list[int] = []            # samples of each call's audio
        self._lock = threading.Lock()

    def transcribe(self, pcm16k: np.ndarray, *, language: Optional[str] = "en",
                   initial_prompt: Optional[str] = None) -> str:
        with self._lock:
            n = len(self.calls)
            self.calls.append(int(pcm16k.size))
        _work(self.work_s)
        return heard(pcm16k) if self.script is None else _pick(self.script, n, pcm16k)

    def hear(self, pcm16k: np.ndarray, languages: Sequence[str] = ("en", "zh")) -> tuple[str, str]:
        return self.transcribe(pcm16k), languages[0]


def tokens(text: str) -> list[str]:
    """The scripted LM's tokens: words, each with the space before it."""
    return re.findall(r"\s*\S+", text)


def render(messages: Sequence[dict]) -> str:
    return "".join(f"<{m['role']}> {m['content']}\n" for m in messages) + "<assistant>"


class _Stream:
    def __init__(self, lm: "ScriptedLM", words: list[str], params: SamplingParams, stop: threading.Event) -> None:
        self._lm, self._words, self._params, self._stop = lm, words, params, stop
        self._aborted = False
        self.finish_reason = ""

    def __iter__(self):
        lm = self._lm
        for i, w in enumerate(self._words):
            if i >= self._params.max_tokens:
                self.finish_reason = "length"
                return
            if not lm._permit(self):
                self.finish_reason = "cancelled"
                return
            _work(lm.token_s)
            lm.cache.append(w)
            yield 1, w
        self.finish_reason = "eos"

    @property
    def cancelled(self) -> bool:
        return self._aborted or self._stop.is_set()

    def abort(self) -> None:
        self._aborted = True
        with self._lm._cond:
            self._lm._cond.notify_all()


class ScriptedLM:
    """``TextLM`` with scripted replies (see the module docstring)."""

    def __init__(self, replies: Script = "Hello there, nice to meet you.", *, n_ctx: int = 4096, gated: bool = False,
                 token_s: float = 0.0, prefill_s: float = 0.0) -> None:
        self.replies = replies
        self.n_ctx = n_ctx
        self.lock = threading.RLock()
        self.gated = gated
        self.token_s = token_s
        self.prefill_s = prefill_s
        self.cache: list[str] = []            # the simulated KV cache, in tokens
        self.prefills: list[list[dict]] = []
        self.warmed: list[list[dict]] = []
        self.streams = 0
        self._cond = threading.Condition()
        self._permits = 0
        self._parked = False

    # gating
    def release(self, n: int = 1) -> None:
        """Gated: let ``n`` more tokens out."""
        with self._cond:
            self._permits += n
            self._parked = self._parked and self._permits == 0    # not waiting any more (until it waits again)
            self._cond.notify_all()

    def parked(self) -> bool:
        """Gated: a reply waits for ``release``."""
        with self._cond:
            return self._parked

    def wait_parked(self, timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._parked:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _permit(self, stream: _Stream) -> bool:
        if stream.cancelled:
            return False
        if not self.gated:
            return True
        with self._cond:
            while self._permits == 0 and not stream.cancelled:
                self._parked = True
                self._cond.notify_all()
                self._cond.wait(0.005)       # wakes on release / abort; a set ``stop`` is seen within 5 ms
            self._parked = False
            if stream.cancelled:
                return False
            self._permits -= 1
            return True

    # TextLM
    def count_tokens(self, messages: Sequence[dict]) -> int:
        return len(tokens(render(messages)))

    def prefill(self, messages: Sequence[dict], stop: Optional[threading.Event] = None) -> PrefillStats:
        prompt = render(messages)
        toks = tokens(prompt)
        if len(toks) >= self.n_ctx:
            raise EngineInputError("the conversation is too long for the model's context")
        with self.lock:
            self.prefills.append([dict(m) for m in messages])
            same = 0
            while same < min(len(toks), len(self.cache)) and toks[same] == self.cache[same]:
                same += 1
            _work(self.prefill_s)
            self.cache = toks
        return PrefillStats(len(toks), len(toks) - same, prompt)

    def stream(self, params: SamplingParams, stop: threading.Event) -> _Stream:
        self.streams += 1
        messages = self.prefills[-1] if self.prefills else []
        if callable(self.replies):
            text = self.replies(messages)
        else:
            text = _pick(self.replies, self.streams - 1)
        return _Stream(self, tokens(text), params, stop)

    def warm_next_turn(self, messages: Sequence[dict]) -> int:
        with self.lock:
            self.warmed.append([dict(m) for m in messages])
        return 0

    def cache_length(self) -> int:
        return len(self.cache)

    def reset(self) -> None:
        with self.lock:
            self.cache = []


class ScriptedSpeaker:
    """``Speaker``: ``speech(text)`` at ``samples_per_char`` 24 kHz samples a character."""

    def __init__(self, samples_per_char: int = 960, *, work_s: float = 0.0,
                 default: Voice = Voice("scripted:default", "the scripted voice")) -> None:
        self.samples_per_char = samples_per_char
        self.work_s = work_s
        self.default = default
        self.calls: list[str] = []

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        self.calls.append(text)
        _work(self.work_s)
        return speech(text, samples_per_char=self.samples_per_char)

    def voice(self, reference_pcm: Optional[np.ndarray]) -> Voice:
        if reference_pcm is None:
            return self.default
        check_reference(reference_pcm)
        return Voice("scripted:matched", "matched (not cloned): the scripted voice", reference=reference_pcm)


class ScriptedVision:
    """``ImageDescriber``: a string, a list (one per call, the last repeats) or ``f(image) -> str``."""

    def __init__(self, script: Script = "a scripted picture", *, work_s: float = 0.0) -> None:
        self.script = script
        self.work_s = work_s
        self.calls = 0

    def describe(self, image: bytes) -> str:
        n, self.calls = self.calls, self.calls + 1
        _work(self.work_s)
        return _pick(self.script, n, image)


# ------------------------------------------------------------------------------ the backend
@dataclass
class Scripted:
    """The scripted parts and the backend over them (``backend``)."""

    vad: ScriptedVAD = field(default_factory=ScriptedVAD)
    asr: ScriptedASR = field(default_factory=ScriptedASR)
    lm: ScriptedLM = field(default_factory=ScriptedLM)
    speaker: ScriptedSpeaker = field(default_factory=ScriptedSpeaker)
    vision: ScriptedVision = field(default_factory=ScriptedVision)
    fast_asr: Optional[ScriptedASR] = None     # None: the same as ``asr``

    def __post_init__(self) -> None:
        self.backend = EmbeddedBackend(parts=self.parts())

    def parts(self) -> Parts:
        return Parts(self.vad, self.asr, self.fast_asr or self.asr, self.lm, self.speaker, self.vision)

    def settle(self, session, timeout: float = 2.0) -> None:
        """Wait until ``session`` (duplex or voice) has no background work left — the gated LM
        waiting for ``release`` counts as idle. Fails the test when it does not settle."""
        assert session.wait_idle(timeout, lm_waiting=self.lm.parked), "the session's background work did not settle"


NUMBERS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty").split()


def _contract_reply(messages: list[dict]) -> str:
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "").lower()
    if "capital" in last and "france" in last:
        return "The capital of France is Paris."
    if "count" in last:
        return ", ".join(NUMBERS * 10) + "."
    return "Once upon a time a small dragon lived by the sea. " * 20


def scripted_contract_case(question: str) -> tuple[EmbeddedBackend, Callable[[str], np.ndarray], str]:
    """(backend, speech, answer) for the contract suite: the LM answers ``question`` (about the
    capital of France) with Paris, counts when asked to count, else tells a long story."""
    assert "capital" in question.lower(), question
    return Scripted(lm=ScriptedLM(_contract_reply)).backend, speech, "paris"
