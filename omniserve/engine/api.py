"""The engine's public contract: what the worker (and tests, benchmarks) may call.

The worker imports only this module and ``omniserve.engine.UnifiedProcessor``. Nothing here
knows about WebSockets. Audio in is mono float32 at 16 kHz; audio out is mono float32 at 24 kHz.

Cancellation: every long call takes a ``threading.Event`` (``stop``); when it is set the call
returns at its next chunk / token boundary.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol, Sequence, Union

import numpy as np


class EngineInputError(ValueError):
    """Bad input (wrong sample rate, empty audio, undecodable image …). ``str(e)`` is user-facing."""


# ------------------------------------------------------------------ conversation items
@dataclass
class Text:
    text: str


@dataclass
class Image:
    data: bytes  # JPEG/PNG bytes


@dataclass
class Audio:
    pcm: np.ndarray          # float32 mono
    sample_rate: int = 16000  # anything other than 16000 is an EngineInputError


@dataclass
class Video:
    data: bytes              # MP4/WebM container bytes
    stack_frames: int = 1


Item = Union[Text, Image, Audio, Video]


@dataclass
class Message:
    role: str                # "system" | "user" | "assistant"
    items: list[Item]


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    length_penalty: float = 1.1


@dataclass
class Voice:
    """A voice for TTS, chosen (not cloned) from the shipped voices by a reference's pitch and rate."""
    name: str                       # e.g. "piper:joe" or "kokoro:af_heart" or a blend id
    description: str = ""


# ------------------------------------------------------------------------- outputs
@dataclass
class Delta:
    text: str = ""                         # text delta (may be "")
    audio: Optional[np.ndarray] = None     # 24 kHz float32 chunk, or None


@dataclass
class ChatResult:
    text: str
    audio: Optional[np.ndarray]            # whole reply audio (24 kHz) or None
    generated_tokens: int
    input_tokens: int
    stopped: bool = False


@dataclass
class PrefillResult:
    input_tokens: int
    transcript: str = ""                   # what the user's audio said (half-duplex, chat audio)


@dataclass
class UnitResult:
    is_listen: bool
    text: str = ""
    audio: Optional[np.ndarray] = None     # 24 kHz float32 for this unit, or None
    end_of_turn: bool = False
    n_tokens: int = 0
    n_tts_tokens: int = 0
    kv_cache_length: int = 0
    timings: dict = field(default_factory=dict)   # cost_llm_ms, cost_tts_ms, cost_all_ms, cost_asr_ms, cost_vad_ms, …
    user_text: str = ""                    # what ASR heard in this unit (for recordings/captions)


@dataclass
class VadEvent:
    kind: str                              # "speech_start" | "speech_end"
    segment: Optional[np.ndarray] = None   # on speech_end: the padded speech segment (16 kHz)
    speech_duration_ms: float = 0.0


@dataclass
class VadSettings:
    threshold: float = 0.8
    min_speech_duration_ms: int = 128
    min_silence_duration_ms: int = 800
    speech_pad_ms: int = 30


@dataclass
class DuplexSettings:
    generate_audio: bool = True
    force_listen_count: int = 3
    max_new_speak_tokens_per_chunk: int = 20
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    listen_prob_scale: float = 1.0
    length_penalty: float = 1.1
    chunk_ms: int = 1000
    sample_rate: int = 16000
    omni: bool = True                      # False for audio-only duplex


# ---------------------------------------------------------------------------- views
class ChatView(Protocol):
    def prefill(self, messages: Sequence[Message], *, tts: bool = False, voice: Optional[Voice] = None,
                generation: GenerationParams = GenerationParams(), stop: Optional[threading.Event] = None) -> PrefillResult: ...

    def generate(self, streaming: bool = True, stop: Optional[threading.Event] = None) -> Union[Iterator[Delta], ChatResult]: ...
    # after a streaming generate is exhausted, ``last_result`` holds the ChatResult
    last_result: Optional[ChatResult]

    def cached_prefix_hash(self) -> Optional[str]: ...   # hash of the message history held in the LLM cache


class HalfDuplexView(Protocol):
    def prepare(self, system_prompt: str, *, voice: Optional[Voice] = None, generation: GenerationParams = GenerationParams(),
                tts: bool = True, vad: VadSettings = VadSettings()) -> int: ...       # returns prompt tokens
    def feed(self, pcm16k: np.ndarray) -> list[VadEvent]: ...                          # streaming server VAD
    def prefill(self, speech16k: np.ndarray, stop: Optional[threading.Event] = None) -> PrefillResult: ...
    def generate(self, stop: Optional[threading.Event] = None) -> Iterator[Delta]: ...
    last_result: Optional[ChatResult]
    def reset(self) -> None: ...
    def kv_cache_length(self) -> int: ...


class DuplexView(Protocol):
    def prepare(self, system_prompt: str, voice: Optional[Voice] = None, config: DuplexSettings = DuplexSettings()) -> int: ...
    def unit(self, audio_chunk: np.ndarray, frames: Optional[list[bytes]] = None, force_listen: bool = False) -> UnitResult: ...
    def reset(self) -> None: ...
    def kv_cache_length(self) -> int: ...


class Processor(Protocol):
    """``omniserve.engine.UnifiedProcessor`` — loads every model once; views share them."""

    def set_chat_mode(self) -> ChatView: ...
    def set_half_duplex_mode(self) -> HalfDuplexView: ...
    def set_duplex_mode(self) -> DuplexView: ...
    def voice_from_reference(self, pcm16k: np.ndarray) -> Voice: ...
    def default_voice(self) -> Voice: ...
    def describe_image(self, data: bytes) -> str: ...
