"""Wire messages (protocol models) → engine inputs (``omniserve.engine.api`` dataclasses).

Kept apart from the session loops so the mapping is readable in one place: which field becomes
which engine item, and which payloads are decoded how. Errors are ``InputError`` (user-facing).
Media headers are checked here already (image format and pixel count, video container), so a
bomb or a file of the wrong kind is refused before the engine spends anything on it; the engine
checks again (``engine.checks``, and the backend when it decodes), as it also serves callers
other than this worker.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .. import mediaprobe
from ..engine import api
from ..protocol.messages import (AudioItem, ChatRequest, ChatToolCall, ContentItem, GenerationConfig,
                                 HDGenerationConfig, ImageItem, TextItem, VideoItem)
from . import limits

MAX_CHAT_AUDIO_S = 600.0
MAX_MEDIA_BYTES = 16 * 1024 * 1024


def content_items(items: list[ContentItem], where: str) -> list[api.Item]:
    """Decode one message's content items (empty-data items were already dropped)."""
    out: list[api.Item] = []
    for i, it in enumerate(items):
        what = f"{where}.content[{i}]"
        if isinstance(it, TextItem):
            out.append(api.Text(it.text))
        elif isinstance(it, ImageItem):
            out.append(api.Image(image(it.data, f"{what} (image)")))
        elif isinstance(it, AudioItem):
            pcm = limits.audio_at(it.data, it.sample_rate, max_s=MAX_CHAT_AUDIO_S, what=f"{what} (audio)")
            out.append(api.Audio(pcm, 16000))
        elif isinstance(it, VideoItem):
            out.append(api.Video(video(it.data, f"{what} (video)"), it.stack_frames))
    return out


def image(b64: str, what: str) -> bytes:
    """base64 → image bytes whose header names an accepted format and size (nothing decoded)."""
    data = limits.blob(b64, what=what, max_bytes=MAX_MEDIA_BYTES)
    try:
        mediaprobe.check_image(data)
    except mediaprobe.MediaError as e:
        raise limits.InputError(f"{what}: {'too large: ' if isinstance(e, mediaprobe.TooLarge) else ''}{e}") from None
    return data


def video(b64: str, what: str) -> bytes:
    """base64 → the bytes of an MP4/MOV, WebM/Matroska or Ogg file (by its magic bytes)."""
    data = limits.blob(b64, what=what, max_bytes=MAX_MEDIA_BYTES)
    if mediaprobe.container(data) not in mediaprobe.VIDEO_CONTAINERS:
        raise limits.InputError(f"{what}: not an MP4, WebM or Ogg video file")
    return data


def chat_messages(req: ChatRequest) -> list[api.Message]:
    msgs = [api.Message(m.role, content_items(m.items(), f"messages[{i}]"),
                        tool_calls=[tool_call(c) for c in m.tool_calls or ()], tool_call_id=m.tool_call_id or "")
            for i, m in enumerate(req.messages)]
    if not any(m.items for m in msgs if m.role == "user"):
        raise limits.InputError("messages: no user content")
    return msgs


def tool_call(c: ChatToolCall) -> api.ToolCall:
    return api.ToolCall(c.id, c.function.name, c.function.arguments)


def chat_tools(req: ChatRequest) -> tuple[list[api.Tool], api.ToolChoice]:
    """The request's tools and ``tool_choice`` ("auto", "none", "required" or a tool's name)."""
    tools = [api.Tool(t.function.name, t.function.description, t.function.parameters) for t in req.tools or ()]
    return tools, req.tool_choice_name


def generation(g: Union[GenerationConfig, HDGenerationConfig]) -> api.GenerationParams:
    """Chat sends every generation knob, half-duplex a subset: the rest keep their defaults (both
    wire models and ``GenerationParams`` carry ``omniserve.knobs`` names)."""
    return api.GenerationParams(**g.model_dump())


def system_text(prompt: Optional[str], items: list[ContentItem]) -> str:
    """``system_prompt`` if given, else the text items of ``system_content`` joined."""
    if prompt:
        return prompt
    return "\n".join(it.text for it in items if isinstance(it, TextItem) and it.text).strip()


def first_audio(items: list[ContentItem]) -> Optional[str]:
    for it in items:
        if isinstance(it, AudioItem) and it.data:
            return it.data
    return None


def reference_pcm(b64: Optional[str], what: str) -> Optional[np.ndarray]:
    if not b64:
        return None
    return limits.audio(b64, max_s=limits.MAX_REF_AUDIO_S, what=what)
