"""The language model: a GGUF run by llama-cpp-python, driven token by token.

We do not use ``Llama.create_chat_completion``: the cascade's sessions need to own the KV cache (reuse the
longest common prefix across turns, roll back, keep a sliding window, interleave listening and
speaking in full duplex). So this class keeps a logical token sequence and evaluates only what
the cache does not hold yet.

Not thread-safe: whoever drives it holds ``LlamaTextLM.lock``.
"""
from __future__ import annotations

import codecs
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omniserve.engine.api import EngineInputError
from .base import SamplingParams

_PENALTY_LAST_N = 64

LLM_MODELS = ("qwen2.5-0.5b", "smollm2-135m")


def gguf_path(name: str, cache_dir: Optional[str] = None) -> Path:
    """GGUF file for a model name from the settings (``engine.llm.model``)."""
    from .. import models

    if name == "qwen2.5-0.5b":
        return models.qwen_gguf_path(cache_dir)
    if name == "smollm2-135m":
        return models.smollm2_gguf_path()
    raise ValueError(f"unknown LLM {name!r}; choose one of {LLM_MODELS}")


class LlamaLM:
    """llama.cpp with explicit prefix reuse (``lm.LlamaTextLM`` adapts it to the cascade's ``TextLM``).

    ``_seq`` is the logical context (prompt + generated tokens); the first ``_llm.n_tokens`` of
    it are in the KV cache. ``_logits_at`` is the sequence length the current logits belong to
    (-1 = stale), so a repeated prefill of the same tokens costs nothing.
    """

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, threads: int = 0,
                 n_batch: int = 256, seed: int = 0) -> None:
        from llama_cpp import Llama

        threads = threads or os.cpu_count() or 1
        self._llm = Llama(str(model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                          n_batch=n_batch, seed=seed, verbose=False)
        self.n_ctx = self._llm.n_ctx()
        self.model_path = Path(model_path)
        self._seq: list[int] = []
        self._logits_at = -1
        self._seed = seed
        self.last_finish_reason = ""   # "eos" | "length" | "stop_string" | "cancelled" | "context"
        md = self._llm.metadata
        self._template_src = md.get("tokenizer.chat_template") or _CHATML
        self._bos = self._token_text(self._llm.token_bos())
        self._eos = self._token_text(self._llm.token_eos())
        self._template: Optional[Any] = None     # the compiled jinja2 template, on first use

    # ------------------------------------------------------------------ text <-> tokens
    def _token_text(self, tok: int) -> str:
        if tok < 0:
            return ""
        return self._llm.detokenize([tok], special=True).decode("utf-8", errors="replace")

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``; special tokens written in it (``<|im_start|>``) are parsed."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens), special=False).decode("utf-8", errors="replace")

    def is_eog(self, tok: int) -> bool:
        """End-of-generation token (EOS, ``<|im_end|>``, ``<|endoftext|>`` …)."""
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, tok))

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                    tools: Sequence[dict] = ()) -> str:
        """Prompt text from the GGUF's own chat template (both shipped models use ChatML).

        Deterministic: the same messages always render the same text, and a conversation's
        rendering is a prefix of the rendering after one more turn — which is what prefix reuse
        across turns relies on. Control-token look-alikes in the contents ("<|im_start|>") are
        defused, so user text cannot forge a system turn when the prompt is tokenized with
        special tokens parsed.

        ``tools`` (OpenAI function-tool dicts) reach the template as its own ``tools`` variable;
        messages may then be ``tool`` results (``content``) and assistants may carry ``tool_calls``
        (OpenAI shape, ``arguments`` an object). A template that ignores ``tools`` is refused.
        """
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(self._template_src)
        roles = ("system", "user", "assistant", "tool")
        for m in messages:
            if m.get("role") not in roles:
                raise EngineInputError(f"unknown chat role {m.get('role')!r}")
        if not tools:
            msgs = [{"role": m["role"], "content": _defuse(str(m.get("content", "")))} for m in messages]
            return self._template.render(messages=msgs, add_generation_prompt=add_generation_prompt,
                                         bos_token=self._bos, eos_token=self._eos)
        if "tools" not in self._template_src:
            raise EngineInputError(f"the model's chat template ({self.model_path.name}) does not support tools")
        msgs = []
        for m in messages:
            d: dict = {"role": m["role"], "content": _defuse(str(m.get("content", "")))}
            if m.get("tool_calls"):
                d["tool_calls"] = m["tool_calls"]
            if m.get("tool_call_id"):
                d["tool_call_id"] = m["tool_call_id"]
            msgs.append(d)
        return self._template.render(messages=msgs, tools=list(tools), add_generation_prompt=add_generation_prompt,
                                     bos_token=self._bos, eos_token=self._eos)

    # ------------------------------------------------------------------ KV cache
    @property
    def n_cached(self) -> int:
        """Length of the logical context (evaluated tokens plus at most one pending sampled token)."""
        return len(self._seq)

    def cached_tokens(self) -> list[int]:
        return list(self._seq)

    def truncate(self, n: int) -> None:
        """Drop every token after the first ``n`` (rollback, sliding windows). Cheap."""
        n = max(0, min(n, len(self._seq)))
        if n == len(self._seq):
            return
        self._seq = self._seq[:n]
        if self._llm.n_tokens > n:
            self._llm.n_tokens = n      # llama's next eval removes KV cells past n_tokens
        self._logits_at = -1

    def reset(self) -> None:
        self.truncate(0)

    def prefill(self, tokens: Sequence[int], stop: Optional[threading.Event] = None) -> int:
        """Make the context exactly ``tokens``, evaluating only what the KV cache lacks.

        Returns the number of tokens evaluated now (0 when nothing changed). With ``stop`` set
        midway it returns early at a batch boundary, the context then holding only a prefix of
        ``tokens`` (check ``n_cached``); a later prefill continues from there.
        """
        tokens = [int(t) for t in tokens]
        if len(tokens) >= self.n_ctx:
            raise EngineInputError(f"prompt too long: {len(tokens)} tokens, the context holds {self.n_ctx}")
        if not tokens:
            self.reset()
            return 0
        n_eval = self._llm.n_tokens
        if n_eval == len(tokens) and self._logits_at == len(tokens) and self._seq[:n_eval] == tokens:
            self._seq = tokens
            return 0
        common = 0
        limit = min(n_eval, len(tokens))
        ids = self._llm.input_ids
        while common < limit and int(ids[common]) == tokens[common]:
            common += 1
        if common == len(tokens):
            common -= 1   # re-evaluate the last token so its logits are fresh for sampling
        self._llm.n_tokens = common
        self._logits_at = -1
        step = self._llm.n_batch
        try:
            for i in range(common, len(tokens), step):
                if stop is not None and stop.is_set():
                    break
                self._llm.eval(tokens[i:i + step])
        finally:
            done = self._llm.n_tokens
            self._seq = tokens[:done]
            self._logits_at = done if done > common else -1   # logits belong to the last decoded batch
        return done - common

    # ------------------------------------------------------------------ generation
    def _sampler(self, p: SamplingParams):
        from llama_cpp._internals import LlamaSampler

        s = LlamaSampler()
        s.add_penalties(self._llm.n_vocab(), _PENALTY_LAST_N, float(p.repeat_penalty), 0.0, 0.0)
        if p.temperature <= 0:
            s.add_greedy()
        else:
            s.add_top_k(int(p.top_k) if p.top_k > 0 else self._llm.n_vocab())
            s.add_top_p(float(p.top_p), 1)
            s.add_temp(float(p.temperature))
            s.add_dist(self._seed)
            self._seed += 1
        for t in self._seq[-_PENALTY_LAST_N:]:
            s.accept(t)
        return s

    def stream(self, params: SamplingParams, stop: Optional[threading.Event] = None,
               stop_strings: Sequence[str] = ()) -> Iterator[tuple[int, str]]:
        """Sample from the current context token by token.

        Yields (token id, text) where text is the newly printable text — "" while a multi-byte
        UTF-8 character is incomplete or while the text could still turn into a stop string.
        Every sampled token is appended to the context, except the end-of-generation token.
        The reason it ended is in ``last_finish_reason``.
        """
        if not self._seq:
            raise EngineInputError("nothing to continue from: prefill a prompt first")
        if self._llm.n_tokens != len(self._seq) or self._logits_at != len(self._seq):
            self.prefill(self._seq)
        sampler = self._sampler(params)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""      # decoded text not yet yielded (might be the start of a stop string)
        self.last_finish_reason = "length"
        try:
            for i in range(max(0, int(params.max_tokens))):
                if stop is not None and stop.is_set():
                    self.last_finish_reason = "cancelled"
                    break
                if len(self._seq) >= self.n_ctx - 1:
                    self.last_finish_reason = "context"
                    break
                if i > 0:   # evaluate the previous sampled token to get the next logits
                    self._llm.eval([self._seq[-1]])
                    self._logits_at = len(self._seq)
                tok = sampler.sample(self._llm._ctx, -1)
                if self.is_eog(tok):
                    self.last_finish_reason = "eos"
                    break
                self._seq.append(tok)
                self._logits_at = -1
                held += decoder.decode(self._llm.detokenize([tok]))
                out, held, hit = _split_stop(held, stop_strings)
                yield tok, out
                if hit:
                    self.last_finish_reason = "stop_string"
                    return
            held += decoder.decode(b"", final=True)
            if held and self.last_finish_reason != "cancelled":
                yield -1, held    # flush text held back for stop strings (-1: no new token)
        finally:
            sampler.close()


_SPECIAL_LIKE = re.compile(r"<\|([^|<>\s]{1,40})\|>")


def _defuse(content: str) -> str:
    """``<|name|>`` → ``<| name |>``: reads the same, tokenizes as plain text."""
    return _SPECIAL_LIKE.sub(r"<| \1 |>", content)


def _split_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, str, bool]:
    """(printable now, held back, stop string found)."""
    if not stop_strings:
        return text, "", False
    cut = min((text.find(s) for s in stop_strings if s and s in text), default=-1)
    if cut >= 0:
        return text[:cut], "", True
    keep = 0
    for s in stop_strings:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return text[:len(text) - keep], text[len(text) - keep:], False


_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
           "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
