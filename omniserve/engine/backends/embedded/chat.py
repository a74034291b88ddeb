"""Turn-based chat on the cascade: the client sends the whole history; we answer the last turn.

With the in-process LLM the KV cache keeps the previous request's prompt and reply, so a
follow-up request (same history plus one turn) evaluates only its new tokens.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional, Sequence

from omniserve.engine.api import (EngineInputError, Event, GenerationParams, Image, Message, Prefilled,
                                  ReplyDone, Video, Voice)
from omniserve.engine.checks import DEFAULT_SYSTEM

from .cascade import Cascade
from .encode import encode
from .reply import SpokenReply


def chat_reply(c: Cascade, messages: Sequence[Message], params: GenerationParams, voice: Optional[Voice],
               stop: threading.Event) -> Iterator[Event]:
    encoded = [encode(c, m, stop) for m in messages]
    if stop.is_set():
        return
    convo = [{"role": e.role, "content": e.text} for e in encoded]
    media = any(isinstance(i, (Image, Video)) for m in messages for i in m.items)
    spoken = voice is not None
    if convo[0]["role"] == "system":
        convo[0] = {"role": "system", "content": c.system_prompt(convo[0]["content"], spoken=spoken, media=media)}
    else:
        convo.insert(0, {"role": "system", "content": c.system_prompt(DEFAULT_SYSTEM, spoken=spoken, media=media)})
    if c.count_tokens(convo) > c.n_ctx - int(params.max_new_tokens) - 8:
        raise EngineInputError(f"the conversation is too long for the model's context ({c.n_ctx} tokens "
                               f"including {params.max_new_tokens} new tokens); shorten the history")
    stats = c.prefill(convo, stop)
    if stop.is_set():
        return
    heard = " ".join(e.heard for e in encoded if e.heard and e.role == "user")
    yield Prefilled(stats.input_tokens, stats.evaluated, heard, stats.prompt)
    yield from stream_reply(c.reply(params, voice=voice), stop, stats.input_tokens, heard)


def stream_reply(reply: SpokenReply, stop: threading.Event, input_tokens: int, heard: str = "") -> Iterator[Event]:
    """A reply's deltas as events, then ``ReplyDone``; the reply is cancelled however this ends."""
    said: list[str] = []
    try:
        for d in reply.iterate(stop):
            said.append(d.text)
            yield d
    finally:
        reply.cancel()       # a consumer that stops early must not leave threads running
    yield ReplyDone("".join(said), reply.n_tokens, input_tokens, heard, stopped=stop.is_set(),
                    finish_reason="cancelled" if stop.is_set() else reply.finish_reason)
