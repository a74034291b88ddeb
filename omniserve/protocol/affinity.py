"""Chat prefix-cache affinity: one hash chain over a message history, shared by worker and gateway.

``prefix_hashes(messages)[k-1]`` identifies the first ``k`` messages. A worker reports the chain of
the history its engine holds in cache (``cached_prefix_hashes`` in ``/health``); the gateway sends a
chat request to the worker holding the longest prefix of the request's messages.

The input is the wire's message dicts (``obj["messages"]`` of a decoded request, as in
``chat_request.ChatFrame``), never parsed models: a model fills in defaults the client did not
send, and its chain would not match the other side's. A ``Chain`` grows by ``extended`` (one more
message is one more hash, not a new chain): a worker's chain after a reply is its request's chain
extended by the reply.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable


def _canonical(message: dict) -> bytes:
    role = message.get("role", "")
    content = message.get("content", "")
    if isinstance(content, list):  # items with empty data are dropped on the wire, so drop them here too
        content = [c for c in content if not isinstance(c, dict) or c.get("type") == "text" or c.get("data")]
    fields: list = [role, content]
    calls, call_id = message.get("tool_calls"), message.get("tool_call_id")
    if calls or call_id:       # tool calling (an addition): hashed only when present, so plain
        fields += [_calls(calls), call_id or ""]   # messages hash as they always did
        if content is None:    # an assistant's calls without text: null, "" and no content are one history
            fields[1] = ""
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _calls(calls: object) -> list:
    """An assistant's ``tool_calls`` as ``[id, name, arguments]`` triples (the wire's OpenAI shape)."""
    out: list = []
    for c in calls if isinstance(calls, list) else ():
        f = c.get("function") if isinstance(c, dict) else None
        if isinstance(f, dict):
            out.append([c.get("id"), f.get("name"), f.get("arguments")])
    return out


@dataclass(frozen=True)
class Chain:
    """A history's hash chain: ``hashes`` (what ``/health`` reports and the gateway compares) and
    the whole digest of its last link, which the next link is computed from."""

    hashes: tuple[str, ...] = ()
    last: bytes = b""

    def extended(self, messages: Iterable[dict]) -> "Chain":
        """The chain of this history followed by ``messages``: only the new messages are hashed."""
        hashes, h = list(self.hashes), self.last
        for m in messages:
            h = hashlib.sha256(h + _canonical(m)).digest()
            hashes.append(h.hex()[:16])
        return Chain(tuple(hashes), h)


def chain(messages: Iterable[dict]) -> Chain:
    return Chain().extended(messages)


def prefix_hashes(messages: Iterable[dict]) -> list[str]:
    """Hash chain: element k-1 is the hash of messages[:k] (sha256, 16 hex chars)."""
    return list(chain(messages).hashes)


def longest_cached_prefix(request_hashes: list[str], cached: Iterable[str]) -> int:
    """How many leading messages of a request a worker already holds (0 = none)."""
    cached_set = set(cached)
    for k in range(len(request_hashes), 0, -1):
        if request_hashes[k - 1] in cached_set:
            return k
    return 0
