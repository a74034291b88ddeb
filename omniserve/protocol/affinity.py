"""Chat prefix-cache affinity: one hash chain over a message history, shared by worker and gateway.

``prefix_hashes(messages)[k-1]`` identifies the first ``k`` messages. A worker reports the chain of
the history its engine holds in cache (``cached_prefix_hashes`` in ``/health``); the gateway sends a
chat request to the worker holding the longest prefix of the request's messages.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable


def _canonical(message: Any) -> bytes:
    if hasattr(message, "model_dump"):
        message = message.model_dump(exclude_none=True)
    role = message.get("role", "")
    content = message.get("content", "")
    if isinstance(content, list):  # items with empty data are dropped on the wire, so drop them here too
        content = [c for c in content if c.get("type") == "text" or c.get("data")]
    return json.dumps([role, content], sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def prefix_hashes(messages: Iterable[Any]) -> list[str]:
    """Hash chain: element k-1 is the hash of messages[:k] (sha256, 16 hex chars)."""
    out: list[str] = []
    h = b""
    for m in messages:
        h = hashlib.sha256(h + _canonical(m)).digest()
        out.append(h.hex()[:16])
    return out


def longest_cached_prefix(request_hashes: list[str], cached: Iterable[str]) -> int:
    """How many leading messages of a request a worker already holds (0 = none)."""
    cached_set = set(cached)
    for k in range(len(request_hashes), 0, -1):
        if request_hashes[k - 1] in cached_set:
            return k
    return 0
