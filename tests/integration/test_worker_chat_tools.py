"""/ws/chat with tools (an addition to PROTOCOL.md) against a real worker process and the real
engine (Qwen2.5-0.5B): the model calls a function, ``done`` carries the call, and the next request
with the function's result gets an answer in words."""
from __future__ import annotations

import asyncio
import json

from omniserve.protocol.affinity import prefix_hashes

from .conftest import connect, recv, wait_idle
from .test_worker_chat import chat

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
RESULT = {"city": "Paris", "temperature_c": 18, "conditions": "light rain"}
GREEDY = {"max_new_tokens": 64, "temperature": 0.0}


async def recording(worker, rid: str) -> dict:
    folder = worker.data_dir / "sessions" / rid
    for _ in range(50):
        if (folder / "meta.json").exists() and json.loads((folder / "meta.json").read_text())["status"] == "complete":
            break
        await asyncio.sleep(0.1)
    return json.loads((folder / "recording.json").read_text())


async def test_a_tool_call_and_its_result(idle):
    first = {"messages": ASK, "tools": [WEATHER], "streaming": True, "generation": GREEDY}
    msgs = await chat(idle, first)
    done = msgs[-1]
    assert done["type"] == "done", msgs
    calls = done.get("tool_calls")
    assert calls and len(calls) == 1, done
    call = calls[0]
    assert call["type"] == "function" and call["id"] and call["function"]["name"] == "get_weather", call
    assert json.loads(call["function"]["arguments"])["city"].lower() == "paris", call
    streamed = "".join(m.get("text_delta") or "" for m in msgs if m["type"] == "chunk")
    assert "get_weather" not in streamed and streamed == done["text"], (streamed, done)   # the call is not text
    assert "stopped" not in done and done["generated_tokens"] > 0

    # the client sends the call back as the assistant's message: /health's hashes are that history's
    assistant = {"role": "assistant", "content": done["text"] or None, "tool_calls": calls}
    hl = await wait_idle(idle)
    assert hl["cached_prefix_hashes"] == prefix_hashes(ASK + [assistant])
    rec = await recording(idle, done["recording_session_id"])
    assert rec["timeline"][1]["tool_calls"] == [{"id": call["id"], "name": "get_weather",
                                                 "arguments": call["function"]["arguments"]}]

    result = {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(RESULT)}
    second = {"messages": ASK + [assistant, result], "tools": [WEATHER], "streaming": True, "generation": GREEDY}
    msgs = await chat(idle, second)
    done = msgs[-1]
    assert done["type"] == "done" and "tool_calls" not in done, msgs
    text = done["text"].lower()
    assert "18" in text or "rain" in text, done["text"]
    rec = await recording(idle, done["recording_session_id"])
    sent = rec["timeline"][0]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call["id"] and sent[2]["tool_call_id"] == call["id"]


async def test_tool_choice_none_answers_in_words(idle):
    msgs = await chat(idle, {"messages": ASK, "tools": [WEATHER], "tool_choice": "none", "streaming": False,
                             "generation": {"max_new_tokens": 24, "temperature": 0.0}})
    assert [m["type"] for m in msgs] == ["prefill_done", "done"], msgs
    assert "tool_calls" not in msgs[-1] and msgs[-1]["text"]


async def test_bad_tools_get_an_error(idle):
    ws = await connect(idle.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": ASK, "tools": [WEATHER] * 40}))
    m = await recv(ws, 30)
    assert m["type"] == "error" and "at most 32 tools" in m["error"], m
