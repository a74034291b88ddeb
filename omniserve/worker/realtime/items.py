"""A realtime session's conversation: the items the client and the model add, in order, and what
the model reads of them.

Items are what the protocol calls them (user / assistant / system messages, function calls and
their outputs). A user's audio is read once, when it is committed: the item keeps its transcript,
so a later turn never transcribes it again. An assistant item remembers how long each piece of its
speech was, so ``truncate`` can cut its text to what the user heard (whole sentences, then words in
proportion inside the sentence that was cut).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ...engine.api import Message, Text, ToolCall
from ...protocol.realtime import MAX_INSTRUCTIONS, MAX_ITEM_TEXT, MAX_ITEMS, new_id

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class ItemError(ValueError):
    """An edit the conversation cannot make (unknown item, bad truncate …); the text says why."""

    def __init__(self, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Item:
    id: str
    type: str                       # "message" | "function_call" | "function_call_output"
    role: str = ""                  # message: "user" | "assistant" | "system"
    audio: bool = False             # message content is audio (input_audio / output_audio)
    text: Optional[str] = ""        # text, or audio's transcript (None: not transcribed yet)
    status: str = "completed"       # "in_progress" | "completed" | "incomplete"
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""
    audio_pieces_ms: list[float] = field(default_factory=list)   # assistant speech, piece by piece
    truncated_ms: Optional[int] = None

    @property
    def audio_ms(self) -> float:
        return sum(self.audio_pieces_ms)


MAX_TOTAL_CHARS = 1_000_000      # all items' text together (the oldest items go first)


def _size(it: "Item") -> int:
    return len(it.text or "") + len(it.arguments) + len(it.output)


class Conversation:
    """The items in order: at most ``MAX_ITEMS`` and ``MAX_TOTAL_CHARS`` of text (the oldest go
    first); the model reads the newest ``max_chars`` of it."""

    def __init__(self, max_chars: int) -> None:
        self.items: list[Item] = []
        self.max_chars = max_chars

    def get(self, item_id: str) -> Item:
        for it in self.items:
            if it.id == item_id:
                return it
        raise ItemError(f"Item {item_id[:64]!r} does not exist in the conversation", "item_not_found")

    def last_id(self) -> Optional[str]:
        return self.items[-1].id if self.items else None

    def add(self, item: Item, previous_item_id: Optional[str] = None) -> Optional[str]:
        """Insert after ``previous_item_id`` (None = at the end, "root" = first); returns the id it follows."""
        if any(it.id == item.id for it in self.items):
            raise ItemError(f"Item {item.id[:64]!r} already exists", "duplicate_item_id")
        if previous_item_id not in (None, "root"):
            self.get(previous_item_id)         # exists (before anything is evicted)
        item.text = None if item.text is None else item.text[:MAX_ITEM_TEXT]
        item.arguments, item.output = item.arguments[:MAX_ITEM_TEXT], item.output[:MAX_ITEM_TEXT]
        total = sum(_size(it) for it in self.items) + _size(item)
        while self.items and (len(self.items) >= MAX_ITEMS or total > MAX_TOTAL_CHARS) \
                and self.items[0].id != previous_item_id:
            total -= _size(self.items.pop(0))     # room first: the new item itself is never evicted
        if previous_item_id not in (None, "root") and all(it.id != previous_item_id for it in self.items):
            previous_item_id = None
        if previous_item_id is None:
            prev = self.last_id()
            self.items.append(item)
        elif previous_item_id == "root":
            prev = None
            self.items.insert(0, item)
        else:
            at = self.items.index(self.get(previous_item_id))
            prev = previous_item_id
            self.items.insert(at + 1, item)
        return prev

    def previous_id(self, item: Item) -> Optional[str]:
        if item not in self.items:
            return None
        i = self.items.index(item)
        return self.items[i - 1].id if i > 0 else None

    def delete(self, item_id: str) -> None:
        self.items.remove(self.get(item_id))

    def truncate(self, item_id: str, audio_end_ms: int) -> Item:
        """Cut an assistant audio item to what was heard before ``audio_end_ms``."""
        it = self.get(item_id)
        if it.type != "message" or it.role != "assistant":
            raise ItemError("Only assistant messages can be truncated", "invalid_item_type")
        if not it.audio_pieces_ms:
            raise ItemError("This item has no audio to truncate", "invalid_item_type")
        if audio_end_ms > it.audio_ms + 1:
            raise ItemError(f"audio_end_ms {audio_end_ms} is past the item's audio ({it.audio_ms:.0f} ms)",
                            "invalid_audio_end_ms")
        it.text = heard_part(it.text or "", it.audio_pieces_ms, audio_end_ms)
        it.truncated_ms = audio_end_ms
        it.audio_pieces_ms = _cut_pieces(it.audio_pieces_ms, audio_end_ms)
        return it

    # ------------------------------------------------------------ what the model reads
    def messages(self, instructions: str) -> list[Message]:
        """The newest items that fit ``max_chars``, as engine messages (system first)."""
        system = [instructions] + [it.text or "" for it in self.items if it.type == "message" and it.role == "system"]
        kept: list[Item] = []
        used = 0
        for it in reversed([i for i in self.items if not (i.type == "message" and i.role == "system")]):
            size = len(it.text or "") + len(it.arguments) + len(it.output) + 16
            if kept and used + size > self.max_chars:
                break
            used += size
            kept.append(it)
        kept.reverse()
        while kept and kept[0].type == "function_call_output":   # a result without its call reads as nothing
            kept.pop(0)
        out = [Message("system", [Text("\n".join(s for s in system if s.strip())[:MAX_INSTRUCTIONS])])]
        for it in kept:
            if it.type == "message":
                if it.text:
                    out.append(Message(it.role, [Text(it.text)]))
            elif it.type == "function_call":
                call = ToolCall(it.call_id, it.name, it.arguments or "{}")
                if out[-1].role == "assistant":
                    out[-1].tool_calls.append(call)
                else:
                    out.append(Message("assistant", [], tool_calls=[call]))
            else:
                out.append(Message("tool", [Text(it.output)], tool_call_id=it.call_id))
        return out


def heard_part(text: str, pieces_ms: list[float], end_ms: float) -> str:
    """The part of ``text`` spoken before ``end_ms``: whole sentences when the speech came one
    sentence a piece, else words in proportion to the time."""
    total = sum(pieces_ms)
    if end_ms >= total or not text:
        return text
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    if len(sentences) == len(pieces_ms):
        out: list[str] = []
        t = 0.0
        for s, ms in zip(sentences, pieces_ms):
            if t + ms <= end_ms:
                out.append(s)
            else:
                words = s.split()
                n = int(len(words) * max(0.0, end_ms - t) / ms) if ms > 0 else 0
                if n:
                    out.append(" ".join(words[:n]))
                break
            t += ms
        return " ".join(out)
    words = text.split()
    return " ".join(words[:int(len(words) * end_ms / total)]) if total > 0 else ""


def _cut_pieces(pieces: list[float], end_ms: float) -> list[float]:
    out: list[float] = []
    t = 0.0
    for ms in pieces:
        if t >= end_ms:
            break
        out.append(min(ms, end_ms - t))
        t += ms
    return out


def user_text_item(text: str, item_id: Optional[str] = None) -> Item:
    return Item(item_id or new_id("item"), "message", "user", text=text)
