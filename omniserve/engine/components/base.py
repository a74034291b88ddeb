"""Interfaces of the engine's components. Each backend implementation is one small class
behind one of these, so another implementation can replace it without touching the views.

All audio in is float32 mono 16 kHz; TTS output is float32 mono 24 kHz.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np


class VoiceActivityModel(Protocol):
    sample_rate: int          # 16000
    window: int               # native window in samples (Silero: 512 at 16 kHz)

    def reset(self) -> None: ...
    def prob(self, window: np.ndarray) -> float: ...   # speech probability of one window (stateful, streaming)


class SpeechRecognizer(Protocol):
    def transcribe(self, pcm16k: np.ndarray, *, language: Optional[str] = "en",
                   initial_prompt: Optional[str] = None) -> str: ...


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repeat_penalty: float = 1.1


class LanguageModel(Protocol):
    n_ctx: int

    def tokenize(self, text: str) -> list[int]: ...          # special tokens in ``text`` are parsed
    def detokenize(self, tokens: Sequence[int]) -> str: ...
    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str: ...
    # messages: [{"role": "system"|"user"|"assistant", "content": str}] → prompt text with the model's chat template

    def prefill(self, tokens: Sequence[int], stop: Optional[threading.Event] = None) -> int: ...
    # make the KV cache hold exactly ``tokens``, reusing the longest common prefix already cached;
    # returns how many tokens had to be evaluated now; with ``stop`` set it may return early holding a prefix

    def stream(self, params: SamplingParams, stop: Optional[threading.Event] = None,
               stop_strings: Sequence[str] = ()) -> Iterator[tuple[int, str]]: ...
    # continue from the cached tokens; yields (token id, text piece) and appends to the cache
    # (LlamaLM: the piece may be "" while a UTF-8 character or a possible stop string is incomplete;
    #  a final (-1, text) pair flushes text held back for stop strings; EOS is not appended)

    def cached_tokens(self) -> list[int]: ...                  # tokens now in the KV cache

    # additions (components/llm.py LlamaLM implements them):
    n_cached: int                                              # len(cached_tokens()), cheap
    def truncate(self, n: int) -> None: ...                    # drop cached tokens after the first n (rollback, sliding window)
    def reset(self) -> None: ...                               # truncate(0)
    def is_eog(self, token: int) -> bool: ...                  # end-of-generation token (EOS, <|im_end|>)
    last_finish_reason: str                                    # after stream(): "eos" | "length" | "stop_string" | "cancelled" | "context"


@dataclass
class VoiceInfo:
    name: str                 # e.g. "piper:joe", "kokoro:af_heart"
    pitch_hz: float           # median F0 of the voice
    rate_sps: float           # speaking rate, syllables per second (approx.)
    gender: str = ""          # "f" | "m" | ""


class SpeechSynthesizer(Protocol):
    sample_rate: int          # always 24000 (resampled inside when the model's rate differs)

    def voices(self) -> list[VoiceInfo]: ...
    def synthesize(self, text: str, voice: Optional[str] = None, speed: float = 1.0) -> np.ndarray: ...


class ImageDescriber(Protocol):
    def describe(self, image: bytes) -> str: ...   # short caption; EngineInputError if undecodable
