"""``SharedPool``: slot claims, leases and the worker registry in Redis, for one gateway process.

The ``WorkerPool`` keeps doing what only this process can (poll its workers' ``/health``, relay
its own clients, confirm a release by polling); at the points where state is shared it calls this:

- ``kick()`` instead of a local dispatch: the ``claim`` script pops the global head and claims a free
  slot, atomically, as long as there are both; each assignment is published to the gateway that
  holds the ticket's client (``asg:<gid>``), which connects the relay.
- ``report(worker)`` after each health check: its slots' states, with the epoch read before the
  request, so a report older than a claim or release is ignored. The worker is the source of truth.
- ``release(slot, ticket)`` when a session ends (the slot is busy until an idle report).

Leases: this process renews its lease (``gw:<gid>``) every quarter of ``gateway.lease_s``. Its waiting
tickets and its claims live as long as the lease; when a gateway dies, any other reaps it within a
lease and half a second: its tickets leave the queue, and its slots wait for their workers' idle
reports (the workers see the sockets close). A renewal that finds the lease gone (Redis restarted
without persistence, or this process stalled past its lease) puts its tickets back, in their
order, and its claims.

Registered workers are shared too: a worker registers with whichever gateway a load balancer
picks, and every gateway learns it (``workers`` hash, url -> expiry).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import TYPE_CHECKING, Optional

from ...protocol.modes import IDLE
from ..queue import Ticket, cancel_and_wait
from ..slots import NOT_READY, PooledWorker, Slot
from .link import UNAVAILABLE, Outbox, RedisLink, key
from .scripts import Scripts
from .shared_queue import SharedQueue, affinity

if TYPE_CHECKING:
    from ..pool import WorkerPool

log = logging.getLogger(__name__)

CLAIMS_PER_CALL = 64
CANCEL = "-"                   # on a gateway's channel: "- <ticket id>" cancels a ticket it holds
REAP_EVERY_S = 0.5


class SharedPool:
    def __init__(self, link: RedisLink, scripts: Scripts, outbox: Outbox, pool: "WorkerPool",
                 queue: SharedQueue, lease_s: float) -> None:
        self.link, self.scripts, self.outbox, self.pool, self.queue = link, scripts, outbox, pool, queue
        self.lease_ms = int(lease_s * 1000)
        self._claim_queued = False
        self._restore_queued = False
        self._held = False             # this process has held a lease before
        # ticket -> "slot epoch" of the assignments applied here: a notice told twice is ignored, a new
        # claim of the same slot for the same ticket (after a refusal) is not
        self._recent: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._sent_hashes: dict[str, frozenset[str]] = {}   # worker url -> cached prefixes Redis has from us
        self._tasks: list[asyncio.Task] = []
        queue.pool = self
        pool.shared = self

    # ------------------------------------------------------------- dispatch
    def kick(self) -> None:
        """Run the ``claim`` script soon (once, however often it is asked before it runs)."""
        if not self._claim_queued:
            self._claim_queued = True
            self.outbox.put(self._claim)

    async def _claim(self) -> None:
        self._claim_queued = False
        self.claimed(await self.scripts.call("claim", CLAIMS_PER_CALL))

    def claimed(self, got: list) -> None:
        """Apply what a ``claim`` (or an ``enqueue`` that found a slot free) gave our tickets."""
        for i in range(1, len(got), 4):
            if got[i + 1] == self.link.gateway_id:
                self.assigned(got[i], got[i + 2], str(got[i + 3]))
        if int(got[0]) >= CLAIMS_PER_CALL:
            self.kick()       # more may wait (tickets of dead gateways use up turns too)

    def assigned(self, ticket_id: str, slot_key: str, epoch: str) -> None:
        """Redis gave ``slot_key`` (claim ``epoch``) to one of our tickets: our own claim's answer, or
        another gateway's notice, either possibly twice."""
        tag = f"{slot_key} {epoch}"
        if self._recent.get(ticket_id) == tag:
            return
        t = self.queue.get(ticket_id)
        s = self.pool.slot(slot_key)
        if t is None or not t.waiting:
            # the client left meanwhile: the slot never saw the session and is free again at once
            self.outbox.put(lambda: self.scripts.call("release", slot_key, ticket_id, "1"))
            self.kick()
            return
        if s is None or s.ticket is not None:
            # a slot this process believes busy (a claim restored over ours): the ticket goes back to the head
            log.warning("assigned %s, which this gateway holds busy: requeued", slot_key)
            self.outbox.put(lambda: self.scripts.call("release", slot_key, ticket_id, "0"))
            self.queue.back_to_head(t)
            return
        self._recent[ticket_id] = tag
        if len(self._recent) > 10_000:
            self._recent.popitem(last=False)
        self.pool.assign(s, t)
        self.queue.remove(t)

    async def find_missing(self, tickets: list[Ticket]) -> None:
        """Waiters Redis no longer has: assigned while we missed the notice, or lost (restore)."""
        found = await self.link.client.mget([key("asgd", t.ticket_id) for t in tickets])
        lost = False
        for t, tag in zip(tickets, found):
            if tag:
                slot_key, _, epoch = str(tag).partition(" ")
                self.assigned(t.ticket_id, slot_key, epoch)
            elif t.waiting:
                lost = True
        if lost:
            log.warning("waiting clients missing from the shared queue: putting them back")
            self.restore()

    # ---------------------------------------------------------------- slots
    async def epochs(self, w: PooledWorker) -> Optional[list[str]]:
        """Each slot's epoch, read before a health request (None: Redis unreachable). A read that
        overtakes this process's own release still in the outbox only makes that report ignored;
        the release's own confirmation is reported as learned directly (``pool.check``)."""
        try:
            return [str(e) for e in await self.scripts.call("epochs", *(s.key for s in w.slots))]
        except UNAVAILABLE as e:
            self.link.failed(e)
            return None

    def report(self, w: PooledWorker, epochs: Optional[list[str]], only: Optional[Slot] = None) -> None:
        """What this process just learned of ``w``'s slots (``epochs``: read before the health request;
        None: learned directly — ``only`` that slot, e.g. the worker closed its session itself — or
        the worker is offline). Reports of one worker waiting in the outbox are merged: the newest wins."""
        slots = [only] if only is not None else w.slots
        hashes = w.cached_prefix_hashes
        url = w.url
        args: list = [url, len(slots), ""]
        for s in slots:
            seen = epochs[s.index] if epochs is not None and s.index < len(epochs) else ""
            args += [s.index, seen, _state(s)]

        async def op() -> None:
            args[2] = "=" if self._sent_hashes.get(url) == hashes else " ".join(sorted(hashes))
            freed = await self.scripts.call("report", *args)
            self._sent_hashes[url] = hashes
            if freed:
                self.kick()
        self.outbox.put(op, merge=f"report {url} {only.index if only is not None else '*'}")

    def release(self, s: Slot, t: Ticket) -> None:
        sk, tid = s.key, t.ticket_id
        self.outbox.put(lambda: self.scripts.call("release", sk, tid, "0"))

    def forget(self, w: PooledWorker) -> None:
        """A worker forgotten for want of heartbeats leaves the shared state too."""
        url, n = w.url, len(w.slots)
        self._sent_hashes.pop(url, None)
        self.outbox.put(lambda: self.scripts.call("forget", url, n))

    # ---------------------------------------------------------------- leases
    def restore(self) -> None:
        """Put back this process's waiters and claims (in order with its other writes)."""
        if not self._restore_queued:
            self._restore_queued = True
            self.outbox.put(self._restore)

    async def _restore(self) -> None:
        self._restore_queued = False
        self._sent_hashes.clear()
        tickets = sorted(self.queue.restorable(), key=lambda t: t.seq)
        args: list = [self.link.gateway_id, self.lease_ms, len(tickets)]
        for t in tickets:
            args += [t.ticket_id, t.request_type, affinity(t), t.seq]
        for w in self.pool.workers:
            for s in w.slots:
                if s.ticket is not None:
                    args += [s.key, s.ticket.ticket_id, s.ticket.request_type]
        await self.scripts.call("restore", *args)
        for w in self.pool.workers:
            self.report(w, None)
        self.kick()

    async def _renew(self) -> None:
        held = await self.scripts.call("renew", self.link.gateway_id, self.lease_ms)
        self.link.ok()
        if not held and self._held:
            log.warning("this gateway's lease had lapsed (Redis restarted, or this process stalled): "
                        "restoring %d waiting clients and its sessions", len(self.queue.waiting()))
            self.restore()
        self._held = True

    async def _renew_loop(self) -> None:
        while True:
            try:
                await self._renew()
            except UNAVAILABLE as e:
                self.link.failed(e)
            await asyncio.sleep(self.lease_ms / 4000)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S * (0.5 + random.random()))
            try:
                if await self.scripts.call("reap"):
                    log.warning("a gateway's lease lapsed: its waiting clients left the queue")
                    self.kick()
            except UNAVAILABLE:
                pass

    async def _listen(self) -> None:
        """Assignments for our tickets made by other gateways."""
        channel = key("asg", self.link.gateway_id)
        while True:
            pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.queue.invalidate()   # a view finds whatever was assigned while we were not listening
                while True:
                    m = await pubsub.get_message(timeout=1.0)
                    data = m.get("data") if m is not None else None
                    if isinstance(data, str):
                        parts = data.split(" ")
                        if parts[0] == CANCEL and len(parts) == 2:
                            self._cancelled_here(parts[1])
                        elif len(parts) == 3:
                            self.assigned(*parts)
            except UNAVAILABLE as e:
                self.link.failed(e)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    # ------------------------------------------------- tickets held elsewhere
    async def lookup(self, ticket_id: str) -> Optional[tuple[str, str, int]]:
        """(request type, owner gateway, 0-based rank) of a ticket any process holds, or None."""
        c = self.link.client
        ty, gw = await c.hmget(key("tk", ticket_id), ["type", "gw"])
        rank = await c.zrank(key("q"), ticket_id)
        if ty is None or gw is None or rank is None:
            return None
        return str(ty), str(gw), int(str(rank))

    async def cancel(self, ticket_id: str) -> bool:
        """``DELETE /api/queue/{ticket_id}`` answered by a process that does not hold the client:
        tell the one that does (its socket is there)."""
        found = await self.lookup(ticket_id)
        if found is None:
            return False
        await self.link.client.publish(key("asg", found[1]), f"{CANCEL} {ticket_id}")
        return True

    def _cancelled_here(self, ticket_id: str) -> None:
        t = self.queue.get(ticket_id)
        if t is not None and t.waiting:
            self.queue.remove(t, "cancelled")

    # -------------------------------------------------------------- workers
    async def register(self, url: str, ttl_s: float) -> None:
        """A worker's registration or heartbeat, for every gateway."""
        await self.link.client.hset(key("workers"), url, int((time.time() + ttl_s) * 1000))

    async def _members_loop(self, every_s: float) -> None:
        """Learn the workers that registered with other gateways; forget the expired ones."""
        while True:
            try:
                members = await self.link.client.hgetall(key("workers"))
                now = time.time()
                for url, until in members.items():
                    url = str(url)
                    left = int(until) / 1000 - now
                    if left > 0:
                        self.pool.add(url, ttl_s=left)
                    else:
                        await self.link.client.hdel(key("workers"), url)
                        w = self.pool.find(url)
                        if w is not None and not w.assigned:
                            self.forget(w)
            except UNAVAILABLE as e:
                self.link.failed(e)
            await asyncio.sleep(every_s)

    # ------------------------------------------------------------ lifecycle
    async def start(self, health_interval_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.outbox.start()
        try:       # hold a lease before the first client arrives (a claim drops the tickets of lease-less gateways)
            await self._renew()
        except UNAVAILABLE as e:
            self.link.failed(e)
        self._tasks = [loop.create_task(self._renew_loop(), name="lease"),
                       loop.create_task(self._reap_loop(), name="reaper"),
                       loop.create_task(self._listen(), name="assignments"),
                       loop.create_task(self._members_loop(health_interval_s), name="members")]

    async def stop(self) -> None:
        for t in self._tasks:
            await cancel_and_wait(t)
        await self.outbox.stop()
        try:   # leave at once instead of waiting for the lease: our waiters go, our slots are released
            await self.link.client.delete(key("gw", self.link.gateway_id))
            await self.scripts.call("reap")
        except UNAVAILABLE:
            pass


def _state(s: Slot) -> str:
    if s.status == IDLE and s.ticket is None and s.worker.online:
        return "free"
    if not s.worker.online or s.status in NOT_READY:
        return "down"
    return "busy"
