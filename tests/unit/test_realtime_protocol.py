"""OpenAI Realtime client events, session settings (GA and beta spellings → one SessionConfig), the
conversation's items (truncate, what the model reads) and the pcm16 / G.711 codecs — no models."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from pydantic import ValidationError

from omniserve.protocol import realtime as rt
from omniserve.telephony_audio import decode_input, encode_output
from omniserve.audio import AudioError
from omniserve.worker.realtime.items import Conversation, Item, ItemError, heard_part


def parse(obj) -> object:
    return rt.parse_client_event(json.dumps(obj))


def test_every_client_event_type_parses():
    assert set(rt.CLIENT_EVENT_TYPES) >= {
        "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
        "conversation.item.create", "conversation.item.truncate", "conversation.item.delete", "response.create",
        "response.cancel"}
    ev = parse({"type": "conversation.item.truncate", "event_id": "e1", "item_id": "i", "content_index": 0,
                "audio_end_ms": 1500, "unknown_future_field": 1})
    assert isinstance(ev, rt.ItemTruncate) and ev.audio_end_ms == 1500 and ev.event_id == "e1"


@pytest.mark.parametrize("raw, code, event_id", [
    ('{"type": "nope", "event_id": "e2"}', "invalid_event", "e2"),
    ('{"type": "conversation.item.truncate", "event_id": "e3", "item_id": "i", "audio_end_ms": -1}', "invalid_value", "e3"),
    ("[" * 5000, "invalid_json", None),
    ('"just a string"', "invalid_event", None),
    ('{"type": "session.update", "event_id": "e4", "session": {"tools": [{"type": "function", "name": "bad name!"}]}}',
     "invalid_value", "e4"),
])
def test_bad_events_are_refused_with_their_event_id(raw, code, event_id):
    with pytest.raises(rt.RealtimeProtocolError) as e:
        rt.parse_client_event(raw)
    assert e.value.code == code and e.value.event_id == event_id


def test_ga_and_beta_sessions_normalise_alike():
    ga = rt.apply_session(rt.SessionConfig(), rt.SessionIn.model_validate({
        "type": "realtime", "instructions": "Be brief.", "output_modalities": ["text"],
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad", "threshold": 0.6,
                                                                                "silence_duration_ms": 700}},
                  "output": {"format": {"type": "audio/pcma"}, "voice": "marin"}},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tool_choice": "required", "max_output_tokens": 64}))
    beta = rt.apply_session(rt.SessionConfig(), rt.SessionIn.model_validate({
        "instructions": "Be brief.", "modalities": ["text"], "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_alaw", "voice": "marin",
        "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tool_choice": "required", "max_response_output_tokens": 64}))
    assert ga == beta
    assert ga.output_modalities == ("text",) and not ga.audio_out and ga.input_format == "g711_ulaw"
    assert ga.turn_detection is not None and ga.turn_detection.silence_duration_ms == 700


def test_turn_detection_null_is_manual_and_semantic_vad_maps_to_silence():
    cfg = rt.apply_session(rt.SessionConfig(), rt.SessionIn.model_validate({"audio": {"input": {"turn_detection": None}}}))
    assert cfg.turn_detection is None
    cfg = rt.apply_session(cfg, rt.SessionIn.model_validate({"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}))
    assert cfg.turn_detection is not None and cfg.turn_detection.silence_duration_ms == 300
    # an update without turn_detection keeps it
    assert rt.apply_session(cfg, rt.SessionIn.model_validate({"instructions": "x"})).turn_detection == cfg.turn_detection


def test_transcription_language_is_kept_and_only_english_or_chinese():
    ga = rt.apply_session(rt.SessionConfig(), rt.SessionIn.model_validate(
        {"audio": {"input": {"transcription": {"model": "whisper-1", "language": "zh"}}}}))
    beta = rt.apply_session(rt.SessionConfig(), rt.SessionIn.model_validate(
        {"input_audio_transcription": {"model": "whisper-1", "language": "zh"}}))
    assert ga.language == beta.language == "zh" and ga.transcription_model == "whisper-1"
    off = rt.apply_session(ga, rt.SessionIn.model_validate({"audio": {"input": {"transcription": None}}}))
    assert off.language == "" and off.transcription_model is None
    with pytest.raises(ValidationError, match="language"):
        rt.SessionIn.model_validate({"input_audio_transcription": {"language": "fr"}})


@pytest.mark.parametrize("session, text", [
    ({"audio": {"input": {"format": {"type": "audio/flac"}}}}, "not supported"),
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "24000"),
    ({"tool_choice": {"type": "function", "name": "get_weather"}}, "not among"),
    ({"tool_choice": "get_weather"}, "not auto, none, required"),
    ({"tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]}, "twice"),
    ({"max_output_tokens": 100000}, "4096"),
])
def test_bad_sessions_are_refused(session, text):
    with pytest.raises(rt.ProtocolError) as e:
        rt.apply_session(rt.SessionConfig(), rt.SessionIn.model_validate(session))
    assert text in str(e.value)


def test_pcm16_in_is_resampled_to_16k_and_out_round_trips():
    t = np.arange(24000) / 24000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    b64 = base64.b64encode((tone * 32767).astype("<i2").tobytes()).decode()
    pcm = decode_input(b64, "pcm16", max_samples=24000)
    assert pcm.dtype == np.float32 and abs(pcm.size - 16000) <= 1
    back = np.frombuffer(base64.b64decode(encode_output(tone, "pcm16")), "<i2") / 32768
    assert np.max(np.abs(back - tone)) < 1e-3
    with pytest.raises(AudioError):
        decode_input(b64, "pcm16", max_samples=1000)      # refused on its length, before decoding
    with pytest.raises(AudioError):
        decode_input("!!", "pcm16", max_samples=1000)


@pytest.mark.parametrize("fmt", ["g711_ulaw", "g711_alaw"])
def test_g711_round_trip_keeps_the_signal(fmt):
    t = np.arange(24000) / 24000
    tone = (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    coded = encode_output(tone, fmt)
    assert len(base64.b64decode(coded)) == 8000              # 8 kHz, a byte a sample
    back = decode_input(coded, fmt, max_samples=8000)        # at 16 kHz
    ref = decode_input(encode_output(tone, "pcm16"), "pcm16", max_samples=24000)
    n = min(back.size, ref.size)
    err = np.sqrt(np.mean((back[200:n - 200] - ref[200:n - 200]) ** 2)) / np.sqrt(np.mean(ref ** 2))
    assert err < 0.05, err


def test_truncate_keeps_what_was_heard():
    text = "Whales live in the ocean. Sharks do too. So do octopuses."
    assert heard_part(text, [1000, 800, 900], 1900) == "Whales live in the ocean. Sharks do too."
    assert heard_part(text, [1000, 800, 900], 500) == "Whales live"           # words in proportion
    assert heard_part(text, [2700], 1350).split() == text.split()[:5]          # one piece: by words
    conv = Conversation(8000)
    it = Item("a1", "message", "assistant", audio=True, text=text, audio_pieces_ms=[1000, 800, 900])
    conv.add(Item("u1", "message", "user", text="Name sea animals."))
    conv.add(it)
    conv.truncate("a1", 1900)
    assert it.text == "Whales live in the ocean. Sharks do too." and it.audio_ms == 1900
    assert conv.messages("Be brief.")[-1].items[0].text == it.text
    with pytest.raises(ItemError):
        conv.truncate("a1", 99999)
    with pytest.raises(ItemError):
        conv.truncate("u1", 0)


def test_messages_pair_calls_with_results_and_keep_the_newest():
    conv = Conversation(max_chars=120)
    conv.add(Item("old", "message", "user", text="x" * 200))
    conv.add(Item("u", "message", "user", text="Weather in Paris?"))
    conv.add(Item("c", "function_call", call_id="call_1", name="get_weather", arguments='{"city":"Paris"}'))
    conv.add(Item("o", "function_call_output", call_id="call_1", output='{"t":18}'))
    conv.add(Item("s", "message", "system", text="Use Celsius."))
    msgs = conv.messages("Be brief.")
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[0].items[0].text == "Be brief.\nUse Celsius."
    assert msgs[2].tool_calls[0].name == "get_weather" and msgs[3].tool_call_id == "call_1"
    conv.add(Item("x", "message", "user", text="hi"), previous_item_id="root")
    assert conv.items[0].id == "x"
    with pytest.raises(ItemError):
        conv.add(Item("x", "message", "user", text="again"))


def test_root_insert_into_a_full_conversation_keeps_the_new_item():
    from omniserve.protocol.realtime import MAX_ITEMS
    conv = Conversation(8000)
    for k in range(MAX_ITEMS):
        conv.add(Item(f"i{k}", "message", "user", text="x"))
    it = Item("new", "message", "user", text="first")
    assert conv.add(it, "root") is None
    assert conv.items[0] is it and len(conv.items) == MAX_ITEMS and conv.previous_id(it) is None
    assert conv.previous_id(Item("gone", "message", "user")) is None


def test_a_text_item_cannot_be_truncated_and_sizes_are_capped():
    conv = Conversation(8000)
    conv.add(Item("t", "message", "assistant", text="no speech here"))
    with pytest.raises(ItemError):
        conv.truncate("t", 0)
    big = Item("b", "message", "user", text="y" * 100_000)
    conv.add(big)
    assert len(big.text or "") == rt.MAX_ITEM_TEXT
    with pytest.raises(rt.RealtimeProtocolError):   # a tool's schema is capped when the session is set
        parse({"type": "session.update", "session": {"tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object", "description": "z" * 9000}}]}})
