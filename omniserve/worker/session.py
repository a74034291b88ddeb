"""What every WebSocket session shares: claiming the worker, framed I/O with size caps, the
bridge from engine threads to the event loop, and the ONE cleanup path.

A session subclass implements ``main()`` and returns why it ended (``"stop"``, ``"timeout"``,
``"done"`` …). Whatever way it ends — return, client stop, disconnect, exception — ``serve()``
runs the same ``finally``: stop the engine work, wait for the engine thread to be free, finish
the recording, return the worker to idle, close the socket.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Union

from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..config import Settings
from ..engine.api import EngineInputError
from ..protocol.messages import (CLOSE_NORMAL, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN, ErrorMsg, ProtocolError, Stop,
                                 StoppedMsg, TimeoutMsg)
from . import limits
from .inbox import Inbox
from .limits import FrameTooBig
from .recorder import NullRecorder, Recorder, open_recorder
from .state import Busy, Status, WorkerState

log = logging.getLogger("omniserve.worker.session")

# How long cleanup waits for the engine thread to come back after ``stop`` before giving up
ENGINE_DRAIN_S = 60.0
RECORDING_FINISH_S = 15.0


@dataclass
class WorkerContext:
    settings: Settings
    state: WorkerState


class Disconnected(Exception):
    """The client went away."""


class Session:
    status: Status = Status.BUSY_CHAT
    request_type: str = "chat"

    def __init__(self, ws: WebSocket, ctx: WorkerContext, session_id: str) -> None:
        self.ws = ws
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self.state = ctx.state
        self.session_id = session_id
        self.stop = threading.Event()          # handed to the engine: set = return at next chunk
        self.disconnected = False
        self.rec: Union[Recorder, NullRecorder] = NullRecorder()
        self._send_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self.close_code = CLOSE_NORMAL
        self.error_text: Optional[str] = None

    # -------------------------------------------------------------------- serve
    async def serve(self) -> None:
        await self.ws.accept()
        try:
            self.state.try_acquire(self, self.status, self.session_id, self.request_type)
        except Busy as e:
            await self.send(ErrorMsg(error=str(e)))
            await self._close(CLOSE_TRY_AGAIN)
            return
        end_reason = "error"
        try:
            end_reason = await self.main()
        except (Disconnected, WebSocketDisconnect):
            end_reason = "disconnect"
        except FrameTooBig as e:
            await self.send(ErrorMsg(error=str(e)))
            self.close_code, end_reason, self.error_text = CLOSE_TOO_BIG, "frame_too_big", str(e)
        except asyncio.CancelledError:
            end_reason = "cancelled"
            raise
        except Exception as e:  # a bug or engine failure ends this session, never the process
            log.exception("session %s failed", self.session_id)
            self.error_text = f"Internal error: {type(e).__name__}: {e}"
            await self.send(ErrorMsg(error=self.error_text))
            end_reason = "error"
        finally:
            await self._cleanup(end_reason)

    async def main(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _cleanup(self, end_reason: str) -> None:
        self.stop.set()
        for t in self._tasks:
            t.cancel()
        try:
            # the engine thread runs jobs in order: once this no-op runs, our work there is over
            await asyncio.wait_for(self.state.run_engine(lambda: None), ENGINE_DRAIN_S)
            await self.after_engine_idle()
        except asyncio.TimeoutError:
            log.error("session %s: engine did not return within %.0f s of stop", self.session_id, ENGINE_DRAIN_S)
        except Exception:
            log.exception("session %s: engine cleanup failed", self.session_id)
        try:
            done = self.rec.finish(end_reason, self.error_text)
            await asyncio.wait_for(asyncio.to_thread(done.wait, RECORDING_FINISH_S), RECORDING_FINISH_S + 1)
        except Exception:
            log.exception("session %s: finishing the recording failed", self.session_id)
        self.state.release(self)
        await self._close(self.close_code)
        log.info("session %s (%s) ended: %s", self.session_id, self.request_type, end_reason)

    async def after_engine_idle(self) -> None:
        """Hook: reset engine state once no engine call is running (override per mode)."""

    # ------------------------------------------------------------------------ I/O
    def open_recording(self, **meta: Any) -> None:
        st = self.state
        self.rec = open_recorder(self.cfg.record_sessions, self.ctx.settings.data_dir, self.request_type,
                                 self.session_id, worker_index=st.index, backend=st.backend,
                                 max_bytes=self.cfg.max_recording_bytes)
        self.rec.update_meta(**meta)

    async def send(self, msg: Union[BaseModel, str]) -> bool:
        """Send one frame; False (not an exception) when the client is gone."""
        if self.disconnected:
            return False
        text = msg if isinstance(msg, str) else msg.dump()  # type: ignore[attr-defined]
        try:
            async with self._send_lock:
                await self.ws.send_text(text)
            return True
        except Exception:
            self.disconnected = True
            self.stop.set()
            return False

    async def send_error(self, text: str) -> bool:
        return await self.send(ErrorMsg(error=text))

    async def receive(self, cap: int, fatal: bool = False) -> Union[str, bytes]:
        """Next frame's payload. Raises Disconnected, or FrameTooBig when over ``cap``."""
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            raise Disconnected() from None
        if msg["type"] == "websocket.disconnect":
            raise Disconnected()
        data = msg.get("text")
        if data is None:
            data = msg.get("bytes") or b""
        size = len(data)
        if isinstance(data, str) and 4 * size > cap:  # a str of n chars is n..4n UTF-8 bytes
            size = len(data.encode("utf-8", "surrogatepass"))
        if size > cap:
            raise FrameTooBig(size, cap, fatal)
        return data

    async def _close(self, code: int) -> None:
        try:
            if self.ws.application_state == WebSocketState.CONNECTED and self.ws.client_state == WebSocketState.CONNECTED:
                await self.ws.close(code)
        except Exception:
            pass

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        return task

    # ---------------------------------------------------------------- engine bridge
    async def engine(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            return await self.state.run_engine(lambda: fn(*args, **kwargs))
        return await self.state.run_engine(fn, *args)

    async def engine_stream(self, make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        """Iterate ``make()`` on the engine thread, yielding items on the event loop as they come."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def post(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, (kind, value))
            except RuntimeError:  # loop closed: the server is shutting down
                pass

        def pump() -> None:
            try:
                for item in make():
                    post("item", item)
            except BaseException as e:  # re-raised on the loop side
                post("exc", e)
            else:
                post("end", None)

        self.state.submit_engine(pump)
        while True:
            kind, value = await q.get()
            if kind == "item":
                yield value
            elif kind == "exc":
                raise value
            else:
                return


class Gone:
    """Inbox marker: the client disconnected."""


class StreamingSession(Session):
    """A session whose client streams messages (half-duplex, duplex). One reader task parses and
    size-checks every frame and hands it to ``take`` (which queues it in ``inbox``), so a bad
    message is answered at once while the main loop works; a disconnect stops the session."""

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

    async def _reader(self) -> None:
        cap = limits.stream_cap(self.cfg, self.stream_kind)
        try:
            while True:
                try:
                    raw = await self.receive(max(self.cfg.max_prepare_frame_bytes, cap))
                    msg = self.parse(raw)
                    if not isinstance(msg, self.prepare_type) and len(raw) > cap:
                        raise limits.FrameTooBig(len(raw), cap)
                    self.take(msg)
                except (ProtocolError, limits.InputError) as e:
                    await self.send_error(str(e))
        except Disconnected:
            self.disconnected = True
            self.stop.set()
            self.inbox.put(Gone())

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
            if isinstance(item, Gone) or self.disconnected:
                raise Disconnected()
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
