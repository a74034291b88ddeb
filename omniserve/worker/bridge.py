"""The bridge from a session on the event loop to the ONE engine thread.

``call`` runs one engine call there and awaits its value; ``stream`` iterates an engine
iterator there and yields its items on the loop as they come, with back-pressure: a client that
reads slowly holds the engine thread back instead of piling generated audio up in memory.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncGenerator, AsyncIterator, Callable, Iterator, ParamSpec, TypeVar

from .state import WorkerRuntime

T = TypeVar("T")
P = ParamSpec("P")

# Items an engine stream may have produced ahead of the consumer.
STREAM_AHEAD = 8


class EngineBridge:
    def __init__(self, runtime: WorkerRuntime, stop: threading.Event) -> None:
        self.runtime = runtime
        self.stop = stop     # the session's: once set, a stream drops what its consumer has no room for

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if kwargs:
            return await self.runtime.run_engine(lambda: fn(*args, **kwargs))
        return await self.runtime.run_engine(fn, *args)

    async def idle(self) -> None:
        """Wait until the engine thread has finished every job queued before this one."""
        await self.runtime.run_engine(lambda: None)

    async def stream(self, make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """Iterate ``make()`` on the engine thread, yielding items on the event loop as they come.

        At most ``STREAM_AHEAD`` items wait for the consumer; beyond that the engine thread waits
        too. Once ``stop`` is set, items are dropped instead (the iterator ends at its next chunk)."""
        async for item in stream_on(self.runtime.submit_engine, make, self.stop):
            yield item


def own_thread(job: Callable[[], None]) -> None:
    """Run ``job`` on a thread of its own (work that must not hold the engine thread)."""
    threading.Thread(target=job, name="omniserve-reply", daemon=True).start()


async def stream_on(submit: Callable[[Callable[[], None]], Any], make: Callable[[], Iterator[T]],
                    stop: threading.Event) -> AsyncGenerator[T, None]:
    """Iterate ``make()`` on the thread ``submit`` runs jobs on, yielding its items on the event loop
    with back-pressure (``STREAM_AHEAD``); once ``stop`` is set, items are dropped instead."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    credits = threading.Semaphore(STREAM_AHEAD)

    def post(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(q.put_nowait, (kind, value))
        except RuntimeError:  # loop closed: the server is shutting down
            pass

    def room() -> bool:
        while not credits.acquire(timeout=0.1):
            if stop.is_set():
                return False
        return True

    def pump() -> None:
        try:
            for item in make():
                if room():
                    post("item", item)
        except BaseException as e:  # re-raised on the loop side
            post("exc", e)
        else:
            post("end", None)

    submit(pump)
    while True:
        kind, value = await q.get()
        if kind == "item":
            credits.release()
            yield value
        elif kind == "exc":
            raise value
        else:
            return
