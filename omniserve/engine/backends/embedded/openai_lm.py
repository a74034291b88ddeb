"""The ``openai`` kind of the cascade's LLM stage: any OpenAI-compatible chat-completions server.

vLLM, SGLang, Ollama (``/v1``), llama.cpp's ``llama-server`` and llama-cpp-python's
``python -m llama_cpp.server`` all serve ``POST {base_url}/chat/completions`` with server-sent
events. We talk to them with the official ``openai`` SDK (no retries: a voice reply that is late
is worse than an error the session can report and move past).

- ``prefill`` only remembers the messages: prefix reuse is the server's business.
- ``count_tokens`` is an *estimate* (we do not know the server's tokenizer) used only for the
  context-budget arithmetic against ``engine.llm.n_ctx``; once a reply reports usage, the real
  prompt size is what ``cache_length`` reports.
- ``stream(...).abort()`` may be called from any thread: it shuts the reply's TCP connection down
  at once, so a read blocked in another thread returns now and the server sees the client go (and
  stops generating, where it checks for disconnects). A set ``stop`` event does the same within
  ``_POLL_S``, and is checked between pieces.
- Failures become ``EngineBackendError`` naming the server's URL (never the API key): refused,
  timed out, an HTTP error status, the server gone mid-reply. An abort or a stop is not an error:
  ``finish_reason`` is ``"cancelled"``.

``timeout_s`` bounds each wait for the next streamed chunk (the first one includes the prompt's
evaluation and any queueing on the server), not the time the consumer spends between pieces. A
watchdog thread per reply enforces it (and watches ``stop``), because SSE keep-alive comments
(sse-starlette pings every 15 s) would keep a socket read timeout from ever firing; the socket
timeout stays as a backstop.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
from typing import Any, Iterator, Optional, Sequence, cast
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai

from omniserve.config import LLMSettings
from omniserve.engine.api import EngineBackendError, EngineInputError

from .components.base import SamplingParams
from .lm import PrefillStats

_ROLES = ("system", "user", "assistant")
_PER_MESSAGE = 8        # role markers and separators of a chat template, rounded up (Qwen: 5)
_PER_PROMPT = 8         # the generation prompt (``<|im_start|>assistant\n``) and a BOS, rounded up
_POLL_S = 0.05          # how often the watchdog looks at ``stop`` and the time waited


def estimate_tokens(messages: Sequence[dict]) -> int:
    """A conservative token count without the server's tokenizer: UTF-8 bytes / 3, rounded up, plus
    ``_PER_MESSAGE`` per message and ``_PER_PROMPT``. BPE vocabularies average about 4 bytes per
    token on English and at least 3 on CJK text, so this errs on the large side there."""
    return _PER_PROMPT + sum(
        _PER_MESSAGE + math.ceil(len(str(m.get("content", "")).encode("utf-8")) / 3) for m in messages)


def _redacted(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def _shutdown(net: Any) -> None:
    """Shut a connection's socket down (both ways): a ``recv`` blocked in another thread returns
    at once, unlike ``close``. The plain ``socket`` method, so a TLS object is left alone."""
    sock = net.get_extra_info("socket") if net is not None else None
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _OpenAIStream:
    """One streamed reply; see the module docstring. Iterate once."""

    def __init__(self, lm: "OpenAITextLM", messages: list[dict], params: SamplingParams,
                 stop: threading.Event) -> None:
        self._lm, self._messages, self._params, self._stop = lm, messages, params, stop
        self.aborted = False
        self.timed_out = False
        self.finish_reason = ""
        self._waiting_since: Optional[float] = None   # monotonic time the reader began waiting
        self._done = threading.Event()

    def _cancelled(self) -> bool:
        return self.aborted or self._stop.is_set()

    def interrupted(self) -> bool:
        return self.timed_out or self._cancelled()

    def abort(self) -> None:
        self.aborted = True
        self._lm._interrupt(self)

    def _watch(self) -> None:
        """Until the reply ends: a set ``stop`` or a wait longer than ``timeout_s`` shuts the
        connection down (``stop`` so, too, while the server is still evaluating the prompt)."""
        limit = self._lm.settings.timeout_s
        while not self._done.wait(_POLL_S):
            since = self._waiting_since
            if self._stop.is_set() or (since is not None and time.monotonic() - since > limit):
                self.timed_out = not self._stop.is_set()
                self._lm._interrupt(self)
                return

    def _chunks(self, chunks: Iterator[Any]) -> Iterator[Any]:
        """``chunks`` with the time spent waiting for each one visible to ``_watch``."""
        it = iter(chunks)
        while True:
            self._waiting_since = time.monotonic()
            chunk = next(it, None)
            self._waiting_since = None
            if chunk is None:
                return
            yield chunk

    def __iter__(self) -> Iterator[tuple[int, str]]:
        lm, p = self._lm, self._params
        if self._cancelled():
            self.finish_reason = "cancelled"
            return
        extra: dict[str, object] = {}
        if lm.settings.sampling_extras:
            extra = {"top_k": p.top_k, "repetition_penalty": p.repeat_penalty}
        reason = ""
        lm._begin(self)
        self._waiting_since = time.monotonic()
        threading.Thread(target=self._watch, name="openai-lm-watchdog", daemon=True).start()
        try:
            chunks = lm.client.chat.completions.create(
                model=lm.settings.model, messages=cast(Any, self._messages), stream=True,
                stream_options={"include_usage": True}, max_tokens=p.max_tokens,
                temperature=p.temperature, top_p=p.top_p, extra_body=extra or None)
            with chunks:
                for chunk in self._chunks(chunks):
                    if chunk.usage is not None:
                        lm.prompt_tokens = chunk.usage.prompt_tokens
                        lm.completion_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            if self._cancelled():
                                break
                            yield 1, choice.delta.content
                        if choice.finish_reason:
                            reason = choice.finish_reason
                    if self._cancelled():
                        self.finish_reason = "cancelled"
                        return
            if not reason:   # a clean end of the body without a finish reason: not a finished reply
                self.finish_reason = "error"
                raise EngineBackendError(f"the language model server at {lm.url} ended the reply unfinished")
            self.finish_reason = "eos" if reason == "stop" else reason
        except (openai.OpenAIError, httpx2.HTTPError, OSError) as e:
            if self._cancelled():
                self.finish_reason = "cancelled"
                return
            self.finish_reason = "error"
            raise lm.error(e, timed_out=self.timed_out) from None
        finally:
            self._done.set()
            lm._end(self)
            if not self.finish_reason:   # the consumer stopped iterating
                self.finish_reason = "cancelled"


class OpenAITextLM:
    """``TextLM`` over an OpenAI-compatible chat-completions server (``engine.llm.kind: openai``)."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.n_ctx = settings.n_ctx
        self.lock = threading.RLock()
        self.url = _redacted(settings.base_url.rstrip("/"))
        self.prompt_tokens = 0          # the last reply's usage, as the server counted it (0: not reported)
        self.completion_tokens = 0
        self._estimate = 0              # estimate_tokens of the last prefill
        self._key = os.environ.get(settings.api_key_env, "")
        self._messages: list[dict] = []
        self._guard = threading.Lock()  # _active, _net
        self._active: Optional[_OpenAIStream] = None
        self._net: Any = None           # the network stream of the one pooled connection
        timeout = httpx2.Timeout(settings.timeout_s, connect=settings.connect_timeout_s,
                                 pool=settings.connect_timeout_s)
        # One connection (replies are serialized by ``lock``), kept alive between turns; the trace
        # hook tells us its socket, so that ``abort`` can shut it down from another thread.
        http = httpx2.Client(timeout=timeout, limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
                             event_hooks={"request": [self._on_request]})
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=self._key or "none",
                                    max_retries=0, timeout=timeout, http_client=http)

    # ---------------------------------------------------------------- TextLM
    def count_tokens(self, messages: Sequence[dict], tools: Sequence[dict] = ()) -> int:
        _no_tools(tools)
        return estimate_tokens(messages)

    def prefill(self, messages: Sequence[dict], stop: Optional[threading.Event] = None,
                tools: Sequence[dict] = ()) -> PrefillStats:
        _no_tools(tools)
        msgs = []
        for m in messages:
            if m.get("role") not in _ROLES:
                raise EngineInputError(f"unknown chat role {m.get('role')!r}")
            msgs.append({"role": m["role"], "content": str(m.get("content", ""))})
        self._messages = msgs
        n = self._estimate = estimate_tokens(msgs)
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return PrefillStats(input_tokens=n, evaluated=n, prompt=prompt)

    def stream(self, params: SamplingParams, stop: threading.Event) -> _OpenAIStream:
        if not self._messages:
            raise EngineInputError("nothing to continue from: prefill a prompt first")
        return _OpenAIStream(self, list(self._messages), params, stop)

    def warm_next_turn(self, messages: Sequence[dict]) -> int:
        return 0

    def cache_length(self) -> int:
        """The last reply's prompt as the server counted it; the estimate where it sent no usage."""
        return self.prompt_tokens or self._estimate

    def reset(self) -> None:
        self._messages = []
        self.prompt_tokens = self.completion_tokens = self._estimate = 0

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- errors
    def error(self, e: BaseException, timed_out: bool = False) -> EngineBackendError:
        """A user-facing error for a failed request; names the URL, never the key."""
        where = f"the language model server at {self.url}"
        cause = e.__cause__
        if isinstance(e, openai.APIStatusError):
            body = e.body
            detail = (body.get("message") or body.get("detail") or body) if isinstance(body, dict) else body
            text = f"{where} answered HTTP {e.status_code}" + (f": {str(detail)[:200]}" if detail else "")
        elif timed_out or isinstance(e, (openai.APITimeoutError, httpx2.TimeoutException)):
            if isinstance(cause, httpx2.ConnectTimeout) or isinstance(e, httpx2.ConnectTimeout):
                text = f"could not connect to {where} within {self.settings.connect_timeout_s:g} s"
            else:
                text = f"{where} timed out: nothing within {self.settings.timeout_s:g} s"
        elif isinstance(cause, httpx2.ConnectError) or isinstance(e, httpx2.ConnectError):
            text = f"could not connect to {where} ({cause or e})"
        elif isinstance(e, (openai.APIConnectionError, httpx2.HTTPError, OSError)):
            text = f"{where} went away mid-reply ({cause or e})"
        else:
            text = f"{where} failed: {str(e)[:200]}"
        if self._key:
            text = text.replace(self._key, "***")
        return EngineBackendError(text)

    # ---------------------------------------------------------------- abort plumbing
    def _on_request(self, request: httpx2.Request) -> None:
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            net = info.get("return_value")
            with self._guard:
                self._net = net
                late = self._active is not None and self._active.interrupted()
            if late:   # cancelled while this connection was being made
                _shutdown(net)

    def _begin(self, s: _OpenAIStream) -> None:
        with self._guard:
            self._active = s

    def _end(self, s: _OpenAIStream) -> None:
        with self._guard:
            if self._active is s:
                self._active = None

    def _interrupt(self, s: _OpenAIStream) -> None:
        with self._guard:
            net = self._net if self._active is s else None
        _shutdown(net)


def _no_tools(tools: Sequence[dict]) -> None:
    if tools:
        raise EngineInputError("tools are not supported with engine.llm.kind = openai yet "
                               "(use the in-process llama_cpp LLM, or send the request without tools)")
