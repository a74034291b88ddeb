"""One FIFO queue for every request type, with contiguous 1-based positions and ETAs.

A waiting client's handler owns a ``Ticket`` and sleeps on its event; the queue wakes it when its
position/ETA changed (``update``), when it is due its periodic update (``interval`` after the last
one: the protocol promises one every 3 s), or when a worker was assigned (``worker``). Positions
are computed in one O(n) pass by a single broadcaster task every tick (``interval``/8, sooner after
a change, never busier than ~20% of the time) — never per event, so enqueueing 10,000 clients
stays O(1) each. A newcomer's first position is simply the queue length,
and its ETA comes from the tail of the last layout (``_Tail``), so ``queued`` is also O(log w).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Optional

log = logging.getLogger(__name__)


class QueueFull(Exception):
    def __init__(self, capacity: int) -> None:
        super().__init__(f"Queue full ({capacity} requests)")



async def cancel_and_wait(task: Optional[asyncio.Task]) -> None:
    """Cancel a background task and wait until it has finished; its outcome is not wanted."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


async def broadcast_forever(one_pass: Callable[[], Awaitable[None]], changed: asyncio.Event, interval_s: float,
                            min_gap_s: float) -> None:
    """A queue's broadcaster: a pass every ``tick`` (``interval``/8, sooner after a change), never
    busier than ~20% of the time.

    Each waiter is due ``interval`` after its last update, so the periodic updates of a big queue
    are spread over the ticks instead of 10,000 sends at once."""
    tick = max(0.05, interval_s / 8)
    while True:
        try:
            await asyncio.wait_for(changed.wait(), timeout=tick)
        except asyncio.TimeoutError:
            pass
        changed.clear()
        t0 = time.monotonic()
        try:
            await one_pass()
        except Exception:  # never let the broadcaster die
            log.exception("queue refresh failed")
        spent = time.monotonic() - t0
        # ~20% duty at most, but never so long that a waiter misses its 3 s (a GC pause inside
        # a pass must not turn into seconds of silence)
        await asyncio.sleep(min(max(min_gap_s, 4 * spent), tick))


class Broadcasting:
    """What both queues (``WaitQueue``, ``state.shared_queue.SharedQueue``) share: their broadcaster
    task, ``broadcast_forever`` over the queue's own ``one_pass``."""
    _changed: asyncio.Event
    interval_s: float
    min_gap_s: float
    _task: Optional[asyncio.Task] = None

    async def one_pass(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                broadcast_forever(self.one_pass, self._changed, self.interval_s, self.min_gap_s),
                name="queue-broadcaster")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def public_id(ticket_id: str) -> str:
    """A ticket's name in listings for non-admins: derived from the secret id, useless to cancel it."""
    return "pub_" + hashlib.sha256(ticket_id.encode()).hexdigest()[:12]


@dataclass(eq=False)
class Ticket:
    """One waiting request. ``ticket_id`` is a secret: knowing it lets its holder cancel it."""

    request_type: str
    session_id: Optional[str] = None
    prefix_hashes: list[str] = field(default_factory=list)      # chat affinity
    ticket_id: str = field(default_factory=lambda: "tk_" + secrets.token_urlsafe(16))
    enqueued_at: float = field(default_factory=time.monotonic)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    position: int = 0
    estimated_wait_s: float = 0.0
    queue_length: int = 0
    worker: Any = None              # the pool's Slot once assigned
    cancelled: Optional[str] = None  # reason, once removed without a worker
    update_seq: int = 0             # bumped by every broadcast that touched this ticket
    seq: int = 0                    # its order in the shared (Redis) queue
    last_update: float = field(default_factory=time.monotonic)  # when its owner was last woken to send

    @functools.cached_property
    def public_id(self) -> str:
        """What non-admins see in listings (cannot be used to cancel)."""
        return public_id(self.ticket_id)

    @property
    def waiting(self) -> bool:
        return self.worker is None and self.cancelled is None


class _Tail:
    """Worker free-times after laying out the whole queue (seconds from ``t0``)."""

    def __init__(self, heap: list[float], t0: float) -> None:
        self.heap, self.t0 = heap, t0


class WaitQueue(Broadcasting):
    """Insertion-ordered tickets (a dict is an O(1)-removal ordered set)."""

    def __init__(self, capacity: int, interval_s: float = 2.0, min_gap_s: float = 0.1) -> None:
        self.capacity = capacity
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self._items: dict[str, Ticket] = {}
        self._tail: Optional[_Tail] = None
        self._changed = asyncio.Event()
        # set by the pool: (free_in_s list for usable workers, estimate(type) fn)
        self.layout: Callable[[list[str]], tuple[list[float], list[float]]] = lambda types: ([0.0] * len(types), [0.0])
        self.estimate: Callable[[str], float] = lambda t: 0.0
        self.broadcasts = 0

    # ------------------------------------------------------------------ order
    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Ticket]:
        return iter(list(self._items.values()))

    def get(self, ticket_id: str) -> Optional[Ticket]:
        return self._items.get(ticket_id)

    def head(self) -> Optional[Ticket]:
        return next(iter(self._items.values()), None)

    async def enqueue(self, ticket: Ticket) -> Ticket:
        """Append at the tail (never ahead of anyone). Raises QueueFull."""
        return self.append(ticket)

    def append(self, ticket: Ticket) -> Ticket:
        if len(self._items) >= self.capacity:
            raise QueueFull(self.capacity)
        self._items[ticket.ticket_id] = ticket
        ticket.position = len(self._items)
        ticket.queue_length = len(self._items)
        ticket.estimated_wait_s = self._tail_eta(ticket.request_type)
        # nobody ahead moved: no early broadcast (the periodic one carries the new queue_length)
        return ticket

    def requeue_front(self, ticket: Ticket) -> None:
        """Put a ticket whose worker refused it back at the head (it keeps its turn). O(n), rare."""
        if ticket.ticket_id in self._items:
            return
        items = self._items
        self._items = {ticket.ticket_id: ticket}
        self._items.update(items)
        ticket.position = 1
        self._tail = None
        self._changed.set()

    def remove(self, ticket: Ticket, reason: Optional[str] = None) -> bool:
        """Take a ticket out (assigned, cancelled or gone). Wakes its owner."""
        if self._items.pop(ticket.ticket_id, None) is None:
            return False
        if reason is not None and ticket.worker is None:
            ticket.cancelled = reason
        self._tail = None
        self._changed.set()
        ticket.event.set()
        return True

    def invalidate(self) -> None:
        """Worker capacity or estimates changed: ETAs must be recomputed soon."""
        self._tail = None
        self._changed.set()

    # -------------------------------------------------------------- positions
    def _tail_eta(self, request_type: str) -> float:
        now = time.monotonic()
        if self._tail is None:
            types = [t.request_type for t in self._items.values()]
            etas, heap = self.layout(types[:-1])
            heapq.heapify(heap)
            self._tail = _Tail(heap, now)
        tail = self._tail
        start = heapq.heappop(tail.heap) if tail.heap else 0.0
        heapq.heappush(tail.heap, start + self.estimate(request_type))
        return max(0.0, start - (now - tail.t0))

    def refresh(self, everyone: bool = False) -> int:
        """One O(n) pass: positions 1..n and ETAs for everyone. Wakes the waiters whose position
        moved, whose ETA changed by a second or more, or who had no update for ``interval``."""
        items = list(self._items.values())
        etas, heap = self.layout([t.request_type for t in items])
        heapq.heapify(heap)
        now = time.monotonic()
        self._tail = _Tail(heap, now)
        due = now - self.interval_s
        n = len(items)
        woken = 0
        for i, t in enumerate(items):
            eta = round(etas[i], 1)
            if everyone or t.last_update <= due or t.position != i + 1 or abs(t.estimated_wait_s - eta) >= 1.0:
                t.update_seq += 1
                t.last_update = now
                t.event.set()
                woken += 1
            t.position, t.estimated_wait_s, t.queue_length = i + 1, eta, n
        self.broadcasts += 1
        return woken

    async def one_pass(self) -> None:
        if self._items:
            self.refresh()
