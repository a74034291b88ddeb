"""WorkerPool: which workers exist, whether they are healthy, and which slot serves which ticket.

There is exactly one dispatch point, ``dispatch()``: it is called whenever a ticket arrives, a
slot is confirmed idle, or a worker comes back, and it always serves the head of the FIFO queue
first (a newcomer never jumps the queue). With shared state (``gateway.redis_url``) the same call
asks Redis to do it atomically across every gateway (``state/shared_pool.py``).

The worker is the source of truth for its own state: a ticket goes only to a slot whose worker's
latest ``/health`` says it is ``idle``. A slot is *assigned* from dispatch until the relay's cleanup
calls ``release()``. If the worker itself closed the session's socket the slot is idle at once (it
closes only after its cleanup); otherwise it is ``releasing`` — not dispatchable — and its worker is
polled at once, and again with a short backoff, until a health report sent after the release says
the slot is idle. A slot that does not get there within ``release_idle_timeout_s`` is ``stuck`` (the
launcher restarts the worker; the slot becomes usable again by itself if it does report idle later). A
worker that refuses a session it was given (busy, unreachable) gets the ticket back at the head of the
queue (``refused``), so no client ever sees "Worker busy" while the queue could still serve it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Optional, Protocol

import httpx
from pydantic import ValidationError

from ..protocol.affinity import longest_cached_prefix
from ..protocol.modes import CHAT, IDLE
from ..protocol.rest import RunningTaskOut, StatusOut, WorkerOut
from ..protocol.worker import WorkerHealth
from ..tokens import bearer
from .eta import EtaEstimator
from .queue import Ticket, WaitQueue, cancel_and_wait
from .slots import NOT_READY, OFFLINE, RELEASING, STUCK, PooledWorker, Slot

if TYPE_CHECKING:
    from .state.shared_queue import SharedQueue


class SharedSlots(Protocol):
    """What the pool asks of the shared state (``state/shared_pool.SharedPool``)."""
    queue: "SharedQueue"

    def kick(self) -> None: ...
    def report(self, w: PooledWorker, epochs: Optional[list[str]], only: Optional[Slot] = None) -> None: ...
    def release(self, s: Slot, t: Ticket) -> None: ...
    async def epochs(self, w: PooledWorker) -> Optional[list[str]]: ...
    def forget(self, w: PooledWorker) -> None: ...

log = logging.getLogger(__name__)

__all__ = ["OFFLINE", "RELEASING", "STUCK", "NOT_READY", "PooledWorker", "Slot", "WorkerPool"]


class WorkerPool:
    def __init__(self, urls: list[str], queue: "WaitQueue | SharedQueue", eta: EtaEstimator,
                 health_interval_s: float = 2.0, health_timeout_s: float = 2.0, *,
                 worker_token: Optional[str] = None, release_idle_timeout_s: float = 20.0) -> None:
        self.queue = queue
        self.eta = eta
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.release_idle_timeout_s = release_idle_timeout_s
        self.headers = bearer(worker_token)     # every request to a worker carries the worker token
        self.workers: list[PooledWorker] = []
        self.shared: Optional[SharedSlots] = None   # set when the state lives in Redis
        self._next_index = 0
        for u in urls:
            self.add(u)
        self._http: Optional[httpx.AsyncClient] = None
        self._task: Optional[asyncio.Task] = None
        queue.layout = self._layout
        queue.estimate = eta.estimate

    # ---------------------------------------------------------------- members
    def add(self, url: str, ttl_s: Optional[float] = None) -> PooledWorker:
        """A worker from the command line (never forgotten) or a registration (``ttl_s``: forgotten
        that long after its last heartbeat, once it serves nothing)."""
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        for w in self.workers:
            if w.url == url:
                if ttl_s is not None and w.expires_at is not None:
                    w.expires_at = time.monotonic() + ttl_s
                return w
        w = PooledWorker(url=url, index=self._next_index)
        self._next_index = w.index + 1
        if ttl_s is not None:
            w.expires_at = time.monotonic() + ttl_s
        self.workers.append(w)
        return w

    def find(self, url: str) -> Optional[PooledWorker]:
        return next((w for w in self.workers if w.url == url), None)

    def slot(self, key: str) -> Optional[Slot]:
        """The slot named ``<url>#<index>`` (Redis names slots so)."""
        url, _, i = key.rpartition("#")
        w = self.find(url) or (self.add(url, ttl_s=60.0) if url else None)
        if w is None or not i.isdigit():
            return None
        w.resize(max(len(w.slots), int(i) + 1))
        return w.slots[int(i)]

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            if w.expires_at is not None and now > w.expires_at and not w.assigned:
                log.warning("worker %s: no heartbeat, forgotten", w.url)
                self.workers.remove(w)
                if self.shared is not None:
                    self.shared.forget(w)
                self.queue.invalidate()

    def mark_offline(self, w: PooledWorker, why: str = "") -> None:
        if w.online:
            log.warning("worker %s offline%s", w.url, f": {why}" if why else "")
        w.online = False
        for s in w.slots:
            s.status = OFFLINE
        self.queue.invalidate()
        if self.shared is not None:
            self.shared.report(w, None)

    def free_slots(self) -> list[Slot]:
        return [s for w in self.workers for s in w.slots if s.free]

    # --------------------------------------------------------------- dispatch
    def dispatch(self) -> int:
        """Assign free slots to tickets from the head of the queue. Returns how many (here)."""
        if self.shared is not None:
            self.shared.kick()
            return 0
        n = 0
        while True:
            t = self.queue.head()
            if t is None:
                return n
            free = self.free_slots()
            if not free:
                return n
            self.assign(self._choose(t, free), t)
            self.queue.remove(t)
            n += 1

    def assign(self, s: Slot, t: Ticket) -> None:
        s.ticket, s.busy_since, s.paused = t, time.monotonic(), False
        t.worker = s

    def _choose(self, t: Ticket, free: list[Slot]) -> Slot:
        """Chat: longest cached prefix, then a worker with nothing cached, then least recently used."""
        if t.request_type == CHAT.request_type and t.prefix_hashes:
            best, best_k = None, 0
            for s in free:
                k = longest_cached_prefix(t.prefix_hashes, s.worker.cached_prefix_hashes)
                if k > best_k:
                    best, best_k = s, k
            if best is not None:
                return best
        empty = [s for s in free if not s.worker.cached_prefix_hashes]
        return min(empty or free, key=lambda s: s.last_used)

    def release(self, s: Slot, *, success: bool, idle: bool = False) -> None:
        """Called exactly once per assignment, from the relay's cleanup. ``success``: the session
        ended normally (only those feed the ETA average). ``idle``: the worker itself closed the
        session's socket, which it does only once it is idle again (docs/worker.md)."""
        t = s.ticket
        if t is None:
            return
        now = time.monotonic()
        if success:
            self.eta.record(t.request_type, now - s.busy_since)
        s.ticket, s.paused, s.last_used = None, False, now
        if self.shared is not None:
            self.shared.release(s, t)
        if idle and s.worker.online:
            self._set_idle(s)
        else:
            self._await_idle(s)
        self.queue.invalidate()

    def confirm_idle(self, s: Slot, released_at: float) -> None:
        """The worker closed the socket of a session already released (chat after ``done``);
        ``released_at``: that release's ``status_at`` (a later release is not confirmed by it)."""
        if s.worker.online and s.ticket is None and s.status == RELEASING and s.status_at == released_at:
            self._set_idle(s)

    def _set_idle(self, s: Slot) -> None:
        s.status, s.status_at = IDLE, time.monotonic()
        self.queue.invalidate()
        if self.shared is not None:
            self.shared.report(s.worker, None, only=s)
        self.dispatch()

    def refused(self, s: Slot, t: Ticket, why: str, *, reachable: bool, requeue: bool = True) -> None:
        """The worker would not take the session it was given (busy, loading, unreachable): the
        ticket goes back to the head of the queue (``requeue``; not when its client already left)
        and the slot waits for its worker's own idle report."""
        if s.ticket is t:
            s.ticket, s.paused = None, False
        log.info("worker %s slot %d refused a %s session (%s)%s", s.url, s.index, t.request_type, why,
                 ": requeued at the head" if requeue else "")
        t.worker = None
        if self.shared is not None:
            self.shared.release(s, t)
        if reachable:
            self._await_idle(s)
        else:
            self.mark_offline(s.worker, why)
        if requeue:
            self.queue.requeue_front(t)
            self.dispatch()
        else:
            t.cancelled = "client left"

    def _await_idle(self, s: Slot) -> None:
        if not s.worker.online:
            return
        now = time.monotonic()
        s.status, s.status_at, s.idle_deadline = RELEASING, now, now + self.release_idle_timeout_s
        if self._http is not None and (s.confirm_task is None or s.confirm_task.done()):
            s.confirm_task = asyncio.get_running_loop().create_task(self._confirm_idle(s))

    async def _confirm_idle(self, s: Slot) -> None:
        """Poll at once, then with a short backoff, until the worker reports the slot idle (or the bound)."""
        delay = 0.005
        while s.worker.online and s.ticket is None and s.status == RELEASING:
            await self.check(s.worker)
            if s.status != RELEASING or not s.worker.online:
                return
            if time.monotonic() >= s.idle_deadline:
                log.error("worker %s slot %d did not report idle within %.0f s of its session's end: stuck",
                          s.url, s.index, self.release_idle_timeout_s)
                s.status = STUCK
                self.queue.invalidate()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # ----------------------------------------------------------------- health
    async def check(self, w: PooledWorker) -> None:
        assert self._http is not None
        seen = await self.shared.epochs(w) if self.shared is not None else None   # before the request
        sent = time.monotonic()
        try:
            r = await self._http.get(w.url + "/health", timeout=self.health_timeout_s, headers=self.headers)
            r.raise_for_status()
            h = WorkerHealth.model_validate_json(r.content)
        except (httpx.HTTPError, ValidationError, OSError, ValueError) as e:
            w.failures += 1
            # a worker busy with a heavy session may answer late once: give it a second chance
            if (w.online or any(s.status != OFFLINE for s in w.slots)) and (not w.assigned or w.failures >= 2):
                self.mark_offline(w, type(e).__name__)
            return
        was_free = [s for s in w.slots if s.free]
        releasing = [s for s in w.slots if s.status in (RELEASING, STUCK) and s.ticket is None]
        was_ready = w.ready
        w.online, w.failures, w.last_health = True, 0, time.monotonic()
        w.cached_prefix_hashes = frozenset(h.cached_prefix_hashes)
        w.backend = h.backend
        w.resize(h.slots_total)
        for s in w.slots:
            self._apply(s, h.slot_status(s.index).value, sent)
        if w.ready != was_ready:
            self.queue.invalidate()
            if w.ready:
                log.info("worker %s ready (%s, %d slot%s)", w.url, w.status, len(w.slots), "s"[:len(w.slots) > 1])
        if self.shared is not None:
            if seen is not None:
                self.shared.report(w, seen)
            for s in releasing:    # our own release, confirmed by a report sent after it: no epoch needed
                if s.status == IDLE:
                    self.shared.report(w, None, only=s)
        elif any(s.free and s not in was_free for s in w.slots):
            self.dispatch()

    def _apply(self, s: Slot, reported: str, sent: float) -> None:
        """One slot's status from a health report sent at ``sent``."""
        if s.ticket is None and sent < s.status_at:
            return   # older than what the gateway learned itself: keep the status
        if s.status in (RELEASING, STUCK) and s.ticket is None:
            # only an idle report sent after the release ends the wait
            if reported == IDLE:
                if s.status == STUCK:
                    log.info("worker %s slot %d reports idle again", s.url, s.index)
                s.status = IDLE
            elif reported in NOT_READY:
                s.status = reported
        else:
            s.status = reported

    async def _health_loop(self) -> None:
        while True:
            self._forget_expired()
            await asyncio.gather(*(self.check(w) for w in list(self.workers)), return_exceptions=True)
            await asyncio.sleep(self.health_interval_s)

    async def start(self) -> None:
        self._http = httpx.AsyncClient(trust_env=False)
        self._task = asyncio.get_running_loop().create_task(self._health_loop(), name="health")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for w in self.workers:
            for s in w.slots:
                await cancel_and_wait(s.confirm_task)
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------ ETA / views
    def _layout(self, types: list[str]) -> tuple[list[float], list[float]]:
        now = time.monotonic()
        free_in = []
        for w in self.workers:
            for s in w.slots:
                if not s.ready:
                    continue
                t = s.ticket
                free_in.append(self.eta.remaining(t.request_type, now - s.busy_since) if t else 0.0)
        return self.eta.lay_out(free_in, types)

    def status(self) -> StatusOut:
        slots = [s for w in self.workers for s in w.slots]
        busy = sum(1 for s in slots if s.ticket is not None or s.status == RELEASING)
        if self.shared is not None:      # every gateway's sessions: the slots' states in Redis
            states = self.shared.queue.slot_states
            claimed = states.get("claimed", 0)
            return StatusOut(total_workers=len(self.workers), idle_workers=sum(1 for w in self.workers if w.has_free),
                             busy_workers=sum(1 for w in self.workers if w.status != IDLE and w.ready),
                             queue_length=len(self.queue), max_queue_size=self.queue.capacity,
                             running_tasks=claimed, total_slots=sum(states.values()), free_slots=states.get("free", 0))
        return StatusOut(total_workers=len(self.workers), idle_workers=sum(1 for w in self.workers if w.has_free),
                         busy_workers=sum(1 for w in self.workers if w.assigned or any(s.status == RELEASING for s in w.slots)),
                         queue_length=len(self.queue), max_queue_size=self.queue.capacity, running_tasks=busy,
                         total_slots=len(slots), free_slots=sum(1 for s in slots if s.free))

    def worker_views(self) -> list[WorkerOut]:
        now = time.monotonic()
        out = []
        for w in self.workers:
            held = w.assigned
            first = held[0] if held else None
            out.append(WorkerOut(
                url=w.url, index=w.index, status=w.status, online=w.online, assigned=first is not None,
                request_type=first.ticket.request_type if first and first.ticket else None,
                session_id=first.ticket.session_id if first and first.ticket else None,
                busy_for_s=round(now - first.busy_since, 1) if first else None,
                paused=bool(held) and all(s.paused for s in held),
                cached_prefix_hashes=len(w.cached_prefix_hashes),
                last_health_s_ago=round(now - w.last_health, 1) if w.last_health else None,
                slots_total=len(w.slots), slots_free=sum(1 for s in w.slots if s.free),
                slots=[s.status for s in w.slots], backend=w.backend or None,
                registered=w.expires_at is not None))
        return out

    def running(self) -> list[RunningTaskOut]:
        now = time.monotonic()
        return [RunningTaskOut(worker_url=s.url, request_type=s.ticket.request_type, session_id=s.ticket.session_id,
                               elapsed_s=round(now - s.busy_since, 1),
                               estimated_remaining_s=round(self.eta.remaining(s.ticket.request_type, now - s.busy_since), 1),
                               slot=s.index)
                for w in self.workers for s in w.slots if s.ticket is not None]

    def queue_items(self, reveal_ids: bool, limit: Optional[int] = None) -> list[dict]:
        """Plain dicts shaped like ``QueueItemOut``: a 10,000-entry listing must not stall the loop
        with model validation. In process only (shared state: ``state.shared_listing``)."""
        items = list(self.queue)
        positions = list(range(1, len(items) + 1))
        etas, _ = self._layout([t.request_type for t in items])
        now = time.monotonic()
        if limit is not None:
            items = items[:limit]
        return [{"ticket_id": t.ticket_id if reveal_ids else t.public_id, "request_type": t.request_type,
                 "session_id": t.session_id if reveal_ids else None, "position": positions[i],
                 "estimated_wait_s": round(etas[i], 1), "waited_s": round(now - t.enqueued_at, 1)}
                for i, t in enumerate(items)]
