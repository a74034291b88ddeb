"""Pydantic models of the gateway's REST bodies (PROTOCOL.md, "REST (gateway)").

Shared by the gateway (validation, responses) and Python clients/tests. Request bodies reject
unknown fields so that a typo is an error (422), not a silently ignored setting.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic.fields import FieldInfo

from . import modes


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ status / queue

class StatusOut(BaseModel):
    total_workers: int
    idle_workers: int
    busy_workers: int
    queue_length: int
    max_queue_size: int
    running_tasks: int
    total_slots: int = 0           # sessions all workers can serve at once (a worker has 1 or more slots)
    free_slots: int = 0


class WorkerOut(BaseModel):
    url: str
    index: int
    status: str                    # offline | loading | idle | busy_* | duplex_* | error
    online: bool
    assigned: bool
    request_type: Optional[str] = None
    session_id: Optional[str] = None
    busy_for_s: Optional[float] = None
    paused: bool = False
    cached_prefix_hashes: int = 0
    last_health_s_ago: Optional[float] = None
    slots_total: int = 1           # sessions it serves at once; request_type … describe its first busy slot
    slots_free: int = 0
    slots: list[str] = Field(default_factory=list)   # each slot's status
    backend: Optional[str] = None
    registered: bool = False       # it registered itself (forgotten without heartbeats), not on the command line


class QueueItemOut(BaseModel):
    ticket_id: str
    request_type: str
    session_id: Optional[str] = None
    position: int
    estimated_wait_s: float
    waited_s: float


class RunningTaskOut(BaseModel):
    worker_url: str
    request_type: str
    session_id: Optional[str] = None
    elapsed_s: float
    estimated_remaining_s: float
    slot: int = 0


class QueueOut(BaseModel):
    queue_length: int
    items: list[QueueItemOut]
    running_tasks: list[RunningTaskOut]


# ------------------------------------------------------------------------- ETA

class EtaConfig(BaseModel):
    """Per-type estimates (seconds) and the EMA that replaces them once enough samples exist.
    The per-type fields are the mode table's (``modes.Mode.eta_field``/``eta_default_s``)."""

    eta_chat_s: float = Field(modes.CHAT.eta_default_s, ge=0)
    eta_half_duplex_s: float = Field(modes.HALF_DUPLEX.eta_default_s, ge=0)
    eta_audio_duplex_s: float = Field(modes.AUDIO_DUPLEX.eta_default_s, ge=0)
    eta_omni_duplex_s: float = Field(modes.OMNI_DUPLEX.eta_default_s, ge=0)
    eta_realtime_s: float = Field(modes.REALTIME.eta_default_s, ge=0)
    eta_ema_alpha: float = Field(0.3, gt=0, le=1)
    eta_ema_min_samples: int = Field(3, ge=1)

    def base_for(self, request_type: str) -> float:
        return getattr(self, modes.BY_REQUEST_TYPE[request_type].eta_field)


if {m.eta_field for m in modes.ALL_MODES} != {n for n in EtaConfig.model_fields if n.endswith("_s")}:
    raise AssertionError("EtaConfig's per-type fields must be the mode table's eta_field names")


def _partial(model: type[BaseModel], name: str, doc: str) -> type[_Body]:
    """``model`` with every field optional (default ``None``) and validated alike; unknown fields refused."""
    fields: dict[str, Any] = {n: (Optional[f.annotation], FieldInfo.merge_field_infos(f, default=None))
                              for n, f in model.model_fields.items()}
    return create_model(name, __base__=_Body, __doc__=doc, **fields)


EtaConfigUpdate = _partial(EtaConfig, "EtaConfigUpdate",
                           "Partial update: only the given fields change (all validated like ``EtaConfig``).")


class EtaOut(EtaConfig):
    ema_s: dict[str, Optional[float]] = Field(default_factory=dict)
    samples: dict[str, int] = Field(default_factory=dict)
    effective_s: dict[str, float] = Field(default_factory=dict)


# ------------------------------------------------------------------------ apps

class AppOut(BaseModel):
    app_id: str
    name: str
    path: str
    enabled: bool


class AppUpdate(_Body):
    enabled: bool


# -------------------------------------------------------- API keys / client secrets

class ApiKeyCreate(_Body):
    name: str = Field(min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    id: str
    name: str
    created_at: float
    last_used_at: Optional[float] = None


class ApiKeyCreated(ApiKeyOut):
    key: str                                    # the secret: shown in this answer only


class ExpiresAfter(BaseModel):
    """A token's lifetime from its creation; it may only shorten ``gateway.ephemeral_token_ttl_s``."""
    anchor: Literal["created_at"] = "created_at"
    seconds: Optional[float] = Field(default=None, gt=0)


class ClientSecretRequest(BaseModel):
    """``POST /v1/realtime/client_secrets`` (OpenAI's GA shape; unknown fields are ignored). The
    ``session`` config is not bound to the token: a client sends it with ``session.update``."""
    model_config = ConfigDict(extra="ignore")
    expires_after: Optional[ExpiresAfter] = None
    session: Optional[dict[str, Any]] = None


class BetaClientSecret(BaseModel):
    model_config = ConfigDict(extra="ignore")
    expires_after: Optional[ExpiresAfter] = None


class BetaSessionRequest(BaseModel):
    """``POST /v1/realtime/sessions`` (OpenAI's beta shape: the session config at top level)."""
    model_config = ConfigDict(extra="allow")
    model: Optional[str] = None
    client_secret: Optional[BetaClientSecret] = None


# ------------------------------------------------------------------- ref audio

class RefAudioOut(BaseModel):
    id: str
    name: str
    duration_s: float
    created_at: float
    builtin: bool = False


class RefAudioUpload(_Body):
    """JSON upload: ``data`` is the base64 of a WAV/FLAC/OGG/WebM file (or of raw f32 PCM when
    ``format`` is ``"pcm_f32"``). The raw-body form (``?name=``) takes the file bytes directly."""

    name: str = Field(min_length=1, max_length=64)
    data: str = Field(min_length=1)
    format: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _clean(cls, v: str) -> str:
        v = v.strip()
        if not v or any(ord(c) < 32 for c in v):
            raise ValueError("name must be printable text")
        return v


# ------------------------------------------------------------------- sessions

class CommentIn(_Body):
    text: str = Field(min_length=1, max_length=4000)
    rating: Optional[int] = Field(None, ge=1, le=5)


COMMENT_BODY_BYTES = 64 * 1024     # the most a CommentIn takes as JSON (4000 characters, escapes included)
