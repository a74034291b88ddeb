"""The gateway⇄worker contract: what a worker reports on ``/health``, how it registers, and how the
gateway names the slot a session is for (docs/worker.md, "Health, slots and registration").

Both sides import these models: the worker builds ``WorkerHealth``; the gateway validates what it
reads with it (an unknown status is an error, not a guess). A worker serves ``slots_total``
sessions at once: the embedded CPU engine 1, a worker whose backend is a remote server (vLLM,
SGLang…) as many as configured. The gateway dispatches per slot and opens a session's socket with
``SLOT_HEADER`` naming the slot it claimed; the worker refuses ("Worker busy", close 1013) a slot
that is not idle. A client without the header gets any idle slot.

The fields that existed before slots (``worker_status``, ``current_session_id``, …) keep their
names and meaning for a one-slot worker; with several slots they describe slot 0.
"""
from __future__ import annotations

import enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import modes

CONTRACT_VERSION = 1
SLOT_HEADER = "X-Omniserve-Slot"          # the slot the gateway claimed for this session (0-based)
MAX_SLOTS = 256
MAX_PREFIX_HASHES = 4096                  # a worker reports at most this many (the first ones: still a true prefix)


class WorkerStatus(str, enum.Enum):
    """A slot's state; the names are the mode table's (``protocol/modes.py``)."""
    LOADING = modes.LOADING
    IDLE = modes.IDLE
    BUSY_CHAT = modes.CHAT.worker_status
    BUSY_HALF_DUPLEX = modes.HALF_DUPLEX.worker_status
    DUPLEX_ACTIVE = modes.OMNI_DUPLEX.worker_status
    DUPLEX_PAUSED = modes.DUPLEX_PAUSED
    BUSY_REALTIME = modes.REALTIME.worker_status
    ERROR = modes.ERROR


BUSY_STATUSES = frozenset({WorkerStatus.BUSY_CHAT, WorkerStatus.BUSY_HALF_DUPLEX, WorkerStatus.DUPLEX_ACTIVE,
                           WorkerStatus.DUPLEX_PAUSED, WorkerStatus.BUSY_REALTIME})


class Capability(str, enum.Enum):
    """What a worker's backend can serve (``WorkerHealth.capabilities``)."""
    CHAT = "chat"
    HALF_DUPLEX = "half_duplex"
    DUPLEX = "duplex"
    REALTIME = "realtime"
    VISION = "vision"
    RECORDINGS = "recordings"      # serves /recordings/… (its own recordings, no shared disk)
    METRICS = "metrics"            # serves /metrics (Prometheus)


class SlotHealth(BaseModel):
    model_config = ConfigDict(extra="ignore")
    index: int = Field(ge=0, lt=MAX_SLOTS)
    status: WorkerStatus
    session_id: Optional[str] = None
    session_type: Optional[str] = None     # a request type (protocol/modes.py)
    elapsed_s: Optional[float] = None
    paused: bool = False


class WorkerHealth(BaseModel):
    """``GET /health`` on a worker."""
    model_config = ConfigDict(extra="ignore")      # a newer worker may add fields
    status: str = "ok"
    contract: int = CONTRACT_VERSION
    worker_status: WorkerStatus                    # slot 0's (the whole worker's, for one slot)
    model_loaded: bool = False
    index: int = 0
    backend: str = ""
    slots_total: int = Field(1, ge=1, le=MAX_SLOTS)
    slots_free: int = Field(0, ge=0, le=MAX_SLOTS)
    slots: list[SlotHealth] = Field(default_factory=list, max_length=MAX_SLOTS)
    paused: bool = False                           # every busy slot is paused (duplex pause)
    capabilities: list[str] = Field(default_factory=list, max_length=32)
    cached_prefix_hashes: list[str] = Field(default_factory=list, max_length=MAX_PREFIX_HASHES)
    current_session_id: Optional[str] = None
    kv_cache_length: int = 0
    error: Optional[str] = None
    session_started_at: Optional[float] = None
    session_type: Optional[str] = None
    elapsed_s: Optional[float] = None

    def slot_status(self, i: int) -> WorkerStatus:
        """Slot ``i``'s status; a worker that lists no slots has one, described by ``worker_status``."""
        for s in self.slots:
            if s.index == i:
                return s.status
        if i == 0 and not self.slots:
            return self.worker_status
        return WorkerStatus.LOADING if self.worker_status == WorkerStatus.LOADING else WorkerStatus.ERROR


class WorkerRegister(BaseModel):
    """``POST /api/workers/register`` (worker token): a worker on any host announces itself and
    repeats it as a heartbeat; the gateway forgets a registered worker not heard from for
    ``ttl_s`` (workers given on the command line are never forgotten)."""
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=512)
    ttl_s: float = Field(90.0, ge=5.0, le=86400.0)
    slots: Optional[int] = Field(None, ge=1, le=MAX_SLOTS)   # informative; /health is the truth

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("url must start with http:// or https://")
        return v


def slot_from_header(value: Optional[str], total: int) -> Optional[int]:
    """The slot a session asked for, or None (any). Raises ValueError for a malformed or out-of-range one."""
    if value is None or value == "":
        return None
    if len(value) > 3 or not (value.isascii() and value.isdigit()):    # "١", "²", "-1", " 1" are not slots
        raise ValueError(f"bad {SLOT_HEADER}")
    i = int(value)
    if i >= total:
        raise ValueError(f"{SLOT_HEADER} {i} out of range (slots: {total})")
    return i
