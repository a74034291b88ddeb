"""The cascade's language model stage, behind one small interface with two kinds:

- ``llama_cpp`` (default): llama-cpp-python in process. We own the KV cache: a new turn evaluates
  only its own tokens, and the next turn's fixed start is evaluated while the user listens.
- ``openai``: any OpenAI-compatible chat-completions server (``openai_lm.py``). Prefix reuse is
  the server's business; ``prefill`` only remembers the messages.

The cascade's sessions (chat, voice, duplex) call only what ``TextLM`` declares, so the kind is a
configuration (``engine.llm.kind``), not a branch in any session.

Messages are ``[{"role": "system" | "user" | "assistant", "content": str}]``; with ``tools``
(OpenAI function-tool dicts, passed only when there are some) also ``{"role": "tool", "content",
"tool_call_id"}`` and assistants with ``tool_calls`` (OpenAI shape, ``arguments`` an object).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Protocol, Sequence

from omniserve.engine.api import EngineInputError

from .components.base import SamplingParams

if TYPE_CHECKING:
    from .components.llm import LlamaLM


@dataclass
class PrefillStats:
    input_tokens: int          # tokens in the context after the prefill (openai: an estimate)
    evaluated: int             # tokens that had to be computed now (the rest came from the cache)
    prompt: str = ""           # what the model reads, as text (diagnostics, tests)


class TokenStream(Protocol):
    """One reply being generated: ``(tokens, text)`` pieces in order; ``tokens`` is how many
    tokens the piece stands for (0 for held-back text flushed at the end)."""

    def __iter__(self) -> Iterator[tuple[int, str]]: ...
    def abort(self) -> None: ...     # from any thread: end now (an HTTP stream is closed at once)
    finish_reason: str               # once iteration ends: "eos" | "length" | "cancelled" | "context" | …


class TextLM(Protocol):
    n_ctx: int
    lock: threading.RLock            # held by whoever drives the model (a reply, a prefill)

    def count_tokens(self, messages: Sequence[dict], tools: Sequence[dict] = ()) -> int: ...
    def prefill(self, messages: Sequence[dict], stop: Optional[threading.Event] = None,
                tools: Sequence[dict] = ()) -> PrefillStats: ...
    # make the context hold ``messages`` up to the assistant's turn; call with ``lock`` held
    def stream(self, params: SamplingParams, stop: threading.Event) -> TokenStream: ...
    # continue from the prefilled context; call with ``lock`` held; ``stop`` set = end at the next piece
    def warm_next_turn(self, messages: Sequence[dict]) -> int: ...
    # idle time: evaluate what every next user turn starts with; returns tokens evaluated (0 = nothing to do)
    def cache_length(self) -> int: ...
    def reset(self) -> None: ...


class _LlamaStream:
    def __init__(self, lm: "LlamaLM", params: SamplingParams, stop: threading.Event) -> None:
        self._lm, self._params, self._stop = lm, params, stop
        self.finish_reason = ""

    def __iter__(self) -> Iterator[tuple[int, str]]:
        try:
            for tok, piece in self._lm.stream(self._params, stop=self._stop):
                yield (1 if tok >= 0 else 0), piece
        finally:
            self.finish_reason = self._lm.last_finish_reason

    def abort(self) -> None:
        """Nothing to close: the sampling loop checks ``stop`` before every token."""


class LlamaTextLM:
    """``TextLM`` over an in-process ``LlamaLM`` (GGUF chat template, explicit prefix reuse)."""

    def __init__(self, llm: "LlamaLM") -> None:
        self.llm = llm
        self.n_ctx = llm.n_ctx
        self.lock = threading.RLock()

    def render(self, messages: Sequence[dict], tools: Sequence[dict] = ()) -> str:
        return self.llm.render_chat(list(messages), add_generation_prompt=True, tools=tools)

    def count_tokens(self, messages: Sequence[dict], tools: Sequence[dict] = ()) -> int:
        return len(self.llm.tokenize(self.render(messages, tools)))

    def prefill(self, messages: Sequence[dict], stop: Optional[threading.Event] = None,
                tools: Sequence[dict] = ()) -> PrefillStats:
        prompt = self.render(messages, tools)
        tokens = self.llm.tokenize(prompt)
        with self.lock:
            evaluated = self.llm.prefill(tokens, stop)
        return PrefillStats(len(tokens), evaluated, prompt)

    def stream(self, params: SamplingParams, stop: threading.Event) -> _LlamaStream:
        return _LlamaStream(self.llm, params, stop)

    def warm_next_turn(self, messages: Sequence[dict]) -> int:
        """Template-agnostic: the shared prefix of two renders that differ only in the user's text."""
        try:
            a = self.llm.tokenize(self.render([*messages, {"role": "user", "content": "a"}]))
            b = self.llm.tokenize(self.render([*messages, {"role": "user", "content": "b"}]))
        except EngineInputError:
            return 0
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        if n == 0 or n >= self.n_ctx:
            return 0
        with self.lock:
            return self.llm.prefill(a[:n])

    def cache_length(self) -> int:
        return self.llm.n_cached

    def reset(self) -> None:
        with self.lock:
            self.llm.reset()
