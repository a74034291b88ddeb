"""``SharedQueue``: the FIFO in Redis, seen from one gateway process (``gateway.redis_url``).

Redis holds the one global order (a sorted set; ``scripts.lua``). This process holds only its own
waiters — their sockets, their ``Ticket`` objects — and answers ``ws.py`` and the pool exactly like
the in-process ``WaitQueue``. Positions come from ranks: a broadcaster asks Redis, in one round
trip per tick (``view``), for the rank of each of its waiters, the queue's length and mix and the
slots' states, then wakes the waiters whose position moved, whose ETA changed by a second, or who
are due their periodic update (the protocol promises one every 3 s). Nothing is recomputed per
event. A gateway knows the request types only of its own waiters, so the ETA lays the queue out
with the mean estimate of the queue's mix (Redis counts waiters per type).

A waiter missing from Redis was either assigned while this process missed the notice (it finds
the assignment, kept a minute) or lost — Redis restarted without persistence, or this process
stalled past its lease and was reaped — and then the pool puts its tickets back in their order.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import Callable, Iterator, Optional, Protocol

from ..eta import EtaEstimator
from ..queue import Broadcasting, QueueFull, Ticket
from .link import UNAVAILABLE, Outbox, RedisLink, StateUnavailable
from .scripts import Scripts



class SlotClaims(Protocol):
    """What the queue asks of ``shared_pool.SharedPool``."""
    async def find_missing(self, tickets: list[Ticket]) -> None: ...
    def kick(self) -> None: ...
    def claimed(self, got: list) -> None: ...

log = logging.getLogger(__name__)

HASHES_SENT = 256          # chat affinity: the newest links of a history's hash chain that Redis compares


def affinity(ticket: Ticket) -> str:
    """A chat ticket's prefix hashes as the scripts take them (space-separated, the newest ``HASHES_SENT``)."""
    return " ".join(ticket.prefix_hashes[-HASHES_SENT:])


class SharedQueue(Broadcasting):
    def __init__(self, link: RedisLink, scripts: Scripts, outbox: Outbox, eta: EtaEstimator, capacity: int,
                 interval_s: float = 2.0, min_gap_s: float = 0.1) -> None:
        self.link, self.scripts, self.outbox, self.eta = link, scripts, outbox, eta
        self.capacity = capacity
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self._items: dict[str, Ticket] = {}
        # an enqueue or a requeue Redis has not yet answered: a view may not see it, and it is not lost
        self._in_flight: set[str] = set()
        self._changed = asyncio.Event()
        self.length = 0                            # the global queue length, as of the last view
        self.slot_states: dict[str, int] = {}      # slots by state, as of the last view
        self.pool: Optional[SlotClaims] = None     # the SharedPool
        self._qver = -1                            # the queue's version at the last ranking
        self._ranked_at = 0.0
        # the pool sets these on every queue; the shared queue lays its ETAs out itself
        self.layout: Callable[[list[str]], tuple[list[float], list[float]]] = lambda types: ([0.0] * len(types), [0.0])
        self.estimate: Callable[[str], float] = eta.estimate
        self._free_in: list[float] = [0.0]
        self._mean = 0.0
        self._laid: list[float] = []
        self._heap: list[float] = [0.0]

    # ------------------------------------------------------------------ order
    def __len__(self) -> int:
        return max(self.length, len(self._items))

    def __iter__(self) -> Iterator[Ticket]:
        return iter(sorted(self._items.values(), key=lambda t: t.position))

    def get(self, ticket_id: str) -> Optional[Ticket]:
        return self._items.get(ticket_id)

    def head(self) -> Optional[Ticket]:
        return None      # the head is Redis's: dispatch is the ``claim`` script

    async def enqueue(self, ticket: Ticket) -> Ticket:
        """Append at the global tail. Raises QueueFull, or StateUnavailable when Redis cannot be reached."""
        # held here before Redis has it: the notice of its assignment may arrive before this call returns
        self._items[ticket.ticket_id] = ticket
        self._in_flight.add(ticket.ticket_id)
        try:
            got = await self.scripts.call("enqueue", ticket.ticket_id, ticket.request_type, self.link.gateway_id,
                                          affinity(ticket), self.capacity)
        except UNAVAILABLE as e:
            self._items.pop(ticket.ticket_id, None)
            self.link.failed(e)
            raise StateUnavailable() from None
        except BaseException:
            self._items.pop(ticket.ticket_id, None)
            raise
        finally:
            self._in_flight.discard(ticket.ticket_id)
        self.link.ok()
        if got == -1:
            self._items.pop(ticket.ticket_id, None)
            raise QueueFull(self.capacity)
        rank, self.length, ticket.seq = int(got[0]), int(got[1]), int(got[2])
        ticket.position, ticket.queue_length = rank + 1, self.length
        ticket.estimated_wait_s = self.eta_at(rank)
        if self.pool is not None and len(got[3]) > 1:
            self.pool.claimed(got[3])      # served at once (and whoever else the free slots took)
        return ticket

    def requeue_front(self, ticket: Ticket) -> None:
        """Back at the global head (its worker refused it): it keeps its turn."""
        if ticket.ticket_id in self._items:
            return
        self._items[ticket.ticket_id] = ticket
        self.back_to_head(ticket)

    def back_to_head(self, ticket: Ticket) -> None:
        """Put one of our waiters back at the global head, in Redis."""
        self._in_flight.add(ticket.ticket_id)
        ticket.position = 1

        async def op() -> None:
            try:
                seq = await self.scripts.call("requeue_front", ticket.ticket_id, ticket.request_type,
                                              self.link.gateway_id, affinity(ticket))
            except UNAVAILABLE:
                raise                          # the outbox retries it: still in flight
            except BaseException:
                self._in_flight.discard(ticket.ticket_id)   # dropped: a view may find it lost
                raise
            self._in_flight.discard(ticket.ticket_id)
            if seq:
                ticket.seq = int(seq)
        self.outbox.put(op)
        self._changed.set()

    def remove(self, ticket: Ticket, reason: Optional[str] = None) -> bool:
        """Take a ticket out here (assigned, cancelled or gone) and, unless it was assigned, in Redis."""
        if self._items.pop(ticket.ticket_id, None) is None:
            return False
        if ticket.worker is None:
            if reason is not None:
                ticket.cancelled = reason
            tid = ticket.ticket_id

            async def op() -> None:
                if await self.scripts.call("remove", tid) == 2 and self.pool is not None:
                    self.pool.kick()     # it had just been given a slot, free again now
            self.outbox.put(op)
        self._changed.set()
        ticket.event.set()
        return True

    def invalidate(self) -> None:
        self._changed.set()

    def waiting(self) -> list[Ticket]:
        return [t for t in self._items.values() if t.waiting]

    def restorable(self) -> list[Ticket]:
        """Waiters to put back after Redis lost them: those Redis had given an order (``seq``). One whose
        own enqueue is still in flight has none yet; that call puts it in place itself (put back now,
        with no order, it would go to the head)."""
        return [t for t in self._items.values() if t.waiting and t.seq]

    # -------------------------------------------------------------- positions
    def eta_at(self, rank: int) -> float:
        """The wait at 0-based position ``rank``: the queue laid onto the slots' free-times with the
        mean estimate of the queue's mix (exact when one type waits). The layout is extended only as
        far as asked, and kept until the next view, so enqueueing stays O(log slots) a client."""
        etas, heap = self._laid, self._heap
        while len(etas) <= rank:
            start = heapq.heappop(heap)
            etas.append(start)
            heapq.heappush(heap, start + self._mean)
        return etas[rank]

    def _relay_out(self) -> None:
        self._laid = []
        self._heap = list(self._free_in)
        heapq.heapify(self._heap)

    async def refresh(self, everyone: bool = False) -> int:
        """One round trip for the ranks of this process's waiters, then wake whom it concerns. Ranks
        move only when someone leaves the queue or is put back at its head (``qver``): other ticks ask
        only for the length, the mix and the slots, except every quarter ``interval`` (the waiters due
        their periodic update before the next ranking get it now)."""
        now = time.monotonic()
        if not everyone and now - self._ranked_at < self.interval_s / 4:
            length, qver, now_ms, _, types, slots = await self.scripts.call("view")
            self.link.ok()
            self.length = int(length)
            self._learn(now_ms, types, slots)
            if int(qver) == self._qver:
                return 0
        # only waiters Redis has answered for: a view may run before a write still in flight, which
        # would then look lost (judged from this moment: the write's answer may be read before the view's)
        items = [t for t in self._items.values() if t.ticket_id not in self._in_flight]
        length, qver, now_ms, ranks, types, slots = await self.scripts.call("view", *(t.ticket_id for t in items))
        self.link.ok()
        self._qver, self._ranked_at = int(qver), now
        self.length = int(length)
        self._learn(now_ms, types, slots)
        missing: list[Ticket] = []
        top = max((int(r) for r in ranks), default=-1)
        self._relay_out()
        if top >= 0:
            self.eta_at(top)
        etas = self._laid
        now = time.monotonic()
        due = now - self.interval_s + self.interval_s / 4    # due before the next ranking: sent now
        woken = 0
        for t, r in zip(items, ranks):
            r = int(r)
            if r < 0:
                if t.waiting:
                    missing.append(t)
                continue
            eta = round(etas[r], 1)
            if everyone or t.last_update <= due or t.position != r + 1 or abs(t.estimated_wait_s - eta) >= 1.0:
                t.update_seq += 1
                t.last_update = now
                t.event.set()
                woken += 1
            t.position, t.estimated_wait_s, t.queue_length = r + 1, eta, self.length
        if missing and self.pool is not None:
            await self.pool.find_missing(missing)
        return woken

    def _learn(self, now_ms: int, types: list, slots: list) -> None:
        """Free-times of the usable slots and the mean estimate of the queue's mix, for the ETAs."""
        free_in: list[float] = []
        states: dict[str, int] = {}
        for i in range(0, len(slots), 3):
            state, rtype, since = slots[i], slots[i + 1], int(slots[i + 2] or 0)
            states[state] = states.get(state, 0) + 1
            if state == "claimed" and rtype:
                free_in.append(self.eta.remaining(rtype, max(0.0, (int(now_ms) - since) / 1000)))
            elif state in ("free", "busy"):
                free_in.append(0.0)
        self.slot_states = states
        self._free_in = free_in or [0.0]
        total = weighted = 0.0
        for i in range(0, len(types), 2):
            n = max(0, int(types[i + 1]))
            total += n
            weighted += n * self.eta.estimate(types[i])
        self._mean = weighted / total if total else 0.0

    async def one_pass(self) -> None:
        """The broadcaster's pass (``queue.Broadcasting``): a view every tick, also with no waiter of
        ours (``/status`` shows the global queue)."""
        try:
            await self.refresh()
        except UNAVAILABLE as e:
            self.link.failed(e)
            await asyncio.sleep(0.5)
