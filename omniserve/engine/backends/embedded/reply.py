"""A reply produced in the background: the LLM writes, a TTS thread speaks sentence by sentence.

Two threads, so the first sentence is being spoken while the LLM still writes the second:

    LLM thread ──text pieces──▶ buffer (read by the session)
        └──sentences (first clause early)──▶ TTS thread ──audio──▶ buffer

The session either iterates (chat, half-duplex: blocks until something arrives) or ``take``s what
is ready without blocking (duplex: at most N tokens and one unit of audio per unit). ``cancel``
stops both threads at their next token / sentence and drops what is buffered (barge-in, stop).

``work`` (a ``WorkMeter``) holds the compute time of both threads by stage, ``"llm"`` (the token
stream) and ``"tts"`` (each synthesis), the part still in flight included: a duplex unit reports
from it the reply work done since the previous unit.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np

from omniserve.engine.api import Delta

from .components.base import SamplingParams
from .components.text import SentenceSplitter, normalize_for_speech
from .lm import TextLM, TokenStream
from .tools import ToolCallParser

Synthesize = Callable[[str], np.ndarray]
FIRST_PIECE_WORDS = 5     # speak the first words this early even without a comma (first audio sooner)


class WorkMeter:
    """Busy time per stage in ms: the union of the stage's calls in flight, so calls of one stage
    that queue on one lock (ASR, the LLM) are not counted twice. Thread-safe; ``totals`` includes
    the elapsed part of calls still running."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._done: dict[str, float] = {}
        self._active: dict[str, tuple[int, float]] = {}    # stage -> (calls in flight, since)

    @contextmanager
    def busy(self, stage: str) -> Iterator[None]:
        with self._lock:
            n, since = self._active.get(stage, (0, 0.0))
            self._active[stage] = (n + 1, since if n else self._clock())
        try:
            yield
        finally:
            with self._lock:
                n, since = self._active.pop(stage)
                if n > 1:
                    self._active[stage] = (n - 1, since)
                else:
                    self._done[stage] = self._done.get(stage, 0.0) + (self._clock() - since) * 1000

    def active(self, stage: str) -> bool:
        with self._lock:
            return stage in self._active

    def totals(self) -> dict[str, float]:
        """Busy ms per stage since the meter was made."""
        with self._lock:
            now = self._clock()
            out = dict(self._done)
            for stage, (_, since) in self._active.items():
                out[stage] = out.get(stage, 0.0) + (now - since) * 1000
            return out


def _early_first_piece(splitter: SentenceSplitter, buffered: str, first_words: int = FIRST_PIECE_WORDS) -> list[str]:
    """Before any piece was spoken: once ``first_words`` whole words are written, speak them."""
    words = buffered.split()
    if len(words) <= first_words or buffered[-1:].isspace():
        return []
    rest = words[-1]                       # possibly incomplete: keep it for the next piece
    pieces = splitter.flush()
    if not pieces:
        return []
    head = pieces[0][: len(pieces[0]) - len(rest)].rstrip()
    splitter.push(rest)
    return [head] if head else []


class SpokenReply:
    """A reply from a prefilled ``TextLM``, spoken by an optional synthesizer."""

    def __init__(self, lm: TextLM, params: SamplingParams, *, synthesize: Optional[Synthesize],
                 before: Optional[Callable[[], bool]] = None,
                 after: Optional[Callable[["SpokenReply"], None]] = None,
                 first_words: int = FIRST_PIECE_WORDS, tool_parser: Optional[ToolCallParser] = None) -> None:
        self._lm = lm
        self._stream: Optional[TokenStream] = None
        self._first_words = max(1, int(first_words))   # duplex speaks a shorter first piece (sooner audio)
        self._params = params
        self._tools = tool_parser          # takes tool-call blocks out of the text (neither streamed nor spoken)
        self._synth = synthesize
        self._before = before              # work to do first in the LLM thread (ASR + prefill); False = no reply
        self._after = after                # bookkeeping at the end, still holding the LLM lock
        self._cancel = threading.Event()
        self._cond = threading.Condition()
        self._text: collections.deque[str] = collections.deque()      # one entry per token
        self._audio: collections.deque[np.ndarray] = collections.deque()
        self._sentences: "queue.Queue[Optional[str]]" = queue.Queue()
        self._llm_done = False
        self._tts_done = synthesize is None
        self.error: Optional[BaseException] = None
        self.text = ""
        self.n_tokens = 0
        self.n_pieces = 0                  # sentences sent to TTS
        self.n_voiced = 0                  # of which synthesized (or failed)
        self.finish_reason = ""
        self.first_token_at: Optional[float] = None
        self.llm_ms = 0.0                  # compute time spent in the background so far
        self.before_ms = 0.0
        self.spoken = ""                   # text already handed to the listener (duplex: what was said)
        self.work = WorkMeter()            # compute time by stage ("llm", "tts"), in flight included
        self._threads = [threading.Thread(target=self._run_llm, name="reply-llm", daemon=True)]
        if synthesize is not None:
            self._threads.append(threading.Thread(target=self._run_tts, name="reply-tts", daemon=True))

    def start(self) -> "SpokenReply":
        for t in self._threads:
            t.start()
        return self

    # ----------------------------------------------------------------------- producers
    def _run_llm(self) -> None:
        splitter = SentenceSplitter()
        try:
            with self._lm.lock:
                try:
                    go = not self._cancel.is_set()
                    if go and self._before is not None:
                        t0 = time.monotonic()
                        go = self._before() is not False
                        self.before_ms = (time.monotonic() - t0) * 1000
                    if go and not self._cancel.is_set():
                        self._generate(splitter)
                finally:
                    if self._after is not None:
                        self._after(self)
        except BaseException as e:     # surfaced to the reader, never kills the process
            self.error = e
        finally:
            if self._synth is not None:
                if not self._cancel.is_set():
                    for s in splitter.flush():
                        self._speak(s)
                self._sentences.put(None)
            with self._cond:
                self._llm_done = True
                self._cond.notify_all()

    def _generate(self, splitter: SentenceSplitter) -> None:
        with self.work.busy("llm"):
            self._generate_tokens(splitter)

    def _generate_tokens(self, splitter: SentenceSplitter) -> None:
        t0 = time.monotonic()
        buffered = ""
        stream = self._stream = self._lm.stream(self._params, self._cancel)
        if self._cancel.is_set():
            stream.abort()
        for n, raw in stream:
            piece = raw if self._tools is None else self._tools.push(raw)
            with self._cond:
                if self.first_token_at is None:
                    self.first_token_at = time.monotonic()
                self._text.append(piece)
                self.text += piece
                self.n_tokens += n
                self.llm_ms = (time.monotonic() - t0) * 1000
                self._cond.notify_all()
            if self._synth is not None and piece:
                pieces = splitter.push(piece)
                if not pieces and self.n_pieces == 0:
                    buffered += piece
                    pieces = _early_first_piece(splitter, buffered, self._first_words)
                for s in pieces:
                    self._speak(s)
        if self._tools is not None and not self._cancel.is_set():
            rest = self._tools.flush()
            if rest:
                with self._cond:
                    self._text.append(rest)
                    self.text += rest
                    self._cond.notify_all()
                if self._synth is not None:
                    for s in splitter.push(rest):
                        self._speak(s)
        self.finish_reason = stream.finish_reason
        self.llm_ms = (time.monotonic() - t0) * 1000

    def _speak(self, sentence: str) -> None:
        if normalize_for_speech(sentence):
            self.n_pieces += 1
            self._sentences.put(sentence)

    def _run_tts(self) -> None:
        synth = self._synth
        assert synth is not None          # this thread exists only with a synthesizer
        try:
            while not self._cancel.is_set():
                s = self._sentences.get()
                if s is None or self._cancel.is_set():
                    break
                try:
                    with self.work.busy("tts"):
                        audio = synth(s)
                finally:
                    self.n_voiced += 1
                if audio is not None and audio.size:
                    with self._cond:
                        self._audio.append(np.asarray(audio, np.float32))
                        self._cond.notify_all()
        except BaseException as e:
            self.error = e
        finally:
            with self._cond:
                self._tts_done = True
                self._cond.notify_all()

    # ----------------------------------------------------------------------- consumers
    @property
    def producing(self) -> bool:
        return not (self._llm_done and self._tts_done)

    @property
    def tts_backlog(self) -> int:
        """Sentences written by the LLM and not yet synthesized (0: the voice has caught up)."""
        return self.n_pieces - self.n_voiced

    @property
    def done(self) -> bool:
        with self._cond:
            return self._llm_done and self._tts_done and not self._text and not self._audio

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def iterate(self, stop: Optional[threading.Event] = None) -> Iterator[Delta]:
        """Deltas in order of production until the reply ends; a set ``stop`` cancels within ~50 ms."""
        while True:
            with self._cond:
                while not self._text and not self._audio and not (self._llm_done and self._tts_done):
                    if stop is not None and stop.is_set():
                        break
                    self._cond.wait(0.05)
                text = "".join(self._text)
                self._text.clear()
                audio = list(self._audio)
                self._audio.clear()
                finished = self._llm_done and self._tts_done
            if stop is not None and stop.is_set():
                self.cancel()
                return
            if text:
                yield Delta(text=text)
            for a in audio:
                yield Delta(audio=a)
            if finished and not text and not audio:
                if self.error is not None:
                    raise self.error
                return

    def take(self, max_tokens: int, max_samples: int) -> tuple[str, int, Optional[np.ndarray]]:
        """Non-blocking: at most ``max_tokens`` tokens of text and ``max_samples`` of audio."""
        with self._cond:
            n = min(len(self._text), max(0, max_tokens))
            text = "".join(self._text.popleft() for _ in range(n))
            self.spoken += text
            parts: list[np.ndarray] = []
            need = max(0, max_samples)
            while need > 0 and self._audio:
                a = self._audio[0]
                if a.size <= need:
                    parts.append(self._audio.popleft())
                    need -= a.size
                else:
                    parts.append(a[:need])
                    self._audio[0] = a[need:]
                    need = 0
        audio = np.concatenate(parts) if parts else None
        return text, n, audio

    def buffered_samples(self) -> int:
        with self._cond:
            return sum(a.size for a in self._audio)

    def cancel(self, wait: float = 2.0) -> None:
        """Stop producing, drop buffers, and wait (bounded) for the LLM to let go of the model."""
        self._cancel.set()
        stream = self._stream
        if stream is not None:
            stream.abort()          # a remote server's HTTP stream closes now, not at its next piece
        self._sentences.put(None)
        with self._cond:
            self._text.clear()
            self._audio.clear()
            self._cond.notify_all()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(wait)

    def wait_quiet(self, timeout: float, lm_waiting: Callable[[], bool] = lambda: False) -> bool:
        """Test seam: wait until the reply has ended or — while ``lm_waiting()`` says the model
        is waiting (a test's gated LM) — the LLM is in its token stream and every sentence
        written so far is voiced. True when quiet within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.producing and not (self.work.active("llm") and lm_waiting() and self.tts_backlog == 0):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def wait(self, timeout: Optional[float] = None) -> None:
        for t in self._threads:
            t.join(timeout)
