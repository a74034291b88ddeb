"""``/ws/realtime/{session_id}``: an OpenAI Realtime session (the gateway's ``/v1/realtime``).

The session starts at once: ``session.created``, then client events in order. The reader parses
and checks every event (a bad one gets ``error`` with the client's ``event_id``; the session goes
on) and decodes audio; the main loop applies events one at a time:

- audio goes to the engine's VAD (``listener``) when turn detection is on: a turn's start is
  ``speech_started`` (and cancels the active response when ``interrupt_response``), its end is
  ``speech_stopped`` + ``committed``; the turn is transcribed and, with ``create_response``,
  answered. With ``turn_detection: null`` audio collects in the input buffer until ``commit``.
- item edits (create / truncate / delete / retrieve) change the conversation (``items.py``);
- ``response.create`` runs one response (``responses.py``) beside the loop; ``response.cancel``
  stops it within one engine chunk.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Optional, Union

import numpy as np

from ...audio import AudioError
from ...engine.api import EngineBackendError, EngineInputError, Listener, RealtimeView, SpeechEnded, SpeechStarted, \
    VadSettings
from ...protocol import modes
from ...protocol.messages import ErrorMsg, ProtocolError
from ...protocol.realtime import (AudioAppend, AudioClear, AudioCommit, ItemCreate, ItemDelete, ItemIn, ItemRetrieve,
                                  ItemTruncate, OutputAudioClear, RealtimeProtocolError, ResponseCancel, ResponseCreate,
                                  SessionConfig, SessionIn, SessionUpdate, TurnDetection, apply_session, error_event,
                                  new_id, parse_client_event, tool_choice_name)
from ...telephony_audio import decode_input, rate_of
from .. import limits
from ..lifecycle import Deadline, Phase
from ..state import Status
from ..streaming import StreamingConnection
from .items import Conversation, Item, ItemError
from .responses import Responder, Response
from .wire import RealtimeWire

SAMPLE_RATE = 16_000
MAX_APPEND_S = 15.0             # one input_audio_buffer.append
MAX_BUFFER_S = 120.0            # the input buffer (manual turns) and one committed turn
MIN_COMMIT_MS = 100             # OpenAI's rule: a commit needs at least 100 ms of audio
MAX_WAITING_EVENTS = 64         # client events other than audio waiting for the session loop
SPECULATE_MS = 96               # silence inside a turn that starts its answer, unseen, before the endpoint


class _Listen:
    """Inbox item: audio for the VAD / input buffer (decoded on the reader)."""

    def __init__(self, pcm: np.ndarray) -> None:
        self.pcm = pcm


class RealtimeConnection(StreamingConnection):
    request_type = modes.REALTIME.request_type
    statuses = {Phase.AWAIT_PREPARE: Status.BUSY_REALTIME, Phase.ACTIVE: Status.BUSY_REALTIME}
    stream_kind = "realtime"

    def __init__(self, *a: Any, beta: bool = False, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.cfg_rt = SessionConfig()
        self.wire = RealtimeWire(self.send, beta=beta, session_id=self.session_id)
        self.conv = Conversation(self.cfg.realtime_context_chars)
        self.view: Optional[RealtimeView] = None
        self.listener: Optional[Listener] = None
        self.responder: Optional[Responder] = None
        self.buffer: list[np.ndarray] = []          # manual turns: audio since the last commit / clear
        self.buffer_samples = 0
        self.heard_ms = 0.0                          # audio fed so far (speech_started / stopped times)
        self.turn_item: Optional[str] = None         # the item id of the turn being spoken
        self.started = False
        self.in_format = self.cfg_rt.input_format          # the reader's: set as soon as an update arrives
        self.queued_samples = 0                             # audio waiting in the inbox
        self.spec: Optional[Response] = None                # the answer started before the endpoint

    # ------------------------------------------------------------------ errors in the protocol's shape
    async def send(self, msg: Union[Any, str]) -> bool:
        if self.started and isinstance(msg, ErrorMsg):       # base-class paths (internal error …)
            msg = error_event(msg.error, code="server_error", kind="server_error")
        return await super().send(msg)

    async def send_error(self, text: str) -> bool:
        return await self.send(error_event(text))

    @staticmethod
    def timeout_message(d: Deadline) -> str:
        return error_event(f"Session ended ({d.limit.end_reason}) after {d.elapsed_s():g} s", code="session_expired")

    # ------------------------------------------------------------------ the session
    async def main(self) -> str:
        self.started = True
        self.open_recording(label=self.session_id, protocol="openai-realtime", beta=self.wire.beta)
        view, voice = await self.open_view(self.processor.set_realtime_mode, None, speak=True)
        self.view = view
        self.responder = Responder(view, self.conv, self.wire, voice, self.rec)
        await self._new_listener()
        await self.wire.session_created(self.cfg_rt)
        self.life.activate(self.cfg.realtime_idle_timeout_s)
        self.spawn_reader(self._reader())
        while True:
            item = await self.next_item()
            await self.handle(item)

    async def _new_listener(self) -> None:
        td = self.cfg_rt.turn_detection
        if td is None or self.view is None:
            self.listener = None
            return
        vad = VadSettings(threshold=td.threshold, min_silence_duration_ms=td.silence_duration_ms,
                          speech_pad_ms=min(td.prefix_padding_ms, 2000),
                          end_of_turn="silence" if td.type != "semantic_vad" else "eager" if td.eager else "semantic")
        self.listener = await self.engine.call(self.view.listener, vad)

    # ------------------------------------------------------------------ reader
    async def _handle(self, raw: Union[str, bytes], cap: int) -> None:
        try:
            if len(raw) > cap:
                raise RealtimeProtocolError(f"Event too large ({len(raw)} bytes; at most {cap})", code="event_too_large")
            ev = parse_client_event(raw)
            self.take(ev)
        except RealtimeProtocolError as e:
            await self.wire.error(str(e), code=e.code, event_id=e.event_id, param=e.param)
        except (ProtocolError, limits.InputError) as e:
            await self.wire.error(str(e))

    def take(self, msg: Any) -> None:
        """On the reader: decode audio in the format the session has by then (a ``session.update``
        that changes it counts from the next event on), cap what waits, keep the session alive."""
        self.life.heard_audio()                  # any valid event: the session is in use
        if isinstance(msg, AudioAppend):
            fmt = self.in_format
            try:
                pcm = decode_input(msg.audio, fmt, max_samples=int(MAX_APPEND_S * rate_of(fmt)))
            except AudioError as e:
                raise RealtimeProtocolError(f"input_audio_buffer.append: {e}", event_id=msg.event_id,
                                            param="audio") from None
            if pcm.size:
                self._queue_audio(pcm, msg.event_id)
            return
        if self.inbox.count(lambda x: not isinstance(x, _Listen)) >= MAX_WAITING_EVENTS:
            raise RealtimeProtocolError(f"Too many events are waiting (at most {MAX_WAITING_EVENTS}); wait for "
                                        "the server's answers", event_id=getattr(msg, "event_id", None),
                                        code="rate_limit_exceeded")
        if isinstance(msg, SessionUpdate):
            try:                                 # the format, at once; the rest when the loop applies it
                self.in_format = apply_session(replace(self.cfg_rt, input_format=self.in_format),
                                               msg.session).input_format
            except ProtocolError:
                pass                             # the loop answers the error
        r = self.responder.active if self.responder is not None else None
        if isinstance(msg, ResponseCancel) and r is not None and msg.response_id in (None, r.id):
            r.cancel("client_cancelled")     # at once: the loop may be busy
        self.inbox.put(msg)

    def _queue_audio(self, pcm: np.ndarray, event_id: Optional[str]) -> None:
        """At most ``half_duplex_max_queued_audio_s`` of audio waits: with server VAD the oldest goes
        (it is worth less the older it gets); a manual buffer is never cut silently."""
        cap = int(self.cfg.half_duplex_max_queued_audio_s * SAMPLE_RATE)
        if self.queued_samples + pcm.size > cap:
            if self.cfg_rt.turn_detection is None:
                raise RealtimeProtocolError("Audio arrives faster than it is taken; the input audio buffer would "
                                            "lose some", event_id=event_id, code="input_audio_buffer_full")
            while self.queued_samples + pcm.size > cap:
                old = self.inbox.pop_oldest(lambda x: isinstance(x, _Listen))
                if old is None:
                    break
                self.queued_samples -= old.pcm.size
        self.queued_samples += pcm.size
        self.inbox.put(_Listen(pcm))

    # ------------------------------------------------------------------ events
    async def handle(self, item: Any) -> None:
        try:
            await self._apply(item)
        except ItemError as e:
            await self.wire.error(str(e), code=e.code, event_id=getattr(item, "event_id", None))
        except RealtimeProtocolError as e:
            await self.wire.error(str(e), code=e.code, event_id=e.event_id or getattr(item, "event_id", None),
                                  param=e.param)
        except (ProtocolError, EngineInputError) as e:
            await self.wire.error(str(e), event_id=getattr(item, "event_id", None))
        except EngineBackendError as e:
            await self.wire.error(str(e), code="server_error", kind="server_error",
                                  event_id=getattr(item, "event_id", None))

    async def _apply(self, item: Any) -> None:
        if isinstance(item, _Listen):
            self.queued_samples = max(0, self.queued_samples - item.pcm.size)
            await self._audio(item.pcm)
            return
        if isinstance(item, (SessionUpdate, ItemCreate, ItemTruncate, ItemDelete, ResponseCreate)):
            self._drop_speculation()     # it read the conversation and settings as they were
        if isinstance(item, SessionUpdate):
            await self._session_update(item.session)
        elif isinstance(item, AudioCommit):
            await self._commit(item.event_id)
        elif isinstance(item, AudioClear):
            self.buffer, self.buffer_samples = [], 0
            if self.listener is not None:
                await self._new_listener()
            await self.wire.emit("input_audio_buffer.cleared")
        elif isinstance(item, ItemCreate):
            await self._item_create(item)
        elif isinstance(item, ItemTruncate):
            if item.content_index != 0:
                raise ItemError("content_index must be 0 (an item has one content part)", "invalid_content_index")
            r = self.responder.active if self.responder is not None else None
            if r is not None and any(o.id == item.item_id for o in r.output):
                r.cancel("client_cancelled")        # the rest of it was not heard either
                await self.responder.wait()         # type: ignore[union-attr]
            it = self.conv.truncate(item.item_id, item.audio_end_ms)
            await self.wire.emit("conversation.item.truncated", item_id=it.id, content_index=0,
                                 audio_end_ms=item.audio_end_ms)
        elif isinstance(item, ItemDelete):
            self.conv.delete(item.item_id)
            await self.wire.emit("conversation.item.deleted", item_id=item.item_id)
        elif isinstance(item, ItemRetrieve):
            await self.wire.emit("conversation.item.retrieved", item=self.wire.item(self.conv.get(item.item_id)))
        elif isinstance(item, ResponseCreate):
            await self._response_create(item)
        elif isinstance(item, ResponseCancel):
            await self._response_cancel(item)
        elif isinstance(item, OutputAudioClear):
            raise RealtimeProtocolError("output_audio_buffer.clear is for WebRTC/SIP sessions; over WebSocket "
                                        "send conversation.item.truncate", event_id=item.event_id)

    async def _session_update(self, s: SessionIn) -> None:
        old = self.cfg_rt
        self.cfg_rt = apply_session(old, s)
        if self.cfg_rt.turn_detection != old.turn_detection:
            await self._new_listener()
        if self.cfg_rt.input_format != old.input_format:
            self.buffer, self.buffer_samples = [], 0
        await self.wire.session_updated(self.cfg_rt)

    # ------------------------------------------------------------------ audio and turns
    async def _audio(self, pcm: np.ndarray) -> None:
        start_ms = self.heard_ms
        self.heard_ms += pcm.size * 1000 / SAMPLE_RATE
        if self.listener is None:
            if self.buffer_samples + pcm.size > MAX_BUFFER_S * SAMPLE_RATE:
                raise RealtimeProtocolError(f"The input audio buffer holds at most {MAX_BUFFER_S:g} s; commit or "
                                            "clear it", code="input_audio_buffer_full")
            self.buffer.append(pcm)
            self.buffer_samples += pcm.size
            return
        listener = self.listener
        events = await self.engine.call(listener.feed, pcm)
        for ev in events:
            if isinstance(ev, SpeechStarted):
                self._drop_speculation()
                await self._speech_started(max(0.0, start_ms - (self.cfg_rt.turn_detection or TurnDetection()).prefix_padding_ms))
            elif isinstance(ev, SpeechEnded):
                await self._speech_stopped(ev.segment)
        if listener.speaking and not any(isinstance(e, SpeechEnded) for e in events):
            await self._maybe_speculate(listener)

    async def _maybe_speculate(self, listener: Listener) -> None:
        """Quiet for ``SPECULATE_MS`` inside a turn: start its answer now (the endpoint adopts it);
        speech going on drops it unseen."""
        spec, td, rsp = self.spec, self.cfg_rt.turn_detection, self.responder
        if spec is not None and listener.speech_ms > spec.speech_ms + 40:
            self._drop_speculation()
        elif (spec is None and td is not None and td.create_response and rsp is not None and rsp.active is None
              and listener.silence_ms >= SPECULATE_MS and not rsp.speculating()):
            audio = await self.engine.call(listener.current_audio)      # the VAD keeps the turn's audio
            self.spec = rsp.speculate(self.cfg_rt, audio, listener.speech_ms)

    def _drop_speculation(self) -> None:
        if self.spec is not None:
            self.spec.cancel("dropped")
            self.spec = None

    async def _speech_started(self, at_ms: float) -> None:
        self.turn_item = new_id("item")
        await self.wire.emit("input_audio_buffer.speech_started", audio_start_ms=int(at_ms), item_id=self.turn_item)
        td = self.cfg_rt.turn_detection
        r = self.responder.active if self.responder else None
        if r is not None and td is not None and td.interrupt_response:
            r.cancel("turn_detected")
            await self.responder.wait()        # type: ignore[union-attr]

    async def _speech_stopped(self, segment: np.ndarray) -> None:
        item_id = self.turn_item or new_id("item")
        self.turn_item = None
        await self.wire.emit("input_audio_buffer.speech_stopped", audio_end_ms=int(self.heard_ms), item_id=item_id)
        td = self.cfg_rt.turn_detection
        respond = td is not None and td.create_response
        spec, self.spec = self.spec, None
        if spec is not None and respond and self.responder is not None and self.responder.active is None:
            await spec.heard_ready.wait()
            if spec.heard and not spec.stop.is_set():       # adopt: its transcript is the turn's
                it = await self._committed(segment, item_id)
                it.text = spec.heard
                await self._transcribed(it, segment.size)
                self.responder.adopt(spec)
                return
        if spec is not None:
            spec.cancel("dropped")
        await self._user_audio(segment, item_id, respond=respond)

    async def _commit(self, event_id: Optional[str]) -> None:
        if self.listener is not None:
            raise RealtimeProtocolError("With server VAD turns are committed by the server; set turn_detection "
                                        "to null for manual commits", event_id=event_id, code="input_audio_buffer_commit_empty")
        if self.buffer_samples < MIN_COMMIT_MS * SAMPLE_RATE / 1000:
            raise RealtimeProtocolError(f"Error committing input audio buffer: buffer too small. Expected at least "
                                        f"{MIN_COMMIT_MS}ms of audio, but buffer only has "
                                        f"{self.buffer_samples * 1000 / SAMPLE_RATE:.2f}ms of audio.",
                                        event_id=event_id, code="input_audio_buffer_commit_empty")
        pcm = np.concatenate(self.buffer)
        self.buffer, self.buffer_samples = [], 0
        await self._user_audio(pcm, new_id("item"), respond=False)

    async def _committed(self, pcm: np.ndarray, item_id: str) -> Item:
        """A turn's audio enters the conversation: its item (not yet read), ``committed`` and the
        item's ``added``, and its recording."""
        it = Item(item_id, "message", "user", audio=True, text=None)
        prev = self.conv.add(it)
        await self.wire.emit("input_audio_buffer.committed", previous_item_id=prev, item_id=it.id)
        await self.wire.item_added(it, prev)
        self.rec.write_wav(f"user_{it.id}.wav", pcm, SAMPLE_RATE)
        return it

    async def _user_audio(self, pcm: np.ndarray, item_id: str, *, respond: bool) -> None:
        """A committed turn: ``committed``, its item, its transcript; then a response if asked."""
        it = await self._committed(pcm, item_id)
        heard = await self._transcribe(pcm)
        if it not in self.conv.items:          # deleted while it was read
            return
        it.text = heard
        await self._transcribed(it, pcm.size)
        if respond and heard and (self.responder is None or self.responder.active is None):
            self.responder.start(self.cfg_rt)    # type: ignore[union-attr]

    async def _transcribed(self, it: Item, samples: int) -> None:
        """The item's transcript is known: ``…transcription.completed`` (or ``.failed``), then ``item.done``."""
        if it.text:
            await self.wire.emit("conversation.item.input_audio_transcription.completed", item_id=it.id,
                                 content_index=0, transcript=it.text,
                                 usage={"type": "duration", "seconds": round(samples / SAMPLE_RATE, 3)})
        else:
            await self.wire.emit("conversation.item.input_audio_transcription.failed", item_id=it.id, content_index=0,
                                 error={"type": "transcription_error", "code": "no_speech",
                                        "message": "No words were recognized in this audio", "param": None})
        if it in self.conv.items:
            await self.wire.item_done(it, self.conv.previous_id(it))

    async def _transcribe(self, pcm: np.ndarray) -> str:
        """On a thread of its own: the engine thread keeps serving the VAD meanwhile."""
        view = self.view
        assert view is not None
        if pcm.size > MAX_BUFFER_S * SAMPLE_RATE:
            pcm = pcm[-int(MAX_BUFFER_S * SAMPLE_RATE):]
        cfg = self.cfg_rt
        return (await asyncio.to_thread(view.transcribe, pcm, cfg.language, cfg.instructions)).strip()

    # ------------------------------------------------------------------ items and responses
    async def _item_create(self, ev: ItemCreate) -> None:
        it, pcm = self._item_from(ev.item)
        prev = self.conv.add(it, ev.previous_item_id)
        await self.wire.item_added(it, prev)
        if pcm is not None:                      # user audio: read once, now
            it.text = await self._transcribe(pcm)
            await self._transcribed(it, pcm.size)
        else:
            await self.wire.item_done(it, prev)

    def _item_from(self, src: ItemIn) -> tuple[Item, Optional[np.ndarray]]:
        """The item, and its user audio (16 kHz) when it has some to transcribe."""
        item_id = src.id or new_id("item")
        if src.type == "function_call_output":
            if not src.call_id:
                raise ItemError("A function_call_output item needs the call_id it answers", "missing_call_id")
            return Item(item_id, "function_call_output", call_id=src.call_id, output=src.output or ""), None
        if src.type == "function_call":
            if not (src.call_id and src.name):
                raise ItemError("A function_call item needs call_id and name", "invalid_value")
            return Item(item_id, "function_call", call_id=src.call_id, name=src.name,
                        arguments=src.arguments or "{}"), None
        if src.role is None:
            raise ItemError("A message item needs a role (user, assistant or system)", "missing_role")
        texts: list[str] = []
        audio: Optional[np.ndarray] = None
        for c in src.content:
            if c.type == "input_audio" and src.role == "user":
                if c.transcript:
                    texts.append(c.transcript)
                elif c.audio:
                    fmt = self.cfg_rt.input_format
                    try:
                        audio = decode_input(c.audio, fmt, max_samples=int(MAX_BUFFER_S * rate_of(fmt)))
                    except AudioError as e:
                        raise ItemError(f"input_audio: {e}") from None
            elif c.text is not None or c.transcript is not None:
                texts.append(c.text if c.text is not None else (c.transcript or ""))
        if audio is not None and audio.size:
            return Item(item_id, "message", "user", audio=True, text=None), audio
        is_audio = any(c.type in ("audio", "output_audio", "input_audio") for c in src.content)
        return Item(item_id, "message", src.role, audio=is_audio, text=" ".join(t for t in texts if t).strip()), None

    async def _response_create(self, ev: ResponseCreate) -> None:
        assert self.responder is not None
        if self.responder.active is not None:
            raise RealtimeProtocolError("Conversation already has an active response in progress",
                                        event_id=ev.event_id, code="conversation_already_has_active_response")
        cfg = self.cfg_rt
        o = ev.response
        if o is not None:
            patch = SessionIn.model_validate({k: v for k, v in o.model_dump(exclude_unset=True).items()
                                              if k in ("instructions", "output_modalities", "modalities", "tools",
                                                       "temperature", "max_output_tokens",
                                                       "max_response_output_tokens")})
            cfg = apply_session(cfg, patch)
            if o.tool_choice is not None:
                cfg = apply_session(cfg, SessionIn(tool_choice=tool_choice_name(o.tool_choice)))
            if o.conversation == "none":
                raise RealtimeProtocolError("Out-of-band responses (conversation: none) are not supported",
                                            event_id=ev.event_id, param="response.conversation")
        self.responder.start(cfg, o.metadata if o is not None else None)

    async def _response_cancel(self, ev: ResponseCancel) -> None:
        assert self.responder is not None
        r = self.responder.active
        if r is None or (ev.response_id and ev.response_id != r.id):
            if r is None and self.responder.count and ev.response_id is None:
                return      # already over (the cancel crossed response.done): nothing to say
            raise RealtimeProtocolError("There is no active response to cancel", event_id=ev.event_id,
                                        code="response_cancel_not_active")
        r.cancel("client_cancelled")
        await self.responder.wait()

    # ------------------------------------------------------------------ end
    async def after_engine_idle(self) -> None:
        self._drop_speculation()
        if self.responder is not None:            # no reply thread outlives the session
            await self.responder.settle(30)
        self.rec.update_meta(responses=self.responder.count if self.responder else 0,
                             items=[self.wire.item(it) for it in self.conv.items][-50:])
        if self.view is not None:
            await self.engine.call(self.view.reset)


def beta_requested(header: Optional[str], query: Optional[str]) -> bool:
    """A beta client: ``OpenAI-Beta: realtime=v1`` (the gateway passes it on as ``?beta=1``)."""
    return (query == "1") or bool(header and "realtime=v1" in header)

