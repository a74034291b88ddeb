"""Self-registration with a gateway on another host (``worker.gateway_url``).

Why a loop rather than one call: the gateway may start after the worker, or restart and forget
its dynamically added workers; re-registering every ``register_interval_s`` (idempotent on the
gateway side) heals both. The token is the worker token (``worker.token``, or the deprecated
``worker.register_token``) — the same one the gateway sends to reach this worker.
TLS is verified: against ``worker.gateway_ca_file`` when given (the gateway's self-signed
certificate), else the system CAs.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

import httpx

from ..config import WorkerSettings
from ..tokens import bearer
from .auth import worker_token

log = logging.getLogger("omniserve.worker.register")


def own_url(w: WorkerSettings) -> str:
    if w.public_url:
        return w.public_url.rstrip("/")
    host = "127.0.0.1" if w.host in ("0.0.0.0", "::", "") else w.host
    return f"http://{host}:{w.port}"


async def register_forever(w: WorkerSettings) -> None:
    """Runs until cancelled (server shutdown); failures are logged and retried with backoff."""
    assert w.gateway_url
    url = w.gateway_url.rstrip("/") + "/api/workers/register"
    headers = bearer(worker_token(w))
    verify: object = w.gateway_ca_file or True
    delay = 1.0
    registered: Optional[bool] = None
    async with httpx.AsyncClient(verify=verify, timeout=10) as client:  # type: ignore[arg-type]
        while True:
            try:
                r = await client.post(url, json={"url": own_url(w)}, headers=headers)
                r.raise_for_status()
                if not registered:
                    log.info("registered with %s as %s", w.gateway_url, own_url(w))
                registered, delay = True, w.register_interval_s
            except (httpx.HTTPError, OSError) as e:
                if registered is not False:
                    log.warning("registering with %s failed (%s); retrying", w.gateway_url, e)
                registered, delay = False, min(max(delay * 2, 1.0), w.register_interval_s)
            await asyncio.sleep(delay)
