"""The client end of a relayed WebSocket: the one reader of the client socket, sends with a
deadline, and what a queued client may keep while it waits.

Before a worker is assigned the reader buffers the client's text frames (``WaiterBuffer``);
afterwards it hands each frame to ``forward``. Switching from buffer to forward happens with no
``await`` in between (see ``Relay.run``), so frames reach the worker in the order the client sent
them.

Every send has a deadline (``send_timeout_s``): uvicorn's WebSocket send waits while the socket's
write buffer is full, so a client that stops reading blocks it. Such a client is dropped — a close
1008 is attempted for a moment, then the transport is aborted, because a polite close waits for a
peer that does not read.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Awaitable, Callable, Optional

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol.messages import CLOSE_POLICY, CLOSE_TOO_BIG, error
from ..ws_server import abort_function
from .frames import frame_type
from .queue import cancel_and_wait

log = logging.getLogger(__name__)

# base64 of float32 PCM at 16 kHz: 64,000 bytes/s of audio become ~85,400 characters
_B64_AUDIO_CHARS_PER_S = 85_400
CLOSE_GRACE_S = 0.5
AUDIO_CHUNK = "audio_chunk"
AUDIO_TYPES = frozenset({AUDIO_CHUNK, "input_audio_buffer.append"})   # ours, and OpenAI Realtime's

Frame = tuple[str, Optional[str]]   # a frame's text and its ``type`` (``frames.frame_type``, scanned once)


class BufferBudget:
    """Bytes buffered by all queued clients together (one per gateway)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.used = cap, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.cap:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


class WaiterBuffer:
    """What a client sent while queued, in order, each frame with its ``type`` (scanned once, on
    arrival: the relay reads it from here). Audio chunks keep only the newest ``audio_keep_s``
    seconds (older ones are dropped, not the client); other frames are capped in bytes, and over
    the cap the client is refused."""

    def __init__(self, max_other_bytes: int, audio_keep_s: float, budget: BufferBudget) -> None:
        self.frames: collections.deque[Frame] = collections.deque()
        self.max_other = max_other_bytes
        self.audio_keep = max(1, int(audio_keep_s * _B64_AUDIO_CHARS_PER_S))
        self.budget = budget
        self.other_bytes = 0
        self.audio_bytes = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __bool__(self) -> bool:
        return bool(self.frames)

    def add(self, text: str) -> bool:
        """Keep one frame; False when the client sent more than a waiter may hold."""
        n = len(text)
        t = frame_type(text)
        if t in AUDIO_TYPES:
            self.audio_bytes += n
            self.frames.append((text, t))
            self.budget.used += n
            self._trim_audio()
            if self.budget.used > self.budget.cap:   # everybody's buffers are full: keep the newest only
                self._trim_audio(keep=n)
            return True
        if self.other_bytes + n > self.max_other or not self.budget.take(n):
            return False
        self.other_bytes += n
        self.frames.append((text, t))
        return True

    def _trim_audio(self, keep: Optional[int] = None) -> None:
        limit = self.audio_keep if keep is None else keep
        if self.audio_bytes <= limit:
            return
        kept: collections.deque[Frame] = collections.deque()
        excess = self.audio_bytes - limit
        for text, t in self.frames:
            if t in AUDIO_TYPES and excess > 0:
                excess -= len(text)
                self.audio_bytes -= len(text)
                self.budget.give(len(text))
            else:
                kept.append((text, t))
        self.frames = kept

    def pop(self) -> Frame:
        text, t = self.frames.popleft()
        if t in AUDIO_TYPES:
            self.audio_bytes -= len(text)
        else:
            self.other_bytes -= len(text)
        self.budget.give(len(text))
        return text, t

    def first(self) -> Optional[str]:
        return self.frames[0][0] if self.frames else None

    def restore(self, frames: list[Frame]) -> None:
        """Frames that went to a worker which then refused the session: they come first again."""
        for text, t in reversed(frames):
            if t in AUDIO_TYPES:
                self.audio_bytes += len(text)
            else:
                self.other_bytes += len(text)
            self.budget.used += len(text)
            self.frames.appendleft((text, t))

    def clear(self) -> None:
        while self.frames:
            self.pop()


def abort_transport(ws: WebSocket) -> None:
    """Drop the TCP connection under ``ws`` at once (``ws_server``'s abort; with another uvicorn
    WebSocket implementation only the bounded close attempt is made)."""
    fn = abort_function(dict(ws.scope) if not isinstance(ws.scope, dict) else ws.scope)
    if fn is not None:
        fn()


class ClientSide:
    """The only reader of the client socket, from accept to close."""

    def __init__(self, ws: WebSocket, max_frame_bytes: int, buffer: WaiterBuffer,
                 send_timeout_s: float = 10.0) -> None:
        self.ws = ws
        self.max_frame_bytes = max_frame_bytes
        self.buffer = buffer
        self.send_timeout_s = send_timeout_s
        self.forward: Optional[Callable[[str], Awaitable[bool]]] = None
        self.error_frame: Callable[[str], str] = error   # an ``error`` in the client's protocol
        self.gone = asyncio.Event()
        self.arrived = asyncio.Event()   # set when a frame is buffered
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.dropped = False             # we dropped it (not reading, flooding)
        self.refused = False             # we refused it (``refuse``)
        self.on_gone: Optional[Callable[[], None]] = None
        self.task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        self.buffer.clear()

    def _left(self, code: Optional[int], reason: str = "") -> None:
        if not self.gone.is_set():
            self.close_code, self.close_reason = code, reason
            self.gone.set()
            if self.on_gone is not None:
                self.on_gone()

    async def _run(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    self._left(msg.get("code"), msg.get("reason") or "")
                    return
                text = msg.get("text")
                if text is None:
                    await self.send(self.error_frame("Binary frames are not supported: send JSON text frames"))
                    continue
                if len(text) > self.max_frame_bytes:
                    await self.refuse(f"Frame too large ({len(text)} bytes, max {self.max_frame_bytes})", CLOSE_TOO_BIG)
                    return
                if self.forward is not None:
                    if not await self.forward(text):
                        return
                    continue
                if not self.buffer.add(text):
                    await self.refuse("Too much data sent while waiting in the queue", CLOSE_TOO_BIG)
                    return
                self.arrived.set()
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            self._left(getattr(e, "code", None) or 1006)

    async def send(self, text: str) -> bool:
        """Send one frame within the deadline; a client that does not take it is dropped."""
        if self.gone.is_set():
            return False
        try:
            async with asyncio.timeout(self.send_timeout_s):   # no extra task per frame (wait_for makes one)
                await self.ws.send_text(text)
            return True
        except asyncio.TimeoutError:
            log.info("client did not read for %.0f s: dropped", self.send_timeout_s)
            await self.drop(CLOSE_POLICY, "not reading")
            return False
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._left(1006)
            return False

    async def refuse(self, text: str, code: int) -> None:
        """``error`` then close ``code``; the client counts as gone."""
        self.refused = True
        await self.send(self.error_frame(text))
        await self.close(code)
        self._left(code)

    async def drop(self, code: int, reason: str) -> None:
        """Close ``code`` if the socket takes it at once, then abort the connection either way."""
        self.dropped = True
        try:
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_GRACE_S)
        except Exception:
            pass
        abort_transport(self.ws)
        self._left(code, reason)

    async def close(self, code: int, reason: str = "") -> None:
        """A polite close, bounded: a peer that does not read is aborted instead."""
        try:
            await asyncio.wait_for(self.ws.close(code, reason[:120]), CLOSE_GRACE_S)
        except asyncio.TimeoutError:
            abort_transport(self.ws)
        except Exception:
            pass
