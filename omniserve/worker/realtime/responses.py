"""One model response of a realtime session: from ``response.created`` to ``response.done``.

The reply runs on a thread of its own (``bridge.stream_on`` + ``own_thread``), not on the engine
thread, so the session keeps feeding the VAD while it speaks: speech from the user can cancel it
(barge-in). A cancel sets the response's stop event; from that moment no delta is written, and
``response.done`` (status ``cancelled``) closes it once the reply's threads have let go.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterator, Iterator, Optional

import numpy as np

from ...engine.api import (Delta, EngineBackendError, EngineInputError, Event, GenerationParams, Message, Prefilled,
                           RealtimeView, ReplyDone, Text, Tool, Voice)
from ...protocol.realtime import SessionConfig, new_id
from ..bridge import own_thread, stream_on
from ..recorder import AnyRecorder
from ...audio import OUT_RATE
from ...telephony_audio import encode_output
from .items import Conversation, Item
from .wire import RealtimeWire

log = logging.getLogger("omniserve.worker.realtime")

DELTA_SAMPLES = OUT_RATE // 2   # speech goes out in pieces of at most 0.5 s


@dataclass
class Response:
    id: str
    cfg: SessionConfig                   # the session's settings with this response's overrides
    stop: threading.Event = field(default_factory=threading.Event)
    status: str = "in_progress"
    reason: Optional[str] = None         # status_details.reason
    error: Optional[dict] = None
    output: list[Item] = field(default_factory=list)
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    task: Optional[asyncio.Task] = None
    # a speculation: started on the turn's audio before the VAD's endpoint, nothing written until
    # ``release`` (the endpoint came: adopt it) — or dropped unseen (the user spoke on)
    audio: Optional[np.ndarray] = None
    speech_ms: float = 0.0
    heard: Optional[str] = None
    heard_ready: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)   # ``stop``, seen from the event loop
    messages: list[Message] = field(default_factory=list)   # what it answers: the conversation when it began
    first: Optional[Event] = None                            # a speculation's first event, read ahead
    failed: Optional[BaseException] = None                   # … or the error it met meanwhile
    metadata: Optional[dict] = None                          # the client's, echoed (LiveKit matches on it)

    def cancel(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()
            self.cancelled.set()


def tools_of(cfg: SessionConfig) -> list[Tool]:
    return [Tool(t.name, t.description, t.parameters) for t in cfg.tools]


class Responder:
    """Runs responses for one session; at most one at a time (``active``)."""

    def __init__(self, view: RealtimeView, conv: Conversation, wire: RealtimeWire, voice: Optional[Voice],
                 rec: AnyRecorder) -> None:
        self.view, self.conv, self.wire, self.voice, self.rec = view, conv, wire, voice, rec
        self.active: Optional[Response] = None
        self.count = 0
        self._spoken: dict[str, list[np.ndarray]] = {}     # an assistant item's speech, for the recording
        self.unseen: list[Response] = []                    # speculations, until their tasks end

    def start(self, cfg: SessionConfig, metadata: Optional[dict] = None) -> Response:
        r = Response(new_id("resp"), cfg, messages=self.conv.messages(cfg.instructions), metadata=metadata)
        r.released.set()
        self.active = r
        r.task = asyncio.create_task(self._run(r))
        return r

    def speculate(self, cfg: SessionConfig, audio: np.ndarray, speech_ms: float) -> Response:
        """Transcribe ``audio`` and start answering it, unseen (not ``active`` until adopted)."""
        r = Response(new_id("resp"), cfg, audio=audio, speech_ms=speech_ms,
                     messages=self.conv.messages(cfg.instructions))
        r.task = asyncio.create_task(self._run(r))
        self.unseen = [u for u in self.unseen if u.task is not None and not u.task.done()] + [r]
        return r

    def speculating(self) -> bool:
        """Whether an unseen answer still works (dropped or not): at most one at a time."""
        return any(u.task is not None and not u.task.done() for u in self.unseen)

    async def settle(self, timeout: float) -> None:
        """Cancel whatever runs and wait (bounded) until its threads have let go: the session ends."""
        running = [*self.unseen, *([self.active] if self.active else [])]
        for r in running:
            r.cancel("client_cancelled")
        tasks = [r.task for r in running if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def adopt(self, r: Response) -> None:
        self.active = r
        r.released.set()

    async def wait(self) -> None:
        r = self.active
        if r is not None and r.task is not None:
            await asyncio.shield(r.task)

    def obj(self, r: Response) -> dict:
        """The ``response`` object of ``response.created`` / ``response.done``."""
        total = r.input_tokens + r.output_tokens
        usage = {"total_tokens": total, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                 "input_token_details": {"text_tokens": r.input_tokens, "audio_tokens": 0,
                                         "cached_tokens": r.cached_tokens},
                 "output_token_details": {"text_tokens": r.output_tokens, "audio_tokens": 0}}
        details: Optional[dict] = None
        if r.status in ("cancelled", "incomplete"):
            details = {"type": r.status, "reason": r.reason}
        elif r.status == "failed":
            details = {"type": "failed", "error": r.error}
        out: dict[str, Any] = {"id": r.id, "object": "realtime.response", "status": r.status, "status_details": details,
               "output": [self.wire.item(it) for it in r.output],
               "usage": usage if r.status != "in_progress" else None}
        modalities = list(r.cfg.output_modalities) if not self.wire.beta else (
            ["text", "audio"] if r.cfg.audio_out else ["text"])
        out["modalities" if self.wire.beta else "output_modalities"] = modalities
        if r.metadata is not None:
            out["metadata"] = r.metadata
        return out

    # ------------------------------------------------------------------ one response
    async def _run(self, r: Response) -> None:
        stream: Optional[AsyncGenerator[Event, None]] = None
        try:
            if r.audio is not None:
                stream = await self._unseen(r)
                if stream is None:
                    return
            await self._answer(r, stream)
        except asyncio.CancelledError:
            r.cancel("client_cancelled")
            raise
        except Exception:                       # a bug here: this response ends, the session goes on
            log.exception("realtime response %s failed", r.id)
            r.status = "failed"
        finally:
            r.heard_ready.set()
            r.stop.set()                        # whatever happened, the reply's threads end
            if stream is not None:
                await stream.aclose()
            if self.active is r:
                self.active = None

    async def _unseen(self, r: Response) -> Optional[AsyncGenerator[Event, None]]:
        """A speculation: read the turn, start the answer, then wait to be adopted (the stream, its
        first event kept in ``r.first``) or dropped (None, nothing was written)."""
        assert r.audio is not None
        if not r.stop.is_set():
            try:
                r.heard = (await asyncio.to_thread(self.view.transcribe, r.audio)).strip()
            except Exception:
                r.heard = ""
        r.heard_ready.set()
        if not r.heard or r.stop.is_set():
            return None
        r.messages.append(Message("user", [Text(r.heard)]))
        stream = self._stream(r, r.messages)
        try:
            r.first = await stream.__anext__()        # ASR and prefill done; the reply is under way
        except StopAsyncIteration:
            r.first = None
        except Exception as e:                        # reported once it is adopted
            r.failed = e
        waits = {asyncio.create_task(r.released.wait()), asyncio.create_task(r.cancelled.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        if not r.released.is_set():                   # dropped before it was adopted: nobody saw it
            r.stop.set()
            await stream.aclose()
            return None
        return stream

    async def _answer(self, r: Response, stream: Optional[AsyncGenerator[Event, None]]) -> None:
        await self.wire.emit("response.created", response=self.obj(r))
        msg: Optional[Item] = None
        done: Optional[ReplyDone] = None
        try:
            if r.failed is not None:
                raise r.failed
            if stream is None:
                stream = self._stream(r, r.messages)
            async for ev in _chain(r.first, stream):
                if r.stop.is_set():
                    continue                    # cancelled: nothing more goes out
                if isinstance(ev, Prefilled):
                    r.input_tokens, r.cached_tokens = ev.input_tokens, max(0, ev.input_tokens - ev.evaluated)
                elif isinstance(ev, Delta):
                    if msg is None:
                        msg = await self._open_message(r)
                    await self._delta(r, msg, ev)
                elif isinstance(ev, ReplyDone):
                    done = ev
                    r.output_tokens = ev.generated_tokens
        except (EngineInputError, EngineBackendError) as e:
            kind = "server_error" if isinstance(e, EngineBackendError) else "invalid_request_error"
            r.status, r.error = "failed", {"type": kind, "message": str(e)}
            await self.wire.error(str(e), code="response_failed", kind=kind)
        except Exception as e:             # the session goes on; this response failed
            log.exception("realtime response %s failed", r.id)
            r.status, r.error = "failed", {"type": "server_error", "message": f"Internal error ({type(e).__name__})"}
            await self.wire.error(r.error["message"], code="response_failed", kind="server_error")
        finally:
            if stream is not None:
                await stream.aclose()
        if r.stop.is_set():
            r.status = "cancelled"
        elif r.status == "in_progress":
            r.status = "incomplete" if done is not None and done.finish_reason == "length" else "completed"
            if r.status == "incomplete":
                r.reason = "max_output_tokens"
        if msg is not None:
            await self._close_message(r, msg)
        if done is not None and done.tool_calls and r.status == "completed":
            for call in done.tool_calls:
                await self._function_call(r, call.id, call.name, call.arguments)
        if self.active is r:
            self.active = None                  # before response.done: the client may answer at once
        self.count += 1
        await self.wire.emit("response.done", response=self.obj(r))
        self.rec.add_event({"t": self.rec.now(), "type": "response", "id": r.id, "status": r.status,
                            "output": [self.wire.item(it) for it in r.output]})

    def _stream(self, r: Response, messages: list[Message]) -> AsyncGenerator[Event, None]:
        cfg = r.cfg
        gen = GenerationParams(temperature=cfg.temperature, language=cfg.language)
        if cfg.max_output_tokens is not None:
            gen.max_new_tokens = cfg.max_output_tokens
        voice = self.voice if cfg.audio_out else None
        tools = tools_of(cfg) if cfg.tool_choice != "none" else []
        view = self.view

        def make() -> Iterator[Event]:
            return view.reply(messages, generation=gen, voice=voice, stop=r.stop, tools=tools,
                              tool_choice=cfg.tool_choice if tools else "auto")

        return stream_on(own_thread, make, r.stop)

    async def _add_output(self, r: Response, it: Item) -> tuple[int, Optional[str]]:
        """A new output item: in the conversation, ``response.output_item.added`` and the item's
        ``added`` event; returns its output index and the id it follows."""
        prev = self.conv.add(it)
        r.output.append(it)
        idx = len(r.output) - 1
        await self.wire.emit("response.output_item.added", response_id=r.id, output_index=idx, item=self.wire.item(it))
        await self.wire.item_added(it, prev)
        return idx, prev

    async def _open_message(self, r: Response) -> Item:
        it = Item(new_id("item"), "message", "assistant", audio=r.cfg.audio_out, text="", status="in_progress")
        idx, _ = await self._add_output(r, it)
        await self.wire.emit("response.content_part.added", response_id=r.id, item_id=it.id, output_index=idx,
                             content_index=0, part=self.wire.part(it))
        return it

    async def _delta(self, r: Response, it: Item, ev: Delta) -> None:
        idx = r.output.index(it)
        ids = {"response_id": r.id, "item_id": it.id, "output_index": idx, "content_index": 0}
        if ev.text:
            it.text = (it.text or "") + ev.text
            name = "response.output_audio_transcript.delta" if it.audio else "response.output_text.delta"
            await self.wire.emit(self.wire.name(name), **ids, delta=ev.text)
        if ev.audio is not None and ev.audio.size and it.audio:
            pcm = np.asarray(ev.audio, np.float32)
            it.audio_pieces_ms.append(pcm.size * 1000 / OUT_RATE)
            self._spoken.setdefault(it.id, []).append(pcm)
            for i in range(0, pcm.size, DELTA_SAMPLES):
                if r.stop.is_set():
                    return
                await self.wire.emit(self.wire.name("response.output_audio.delta"), **ids,
                                     delta=encode_output(pcm[i:i + DELTA_SAMPLES], r.cfg.output_format))

    async def _close_message(self, r: Response, it: Item) -> None:
        idx = r.output.index(it)
        ids = {"response_id": r.id, "item_id": it.id, "output_index": idx}
        it.text = (it.text or "").strip()
        it.status = "completed" if r.status == "completed" else "incomplete"
        spoken = self._spoken.pop(it.id, [])
        if spoken:
            self.rec.write_wav(f"assistant_{it.id}.wav", np.concatenate(spoken), OUT_RATE)
        if it.audio:
            await self.wire.emit(self.wire.name("response.output_audio.done"), **ids, content_index=0)
            await self.wire.emit(self.wire.name("response.output_audio_transcript.done"), **ids, content_index=0,
                                 transcript=it.text)
        else:
            await self.wire.emit(self.wire.name("response.output_text.done"), **ids, content_index=0, text=it.text)
        await self.wire.emit("response.content_part.done", **ids, content_index=0, part=self.wire.part(it))
        await self.wire.emit("response.output_item.done", response_id=r.id, output_index=idx, item=self.wire.item(it))
        await self.wire.item_done(it, self.conv.previous_id(it))

    async def _function_call(self, r: Response, call_id: str, name: str, arguments: str) -> None:
        it = Item(new_id("item"), "function_call", call_id=call_id, name=name, arguments="", status="in_progress")
        idx, prev = await self._add_output(r, it)
        ids = {"response_id": r.id, "item_id": it.id, "output_index": idx, "call_id": call_id}
        await self.wire.emit("response.function_call_arguments.delta", **ids, delta=arguments)
        it.arguments, it.status = arguments, "completed"
        await self.wire.emit("response.function_call_arguments.done", **ids, name=name, arguments=arguments)
        await self.wire.emit("response.output_item.done", response_id=r.id, output_index=idx, item=self.wire.item(it))
        await self.wire.item_done(it, prev)


async def _chain(first: Optional[Event], rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    if first is not None:
        yield first
    async for ev in rest:
        yield ev
