"""The OpenAI Realtime protocol as omniserve speaks it on ``/v1/realtime`` (docs/realtime.md).

Client events are parsed here into typed models: the GA names, and the beta spellings clients
still send (``session.update`` with ``modalities`` / ``voice`` / ``turn_detection`` at the top of
the session, ``input_audio_format``, ``max_response_output_tokens``). Both are normalised into one
``SessionConfig``, so the worker never branches on the dialect except when it writes events back.
Unknown fields are ignored (clients are written against a moving API); sizes and nesting are
capped before anything is built (``safe_json``; the frame itself is capped by the endpoint).

``omniserve.*`` events are our extensions (queue position and ETA before a worker is assigned).
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..knobs import GENERATION
from .messages import MAX_TOOL_SPEC_CHARS, MAX_TOOLS, TOOL_NAME_PATTERN, ProtocolError, load_json

IN_RATE = 24000                      # pcm16 in and out, the protocol's default
AUDIO_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
FORMAT_GA = {v: k for k, v in GA_FORMATS.items()}
MAX_INSTRUCTIONS = 20_000
MAX_ITEM_TEXT = 20_000
MAX_ITEMS = 400                      # conversation items a session keeps (oldest dropped past that)
EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 600, "auto": 600, "high": 300}   # semantic_vad on our VAD


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


# ------------------------------------------------------------------ session
@dataclass(frozen=True)
class TurnDetection:
    """``server_vad`` on the engine's VAD (``semantic_vad`` maps onto it, see docs/realtime.md)."""
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    type: str = "server_vad"
    eager: bool = False              # semantic_vad with eagerness "high": a finished turn may end sooner


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SessionConfig:
    instructions: str = ""
    voice: str = "alloy"
    output_modalities: tuple[str, ...] = ("audio",)       # ("text",) = text only, no speech at all
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    turn_detection: Optional[TurnDetection] = TurnDetection()
    transcription_model: Optional[str] = None
    language: str = ""              # the transcription's language: "en" | "zh" | "" (the engine decides)
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: str = "auto"                              # auto | none | required | a tool's name
    temperature: float = GENERATION.temperature.default   # our extension to GA sessions (beta has it)
    max_output_tokens: Optional[int] = None               # None = "inf" (the engine's own cap)
    speed: float = 1.0

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Format(_Loose):
    type: str = "audio/pcm"
    rate: Optional[int] = None


class _TurnDetectionIn(_Loose):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    prefix_padding_ms: Optional[int] = Field(default=None, ge=0, le=2000)
    silence_duration_ms: Optional[int] = Field(default=None, ge=50, le=10_000)
    create_response: Optional[bool] = None
    interrupt_response: Optional[bool] = None
    eagerness: Optional[Literal["low", "medium", "high", "auto"]] = None


class _Transcription(_Loose):
    model: Optional[str] = Field(default=None, max_length=100)
    language: Optional[Literal["en", "zh"]] = None     # ISO-639-1; the engine hears English and Chinese


class _AudioInput(_Loose):
    format: Optional[Union[_Format, str]] = None
    transcription: Optional[_Transcription] = None
    turn_detection: Optional[_TurnDetectionIn] = None


class _AudioOutput(_Loose):
    format: Optional[Union[_Format, str]] = None
    voice: Optional[Union[str, dict]] = None
    speed: Optional[float] = Field(default=None, ge=0.25, le=1.5)


class _Audio(_Loose):
    input: Optional[_AudioInput] = None
    output: Optional[_AudioOutput] = None


class _ToolIn(_Loose):
    type: Literal["function"] = "function"
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = Field(default="", max_length=MAX_TOOL_SPEC_CHARS)
    parameters: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _spec_size(self) -> "_ToolIn":
        if len(json.dumps([self.description, self.parameters])) > MAX_TOOL_SPEC_CHARS:
            raise ValueError(f"a tool's description and parameters exceed {MAX_TOOL_SPEC_CHARS} characters")
        return self


class _ToolChoiceObj(_Loose):
    type: str = "function"
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class SessionIn(_Loose):
    """A session (GA) or its beta spelling; only what was sent is applied."""
    type: Optional[str] = None
    model: Optional[str] = Field(default=None, max_length=200)
    instructions: Optional[str] = Field(default=None, max_length=MAX_INSTRUCTIONS)
    output_modalities: Optional[list[Literal["text", "audio"]]] = Field(default=None, max_length=2)
    modalities: Optional[list[Literal["text", "audio"]]] = Field(default=None, max_length=2)      # beta
    audio: Optional[_Audio] = None
    voice: Optional[Union[str, dict]] = None                                                      # beta
    input_audio_format: Optional[str] = None                                                     # beta
    output_audio_format: Optional[str] = None                                                    # beta
    input_audio_transcription: Optional[_Transcription] = None                                   # beta
    turn_detection: Optional[_TurnDetectionIn] = None                                            # beta
    tools: Optional[list[_ToolIn]] = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Optional[Union[str, _ToolChoiceObj]] = None
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    max_output_tokens: Optional[Union[int, Literal["inf"]]] = None
    max_response_output_tokens: Optional[Union[int, Literal["inf"]]] = None                      # beta
    speed: Optional[float] = Field(default=None, ge=0.25, le=1.5)


def _format_name(f: Union[_Format, str, None], what: str) -> Optional[str]:
    if f is None:
        return None
    if isinstance(f, str):
        name = GA_FORMATS.get(f, f)
    else:
        name = GA_FORMATS.get(f.type, f.type)
        if name == "pcm16" and f.rate not in (None, IN_RATE):
            raise ProtocolError(f"{what}: only rate {IN_RATE} is supported for audio/pcm")
    if name not in AUDIO_FORMATS:
        raise ProtocolError(f"{what} {name!r} is not supported; use pcm16 (audio/pcm, 24 kHz), "
                            "g711_ulaw (audio/pcmu) or g711_alaw (audio/pcma)")
    return name


def _max_tokens(v: Union[int, str, None]) -> Optional[int]:
    if v is None or v == "inf":
        return None
    problem = GENERATION.max_new_tokens.problem("max_output_tokens", int(v))     # the engine's own bound
    if problem is not None:
        raise ProtocolError(problem + ' (or "inf")')
    return int(v)


def _turns(td: Optional[_TurnDetectionIn], old: Optional[TurnDetection]) -> TurnDetection:
    base = old if old is not None else TurnDetection()
    if td is None:
        return base
    out = replace(base, type=td.type)
    if td.type == "semantic_vad":
        out = replace(out, silence_duration_ms=EAGERNESS_SILENCE_MS[td.eagerness or "auto"],
                      eager=td.eagerness == "high")
    for name in ("threshold", "prefix_padding_ms", "silence_duration_ms", "create_response", "interrupt_response"):
        v = getattr(td, name)
        if v is not None:
            out = replace(out, **{name: v})
    return out


def tool_choice_name(c: Union[str, _ToolChoiceObj, dict, None]) -> Optional[str]:
    if c is None:
        return None
    if isinstance(c, dict):
        c = _ToolChoiceObj.model_validate(c)
    if isinstance(c, _ToolChoiceObj):
        return c.name
    if c not in ("auto", "none", "required"):
        raise ProtocolError(f"tool_choice {c[:64]!r} is not auto, none, required or a function")
    return c


def apply_session(cfg: SessionConfig, s: SessionIn) -> SessionConfig:
    """``cfg`` with what ``s`` sets (GA or beta spelling); raises ProtocolError on a bad value."""
    fs = s.model_fields_set
    out: dict[str, Any] = {}
    if s.instructions is not None:
        out["instructions"] = s.instructions
    mods = s.output_modalities if s.output_modalities is not None else s.modalities
    if mods is not None:
        if not mods:
            raise ProtocolError("output_modalities must name text or audio")
        # beta's ["text", "audio"] means speech with its transcript: text alone is the text-only session
        out["output_modalities"] = ("audio",) if "audio" in mods else ("text",)
    a_in = s.audio.input if s.audio else None
    a_out = s.audio.output if s.audio else None
    fmt = _format_name(a_in.format if a_in else None, "input format") or _format_name(s.input_audio_format, "input_audio_format")
    if fmt:
        out["input_format"] = fmt
    fmt = _format_name(a_out.format if a_out else None, "output format") or _format_name(s.output_audio_format, "output_audio_format")
    if fmt:
        out["output_format"] = fmt
    voice = (a_out.voice if a_out else None) or s.voice
    if voice is not None:
        out["voice"] = voice if isinstance(voice, str) else str(voice.get("id", "alloy"))[:64]
    speed = (a_out.speed if a_out else None) or s.speed
    if speed is not None:
        out["speed"] = speed
    # turn detection: an explicit null means manual turns (commit + response.create)
    if a_in is not None and "turn_detection" in a_in.model_fields_set:
        out["turn_detection"] = None if a_in.turn_detection is None else _turns(a_in.turn_detection, cfg.turn_detection)
    elif "turn_detection" in fs:
        out["turn_detection"] = None if s.turn_detection is None else _turns(s.turn_detection, cfg.turn_detection)
    tr_set = a_in is not None and "transcription" in a_in.model_fields_set
    if tr_set or "input_audio_transcription" in fs:
        tr = a_in.transcription if tr_set and a_in is not None else s.input_audio_transcription
        out["transcription_model"] = (tr.model or "whisper") if tr is not None else None
        out["language"] = (tr.language or "") if tr is not None else ""
    if s.tools is not None:
        names = [t.name for t in s.tools]
        if len(set(names)) != len(names):
            raise ProtocolError("tools: a function name is declared twice")
        out["tools"] = tuple(FunctionTool(t.name, t.description, t.parameters) for t in s.tools)
    if s.tool_choice is not None:
        out["tool_choice"] = tool_choice_name(s.tool_choice)
    if s.temperature is not None:
        out["temperature"] = s.temperature
    for name in ("max_output_tokens", "max_response_output_tokens"):
        if name in fs:
            out["max_output_tokens"] = _max_tokens(getattr(s, name))
    new = replace(cfg, **out)
    if new.tool_choice not in ("auto", "none", "required") and new.tool_choice not in {t.name for t in new.tools}:
        raise ProtocolError(f"tool_choice names {new.tool_choice!r}, which is not among the session's tools")
    return new


# ------------------------------------------------------------------ items
class ContentIn(_Loose):
    type: Literal["input_text", "input_audio", "text", "output_text", "audio", "output_audio"]
    text: Optional[str] = Field(default=None, max_length=MAX_ITEM_TEXT)
    audio: Optional[str] = None            # base64 in the session's input format
    transcript: Optional[str] = Field(default=None, max_length=MAX_ITEM_TEXT)


class ItemIn(_Loose):
    id: Optional[str] = Field(default=None, max_length=64)
    type: Literal["message", "function_call", "function_call_output"]
    role: Optional[Literal["user", "assistant", "system"]] = None
    content: list[ContentIn] = Field(default_factory=list, max_length=16)
    call_id: Optional[str] = Field(default=None, max_length=64)
    name: Optional[str] = Field(default=None, max_length=64)
    arguments: Optional[str] = Field(default=None, max_length=MAX_ITEM_TEXT)
    output: Optional[str] = Field(default=None, max_length=MAX_ITEM_TEXT)


class ResponseIn(_Loose):
    instructions: Optional[str] = Field(default=None, max_length=MAX_INSTRUCTIONS)
    output_modalities: Optional[list[Literal["text", "audio"]]] = Field(default=None, max_length=2)
    modalities: Optional[list[Literal["text", "audio"]]] = Field(default=None, max_length=2)       # beta
    tools: Optional[list[_ToolIn]] = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Optional[Union[str, _ToolChoiceObj]] = None
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    max_output_tokens: Optional[Union[int, Literal["inf"]]] = None
    max_response_output_tokens: Optional[Union[int, Literal["inf"]]] = None                       # beta
    conversation: Optional[str] = None
    metadata: Optional[dict[str, str]] = None


# ------------------------------------------------------------------ client events
class _Event(_Loose):
    event_id: Optional[str] = Field(default=None, max_length=128)


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: SessionIn


class AudioAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: Optional[str] = Field(default=None, max_length=64)
    item: ItemIn


class ItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str = Field(max_length=64)
    content_index: int = Field(default=0, ge=0)
    audio_end_ms: int = Field(ge=0)


class ItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str = Field(max_length=64)


class ItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str = Field(max_length=64)


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: Optional[ResponseIn] = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: Optional[str] = Field(default=None, max_length=64)


class OutputAudioClear(_Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = Union[SessionUpdate, AudioAppend, AudioCommit, AudioClear, ItemCreate, ItemTruncate, ItemDelete,
                    ItemRetrieve, ResponseCreate, ResponseCancel, OutputAudioClear]
_BY_TYPE: dict[str, type[BaseModel]] = {
    m.model_fields["type"].annotation.__args__[0]: m
    for m in ClientEvent.__args__                        # type: ignore[attr-defined]
}
CLIENT_EVENT_TYPES = tuple(_BY_TYPE)


class RealtimeProtocolError(ProtocolError):
    """A client event we refuse; ``event_id`` and ``param`` go into the ``error`` event."""

    def __init__(self, message: str, *, event_id: Optional[str] = None, code: str = "invalid_request_error",
                 param: Optional[str] = None) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.code = code
        self.param = param


def parse_client_event(raw: Union[str, bytes]) -> ClientEvent:
    """One client frame → its typed event, or ``RealtimeProtocolError`` (with the client's
    ``event_id`` when the frame had one)."""
    try:
        obj = load_json(raw)
    except ProtocolError as e:
        raise RealtimeProtocolError(str(e), code="invalid_json") from None
    if not isinstance(obj, dict):
        raise RealtimeProtocolError("an event must be a JSON object", code="invalid_event")
    eid = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    t = obj.get("type")
    model = _BY_TYPE.get(t) if isinstance(t, str) else None
    if model is None:
        shown = t[:64] if isinstance(t, str) else t
        raise RealtimeProtocolError(f"Unknown event type {shown!r}", event_id=eid and eid[:128],
                                    code="invalid_event", param="type")
    try:
        return model.model_validate(obj)      # type: ignore[return-value]
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise RealtimeProtocolError(f"Invalid {t}: {where}: {err.get('msg')}", event_id=eid and eid[:128],
                                    code="invalid_value", param=where or None) from None
    except ProtocolError as e:
        raise RealtimeProtocolError(str(e), event_id=eid and eid[:128]) from None


# ------------------------------------------------------------------ events the gateway writes
def error_event(message: str, *, code: Optional[str] = None, event_id: Optional[str] = None,
                param: Optional[str] = None, kind: str = "invalid_request_error") -> str:
    return json.dumps({"type": "error", "event_id": new_id("event"),
                       "error": {"type": kind, "code": code, "message": message, "param": param,
                                 "event_id": event_id}})


def queue_event(position: int, estimated_wait_s: float, queue_length: int, ticket_id: str = "") -> str:
    """``omniserve.queue.updated``: waiting for a worker (position 1 = next)."""
    return json.dumps({"type": "omniserve.queue.updated", "event_id": new_id("event"), "position": position,
                       "estimated_wait_s": round(float(estimated_wait_s), 1), "queue_length": queue_length,
                       "ticket_id": ticket_id})


def assigned_event() -> str:
    """``omniserve.queue.assigned``: a worker took the session; ``session.created`` follows."""
    return json.dumps({"type": "omniserve.queue.assigned", "event_id": new_id("event")})
