"""One settings model for the whole system: defaults < YAML file < environment < command line.

Environment variables are ``OMNISERVE_<SECTION>__<FIELD>`` (e.g. ``OMNISERVE_GATEWAY__PORT=8443``).
A YAML file is given with ``--config FILE`` or ``OMNISERVE_CONFIG``. Each section belongs to one
tier; the gateway reads only ``gateway`` (and ``data_dir``), a worker ``worker`` and ``engine``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


ENGINE_BACKENDS = ("embedded",)             # one package each under engine/backends/


class LLMSettings(BaseModel):
    """The embedded cascade's language model: in process (llama.cpp) or any OpenAI-compatible
    chat-completions server (vLLM, SGLang, Ollama, llama.cpp's server). docs/engine.md."""
    kind: Literal["llama_cpp", "openai"] = "llama_cpp"
    model: str = "qwen2.5-0.5b"                # llama_cpp: "qwen2.5-0.5b" | "smollm2-135m"; openai: the served model name
    n_ctx: int = Field(4096, ge=512, le=1 << 20)   # llama_cpp: the context it allocates; openai: the server's context
    base_url: str = "http://127.0.0.1:8000/v1"     # openai: the server's /v1 root
    api_key_env: str = "OMNISERVE_LLM_API_KEY"     # openai: the environment variable that holds the API key
    connect_timeout_s: float = Field(5.0, gt=0, le=600)   # openai: connecting to the server
    timeout_s: float = Field(30.0, gt=0, le=3600)  # openai: longest wait for the first or the next streamed piece
    sampling_extras: bool = True               # openai: also send top_k and repetition_penalty (vLLM, SGLang,
                                               # llama.cpp accept them; turn off for a server that rejects them)


class EngineSettings(BaseModel):
    backend: str = "embedded"                  # one of ENGINE_BACKENDS
    asr_model: str = "base"                    # "base" (Whisper base) | "tiny.en"
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tts_engine: str = "piper"                  # "piper" | "kokoro"
    end_of_turn: str = "words"                 # half-duplex and duplex turns (engine.api.END_OF_TURN_MODES): "silence"
                                               # (the timer) | "words" (the timer, held while the words so far
                                               # sound unfinished) | "semantic" (Smart Turn may hold a pause too)
                                               # | "eager" (it may also end a finished turn after 300 ms);
                                               # bench/turns.py
    smart_turn: bool = True                    # load Smart Turn v3.2 (needed by semantic / eager, realtime semantic_vad)
    turn_max_silence_ms: int = Field(default=1600, ge=200, le=10_000)  # the longest pause inside an unfinished turn
    language: Literal["auto", "en", "zh"] = "auto"   # a session's language when the client names none:
                                               # "auto" English or Chinese, per turn (Whisper base) | "en"
                                               # (Whisper tiny.en) | "zh"; bench/answers.py
    threads: int = 0                           # 0 = all cores
    cache_dir: Optional[str] = None            # joined model files; default <repo>/.cache/models or ~/.cache/omniserve


class WorkerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 22400
    index: int = 0
    max_chat_frame_bytes: int = 16 * 1024 * 1024
    max_audio_frame_bytes: int = 512 * 1024
    half_duplex_timeout_cap_s: float = 600.0
    duplex_pause_timeout_cap_s: float = 300.0
    duplex_idle_timeout_s: float = 30.0
    max_session_s: float = 3600.0
    record_sessions: bool = True
    max_recording_bytes: int = 200 * 1024 * 1024
    # what clients add to this worker's recordings, and their cleanup (docs/worker.md, Recordings)
    max_upload_recording_bytes: int = 200 * 1024 * 1024   # one browser recording upload
    max_comment_bytes: int = 16 * 1024                 # all comment text of one recording
    max_diagnostics_file_bytes: int = 1024 * 1024      # all client_diagnostic frames kept for one session
    session_retention_days: float = 14.0               # recordings older than this are deleted
    session_storage_cap_mb: float = 5000.0             # recordings + client writes; the oldest go past it
    session_cleanup_interval_s: float = 600.0
    max_prepare_frame_bytes: int = 8 * 1024 * 1024      # a prepare may carry reference audio / images
    max_duplex_frame_bytes: int = 2 * 1024 * 1024        # one duplex unit: audio + camera frames
    duplex_pause_timeout_default_s: float = 60.0       # pause{} without a timeout
    prepare_wait_s: float = 30.0                       # a session must send prepare within this
    duplex_max_backlog_units: int = 8                  # units waiting for the engine; older ones dropped
    half_duplex_max_queued_audio_s: float = 30.0       # audio held while a reply is generated
    max_realtime_frame_bytes: int = 2 * 1024 * 1024    # one /v1/realtime client event (~15 s of pcm16 24 kHz)
    realtime_idle_timeout_s: float = 300.0             # a realtime session with no client event ends
    realtime_context_chars: int = 8000                 # conversation text the model reads (newest items first)
    gateway_url: Optional[str] = None          # register with this gateway (other hosts)
    token: Optional[str] = None                # the worker token: required on every endpoint when set; a
                                               # worker bound beyond loopback refuses to start without one
    register_token: Optional[str] = None       # deprecated alias of ``token``
    send_timeout_s: float = 15.0               # every send to the gateway has this deadline (longer than the
                                               # gateway's client deadline, so behind a gateway the gateway drops first)
    public_url: Optional[str] = None           # URL the gateway should use to reach this worker
    gateway_ca_file: Optional[str] = None      # CA/cert that signs the gateway's TLS (e.g. its self-signed cert)
    register_interval_s: float = 30.0          # re-register this often (a restarted gateway re-learns us)
    register_ttl_s: float = 90.0               # a registered worker not heard from this long is forgotten
    slots: int = Field(1, ge=1, le=256)        # sessions served at once; the backend caps it (the embedded
                                               # CPU engine serves 1; a worker whose backend is a remote server more)
    metrics_token: Optional[str] = None        # /metrics also accepts this token (besides the worker token)


class EdgeLimits(BaseModel):
    """Every limit the public edge enforces, in one place (``gateway.edge.*``)."""

    max_body_bytes: int = 1024 * 1024              # any request body not listed below, checked before auth/parsing
    max_admin_body_bytes: int = 64 * 1024          # admin routes: checked before the token
    header_timeout_s: float = 10.0                 # a request's headers must arrive within this (slowloris)
    body_timeout_s: float = 30.0                   # a request body that stops arriving this long is dropped
    max_header_bytes: int = 64 * 1024              # request line + headers (HTTP 431 past it)
    max_connections: int = 30000                   # uvicorn limit_concurrency (HTTP 503 past it)
    max_ws_per_ip: int = 256                       # open WebSockets per client address
    max_queued_per_ip: int = 64                    # queue places per client address
    client_send_timeout_s: float = 10.0            # a client that does not read for this long is dropped (1008)
    max_waiter_buffer_bytes: int = 4 * 1024 * 1024  # non-audio frames a queued client may send
    queued_audio_keep_s: float = 3.0               # while queued, only the newest audio is kept
    max_total_waiter_buffer_bytes: int = 512 * 1024 * 1024  # all queued clients together
    uploads_per_ip_per_hour: int = 30              # anonymous voice uploads
    max_voices: int = 500                          # stored voices in all
    trusted_proxies: list[str] = Field(default_factory=list)  # addresses whose X-Forwarded-For is believed


class GatewaySettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = 8006
    http: bool = False                         # True = plain HTTP (no TLS)
    workers: list[str] = Field(default_factory=list)
    health_interval_s: float = 2.0
    max_queue_size: int = 20000
    admin_token: Optional[str] = None
    worker_token: Optional[str] = None         # sent to workers; default generated into <data_dir>/worker_token
    allowed_origins: list[str] = Field(default_factory=list)   # empty = same origin only
    public_names: list[str] = Field(default_factory=list)      # host names clients use (Host allow-list, besides localhost)
    edge: EdgeLimits = Field(default_factory=EdgeLimits)
    worker_send_timeout_s: float = 10.0        # every send to a worker has this deadline
    worker_ping_interval_s: float = 1.0        # gateway->worker keepalive; a worker missing pings ...
    worker_ping_timeout_s: float = 2.5         # ... ends its client's session with error within 5 s
    duplex_unit_deadline_s: float = 5.0        # a duplex worker silent this long after a unit ends the session
    release_idle_timeout_s: float = 20.0       # after a session a worker must report idle within this, else "stuck"
    max_chat_frame_bytes: int = 16 * 1024 * 1024
    max_frame_bytes: int = 2 * 1024 * 1024
    max_diagnostic_bytes: int = 64 * 1024
    max_ref_audio_bytes: int = 10 * 1024 * 1024
    max_ref_audio_s: float = 30.0
    max_upload_recording_bytes: int = 200 * 1024 * 1024   # the edge's body cap for a recording upload
    recording_owner_ttl_days: float = Field(14.0, gt=0)   # how long Redis remembers which worker holds a
                                               # recording (match worker.session_retention_days); after it,
                                               # or in-process past 100,000 recordings, the workers are asked
    queue_update_interval_s: float = 2.0      # each waiter gets a queue_update at least this often (+ one tick; protocol: <= 3 s)
    worker_connect_timeout_s: float = 5.0
    health_timeout_s: float = 2.0
    tls_cert_file: Optional[str] = None        # default: self-signed into <data_dir>/tls/
    tls_key_file: Optional[str] = None
    uvicorn_ws: str = "websockets-sansio"      # uvicorn WebSocket implementation (the lightest per connection)
    ws_ping_interval_s: Optional[float] = 20.0  # keepalive pings to clients (None/0 = off)
    require_keys: bool = False                 # WebSockets need an API key or ephemeral token (docs/security.md)
    max_api_keys: int = 100                    # admin-created API keys in all
    ephemeral_token_ttl_s: float = 60.0        # lifetime of /v1/realtime/client_secrets tokens (at most 600)
    client_secrets_per_ip_per_minute: int = 60  # token minting per client address (the admin token is not limited)
    processes: int = Field(1, ge=1, le=256)    # gateway processes on this port (SO_REUSEPORT); more than 1 needs redis_url
    redis_url: Optional[str] = None            # shared state in Redis (queue, slot claims, registries, ETA);
                                               # None = in-process state (one gateway process, no extra service)
    lease_s: float = Field(4.0, ge=1.0, le=60.0)  # a gateway's waiting tickets and slot claims end this long after it stops
                                               # renewing (plus <= 0.75 s until another gateway reaps them)
    metrics_token: Optional[str] = None        # /metrics accepts this token besides the admin token


MOVED_TO_WORKER = ("session_retention_days", "session_storage_cap_mb", "session_cleanup_interval_s",
                   "max_comment_bytes", "max_diagnostics_file_bytes")
_WARNED: set[str] = set()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISERVE_", env_nested_delimiter="__", extra="ignore")

    data_dir: str = "data"
    engine: EngineSettings = Field(default_factory=EngineSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_to_worker(cls, data: Any) -> Any:
        """Recording settings moved from ``gateway`` to ``worker`` (each worker keeps its own
        recordings): an old ``gateway.<key>`` still works, for the worker section, with a warning."""
        if not isinstance(data, dict) or not isinstance(data.get("gateway"), dict):
            return data
        gw = dict(data["gateway"])
        moved = {k: gw.pop(k) for k in MOVED_TO_WORKER if k in gw}
        if not moved:
            return data
        worker = data.get("worker")
        wk = worker.model_dump(exclude_unset=True) if isinstance(worker, BaseModel) else dict(worker or {})
        for k, v in moved.items():
            wk.setdefault(k, v)
        news = sorted(set(moved) - _WARNED)
        if news:
            _WARNED.update(news)
            logging.getLogger(__name__).warning(
                "settings: gateway.%s moved to worker.%s (recordings are kept by the worker that made them); "
                "please move it", ", gateway.".join(news), ", worker.".join(news))
        return {**data, "gateway": gw, "worker": wk}


def _deep_update(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        elif v is not None:
            out[k] = v
    return out


def load_settings(config_file: Optional[str] = None, overrides: Optional[dict[str, Any]] = None) -> Settings:
    """Defaults < YAML file < environment < ``overrides`` (from the command line; None values ignored)."""
    path = config_file or os.environ.get("OMNISERVE_CONFIG")
    file_values: dict = {}
    if path:
        import yaml

        file_values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(file_values, dict):
            raise ValueError(f"{path}: the config file must be a mapping")
    env = Settings()  # environment + defaults
    merged = _deep_update(Settings.model_validate(file_values).model_dump(), {})
    # environment wins over the file: re-apply what the environment set explicitly
    merged = _deep_update(merged, _explicit(env))
    merged = _deep_update(merged, overrides or {})
    return Settings.model_validate(merged)


def _explicit(s: BaseModel) -> dict:
    """Only the fields that were set explicitly (recursively)."""
    out: dict = {}
    for name in s.model_fields_set:
        v = getattr(s, name)
        out[name] = _explicit(v) if isinstance(v, BaseModel) else v
    return out
