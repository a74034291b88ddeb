"""The gateway's link to the workers' recordings: find the worker that holds a recording, stream a
request to it and its answer back, and hand client diagnostics to the worker of their session.

- **Owner.** ``RecordingOwners`` (learned from the relay) first; an id it does not know is looked
  up on every worker the pool knows, in parallel, within ``LOOKUP_S`` (``find_owner``), at most
  ``MAX_LOOKUPS`` such searches at once, and the answer is remembered. The worker token is only
  ever sent to a worker the pool knows.
- **Proxy.** ``open`` sends the request (a streamed body for uploads) and returns the worker's
  answer unread, as a ``StreamingResponse`` that passes on the body as it arrives, and only the
  headers in ``PASS_HEADERS``. A worker's 404 stays 404; a worker that cannot be reached or does
  not answer in time is 503, one that fails or refuses the gateway's token 502.
- **Diagnostics.** ``diagnostic`` queues a frame (never waits: the relay calls it on a client's
  hot path); ``SENDERS`` tasks post them to ``/recordings/<key>/diagnostics``, each session always
  on the same task (in order), at most ``MAX_QUEUED_BYTES`` waiting (beyond it, dropped).
"""
from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, AsyncIterator, Callable, Coroutine, Iterable, Mapping, Optional, Union

import httpx
from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from ..recordings.ids import valid_id
from ..tokens import bearer
from .recording_owners import RecordingOwners

log = logging.getLogger(__name__)

LOOKUP_S = 3.0                # asking every worker whether it holds an id
MAX_LOOKUPS = 16              # such searches at once (an unknown id costs one request per worker)
READ_S = 30.0                 # the longest silence from a worker while its answer streams
SENDERS = 4
MAX_QUEUED_BYTES = 4 * 1024 * 1024
DIAGNOSTIC_S = 5.0
# what a client may see of a worker's answer, and what a worker may see of a client's request
PASS_HEADERS = ("content-type", "content-length", "content-disposition", "content-range", "accept-ranges",
                "cache-control", "etag", "last-modified")
FORWARD_HEADERS = ("content-type", "range", "if-range", "if-none-match", "if-modified-since")

Body = Union[bytes, AsyncIterator[bytes], None]


def _unique(urls: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(u.rstrip("/") for u in urls))


async def find_owner(http: httpx.AsyncClient, recording_id: str, urls: list[str], headers: dict[str, str],
                     timeout_s: float = LOOKUP_S) -> tuple[Optional[str], bool]:
    """Ask each worker in ``urls`` at once whether it holds ``recording_id``. Returns the first that
    does (or None) and whether every worker answered (False: one may hold it but is unreachable)."""
    async def ask(url: str) -> tuple[str, Optional[int]]:
        try:
            r = await http.get(f"{url}/recordings/{recording_id}", headers=headers, timeout=timeout_s)
            return url, r.status_code
        except httpx.HTTPError:
            return url, None

    tasks = [asyncio.create_task(ask(u)) for u in urls]
    answered = 0
    try:
        async with asyncio.timeout(timeout_s + 0.5):
            for next_done in asyncio.as_completed(tasks):
                url, status = await next_done
                if status == 200:
                    return url, True
                answered += status == 404
    except TimeoutError:
        pass
    finally:
        for t in tasks:
            t.cancel()
    return None, answered == len(urls)


class RecordingProxy:
    def __init__(self, owners: RecordingOwners, worker_urls: Callable[[], Iterable[str]], worker_token: Optional[str],
                 *, connect_timeout_s: float = 5.0) -> None:
        self.owners = owners
        self.worker_urls = worker_urls
        self.headers = bearer(worker_token)
        self.http = httpx.AsyncClient(trust_env=False, headers={"accept-encoding": "identity"},
                                      timeout=httpx.Timeout(READ_S, connect=connect_timeout_s, pool=connect_timeout_s),
                                      limits=httpx.Limits(max_connections=256, max_keepalive_connections=32))
        self._lookups = asyncio.Semaphore(MAX_LOOKUPS)
        self._tasks: set[asyncio.Task] = set()
        self._queues: list[asyncio.Queue[tuple[str, str, str]]] = []
        self._queued_bytes = 0
        self._dropped = 0

    # ------------------------------------------------------------------- owners
    def learned(self, recording_id: str, worker_url: str) -> None:
        """The relay saw ``recording_id`` come from ``worker_url`` (stored off the relay's path)."""
        self._spawn(self.owners.put(recording_id, worker_url))

    async def owner(self, recording_id: str) -> str:
        """The URL of the worker that holds ``recording_id``; 404 when no worker does, 503 when
        the one that may is unreachable."""
        known = _unique(self.worker_urls())
        url = await self.owners.get(recording_id)
        if url is not None and url in known:
            return url
        try:
            async with asyncio.timeout(LOOKUP_S):        # waiting for a turn has a deadline too
                await self._lookups.acquire()
        except TimeoutError:
            raise HTTPException(503, "too many recording lookups at once; try again later") from None
        try:
            found, complete = await find_owner(self.http, recording_id, known, self.headers)
        finally:
            self._lookups.release()
        if found is not None:
            self._spawn(self.owners.put(recording_id, found))
            return found
        if url is not None or not complete:
            raise HTTPException(503, "the worker that holds this recording is not reachable; try again later")
        raise HTTPException(404, "no such session or file")

    # -------------------------------------------------------------------- proxy
    async def open(self, method: str, recording_id: str, sub: str, client_headers: Mapping[str, str],
                   body: Body = None) -> StreamingResponse:
        """Send ``method /recordings/<id><sub>`` to the owner; its answer, streamed."""
        url = await self.owner(recording_id)
        headers = {k: v for k in FORWARD_HEADERS if (v := client_headers.get(k)) is not None}
        req = self.http.build_request(method, f"{url}/recordings/{recording_id}{sub}",
                                      headers={**headers, **self.headers}, content=body)
        try:
            resp = await self.http.send(req, stream=True)
        except ClientDisconnect:     # an upload that stopped (or passed the edge's cap): nothing is stored
            raise HTTPException(400, "the request body was cut off") from None
        except httpx.TimeoutException:
            raise HTTPException(503, "the worker that holds this recording did not answer in time") from None
        except httpx.HTTPError as e:
            log.warning("recording %s: worker %s unreachable: %s", recording_id, url, e)
            raise HTTPException(503, "the worker that holds this recording is not reachable; try again later") from None
        if resp.status_code in (401, 403) or resp.status_code in (500, 502, 503, 504):
            await resp.aclose()
            log.warning("recording %s: worker %s answered %d", recording_id, url, resp.status_code)
            raise HTTPException(502, "the worker that holds this recording failed to answer")
        out = {k: v for k in PASS_HEADERS if (v := resp.headers.get(k)) is not None}
        return StreamingResponse(_relay(resp), status_code=resp.status_code, headers=out,
                                 background=BackgroundTask(resp.aclose))

    # -------------------------------------------------------------- diagnostics
    def diagnostic(self, worker_url: str, key: str, text: str) -> None:
        """Queue one client_diagnostic frame for the worker of its session (dropped when full)."""
        if not valid_id(key):          # it becomes part of a URL
            return
        if not self._queues:
            self._queues = [asyncio.Queue() for _ in range(SENDERS)]
            for q in self._queues:
                self._spawn(self._send_diagnostics(q))
        if self._queued_bytes + len(text) > MAX_QUEUED_BYTES:
            self._dropped += 1
            if self._dropped in (1, 100) or self._dropped % 10000 == 0:
                log.warning("client diagnostics: %d dropped (the workers take them too slowly)", self._dropped)
            return
        self._queued_bytes += len(text)
        self._queues[zlib.crc32(key.encode()) % SENDERS].put_nowait((worker_url, key, text))

    async def _send_diagnostics(self, q: asyncio.Queue[tuple[str, str, str]]) -> None:
        while True:
            url, key, text = await q.get()
            self._queued_bytes -= len(text)
            try:
                r = await self.http.post(f"{url}/recordings/{key}/diagnostics", content=text.encode(),
                                         headers={"content-type": "application/json", **self.headers},
                                         timeout=DIAGNOSTIC_S)
                if r.status_code != 200:
                    log.warning("client_diagnostic not stored: worker %s answered %d", url, r.status_code)
            except httpx.HTTPError as e:
                log.warning("client_diagnostic not stored: worker %s: %s", url, e)

    # --------------------------------------------------------------------- life
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
        await self.owners.close()


async def _relay(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The worker's body as it arrives. A worker that stops mid-way cuts the client's connection
    too (raised on), so a client never takes a truncated file for a whole one."""
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.HTTPError as e:
        log.warning("recording answer from %s cut off: %s", resp.request.url, e)
        raise
