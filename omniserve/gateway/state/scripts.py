"""The Lua scripts of ``scripts.lua``, loaded once and called by name.

redis-py's ``Script`` runs a script by its SHA and loads it again by itself when Redis answers
NOSCRIPT (a restarted Redis forgets its scripts). The ``now`` section is a prelude: every script
gets ``now_ms()`` (Redis's own clock, so gateways on hosts with skewed clocks agree).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .link import PREFIX

SOURCE = Path(__file__).with_name("scripts.lua")


def _sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("--@ "):
            name = line[4:].strip()
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


class Scripts:
    """``await scripts.call("claim", 64)``: ARGV[1] is always the key prefix."""

    def __init__(self, client: aioredis.Redis) -> None:
        parts = _sections(SOURCE.read_text())
        prelude = parts.pop("now")
        self._scripts = {name: client.register_script(prelude + "\n" + body) for name, body in parts.items()}

    async def call(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[], args=[PREFIX, *args])
