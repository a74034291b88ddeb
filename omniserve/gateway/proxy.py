"""Relay one client WebSocket to its assigned worker, byte for byte, with a deadline on every hop.

Frames are never re-serialized: the gateway only finds a frame's ``type`` with a bounded scan
(``frames.frame_type``), so a large audio frame passes without a JSON parse. What the gateway must
know: ``client_diagnostic`` (stored, not forwarded), ``pause``/``resume`` (worker state), the chat
``done`` (the worker is released as soon as it is relayed — an ``error`` is not the end: the worker
says so by closing), and the frames that mark a normal end (only those feed the ETA average).

Deadlines: every send to the worker has ``send_timeout_s``; the link carries WebSocket pings, so a
worker that stops answering them (hung, SIGSTOP) ends its client's session with ``error`` within
``ping_interval + ping_timeout``; a duplex worker that sends nothing for ``unit_deadline_s`` after a
unit while the session is active does the same. A worker connection lost without a close frame
means the worker died: the client gets ``error`` at once and the worker is marked offline. Closing
the worker link is bounded and ends with an abort, so nothing is left half-open.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..protocol.messages import CLOSE_NORMAL, CLOSE_TRY_AGAIN
from ..protocol.modes import CHAT, DUPLEX_TYPES
from .client_side import ClientSide, Frame
from .frames import CLOSE_INTERNAL, frame_type, recording_id, sendable
from ..protocol.worker import SLOT_HEADER
from .metrics import WORKER_LOST, WORKER_NOT_READING, WORKER_UNIT_DEADLINE, RelayMeter
from .pool import Slot, WorkerPool

log = logging.getLogger(__name__)

MAX_EARLY_FRAMES = 64        # frames kept for a replay if the worker refuses before it starts
UPSTREAM_CLOSE_S = 1.0
END_FRAMES = {"stopped", "timeout"}


@dataclass
class RelayOptions:
    request_type: str
    max_diagnostic_bytes: int
    store_diagnostic: Callable[[str, str, str], Awaitable[None]]   # (worker URL, session key, frame text)
    session_key: str
    connect_timeout_s: float = 5.0
    worker_headers: dict[str, str] = field(default_factory=dict)
    send_timeout_s: float = 10.0
    ping_interval_s: float = 1.0
    ping_timeout_s: float = 2.5
    unit_deadline_s: float = 5.0
    recorded: Callable[[str, str], None] = lambda recording_id, worker_url: None   # who holds a recording
    meter: RelayMeter = field(default_factory=RelayMeter)   # frames and bytes each way, failures (metrics.py)


class Relay:
    """One assignment: connect, relay both ways, and a cleanup that always releases the worker —
    unless the worker refused the session before starting it (``refused``: the caller requeues)."""

    def __init__(self, client: ClientSide, pool: WorkerPool, worker: Slot, opts: RelayOptions) -> None:
        self.client, self.pool, self.worker, self.opts = client, pool, worker, opts
        self.chat = opts.request_type == CHAT.request_type
        self.duplex = opts.request_type in DUPLEX_TYPES
        self.upstream: Optional[ClientConnection] = None
        self.released = False
        self.released_at = 0.0                  # the pool's stamp of our release (for confirm_idle)
        self.refused: Optional[str] = None      # why the worker would not start the session
        self.ended_normally = False
        self.worker_idle = False                # the worker closed the socket itself: it is idle again
        self.worker_failed = False
        self.failure: Optional[str] = None      # how the worker failed this session (metrics.py's error kind)
        self.meter = opts.meter
        self.diag_bytes = 0
        self.recording_id: Optional[str] = None
        self.early: Optional[list[Frame]] = []  # frames sent before the worker's first reply
        self.request_pending = self.chat        # chat: the next frame up is the request itself
        self.prepared = False
        self.unanswered_since: Optional[float] = None   # duplex: a unit went up, nothing came back yet

    # ------------------------------------------------------------------ phases
    async def connect(self, url: str) -> bool:
        """Open the worker link. False: unreachable (the caller requeues the ticket)."""
        try:
            self.upstream = await connect(
                url, open_timeout=self.opts.connect_timeout_s, compression=None, max_size=None,
                ping_interval=self.opts.ping_interval_s, ping_timeout=self.opts.ping_timeout_s,
                close_timeout=UPSTREAM_CLOSE_S, proxy=None,
                additional_headers={**self.opts.worker_headers, SLOT_HEADER: str(self.worker.index)})
            return True
        except Exception as e:
            log.warning("connect to %s failed: %s", url, e)
            self.refused = f"unreachable: {type(e).__name__}"
            return False

    def release(self) -> None:
        if self.refused is not None:
            return
        if not self.released:
            self.released = True
            self.pool.release(self.worker, success=self.ended_normally and not self.worker_failed,
                              idle=self.worker_idle)
            self.released_at = self.worker.status_at
        elif self.worker_idle:
            self.pool.confirm_idle(self.worker, self.released_at)

    async def run(self) -> None:
        """Relay until either side ends. On return the worker is released, or ``refused`` is set and
        the frames it was sent are back at the front of the client's buffer."""
        assert self.upstream is not None
        tasks: list[asyncio.Task] = []
        try:
            if self.client.gone.is_set():
                return  # left between assignment and now: release at once
            while self.client.buffer:  # flush what the client sent while queued, in order
                if not await self._forward(*self.client.buffer.pop()):
                    return
            self.client.forward = self._from_client  # no await since the buffer was seen empty
            down = asyncio.create_task(self._pump_down())
            gone = asyncio.create_task(self.client.gone.wait())
            tasks = [down, gone]
            if self.duplex:
                tasks.append(asyncio.create_task(self._watch_units()))
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self.refused is not None:
                self.client.forward = None
                self.client.buffer.restore(self.early or [])
            elif gone.done() and not self.client.dropped and self.client.close_code in (1000, 1001):
                self.ended_normally = True   # the client hung up properly
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            code = self.client.close_code if self.client.gone.is_set() else CLOSE_NORMAL
            await self._close_upstream(sendable(code), self.client.close_reason)
            if self.worker_failed:
                self.pool.mark_offline(self.worker.worker, "connection lost")
            self.release()

    async def _close_upstream(self, code: int, reason: str) -> None:
        up = self.upstream
        if up is None:
            return
        try:
            await asyncio.wait_for(up.close(code, reason[:120]), UPSTREAM_CLOSE_S)
        except Exception:
            pass
        finally:
            if up.transport is not None and not up.transport.is_closing():
                up.transport.abort()

    async def _fail(self, text: str, kind: str, *, offline: bool = True) -> None:
        """The worker failed this session (``kind``: how): tell the client and close it. ``offline``:
        the worker itself is gone (else only its engine is stuck, and the pool's idle check decides)."""
        self.worker_failed = self.worker_failed or offline
        self.failure = kind
        self.meter.failed(kind)
        self.ended_normally = False
        await self.client.send(self.client.error_frame(text))
        await self.client.close(CLOSE_INTERNAL)

    # ------------------------------------------------------------ client → worker
    async def _from_client(self, text: str) -> bool:
        """A frame the client sent after assignment."""
        return await self._forward(text, frame_type(text))

    async def _forward(self, text: str, t: Optional[str]) -> bool:
        """Forward one client frame of type ``t`` (or keep it). False ends the session."""
        assert self.upstream is not None
        if self.request_pending:    # the chat request (read by ws._first_frame): whatever "type" a scan saw in it
            self.request_pending, t = False, None
        if t == "client_diagnostic":
            await self._store_diagnostic(text)
            return True
        if t == "pause":
            self.worker.paused = True
            self.unanswered_since = None
        elif t == "resume":
            self.worker.paused = False
        elif t == "audio_chunk" and self.prepared and self.unanswered_since is None:
            self.unanswered_since = time.monotonic()
        if self.early is not None:
            self.early.append((text, t))
            if len(self.early) > MAX_EARLY_FRAMES:
                self.early = None  # the worker is clearly running this session: no replay any more
        try:
            async with asyncio.timeout(self.opts.send_timeout_s):   # no extra task per frame
                await self.upstream.send(text)
            self.meter.up(len(text))
        except asyncio.TimeoutError:
            log.warning("worker %s did not read for %.0f s", self.worker.url, self.opts.send_timeout_s)
            await self._fail("Worker not responding", WORKER_NOT_READING)
            return False
        except ConnectionClosed:
            pass  # the worker side ended: the down pump tells why
        return True

    async def _store_diagnostic(self, text: str) -> None:
        if self.diag_bytes + len(text) > self.opts.max_diagnostic_bytes:
            return  # capped: later diagnostics of this session are dropped
        self.diag_bytes += len(text)
        try:
            await self.opts.store_diagnostic(self.worker.url, self.recording_id or self.opts.session_key, text)
        except Exception as e:
            log.warning("client_diagnostic not stored: %s", e)

    # ------------------------------------------------------------ worker → client
    def _is_refusal(self, text: str) -> bool:
        """The worker's answer to a session it cannot take: ``error`` "Worker busy/loading/error"
        as its very first frame, then close 1013."""
        if self.early is None or frame_type(text) != "error":
            return False
        low = text.lower()
        return "worker busy" in low or "worker loading" in low or "worker error" in low

    async def _pump_down(self) -> None:
        assert self.upstream is not None
        first = True
        try:
            async for text in self.upstream:
                if not isinstance(text, str):
                    continue  # the protocol is text-only
                if first:
                    first = False
                    if self._is_refusal(text):
                        self.refused = "busy"
                        return
                    self.early = None
                self.unanswered_since = None
                t = frame_type(text) if (self.chat or len(text) < 4096) else None
                if t in ("prepared", "done") and self.recording_id is None:
                    self.recording_id = recording_id(text)
                    if self.recording_id is not None:
                        self.opts.recorded(self.recording_id, self.worker.url)
                if t == "prepared":
                    self.prepared = True
                if not await self.client.send(text):
                    return
                self.meter.down(len(text))
                if t == "done" and self.chat:
                    self.ended_normally = True
                    self.release()  # the worker is free as soon as done is relayed
                elif t in END_FRAMES:
                    self.ended_normally = True
            code, reason = self.upstream.close_code, self.upstream.close_reason or ""
            self.worker_idle = bool(self.upstream.protocol.close_rcvd_then_sent)
        except ConnectionClosed as e:
            if e.rcvd is None and not self.client.gone.is_set() and not (self.chat and self.released):
                log.warning("worker %s: connection lost (%s)", self.worker.url, e)
                await self._fail("Worker connection lost", WORKER_LOST)
                return
            code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (CLOSE_INTERNAL, "")
            self.worker_idle = bool(e.rcvd_then_sent)
        if first and code == CLOSE_TRY_AGAIN and self.early is not None:
            self.refused = "closed 1013"
            self.worker_idle = False
            return
        await self.client.close(sendable(code), reason)

    async def _watch_units(self) -> None:
        """Duplex: an active session whose worker answers no unit within the deadline has failed."""
        while True:
            await asyncio.sleep(0.25)
            since = self.unanswered_since
            if since is not None and not self.worker.paused and time.monotonic() - since > self.opts.unit_deadline_s:
                log.warning("worker %s answered no unit for %.1f s", self.worker.url, self.opts.unit_deadline_s)
                await self._fail(f"Worker did not answer within {self.opts.unit_deadline_s:g} s", WORKER_UNIT_DEADLINE,
                                 offline=False)
                return
