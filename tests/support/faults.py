"""What every fault test checks afterwards: the next client is served (and how soon), and how much
a process grew. Shared by tests/integration/test_*faults*.py and bench/faults.py."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Optional

import psutil
import websockets

CHAT = json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "streaming": True,
                   "generation": {"max_new_tokens": 8}})


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def next_chat_served(ws_base: str, within_s: float, request: str = CHAT,
                           headers: Optional[dict] = None) -> float:
    """Seconds until a fresh chat client got ``done`` (retrying while the service recovers);
    raises AssertionError when that takes longer than ``within_s``."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < within_s:
        try:
            async with websockets.connect(ws_base + "/ws/chat", max_size=None, open_timeout=2,
                                          additional_headers=headers or {}) as ws:
                await ws.send(request)
                while True:
                    left = within_s - (time.monotonic() - t0)
                    m = json.loads(await asyncio.wait_for(ws.recv(), max(0.05, left)))
                    if m.get("type") == "done":
                        return time.monotonic() - t0
                    if m.get("type") == "error":
                        last = m.get("error", "")
                        break
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            last = f"{type(e).__name__}: {e}"
        await asyncio.sleep(0.2)
    raise AssertionError(f"no chat served within {within_s} s (last: {last})")
