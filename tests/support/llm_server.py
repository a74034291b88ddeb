"""A real OpenAI-compatible chat-completions server on loopback, for tests of the ``openai`` LLM kind.

``start_llm_server(api_key=None)`` runs llama-cpp-python's own server on a free port,

    python -m llama_cpp.server --model <qwen gguf> --model_alias qwen2.5-0.5b --host 127.0.0.1
        --port <free> --n_ctx 2048 --n_threads 2 --verbose False [--api_key KEY]

serving the same Qwen2.5-0.5B GGUF as the cascade, and waits (at most ``LOAD_TIMEOUT_S``) until
``GET /v1/models`` lists the alias; if it cannot start, it raises with the server's output.
``llm_server`` is a module-scoped fixture over it (``from tests.support.llm_server import
llm_server``). The process is killed at teardown, at interpreter exit, and (Linux) when the test
process dies (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import atexit
import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

from tests.support.gateway_procs import end_processes

LOAD_TIMEOUT_S = 60.0
MODEL_ALIAS = "qwen2.5-0.5b"
_running: list["LLMServer"] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LLMServer:
    proc: "subprocess.Popen[bytes]"
    port: int
    model: str                  # the served model id (``--model_alias``), as ``/v1/models`` lists it
    log: Path
    api_key: Optional[str] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        end_processes([self.proc])
        if self in _running:
            _running.remove(self)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def start_llm_server(api_key: Optional[str] = None, n_ctx: int = 2048, threads: int = 2,
                     port: Optional[int] = None) -> LLMServer:
    from omniserve.engine.backends.embedded.models import qwen_gguf_path

    gguf = qwen_gguf_path()
    port = port or free_port()
    log = Path(tempfile.mkstemp(prefix="llm-server-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
           "--verbose", "False"]
    if api_key is not None:
        cmd += ["--api_key", api_key]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
    server = LLMServer(proc, port, MODEL_ALIAS, log, api_key)
    _running.append(server)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{server.tail()}")
        try:
            r = httpx.get(f"{server.base_url}/models", headers=headers, timeout=2.0)
            if r.status_code == 200 and MODEL_ALIAS in [m.get("id") for m in r.json().get("data", [])]:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama_cpp.server did not answer /v1/models within {LOAD_TIMEOUT_S:g} s:\n{server.tail()}")


@atexit.register
def _stop_all() -> None:
    for s in list(_running):
        s.stop()


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LLMServer]:
    server = start_llm_server()
    try:
        yield server
    finally:
        server.stop()
