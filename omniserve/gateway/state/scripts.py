"""The Lua scripts of ``scripts.lua``, loaded once and called by name.

redis-py's ``Script`` runs a script by its SHA and loads it again by itself when Redis answers
NOSCRIPT (a restarted Redis forgets its scripts). The ``prelude`` section comes first in every
script: ``now_ms()`` (Redis's own clock, so gateways on hosts with skewed clocks agree), ``int()``
and ``claim_loop()`` (dispatch, shared by ``claim`` and ``enqueue``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .link import PREFIX, RedisLink

ON_LEASE_CONNECTION = {"renew"}     # never waits behind a burst of clients

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

    def __init__(self, link: RedisLink) -> None:
        parts = _sections(SOURCE.read_text())
        prelude = parts.pop("prelude")
        self._scripts = {name: (link.lease_client if name in ON_LEASE_CONNECTION else link.client)
                         .register_script(prelude + "\n" + body) for name, body in parts.items()}

    async def call(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[], args=[PREFIX, *args])
