"""Load pieces shared by the gateway benches (``bench/gateway.py``, ``bench/scale.py``).

``relay_session`` is one duplex session sending the 85 KB ``audio_chunk`` (``audio_chunk()``) and
timing each round trip (the ``--echo`` fake worker sends the audio back); ``relay_round`` runs many
at once, direct to the workers or through a gateway. ``dispatch_rounds`` times session end → the
next client's ``queue_done`` on a gateway where exactly one slot is free. ``pct``, ``rss`` and
``raise_nofile`` are the small helpers around them.
"""
from __future__ import annotations

import asyncio
import base64
import json
import resource
import time
from typing import Optional

import numpy as np
import psutil
import websockets


def raise_nofile() -> int:
    """The soft open-files limit up to the hard one (thousands of clients need thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def audio_chunk() -> str:
    """1 s of float32 PCM at 16 kHz, base64, as a duplex ``audio_chunk`` (about 85 KB of JSON)."""
    pcm = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("<f4")
    return json.dumps({"type": "audio_chunk", "audio_base64": base64.b64encode(pcm.tobytes()).decode()})


async def until_assigned(ws, timeout: float = 30.0) -> list[str]:
    """Reads up to ``queue_done`` (a free slot gives it at once; a gateway that still counts a
    worker busy, or the Redis claim, may send ``queued`` first), for at most ``timeout`` seconds in
    all; the message types read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            m = json.loads(await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            raise TimeoutError(f"no queue_done within {timeout:g} s (got {seen})") from None
        seen.append(m["type"])
        if m["type"] == "queue_done":
            return seen
        assert m["type"] in ("queued", "queue_update"), m


async def relay_session(base_ws: str, sid: str, frame: str, n: int, period: float, via_gateway: bool) -> list[float]:
    """``n`` round trips of ``frame`` (ms), one every ``period`` s (0: back to back)."""
    rtts: list[float] = []
    async with websockets.connect(f"{base_ws}/ws/duplex/{sid}", max_size=None, compression=None,
                                  ping_interval=None, open_timeout=30) as ws:
        if via_gateway:
            await until_assigned(ws)
        await ws.send(json.dumps({"type": "prepare"}))
        json.loads(await asyncio.wait_for(ws.recv(), 30))
        next_t = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            await ws.send(frame)
            await asyncio.wait_for(ws.recv(), 30)
            rtts.append((time.perf_counter() - t0) * 1000)
            if period:
                next_t += period
                await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
        await ws.send('{"type":"stop"}')
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except Exception:
            pass
    return rtts


async def relay_round(gateway_ws: str, worker_ports: list[int], sessions: int, per_s: float, n: int,
                      frame: str, tag: str, modes: tuple[str, ...] = ("direct", "gateway")) -> dict[str, list[float]]:
    """``sessions`` concurrent sessions × ``n`` chunks at ``per_s`` chunks/s, first straight to the
    workers (``worker_ports[i]``), then through the gateway: {"direct": [ms…], "gateway": [ms…]}."""
    out: dict[str, list[float]] = {}
    period = 1.0 / per_s if per_s else 0.0
    for mode in modes:
        via = mode == "gateway"
        await relay_session(gateway_ws if via else f"ws://127.0.0.1:{worker_ports[0]}", f"adx_{tag}_warm_{mode}",
                            frame, 10, 0, via)
        tasks = [relay_session(gateway_ws if via else f"ws://127.0.0.1:{worker_ports[i]}", f"adx_{tag}{i}_{mode}",
                               frame, n, period, via) for i in range(sessions)]
        out[mode] = [x for xs in await asyncio.gather(*tasks) for x in xs]
        await asyncio.sleep(0.5)
    return out


async def dispatch_rounds(gateway_ws: str, rounds: int, tag: str = "") -> tuple[list[float], list[float]]:
    """With exactly one free slot behind ``gateway_ws``: a session A holds it, client B queues, A
    stops; B's ``queue_done`` is timed from A's ``stopped`` and from A's ``stop``; B becomes the next
    A. Returns (ms from stopped, ms from stop)."""
    from_stopped: list[float] = []
    from_close: list[float] = []
    opened: list = []

    async def step(what: str, aw, timeout: float = 15.0):
        try:
            return await asyncio.wait_for(aw, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"dispatch round {len(from_stopped)}: {what} within {timeout:g} s") from None

    async def drain(ws) -> Optional[float]:
        t = None
        async for raw in ws:  # until the worker closes the finished session
            if '"stopped"' in raw:
                t = time.perf_counter()
        return t

    try:
        a = await websockets.connect(gateway_ws + f"/ws/duplex/adx_{tag}a0", ping_interval=None)
        opened.append(a)
        await until_assigned(a)
        await a.send('{"type":"prepare"}')
        await step("A prepared", a.recv())
        for r in range(rounds):
            b = await websockets.connect(gateway_ws + f"/ws/duplex/adx_{tag}b{r}", ping_interval=None)
            opened.append(b)
            m = json.loads(await step("B's first message", b.recv()))
            if m["type"] != "queued":     # every slot is taken (A holds the last one): B must wait
                raise AssertionError(f"dispatch round {r}: B's first message was {m}, with no slot free")
            t_stop = time.perf_counter()
            await a.send('{"type":"stop"}')
            t_stopped = await step("A's session closed after stop", drain(a))
            await step("B's queue_done after A's session ended", until_assigned(b, 3600))
            t_done = time.perf_counter()
            assert t_stopped is not None, "the session ended without 'stopped'"
            from_stopped.append((t_done - t_stopped) * 1000)
            from_close.append((t_done - t_stop) * 1000)
            await b.send('{"type":"prepare"}')
            await step("B prepared", b.recv())
            a = b
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return from_stopped, from_close
