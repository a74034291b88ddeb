"""Self-registration with a gateway on another host (``worker.gateway_url``), repeated as a heartbeat.

The worker POSTs ``protocol.worker.WorkerRegister`` (its URL, ``ttl_s`` = ``worker.register_ttl_s``
and its slot count) to the gateway's ``/api/workers/register`` every ``register_interval_s``. The
gateway forgets a registered worker it has not heard from for ``ttl_s``, so a worker that dies or
loses its network leaves the pool by itself; and a gateway that starts after the worker, or
restarts and forgot it, learns it again at the next beat. The interval must be shorter than the
TTL: if it is not, the worker beats every ``ttl/3`` and says so at startup.

The token is the worker token (``worker.token``, or the deprecated ``worker.register_token``) —
the same one the gateway sends to reach this worker. TLS is verified: against
``worker.gateway_ca_file`` when given (the gateway's self-signed certificate), else the system CAs.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

import httpx
from pydantic import ValidationError

from ..config import WorkerSettings
from ..protocol.worker import WorkerRegister
from ..tokens import bearer
from .auth import worker_token

log = logging.getLogger("omniserve.worker.register")

POST_TIMEOUT_S = 10.0         # one registration's deadline (shorter when the beat is shorter)
FIRST_RETRY_S = 1.0


def own_url(w: WorkerSettings) -> str:
    if w.public_url:
        return w.public_url.rstrip("/")
    host = "127.0.0.1" if w.host in ("0.0.0.0", "::", "") else w.host
    return f"http://{host}:{w.port}"


def heartbeat_interval(w: WorkerSettings) -> float:
    """``register_interval_s``, or ``register_ttl_s / 3`` when that is not shorter than the TTL."""
    if 0 < w.register_interval_s < w.register_ttl_s:
        return w.register_interval_s
    beat = w.register_ttl_s / 3
    log.warning("worker.register_interval_s (%g s) must be shorter than worker.register_ttl_s (%g s): "
                "registering every %g s instead", w.register_interval_s, w.register_ttl_s, beat)
    return beat


class Heartbeat:
    """Built at startup (a bad ``public_url`` or TTL is an error then, not at every beat);
    ``run()`` beats until cancelled. ``slots`` reads the worker's current slot count."""

    def __init__(self, w: WorkerSettings, slots: Callable[[], int]) -> None:
        assert w.gateway_url
        self.w = w
        self.slots = slots
        self.url = w.gateway_url.rstrip("/") + "/api/workers/register"
        self.body()                                   # raises ValueError now if the settings cannot register
        self.interval_s = heartbeat_interval(w)

    def body(self) -> WorkerRegister:
        try:
            return WorkerRegister(url=own_url(self.w), ttl_s=self.w.register_ttl_s, slots=self.slots())
        except ValidationError as e:
            raise ValueError(f"cannot register with {self.w.gateway_url} (worker.public_url / "
                             f"worker.register_ttl_s): {e}") from None

    async def run(self) -> None:
        """Runs until cancelled (server shutdown); failures are logged and retried with backoff."""
        w = self.w
        headers = bearer(worker_token(w))
        verify: object = w.gateway_ca_file or True
        delay = FIRST_RETRY_S
        registered: Optional[bool] = None
        timeout = min(POST_TIMEOUT_S, self.interval_s)
        async with httpx.AsyncClient(verify=verify, timeout=timeout) as client:  # type: ignore[arg-type]
            while True:
                try:
                    body = self.body()
                    r = await client.post(self.url, json=body.model_dump(exclude_none=True), headers=headers)
                    r.raise_for_status()
                    if not registered:
                        log.info("registered with %s as %s (%d slot%s, heartbeat every %g s, ttl %g s)",
                                 w.gateway_url, body.url, body.slots or 1, "" if body.slots == 1 else "s",
                                 self.interval_s, body.ttl_s)
                    registered, delay = True, self.interval_s
                except (httpx.HTTPError, OSError) as e:
                    if registered is not False:
                        log.warning("registering with %s failed (%s); retrying", w.gateway_url, e)
                    registered, delay = False, min(max(delay * 2, FIRST_RETRY_S), self.interval_s)
                await asyncio.sleep(delay)
