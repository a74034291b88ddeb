"""``SharedIpCounts``: the per-address limits (``gateway.edge.max_ws_per_ip``, ``max_queued_per_ip``)
for all gateway processes together (``gateway.redis_url``).

A handshake never waits on Redis: it checks this process's own count plus what the other
gateways last reported (``IpCounter.others``). Every ``EVERY_S`` each process sends, in one script
(``ips``), the addresses that hold at least a sixteenth of a limit here, and reads the sums of
everyone else's reports. So one address is held to its limit across gateways to within a second,
and an address spread thin can add at most a sixteenth of the limit per gateway unreported. A
report holds at most ``REPORT_MAX`` addresses (the heaviest) and expires after ``TTL_S`` (a dead
gateway's counts go with it; a stopping one deletes its own); while Redis fails the last sums are
kept for ``STALE_S``, then each process counts alone again. A burst faster than one exchange is
not seen: an address opening sockets on N processes within a second can hold up to N × the limit.
"""
from __future__ import annotations

import asyncio
import logging
import time

from ..admission import IpCounter
from .link import UNAVAILABLE, RedisLink, key
from .scripts import Scripts

log = logging.getLogger(__name__)

EVERY_S = 1.0
REPORT_MAX = 256       # addresses reported per kind and process, the heaviest first (bounds Redis's work)
TTL_S = 5.0
STALE_S = 10.0


class SharedIpCounts:
    def __init__(self, link: RedisLink, scripts: Scripts, counters: dict[str, IpCounter]) -> None:
        self.link, self.scripts, self.counters = link, scripts, counters
        self._heard = time.monotonic()

    async def exchange(self) -> None:
        """Send this process's heavy addresses, learn the others' (raises the client's errors)."""
        args: list = [self.link.gateway_id, int(TTL_S * 1000), len(self.counters)]
        for kind, c in self.counters.items():
            heavy = c.heavy(REPORT_MAX)
            args += [kind, len(heavy), *(x for kv in heavy.items() for x in kv)]
        got = await self.scripts.call("ips", *args)
        for c, flat in zip(self.counters.values(), got):
            c.others = {str(flat[j]): int(flat[j + 1]) for j in range(0, len(flat), 2)}
        self._heard = time.monotonic()

    async def run(self) -> None:
        while True:
            try:
                await self.exchange()
            except UNAVAILABLE as e:
                self.link.failed(e)
            except Exception as e:     # Redis refused (out of memory …) or a bug: the loop goes on
                log.warning("shared per-address counts: exchange failed: %s", e)
            if time.monotonic() - self._heard > STALE_S:
                for c in self.counters.values():
                    c.others = {}
            await asyncio.sleep(EVERY_S)

    async def forget(self) -> None:
        """A clean stop: this process's reports go now, not in ``TTL_S``."""
        try:
            await self.link.client.delete(*(key("ips", kind, self.link.gateway_id) for kind in self.counters))
        except UNAVAILABLE:
            pass
