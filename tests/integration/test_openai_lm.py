"""``OpenAITextLM`` (the ``openai`` LLM kind) against real servers on loopback.

The server is llama-cpp-python's own OpenAI-compatible server serving the cascade's Qwen GGUF
(``tests/support/llm_server.py``). Faults are real too: the server SIGKILLed mid-reply, a socket
that accepts and never answers, a port nobody listens on, a wrong API key. llama_cpp.server
0.3.36 ignores ``stream_options`` (no usage in a stream), so reading a usage chunk is checked
against a scripted loopback HTTP server that replays a stream in vLLM's wire format.
"""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import openai
import pytest

from omniserve.config import LLMSettings
from omniserve.engine.api import EngineBackendError, EngineInputError
from omniserve.engine.backends.embedded.components.base import SamplingParams
from omniserve.engine.backends.embedded.cascade import make_lm
from omniserve.engine.backends.embedded.openai_lm import OpenAITextLM
from tests.support.llm_server import LLMServer, free_port, llm_server, start_llm_server  # noqa: F401

FRANCE = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
          {"role": "user", "content": "What is the capital of France?"}]
COUNT = [{"role": "user", "content": "Count from 1 to 300, one number per line, nothing else."}]
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
LONG = SamplingParams(max_tokens=400, temperature=0.0)
KEY_ENV = "OMNISERVE_TEST_LLM_KEY"


def lm_for(url: str, **kw: Any) -> OpenAITextLM:
    settings = LLMSettings(kind="openai", model="qwen2.5-0.5b", base_url=url, n_ctx=2048,
                           api_key_env=KEY_ENV, **kw)
    lm = make_lm(settings, threads=1, cache_dir=None)
    assert isinstance(lm, OpenAITextLM)
    return lm


def reply(lm: OpenAITextLM, messages: list[dict], params: SamplingParams = GREEDY) -> tuple[str, str]:
    with lm.lock:
        lm.prefill(messages)
        s = lm.stream(params, threading.Event())
        text = "".join(piece for _, piece in s)
    return text, s.finish_reason


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_greedy_answer_and_token_estimate(llm_server: LLMServer) -> None:
    lm = lm_for(llm_server.base_url)
    stats = lm.prefill(FRANCE)
    assert "user: What is the capital of France?" in stats.prompt and stats.input_tokens == stats.evaluated
    s = lm.stream(GREEDY, threading.Event())
    pieces = list(s)
    text = "".join(p for _, p in pieces)
    assert "Paris" in text, (text, llm_server.tail())
    assert all(n == 1 for n, _ in pieces) and s.finish_reason == "eos"
    # the estimate is conservative: never below the server's own count (a non-streamed request reports it)
    usage = openai.OpenAI(base_url=llm_server.base_url, api_key="none").chat.completions.create(
        model=llm_server.model, messages=FRANCE, max_tokens=1).usage   # type: ignore[arg-type]
    assert usage is not None and lm.count_tokens(FRANCE) >= usage.prompt_tokens
    # this server sends no usage in a stream: tolerated, cache_length falls back to the estimate
    assert lm.prompt_tokens == 0 and lm.cache_length() == stats.input_tokens
    # the same with sampling_extras off; a length-limited reply says so
    text, reason = reply(lm_for(llm_server.base_url, sampling_extras=False), COUNT, SamplingParams(max_tokens=5))
    assert text and reason == "length"
    lm.reset()
    assert lm.cache_length() == 0
    with pytest.raises(EngineInputError):
        lm.stream(GREEDY, threading.Event())
    with pytest.raises(EngineInputError):
        lm.prefill([{"role": "tool", "content": "x"}])


def _cancel_mid_reply(lm: OpenAITextLM, cancel: str) -> tuple[float, str, int]:
    """Start a long reply; after a few pieces another thread cancels it 30 ms later (the reader
    is then most likely blocked in a read). The seconds from the cancel to the end of the
    iteration, the finish reason and the pieces seen."""
    stop = threading.Event()
    lm.prefill(COUNT)
    s = lm.stream(LONG, stop)
    fired: list[float] = []

    def go() -> None:
        fired.append(time.monotonic())
        if cancel == "abort":
            s.abort()
        else:
            stop.set()

    n = 0
    for _ in s:
        n += 1
        if n == 5:
            threading.Timer(0.03, go).start()
    return time.monotonic() - fired[0], s.finish_reason, n


@pytest.mark.parametrize("cancel", ["abort", "stop"])
def test_cancel_ends_reply_at_once_and_server_stops(llm_server: LLMServer, cancel: str) -> None:
    lm = lm_for(llm_server.base_url)
    seen = llm_server.tail(1 << 20).count("Disconnected from client")
    latency, reason, n = _cancel_mid_reply(lm, cancel)
    print(f"{cancel}: iteration ended {latency * 1000:.0f} ms after the cancel, {n} pieces")
    assert reason == "cancelled" and latency < 0.5, (latency, reason)
    assert n < 40
    # the server noticed the client go and stopped generating: a new reply is not queued
    # behind the rest of the 400 tokens (about 20 s at this speed)
    t = time.monotonic()
    text, reason = reply(lm, FRANCE)
    assert "Paris" in text and time.monotonic() - t < 8.0, (time.monotonic() - t, llm_server.tail())
    assert llm_server.tail(1 << 20).count("Disconnected from client") == seen + 1


def test_abort_before_first_piece_and_before_start(llm_server: LLMServer) -> None:
    lm = lm_for(llm_server.base_url)
    lm.prefill(COUNT)
    s = lm.stream(LONG, threading.Event())
    s.abort()
    assert list(s) == [] and s.finish_reason == "cancelled"
    # abort while the request is in flight, before any piece (the server is evaluating the prompt)
    s = lm.stream(LONG, threading.Event())
    threading.Timer(0.05, s.abort).start()
    t = time.monotonic()
    pieces = list(s)
    assert s.finish_reason == "cancelled" and time.monotonic() - t < 1.0 and len(pieces) < 20


def test_server_killed_mid_reply() -> None:
    server = start_llm_server()
    try:
        lm = lm_for(server.base_url)
        lm.prefill(COUNT)
        s = lm.stream(LONG, threading.Event())
        n, t = 0, 0.0
        with pytest.raises(EngineBackendError) as err:
            for _ in s:
                n += 1
                if n == 3:
                    t = time.monotonic()
                    server.kill()
        latency = time.monotonic() - t
    finally:
        server.stop()
    print(f"kill detected {latency * 1000:.0f} ms after SIGKILL: {err.value}")
    assert t and latency < 2.0 and server.base_url in str(err.value) and s.finish_reason == "error"
    # afterwards nothing listens: refused, quickly
    t = time.monotonic()
    with pytest.raises(EngineBackendError, match="could not connect"):
        reply(lm, FRANCE)
    assert time.monotonic() - t < 1.0


def test_connection_refused_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    lm = lm_for(url)
    t = time.monotonic()
    with pytest.raises(EngineBackendError) as err:
        reply(lm, FRANCE)
    assert time.monotonic() - t < 1.0
    assert url in str(err.value) and "could not connect" in str(err.value), str(err.value)


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:   # accepts connections (kernel backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        lm = lm_for(url, timeout_s=1.0)
        t = time.monotonic()
        with pytest.raises(EngineBackendError) as err:
            reply(lm, FRANCE)
        took = time.monotonic() - t
    assert 0.9 < took < 2.5, took
    assert url in str(err.value) and "timed out" in str(err.value), str(err.value)


def test_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-7f3a9c2e51d84b06"
    server = start_llm_server(api_key=key)
    try:
        monkeypatch.setenv(KEY_ENV, key)
        text, reason = reply(lm_for(server.base_url), FRANCE)
        assert "Paris" in text and reason == "eos"
        for wrong in ("sk-wrong-0c1d2e3f4a5b", None):
            if wrong is None:
                monkeypatch.delenv(KEY_ENV)       # no key at all: a placeholder is sent
            else:
                monkeypatch.setenv(KEY_ENV, wrong)
            t = time.monotonic()
            with pytest.raises(EngineBackendError) as err:
                reply(lm_for(server.base_url), FRANCE)
            msg = str(err.value)
            assert "401" in msg and server.base_url in msg and time.monotonic() - t < 2.0, msg
            assert key not in msg and (wrong is None or wrong not in msg), msg
    finally:
        server.stop()


# ------------------------------------------------------------------ a scripted server (usage, errors)
def _chunk(delta: str, finish: str = "null", usage: str = "") -> bytes:
    choices = "[]" if usage else f'[{{"index":0,"delta":{{"content":"{delta}"}},"finish_reason":{finish}}}]'
    body = f'{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":{choices}'
    return f"data: {body}{',' + usage if usage else ''}}}\n\n".encode()


SCRIPTS = {
    # vLLM with include_usage: pieces, a finish chunk, then a usage chunk with no choices
    "usage": [_chunk("Pa"), _chunk("ris"), _chunk("", '"stop"'),
              _chunk("", usage='"usage":{"prompt_tokens":17,"completion_tokens":2,"total_tokens":19}'),
              b"data: [DONE]\n\n"],
    # an error event mid-stream (vLLM sends one when the engine dies)
    "error": [_chunk("Pa"), b'data: {"error":{"message":"engine dead","type":"InternalServerError","code":500}}\n\n'],
    # the body ends cleanly without a finish reason
    "unfinished": [_chunk("Pa")],
}


class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:   # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in SCRIPTS[self.path.split("/")[1]]:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_usage_recorded_and_stream_faults(scripted: str) -> None:
    lm = lm_for(f"{scripted}/usage/v1")
    assert reply(lm, FRANCE) == ("Paris", "eos")
    assert (lm.prompt_tokens, lm.completion_tokens, lm.cache_length()) == (17, 2, 17)
    with pytest.raises(EngineBackendError, match="engine dead"):
        reply(lm_for(f"{scripted}/error/v1"), FRANCE)
    with pytest.raises(EngineBackendError, match="unfinished"):
        reply(lm_for(f"{scripted}/unfinished/v1"), FRANCE)
