"""The embedded CPU backend: a cascade of small real models that ship inside pip packages.

    audio ─▶ Silero VAD ─▶ Whisper (faster-whisper) ─┐
    image ─▶ OCR + faces + scene (vision) ───────────┼─▶ text prompt ─▶ Qwen2.5-0.5B (llama.cpp) ─▶ Piper / Kokoro
    video ─▶ ffmpeg: frames + audio track ───────────┘

Everything is loaded once here; views and duplex sessions borrow it. The LLM is not
thread-safe, so every use of it holds ``llm_lock`` (only one view is active at a time, but a
reply's background thread and a new request may overlap for a few milliseconds).
"""
from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

import numpy as np

from ...config import EngineSettings
from ..api import (Audio, DuplexSettings, EngineInputError, GenerationParams, Image, Message, Text,
                   VadSettings, Video, Voice)
from ..components.base import SamplingParams
from ..media import check_audio, check_image, split_video
from ..params import DEFAULT_SYSTEM
from .base import EncodedMessage, PrefillStats
from .reply import SpokenReply

SPOKEN_STYLE = ("Your words are spoken aloud by a voice: answer in one to three short, plain spoken "
                "sentences. No markdown, lists, headings, emojis, code, or symbols.")
MEDIA_NOTE = ("Pictures and videos the user attaches reach you as descriptions in parentheses, made by a "
              "camera reader; treat them as what you see and answer from them.")


def sampling(params: GenerationParams) -> SamplingParams:
    """API generation settings → sampler settings (length_penalty acts as llama's repeat penalty)."""
    return SamplingParams(max_tokens=int(params.max_new_tokens), temperature=float(params.temperature),
                          top_p=float(params.top_p), top_k=int(params.top_k),
                          repeat_penalty=float(params.length_penalty))


class EmbeddedBackend:
    """``backends.base.Backend`` over VAD + ASR + LLM + TTS + vision, all on the CPU."""

    name = "embedded"

    def __init__(self, settings: EngineSettings) -> None:
        from ..components.asr import WhisperASR
        from ..components.llm import LlamaLM, gguf_path
        from ..components.tts import KokoroTTS, PiperTTS
        from ..components.vad import SileroVAD

        self.settings = settings
        threads = settings.threads or os.cpu_count() or 1
        cache = settings.cache_dir
        self.vad = SileroVAD()
        self.asr = WhisperASR(settings.asr_model, threads=threads, cache_dir=cache)
        # duplex partial transcripts while the user speaks: the fast model, loaded once (~40 MB)
        self.fast_asr = self.asr if settings.asr_model == "tiny.en" else WhisperASR("tiny.en", threads=threads)
        self.llm = LlamaLM(gguf_path(settings.llm_model, cache), n_ctx=settings.n_ctx, threads=threads)
        self.n_ctx = self.llm.n_ctx
        self.piper = PiperTTS(cache_dir=cache)
        self.kokoro = KokoroTTS(threads=threads, cache_dir=cache)
        from ..components.vision import VisionDescriber

        self.vision = VisionDescriber()
        self.llm_lock = threading.RLock()
        self.asr_lock = threading.Lock()
        self.vision_lock = threading.Lock()
        self._voices = self.piper.voices() + self.kokoro.voices()

    # ------------------------------------------------------------------ reading items
    def transcribe(self, pcm16k: np.ndarray, *, fast: bool = False) -> str:
        pcm = check_audio(pcm16k)
        with self.asr_lock:
            return (self.fast_asr if fast else self.asr).transcribe(pcm)

    def describe_image(self, data: bytes) -> str:
        data = check_image(data)
        with self.vision_lock:
            return self.vision.describe(data)

    def encode(self, message: Message, stop: Optional[threading.Event] = None) -> EncodedMessage:
        """The text the LLM reads for one message: audio transcribed, images described, video split."""
        if message.role not in ("system", "user", "assistant"):
            raise EngineInputError(f"unknown role {message.role!r} (use system, user or assistant)")
        # a user's audio is their words unless they also typed text (then it is a clip to discuss)
        spoken_words = not any(isinstance(i, Text) and str(i.text).strip() for i in message.items)
        parts: list[str] = []
        heard: list[str] = []
        for k, item in enumerate(message.items):
            if stop is not None and stop.is_set():
                break
            if isinstance(item, Text):
                parts.append(str(item.text))
            elif isinstance(item, Image):
                parts.append(f"(Attached picture: {self.describe_image(item.data)})")
            elif isinstance(item, Audio):
                said = self.transcribe(check_audio(item.pcm, item.sample_rate, what=f"audio item {k + 1}"))
                heard.append(said)
                parts.append(said if spoken_words else f'(Audio clip that says: "{said}")' if said else "(Audio clip without speech)")
            elif isinstance(item, Video):
                text, said = self._encode_video(item)
                heard.append(said)
                parts.append(text)
            else:
                raise EngineInputError(f"unknown content item {type(item).__name__}")
        return EncodedMessage(message.role, "\n".join(p for p in parts if p).strip(), " ".join(h for h in heard if h))

    def _encode_video(self, item: Video) -> tuple[str, str]:
        video = split_video(item.data, max_frames=max(2, min(8, 2 * int(item.stack_frames or 1))))
        seen: list[str] = []
        for t, jpeg in video.frames:
            d = self.describe_image(jpeg)
            if not seen or not seen[-1].endswith(d):
                seen.append(f"at {t:.0f} s: {d}")
        said = self.transcribe(video.audio) if video.audio is not None else ""
        text = f"(Attached video, {video.duration_s:.0f} s. Frames {'; '.join(seen)}."
        text += f' Its audio says: "{said}")' if said else " No speech in its audio.)"
        return text, said

    # ------------------------------------------------------------------ the LLM
    def system_prompt(self, system: str, *, spoken: bool = False, media: bool = False) -> str:
        """The user's system prompt plus what this backend needs the LLM to know."""
        out = (system or "").strip() or DEFAULT_SYSTEM
        if media:
            out += "\n" + MEDIA_NOTE
        if spoken:
            out += "\n" + SPOKEN_STYLE
        return out

    def render(self, messages: Sequence[dict]) -> str:
        return self.llm.render_chat(list(messages), add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[dict]) -> int:
        return len(self.llm.tokenize(self.render(messages)))

    def prefill(self, messages: Sequence[dict]) -> PrefillStats:
        prompt = self.render(messages)
        tokens = self.llm.tokenize(prompt)
        with self.llm_lock:
            evaluated = self.llm.prefill(tokens)
        return PrefillStats(len(tokens), evaluated, prompt)

    def reply(self, params: GenerationParams, *, speak: bool, voice: Optional[Voice],
              stop: Optional[threading.Event] = None, before=None, after=None,
              first_words: Optional[int] = None) -> SpokenReply:
        """Start generating from the prefilled context (``before`` runs first, in the reply's thread;
        ``first_words``: speak the first piece after this many words, default ``FIRST_PIECE_WORDS``)."""
        synth = (lambda s, v=voice: self.synthesize(s, v)) if speak else None
        extra = {} if first_words is None else {"first_words": first_words}
        return SpokenReply(self.llm, sampling(params), synthesize=synth, llm_lock=self.llm_lock,
                           before=before, after=after, **extra).start()

    def prefill_next_turn(self, messages: Sequence[dict]) -> int:
        """While the user listens: evaluate what every next user turn starts with (the end of the
        reply, the user header), so the turn itself only costs its own words. Template-agnostic:
        the shared prefix of two renders that differ only in the user's text."""
        a = self.llm.tokenize(self.render([*messages, {"role": "user", "content": "a"}]))
        b = self.llm.tokenize(self.render([*messages, {"role": "user", "content": "b"}]))
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        if n == 0 or n >= self.n_ctx:
            return 0
        with self.llm_lock:
            return self.llm.prefill(a[:n])

    def append_reply(self, text: str) -> None:
        """Nothing to do: the cache holds the generated tokens; the next prefill reuses them."""

    def cache_length(self) -> int:
        return self.llm.n_cached

    def reset(self) -> None:
        with self.llm_lock:
            self.llm.reset()

    # ------------------------------------------------------------------ speech out
    def synthesize(self, text: str, voice: Optional[Voice] = None) -> np.ndarray:
        from ..voice import parse_voice

        name, speed = parse_voice(voice or self.default_voice())
        if name.startswith("kokoro:"):
            return self.kokoro.synthesize(text, voice=name, speed=speed)
        return self.piper.synthesize(text, voice=name, speed=speed)

    def voices(self):
        return list(self._voices)

    def default_voice(self) -> Voice:
        if self.settings.tts_engine == "kokoro":
            return Voice(f"kokoro:{self.kokoro.default_voice}", "Kokoro default voice")
        return Voice("piper:joe", "Piper US-English male voice (joe)")

    def voice_from_reference(self, pcm16k: np.ndarray) -> Voice:
        from ..voice import match_voice

        return match_voice(pcm16k, self._voices)

    # ------------------------------------------------------------------ streaming speech in
    def segmenter(self, settings: VadSettings):
        from ..components.vad import VadSegmenter

        return VadSegmenter(self.vad.fork(), threshold=settings.threshold,
                            min_speech_duration_ms=settings.min_speech_duration_ms,
                            min_silence_duration_ms=settings.min_silence_duration_ms,
                            speech_pad_ms=settings.speech_pad_ms)

    def duplex(self, system_prompt: str, voice: Optional[Voice], config: DuplexSettings):
        from .duplex_policy import EmbeddedDuplex

        return EmbeddedDuplex(self, system_prompt, voice or self.default_voice(), config)
