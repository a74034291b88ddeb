"""Waiting clients for the gateway benches: one process holds COUNT duplex WebSocket clients in a
gateway's queue and records every message each of them receives, so the parent judges positions,
update gaps, closes and the order of service afterwards, from one clock (``time.monotonic`` is the
same in every process on Linux).

    python bench/waiters.py URL FIRST COUNT [HANDSHAKES]

Driven by lines on stdin; answers are JSON lines on stdout:
- ``go`` — connect all (at most HANDSHAKES at once, default 256; waiter i asks for ``/ws/duplex/omni_w<i>``);
  ``{"phase": "enqueued", "t0", "t1", "failed": {i: why}}`` once each has its first message or failed.
- ``dump PATH`` — every waiter's history to PATH as JSON; ``{"phase": "dumped"}``. A history is
  ``{"i", "port" (the client's own TCP port), "ev": [[t, pos], …], "why"}``: ``pos`` > 0 a position
  (``queued`` / ``queue_update``), 0 ``queue_done``, -1 the socket closed (``why``: code and reason),
  -2 any other message (``why``: the message). ``lag`` lists the event loop's stalls over 50 ms.
- ``exit`` — ends at once; the kernel closes the sockets.

``Clients`` (below) is the parent's side: it starts such processes and speaks this protocol.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import websockets
from websockets.exceptions import ConnectionClosed

HANDSHAKES = 256          # connections being opened at once (as bench/gateway.py's clients)
OPEN_TIMEOUT_S = 120.0
LAG_TICK_S = 0.05


class Waiter:
    __slots__ = ("i", "port", "ev", "why")

    def __init__(self, i: int) -> None:
        self.i = i
        self.port = 0
        self.ev: list[tuple[float, int]] = []
        self.why: Optional[str] = None

    def message(self, raw: Any) -> None:
        t = time.monotonic()
        try:
            m = json.loads(raw)
            kind = m.get("type")
        except (ValueError, AttributeError):
            m, kind = None, None
        if kind in ("queued", "queue_update") and isinstance(m.get("position"), int):
            self.ev.append((t, m["position"]))
        elif kind == "queue_done":
            self.ev.append((t, 0))
        else:
            self.ev.append((t, -2))
            self.why = str(raw)[:200]

    def closed(self, why: str) -> None:
        self.ev.append((time.monotonic(), -1))
        self.why = f"{self.why}; {why}" if self.why else why


class Waiters:
    def __init__(self, url: str, first: int, count: int, handshakes: int) -> None:
        self.url = url
        self.handshakes = handshakes
        self.waiters = [Waiter(first + k) for k in range(count)]
        self.failed: dict[int, str] = {}
        self.answered = 0
        self.all_in = asyncio.Event()
        self.lag: list[tuple[float, float]] = []
        self.tasks: list[asyncio.Task] = []

    def _counted(self) -> None:
        self.answered += 1
        if self.answered == len(self.waiters):
            self.all_in.set()

    async def one(self, w: Waiter, sem: asyncio.Semaphore) -> None:
        ws = None
        try:
            async with sem:
                ws = await websockets.connect(f"{self.url}/ws/duplex/omni_w{w.i}", ping_interval=None,
                                              compression=None, open_timeout=OPEN_TIMEOUT_S, close_timeout=1)
                w.port = ws.local_address[1]
                w.message(await ws.recv())
            if w.ev[-1][1] < 0:           # an error frame, not a place in the queue
                raise RuntimeError(w.why)
        except Exception as e:  # refused, timed out, closed at once: counted, never waited for
            self.failed[w.i] = f"{type(e).__name__}: {e}"[:200]
            w.closed(self.failed[w.i])
            self._counted()
            if ws is not None:
                await ws.close()          # a refused client hangs up, as a real one would
            return
        self._counted()
        try:
            async for raw in ws:
                w.message(raw)
            w.closed(f"closed {ws.close_code} {ws.close_reason or ''}".strip())
        except ConnectionClosed as e:
            w.closed(f"closed {ws.close_code} {ws.close_reason or ''} ({type(e).__name__})")

    async def watch_lag(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            late = time.monotonic() - t - LAG_TICK_S
            if late > 0.05:
                self.lag.append((round(t, 3), round(late, 3)))

    async def go(self) -> dict:
        sem = asyncio.Semaphore(self.handshakes)
        t0 = time.monotonic()
        self.tasks = [asyncio.create_task(self.one(w, sem)) for w in self.waiters]
        await self.all_in.wait()
        return {"phase": "enqueued", "t0": t0, "t1": time.monotonic(), "failed": self.failed}

    def dump(self, path: str) -> dict:
        with open(path, "w") as f:
            json.dump({"waiters": [{"i": w.i, "port": w.port, "ev": w.ev, "why": w.why} for w in self.waiters],
                       "lag": self.lag}, f)
        return {"phase": "dumped"}


# ------------------------------------------------- the parent's side: driving the processes
class Clients:
    """``procs`` processes of this script, ``n`` waiters in all (``handshakes`` in flight in all)."""

    def __init__(self, tmp: Path, reaper: Any, url: str, n: int, procs: int = 2, handshakes: int = HANDSHAKES) -> None:
        self.tmp = tmp
        per = -(-n // procs)
        self.procs: list[subprocess.Popen] = []
        first = 0
        while first < n:
            count = min(per, n - first)
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), url, str(first), str(count),
                                  str(max(1, handshakes // procs))], cwd=tmp, text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            reaper.add(p.pid)
            self.procs.append(p)
            first += count

    async def _line(self, p: subprocess.Popen, timeout: float) -> dict:
        assert p.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), timeout)
        try:
            return json.loads(line)
        except ValueError:
            raise RuntimeError(f"waiters process said: {line!r}") from None

    async def ask(self, command: str, timeout: float) -> list[dict]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(command + "\n")
            p.stdin.flush()
        return list(await asyncio.gather(*(self._line(p, timeout) for p in self.procs)))

    async def ready(self, timeout: float = 60) -> None:
        await asyncio.gather(*(self._line(p, timeout) for p in self.procs))

    async def dump(self, name: str) -> list[dict]:
        paths = [self.tmp / f"{name}_{k}.json" for k in range(len(self.procs))]
        for k, p in enumerate(self.procs):
            assert p.stdin is not None
            p.stdin.write(f"dump {paths[k]}\n")
            p.stdin.flush()
        await asyncio.gather(*(self._line(p, 120) for p in self.procs))
        return [json.loads(path.read_text()) for path in paths]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None and p.stdin is not None:
                try:
                    p.stdin.write("exit\n")
                    p.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass
        from tests.support.gateway_procs import end_processes   # the parent's side only (the repo is on its path)
        end_processes(self.procs, None)


def say(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def main(url: str, first: int, count: int, handshakes: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ws = Waiters(url, first, count, handshakes)
    lag = asyncio.create_task(ws.watch_lag())  # noqa: F841 (runs until the process ends)
    say({"phase": "ready", "pid": os.getpid()})
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).split()
        if not line or line[0] == "exit":
            sys.stdout.flush()
            os._exit(0)                     # no 10,000 closing handshakes: the kernel closes the sockets
        elif line[0] == "go":
            say(await ws.go())
        elif line[0] == "dump":
            say(ws.dump(line[1]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else HANDSHAKES))
