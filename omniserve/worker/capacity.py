"""What this worker serves and how many sessions at once: the engine's ``Capabilities`` in the
terms of the gateway⇄worker contract (``protocol/worker.py``).

Slots: ``worker.slots`` asked for, capped by what the backend serves at once
(``Capabilities.max_sessions``; the embedded CPU cascade: 1). Asking for more logs a warning and
the worker advertises the backend's number. Routes that other parts add to the app (``/metrics``,
``/recordings/…``) are advertised when they exist (``route_capabilities``).
"""
from __future__ import annotations

import logging
from typing import Iterable

from ..engine.api import Capabilities
from ..protocol.worker import Capability

log = logging.getLogger("omniserve.worker")

# a route path (or path prefix, ending in "/") → the capability it serves
ROUTE_CAPABILITIES: dict[str, Capability] = {"/metrics": Capability.METRICS, "/recordings/": Capability.RECORDINGS}


def slot_count(requested: int, caps: Capabilities, backend: str) -> int:
    """The slots this worker serves: ``requested``, capped by the backend."""
    most = max(1, caps.max_sessions)
    if requested > most:
        log.warning("worker.slots is %d but the %s backend serves %d session%s at once: serving %d",
                    requested, backend, most, "" if most == 1 else "s", most)
        return most
    return max(1, requested)


def engine_capabilities(caps: Capabilities) -> list[Capability]:
    """The session kinds the engine serves (realtime needs chat and voice: VAD, ASR and replies)."""
    out = []
    if caps.chat:
        out.append(Capability.CHAT)
    if caps.voice:
        out.append(Capability.HALF_DUPLEX)
    if caps.duplex:
        out.append(Capability.DUPLEX)
    if caps.chat and caps.voice:
        out.append(Capability.REALTIME)
    if caps.camera or "image" in caps.media or "video" in caps.media:
        out.append(Capability.VISION)
    return out


def route_capabilities(paths: Iterable[str]) -> list[Capability]:
    """The capabilities of the app's routes (``ROUTE_CAPABILITIES``), in the enum's order."""
    found = set()
    for path in paths:
        for route, cap in ROUTE_CAPABILITIES.items():
            if path.rstrip("/") == route.rstrip("/") or (route.endswith("/") and path.startswith(route)):
                found.add(cap)
    return [c for c in Capability if c in found]
