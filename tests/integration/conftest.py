"""Fixtures for worker integration tests: real worker processes on free loopback ports.

``real_worker`` (session scope) starts ``python -m omniserve.cli worker`` as a subprocess with
the real engine, a temporary data_dir and short server timeouts, and waits until ``/health``
says ``idle``. One process is shared by every test that uses it: loading models costs time.

Client helpers (``connect``, ``recv``, ``recv_until``, ``health``) use the ``websockets`` client
library and httpx, as a third-party client would.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import httpx
import numpy as np
import pytest
import websockets

from omniserve.audio import encode_f32
from omniserve.tokens import bearer

REPO = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WorkerHandle:
    base: str            # http://127.0.0.1:PORT
    ws: str              # ws://127.0.0.1:PORT
    data_dir: Path
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None
    seen_states: Optional[list] = None   # worker_status values /health reported while starting
    token: Optional[str] = None          # the worker token it was started with (sent by the helpers)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path and self.log_path.exists() else ""


def start_worker(tmp: Path, env_extra: dict[str, str], *args: str) -> WorkerHandle:
    port = free_port()
    data = tmp / "data"
    log_path = tmp / "worker.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **env_extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniserve.cli", "worker", "--port", str(port), "--index", "0",
         "--data-dir", str(data), *args],
        cwd=REPO, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    token = env_extra.get("OMNISERVE_WORKER__TOKEN") or env_extra.get("OMNISERVE_WORKER__REGISTER_TOKEN")
    return WorkerHandle(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", data, proc, log_path, token=token)


def wait_health(h: WorkerHandle, want: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        if h.proc is not None and h.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {h.proc.returncode}:\n{h.log_tail()}")
        try:
            last = httpx.get(h.base + "/health", timeout=2, headers=h.headers).json()
            if h.seen_states is not None and last.get("worker_status") not in h.seen_states:
                h.seen_states.append(last.get("worker_status"))
            if last.get("worker_status") in want:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"worker never reached {want}; last health {last}\n{h.log_tail()}")


def stop_worker(h: WorkerHandle) -> None:
    if h.proc is None or h.proc.poll() is not None:
        return
    h.proc.terminate()
    try:
        h.proc.wait(15)
    except subprocess.TimeoutExpired:
        h.proc.kill()
        h.proc.wait(5)


# Short server-side limits so timeout paths can be tested in seconds.
TEST_ENV = {
    "OMNISERVE_WORKER__DUPLEX_IDLE_TIMEOUT_S": "4",
    "OMNISERVE_WORKER__HALF_DUPLEX_TIMEOUT_CAP_S": "60",
    "OMNISERVE_WORKER__DUPLEX_PAUSE_TIMEOUT_CAP_S": "30",
    "OMNISERVE_WORKER__PREPARE_WAIT_S": "20",
    "OMNISERVE_WORKER__MAX_AUDIO_FRAME_BYTES": str(256 * 1024),
    "OMNISERVE_WORKER__MAX_CHAT_FRAME_BYTES": str(4 * 1024 * 1024),
    "OMNISERVE_ENGINE__THREADS": "2",
}


@pytest.fixture(scope="session")
def real_worker(tmp_path_factory: pytest.TempPathFactory):
    """One worker process with the real engine for the whole test session."""
    h = start_worker(tmp_path_factory.mktemp("worker"), TEST_ENV)
    h.seen_states = []
    try:
        wait_health(h, {"idle", "error"}, LOAD_TIMEOUT_S)
        yield h
    finally:
        stop_worker(h)


# ------------------------------------------------------------------ client helpers
_OPEN: list = []   # client sockets of the running test; closed by the ``idle`` fixture's teardown


async def connect(url: str, token: Optional[str] = None) -> Any:
    ws = await websockets.connect(url, max_size=None, open_timeout=15, ping_interval=None,
                                  additional_headers=bearer(token))
    _OPEN.append(ws)
    return ws


async def recv(ws: Any, timeout: float = 60.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, types: set[str] | str, timeout: float = 120.0) -> list[dict]:
    """Messages up to and including the first whose type is in ``types``."""
    types = {types} if isinstance(types, str) else types
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.1, deadline - time.monotonic()))
        out.append(m)
        if m.get("type") in types:
            return out


async def health(h: WorkerHandle) -> dict:
    async with httpx.AsyncClient() as c:
        return (await c.get(h.base + "/health", timeout=5, headers=h.headers)).json()


async def wait_idle(h: WorkerHandle, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        hl = await health(h)
        if hl["worker_status"] == "idle" or time.monotonic() > deadline:
            return hl
        await asyncio.sleep(0.1)


def b64(pcm: np.ndarray) -> str:
    return encode_f32(pcm)


def chunks(pcm: np.ndarray, n: int) -> list[np.ndarray]:
    """Split into pieces of ``n`` samples, the last one zero-padded."""
    pad = (-len(pcm)) % n
    pcm = np.concatenate([pcm, np.zeros(pad, np.float32)])
    return [pcm[i:i + n] for i in range(0, len(pcm), n)]


@pytest.fixture(scope="session")
def worker(request: pytest.FixtureRequest) -> WorkerHandle:
    """The shared worker: ``real_worker``, or an already running one named by
    ``OMNISERVE_TEST_WORKER_URL`` (+ ``OMNISERVE_TEST_WORKER_DATA``, its data_dir)."""
    url = os.environ.get("OMNISERVE_TEST_WORKER_URL")
    if url:
        return WorkerHandle(url, url.replace("http", "ws", 1), Path(os.environ.get("OMNISERVE_TEST_WORKER_DATA", "data")))
    return request.getfixturevalue("real_worker")


@pytest.fixture
async def idle(worker: WorkerHandle) -> WorkerHandle:
    """The shared worker, checked idle before the test and again after it (every end path)."""
    _OPEN.clear()   # sockets of earlier tests without this fixture: their event loop is gone with them
    hl = await wait_idle(worker, 60)
    assert hl["worker_status"] == "idle", hl
    yield worker
    hl = await wait_idle(worker, 15)  # the test's own end path must have freed the worker
    while _OPEN:  # a failed test must not leave its session holding the worker for the next one
        await _OPEN.pop().close()
    assert hl["worker_status"] == "idle", f"worker not idle after the test: {hl}"
    assert hl["current_session_id"] is None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on a free loopback port for the module (``tests/support/redis_server.py``:
    ``.url``, ``.kill()``, ``.restart()``); skipped only where redis-server is not installed."""
    from tests.support.redis_server import available, running_redis

    if not available():
        pytest.skip("redis-server is not installed (apt-get install redis-server; setup.sh installs it)")
    with running_redis(tmp_path_factory.mktemp("redis")) as r:
        yield r
