"""Tool calling on the cascade's LLM: tools as the chat template reads them, and the model's calls
parsed out of its stream.

A call is written in one of two forms: the chat template's ``<tool_call>{"name": …, "arguments":
{…}}</tool_call>`` blocks, anywhere in the reply; or, what small models (Qwen2.5-0.5B) write
instead, a reply that *starts* with the bare call object ``{"name": …, "arguments": {…}}`` — alone,
one per line, or inside a ```json fence.

The parser sits between the token stream and the listener: text that is (or may still become) a
call is held back, so it is neither streamed as text nor spoken; plain text passes through as it
comes (a reply that starts with ``{`` or a fence is held until it is decided). A block whose JSON
does not parse, or names no offered function, is never a call: it is counted in ``invalid`` (the
reply then says that no tool was called).
"""
from __future__ import annotations

import json
import secrets
from typing import Optional, Sequence

from omniserve.engine.api import Tool, ToolCall

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def template_tools(tools: Sequence[Tool]) -> list[dict]:
    """Tools in the OpenAI shape the GGUF's chat template renders (Qwen2.5: ``tool | tojson``)."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters or {"type": "object", "properties": {}}}}
            for t in tools]


def template_calls(calls: Sequence[ToolCall]) -> list[dict]:
    """An assistant's earlier calls as the template renders them (``arguments`` as an object)."""
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}} for c in calls]


def call_text(c: ToolCall) -> str:
    """One earlier call as the chat template writes it (for a rendering without ``tools``)."""
    return f"{OPEN}\n{json.dumps({'name': c.name, 'arguments': _arguments(c)}, ensure_ascii=False)}\n{CLOSE}"


def _arguments(c: ToolCall) -> object:
    """A call's arguments as an object (as the text it is when it does not parse)."""
    try:
        return json.loads(c.arguments or "{}")
    except ValueError:
        return c.arguments


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _held_prefix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


FENCE = "```"
_FENCE_LANGS = ("", "json", "tool_call")
_DECODER = json.JSONDecoder()


class ToolCallParser:
    """Feed pieces with ``push`` (returns the plain text to pass on now), then ``flush``."""

    def __init__(self, tool_names: Optional[Sequence[str]] = None) -> None:
        self._names = set(tool_names) if tool_names else None
        self._buf = ""                 # undecided text (a possible "<tool_call>" start) or a block's body
        self._inside = False
        self._start = True             # nothing but blanks seen yet: a bare call may still begin
        self._bare = False             # holding a reply that begins like a bare call
        self.calls: list[ToolCall] = []
        self.invalid: list[str] = []   # the bodies of blocks that were not valid calls
        self.text = ""                 # the plain text passed on so far

    def push(self, piece: str) -> str:
        self._buf += piece
        if self._start:
            head = self._buf.lstrip()
            if not head:
                return ""
            self._start = False
            self._bare = head[0] in "{`"
        if self._bare:
            if _bare_state(self._buf) == "hold":
                return ""
            self._bare = False         # text after all: read on as usual
        out: list[str] = []
        while True:
            if not self._inside:
                i = self._buf.find(OPEN)
                if i < 0:
                    keep = _held_prefix(self._buf, OPEN)
                    out.append(self._buf[:len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    break
                out.append(self._buf[:i])
                self._buf = self._buf[i + len(OPEN):]
                self._inside = True
            else:
                j = self._buf.find(CLOSE)
                if j < 0:
                    break
                self._close(self._buf[:j])
                self._buf = self._buf[j + len(CLOSE):]
                self._inside = False
        text = "".join(out)
        self.text += text
        return text

    def flush(self) -> str:
        """End of the stream: an unclosed block is parsed as it is; a held bare call is parsed
        (text if it is none); a held tag start is text."""
        rest, self._buf = self._buf, ""
        if self._inside:
            self._inside = False
            self._close(rest)
            return ""
        if self._bare:
            self._bare = False
            found = bare_calls(rest, self._names)
            if found is not None:
                calls, invalid = found
                for c in calls:
                    self._add(c)
                self.invalid += invalid
                return ""
        self.text += rest
        return rest

    @property
    def holding(self) -> bool:
        """Inside a block, or holding what may start one."""
        return self._inside or bool(self._buf)

    def _close(self, body: str) -> None:
        call = parse_call(body, self._names)
        if call is None:
            self.invalid.append(body.strip())
        else:
            self._add(call)

    def _add(self, call: ToolCall) -> None:
        """A call, unless the same call (name and arguments) came already (a small model repeats itself)."""
        if not any(c.name == call.name and c.arguments == call.arguments for c in self.calls):
            self.calls.append(call)


def _unfence(text: str) -> Optional[str]:
    """The text inside a leading ```json fence (the closing fence dropped); None when the fence
    names another language. Text without a fence is returned as it is."""
    s = text.lstrip()
    if not s.startswith(FENCE):
        return s
    nl = s.find("\n")
    if nl < 0:
        return None if s[3:].strip().lower() not in _FENCE_LANGS else ""
    if s[3:nl].strip().lower() not in _FENCE_LANGS:
        return None
    body = s[nl + 1:]
    end = body.find(FENCE)
    return body if end < 0 else body[:end]


def _bare_state(text: str) -> str:
    """A reply's start held as a possible bare call: "hold" (it is, or may still become, one) or
    "text" (it cannot be one). Decided early where it can be, so plain text is not held long."""
    s = text.lstrip()
    if s.startswith("`") and not s.startswith(FENCE):
        return "hold" if FENCE.startswith(s) else "text"
    if s.startswith(FENCE) and "\n" not in s:
        return "hold" if len(s) <= 3 + len("tool_call") else "text"   # the fence's language, still being written
    body = _unfence(s)
    if body is None:
        return "text"
    body = body.lstrip()
    if not body:
        return "hold"
    if body[0] != "{":
        return "text"
    try:
        obj, _ = _DECODER.raw_decode(body)
    except ValueError:
        return "hold"                  # not complete yet (or never: decided at the end)
    return "hold" if _call_shaped(obj) else "text"


def _call_shaped(obj: object) -> bool:
    """``{"name": str, "arguments"/"parameters": …}``: a call, valid or not."""
    return isinstance(obj, dict) and isinstance(obj.get("name"), str) and ("arguments" in obj or "parameters" in obj)


def bare_calls(text: str, names: Optional[set[str]] = None) -> Optional[tuple[list[ToolCall], list[str]]]:
    """A whole reply that is bare call objects (one after another, maybe inside a ```json fence)
    as its valid calls and the invalid rest; None when the reply does not start with a call."""
    body = _unfence(text)
    if body is None:
        return None
    calls: list[ToolCall] = []
    invalid: list[str] = []
    pos, body = 0, body.strip()
    while pos < len(body):
        try:
            obj, end = _DECODER.raw_decode(body, pos)
        except ValueError:
            break
        if not _call_shaped(obj):
            break
        call = _call_from(obj, names)
        if call is None:
            invalid.append(json.dumps(obj, ensure_ascii=False))
        else:
            calls.append(call)
        pos = end
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
    if not calls and not invalid:
        return None
    rest = body[pos:].strip()
    if rest.startswith("{"):           # a call cut short (the length limit)
        invalid.append(rest)
    return calls, invalid


def parse_call(body: str, names: Optional[set[str]] = None) -> Optional[ToolCall]:
    """``{"name": str, "arguments": object}`` → a ``ToolCall``; anything else → None."""
    try:
        obj = json.loads(body.strip())
    except ValueError:
        return None
    return _call_from(obj, names)


def _call_from(obj: object, names: Optional[set[str]]) -> Optional[ToolCall]:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    if names is not None and obj["name"] not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):          # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(args, ensure_ascii=False))
