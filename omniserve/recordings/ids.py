"""What a recording id (the worker's ``recording_session_id``) or a session key may look like.

One pattern for both tiers: the worker checks it before it builds a path, the gateway before it
looks an owner up or builds a worker URL (the pattern has no ``.``, ``/`` or ``%``)."""
from __future__ import annotations

import re

RECORDING_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def valid_id(value: object) -> bool:
    return isinstance(value, str) and RECORDING_ID_RE.fullmatch(value) is not None   # not match: "$" accepts a final newline
