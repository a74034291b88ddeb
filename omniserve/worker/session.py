"""What every WebSocket connection shares: claiming a slot of the worker (the one its
``SLOT_HEADER`` names, else any idle one), the session's lifecycle (``lifecycle.py``, which the
slot's status follows), framed I/O with size caps and send
deadlines, the engine (``bridge.py``) and its voice, and the ONE cleanup path.

A subclass implements ``main()`` and returns why the session ended (``"stop"``, ``"done"`` …),
or raises ``Ended``. Whatever way it ends — return, client stop, a deadline, disconnect, a client
that stops reading, a dead reader task, exception — ``serve()`` runs the same ``finally``: stop
the engine work, wait for the engine thread to be free, finish the recording, return the worker
to idle, close the socket.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Coroutine, Mapping, Optional, TypeVar, Union

import numpy as np
from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..config import Settings
from ..engine.api import Processor, Voice
from ..protocol.messages import CLOSE_NORMAL, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN, ErrorMsg
from ..protocol.worker import slot_from_header
from ..ws_server import abort_function
from .bridge import EngineBridge
from .lifecycle import Lifecycle, Phase
from .limits import FrameTooBig
from .metrics import CLIENT_NOT_READING, ENGINE_STUCK, REFUSED, WorkerMetrics
from .recorder import AnyRecorder, NullRecorder, open_recorder
from .state import Busy, Status, WorkerRuntime

log = logging.getLogger("omniserve.worker.session")

# How long cleanup waits for the engine thread to come back after ``stop`` before giving up
ENGINE_DRAIN_S = 60.0
RECORDING_FINISH_S = 15.0

V = TypeVar("V")


@dataclass
class WorkerContext:
    settings: Settings
    runtime: WorkerRuntime
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)


def requested_slot(header: Optional[str], runtime: WorkerRuntime) -> Optional[int]:
    """The slot a session's ``SLOT_HEADER`` names (None: any); a malformed or out-of-range one is
    refused like a busy slot (the gateway then claims again)."""
    try:
        return slot_from_header(header, runtime.slots_total)
    except ValueError as e:
        raise Busy(f"Worker busy ({e})") from None


class Disconnected(Exception):
    """The client went away (or stopped reading and was dropped)."""


class ReaderFailed(Exception):
    """The session's reader task died: nothing more can be read, so the session ends."""


class Ended(Exception):
    """The session ends here; ``reason`` is the recording's ``end_reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """One client's session on this worker, from the claim to the cleanup."""

    request_type: str = "chat"
    statuses: ClassVar[Mapping[Phase, Status]] = {}   # the worker's /health status in each phase
    session_limit: ClassVar[bool] = False             # whether ``max_session_s`` bounds the session

    def __init__(self, ws: WebSocket, ctx: WorkerContext, session_id: str, slot: Optional[str] = None) -> None:
        self.ws = ws
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self.runtime = ctx.runtime
        self.metrics = ctx.metrics
        self.session_id = session_id
        self.slot_header = slot                # SLOT_HEADER as sent (the gateway's claim), validated in serve()
        self.slot: Optional[int] = None        # the slot this session holds, once it holds one
        self.stop = threading.Event()          # handed to the engine: set = return at next chunk
        self.engine = EngineBridge(self.runtime, self.stop)
        self.life = Lifecycle(prepare_wait_s=self.cfg.prepare_wait_s,
                              max_session_s=self.cfg.max_session_s if self.session_limit else None,
                              on_phase=self._phase_changed)
        self.disconnected = False
        self.aborted = False                   # the connection was dropped (no polite close)
        self.reader_failed = False
        self.rec: AnyRecorder = NullRecorder()
        self._send_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self.close_code = CLOSE_NORMAL
        self.error_text: Optional[str] = None

    # -------------------------------------------------------------------- serve
    async def serve(self) -> None:
        try:
            await asyncio.wait_for(self.ws.accept(), self.cfg.send_timeout_s)
        except (asyncio.TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
            self.abort()
            return
        try:
            self.slot = self.runtime.try_acquire(self, self.statuses[Phase.AWAIT_PREPARE], self.session_id,
                                                 self.request_type, requested_slot(self.slot_header, self.runtime))
        except Busy as e:
            self.metrics.session_ended(self.request_type, REFUSED)
            await self.send(ErrorMsg(error=str(e)))
            await self._close(CLOSE_TRY_AGAIN)
            return
        self.life.begin()
        end_reason = "error"
        try:
            end_reason = await self.main()
        except Ended as e:
            end_reason = e.reason
        except (Disconnected, WebSocketDisconnect):
            end_reason = "disconnect"
        except FrameTooBig as e:
            await self.send(ErrorMsg(error=str(e)))
            self.close_code, end_reason, self.error_text = CLOSE_TOO_BIG, "frame_too_big", str(e)
        except asyncio.CancelledError:
            end_reason = "cancelled"
            raise
        except Exception as e:  # a bug or engine failure ends this session, never the process
            if not isinstance(e, ReaderFailed):
                log.exception("session %s failed", self.session_id)
            # the client learns only the kind of failure: texts of internal errors may name files
            self.error_text = f"Internal error ({type(e).__name__})"
            await self.send(ErrorMsg(error=self.error_text))
            end_reason = "error"
        finally:
            await self._cleanup(end_reason)

    async def main(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _cleanup(self, end_reason: str) -> None:
        self.life.end()
        self.stop.set()
        for t in self._tasks:
            t.cancel()
        try:
            # the engine thread runs jobs in order: once it is idle, our work there is over
            await asyncio.wait_for(self.engine.idle(), ENGINE_DRAIN_S)
            await self.after_engine_idle()
        except asyncio.TimeoutError:
            self.metrics.error(ENGINE_STUCK)
            log.error("session %s: engine did not return within %.0f s of stop", self.session_id, ENGINE_DRAIN_S)
        except Exception:
            log.exception("session %s: engine cleanup failed", self.session_id)
        try:
            done = self.rec.finish(end_reason, self.error_text)
            await asyncio.wait_for(asyncio.to_thread(done.wait, RECORDING_FINISH_S), RECORDING_FINISH_S + 1)
        except Exception:
            log.exception("session %s: finishing the recording failed", self.session_id)
        self.runtime.release(self)
        self.metrics.session_ended(self.request_type, end_reason)   # before the close: a client that saw it sees this
        await self._close(self.close_code)
        log.info("session %s (%s, slot %s) ended: %s", self.session_id, self.request_type, self.slot, end_reason)

    async def after_engine_idle(self) -> None:
        """Hook: reset engine state once no engine call is running (override per mode)."""

    def _phase_changed(self, phase: Phase) -> None:
        status = self.statuses.get(phase)
        if status is not None:
            self.runtime.set_status(self, status)

    # --------------------------------------------------------------------- engine
    @property
    def processor(self) -> Processor:
        proc = self.runtime.processor
        if proc is None:  # a worker is idle, so claimable, only once its engine is loaded
            raise RuntimeError("no engine loaded")
        return proc

    async def open_view(self, set_mode: Callable[[], V], reference: Optional[np.ndarray],
                        speak: bool = True) -> tuple[V, Optional[Voice]]:
        """Switch the engine to this session's view, and pick the voice it speaks with: matched to
        the client's reference audio, else the default one; None when speech is off. (The prefix
        cache the worker advertised was the previous session's.)"""
        self.runtime.cached_prefix_hashes = []
        voice = await self.engine.call(self.processor.voice, reference) if speak else None
        view = await self.engine.call(set_mode)
        return view, voice

    # ------------------------------------------------------------------------ I/O
    def open_recording(self, **meta: Any) -> None:
        rt = self.runtime
        self.rec = open_recorder(self.cfg.record_sessions, self.ctx.settings.data_dir, self.request_type,
                                 self.session_id, worker_index=rt.index, backend=rt.backend,
                                 max_bytes=self.cfg.max_recording_bytes)
        self.rec.update_meta(**meta)

    async def send(self, msg: Union[BaseModel, str]) -> bool:
        """Send one frame within ``send_timeout_s``; False (not an exception) when the client is
        gone. A client that does not take the frame in time is dropped: the connection is
        aborted and the session ends as a disconnect."""
        if self.disconnected:
            return False
        try:
            text = msg if isinstance(msg, str) else msg.dump()  # type: ignore[attr-defined]
        except Exception:
            log.exception("session %s: a message could not be serialized", self.session_id)
            return False
        try:
            async with asyncio.timeout(self.cfg.send_timeout_s):   # no extra task per frame
                await self._send_text(text)
            return True
        except asyncio.TimeoutError:
            self.metrics.error(CLIENT_NOT_READING)
            log.warning("session %s: the client took no data for %.1f s; dropping it",
                        self.session_id, self.cfg.send_timeout_s)
            self.mark_gone(abort=True)
            return False
        except Exception:
            self.mark_gone()
            return False

    async def _send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    async def send_error(self, text: str) -> bool:
        return await self.send(ErrorMsg(error=text))

    def mark_gone(self, abort: bool = False) -> None:
        """The client is gone (or must be): stop the engine work and wake the main loop."""
        self.disconnected = True
        self.stop.set()
        if abort:
            self.abort()
        self.wake()

    def wake(self) -> None:
        """Hook: make a main loop that waits for client input notice the session is over."""

    def abort(self) -> None:
        """Drop the connection at once (a polite close would wait for a peer that does not read)."""
        if self.aborted:
            return
        self.aborted = True
        fn = abort_function(dict(self.ws.scope))
        if fn is not None:
            fn()

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
        if self.aborted:
            return
        try:
            if self.ws.application_state == WebSocketState.CONNECTED and self.ws.client_state == WebSocketState.CONNECTED:
                await asyncio.wait_for(self.ws.close(code), self.cfg.send_timeout_s)
        except asyncio.TimeoutError:
            self.abort()
        except Exception:
            pass

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        return task

    def spawn_reader(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """The task that reads the client; if it dies the session ends at once (``ReaderFailed``)."""
        task = self.spawn(coro)
        task.add_done_callback(self._reader_done)
        return task

    def _reader_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("session %s: reader failed", self.session_id, exc_info=task.exception())
        self.reader_failed = True
        self.stop.set()
        self.wake()
