"""A bounded, ordered mailbox between a session's reader task and its main loop.

Unlike ``asyncio.Queue`` it can drop the OLDEST audio when a backlog grows past its bound
(audio that piles up while the engine is busy is worth less the older it gets), and ``get``
takes a deadline so the main loop can enforce idle / pause / session timeouts.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable, Optional


class Inbox:
    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, timeout: Optional[float]) -> Any:
        """Next item; raises ``asyncio.TimeoutError`` when ``timeout`` seconds pass first — also
        when the deadline has already passed and items are waiting (a client that floods the
        socket must not outrun its session's deadline)."""
        if timeout is not None and timeout <= 0:
            raise asyncio.TimeoutError()
        while not self._items:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._items.popleft()

    def drop_oldest(self, is_droppable: Callable[[Any], bool], keep: int) -> int:
        """Drop the oldest droppable items until at most ``keep`` remain; returns how many went."""
        n = sum(1 for x in self._items if is_droppable(x))
        gone = 0
        if n <= keep:
            return 0
        kept: collections.deque = collections.deque()
        for x in self._items:
            if gone < n - keep and is_droppable(x):
                gone += 1
            else:
                kept.append(x)
        self._items = kept
        self.dropped += gone
        return gone

    def count(self, matches: Callable[[Any], bool]) -> int:
        return sum(1 for x in self._items if matches(x))

    def pop_oldest(self, is_droppable: Callable[[Any], bool]) -> Any:
        """Remove and return the oldest droppable item (None when there is none)."""
        for i, x in enumerate(self._items):
            if is_droppable(x):
                del self._items[i]
                self.dropped += 1
                return x
        return None

    def discard(self, is_droppable: Callable[[Any], bool]) -> int:
        return self.drop_oldest(is_droppable, 0)
