"""What the chat and half-duplex views share: draining a reply stream into deltas."""
from __future__ import annotations

import threading
from typing import Iterator, Optional

import numpy as np

from ..api import Delta


def collect(reply, stop: Optional[threading.Event], texts: list[str], audio: list[np.ndarray]) -> Iterator[Delta]:
    """Yield the reply's deltas, keeping copies of the text and audio for the final result."""
    for d in reply.iterate(stop):
        if d.text:
            texts.append(d.text)
        if d.audio is not None:
            audio.append(d.audio)
        yield d
