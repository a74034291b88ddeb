"""WorkerPool: which workers exist, whether they are healthy, and which one serves which ticket.

There is exactly one dispatch point, ``dispatch()``: it is called whenever a ticket arrives, a
worker is confirmed idle, or a worker comes back, and it always serves the head of the FIFO queue
first (a newcomer never jumps the queue).

The worker is the source of truth for its own state: a ticket goes only to a worker whose latest
``/health`` says ``idle``. A worker is *assigned* from dispatch until the relay's cleanup calls
``release()``. If the worker itself closed the session's socket it is idle at once (it closes only
after its cleanup); otherwise it is ``releasing`` — not dispatchable — and polled at once, and again
with a short backoff, until a health report sent after the release says ``idle``. A worker that does not
get there within ``release_idle_timeout_s`` is marked ``stuck`` (the launcher restarts it; it
becomes usable again by itself if it does report idle later). A worker that refuses a session it
was given (busy, unreachable) gets the ticket back at the head of the queue (``refused``), so no
client ever sees "Worker busy" while the queue could still serve it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import httpx

from ..protocol.affinity import longest_cached_prefix
from ..protocol.modes import CHAT, ERROR, IDLE, LOADING
from ..protocol.rest import RunningTaskOut, StatusOut, WorkerOut
from ..tokens import bearer
from .eta import EtaEstimator
from .queue import Ticket, WaitQueue, cancel_and_wait

log = logging.getLogger(__name__)

OFFLINE = "offline"       # gateway-side: /health does not answer
RELEASING = "releasing"   # gateway-side: released, waiting for the worker to report idle
STUCK = "stuck"           # gateway-side: did not report idle within the bound after a release
NOT_READY = {OFFLINE, LOADING, ERROR, STUCK}


@dataclass(eq=False)
class PooledWorker:
    """One worker as the pool knows it: its URL, what its latest ``/health`` said, and the
    gateway's own assignment (the ticket it serves). The worker's own state machine is
    ``omniserve.worker.state``; this is the gateway's record of it."""
    url: str                         # http(s)://host:port
    index: int
    online: bool = False
    status: str = OFFLINE
    cached_prefix_hashes: frozenset[str] = frozenset()
    ticket: Optional[Ticket] = None  # the gateway's assignment
    busy_since: float = 0.0
    last_used: float = 0.0
    paused: bool = False
    last_health: Optional[float] = None
    failures: int = 0
    status_at: float = 0.0           # when the gateway last learned the status itself (a release, the
                                     # worker's own close): health reports sent before it are stale
    idle_deadline: float = 0.0       # releasing: idle by then, else stuck
    confirm_task: Optional[asyncio.Task] = field(default=None, repr=False)

    @property
    def ws_base(self) -> str:
        return "ws" + self.url[len("http"):]

    @property
    def ready(self) -> bool:
        """Usable now or soon (counted for ETAs)."""
        return self.online and self.status not in NOT_READY

    @property
    def free(self) -> bool:
        """Dispatchable: its own latest health says idle and nobody holds it."""
        return self.online and self.status == IDLE and self.ticket is None


class WorkerPool:
    def __init__(self, urls: list[str], queue: WaitQueue, eta: EtaEstimator,
                 health_interval_s: float = 2.0, health_timeout_s: float = 2.0, *,
                 worker_token: Optional[str] = None, release_idle_timeout_s: float = 20.0) -> None:
        self.queue = queue
        self.eta = eta
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.release_idle_timeout_s = release_idle_timeout_s
        self.headers = bearer(worker_token)     # every request to a worker carries the worker token
        self.workers: list[PooledWorker] = []
        for u in urls:
            self.add(u)
        self._http: Optional[httpx.AsyncClient] = None
        self._task: Optional[asyncio.Task] = None
        queue.layout = self._layout
        queue.estimate = eta.estimate

    # ---------------------------------------------------------------- members
    def add(self, url: str) -> PooledWorker:
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        for w in self.workers:
            if w.url == url:
                return w
        w = PooledWorker(url=url, index=len(self.workers))
        self.workers.append(w)
        return w

    def mark_offline(self, w: PooledWorker, why: str = "") -> None:
        if w.online:
            log.warning("worker %s offline%s", w.url, f": {why}" if why else "")
        w.online, w.status = False, OFFLINE
        self.queue.invalidate()

    # --------------------------------------------------------------- dispatch
    def dispatch(self) -> int:
        """Assign free workers to tickets from the head of the queue. Returns how many."""
        n = 0
        while True:
            t = self.queue.head()
            if t is None:
                return n
            free = [w for w in self.workers if w.free]
            if not free:
                return n
            w = self._choose(t, free)
            w.ticket, w.busy_since, w.paused = t, time.monotonic(), False
            t.worker = w
            self.queue.remove(t)
            n += 1

    def _choose(self, t: Ticket, free: list[PooledWorker]) -> PooledWorker:
        """Chat: longest cached prefix, then a worker with nothing cached, then least recently used."""
        if t.request_type == CHAT.request_type and t.prefix_hashes:
            best, best_k = None, 0
            for w in free:
                k = longest_cached_prefix(t.prefix_hashes, w.cached_prefix_hashes)
                if k > best_k:
                    best, best_k = w, k
            if best is not None:
                return best
        empty = [w for w in free if not w.cached_prefix_hashes]
        return min(empty or free, key=lambda w: w.last_used)

    def release(self, w: PooledWorker, *, success: bool, idle: bool = False) -> None:
        """Called exactly once per assignment, from the relay's cleanup. ``success``: the session
        ended normally (only those feed the ETA average). ``idle``: the worker itself closed the
        session's socket, which it does only once it is idle again (docs/worker.md)."""
        t = w.ticket
        if t is None:
            return
        now = time.monotonic()
        if success:
            self.eta.record(t.request_type, now - w.busy_since)
        w.ticket, w.paused, w.last_used = None, False, now
        if idle and w.online:
            self._set_idle(w)
        else:
            self._await_idle(w)
        self.queue.invalidate()

    def confirm_idle(self, w: PooledWorker, released_at: float) -> None:
        """The worker closed the socket of a session already released (chat after ``done``);
        ``released_at``: that release's ``status_at`` (a later release is not confirmed by it)."""
        if w.online and w.ticket is None and w.status == RELEASING and w.status_at == released_at:
            self._set_idle(w)

    def _set_idle(self, w: PooledWorker) -> None:
        w.status, w.status_at = IDLE, time.monotonic()
        self.queue.invalidate()
        self.dispatch()

    def refused(self, w: PooledWorker, t: Ticket, why: str, *, reachable: bool, requeue: bool = True) -> None:
        """The worker would not take the session it was given (busy, loading, unreachable): the
        ticket goes back to the head of the queue (``requeue``; not when its client already left)
        and the worker waits for its own idle report."""
        if w.ticket is t:
            w.ticket, w.paused = None, False
        log.info("worker %s refused a %s session (%s)%s", w.url, t.request_type, why,
                 ": requeued at the head" if requeue else "")
        if reachable:
            self._await_idle(w)
        else:
            self.mark_offline(w, why)
        t.worker = None
        if requeue:
            self.queue.requeue_front(t)
            self.dispatch()
        else:
            t.cancelled = "client left"

    def _await_idle(self, w: PooledWorker) -> None:
        if not w.online:
            return
        now = time.monotonic()
        w.status, w.status_at, w.idle_deadline = RELEASING, now, now + self.release_idle_timeout_s
        if self._http is not None and (w.confirm_task is None or w.confirm_task.done()):
            w.confirm_task = asyncio.get_running_loop().create_task(self._confirm_idle(w))

    async def _confirm_idle(self, w: PooledWorker) -> None:
        """Poll at once, then with a short backoff, until the worker reports idle (or the bound)."""
        delay = 0.005
        while w.online and w.ticket is None and w.status == RELEASING:
            await self.check(w)
            if w.status != RELEASING or not w.online:
                return
            if time.monotonic() >= w.idle_deadline:
                log.error("worker %s did not report idle within %.0f s of its session's end: stuck",
                          w.url, self.release_idle_timeout_s)
                w.status = STUCK
                self.queue.invalidate()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # ----------------------------------------------------------------- health
    async def check(self, w: PooledWorker) -> None:
        assert self._http is not None
        sent = time.monotonic()
        try:
            r = await self._http.get(w.url + "/health", timeout=self.health_timeout_s, headers=self.headers)
            r.raise_for_status()
            h = r.json()
            reported = str(h.get("worker_status") or h.get("status") or IDLE)
            hashes = frozenset(str(x) for x in (h.get("cached_prefix_hashes") or ()))
        except Exception as e:
            w.failures += 1
            # a worker busy with a heavy session may answer late once: give it a second chance
            if (w.online or w.status != OFFLINE) and (w.ticket is None or w.failures >= 2):
                self.mark_offline(w, type(e).__name__)
            return
        was_free, was_ready = w.free, w.ready
        w.online, w.failures, w.last_health = True, 0, time.monotonic()
        w.cached_prefix_hashes = hashes
        if w.ticket is None and sent < w.status_at:
            pass   # older than what the gateway learned itself: keep the status, take the rest
        elif w.status in (RELEASING, STUCK) and w.ticket is None:
            # only an idle report sent after the release ends the wait
            if reported == IDLE:
                if w.status == STUCK:
                    log.info("worker %s reports idle again", w.url)
                w.status = IDLE
            elif reported in NOT_READY:
                w.status = reported
        else:
            w.status = reported
        if w.ready != was_ready:
            self.queue.invalidate()
            if w.ready:
                log.info("worker %s ready (%s)", w.url, w.status)
        if w.free and not was_free:
            self.dispatch()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(w) for w in list(self.workers)), return_exceptions=True)
            await asyncio.sleep(self.health_interval_s)

    async def start(self) -> None:
        self._http = httpx.AsyncClient(trust_env=False)
        self._task = asyncio.get_running_loop().create_task(self._health_loop(), name="health")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for w in self.workers:
            await cancel_and_wait(w.confirm_task)
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------ ETA / views
    def _layout(self, types: list[str]) -> tuple[list[float], list[float]]:
        now = time.monotonic()
        free_in = []
        for w in self.workers:
            if not w.ready:
                continue
            t = w.ticket
            free_in.append(self.eta.remaining(t.request_type, now - w.busy_since) if t else 0.0)
        return self.eta.lay_out(free_in, types)

    def status(self) -> StatusOut:
        busy = sum(1 for w in self.workers if w.ticket is not None or w.status == RELEASING)
        return StatusOut(total_workers=len(self.workers), idle_workers=sum(1 for w in self.workers if w.free),
                         busy_workers=busy, queue_length=len(self.queue), max_queue_size=self.queue.capacity,
                         running_tasks=busy)

    def worker_views(self) -> list[WorkerOut]:
        now = time.monotonic()
        return [WorkerOut(url=w.url, index=w.index, status=w.status, online=w.online, assigned=w.ticket is not None,
                          request_type=w.ticket.request_type if w.ticket else None,
                          session_id=w.ticket.session_id if w.ticket else None,
                          busy_for_s=round(now - w.busy_since, 1) if w.ticket else None, paused=w.paused,
                          cached_prefix_hashes=len(w.cached_prefix_hashes),
                          last_health_s_ago=round(now - w.last_health, 1) if w.last_health else None)
                for w in self.workers]

    def running(self) -> list[RunningTaskOut]:
        now = time.monotonic()
        return [RunningTaskOut(worker_url=w.url, request_type=w.ticket.request_type, session_id=w.ticket.session_id,
                               elapsed_s=round(now - w.busy_since, 1),
                               estimated_remaining_s=round(self.eta.remaining(w.ticket.request_type, now - w.busy_since), 1))
                for w in self.workers if w.ticket is not None]

    def queue_items(self, reveal_ids: bool, limit: Optional[int] = None) -> list[dict]:
        """Plain dicts shaped like ``QueueItemOut``: a 10,000-entry listing must not stall the loop
        with model validation."""
        items = list(self.queue)
        etas, _ = self._layout([t.request_type for t in items])
        now = time.monotonic()
        if limit is not None:
            items = items[:limit]
        return [{"ticket_id": t.ticket_id if reveal_ids else t.public_id, "request_type": t.request_type,
                 "session_id": t.session_id if reveal_ids else None, "position": i + 1,
                 "estimated_wait_s": round(etas[i], 1), "waited_s": round(now - t.enqueued_at, 1)}
                for i, t in enumerate(items)]
