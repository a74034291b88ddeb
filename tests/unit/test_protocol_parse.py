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


# ------------------------------------------------------------------ chat tools (an addition)

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
CALLED = {"role": "assistant", "content": None,
          "tool_calls": [{"id": "call_1", "type": "function",
                          "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 18}'}


def chat_error(obj: dict) -> str:
    with pytest.raises(ProtocolError) as e:
        parse_chat_request(json.dumps(obj))
    text = str(e.value)
    assert text.isascii() and len(text) <= 1000
    return text


def test_a_request_without_tools_is_as_before():
    req = parse_chat_request(json.dumps({"messages": ASK}))
    assert req.tools is None and req.tool_choice is None and req.tool_choice_name == "auto"
    assert req.messages[0].tool_calls is None and req.messages[0].tool_call_id is None


def test_tools_in_both_shapes_and_every_tool_choice():
    flat = {"type": "function", "name": "get_time", "description": "Time in a city.", "parameters": {"type": "object"}}
    for choice, name in [(None, "auto"), ("auto", "auto"), ("none", "none"), ("required", "required"),
                         ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
                         ({"type": "function", "name": "get_weather"}, "get_weather")]:
        req = parse_chat_request(json.dumps({"messages": ASK, "tools": [WEATHER, flat], "tool_choice": choice}))
        assert [t.function.name for t in req.tools] == ["get_weather", "get_time"]
        assert req.tools[1].function.description == "Time in a city." and req.tools[1].type == "function"
        assert req.tools[0].function.parameters["required"] == ["city"]
        assert req.tool_choice_name == name
    ping = {"type": "function", "function": {"name": "ping"}}
    bare = parse_chat_request(json.dumps({"messages": ASK, "tools": [ping]}))
    assert bare.tools[0].function.parameters == {} and bare.tools[0].function.description == ""


def test_a_tool_result_conversation_parses():
    req = parse_chat_request(json.dumps({"messages": ASK + [CALLED, RESULT], "tools": [WEATHER]}))
    assistant, tool = req.messages[1], req.messages[2]
    assert assistant.content is None and assistant.items() == []
    assert assistant.tool_calls[0].id == "call_1" and assistant.tool_calls[0].function.name == "get_weather"
    assert json.loads(assistant.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert tool.role == "tool" and tool.tool_call_id == "call_1" and tool.items()[0].text == '{"temperature_c": 18}'
    # arguments sent as an object are taken as their JSON text; text items are a tool's content too
    obj_args = dict(CALLED, tool_calls=[{"id": "c", "function": {"name": "get_weather",
                                                                 "arguments": {"city": "Oslo"}}}])
    items = dict(RESULT, content=[{"type": "text", "text": "18 C"}])
    req = parse_chat_request(json.dumps({"messages": ASK + [obj_args, items]}))
    assert json.loads(req.messages[1].tool_calls[0].function.arguments) == {"city": "Oslo"}


@pytest.mark.parametrize("obj, expect", [
    ({"tools": [WEATHER] * 1000}, "at most 32 tools, got 1000"),
    ({"tools": [dict(WEATHER, function=dict(WEATHER["function"], name=f"t{i}")) for i in range(33)]},
     "at most 32 tools"),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "caf\u00e9"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "name": "a;rm -rf"}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "a", "description": "d" * 9000}}]}, "description"),
    ({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"x": "y" * 8000}}}]}, "8000 characters"),
    ({"tools": [{"type": "function", "function": {"name": "a", "parameters": "a schema"}}]}, "parameters"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
    ({"tools": [WEATHER, WEATHER]}, "declared twice"),
    ({"tools": "get_weather"}, "tools"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": 5}, "tool_choice"),
    ({"tool_choice": "required"}, "needs tools"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "needs tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}, "not among the tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "bad name"}}}, "tool_choice"),
])
def test_bad_tools_are_refused_with_the_field(obj, expect):
    assert expect in chat_error({"messages": ASK, **obj})


@pytest.mark.parametrize("messages, expect", [
    ([{"role": "user"}], "content is required"),
    ([{"role": "user", "content": None}], "content is required"),
    (ASK + [{"role": "assistant", "content": None}], "content is required"),
    (ASK + [{"role": "assistant", "content": None, "tool_calls": []}], "content is required"),
    (ASK + [RESULT | {"tool_call_id": None}], "tool_call_id"),
    (ASK + [{"role": "tool", "content": "x"}], "tool_call_id"),
    (ASK + [RESULT | {"tool_call_id": ""}], "tool_call_id"),
    (ASK + [RESULT | {"tool_call_id": "c" * 200}], "tool_call_id"),
    (ASK + [RESULT | {"content": [{"type": "image", "data": "aW1n"}]}], "a tool message's content is text"),
    ([{"role": "user", "content": "hi", "tool_call_id": "c"}], "only a tool message"),
    ([{"role": "user", "content": "hi", "tool_calls": CALLED["tool_calls"]}], "only an assistant message"),
    (ASK + [CALLED | {"tool_calls": CALLED["tool_calls"] * 33}], "at most 32"),
    (ASK + [CALLED | {"tool_calls": [{"id": "c", "function": {"name": "no such name!"}}]}],
     "tool_calls.0.function.name"),
    (ASK + [CALLED | {"tool_calls": [{"id": "", "function": {"name": "f"}}]}], "tool_calls.0.id"),
    (ASK + [CALLED | {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "x" * 9000}}]}], "arguments"),
    (ASK + [CALLED | {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}], "arguments"),
    (ASK + [CALLED | {"tool_calls": [{"id": "c", "type": "web_search", "function": {"name": "f"}}]}], "type"),
])
def test_bad_tool_messages_are_refused_with_the_field(messages, expect):
    assert expect in chat_error({"messages": messages})


def test_a_hostile_tools_request_is_refused_fast():
    """1000 tools of 20 KB each (a 20 MB frame): counted before one of them is looked at."""
    import time

    big = {"type": "function", "function": {"name": "n" * 10_000, "description": "d" * 10_000,
                                            "parameters": {"p": ["x"] * 20}}}
    raw = json.dumps({"messages": ASK, "tools": [big] * 1000})
    obj = load_json(raw)           # within the frame bounds: 30 000 values
    t = time.perf_counter()
    with pytest.raises(ProtocolError, match="at most 32 tools, got 1000"):
        parse_chat_request(obj)
    assert time.perf_counter() - t < 0.05
    with pytest.raises(ProtocolError, match="at most 32 tools"):
        read_chat_request(raw)


def test_the_bounds_are_the_engines():
    from omniserve.engine import checks
    from omniserve.protocol import messages

    assert messages.MAX_TOOLS == checks.MAX_TOOLS
    assert messages.MAX_TOOL_SPEC_CHARS == checks.MAX_TOOL_SPEC_CHARS
    assert messages.TOOL_NAME_PATTERN == checks.TOOL_NAME.pattern
    assert set(messages.TOOL_CHOICES) == {"auto", "none", "required"}


def test_tool_messages_hash_for_affinity():
    """Tool calls and results are part of a message's hash; plain messages hash as they always did;
    null, "" and no content are one history for an assistant's calls."""
    history = ASK + [CALLED, RESULT]
    hashes = prefix_hashes(history)
    assert len(hashes) == 3 and hashes[:1] == prefix_hashes(ASK)
    other_args = dict(CALLED, tool_calls=[{"id": "call_1", "type": "function",
                                           "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}])
    assert prefix_hashes(ASK + [other_args])[1] != hashes[1]
    assert prefix_hashes(ASK + [dict(RESULT, tool_call_id="call_2")])[1] != prefix_hashes(ASK + [RESULT])[1]
    assert prefix_hashes(ASK + [{"role": "assistant", "content": ""}])[1] != hashes[1]
    no_content = {k: v for k, v in CALLED.items() if k != "content"}
    assert prefix_hashes(ASK + [no_content])[1] == prefix_hashes(ASK + [dict(CALLED, content="")])[1] == hashes[1]
    # the worker's chain after a reply with calls is the chain of the client's next request
    frame = read_chat_request(json.dumps({"messages": ASK, "tools": [WEATHER]}))
    assert list(frame.chain_after("", CALLED["tool_calls"]).hashes) == hashes[:2]
    assert list(frame.chain_after("Hi").hashes) == prefix_hashes(ASK + [{"role": "assistant", "content": "Hi"}])
