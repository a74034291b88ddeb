"""What the two streaming sessions (half-duplex, duplex) share: the reader task, and the main loop
that runs the session's state machine (``lifecycle.py``) one inbox item at a time.

The reader parses and size-checks every frame and hands it to ``take`` (which queues it in the
session's ``inbox``), so a bad message is answered with ``error`` at once while the main loop
works — whatever is wrong with it: parsing raises only ``ProtocolError``, and a ``take`` that
fails unexpectedly is answered too. Only a failure to read at all ends the reader; then the
done-callback of ``Connection.spawn_reader`` ends the session at once.

The loop awaits every item under the deadline that binds now (``next_item``: when it passes the
client gets ``timeout {reason}``). A ``stop`` ends the session in every phase. In await_prepare
only a valid ``prepare`` moves the session on (a bad one gets ``error`` and the client may try
again); once active, the mode ``handle``s each item.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Optional, Union

from pydantic import BaseModel

from ..engine.api import EngineInputError
from ..protocol.messages import ProtocolError, Stop, StoppedMsg, TimeoutMsg
from . import limits
from .inbox import Inbox
from .lifecycle import Deadline, Phase
from .session import Connection, Disconnected, Ended, ReaderFailed

log = logging.getLogger("omniserve.worker.session")


class Gone:
    """Inbox marker: the client disconnected, was dropped, or the reader died."""


class StreamingConnection(Connection):
    """A session whose client streams messages; the loop reads them from ``inbox``."""

    session_limit = True
    stream_kind = ""                      # limits.stream_cap key: "half_duplex" | "duplex"
    prepare_type: ClassVar[type] = type(None)   # the one message allowed to be larger than a stream frame

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.inbox = Inbox()

    # ------------------------------------------------------------ per mode
    @staticmethod
    def parse(raw: Union[str, bytes]) -> BaseModel:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def timeout_message(d: Deadline) -> Union[TimeoutMsg, str]:  # pragma: no cover - abstract (the wire writer's)
        raise NotImplementedError

    def take(self, msg: Any) -> None:  # pragma: no cover - abstract
        """Validate and queue one parsed message (runs on the reader task)."""
        raise NotImplementedError

    async def before_prepare(self, item: Any) -> None:
        """An inbox item that arrived before a valid ``prepare`` (ignored unless overridden)."""

    async def prepare(self, msg: Any) -> Optional[float]:  # pragma: no cover - abstract
        """Prepare the engine and answer ``prepared``; returns the idle limit of the active phase."""
        raise NotImplementedError

    async def handle(self, item: Any) -> None:  # pragma: no cover - abstract
        """One inbox item of an active (or paused) session."""
        raise NotImplementedError

    # ------------------------------------------------------------ the loop
    async def run(self) -> str:
        """The session from ``await_prepare`` to its end; returns ``"stop"`` or raises (``Ended``
        on a deadline, ``Disconnected``, ``ReaderFailed``)."""
        self.spawn_reader(self._reader())
        while True:
            item = await self.next_item()
            if isinstance(item, Stop) or self.stop.is_set():
                break
            if self.life.phase is Phase.AWAIT_PREPARE:
                await self._await_prepare(item)
            else:
                await self.handle(item)
            if self.stop.is_set():        # a stop, or a client gone, while the engine worked
                self.ensure_open(None)
                break
        await self.send(StoppedMsg(session_id=self.session_id))
        return "stop"

    async def next_item(self) -> Any:
        """The next inbox item, awaited under the deadline that binds now. When that passes, the
        client gets ``timeout {reason}`` and the session ends (``Ended``)."""
        d = self.life.deadline()   # taken before the wait: a timer may fire a hair early
        try:
            item = await self.inbox.get(None if d is None else d.remaining())
        except asyncio.TimeoutError:
            assert d is not None   # only a wait with a deadline times out
            await self.send(self.timeout_message(d))
            raise Ended(d.limit.end_reason) from None
        self.ensure_open(item)
        return item

    async def _await_prepare(self, item: Any) -> None:
        if not isinstance(item, self.prepare_type):
            await self.before_prepare(item)
            return
        try:
            idle_s = await self.prepare(item)
        except (limits.InputError, EngineInputError) as e:
            await self.send_error(str(e))
            return
        self.life.activate(idle_s)

    # ------------------------------------------------------------ the reader
    def wake(self) -> None:
        self.inbox.put(Gone())

    def ensure_open(self, item: Any) -> None:
        """Raise when the session cannot go on (called by main loops for every inbox item)."""
        if self.reader_failed:
            raise ReaderFailed()
        if isinstance(item, Gone) or self.disconnected:
            raise Disconnected()

    async def _reader(self) -> None:
        cap = limits.stream_cap(self.cfg, self.stream_kind)
        try:
            while True:
                try:
                    raw = await self.receive(max(self.cfg.max_prepare_frame_bytes, cap))
                except limits.FrameTooBig as e:
                    await self.send_error(str(e))
                    continue
                await self._handle(raw, cap)
        except Disconnected:
            self.mark_gone()

    async def _handle(self, raw: Union[str, bytes], cap: int) -> None:
        """Parse, check and ``take`` one frame; every failure is answered with ``error``."""
        try:
            msg = self.parse(raw)
            if not isinstance(msg, self.prepare_type) and len(raw) > cap:
                raise limits.FrameTooBig(len(raw), cap)
            self.take(msg)
        except (ProtocolError, limits.InputError) as e:
            await self.send_error(str(e))
        except Exception as e:  # a bug in take(): this message is lost, the session goes on
            log.exception("session %s: handling a message failed", self.session_id)
            await self.send_error(f"Internal error handling the message ({type(e).__name__})")
