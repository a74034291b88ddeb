"""Full duplex on the embedded cascade: decide, every unit of audio, whether to listen or speak.

A cascade has no listen/speak tokens, so the decision is a small policy over Silero VAD run on
every 512-sample window of the unit:

- **listen** while the user speaks (an utterance opens after ~190 ms of speech); a background
  thread transcribes the growing utterance with Whisper tiny.en for live captions, and prefills
  the words heard so far (the reply's own prefill is then a few tokens at most);
- **end of turn** once the utterance is followed by ``END_SILENCE_MS`` of silence (scaled by
  ``listen_prob_scale``). The reply already starts, speculatively, after ``SPECULATE_MS`` of
  silence in the background (final ASR, or the last caption when it heard every voiced window,
  prefill of only the new tokens, LLM → a 3-word first piece → TTS); it is dropped unheard if
  the user goes on speaking, and once the turn is confirmed the units hand it out: at most
  ``max_new_speak_tokens_per_chunk`` tokens of text and about ``chunk_ms`` of audio per unit;
- **barge-in**: user speech while a reply is pending or being spoken cancels it at once (buffers
  dropped, ``end_of_turn``), and the interrupting speech becomes the next utterance.

The unit call itself only runs VAD and moves buffers (a few ms); everything heavy runs in
background threads, so a unit keeps pace with real time. Memory stays bounded for hour-long
sessions: the utterance is capped, the conversation is a sliding window, buffers are per reply.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import numpy as np

from omniserve.engine.api import DuplexSettings, EngineBackendError, EngineInputError, GenerationParams, UnitResult, Voice
from omniserve.engine.checks import check_audio

from .cascade import Cascade
from .conversation import Conversation
from .media import check_image
from .reply import SpokenReply

WINDOW = 512
WINDOW_MS = WINDOW * 1000 / 16000          # 32 ms
SPEECH_P, SILENCE_P = 0.5, 0.35            # Silero hysteresis
START_MS = 190                             # this much speech opens an utterance (and barges in)
END_SILENCE_MS = 480                       # silence after speech that ends the user's turn
SPECULATE_MS = 128                         # silence that already starts the reply (dropped if speech resumes)
FIRST_WORDS = 3                            # the reply's first spoken piece: this many words (first audio sooner)
PARTIAL_MAX = 160000                       # partial captions read the utterance's last 10 s
MIN_UTTERANCE_MS = 250                     # shorter voiced time is noise: no reply
MAX_UTTERANCE_S = 30.0                     # a longer monologue is answered at this point
PREROLL_MS = 400
FRAME_EVERY_S = 3.0                        # re-describe the camera at most this often
REPLY_MAX_TOKENS = 120
AUDIO_LEAD_MS = 200                        # extra audio on a reply's first speaking unit
_MAX_UTT_WINDOWS = int(MAX_UTTERANCE_S * 1000 / WINDOW_MS) + 1
FINAL_ASR_FAST = True                      # tiny.en for the final transcript too: ~3x faster than base



class EmbeddedDuplex:
    """``backends.base.DuplexSession`` for the cascade."""

    def __init__(self, backend: Cascade, system_prompt: str, voice: Voice, cfg: DuplexSettings) -> None:
        self.b = backend
        self.cfg = cfg
        self.voice = voice
        system = backend.system_prompt(system_prompt, spoken=cfg.generate_audio)
        if cfg.omni:
            system += "\nYou also see through the user's camera: what it shows is given as (Camera: ...)."
        self.conv = Conversation(system)
        self.params = GenerationParams(REPLY_MAX_TOKENS, cfg.temperature, cfg.top_p, cfg.top_k, cfg.length_penalty)
        self.vad = backend.vad_stream()
        self.end_silence_ms = END_SILENCE_MS * min(max(float(cfg.listen_prob_scale), 0.25), 4.0)
        self.out_chunk = int(cfg.chunk_ms) * 24
        self._jobs = ThreadPoolExecutor(1, thread_name_prefix="duplex-bg")
        self._lock = threading.Lock()                  # conversation + shared captions
        self._units = 0
        self._pending = np.zeros(0, np.float32)
        self._preroll: collections.deque[np.ndarray] = collections.deque(maxlen=int(PREROLL_MS / WINDOW_MS))
        self._run_ms = 0.0
        self._in_speech = False
        self._utt: list[np.ndarray] = []
        self._voiced_ms = 0.0
        self._silence_ms = 0.0
        self._partial: Optional[Future] = None
        self._partial_text: Optional[Future] = None      # the partial's words, set before its prefill
        self._partial_key: tuple = ()                  # (utterance, voiced ms) the running/last partial heard
        self._utt_serial = 0
        self._caption = ""                             # latest words heard (partial or final)
        self._reported = ""
        self._frame: Optional[bytes] = None
        self._frame_job: Optional[Future] = None
        self._frame_at = -1e9
        self._frame_desc = ""
        self._reply: Optional[SpokenReply] = None
        self._reply_state: dict = {}
        self._confirmed = False
        self._spec_voiced = 0.0
        self._emitted = self._audio_started = False
        self._llm_seen = self._tts_seen = 0.0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> int:
        return self.b.prefill(self.conv.messages()).input_tokens

    def close(self) -> None:
        self._closed = True
        if self._reply is not None:
            self._reply.cancel(wait=0)
            self._reply = None
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._utt.clear()
        self._preroll.clear()

    def kv_cache_length(self) -> int:
        return self.b.cache_length()

    # ------------------------------------------------------------------ one unit
    def unit(self, audio: np.ndarray, frames: Optional[list[bytes]], force_listen: bool) -> UnitResult:
        t0 = time.perf_counter()
        if self._closed:
            raise EngineInputError("this duplex session is closed; prepare a new one")
        pcm = check_audio(audio, self.cfg.sample_rate, what="audio chunk", max_seconds=10.0)
        frame = check_image(frames[-1], what="camera frame") if frames else None
        index, self._units = self._units, self._units + 1
        forced = bool(force_listen) or index < int(self.cfg.force_listen_count)
        if frame is not None and self.cfg.omni:
            self._maybe_describe(frame, index)

        tv = time.perf_counter()
        barge = self._scan(pcm)
        vad_ms = (time.perf_counter() - tv) * 1000

        res = UnitResult(is_listen=True)
        reply = self._reply
        if reply is not None and (barge or reply.cancelled):
            res.end_of_turn = self._emitted          # the reply is cut: tell the client to stop playing
            reply.cancel(wait=0)
            self._reply = None
        elif reply is not None and not self._confirmed:
            if self._voiced_ms > self._spec_voiced + 2 * WINDOW_MS:     # the user went on speaking
                self._reply_state["discard"] = True
                reply.cancel(wait=0)
                self._reply = None
            elif not forced and self._silence_ms >= self.end_silence_ms:
                self._close_utterance()
                self._confirmed = True
                self._drain(reply, res)
        elif reply is not None and not forced:
            self._drain(reply, res)
        elif reply is None and self._in_speech:
            self._maybe_end_turn(forced)
        if self._reply is None and self._in_speech:
            self._maybe_partial()
        res.user_text = self._new_caption()
        res.kv_cache_length = self.b.cache_length()
        res.timings = self._timings(reply, vad_ms, t0)
        return res

    # ------------------------------------------------------------------ listening
    def _scan(self, pcm: np.ndarray) -> bool:
        """VAD over the unit at the native window; True when user speech opens during a reply."""
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = buf.size - buf.size % WINDOW
        self._pending = buf[n:].copy()
        barge = False
        for i in range(0, n, WINDOW):
            w = buf[i:i + WINDOW]
            p = self.vad.prob(w)
            if p >= SPEECH_P:
                self._run_ms += WINDOW_MS
            elif p < SILENCE_P:
                self._run_ms = 0.0
            if not self._in_speech:
                self._preroll.append(w)
                if self._run_ms >= START_MS:
                    self._open_utterance()
                    barge = barge or self._reply is not None
            else:
                self._utt.append(w)
                if len(self._utt) > _MAX_UTT_WINDOWS:     # forced listening through a monologue
                    del self._utt[0]
                if p >= SPEECH_P:
                    self._silence_ms = 0.0
                    self._voiced_ms += WINDOW_MS
                elif p < SILENCE_P:
                    self._silence_ms += WINDOW_MS
        return barge

    def _open_utterance(self) -> None:
        self._in_speech = True
        self._utt_serial += 1
        self._utt = list(self._preroll)
        self._preroll.clear()
        self._voiced_ms = self._run_ms
        self._silence_ms = 0.0

    def _utterance_audio(self) -> np.ndarray:
        return np.concatenate(self._utt) if self._utt else np.zeros(0, np.float32)

    def _maybe_end_turn(self, forced: bool) -> None:
        """Start the reply: confirmed after the end-of-turn silence, speculatively before it (or
        while listening is forced: it is prepared then, and handed out once the force ends)."""
        long = len(self._utt) * WINDOW_MS >= MAX_UTTERANCE_S * 1000
        voiced = self._voiced_ms
        heard = self._partial_text if self._partial_key == (self._utt_serial, voiced, True) else None
        if not forced and (self._silence_ms >= self.end_silence_ms or long):
            audio = self._close_utterance()
            if voiced >= MIN_UTTERANCE_MS:
                self._start_reply(audio, confirmed=True, heard=heard)
        elif self._silence_ms >= min(SPECULATE_MS, self.end_silence_ms) and voiced >= MIN_UTTERANCE_MS:
            self._spec_voiced = voiced
            self._start_reply(self._utterance_audio(), confirmed=False, heard=heard)

    def _close_utterance(self) -> np.ndarray:
        audio = self._utterance_audio()
        self._in_speech = False
        self._utt = []
        self._run_ms = 0.0
        return audio

    def _maybe_partial(self) -> None:
        """Live caption: transcribe the growing utterance (last 10 s) when the worker is free.

        The caption is also what the reply reads when no voiced audio came after it (the final
        ASR is skipped), and its words are prefilled already so the reply's prefill is short."""
        if self._partial is not None and not self._partial.done():
            return
        whole = self._utterance_audio()
        audio = whole[-PARTIAL_MAX:]
        if audio.size < 8000:
            return
        key = (self._utt_serial, self._voiced_ms, whole.size <= PARTIAL_MAX)
        heard: Future = Future()       # the words alone: a reply waits on these, never on the prefill

        def job() -> None:
            try:
                text = self.b.transcribe(audio, fast=True).strip()
            except BaseException as e:
                heard.set_exception(e)
                raise
            heard.set_result(text)
            if not text or self._closed:
                return
            with self._lock:
                self._caption = text
                messages = [*self.conv.messages(), {"role": "user", "content": text}]
            # warm the KV cache with the words heard so far, unless a reply holds the model
            if self._reply is None and self.b.lm.lock.acquire(blocking=False):
                try:
                    self.b.prefill(messages)
                except EngineInputError:
                    pass
                finally:
                    self.b.lm.lock.release()

        self._partial_key = key
        self._partial = self._jobs.submit(job)
        self._partial_text = heard

    def _new_caption(self) -> str:
        with self._lock:
            if self._caption and self._caption != self._reported:
                self._reported = self._caption
                return self._caption
        return ""

    def _maybe_describe(self, frame: bytes, index: int) -> None:
        now = index * self.cfg.chunk_ms / 1000
        self._frame = frame
        if now - self._frame_at < FRAME_EVERY_S or (self._frame_job is not None and not self._frame_job.done()):
            return
        self._frame_at = now

        def job() -> None:
            try:
                desc = self.b.describe_image(frame)
            except EngineInputError:
                return
            with self._lock:
                self._frame_desc = desc

        self._frame_job = self._jobs.submit(job)

    # ------------------------------------------------------------------ speaking
    def _start_reply(self, audio: np.ndarray, confirmed: bool, heard: Optional[Future] = None) -> None:
        """Start the reply; ``heard``: a partial caption of all the utterance's voiced audio."""
        state = {"user": False, "discard": False}

        def transcript() -> str:
            if heard is not None:
                text = ""
                for _ in range(200):     # ≤ 10 s; a job dropped at close never answers
                    try:
                        text = heard.result(timeout=0.05)
                        break
                    except TimeoutError:
                        if self._closed:
                            return ""
                    except Exception:    # noqa: BLE001 - a failed caption: transcribe afresh
                        break
                if text:
                    return text
            return self.b.transcribe(audio, fast=FINAL_ASR_FAST).strip()

        def before() -> bool:
            heard = transcript()
            if not heard or self._closed:
                return False
            with self._lock:
                self._caption = heard
                user = heard + (f" (Camera: {self._frame_desc})" if self.cfg.omni and self._frame_desc else "")
                self.conv.add("user", user)
                state["user"] = True
                budget = self.b.n_ctx - REPLY_MAX_TOKENS - 64
                self.conv.fit(self.b.count_tokens, budget)
                messages = self.conv.messages()
            self.b.prefill(messages)
            return True

        def after(reply: SpokenReply) -> None:
            if not state["user"]:
                return
            with self._lock:
                if state["discard"]:        # a speculative start the user talked through: forget it
                    if self.conv.turns and self.conv.turns[-1].role == "user":
                        self.conv.turns.pop()
                else:
                    said = reply.spoken if reply.cancelled else reply.text
                    self.conv.add("assistant", said.strip() or "…")
                messages = self.conv.messages()
            if not self._closed:
                self.b.warm_next_turn(messages)

        self._reply_state = state
        self._confirmed = confirmed
        self._emitted = self._audio_started = False
        self._llm_seen = self._tts_seen = 0.0
        self._reply = self.b.reply(self.params, voice=self.voice if self.cfg.generate_audio else None,
                                   before=before, after=after, first_words=FIRST_WORDS)

    def _drain(self, reply: SpokenReply, res: UnitResult) -> None:
        want = self.out_chunk + (0 if self._audio_started else AUDIO_LEAD_MS * 24)
        text, n, audio = reply.take(int(self.cfg.max_new_speak_tokens_per_chunk), want if self.cfg.generate_audio else 0)
        res.text, res.n_tokens, res.audio = text, n, audio
        res.n_tts_tokens = 0 if audio is None else audio.size // 960      # 40 ms frames
        got = bool(text) or audio is not None
        self._audio_started = self._audio_started or audio is not None
        self._emitted = self._emitted or got
        if reply.done:
            res.end_of_turn = self._emitted
            self._reply = None
            if isinstance(reply.error, EngineBackendError):
                raise reply.error
            if reply.error is not None and not isinstance(reply.error, EngineInputError):
                raise RuntimeError(f"reply failed: {reply.error}") from reply.error
        res.is_listen = not self._emitted

    def _timings(self, reply: Optional[SpokenReply], vad_ms: float, t0: float) -> dict:
        llm = tts = before = 0.0
        if reply is not None:
            llm, self._llm_seen = max(0.0, reply.llm_ms - self._llm_seen), reply.llm_ms
            tts, self._tts_seen = max(0.0, reply.tts_ms - self._tts_seen), reply.tts_ms
            before = reply.before_ms
        return {"cost_vad_ms": round(vad_ms, 2), "cost_asr_ms": 0.0,
                "cost_llm_ms": round(llm, 1), "cost_tts_ms": round(tts, 1),
                "bg_asr_prefill_ms": round(before, 1),
                "cost_all_ms": round((time.perf_counter() - t0) * 1000, 2)}
