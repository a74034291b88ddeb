"""The mode vocabulary of PROTOCOL.md in one table: for each of the four modes, every name it goes
by — its ``request_type``, its app id, its page, its WebSocket endpoint, its preset file, its key
in ``/api/frontend_defaults``, its ETA field and the worker status that says it is running.

Everything else (the gateway's apps, pages, presets, ETA and routes, the REST models, the worker's
session types) reads these names from here; ``tests/unit/test_modes.py`` holds the web pages'
copies to the table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    request_type: str          # queue items, running tasks, ETA samples, a worker's session_type
    app_id: str                # /api/apps, PUT /api/admin/apps/{app_id}, /?disabled=<app_id>
    name: str                  # the app's display name in /api/apps
    page: str                  # the page's path on the gateway
    page_file: str             # that page's file under omniserve/web
    endpoint: str              # the WebSocket path (``/{session_id}`` follows, except for chat)
    presets: str               # omniserve/presets/<presets>.yaml; /api/presets/{presets}/…
    defaults_key: str          # its section of /api/frontend_defaults
    eta_field: str             # its configured estimate in /api/config/eta (seconds)
    eta_default_s: float
    worker_status: str         # a worker's /health status while it serves one


CHAT = Mode("chat", "turnbased", "Turn-based chat", "/turnbased", "turnbased.html", "/ws/chat",
            "turnbased", "chat", "eta_chat_s", 15.0, "busy_chat")
HALF_DUPLEX = Mode("half_duplex_audio", "half_duplex_audio", "Half-duplex voice", "/half_duplex", "half_duplex.html",
                   "/ws/half_duplex", "half_duplex", "half_duplex", "eta_half_duplex_s", 180.0, "busy_half_duplex")
OMNI_DUPLEX = Mode("omni_duplex", "omni", "Omni full-duplex", "/omni", "duplex.html", "/ws/duplex",
                   "omni", "omni", "eta_omni_duplex_s", 90.0, "duplex_active")
AUDIO_DUPLEX = Mode("audio_duplex", "audio_duplex", "Audio full-duplex", "/audio_duplex", "duplex.html", "/ws/duplex",
                    "audio_duplex", "audio_duplex", "eta_audio_duplex_s", 120.0, "duplex_active")

# OpenAI Realtime (``/v1/realtime`` on the gateway, ``/ws/realtime/{session_id}`` on a worker): an
# app and a queue type like the others, with no page of ours and no presets (its clients are the
# ``openai`` SDK, LiveKit, Pipecat …; docs/realtime.md).
REALTIME = Mode("realtime", "realtime", "OpenAI Realtime API", "", "", "/ws/realtime",
                "", "realtime", "eta_realtime_s", 180.0, "busy_realtime")
REALTIME_PATH = "/v1/realtime"      # the gateway's public path for it

MODES: tuple[Mode, ...] = (CHAT, HALF_DUPLEX, OMNI_DUPLEX, AUDIO_DUPLEX)   # the modes with a page
ALL_MODES: tuple[Mode, ...] = MODES + (REALTIME,)                        # the order of /api/apps
BY_REQUEST_TYPE: dict[str, Mode] = {m.request_type: m for m in ALL_MODES}
BY_APP_ID: dict[str, Mode] = {m.app_id: m for m in ALL_MODES}
REQUEST_TYPES: tuple[str, ...] = tuple(BY_REQUEST_TYPE)
DUPLEX_TYPES = frozenset({OMNI_DUPLEX.request_type, AUDIO_DUPLEX.request_type})

# A session id with one of these prefixes is audio-only duplex; any other is omni (PROTOCOL.md).
AUDIO_DUPLEX_PREFIXES = ("adx_", "audio_duplex_")


def duplex_mode(session_id: str) -> Mode:
    """The session id prefix picks the duplex variant (PROTOCOL.md)."""
    return AUDIO_DUPLEX if session_id.startswith(AUDIO_DUPLEX_PREFIXES) else OMNI_DUPLEX


def duplex_variant(session_id: str) -> str:
    """``duplex_mode``'s request type: ``"audio_duplex"`` or ``"omni_duplex"``."""
    return duplex_mode(session_id).request_type


# A worker's /health ``worker_status`` besides the per-mode ones above (worker/state.py's machine).
LOADING, IDLE, ERROR = "loading", "idle", "error"
DUPLEX_PAUSED = "duplex_paused"
WORKER_STATUSES: tuple[str, ...] = (LOADING, IDLE, CHAT.worker_status, HALF_DUPLEX.worker_status,
                                    OMNI_DUPLEX.worker_status, DUPLEX_PAUSED, REALTIME.worker_status, ERROR)
