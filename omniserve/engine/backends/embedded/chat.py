"""Turn-based chat on the cascade: the client sends the whole history; we answer the last turn.

With the in-process LLM the KV cache keeps the previous request's prompt and reply, so a
follow-up request (same history plus one turn) evaluates only its new tokens.
"""
from __future__ import annotations

import json
import threading
from typing import Iterator, Optional, Sequence

from omniserve.engine.api import (Delta, EngineInputError, Event, GenerationParams, Image, Message, Prefilled, ToolCall,
                                  ReplyDone, Tool, ToolChoice, Video, Voice)
from omniserve.engine.checks import DEFAULT_SYSTEM

from .cascade import Cascade
from .encode import EncodedMessage, encode
from .reply import SpokenReply
from .tools import ToolCallParser, call_text, template_calls, template_tools


def chat_reply(c: Cascade, messages: Sequence[Message], params: GenerationParams, voice: Optional[Voice],
               stop: threading.Event, tools: Sequence[Tool] = (), tool_choice: ToolChoice = "auto") -> Iterator[Event]:
    language = params.language or "auto"      # a chat's audio is read by the multilingual model anyway
    encoded = [encode(c, m, stop, language) for m in messages]
    if stop.is_set():
        return
    offered = [] if tool_choice == "none" else [t for t in tools if tool_choice in ("auto", "required", t.name)]
    heard = " ".join(e.heard for e in encoded if e.heard and e.role == "user")
    answered = answered_calls(messages) if offered else set()
    first = True
    while True:
        convo, spec = _prompt(c, messages, encoded, voice, offered, tool_choice, params)
        stats = c.prefill(convo, stop, spec)
        if stop.is_set():
            return
        if first:
            yield Prefilled(stats.input_tokens, stats.evaluated, heard, stats.prompt)
        parser = ToolCallParser([t.name for t in offered]) if offered else None
        repeated = False
        for ev in stream_reply(c.reply(params, voice=voice, tool_parser=parser), stop, stats.input_tokens, heard,
                               parser):
            if isinstance(ev, ReplyDone) and ev.tool_calls and answered and \
                    all(_call_key(k) in answered for k in ev.tool_calls):
                repeated = True          # it asks again for what the results already say
                break
            yield ev
        if not repeated:
            return
        # once: the same reply without tools, so that it answers from the results it has
        offered, tool_choice, first = [], "none", False


def _prompt(c: Cascade, messages: Sequence[Message], encoded: Sequence[EncodedMessage], voice: Optional[Voice],
            offered: Sequence[Tool], tool_choice: ToolChoice, params: GenerationParams) -> tuple[list[dict], list[dict]]:
    """The chat template's messages (system prompt first) and tools, checked against the context."""
    convo = conversation(messages, encoded, templated_calls=bool(offered))
    media = any(isinstance(i, (Image, Video)) for m in messages for i in m.items)
    system = DEFAULT_SYSTEM
    if convo[0]["role"] == "system":
        system = convo.pop(0)["content"]
    convo.insert(0, {"role": "system", "content": c.system_prompt(system, spoken=voice is not None, media=media)
                     + tool_note(offered, tool_choice)})
    spec = template_tools(offered)
    if c.count_tokens(convo, spec) > c.n_ctx - int(params.max_new_tokens) - 8:
        raise EngineInputError(f"the conversation is too long for the model's context ({c.n_ctx} tokens "
                               f"including {params.max_new_tokens} new tokens); shorten the history")
    return convo, spec


def _call_key(call: ToolCall) -> tuple[str, str]:
    try:
        args = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True)
    except ValueError:
        args = call.arguments
    return call.name, args


def answered_calls(messages: Sequence[Message]) -> set[tuple[str, str]]:
    """The calls made since the user's last message whose results came back (name, arguments)."""
    results: set[str] = set()
    out: set[tuple[str, str]] = set()
    for m in reversed(messages):
        if m.role == "user":
            break
        if m.role == "tool":
            results.add(m.tool_call_id)
        for call in m.tool_calls:
            if call.id in results:
                out.add(_call_key(call))
    return out


# After the results of a group of calls, a turn that asks for the answer: without it
# Qwen2.5-0.5B calls the same function again instead of reading the result (measured on three
# questions at temperature 0 and 0.7: every reply repeated its call, also with a system-prompt note
# instead; with this turn, none did). It stays in every later rendering of the history, so a
# follow-up request still reuses the cached prefix.
RESULTS_NOTE = ("Answer my question in words from the function results above "
                "(or call another function if one is still needed).")


def conversation(messages: Sequence[Message], encoded: Sequence[EncodedMessage], templated_calls: bool) -> list[dict]:
    """The messages as the chat template reads them. An assistant's calls are the template's own
    ``tool_calls`` when tools are offered (``templated_calls``); otherwise (a follow-up sent
    without tools, or ``tool_choice`` "none") they are written into its text as the template would
    write them, so the model still sees what it called. A ``RESULTS_NOTE`` follows each group of
    tool results."""
    convo: list[dict] = []
    for k, (m, e) in enumerate(zip(messages, encoded)):
        d: dict = {"role": e.role, "content": e.text}
        if m.tool_calls and templated_calls:
            d["tool_calls"] = template_calls(m.tool_calls)
        elif m.tool_calls:
            d["content"] = "\n".join([e.text] * bool(e.text) + [call_text(c) for c in m.tool_calls])
        if m.role == "tool":
            d["tool_call_id"] = m.tool_call_id
        convo.append(d)
        if m.role == "tool" and (k + 1 == len(messages) or messages[k + 1].role != "tool"):
            convo.append({"role": "user", "content": RESULTS_NOTE})
    return convo


def tool_note(offered: Sequence[Tool], tool_choice: ToolChoice) -> str:
    """``tool_choice`` "required" or a name: a line of the system prompt (the cascade cannot force it)."""
    if not offered or tool_choice == "auto":
        return ""
    if tool_choice == "required":
        return "\nAnswer this turn with a function call."
    return f"\nAnswer this turn by calling the function {tool_choice}."


INVALID_CALL = "(The assistant tried to call a tool but wrote an invalid call, so no tool was called.)"


def stream_reply(reply: SpokenReply, stop: threading.Event, input_tokens: int, heard: str = "",
                 tools: Optional[ToolCallParser] = None) -> Iterator[Event]:
    """A reply's deltas as events, then ``ReplyDone``; the reply is cancelled however this ends.
    ``tools``: the reply's tool-call parser; its calls end the reply with finish_reason "tool_calls",
    and an invalid call (no valid one beside it) is reported as a text, never passed on."""
    said: list[str] = []
    try:
        for d in reply.iterate(stop):
            said.append(d.text)
            yield d
    finally:
        reply.cancel()       # a consumer that stops early must not leave threads running
    finish = "cancelled" if stop.is_set() else reply.finish_reason
    calls = list(tools.calls) if tools is not None and not stop.is_set() else []
    if calls:
        finish = "tool_calls"
    elif tools is not None and tools.invalid and not stop.is_set():
        note = (" " if "".join(said).strip() else "") + INVALID_CALL
        said.append(note)
        yield Delta(text=note)
    yield ReplyDone("".join(said), reply.n_tokens, input_tokens, heard, stopped=stop.is_set(),
                    finish_reason=finish, tool_calls=calls)
