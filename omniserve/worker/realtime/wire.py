"""Server events of the OpenAI Realtime protocol, written from the session's items and the engine's
events. The GA names by default; a beta client (``OpenAI-Beta: realtime=v1``) gets the beta
spellings (``conversation.item.created``, ``response.audio.delta``, ``response.text.delta`` …,
content types ``text`` / ``audio``). Every event has a fresh ``event_id``.
"""
from __future__ import annotations

import json
import time
from typing import Any, Awaitable, Callable, Optional

from ...protocol.realtime import FORMAT_GA, SessionConfig, new_id
from .items import Item

Send = Callable[[str], Awaitable[bool]]

MODEL = "omniserve"


class RealtimeWire:
    def __init__(self, send: Send, *, beta: bool, session_id: str) -> None:
        self._send = send
        self.beta = beta
        self.session_id = session_id

    async def emit(self, type_: str, **fields: Any) -> bool:
        return await self._send(json.dumps({"type": type_, "event_id": new_id("event"), **fields},
                                           ensure_ascii=False, separators=(",", ":")))

    # ------------------------------------------------------------ session
    def session(self, cfg: SessionConfig) -> dict:
        td: Optional[dict] = None
        if cfg.turn_detection is not None:
            t = cfg.turn_detection
            td = {"type": t.type, "threshold": t.threshold, "prefix_padding_ms": t.prefix_padding_ms,
                  "silence_duration_ms": t.silence_duration_ms, "create_response": t.create_response,
                  "interrupt_response": t.interrupt_response}
        tools = [{"type": "function", "name": f.name, "description": f.description, "parameters": f.parameters}
                 for f in cfg.tools]
        tr: Optional[dict[str, Any]] = {"model": cfg.transcription_model} if cfg.transcription_model else None
        if tr is not None and cfg.language:
            tr["language"] = cfg.language
        choice: Any = cfg.tool_choice
        if choice not in ("auto", "none", "required") and not self.beta:    # beta names the function as a string
            choice = {"type": "function", "name": choice}
        max_out: Any = "inf" if cfg.max_output_tokens is None else cfg.max_output_tokens
        if self.beta:
            return {"id": self.session_id, "object": "realtime.session",   # beta: "model" is an OpenAI name or absent
                    "modalities": ["text", "audio"] if cfg.audio_out else ["text"],
                    "instructions": cfg.instructions, "voice": cfg.voice,
                    "input_audio_format": cfg.input_format, "output_audio_format": cfg.output_format,
                    "input_audio_transcription": tr, "turn_detection": td, "tools": tools,
                    "tool_choice": choice, "temperature": cfg.temperature,
                    "max_response_output_tokens": max_out, "speed": cfg.speed}

        def fmt(name: str) -> dict:
            return {"type": FORMAT_GA[name], **({"rate": 24000} if name == "pcm16" else {})}

        return {"type": "realtime", "id": self.session_id, "object": "realtime.session", "model": MODEL,
                "output_modalities": list(cfg.output_modalities), "instructions": cfg.instructions,
                "audio": {"input": {"format": fmt(cfg.input_format), "transcription": tr, "turn_detection": td},
                          "output": {"format": fmt(cfg.output_format), "voice": cfg.voice, "speed": cfg.speed}},
                "tools": tools, "tool_choice": choice, "max_output_tokens": max_out,
                "expires_at": int(time.time()) + 3600}

    async def session_created(self, cfg: SessionConfig) -> None:
        await self.emit("session.created", session=self.session(cfg))

    async def session_updated(self, cfg: SessionConfig) -> None:
        await self.emit("session.updated", session=self.session(cfg))

    async def error(self, message: str, *, code: Optional[str] = None, event_id: Optional[str] = None,
                    param: Optional[str] = None, kind: str = "invalid_request_error") -> None:
        await self.emit("error", error={"type": kind, "code": code, "message": message, "param": param,
                                        "event_id": event_id})

    # ------------------------------------------------------------ items
    def item(self, it: Item) -> dict:
        base = {"id": it.id, "object": "realtime.item", "type": it.type, "status": it.status}
        if it.type == "function_call":
            return {**base, "call_id": it.call_id, "name": it.name, "arguments": it.arguments}
        if it.type == "function_call_output":
            return {**base, "call_id": it.call_id, "output": it.output}
        part: dict
        if it.role == "assistant":
            kind = ("audio" if it.audio else "text") if self.beta else ("output_audio" if it.audio else "output_text")
            part = {"type": kind, "transcript": it.text} if it.audio else {"type": kind, "text": it.text}
        elif it.audio:
            part = {"type": "input_audio", "transcript": it.text}
        else:
            part = {"type": "input_text", "text": it.text}
        return {**base, "role": it.role, "content": [part]}

    async def item_added(self, it: Item, previous_item_id: Optional[str]) -> None:
        if self.beta:
            await self.emit("conversation.item.created", previous_item_id=previous_item_id, item=self.item(it))
        else:
            await self.emit("conversation.item.added", previous_item_id=previous_item_id, item=self.item(it))

    async def item_done(self, it: Item, previous_item_id: Optional[str]) -> None:
        if not self.beta:      # the beta protocol has no item.done: its item.created is the whole item
            await self.emit("conversation.item.done", previous_item_id=previous_item_id, item=self.item(it))

    # ------------------------------------------------------------ audio deltas and parts
    def name(self, ga: str) -> str:
        """A response event's name for this client (beta: ``response.audio.delta`` …)."""
        if not self.beta:
            return ga
        return (ga.replace("response.output_audio_transcript.", "response.audio_transcript.")
                  .replace("response.output_audio.", "response.audio.")
                  .replace("response.output_text.", "response.text."))

    def part(self, it: Item) -> dict:
        if it.audio:
            return {"type": "audio", "transcript": it.text or ""}
        return {"type": "text", "text": it.text or ""}
