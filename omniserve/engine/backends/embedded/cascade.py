"""The cascade's parts and the few operations every embedded session is built from.

    audio ─▶ VAD ─▶ ASR ─────────────┐
    image ─▶ vision (OCR + faces) ───┼─▶ text conversation ─▶ TextLM ─▶ sentences ─▶ Speaker (TTS)
    video ─▶ ffmpeg: frames + audio ─┘

``Parts`` names the components; ``load_parts`` builds the real ones from the settings, and a test
builds scripted ones (tests/support/scripted.py) — the sessions cannot tell the difference. Only
one thread drives the LLM at a time (``lm.lock``); ASR and vision have their own locks, so a
duplex caption can run while a reply is spoken.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from omniserve.config import EngineSettings, LLMSettings
from omniserve.engine.api import END_OF_TURN_MODES, GenerationParams, VadSettings, Voice
from omniserve.engine.checks import DEFAULT_SYSTEM, check_audio

from .components.base import EndOfTurnModel, ImageDescriber, SamplingParams, SpeechRecognizer, VoiceActivityModel
from .components.text import HAN
from .components.vad import VadSegmenter
from .lm import PrefillStats, TextLM
from .media import check_image
from .reply import SpokenReply
from .tools import ToolCallParser
from .voices import Speaker

EAGER_CHECK_MS = 300       # an "eager" VAD asks the end-of-turn model after this much silence

SPOKEN_STYLE = ("Your words are spoken aloud by a voice: answer in one to three short, plain spoken "
                "sentences. No markdown, lists, headings, emojis, code, or symbols.")
LANGUAGES = ("auto", "en", "zh")          # engine.language (knobs.LANGUAGE adds "": the engine decides)
AUTO_LANGUAGES = ("en", "zh")             # what "auto" tells apart
MEDIA_NOTE = ("Pictures and videos the user attaches reach you as descriptions in parentheses, made by a "
              "camera reader; treat them as what you see and answer from them.")


@dataclass
class Parts:
    vad: VoiceActivityModel          # forked per session
    asr: SpeechRecognizer            # chat audio items (engine.asr_model)
    fast_asr: SpeechRecognizer       # voice turns and live captions (Whisper tiny.en)
    lm: TextLM
    speaker: Speaker
    vision: ImageDescriber
    turn: Optional[EndOfTurnModel] = None    # Smart Turn (engine.smart_turn); None = the silence timer only
    turn_mode: str = "words"                # engine.end_of_turn: a VAD's default (api.END_OF_TURN_MODES)
    turn_max_silence_ms: int = 1600
    language: str = "auto"                  # engine.language: a session's language when it names none


def load_parts(settings: EngineSettings) -> Parts:
    """The real models, all on the CPU; weights come from pip packages (``models.py``)."""
    from .components.asr import WhisperASR
    from .components.tts import KokoroTTS, PiperTTS
    from .components.vad import SileroVAD
    from .components.vision import VisionDescriber
    from .voices import VoiceBank

    threads = settings.threads or os.cpu_count() or 1
    cache = settings.cache_dir
    asr = WhisperASR(settings.asr_model, threads=threads, cache_dir=cache)
    fast = asr if settings.asr_model == "tiny.en" else WhisperASR("tiny.en", threads=threads)
    kokoro = KokoroTTS(threads=threads, cache_dir=cache)
    default = Voice(f"kokoro:{kokoro.default_voice}", "Kokoro default voice") if settings.tts_engine == "kokoro" \
        else Voice("piper:joe", "Piper US-English male voice (joe)")
    speaker = VoiceBank({"piper": PiperTTS(cache_dir=cache), "kokoro": kokoro}, default)
    lm = make_lm(settings.llm, threads=threads, cache_dir=cache)
    turn = None
    if settings.smart_turn:
        from .components.turn import SmartTurn

        turn = SmartTurn()
    if settings.end_of_turn not in END_OF_TURN_MODES:
        raise ValueError(f"engine.end_of_turn must be one of {', '.join(END_OF_TURN_MODES)}, "
                         f"not {settings.end_of_turn!r}")
    if settings.language not in LANGUAGES:
        raise ValueError(f"engine.language must be one of {', '.join(LANGUAGES)}, not {settings.language!r}")
    return Parts(SileroVAD(), asr, fast, lm, speaker, VisionDescriber(), turn, settings.end_of_turn,
                 settings.turn_max_silence_ms, settings.language)


def make_lm(settings: LLMSettings, *, threads: int, cache_dir: Optional[str]) -> TextLM:
    """The language model named by ``engine.llm``: in process, or an OpenAI-compatible server."""
    if settings.kind == "openai":
        from .openai_lm import OpenAITextLM

        return OpenAITextLM(settings)
    from .components.llm import LlamaLM, gguf_path
    from .lm import LlamaTextLM

    return LlamaTextLM(LlamaLM(gguf_path(settings.model, cache_dir), n_ctx=settings.n_ctx, threads=threads))


def sampling(params: GenerationParams) -> SamplingParams:
    """API generation settings → sampler settings (length_penalty acts as the repeat penalty)."""
    return SamplingParams(max_tokens=int(params.max_new_tokens), temperature=float(params.temperature),
                          top_p=float(params.top_p), top_k=int(params.top_k),
                          repeat_penalty=float(params.length_penalty))


class Cascade:
    """The operations the embedded sessions share, over one set of ``Parts``."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.lm = parts.lm
        self.n_ctx = parts.lm.n_ctx
        self._asr_lock = threading.Lock()
        self._vision_lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    def language(self, requested: str, system_prompt: str = "") -> str:
        """A session's language: the client's, else "auto" for a system prompt written in Chinese,
        else ``engine.language``."""
        if requested:
            return requested
        return "auto" if HAN.search(system_prompt or "") else self.parts.language

    def transcribe(self, pcm16k: np.ndarray, *, fast: bool = False, language: str = "en") -> str:
        """The words of ``pcm16k`` in ``language`` ("en": ``fast`` picks Whisper tiny.en; "zh" and
        "auto" — English or Chinese, whichever it sounds like — need the multilingual model)."""
        pcm = check_audio(pcm16k)
        with self._asr_lock:
            if language == "en":
                return (self.parts.fast_asr if fast else self.parts.asr).transcribe(pcm, language="en")
            if language == "auto":
                return self.parts.asr.hear(pcm, AUTO_LANGUAGES)[0]
            return self.parts.asr.transcribe(pcm, language=language)

    def describe_image(self, data: bytes) -> str:
        data = check_image(data)
        with self._vision_lock:
            return self.parts.vision.describe(data)

    # ------------------------------------------------------------------ the LLM
    @staticmethod
    def system_prompt(system: str, *, spoken: bool = False, media: bool = False) -> str:
        """The user's system prompt plus what the cascade needs the LLM to know."""
        out = (system or "").strip() or DEFAULT_SYSTEM
        if media:
            out += "\n" + MEDIA_NOTE
        if spoken:
            out += "\n" + SPOKEN_STYLE
        return out

    def count_tokens(self, messages: Sequence[dict], tools: Sequence[dict] = ()) -> int:
        if tools:       # only then: a ``TextLM`` without tool support keeps its two-argument calls
            return self.lm.count_tokens(messages, tools)
        return self.lm.count_tokens(messages)

    def prefill(self, messages: Sequence[dict], stop: Optional[threading.Event] = None,
                tools: Sequence[dict] = ()) -> PrefillStats:
        """``stop`` set midway: returns early (in process: at a 256-token batch boundary).
        ``tools``: OpenAI function-tool dicts for the chat template (``tools.template_tools``)."""
        with self.lm.lock:
            if tools:
                return self.lm.prefill(messages, stop, tools)
            return self.lm.prefill(messages, stop)

    def reply(self, params: GenerationParams, *, voice: Optional[Voice],
              before: Optional[Callable[[], bool]] = None,
              after: Optional[Callable[[SpokenReply], None]] = None,
              first_words: Optional[int] = None,
              tool_parser: Optional[ToolCallParser] = None) -> SpokenReply:
        """Start generating from the prefilled context, spoken with ``voice`` (None = text only).
        ``before`` runs first in the reply's thread (False = no reply); ``after`` runs last.
        ``tool_parser``: tool-call blocks are taken out of the text before it is streamed or spoken."""
        speaker = self.parts.speaker
        synth = None if voice is None else (lambda s, v=voice: speaker.synthesize(s, v))
        extra: dict = {} if first_words is None else {"first_words": first_words}
        if tool_parser is not None:
            extra["tool_parser"] = tool_parser
        return SpokenReply(self.lm, sampling(params), synthesize=synth, before=before, after=after, **extra).start()

    def warm_next_turn(self, messages: Sequence[dict]) -> int:
        return self.lm.warm_next_turn(messages)

    def cache_length(self) -> int:
        return self.lm.cache_length()

    # ------------------------------------------------------------------ speech
    def segmenter(self, vad: VadSettings) -> VadSegmenter:
        p = self.parts
        mode = self.turn_mode(vad)
        return VadSegmenter(p.vad.fork(), threshold=vad.threshold,
                            min_speech_duration_ms=vad.min_speech_duration_ms,
                            min_silence_duration_ms=vad.min_silence_duration_ms,
                            speech_pad_ms=vad.speech_pad_ms,
                            end_of_turn=p.turn if mode in ("semantic", "eager") else None,
                            turn_check_ms=EAGER_CHECK_MS if mode == "eager" else None,
                            turn_max_silence_ms=p.turn_max_silence_ms)

    def turn_mode(self, vad: VadSettings) -> str:
        """How the session's turns end (``api.END_OF_TURN_MODES``): the VAD's own, else the engine's."""
        return vad.end_of_turn or self.parts.turn_mode

    def vad_stream(self) -> VoiceActivityModel:
        return self.parts.vad.fork()

    def voice(self, reference_pcm: Optional[np.ndarray]) -> Voice:
        return self.parts.speaker.voice(reference_pcm)
