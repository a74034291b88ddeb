"""One ``/ws/chat`` request, read once per process: its JSON decoded within the bounds
(``load_json``), validated once (``ChatRequest``) and hashed once (the affinity ``Chain`` of its
messages). The gateway reads it to route it (affinity) and to refuse a bad one before it takes a
queue place; the worker reads it to serve it. Neither parses, validates or hashes it a second time:
the worker's chain after the reply is ``ChatFrame.chain_after(text)``, the request's chain plus one
link. (Media is decoded by the worker only, once: ``worker.convert``.)
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence, Union

from .affinity import Chain, chain
from .messages import ChatRequest, load_json, validate_chat_request

# A frame at least this long is read on a thread, so the event loop keeps serving meanwhile.
THREAD_ABOVE_CHARS = 256 * 1024


@dataclass(frozen=True)
class ChatFrame:
    obj: dict             # the decoded JSON; obj["messages"] are the wire messages the chain covers
    request: ChatRequest  # the validated request (shares its strings with ``obj``: nothing is copied)
    chain: Chain          # affinity hash chain of the request's messages

    @property
    def hashes(self) -> list[str]:
        return list(self.chain.hashes)

    def chain_after(self, reply_text: str, tool_calls: Sequence[dict] = ()) -> Chain:
        """The chain of the request's messages plus the assistant's reply (what the worker's
        engine holds afterwards): one more link, the request is not hashed again. ``tool_calls``:
        the reply's calls as ``done`` carries them (the client sends them back in its next request)."""
        reply: dict = {"role": "assistant", "content": reply_text}
        if tool_calls:
            reply["tool_calls"] = list(tool_calls)
        return self.chain.extended([reply])


def read_chat_request(raw: Union[str, bytes]) -> ChatFrame:
    """Decode, validate and hash one chat request; any failure is a ``ProtocolError``."""
    obj = load_json(raw)
    request = validate_chat_request(obj)   # obj is a dict with a non-empty "messages" list of objects
    return ChatFrame(obj, request, chain(obj["messages"]))


async def read_chat_request_async(raw: Union[str, bytes]) -> ChatFrame:
    """``read_chat_request`` off the event loop for a big frame (decode, validate and hash in one hop)."""
    if len(raw) < THREAD_ABOVE_CHARS:
        return read_chat_request(raw)
    return await asyncio.to_thread(read_chat_request, raw)
