"""Chat messages as the cascade's LLM reads them: plain text.

Audio is transcribed, pictures described (OCR + faces), videos split into a few described frames
and their audio track's words. A user's audio is their words unless they also typed text (then
it is a clip to discuss).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

from omniserve.engine.api import Audio, EngineInputError, Image, Message, Text, Video
from omniserve.engine.checks import check_audio

from .cascade import Cascade
from .media import split_video


@dataclass
class EncodedMessage:
    role: str
    text: str
    heard: str = ""            # what the message's audio said, if it had audio


def encode(c: Cascade, message: Message, stop: Optional[threading.Event] = None, language: str = "auto") -> EncodedMessage:
    """``language``: of the audio (``Cascade.transcribe``); "auto" tells English from Chinese."""
    spoken_words = not any(isinstance(i, Text) and str(i.text).strip() for i in message.items)
    parts: list[str] = []
    heard: list[str] = []
    for k, item in enumerate(message.items):
        if stop is not None and stop.is_set():
            break
        if isinstance(item, Text):
            parts.append(str(item.text))
        elif isinstance(item, Image):
            parts.append(f"(Attached picture: {c.describe_image(item.data)})")
        elif isinstance(item, Audio):
            said = c.transcribe(check_audio(item.pcm, item.sample_rate, what=f"audio item {k + 1}"), language=language)
            heard.append(said)
            parts.append(said if spoken_words else f'(Audio clip that says: "{said}")' if said else "(Audio clip without speech)")
        elif isinstance(item, Video):
            text, said = _video(c, item, language)
            heard.append(said)
            parts.append(text)
        else:
            raise EngineInputError(f"unknown content item {type(item).__name__}")
    return EncodedMessage(message.role, "\n".join(p for p in parts if p).strip(), " ".join(h for h in heard if h))


def _video(c: Cascade, item: Video, language: str) -> tuple[str, str]:
    video = split_video(item.data, max_frames=max(2, min(8, 2 * int(item.stack_frames or 1))))
    seen: list[str] = []
    for t, jpeg in video.frames:
        d = c.describe_image(jpeg)
        if not seen or not seen[-1].endswith(d):
            seen.append(f"at {t:.0f} s: {d}")
    said = c.transcribe(video.audio, language=language) if video.audio is not None else ""
    text = f"(Attached video, {video.duration_s:.0f} s. Frames {'; '.join(seen)}."
    text += f' Its audio says: "{said}")' if said else " No speech in its audio.)"
    return text, said
