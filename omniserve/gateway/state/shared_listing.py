"""``SharedListing``: ``GET /api/queue`` over the whole shared queue (``gateway.redis_url``).

Each gateway process holds only its own waiters' sockets; the listing is Redis's: the first
``LIST_MAX`` tickets in queue order and every claimed slot, in one script (``list``), whichever
process holds each client. The waiters and sessions of the answering process add what only it
knows (a session id, the exact wait); a remote waiter put back at the head after a refusal shows
the head's wait. One answer (and its rendering) is shared by every caller for ``CACHE_S``, so
clients polling the public listing cost Redis at most two scripts a second per process.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from ..pool import WorkerPool
from ...protocol.modes import REQUEST_TYPES
from ..queue import public_id
from .scripts import Scripts
from .shared_queue import SharedQueue

LIST_MAX = 1000        # waiters listed at most (the queue's length is always the whole)
CACHE_S = 0.5


class SharedListing:
    def __init__(self, scripts: Scripts, queue: SharedQueue, pool: WorkerPool) -> None:
        self.scripts, self.queue, self.pool = scripts, queue, pool
        self._asked: Optional[tuple[float, asyncio.Task]] = None      # one script in flight for everyone
        self._rendered: dict[bool, tuple[asyncio.Task, tuple]] = {}   # per reveal_ids, LIST_MAX long

    async def listing(self, reveal_ids: bool, limit: int) -> tuple[int, list[dict], list[dict]]:
        """The queue's length, its first ``min(limit, LIST_MAX)`` waiters and the running sessions,
        as plain dicts shaped like ``QueueItemOut`` and ``RunningTaskOut``. Concurrent and repeated
        callers within ``CACHE_S`` share one script and one rendering. Raises the client's errors
        when Redis is unreachable."""
        now = time.monotonic()
        if self._asked is None or now - self._asked[0] > CACHE_S or _failed(self._asked[1]):
            task = asyncio.ensure_future(self.scripts.call("list", LIST_MAX))
            task.add_done_callback(_failed)        # retrieved even when every caller went away
            self._asked = (now, task)
        task = self._asked[1]
        answer = await asyncio.shield(task)
        done = self._rendered.get(reveal_ids)
        if done is None or done[0] is not task:
            done = (task, self._render(answer, reveal_ids))
            self._rendered[reveal_ids] = done
        length, items, running = done[1]
        return length, items[:max(0, limit)], running

    def _render(self, answer: Any, reveal_ids: bool) -> tuple[int, list[dict], list[dict]]:
        now_ms, length, flat, claims = answer
        now_us, mono = int(now_ms) * 1000, time.monotonic()
        items: list[dict] = []
        for i in range(0, len(flat), 3):
            tid, rtype, order = flat[i], flat[i + 1], int(flat[i + 2])
            mine = self.queue.get(tid)
            rank = i // 3
            items.append({
                "ticket_id": tid if reveal_ids else public_id(tid), "request_type": rtype,
                "session_id": mine.session_id if reveal_ids and mine is not None else None,
                "position": rank + 1, "estimated_wait_s": round(self.queue.eta_at(rank), 1),
                "waited_s": round(mono - mine.enqueued_at if mine is not None else max(0, now_us - order) / 1e6, 1)})
        running: list[dict] = []
        for i in range(0, len(claims), 4):
            slot_key, tid, rtype, since = claims[i], claims[i + 1], claims[i + 2], int(claims[i + 3] or 0)
            s = self.pool.slot(slot_key)
            if s is not None and s.ticket is not None and s.ticket.ticket_id == tid:
                elapsed = mono - s.busy_since          # ours: the session id is known here
                session = s.ticket.session_id
            else:
                elapsed = max(0, int(now_ms) - since) / 1000
                session = None
            if rtype not in REQUEST_TYPES:      # a type this version does not know (a rolling upgrade)
                continue
            url, _, index = slot_key.rpartition("#")
            running.append({"worker_url": url, "request_type": rtype, "session_id": session,
                            "elapsed_s": round(elapsed, 1),
                            "estimated_remaining_s": round(self.queue.eta.remaining(rtype, elapsed), 1),
                            "slot": int(index) if index.isdigit() else 0})
        return int(length), items, running


def _failed(task: asyncio.Task) -> bool:
    """Whether a finished task failed (its exception is then retrieved)."""
    return task.done() and (task.cancelled() or task.exception() is not None)

