"""Pydantic models of every WebSocket message in PROTOCOL.md.

Shared by the gateway, the worker, the tests and Python clients. Names are the wire names:
third-party clients depend on them. Client messages are validated with the ``parse_*`` functions
(bounded decoding first, ``safe_json``; any failure is a ``ProtocolError``);
server messages are built with the ``*Msg`` models and sent with ``.model_dump_json()`` (or
``dump``), which leaves out ``None`` fields that the protocol marks optional.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional, TypeVar, Union, get_args

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .. import knobs
from ..knobs import Knob
from .modes import duplex_variant  # noqa: F401  (re-exported: ``omniserve.protocol`` takes it from here)
from .safe_json import JSONLimitError, loads_bounded


class _Client(BaseModel):
    """Client → server message: unknown extra fields are tolerated (forward compatibility)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Server(BaseModel):
    model_config = ConfigDict(extra="allow")

    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)


# --------------------------------------------------------------------------- chat

class TextItem(_Client):
    type: Literal["text"]
    text: str = ""


class ImageItem(_Client):
    type: Literal["image"]
    data: str = ""


class AudioItem(_Client):
    type: Literal["audio"]
    data: str = ""
    sample_rate: int = Field(16000, ge=8000, le=48000)


class VideoItem(_Client):
    type: Literal["video"]
    data: str = ""
    stack_frames: int = Field(1, ge=1, le=16)


ContentItem = Union[TextItem, ImageItem, AudioItem, VideoItem]


# ------------------------------------------------------------ chat tools (addition)
# OpenAI's chat-completions shapes. The bounds are the engine's (``engine.checks``: MAX_TOOLS,
# TOOL_NAME, MAX_TOOL_SPEC_CHARS; a unit test keeps them equal): anything this model accepts the
# engine accepts too, so a hostile request is refused here, before it takes a queue place.
MAX_TOOLS = 32                     # tools in a request; tool calls in one assistant message
MAX_TOOL_SPEC_CHARS = 8000         # one tool's description + parameters schema, as JSON text
MAX_TOOL_ARGUMENTS_CHARS = 8000    # one call's ``arguments`` text
MAX_TOOL_CALL_ID_CHARS = 128
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"   # OpenAI's rule for function names
TOOL_CHOICES = ("auto", "none", "required")

ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
ToolCallId = Annotated[str, Field(min_length=1, max_length=MAX_TOOL_CALL_ID_CHARS)]


def _flat_function(data: Any, fields: tuple[str, ...]) -> Any:
    """The flat (OpenAI Realtime) shape ``{"type": "function", "name": …}`` as the nested one
    ``{"type": "function", "function": {"name": …}}``; anything else as it is."""
    if isinstance(data, dict) and "function" not in data and "name" in data:
        out: dict = {"function": {k: data[k] for k in fields if k in data}}
        if "type" in data:
            out["type"] = data["type"]
        return out
    return data


class ToolFunction(_Client):
    name: ToolName
    description: str = Field("", max_length=MAX_TOOL_SPEC_CHARS)
    parameters: dict[str, Any] = Field(default_factory=dict)   # a JSON schema (an object's)

    @model_validator(mode="after")
    def _bounded(self) -> "ToolFunction":
        if len(json.dumps([self.description, self.parameters])) > MAX_TOOL_SPEC_CHARS:
            raise ValueError(f"tool {self.name!r}: its description and parameters exceed "
                             f"{MAX_TOOL_SPEC_CHARS} characters as JSON")
        return self


class ChatTool(_Client):
    """``{"type": "function", "function": {"name", "description", "parameters"}}`` (or flat)."""
    type: Literal["function"] = "function"
    function: ToolFunction

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        return _flat_function(data, ("name", "description", "parameters"))


class ToolChoiceFunction(_Client):
    name: ToolName


class NamedToolChoice(_Client):
    """``{"type": "function", "function": {"name"}}`` (or flat ``{"type": "function", "name"}``)."""
    type: Literal["function"] = "function"
    function: ToolChoiceFunction

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        return _flat_function(data, ("name",))


class ToolCallFunction(_Client):
    name: ToolName
    arguments: str = Field("{}", max_length=MAX_TOOL_ARGUMENTS_CHARS)   # a JSON object's text

    @field_validator("arguments", mode="before")
    @classmethod
    def _as_text(cls, v: Any) -> Any:
        """An object is taken too (some clients send one): as its JSON text."""
        return json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v


class ChatToolCall(_Client):
    """A call the assistant made (OpenAI shape): in a request's assistant message, and in ``done``."""
    id: ToolCallId
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Client):
    role: Literal["system", "user", "assistant", "tool"]
    content: Union[str, list[ContentItem], None] = None   # None only for an assistant's tool calls
    tool_calls: Optional[list[ChatToolCall]] = Field(None, max_length=MAX_TOOLS)   # assistant (addition)
    tool_call_id: Optional[ToolCallId] = None             # tool (addition): the call this answers

    @model_validator(mode="after")
    def _roles(self) -> "ChatMessage":
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may leave it out)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if self.role == "tool":
            if self.tool_call_id is None:
                raise ValueError("a tool message needs the tool_call_id of the call it answers")
            if isinstance(self.content, list) and any(not isinstance(it, TextItem) for it in self.content):
                raise ValueError("a tool message's content is text")
        elif self.tool_call_id is not None:
            raise ValueError("only a tool message carries tool_call_id")
        return self

    def items(self) -> list[ContentItem]:
        """Content as a list of items, with empty-data items dropped (PROTOCOL.md)."""
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [TextItem(type="text", text=self.content)]
        out: list[ContentItem] = []
        for it in self.content:
            if isinstance(it, TextItem):
                out.append(it)
            elif it.data:
                out.append(it)
        return out


def _knob(k: Knob) -> Any:
    """A wire field whose default and range are the knob's (``omniserve.knobs``: the engine's
    dataclasses and checks read the same figures)."""
    return Field(k.default, ge=k.ge, gt=k.gt, le=k.le, lt=k.lt)   # None: no bound


def _matches(model: type[BaseModel], group: knobs.Group) -> None:
    """A wire model carries exactly its group's fields (checked once, at import)."""
    if tuple(model.model_fields) != group.names():
        raise AssertionError(f"{model.__name__} fields {tuple(model.model_fields)} != {group.names()}")


Language = Literal["", "auto", "en", "zh"]     # knobs.LANGUAGE's choices (checked below)


class GenerationConfig(_Client):
    max_new_tokens: int = _knob(knobs.GENERATION.max_new_tokens)
    temperature: float = _knob(knobs.GENERATION.temperature)
    top_p: float = _knob(knobs.GENERATION.top_p)
    top_k: int = _knob(knobs.GENERATION.top_k)
    length_penalty: float = _knob(knobs.GENERATION.length_penalty)
    language: Language = _knob(knobs.GENERATION.language)


class TTSConfig(_Client):
    enabled: bool = False
    ref_audio_data: Optional[str] = None


MAX_SLICE_NUMS = 64   # ``max_slice_nums`` (chat ``image`` and duplex ``prepare``): 1..64, None = the model's own


class ImageConfig(_Client):
    max_slice_nums: Optional[int] = Field(None, ge=1, le=MAX_SLICE_NUMS)


class ChatRequest(_Client):
    messages: list[ChatMessage] = Field(min_length=1)
    streaming: bool = True
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    image: ImageConfig = Field(default_factory=lambda: ImageConfig.model_validate({}))
    omni_mode: bool = False
    enable_thinking: bool = False
    tools: Optional[list[ChatTool]] = None                # addition: functions the reply may call
    tool_choice: Union[Literal["auto", "none", "required"], NamedToolChoice, None] = None   # addition; None = auto

    @field_validator("tools", mode="before")
    @classmethod
    def _few_tools(cls, v: Any) -> Any:
        """Counted before any tool is validated."""
        if isinstance(v, list) and len(v) > MAX_TOOLS:
            raise ValueError(f"at most {MAX_TOOLS} tools, got {len(v)}")
        return v

    @field_validator("tools")
    @classmethod
    def _distinct(cls, v: Optional[list[ChatTool]]) -> Optional[list[ChatTool]]:
        names: set[str] = set()
        for t in v or ():
            if t.function.name in names:
                raise ValueError(f"tool {t.function.name!r} is declared twice")
            names.add(t.function.name)
        return v

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice_word(cls, v: Any) -> Any:
        if v is None or isinstance(v, (dict, NamedToolChoice)) or (isinstance(v, str) and v in TOOL_CHOICES):
            return v
        raise ValueError('use "auto", "none", "required" or {"type": "function", "function": {"name": ...}}')

    @field_validator("tool_choice")
    @classmethod
    def _choice_declared(cls, v: Any, info: ValidationInfo) -> Any:
        if "tools" not in info.data:      # the tools were invalid: that is the error to report
            return v
        names = {t.function.name for t in info.data["tools"] or ()}
        choice = _choice_name(v)
        if choice not in ("auto", "none") and not names:
            raise ValueError(f"{choice!r} needs tools")
        if choice not in TOOL_CHOICES and choice not in names:
            raise ValueError(f"{choice!r} is not among the tools")
        return v

    @property
    def tool_choice_name(self) -> str:
        """"auto", "none", "required", or the name of the one tool to call."""
        return _choice_name(self.tool_choice)


def _choice_name(c: Union[str, NamedToolChoice, None]) -> str:
    return "auto" if c is None else c if isinstance(c, str) else c.function.name


# ------------------------------------------------------------------ half duplex

class VADConfig(_Client):
    threshold: float = _knob(knobs.VAD.threshold)
    min_speech_duration_ms: int = _knob(knobs.VAD.min_speech_duration_ms)
    min_silence_duration_ms: int = _knob(knobs.VAD.min_silence_duration_ms)
    speech_pad_ms: int = _knob(knobs.VAD.speech_pad_ms)


class HDGenerationConfig(_Client):
    max_new_tokens: int = _knob(knobs.HALF_DUPLEX_GENERATION.max_new_tokens)
    length_penalty: float = _knob(knobs.HALF_DUPLEX_GENERATION.length_penalty)
    temperature: float = _knob(knobs.HALF_DUPLEX_GENERATION.temperature)
    language: Language = _knob(knobs.HALF_DUPLEX_GENERATION.language)


class HDTTSConfig(_Client):
    enabled: bool = True


class HDSessionConfig(_Client):
    timeout_s: float = _knob(knobs.HALF_DUPLEX_SESSION.timeout_s)


class HalfDuplexConfig(_Client):
    vad: VADConfig = Field(default_factory=VADConfig)
    generation: HDGenerationConfig = Field(default_factory=HDGenerationConfig)
    tts: HDTTSConfig = Field(default_factory=HDTTSConfig)
    session: HDSessionConfig = Field(default_factory=HDSessionConfig)


class HalfDuplexPrepare(_Client):
    type: Literal["prepare"]
    system_content: list[ContentItem] = Field(default_factory=list)
    system_prompt: Optional[str] = None
    ref_audio_base64: Optional[str] = None
    config: HalfDuplexConfig = Field(default_factory=HalfDuplexConfig)


class AudioChunkHD(_Client):
    type: Literal["audio_chunk"]
    audio_base64: str


class Stop(_Client):
    type: Literal["stop"]


# ---------------------------------------------------------------------- duplex

class DuplexConfig(_Client):
    generate_audio: bool = _knob(knobs.DUPLEX.generate_audio)
    force_listen_count: int = _knob(knobs.DUPLEX.force_listen_count)
    max_new_speak_tokens_per_chunk: int = _knob(knobs.DUPLEX.max_new_speak_tokens_per_chunk)
    temperature: float = _knob(knobs.DUPLEX.temperature)
    top_p: float = _knob(knobs.DUPLEX.top_p)
    top_k: int = _knob(knobs.DUPLEX.top_k)
    listen_prob_scale: float = _knob(knobs.DUPLEX.listen_prob_scale)
    length_penalty: float = _knob(knobs.DUPLEX.length_penalty)
    chunk_ms: int = _knob(knobs.DUPLEX.chunk_ms)
    sample_rate: Literal[16000] = _knob(knobs.DUPLEX.sample_rate)   # the Literal is the knob's one choice (checked below)
    language: Language = _knob(knobs.DUPLEX.language)


for _model, _group in ((GenerationConfig, knobs.GENERATION), (HDGenerationConfig, knobs.HALF_DUPLEX_GENERATION),
                       (VADConfig, knobs.VAD), (HDSessionConfig, knobs.HALF_DUPLEX_SESSION), (DuplexConfig, knobs.DUPLEX)):
    _matches(_model, _group)
if get_args(DuplexConfig.model_fields["sample_rate"].annotation) != knobs.DUPLEX.sample_rate.choices:
    raise AssertionError("DuplexConfig.sample_rate must accept exactly knobs.DUPLEX.sample_rate.choices")
if get_args(Language) != knobs.LANGUAGE.choices:
    raise AssertionError("Language must accept exactly knobs.LANGUAGE.choices")


class DuplexPrepare(_Client):
    type: Literal["prepare"]
    system_prompt: Optional[str] = Field(None, validation_alias=AliasChoices("system_prompt", "prefix_system_prompt"))
    ref_audio_base64: Optional[str] = None
    tts_ref_audio_base64: Optional[str] = None
    max_slice_nums: Optional[int] = Field(None, ge=1, le=MAX_SLICE_NUMS)
    config: DuplexConfig = Field(default_factory=DuplexConfig)


class AudioChunkDuplex(_Client):
    type: Literal["audio_chunk"]
    audio_base64: str = Field(validation_alias=AliasChoices("audio_base64", "audio"))
    frame_base64_list: Optional[list[str]] = None
    force_listen: bool = False


class VideoFrame(_Client):
    type: Literal["video_frame"]
    frame: str


class Pause(_Client):
    type: Literal["pause"]
    timeout: Optional[float] = Field(None, gt=0)


class Resume(_Client):
    type: Literal["resume"]


class ClientDiagnostic(_Client):
    model_config = ConfigDict(extra="allow")
    type: Literal["client_diagnostic"]


HalfDuplexClientMessage = Union[HalfDuplexPrepare, AudioChunkHD, Stop]
DuplexClientMessage = Union[DuplexPrepare, AudioChunkDuplex, VideoFrame, Pause, Resume, Stop, ClientDiagnostic]
ChatClientMessage = Stop   # while a chat request runs


def _by_type(messages: Any) -> dict[str, type[BaseModel]]:
    """``type`` value -> model, for the models of one endpoint's union (each states its ``type`` once)."""
    models = get_args(messages) or (messages,)
    return {get_args(m.model_fields["type"].annotation)[0]: m for m in models}


_HD_TYPES = _by_type(HalfDuplexClientMessage)
_DUPLEX_TYPES = _by_type(DuplexClientMessage)
_CHAT_CONTROL_TYPES = _by_type(ChatClientMessage)
_M = TypeVar("_M", bound=BaseModel)


class ProtocolError(ValueError):
    """A client message that does not fit the protocol; ``str(e)`` is the error text to send back."""


# Bounds on a client frame's JSON, checked before it is decoded (``safe_json``). The deepest
# message of PROTOCOL.md nests 5 levels (a chat tool schema a few more); the value bound allows
# thousands of chat messages while keeping the decoded object a small multiple of the frame.
MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 100_000
_MAX_ECHO = 64  # characters of a client's own text quoted back in an error


def _quote(value: str) -> str:
    """A client string, shortened and made ASCII-safe, for an error text."""
    short = value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "…"
    return ascii(short)


def load_json(raw: Union[str, bytes, dict]) -> Any:
    """A frame's JSON within the bounds above (a dict is passed through). Raises only
    ``ProtocolError``, whatever the input."""
    if isinstance(raw, dict):
        return raw
    try:
        return loads_bounded(raw, MAX_JSON_DEPTH, MAX_JSON_VALUES)
    except JSONLimitError as e:
        raise ProtocolError(str(e)) from None


def _validate(model: type[_M], obj: dict, what: str) -> _M:
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise ProtocolError(_describe(what, e)) from None
    except Exception:  # RecursionError, MemoryError …: the message is unusable, the session is not
        raise ProtocolError(f"Invalid {_quote(what)} message") from None


def _parse(raw: Union[str, bytes, dict], table: dict[str, type[BaseModel]]) -> BaseModel:
    obj = load_json(raw)
    if not isinstance(obj, dict):
        raise ProtocolError("Message must be a JSON object")
    t = obj.get("type")
    if not isinstance(t, str):
        raise ProtocolError("Message has no 'type' field")
    model = table.get(t)
    if model is None:
        raise ProtocolError(f"Unknown message type: {_quote(t)}")
    return _validate(model, obj, t)


def _describe(t: str, e: ValidationError) -> str:
    try:
        parts = []
        for err in e.errors(include_url=False, include_input=False)[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ())) or "(message)"
            parts.append(f"{loc}: {err.get('msg')}")
        text = f"Invalid {_quote(t)} message: " + "; ".join(parts)
    except Exception:
        return f"Invalid {_quote(t)} message"
    return text.encode("ascii", "backslashreplace").decode("ascii")[:1000]


def parse_half_duplex(raw: Union[str, bytes, dict]) -> BaseModel:
    return _parse(raw, _HD_TYPES)


def parse_duplex(raw: Union[str, bytes, dict]) -> BaseModel:
    return _parse(raw, _DUPLEX_TYPES)


def parse_chat_control(raw: Union[str, bytes, dict]) -> BaseModel:
    return _parse(raw, _CHAT_CONTROL_TYPES)


def parse_chat_request(raw: Union[str, bytes, dict]) -> ChatRequest:
    """The one request of ``/ws/chat`` (text, bytes, or a dict from ``load_json``). To decode,
    validate and hash it in one go, see ``chat_request.read_chat_request``."""
    return validate_chat_request(load_json(raw))


def validate_chat_request(obj: Any) -> ChatRequest:
    """A decoded ``/ws/chat`` request (what ``load_json`` returned) as a ``ChatRequest``."""
    if not isinstance(obj, dict):
        raise ProtocolError("Message must be a JSON object")
    return _validate(ChatRequest, obj, "chat")


# ------------------------------------------------------------ server → client

class ErrorMsg(_Server):
    type: Literal["error"] = "error"
    error: str
    message: Optional[str] = None

    def model_post_init(self, _ctx: Any) -> None:
        if self.message is None:
            self.message = self.error


class QueuedMsg(_Server):
    type: Literal["queued"] = "queued"
    position: int
    estimated_wait_s: float
    ticket_id: str
    queue_length: int


class QueueUpdateMsg(_Server):
    type: Literal["queue_update"] = "queue_update"
    position: int
    estimated_wait_s: float
    queue_length: int


class QueueDoneMsg(_Server):
    type: Literal["queue_done"] = "queue_done"


class PrefillDoneMsg(_Server):
    type: Literal["prefill_done"] = "prefill_done"
    input_tokens: int


class ChatChunkMsg(_Server):
    type: Literal["chunk"] = "chunk"
    text_delta: Optional[str] = None
    audio_data: Optional[str] = None


class ChatDoneMsg(_Server):
    type: Literal["done"] = "done"
    text: str
    generated_tokens: int
    input_tokens: int
    audio_data: Optional[str] = None
    recording_session_id: Optional[str] = None
    stopped: Optional[bool] = None
    tool_calls: Optional[list[ChatToolCall]] = None   # addition: the reply's function calls (request had tools)


class HDPreparedMsg(_Server):
    type: Literal["prepared"] = "prepared"
    session_id: str
    timeout_s: float
    recording_session_id: Optional[str] = None


class VadStateMsg(_Server):
    type: Literal["vad_state"] = "vad_state"
    speaking: bool


class GeneratingMsg(_Server):
    type: Literal["generating"] = "generating"
    speech_duration_ms: float


class HDChunkMsg(_Server):
    type: Literal["chunk"] = "chunk"
    text_delta: str = ""
    audio_data: str = ""
    audio_sample_rate: int = 24000
    chunk_index: int
    is_final: bool = False
    duration_ms: float = 0.0


class TurnDoneMsg(_Server):
    type: Literal["turn_done"] = "turn_done"
    turn_index: int
    text: str
    user_text: Optional[str] = None     # extension: what ASR heard in this turn


class StoppedMsg(_Server):
    type: Literal["stopped"] = "stopped"
    session_id: str


class TimeoutMsg(_Server):
    type: Literal["timeout"] = "timeout"
    elapsed_s: Optional[float] = None
    reason: Optional[str] = None


class DuplexPreparedMsg(_Server):
    type: Literal["prepared"] = "prepared"
    prompt_length: int
    recording_session_id: Optional[str] = None


class ResultMsg(_Server):
    type: Literal["result"] = "result"
    is_listen: bool
    text: str = ""
    audio_data: str = ""
    end_of_turn: bool = False
    current_time: int
    cost_llm_ms: float = 0.0
    cost_tts_ms: float = 0.0
    cost_all_ms: float = 0.0
    wall_clock_ms: float = 0.0
    n_tokens: int = 0
    n_tts_tokens: int = 0
    kv_cache_length: int = 0
    server_send_ts: float = 0.0
    user_text: Optional[str] = None     # extension: the current utterance heard so far (live caption; replaces the last)


class PausedMsg(_Server):
    type: Literal["paused"] = "paused"
    timeout: float


class ResumedMsg(_Server):
    type: Literal["resumed"] = "resumed"


def error(text: str) -> str:
    """The JSON text of an ``error`` frame."""
    return ErrorMsg(error=text).dump()


# Close codes used on every endpoint.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
