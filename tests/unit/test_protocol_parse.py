"""The client-message parsers: whatever the text, they return a model or raise ProtocolError —
never RecursionError, MemoryError, UnicodeError or anything else that would kill a reader task."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest

from omniserve.protocol.messages import (MAX_JSON_DEPTH, MAX_JSON_VALUES, ChatRequest, Pause, ProtocolError, Stop,
                                         load_json, parse_chat_control, parse_chat_request, parse_duplex,
                                         parse_half_duplex)
from omniserve.protocol import affinity as affinity_mod
from omniserve.protocol.affinity import prefix_hashes
from omniserve.protocol.chat_request import THREAD_ABOVE_CHARS, read_chat_request, read_chat_request_async
from omniserve.protocol.safe_json import JSONLimitError, check_shape, loads_bounded

PARSERS = [parse_half_duplex, parse_duplex, parse_chat_control, parse_chat_request]


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE = {
    "open brackets": "[" * 50000,
    "open braces": '{"a":' * 50000,
    "nested lists 200": nested_lists(200),
    "nested objects 200": nested_objects(200),
    "deep inside a valid message": '{"type":"stop","x":' + nested_lists(MAX_JSON_DEPTH) + "}",
    "not json": "hello",
    "empty": "",
    "truncated": '{"type":"stop"',
    "unterminated string": '{"type":"' + 'x' * 1000,
    "escaped quotes, no end": '"' + '\\"' * 100000,
    "NaN": '{"type":"pause","timeout":NaN}',
    "Infinity": '{"type":"pause","timeout":Infinity}',
    "float overflow": '{"type":"pause","timeout":1e999999}',
    "huge integer": '{"type":"pause","timeout":' + "9" * 100000 + "}",
    "too many values": "[" + "0," * MAX_JSON_VALUES + "0]",
    "many empty objects": "[" + "{}," * (MAX_JSON_VALUES // 2) + "{}]",
    "a list, not an object": "[1, 2]",
    "a string": '"stop"',
}
GARBAGE_BYTES = {
    "invalid utf-8": b"\xff\xfe\xfd{}",
    "utf-16": '{"type":"stop"}'.encode("utf-16"),
    "lone continuation bytes": b'{"type":"\x80\x81"}',
    "nul bytes": b"\x00" * 100,
}


@pytest.mark.parametrize("parse", PARSERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_text_is_a_protocol_error(parse, text):
    with pytest.raises(ProtocolError) as e:
        parse(text)
    assert 0 < len(str(e.value)) <= 1000


@pytest.mark.parametrize("parse", PARSERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("raw", list(GARBAGE_BYTES.values()), ids=list(GARBAGE_BYTES))
def test_garbage_bytes_are_a_protocol_error(parse, raw):
    with pytest.raises(ProtocolError):
        parse(raw)


def test_depth_cap_is_exact():
    ok = '{"type":"stop","x":' + nested_lists(MAX_JSON_DEPTH - 1) + "}"
    assert isinstance(parse_duplex(ok), Stop)
    too_deep = '{"type":"stop","x":' + nested_lists(MAX_JSON_DEPTH) + "}"
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_duplex(too_deep)


def test_brackets_and_quotes_inside_strings_do_not_count():
    text = json.dumps({"type": "stop", "x": "[" * 5000 + '\\"{' * 100, "y": "a\\", "z": "]}" * 70})
    assert isinstance(parse_duplex(text), Stop)
    assert isinstance(parse_duplex(text.encode()), Stop)


def test_deep_json_is_refused_before_it_is_decoded():
    """The bound is checked on the text: no RecursionError even far past Python's recursion limit."""
    with pytest.raises(JSONLimitError, match="nested too deeply"):
        check_shape("[" * 1_000_000, MAX_JSON_DEPTH, MAX_JSON_VALUES)
    with pytest.raises(JSONLimitError, match="too many values"):
        check_shape("[" + "1," * 1000 + "1]", MAX_JSON_DEPTH, 100)


def test_loads_bounded_raises_only_its_own_error():
    for raw in [*HOSTILE.values(), *GARBAGE_BYTES.values()]:
        try:
            loads_bounded(raw, MAX_JSON_DEPTH, MAX_JSON_VALUES)
        except JSONLimitError:
            pass
    assert loads_bounded(b'{"a": [1, 2.5, "x"]}', 4, 100) == {"a": [1, 2.5, "x"]}


def test_error_texts_are_short_and_ascii():
    long_type = "\ud800" + "x" * 100_000
    with pytest.raises(ProtocolError) as e:
        parse_duplex(json.dumps({"type": long_type}))
    text = str(e.value)
    assert text.isascii() and len(text) < 200 and text.startswith("Unknown message type: ")
    with pytest.raises(ProtocolError) as e:
        parse_chat_request(json.dumps({"messages": [{"role": "x" * 10_000, "content": 5}]}))
    assert str(e.value).isascii() and len(str(e.value)) <= 1000 and "x" * 100 not in str(e.value)


def test_wrong_field_types_name_the_field():
    with pytest.raises(ProtocolError, match="timeout"):
        parse_duplex('{"type":"pause","timeout":"soon"}')
    with pytest.raises(ProtocolError, match="Unknown message type: 'nope'"):
        parse_half_duplex('{"type":"nope"}')
    with pytest.raises(ProtocolError, match="no 'type' field"):
        parse_duplex('{"kind":"stop"}')


def test_valid_messages_still_parse():
    assert isinstance(parse_duplex('{"type":"pause","timeout":2.5}'), Pause)
    assert isinstance(parse_chat_control(b'{"type":"stop"}'), Stop)
    req = parse_chat_request(json.dumps({"messages": [{"role": "user", "content": "hi"}], "extra": {"a": [1]}}))
    assert isinstance(req, ChatRequest) and req.messages[0].content == "hi"
    obj = load_json('{"messages":[{"role":"user","content":"hi"}]}')
    assert parse_chat_request(obj).messages[0].role == "user"


# ------------------------------------------------- a chat request: read, validated, hashed once

CHAT = {"messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image", "data": ""},
                                                  {"type": "image", "data": "aW1n" * 1000}]}],
        "generation": {"max_new_tokens": 8}}


@pytest.mark.parametrize("raw", [json.dumps(CHAT), json.dumps(CHAT).encode()])
async def test_a_chat_request_is_read_once(raw):
    for frame in (read_chat_request(raw), await read_chat_request_async(raw)):
        assert isinstance(frame.request, ChatRequest) and frame.request.generation.max_new_tokens == 8
        assert frame.hashes == prefix_hashes(CHAT["messages"])
        # the worker's chain after the reply: one more link, equal to hashing the whole history again
        assert list(frame.chain_after("It is a cat.").hashes) == prefix_hashes(
            CHAT["messages"] + [{"role": "assistant", "content": "It is a cat."}])
        # the model shares the decoded strings: the media is not copied
        assert frame.request.messages[1].content[2].data is frame.obj["messages"][1]["content"][2]["data"]


def test_a_big_chat_request_is_read_off_the_event_loop():
    big = json.dumps({"messages": [{"role": "user", "content": "x" * THREAD_ABOVE_CHARS}]})

    async def main() -> str:
        frame = await read_chat_request_async(big)
        return frame.hashes[0]

    seen: list[str] = []
    real = affinity_mod.Chain.extended

    def spy(self, messages):
        seen.append(threading.current_thread().name)
        return real(self, messages)

    affinity_mod.Chain.extended = spy
    try:
        asyncio.run(main())
    finally:
        affinity_mod.Chain.extended = real
    assert seen and seen[0] != threading.main_thread().name


@pytest.mark.parametrize("bad", [{"messages": []}, {"messages": [{"role": "robot", "content": "hi"}]},
                                 {"messages": [{"role": "user", "content": [{"type": "sound", "data": "x"}]}]},
                                 {"messages": "hi"}, [1, 2], {"nope": 1}])
def test_a_bad_chat_request_is_refused_with_the_parser_text(bad):
    with pytest.raises(ProtocolError) as got:
        read_chat_request(json.dumps(bad))
    with pytest.raises(ProtocolError) as want:
        parse_chat_request(json.dumps(bad))
    assert str(got.value) == str(want.value)


def test_prefix_hashes_take_the_wire_dicts():
    """Empty-data items are dropped as on the wire; a message's extra fields are not hashed."""
    a = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "audio", "data": ""}], "id": "m1"}]
    b = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert prefix_hashes(a) == prefix_hashes(b)
    assert prefix_hashes(b) != prefix_hashes([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    assert len(prefix_hashes(CHAT["messages"])) == 2 and all(len(h) == 16 for h in prefix_hashes(CHAT["messages"]))
