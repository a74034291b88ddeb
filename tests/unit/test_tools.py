"""Tool calling without a model: the cascade's call parser (``embedded/tools.py``), the history
as its chat template reads it (``embedded/chat.py``), and ``done`` on the wire (``worker/wire.py``)."""
from __future__ import annotations

import asyncio
import json

import pytest

from omniserve.engine.api import Message, ReplyDone, Text, ToolCall
from omniserve.engine.backends.embedded.chat import RESULTS_NOTE, conversation
from omniserve.engine.backends.embedded.encode import EncodedMessage
from omniserve.engine.backends.embedded.tools import ToolCallParser, bare_calls, call_text, parse_call
from omniserve.protocol.messages import ChatDoneMsg
from omniserve.worker.events import Reply
from omniserve.worker.wire import ChatWire

NAMES = ["get_weather", "get_time"]
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def feed(pieces: list[str], names=NAMES) -> tuple[str, ToolCallParser]:
    """Everything the parser passes on (push by push, then flush), and the parser."""
    p = ToolCallParser(names)
    out = [p.push(x) for x in pieces]
    out.append(p.flush())
    return "".join(out), p


def split_every(text: str, n: int) -> list[str]:
    return [text[i:i + n] for i in range(0, len(text), n)]


def args(p: ToolCallParser) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in p.calls]


# --------------------------------------------------------------------------- <tool_call> blocks

@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 1000])
def test_a_block_split_anywhere_is_one_call_and_no_text(n):
    reply = f"Let me check. <tool_call>\n{CALL}\n</tool_call> One moment."
    text, p = feed(split_every(reply, n))
    assert args(p) == [("get_weather", {"city": "Paris"})]
    assert text == "Let me check.  One moment." == p.text
    assert not p.invalid and not p.holding
    assert p.calls[0].id.startswith("call_") and len(p.calls[0].id) > 10


def test_text_passes_through_as_it_comes():
    p = ToolCallParser(NAMES)
    assert p.push("Hello") == "Hello"
    assert p.push(" there, ") == " there, "
    assert p.push("<tool") == ""               # may still become a tag: held
    assert p.holding
    assert p.push("bar> and more") == "<toolbar> and more"   # it did not: passed on whole
    assert p.push(" a < b") == " a < b"
    assert p.flush() == ""
    assert not p.calls and not p.invalid and p.text == "Hello there, <toolbar> and more a < b"


def test_a_held_tag_start_at_the_end_is_text():
    text, p = feed(["The tag is <tool_ca"])
    assert text == "The tag is <tool_ca" and not p.calls and not p.invalid


def test_two_blocks_are_two_calls_and_a_repeat_is_dropped():
    other = '{"name": "get_time", "arguments": {"city": "Paris"}}'
    reply = f"<tool_call>{CALL}</tool_call><tool_call>{other}</tool_call><tool_call>{CALL}</tool_call>"
    text, p = feed(split_every(reply, 4))
    assert args(p) == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})]
    assert text == "" and len({c.id for c in p.calls}) == 2


@pytest.mark.parametrize("body", ['{"name": "get_weather", "arguments": {"city": "Par', "not json at all",
                                  '{"name": "get_weather", "arguments": [1, 2]}', '{"arguments": {}}',
                                  '["get_weather"]', '{"name": "", "arguments": {}}',
                                  '{"name": "get_weather", "arguments": "{bad"}'])
def test_invalid_json_is_invalid_never_a_call(body):
    text, p = feed(split_every(f"<tool_call>{body}</tool_call>", 3))
    assert not p.calls and p.invalid == [body.strip()] and text == ""


def test_an_unclosed_block_is_parsed_at_the_end():
    text, p = feed([f"<tool_call>\n{CALL}\n"])
    assert args(p) == [("get_weather", {"city": "Paris"})] and text == ""
    text, p = feed(['<tool_call>{"name": "get_wea'])            # cut by the length limit
    assert not p.calls and p.invalid == ['{"name": "get_wea']


def test_an_unknown_name_is_refused():
    text, p = feed(['<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'])
    assert not p.calls and p.invalid and text == ""
    assert parse_call('{"name": "rm_rf", "arguments": {}}', set(NAMES)) is None
    assert parse_call('{"name": "rm_rf", "arguments": {}}') is not None      # no names given: any name


def test_arguments_as_a_string_or_under_parameters_are_read():
    c = parse_call('{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}', set(NAMES))
    assert c is not None and json.loads(c.arguments) == {"city": "Oslo"}
    c = parse_call('{"name": "get_weather", "parameters": {"city": "Oslo"}}', set(NAMES))
    assert c is not None and json.loads(c.arguments) == {"city": "Oslo"}
    c = parse_call('{"name": "get_weather"}', set(NAMES))
    assert c is not None and c.arguments == "{}"


# --------------------------------------------------------- a reply that is a bare call object

FENCED = '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```'


@pytest.mark.parametrize("reply", [CALL, FENCED, "\n  " + CALL + "\n", "```\n" + CALL + "\n```", CALL + "\n" + CALL,
                                   CALL + '\n{"name": "get_wea'])
@pytest.mark.parametrize("n", [1, 3, 1000])
def test_a_reply_that_is_a_bare_call_is_a_call(reply, n):
    """What Qwen2.5-0.5B writes instead of a <tool_call> block: held back, never passed on."""
    p = ToolCallParser(NAMES)
    passed = [p.push(x) for x in split_every(reply, n)]
    assert not any(passed)
    assert p.flush() == "" and p.text == ""
    assert args(p) == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("reply", ['{"a": 1} is a JSON object.', "```python\nprint('hi')\n```", "`x` is a variable.",
                                   '{"name": "Bob", "age": 3}', "``not a fence", "{ not json"])
def test_text_that_starts_like_json_or_a_fence_is_text(reply):
    text, p = feed(split_every(reply, 2))
    assert text == reply == p.text and not p.calls and not p.invalid


def test_plain_json_is_released_as_soon_as_it_cannot_be_a_call():
    p = ToolCallParser(NAMES)
    assert p.push('{"a": ') == ""
    assert p.push("1}") == '{"a": 1}'                   # a whole object, not shaped like a call
    assert p.push(" more") == " more"
    p = ToolCallParser(NAMES)
    assert p.push("```py") == ""
    assert p.push("thon\n") == "```python\n"            # the fence names another language


def test_a_bare_call_of_an_unknown_function_is_invalid():
    text, p = feed(['{"name": "cat_joke", "arguments": {"topic": "cats"}}'])
    assert text == "" and not p.calls and len(p.invalid) == 1
    joke = '{"name": "cat_joke", "arguments": {}}'
    assert bare_calls(joke, set(NAMES)) == ([], [joke])
    assert bare_calls("hello", set(NAMES)) is None


def test_a_bare_call_is_only_a_call_at_the_start():
    reply = "Sure: " + CALL
    text, p = feed(split_every(reply, 3))
    assert text == reply and not p.calls


def test_leading_blanks_then_text_pass_through():
    text, p = feed(["  ", "\n", "Hi", " there"])
    assert text == "  \nHi there" and not p.calls


# -------------------------------------------------------------- the history the template reads

def _encoded(messages: list[Message]) -> list[EncodedMessage]:
    return [EncodedMessage(m.role, " ".join(i.text for i in m.items if isinstance(i, Text))) for m in messages]


HISTORY = [Message("user", [Text("What's the weather in Paris?")]),
           Message("assistant", [], tool_calls=[ToolCall("c1", "get_weather", '{"city": "Paris"}')]),
           Message("tool", [Text('{"temperature_c": 18}')], tool_call_id="c1")]


def test_tool_results_are_followed_by_the_results_note():
    convo = conversation(HISTORY, _encoded(HISTORY), templated_calls=True)
    assert [d["role"] for d in convo] == ["user", "assistant", "tool", "user"]
    assert convo[-1]["content"] == RESULTS_NOTE
    assert convo[1]["tool_calls"] == [{"id": "c1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert convo[2]["tool_call_id"] == "c1"
    # two results of one group: one note, after the group; the history renders the same when it grows
    two = HISTORY + [Message("tool", [Text("{}")], tool_call_id="c2"), Message("assistant", [Text("Rain.")]),
                     Message("user", [Text("Thanks")])]
    convo2 = conversation(two, _encoded(two), templated_calls=True)
    assert [d["role"] for d in convo2] == ["user", "assistant", "tool", "tool", "user", "assistant", "user"]


def test_without_tools_the_calls_are_written_into_the_text():
    convo = conversation(HISTORY, _encoded(HISTORY), templated_calls=False)
    assert "tool_calls" not in convo[1]
    assert convo[1]["content"] == call_text(HISTORY[1].tool_calls[0])
    assert convo[1]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


# ------------------------------------------------------------------------------- done on the wire

def test_done_carries_the_calls_in_openai_shape():
    sent: list = []

    async def send(msg) -> bool:
        sent.append(msg)
        return True

    reply = Reply()
    reply.take(ReplyDone("", 12, 200, finish_reason="tool_calls",
                         tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]))
    asyncio.run(ChatWire(send, streaming=True, recording_id="r").on(reply.close(False)))
    done = json.loads(sent[0].dump())
    assert done["type"] == "done" and done["text"] == "" and done["generated_tokens"] == 12
    assert done["tool_calls"] == [{"id": "call_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    # a reply without calls: the field is left out, as before the addition
    assert "tool_calls" not in json.loads(ChatDoneMsg(text="hi", generated_tokens=1, input_tokens=2).dump())
    # a stopped reply calls nothing
    stopped = Reply()
    stopped.take(ReplyDone("", 1, 2, tool_calls=[ToolCall("c", "get_weather")]))
    assert stopped.close(True).tool_calls == []
