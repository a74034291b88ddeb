"""The client-message parsers: whatever the text, they return a model or raise ProtocolError —
never RecursionError, MemoryError, UnicodeError or anything else that would kill a reader task."""
from __future__ import annotations

import json

import pytest

from omniserve.protocol.messages import (MAX_JSON_DEPTH, MAX_JSON_VALUES, ChatRequest, Pause, ProtocolError, Stop,
                                         load_json, parse_chat_control, parse_chat_request, parse_duplex,
                                         parse_half_duplex)
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
