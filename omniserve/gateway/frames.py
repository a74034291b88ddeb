"""What the gateway reads of a relayed frame without parsing it: its ``type`` and the recording
id, each from a bounded scan, and which close codes may be sent on the wire."""
from __future__ import annotations

import re
from typing import Optional

from ..protocol.messages import CLOSE_NORMAL

_TYPE_RE = re.compile(r'"type"\s*:\s*"([A-Za-z_.]{1,40})"')
_REC_RE = re.compile(r'"recording_session_id"\s*:\s*"([A-Za-z0-9_\-]{1,128})"')
_SCAN = 512
CLOSE_INTERNAL = 1011


def frame_type(text: str) -> Optional[str]:
    """The ``type`` of a JSON frame from a bounded scan (head, then tail, then all if small)."""
    m = _TYPE_RE.search(text, 0, _SCAN)
    if m is None and len(text) > _SCAN:
        m = _TYPE_RE.search(text, max(_SCAN, len(text) - _SCAN))
        if m is None and len(text) <= 65536:
            m = _TYPE_RE.search(text)
    return m.group(1) if m else None


def recording_id(text: str) -> Optional[str]:
    m = _REC_RE.search(text)
    return m.group(1) if m else None


def sendable(code: Optional[int]) -> int:
    """A close code that may be sent on the wire (1005/1006/1015 are reserved)."""
    if code is None or code in (1005, 1006, 1015) or not (1000 <= code <= 4999) or 1016 <= code < 3000:
        return CLOSE_NORMAL if code in (None, 1005) else CLOSE_INTERNAL
    return code
