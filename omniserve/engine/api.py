"""The engine's public contract: what the worker (and tests, benchmarks) may call.

The worker imports only this module and ``omniserve.engine.load_processor`` (which builds a
``UnifiedProcessor``). Nothing here knows about WebSockets. Audio in is mono float32 at 16 kHz;
audio out is mono float32 at 24 kHz.

Cancellation: every long call takes a ``threading.Event`` (``stop``); when it is set the call
returns at its next chunk / token boundary.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol, Sequence, Union

import numpy as np

from ..knobs import DUPLEX, GENERATION, VAD


class EngineInputError(ValueError):
    """Bad input (wrong sample rate, empty audio, undecodable image …). ``str(e)`` is user-facing."""


class EngineBackendError(RuntimeError):
    """What does the inference failed (a model server timed out, refused, or went away mid-reply).
    ``str(e)`` is user-facing and names no secret; the session may go on with the next turn."""


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
class ToolCall:
    """A function call the model asked for (OpenAI shape): ``arguments`` is a JSON object's text."""
    id: str
    name: str
    arguments: str = "{}"


@dataclass
class Tool:
    """A function the model may call: OpenAI's ``{"type": "function", "function": {...}}``."""
    name: str
    description: str = ""
    parameters: dict = field(default_factory=dict)    # a JSON schema (an object's)


ToolChoice = str   # "auto" | "none" | "required" | the name of one tool (call that one)


@dataclass
class Message:
    role: str                # "system" | "user" | "assistant" | "tool"
    items: list[Item]
    tool_calls: list[ToolCall] = field(default_factory=list)   # assistant: the calls it made
    tool_call_id: str = ""   # tool: the call this message answers


@dataclass
class GenerationParams:
    """Defaults and ranges: ``omniserve.knobs.GENERATION`` (checked by ``checks.check_generation``)."""
    max_new_tokens: int = GENERATION.max_new_tokens.default
    temperature: float = GENERATION.temperature.default
    top_p: float = GENERATION.top_p.default
    top_k: int = GENERATION.top_k.default
    length_penalty: float = GENERATION.length_penalty.default
    language: str = GENERATION.language.default     # "" (the engine decides) | "auto" | "en" | "zh"


@dataclass
class Voice:
    """A voice to speak with. ``reference`` is the client's reference recording, if any: a cloning
    backend speaks with it; the embedded cascade picks the shipped voice closest in pitch and rate."""
    name: str                       # e.g. "piper:joe" or "kokoro:af_heart"
    description: str = ""
    reference: Optional[np.ndarray] = field(default=None, repr=False, compare=False)   # 16 kHz float32


# ------------------------------------------------------------------------- events
# What the engine produces, in order, for chat and voice turns (the worker's wire writer and its
# recorder both consume this one stream). Duplex produces one ``UnitResult`` per unit instead.
@dataclass
class SpeechStarted:
    """Voice session: the user started speaking."""


@dataclass
class SpeechEnded:
    """Voice session: the user's turn ended; a reply follows (``Prefilled``, ``Delta``…, ``ReplyDone``)."""
    duration_ms: float
    segment: np.ndarray = field(repr=False)   # the turn's speech, 16 kHz float32 (for recordings)


@dataclass
class Prefilled:
    """The model has read the turn; the reply starts next."""
    input_tokens: int                      # tokens in the context (a remote server's may be estimated)
    evaluated: int = 0                     # of which computed now (the rest came from a cache)
    heard: str = ""                        # what the user's audio said, if it had audio
    prompt: str = ""                       # what the model reads, as text (diagnostics, tests)


@dataclass
class Delta:
    """A piece of the reply: text, speech (24 kHz float32), or both."""
    text: str = ""
    audio: Optional[np.ndarray] = None


@dataclass
class ReplyDone:
    """The reply ended (complete, stopped, or cut by the length limit)."""
    text: str
    generated_tokens: int
    input_tokens: int
    heard: str = ""
    stopped: bool = False
    finish_reason: str = ""                # "eos" | "length" | "cancelled" | "tool_calls" | …
    tool_calls: list[ToolCall] = field(default_factory=list)   # the model's calls (finish_reason "tool_calls")


Event = Union[SpeechStarted, SpeechEnded, Prefilled, Delta, ReplyDone]


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
class Capabilities:
    """What a backend can do (docs/engine.md has the table)."""
    chat: bool = True
    voice: bool = True                     # half-duplex voice sessions
    duplex: bool = True
    camera: bool = False                   # duplex with camera frames (omni)
    media: tuple[str, ...] = ("text",)     # chat item types read: "text", "image", "audio", "video"
    voice_cloning: bool = False            # speaks with the reference voice itself
    # sessions one loaded engine serves at once (the worker's slots are capped by it): 1 while the
    # engine holds one session's state (one active view, one conversation, one decoder); more only
    # for a backend whose sessions are independent (e.g. each one a stream to a remote server)
    max_sessions: int = 1


@dataclass
class VadSettings:
    """Defaults and ranges: ``omniserve.knobs.VAD`` (checked by ``checks.check_vad``)."""
    threshold: float = VAD.threshold.default
    min_speech_duration_ms: int = VAD.min_speech_duration_ms.default
    min_silence_duration_ms: int = VAD.min_silence_duration_ms.default
    speech_pad_ms: int = VAD.speech_pad_ms.default
    # one of END_OF_TURN_MODES, "" = the backend's default
    end_of_turn: str = ""


# How a voice turn ends (VadSettings.end_of_turn, engine.end_of_turn):
#   "silence"   min_silence_duration_ms of silence, the timer alone;
#   "words"     the timer, but a turn whose words so far sound unfinished ("I'd like to go to")
#               may pause longer, up to a cap;
#   "semantic"  as "words", and an end-of-turn model that hears the turn unfinished also holds it;
#   "eager"     as "semantic", and the model is asked sooner, so a finished turn also ends sooner.
END_OF_TURN_MODES = ("silence", "words", "semantic", "eager")


@dataclass
class DuplexSettings:
    """Defaults and ranges: ``omniserve.knobs.DUPLEX`` (checked by ``checks.check_duplex``)."""
    generate_audio: bool = DUPLEX.generate_audio.default
    force_listen_count: int = DUPLEX.force_listen_count.default
    max_new_speak_tokens_per_chunk: int = DUPLEX.max_new_speak_tokens_per_chunk.default
    temperature: float = DUPLEX.temperature.default
    top_p: float = DUPLEX.top_p.default
    top_k: int = DUPLEX.top_k.default
    listen_prob_scale: float = DUPLEX.listen_prob_scale.default
    length_penalty: float = DUPLEX.length_penalty.default
    chunk_ms: int = DUPLEX.chunk_ms.default
    sample_rate: int = DUPLEX.sample_rate.default
    language: str = DUPLEX.language.default         # as GenerationParams.language
    omni: bool = True                      # False for audio-only duplex (from the session id, not a knob)


# ---------------------------------------------------------------------------- views
class ChatView(Protocol):
    def reply(self, messages: Sequence[Message], *, generation: GenerationParams = GenerationParams(),
              voice: Optional[Voice] = None, stop: Optional[threading.Event] = None,
              tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]: ...
    # ``Prefilled``, then ``Delta``…, then ``ReplyDone``; speech only when ``voice`` is given;
    # with ``tools`` the reply may end in ``ReplyDone.tool_calls`` (that text is neither streamed nor spoken)
    def reset(self) -> None: ...


class HalfDuplexView(Protocol):
    def prepare(self, system_prompt: str, *, voice: Optional[Voice] = None, generation: GenerationParams = GenerationParams(),
                vad: VadSettings = VadSettings()) -> int: ...       # returns prompt tokens; no voice = text replies
    def feed(self, pcm16k: np.ndarray, stop: Optional[threading.Event] = None) -> Iterator[Event]: ...
    # ``SpeechStarted``; ``SpeechEnded`` followed by the reply's events (blocks while it is generated)
    def reset(self) -> None: ...
    def kv_cache_length(self) -> int: ...


class DuplexView(Protocol):
    def prepare(self, system_prompt: str, voice: Optional[Voice] = None, config: DuplexSettings = DuplexSettings()) -> int: ...
    def unit(self, audio_chunk: np.ndarray, frames: Optional[list[bytes]] = None, force_listen: bool = False) -> UnitResult: ...
    def reset(self) -> None: ...
    def kv_cache_length(self) -> int: ...


class Listener(Protocol):
    """Voice activity in a microphone stream, nothing more: where the user's turns start and end."""
    speaking: bool                          # inside a turn (``SpeechStarted`` came, ``SpeechEnded`` not yet)

    def feed(self, pcm16k: np.ndarray) -> list[Union[SpeechStarted, SpeechEnded]]: ...
    def current_audio(self) -> np.ndarray: ...   # the turn being spoken so far (while ``speaking``)
    @property
    def silence_ms(self) -> float: ...     # trailing silence so far (inside a turn: since the last speech)
    @property
    def speech_ms(self) -> float: ...      # the current turn's speech so far (0 outside one)


class RealtimeView(Protocol):
    """A conversation the client edits item by item (OpenAI Realtime): the worker keeps the items,
    finds turns with ``listener``, reads them with ``transcribe`` and answers with ``reply``."""
    def listener(self, vad: VadSettings) -> Listener: ...
    def transcribe(self, pcm16k: np.ndarray, language: str = "", instructions: str = "") -> str: ...
    # a user turn's words ("" = none); ``language`` as ``GenerationParams.language``, ``instructions``
    # the session's system prompt
    def reply(self, messages: Sequence[Message], *, generation: GenerationParams = GenerationParams(),
              voice: Optional[Voice] = None, stop: Optional[threading.Event] = None,
              tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]: ...
    # as ``ChatView.reply``; thread-safe beside ``listener``/``transcribe`` (the worker runs a reply
    # on its own thread so that turns are still heard while it speaks: barge-in)
    def reset(self) -> None: ...
    def kv_cache_length(self) -> int: ...


class Processor(Protocol):
    """``omniserve.engine.UnifiedProcessor`` — loads every model once; views share them."""

    capabilities: Capabilities

    def set_chat_mode(self) -> ChatView: ...
    def set_half_duplex_mode(self) -> HalfDuplexView: ...
    def set_duplex_mode(self) -> DuplexView: ...
    def set_realtime_mode(self) -> RealtimeView: ...
    def voice(self, reference_pcm: Optional[np.ndarray] = None) -> Voice: ...   # None = the default voice
