"""What the two streaming sessions (half-duplex, duplex) share: one reader task and the wait for
``prepare``.

The reader parses and size-checks every frame and hands it to ``take`` (which queues it in the
session's ``inbox``), so a bad message is answered with ``error`` at once while the main loop
works — whatever is wrong with it: parsing raises only ``ProtocolError``, and a ``take`` that
fails unexpectedly is answered too. Only a failure to read at all ends the reader; then the
done-callback of ``Session.spawn_reader`` ends the session at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Union

from pydantic import BaseModel

from ..engine.api import EngineInputError
from ..protocol.messages import ProtocolError, Stop, StoppedMsg, TimeoutMsg
from . import limits
from .inbox import Inbox
from .session import Disconnected, ReaderFailed, Session

log = logging.getLogger("omniserve.worker.session")


class Gone:
    """Inbox marker: the client disconnected, was dropped, or the reader died."""


class StreamingSession(Session):
    """A session whose client streams messages; ``main`` reads them from ``inbox``."""

    stream_kind = ""                      # limits.stream_cap key: "half_duplex" | "duplex"
    prepare_type: type = type(None)       # the one message allowed to be larger than a stream frame

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.inbox = Inbox()
        self.last_audio = time.monotonic()

    @staticmethod
    def parse(raw: Union[str, bytes]) -> BaseModel:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, msg: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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

    async def _prepare(self, msg: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    async def before_prepare(self, item: Any) -> None:
        """An inbox item that arrived before a valid ``prepare`` (ignored unless overridden)."""

    async def await_prepare(self, started: float) -> Any:
        """Wait for a valid ``prepare``; bad ones get ``error`` and the client may try again.

        Returns what ``_prepare`` returns, or the end reason (``timeout_prepare``, ``stop``)."""
        deadline = started + self.cfg.prepare_wait_s
        while True:
            try:
                item = await self.inbox.get(deadline - time.monotonic())
            except asyncio.TimeoutError:
                await self.send(TimeoutMsg(elapsed_s=round(time.monotonic() - started, 3), reason="no_prepare"))
                return "timeout_prepare"
            self.ensure_open(item)
            if isinstance(item, Stop):
                await self.send(StoppedMsg(session_id=self.session_id))
                return "stop"
            if not isinstance(item, self.prepare_type):
                await self.before_prepare(item)
                continue
            try:
                return await self._prepare(item)
            except (limits.InputError, EngineInputError) as e:
                await self.send_error(str(e))
