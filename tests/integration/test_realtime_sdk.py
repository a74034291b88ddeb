"""``/v1/realtime`` with the official ``openai`` SDK as the client: a real gateway process in front of
the shared REAL embedded worker (tests/integration/conftest.py), everything on loopback.

Every server event the SDK receives is validated against the SDK's own pydantic types
(``openai.types.realtime`` for GA clients, ``openai.types.beta.realtime`` for beta ones); our
``omniserve.*`` extension events are the only ones outside that schema.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Optional

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from omniserve.audio import resample
from tests.conftest import piper_speech, silence, word_error_rate
from tests.support.gateway_procs import start_gateway

GA_EVENT = TypeAdapter(RealtimeServerEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                          "required": ["city"]}}


@pytest.fixture
def gw(idle, tmp_path):
    g = start_gateway(tmp_path, [idle.base], 1, data_dir=idle.data_dir)
    yield g
    g.stop()


def client(gw: Any, key: str = "sk-anything") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=gw.url + "/v1", websocket_base_url=gw.ws + "/v1")


def pcm16_24k(pcm16k: np.ndarray) -> bytes:
    x = np.clip(resample(pcm16k.astype(np.float32), 16000, 24000), -1, 1)
    return (x * 32767).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Events:
    """Receives the connection's events (each checked against the SDK's schema) and keeps them."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[dict] = []

    async def next(self, timeout: float = 120.0) -> dict:
        raw = await asyncio.wait_for(self.conn.recv_bytes(), timeout)
        ev = json.loads(raw)
        if not ev["type"].startswith("omniserve."):
            GA_EVENT.validate_python(ev)       # raises on a shape the SDK does not accept
        ev["_t"] = time.monotonic()
        self.seen.append(ev)
        return ev

    async def until(self, want: str, timeout: float = 180.0) -> list[dict]:
        got = []
        deadline = time.monotonic() + timeout
        while True:
            ev = await self.next(max(0.1, deadline - time.monotonic()))
            got.append(ev)
            if ev["type"] == want:
                return got
            assert ev["type"] != "error" or want == "error", ev


async def open_session(gw: Any, **session: Any) -> tuple[Any, Events, Any]:
    cm = client(gw).realtime.connect(model="omniserve")
    conn = await cm.__aenter__()
    ev = Events(conn)
    first = await ev.until("session.created")
    assert first[0]["type"] == "omniserve.queue.assigned" or first[0]["type"] == "session.created"
    session.setdefault("temperature", 0.1)    # our extension to the GA session (beta has it): steady answers
    if session:
        await conn.session.update(session={"type": "realtime", **session})
        await ev.until("session.updated")
    return conn, ev, cm


async def speak(conn: Any, pcm16k: np.ndarray, tail_s: float = 1.2) -> None:
    data = pcm16_24k(np.concatenate([silence(0.3), pcm16k, silence(tail_s)]))
    step = 4800  # 100 ms of pcm16 at 24 kHz
    for i in range(0, len(data), step):
        await conn.input_audio_buffer.append(audio=b64(data[i:i + step]))


def of(events: list[dict], t: str) -> list[dict]:
    return [e for e in events if e["type"] == t]


def transcript(events: list[dict]) -> str:
    return "".join(e["delta"] for e in of(events, "response.output_audio_transcript.delta"))


def audio_of(events: list[dict]) -> np.ndarray:
    raw = b"".join(base64.b64decode(e["delta"]) for e in of(events, "response.output_audio.delta"))
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768


async def test_spoken_question_gets_transcript_and_speech(gw, idle, request):
    conn, ev, cm = await open_session(gw, instructions="Answer in one short sentence.",
                                      audio={"input": {"transcription": {"model": "whisper-1"}}})
    await speak(conn, piper_speech("What is the capital of France?"))
    events = await ev.until("response.done")
    heard = of(events, "conversation.item.input_audio_transcription.completed")
    assert heard and "france" in heard[0]["transcript"].lower(), heard
    assert of(events, "input_audio_buffer.speech_started") and of(events, "input_audio_buffer.committed")
    said = transcript(events)
    assert "paris" in said.lower(), said
    done = of(events, "response.done")[0]["response"]
    assert done["status"] == "completed" and done["usage"]["output_tokens"] > 0 and done["usage"]["input_tokens"] > 0
    # the speech is the transcript: Whisper reads it back
    from omniserve.engine.backends.embedded.components.asr import WhisperASR
    pcm = resample(audio_of(events), 24000, 16000)
    assert pcm.size > 16000 * 0.5
    back = WhisperASR("tiny.en").transcribe(pcm)
    assert word_error_rate(said, back) <= 0.4, (back, said)    # the speech says the transcript
    await cm.__aexit__(None, None, None)


async def test_text_in_text_and_audio_out_and_text_only(gw, idle):
    conn, ev, cm = await open_session(gw, instructions="Answer in one short sentence.")
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": "What color is the sky on a clear day?"}]})
    await ev.until("conversation.item.done")
    await conn.response.create()
    events = await ev.until("response.done")
    assert "blue" in transcript(events).lower() and of(events, "response.output_audio.delta")
    # a text-only session never speaks
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
    await ev.until("session.updated")
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": "And what color is grass?"}]})
    await conn.response.create()
    events = await ev.until("response.done")
    text = "".join(e["delta"] for e in of(events, "response.output_text.delta"))
    assert "green" in text.lower() and not of(events, "response.output_audio.delta"), text
    await cm.__aexit__(None, None, None)


async def test_cancel_mid_answer_then_nothing_after_done(gw, idle):
    conn, ev, cm = await open_session(gw, instructions="Tell long detailed stories.")
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": "Tell me a long story about a dragon and a knight."}]})
    await conn.response.create()
    while (await ev.next())["type"] != "response.output_audio_transcript.delta":
        pass
    await conn.response.cancel()
    events = await ev.until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    # nothing of that response after its response.done
    with pytest.raises(asyncio.TimeoutError):
        while True:
            e = await ev.next(timeout=1.5)
            assert not e["type"].startswith("response."), e
    await cm.__aexit__(None, None, None)


async def test_barge_in_cancels_the_answer(gw, idle):
    conn, ev, cm = await open_session(gw, instructions="Tell long detailed stories.")
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": "Tell me a long story about the sea."}]})
    await conn.response.create()
    while (await ev.next())["type"] != "response.output_audio.delta":
        pass
    await speak(conn, piper_speech("Stop. What is two plus two?"), tail_s=1.5)
    events = await ev.until("response.done")
    assert of(events, "input_audio_buffer.speech_started")
    assert events[-1]["response"]["status"] == "cancelled"
    assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
    events = await ev.until("response.done")      # the new turn is answered
    assert events[-1]["response"]["status"] == "completed"
    await cm.__aexit__(None, None, None)


async def test_truncate_keeps_only_what_was_heard(gw, idle):
    conn, ev, cm = await open_session(gw, instructions="Answer in exactly three short sentences.",
                                      audio={"input": {"turn_detection": None}})
    await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Name three animals that live in the ocean, one per sentence."}]})
    await conn.response.create()
    events = await ev.until("response.done")
    item = [o for o in events[-1]["response"]["output"] if o["type"] == "message"][0]
    full = item["content"][0]["transcript"]
    first_audio_ms = 1000 * len(base64.b64decode(of(events, "response.output_audio.delta")[0]["delta"])) / 2 / 24000
    await conn.conversation.item.truncate(item_id=item["id"], content_index=0, audio_end_ms=int(first_audio_ms / 2))
    t = (await ev.until("conversation.item.truncated"))[-1]
    assert t["item_id"] == item["id"]
    await conn.conversation.item.retrieve(item_id=item["id"])
    kept = (await ev.until("conversation.item.retrieved"))[-1]["item"]["content"][0]["transcript"]
    assert len(kept) < len(full) and full.startswith(kept), (kept, full)
    # manual turn: commit + response.create
    await speak(conn, piper_speech("What did you just say?"), tail_s=0.3)
    await conn.input_audio_buffer.commit()
    await ev.until("conversation.item.input_audio_transcription.completed")
    await conn.response.create()
    events = await ev.until("response.done")
    assert events[-1]["response"]["status"] == "completed"
    await cm.__aexit__(None, None, None)


async def _tool_round(conn: Any, ev: Events) -> None:
    events = await ev.until("response.done")
    calls = [o for o in events[-1]["response"]["output"] if o["type"] == "function_call"]
    assert calls, [e["type"] for e in events]
    call = calls[0]
    assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"].lower() == "paris", call
    args = of(events, "response.function_call_arguments.done")[0]
    assert args["call_id"] == call["call_id"]
    await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call["call_id"],
                                              "output": json.dumps({"city": "Paris", "temperature_c": 18,
                                                                    "conditions": "light rain"})})
    await conn.response.create()
    events = await ev.until("response.done")
    said = transcript(events).lower()
    assert "18" in said or "rain" in said or "eighteen" in said, (said, json.dumps(events[-1]["response"]["output"]))


async def test_tool_call_typed_and_spoken(gw, idle):
    conn, ev, cm = await open_session(gw, instructions="You can look up the weather with the get_weather tool.",
                                      tools=[WEATHER], tool_choice="auto")
    await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What's the weather in Paris?"}]})
    await conn.response.create()
    await _tool_round(conn, ev)
    await speak(conn, piper_speech("What's the weather in Paris?"))
    await _tool_round(conn, ev)
    await cm.__aexit__(None, None, None)


async def test_second_client_queues_then_gets_its_session(gw, idle):
    conn, ev, cm = await open_session(gw)
    cm2 = client(gw).realtime.connect(model="omniserve")
    conn2 = await cm2.__aenter__()
    ev2 = Events(conn2)
    # the SDK's own parser takes our extension event (it keeps unknown types as they are)
    parsed = await asyncio.wait_for(conn2.recv(), 30)
    first = parsed.to_dict() if hasattr(parsed, "to_dict") else dict(parsed)
    assert first["type"] == "omniserve.queue.updated" and first["position"] == 1 and "estimated_wait_s" in first
    await cm.__aexit__(None, None, None)            # the first leaves: the second gets the worker
    rest = [e["type"] for e in await ev2.until("session.created", 60)]
    assert rest[-2:] == ["omniserve.queue.assigned", "session.created"], rest
    assert set(rest[:-2]) <= {"omniserve.queue.updated"}, rest
    await cm2.__aexit__(None, None, None)


async def test_malformed_events_answer_error_and_the_session_goes_on(gw, idle):
    conn, ev, cm = await open_session(gw)
    await conn.send_raw(json.dumps({"type": "no.such.event", "event_id": "evt_bad1"}))
    await conn.send_raw(json.dumps({"type": "session.update", "event_id": "evt_bad2",
                                    "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/flac"}}}}}))
    await conn.send_raw(json.dumps({"type": "input_audio_buffer.append", "event_id": "evt_bad3", "audio": "!!"}))
    await conn.send_raw("[" * 5000)
    await conn.send_raw(json.dumps({"type": "conversation.item.delete", "event_id": "evt_bad4", "item_id": "nope"}))
    errors = []
    while len(errors) < 5:
        e = await ev.next(30)
        if e["type"] == "error":
            errors.append(e["error"])
    # parse errors are answered by the reader at once, the others in order by the session
    assert sorted(str(e["event_id"]) for e in errors) == ["None", "evt_bad1", "evt_bad2", "evt_bad3", "evt_bad4"], errors
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": "Say hello."}]})
    await conn.response.create()
    assert (await ev.until("response.done"))[-1]["response"]["status"] == "completed"
    await cm.__aexit__(None, None, None)


async def test_keys_bad_key_and_expired_token(gw, idle):
    admin = gw.admin
    key = httpx.post(gw.url + "/api/admin/keys", json={"name": "t"}, headers=admin, trust_env=False).json()
    try:
        from websockets.exceptions import InvalidStatus
        with pytest.raises(InvalidStatus) as bad:
            async with client(gw, "osk_wrong").realtime.connect(model="omniserve"):
                pass
        assert bad.value.response.status_code == 401
        # the SDK's ephemeral-token flow
        secret = await client(gw, key["key"]).realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": 1}, session={"type": "realtime", "model": "omniserve"})
        async with client(gw, secret.value).realtime.connect(model="omniserve") as conn:
            ev = Events(conn)
            await ev.until("session.created")
        await asyncio.sleep(1.2)
        with pytest.raises(InvalidStatus) as expired:
            async with client(gw, secret.value).realtime.connect(model="omniserve"):
                pass
        assert expired.value.response.status_code == 401
    finally:
        httpx.delete(gw.url + f"/api/admin/keys/{key['id']}", headers=admin, trust_env=False)


async def test_beta_client_gets_beta_events(gw, idle):
    from openai.types.beta.realtime import RealtimeServerEvent as BetaEvent

    beta_event = TypeAdapter(BetaEvent)
    async with client(gw).beta.realtime.connect(model="omniserve") as conn:
        seen: list[dict] = []

        async def until(want: str) -> None:
            while True:
                ev = json.loads(await asyncio.wait_for(conn.recv_bytes(), 120))
                if not ev["type"].startswith("omniserve."):
                    beta_event.validate_python(ev)
                seen.append(ev)
                assert ev["type"] != "error", ev
                if ev["type"] == want:
                    return

        await until("session.created")
        await conn.session.update(session={"modalities": ["text", "audio"], "temperature": 0.1,
                                           "instructions": "Answer in one short sentence.",
                                           "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"})
        await until("session.updated")
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "What is two plus two?"}]})
        await conn.response.create()
        await until("response.done")
    types = {e["type"] for e in seen}
    assert {"conversation.item.created", "response.audio.delta", "response.audio_transcript.delta"} <= types, types
    assert not types & {"conversation.item.added", "response.output_audio.delta"}
    audio = b"".join(base64.b64decode(e["delta"]) for e in seen if e["type"] == "response.audio.delta")
    said = "".join(e["delta"] for e in seen if e["type"] == "response.audio_transcript.delta")
    assert len(audio) > 8000 * 0.3 and ("4" in said or "four" in said.lower()), said    # G.711: 8000 bytes a second


async def test_audio_right_after_a_format_change_is_read_in_the_new_format(gw, idle):
    from omniserve.telephony_audio import encode_output

    conn, ev, cm = await open_session(gw)
    # no wait for session.updated: the appends behind the update are already G.711
    await conn.session.update(session={"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None}}})
    speech = resample(np.concatenate([silence(0.2), piper_speech("What is the capital of France?"), silence(0.3)]),
                      16000, 24000)
    ulaw = base64.b64decode(encode_output(speech, "g711_ulaw"))
    for i in range(0, len(ulaw), 800):                   # 100 ms of 8 kHz μ-law an event
        await conn.input_audio_buffer.append(audio=b64(ulaw[i:i + 800]))
    await conn.input_audio_buffer.commit()
    heard = (await ev.until("conversation.item.input_audio_transcription.completed"))[-1]["transcript"]
    assert "capital" in heard.lower() and "france" in heard.lower(), heard
    await cm.__aexit__(None, None, None)
