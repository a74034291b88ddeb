"""A ranking view that runs while one of this gateway's writes is still on its way to Redis (a real
redis-server): the waiter is absent from the view but not lost. Before the fix the view's "missing"
verdict made the pool put this gateway's waiters back (the bench logged "waiting clients missing
from the shared queue" under load), and a waiter with no order yet went back at the queue's head."""
from __future__ import annotations

import asyncio

from omniserve.gateway.eta import EtaEstimator
from omniserve.gateway.queue import Ticket
from omniserve.gateway.state.link import Outbox, RedisLink, key
from omniserve.gateway.state.scripts import Scripts
from omniserve.gateway.state.shared_queue import SharedQueue
from omniserve.protocol.modes import OMNI_DUPLEX

OMNI = OMNI_DUPLEX.request_type


class Claims:
    """The pool's side of the queue (``SlotClaims``), recording what the queue asked of it."""

    def __init__(self) -> None:
        self.missing: list[str] = []

    async def find_missing(self, tickets: list[Ticket]) -> None:
        self.missing += [t.ticket_id for t in tickets]

    def kick(self) -> None:
        pass

    def claimed(self, got: list) -> None:
        pass


class HeldScripts(Scripts):
    """The real scripts; ``hold_before(name)`` stops that script's calls before they reach Redis,
    ``hold_after(name)`` after Redis ran them, before the caller reads the answer; ``release(name)``."""

    def __init__(self, link: RedisLink) -> None:
        super().__init__(link)
        self.gates: dict[tuple[str, str], asyncio.Event] = {}
        self.reached: dict[tuple[str, str], asyncio.Event] = {}

    def _gate(self, where: str, name: str) -> None:
        self.gates[(where, name)] = asyncio.Event()
        self.reached[(where, name)] = asyncio.Event()

    def hold_before(self, name: str) -> None:
        self._gate("before", name)

    def hold_after(self, name: str) -> None:
        self._gate("after", name)

    def release(self, name: str) -> None:
        for (_, n), gate in self.gates.items():
            if n == name:
                gate.set()

    async def at(self, where: str, name: str) -> None:
        await self.reached[(where, name)].wait()

    async def _pass(self, where: str, name: str) -> None:
        gate = self.gates.get((where, name))
        if gate is not None:
            self.reached[(where, name)].set()
            await gate.wait()

    async def call(self, name: str, *args):
        await self._pass("before", name)
        got = await super().call(name, *args)
        await self._pass("after", name)
        return got


async def _queue(redis_url: str) -> tuple[SharedQueue, HeldScripts, Claims, RedisLink, Outbox]:
    link = RedisLink(redis_url)
    await link.client.flushall()
    scripts = HeldScripts(link)
    outbox = Outbox(link)
    q = SharedQueue(link, scripts, outbox, EtaEstimator(None), capacity=100)
    claims = Claims()
    q.pool = claims
    return q, scripts, claims, link, outbox


async def test_a_view_during_an_enqueue_does_not_find_the_waiter_lost(redis_server):
    q, scripts, claims, link, _ = await _queue(redis_server.url)
    try:
        first = Ticket(OMNI)
        await q.enqueue(first)
        scripts.hold_before("enqueue")
        second = Ticket(OMNI)
        pending = asyncio.create_task(q.enqueue(second))
        await scripts.at("before", "enqueue")          # in this process's queue, not yet in Redis
        await q.refresh(everyone=True)
        assert claims.missing == []
        assert first.position == 1
        assert q.restorable() == [first]               # no order yet: a restore must leave it to its enqueue
        scripts.release("enqueue")
        await pending
        assert second.seq > first.seq and second.position == 2
        await q.refresh(everyone=True)
        assert claims.missing == [] and (first.position, second.position) == (1, 2)
        assert q.restorable() == [first, second]
    finally:
        scripts.release("enqueue")
        await link.close()


async def test_a_view_read_after_a_requeue_it_ran_before_does_not_find_the_waiter_lost(redis_server):
    """Redis runs the view, then the requeue; this process reads the requeue's answer first."""
    q, scripts, claims, link, outbox = await _queue(redis_server.url)
    outbox.start()
    try:
        a, b = Ticket(OMNI), Ticket(OMNI)
        await q.enqueue(a)
        await q.enqueue(b)
        await link.client.zrem(key("q"), b.ticket_id)     # as a claim takes it: out of the queue
        scripts.hold_before("requeue_front")
        q.back_to_head(b)                                      # its worker refused it: back at the head
        await scripts.at("before", "requeue_front")
        scripts.hold_after("view")
        view = asyncio.create_task(q.refresh(everyone=True))
        await scripts.at("after", "view")                      # Redis answered: without b
        scripts.release("requeue_front")
        while len(outbox):                                     # the requeue's answer is read
            await asyncio.sleep(0.01)
        scripts.release("view")
        await view
        assert claims.missing == []
        await q.refresh(everyone=True)
        assert claims.missing == [] and (b.position, a.position) == (1, 2)
    finally:
        scripts.release("requeue_front")
        scripts.release("view")
        await outbox.stop()
        await link.close()
