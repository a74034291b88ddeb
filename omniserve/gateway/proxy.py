"""Relay one client WebSocket to its assigned worker, byte for byte.

Frames are never re-serialized: the gateway only finds a frame's ``type`` with a bounded scan of
its first/last bytes (``frame_type``), so a large audio frame passes without a JSON parse. What the
gateway must know: ``client_diagnostic`` (stored, not forwarded), ``pause``/``resume`` (worker
state), and the server's ``done``/``error`` on chat (the worker is released as soon as ``done`` is
relayed). Close codes are propagated both ways. A worker connection lost without a close frame
means the worker died: the client gets ``error`` at once and the worker is marked offline.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..protocol.messages import CLOSE_NORMAL, CLOSE_TOO_BIG, error
from .pool import WorkerPool, WorkerState
from .queue import cancel_and_wait

log = logging.getLogger(__name__)

_TYPE_RE = re.compile(r'"type"\s*:\s*"([A-Za-z_]{1,40})"')
_REC_RE = re.compile(r'"recording_session_id"\s*:\s*"([A-Za-z0-9_\-]{1,128})"')
_SCAN = 512
CLOSE_INTERNAL = 1011


def frame_type(text: str) -> Optional[str]:
    """The ``type`` of a JSON frame from a bounded scan (head, then tail, then all if small)."""
    m = _TYPE_RE.search(text, 0, _SCAN)
    if m is None and len(text) > _SCAN:
        m = _TYPE_RE.search(text, max(_SCAN, len(text) - _SCAN))
        if m is None and len(text) <= 65536:
            m = _TYPE_RE.search(text)
    return m.group(1) if m else None


def sendable(code: Optional[int]) -> int:
    """A close code that may be sent on the wire (1005/1006/1015 are reserved)."""
    if code is None or code in (1005, 1006, 1015) or not (1000 <= code <= 4999) or 1016 <= code < 3000:
        return CLOSE_NORMAL if code in (None, 1005) else CLOSE_INTERNAL
    return code


class ClientSide:
    """The only reader of the client socket, from accept to close.

    Before a worker is assigned it buffers text frames (capped); afterwards it hands each frame to
    ``forward``. Switching from buffer to forward happens with no ``await`` in between (see
    ``Relay.run``), so frames reach the worker in the order the client sent them.
    """

    def __init__(self, ws: WebSocket, max_frame_bytes: int, max_buffer_bytes: int) -> None:
        self.ws = ws
        self.max_frame_bytes = max_frame_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.buffer: list[str] = []
        self.buffered_bytes = 0
        self.forward: Optional[Callable[[str], Awaitable[bool]]] = None
        self.gone = asyncio.Event()
        self.arrived = asyncio.Event()   # set when a frame is buffered
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.on_gone: Optional[Callable[[], None]] = None
        self.task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self.task)

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
                    await self.send(error("Binary frames are not supported: send JSON text frames"))
                    continue
                if len(text) > self.max_frame_bytes:
                    await self.send(error(f"Frame too large ({len(text)} bytes, max {self.max_frame_bytes})"))
                    await self.close(CLOSE_TOO_BIG)
                    self._left(CLOSE_TOO_BIG)
                    return
                if self.forward is not None:
                    if not await self.forward(text):
                        return
                    continue
                self.buffered_bytes += len(text)
                if self.buffered_bytes > self.max_buffer_bytes:
                    await self.send(error("Too much data sent while waiting in the queue"))
                    await self.close(CLOSE_TOO_BIG)
                    self._left(CLOSE_TOO_BIG)
                    return
                self.buffer.append(text)
                self.arrived.set()
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            self._left(getattr(e, "code", None) or 1006)

    async def send(self, text: str) -> bool:
        if self.gone.is_set():
            return False
        try:
            await self.ws.send_text(text)
            return True
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._left(1006)
            return False

    async def close(self, code: int, reason: str = "") -> None:
        try:
            await self.ws.close(code, reason[:120])
        except Exception:
            pass


@dataclass
class RelayOptions:
    request_type: str
    max_diagnostic_bytes: int
    store_diagnostic: Callable[[str, str], Awaitable[None]]   # (session key, frame text)
    session_key: str
    connect_timeout_s: float = 5.0


class Relay:
    """One assigned session: client ⇄ worker inside a cleanup that always releases the worker."""

    def __init__(self, client: ClientSide, pool: WorkerPool, worker: WorkerState, opts: RelayOptions) -> None:
        self.client, self.pool, self.worker, self.opts = client, pool, worker, opts
        self.upstream: Optional[ClientConnection] = None
        self.released = False
        self.success = False
        self.worker_failed = False
        self.diag_bytes = 0
        self.recording_id: Optional[str] = None
        self.url = ""
        self.early: Optional[list[str]] = []   # frames sent before the worker's first reply (for a retry)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.worker, success=self.success)

    async def run(self, url: str) -> None:
        try:
            if self.client.gone.is_set():
                return  # left between assignment and now: release at once
            try:
                self.url = url
                self.upstream = await self._connect()
            except Exception as e:
                self.worker_failed = True
                log.warning("connect to %s failed: %s", url, e)
                await self.client.send(error("Worker unavailable, please retry"))
                await self.client.close(CLOSE_INTERNAL)
                return
            while self.client.buffer:  # flush what the client sent while queued, in order
                if not await self._from_client(self.client.buffer.pop(0)):
                    return
            self.client.forward = self._from_client  # no await since the buffer was seen empty
            down = asyncio.create_task(self._pump_down())
            gone = asyncio.create_task(self.client.gone.wait())
            await asyncio.wait({down, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done() and not down.done():
                if self.opts.request_type != "chat":  # a chat only succeeds with done
                    self.success = self.success or not self.worker_failed
                try:
                    await self.upstream.close(sendable(self.client.close_code), self.client.close_reason)
                except Exception:
                    pass
                try:
                    await asyncio.wait_for(down, 2)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    pass
            for t in (down, gone):
                if not t.done():
                    t.cancel()
        finally:
            if self.worker_failed:
                self.pool.mark_offline(self.worker, "connection lost")
            if self.upstream is not None:
                try:
                    await asyncio.wait_for(self.upstream.close(), 2)
                except Exception:
                    pass
            self.release()

    # ------------------------------------------------------------ client → worker
    async def _from_client(self, text: str) -> bool:
        """Forward one client frame (or keep it). False ends the session."""
        assert self.upstream is not None
        t = frame_type(text)
        if t == "client_diagnostic":
            await self._store_diagnostic(text)
            return True
        if t == "pause":
            self.worker.paused = True
        elif t == "resume":
            self.worker.paused = False
        if self.early is not None:
            self.early.append(text)
            if len(self.early) > 64:
                self.early = None  # the worker is clearly running this session: no retry any more
        try:
            await self.upstream.send(text)
        except ConnectionClosed:
            return self.early is not None  # a busy-retry may replace the connection
        return True

    async def _connect(self) -> ClientConnection:
        return await connect(self.url, open_timeout=self.opts.connect_timeout_s, compression=None,
                             max_size=None, ping_interval=None, close_timeout=2, proxy=None)

    async def _retry_busy(self, first: str) -> bool:
        """A worker may still be finishing its previous session for a few ms after the gateway
        released it (it answers ``error`` "busy" + 1013). Reconnect and replay what was sent."""
        if self.early is None or frame_type(first) != "error" or "busy" not in first.lower():
            return False
        for attempt in range(20):
            await asyncio.sleep(0.02 * (attempt + 1))
            try:
                new = await self._connect()
            except Exception:
                continue
            sent = 0
            try:
                while self.early is not None and sent < len(self.early):  # incl. frames arriving meanwhile
                    await new.send(self.early[sent])
                    sent += 1
                reply = await asyncio.wait_for(new.recv(), 0.05) if attempt < 19 else None
            except asyncio.TimeoutError:
                reply = None   # nothing yet: the session started
            except ConnectionClosed:
                continue
            if reply is not None and frame_type(reply) == "error" and "busy" in reply.lower():
                await new.close()
                continue
            old, self.upstream = self.upstream, new
            for text in (self.early or [])[sent:]:  # sent to the old connection during the last await
                await new.send(text)
            if old is not None:
                await old.close()
            self._pending_first = reply
            return True
        return False

    async def _store_diagnostic(self, text: str) -> None:
        if self.diag_bytes + len(text) > self.opts.max_diagnostic_bytes:
            return  # capped: later diagnostics of this session are dropped
        self.diag_bytes += len(text)
        try:
            await self.opts.store_diagnostic(self.recording_id or self.opts.session_key, text)
        except Exception as e:
            log.warning("client_diagnostic not stored: %s", e)

    # ------------------------------------------------------------ worker → client
    async def _frames(self):
        """Worker frames; the first one may trigger a busy-retry that swaps the connection."""
        assert self.upstream is not None
        self._pending_first: Optional[str] = None
        first = await self.upstream.recv()
        if isinstance(first, str) and await self._retry_busy(first):
            if self._pending_first is not None:
                yield self._pending_first
        else:
            yield first
        self.early = None
        async for text in self.upstream:
            yield text

    async def _pump_down(self) -> None:
        assert self.upstream is not None
        chat = self.opts.request_type == "chat"
        try:
            async for text in self._frames():
                if not isinstance(text, str):
                    continue  # the protocol is text-only
                t = frame_type(text) if (chat or len(text) < 4096) else None
                if t in ("prepared", "done") and self.recording_id is None:
                    m = _REC_RE.search(text)
                    if m:
                        self.recording_id = m.group(1)
                if not await self.client.send(text):
                    return
                if t == "error" and chat:
                    self.release()
                elif t == "done" and chat:
                    self.success = True
                    self.release()  # the worker is free as soon as done is relayed
                elif t in ("stopped", "timeout"):
                    self.success = True
            code, reason = self.upstream.close_code, self.upstream.close_reason or ""
        except ConnectionClosed as e:
            if e.rcvd is None and not self.client.gone.is_set() and not (chat and self.released):
                self.worker_failed = True
                await self.client.send(error("Worker connection lost"))
                await self.client.close(CLOSE_INTERNAL)
                return
            code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (CLOSE_INTERNAL, "")
        if not self.worker_failed and code in (1000, 1001):
            self.success = True
        await self.client.close(sendable(code), reason)


def worker_ws_url(worker: WorkerState, path: str) -> str:
    return worker.ws_base + path
