"""Real processes on loopback for gateway tests and the gateway bench: fake workers and a gateway.

``start_fake_worker(port, *flags)`` runs ``tests/support/fake_worker.py``; ``start_gateway`` runs
``python -m omniserve.cli gateway --http`` with a temporary data folder and short intervals, and
waits until it answers ``/health`` (and optionally until ``n_ready`` workers are ready);
``fake_system`` is both, as a context manager.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import httpx

REPO = Path(__file__).resolve().parents[2]


def end_processes(procs: Iterable[subprocess.Popen], sig: Optional[int] = signal.SIGTERM, wait_s: float = 10.0) -> None:
    """``sig`` to each one still running (None: they were told to end some other way), then wait up
    to ``wait_s`` for each and SIGKILL what is left."""
    procs = list(procs)
    for p in procs:
        if sig is not None and p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        end_processes([self.proc], sig)


@dataclass
class GatewayProc(Proc):
    data_dir: Path = field(default_factory=Path)

    @property
    def token(self) -> str:
        return (self.data_dir / "admin_token").read_text().strip()

    @property
    def admin(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            httpx.get(url, timeout=1, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def start_fake_worker(tmp: Path, *flags: str, port: Optional[int] = None) -> Proc:
    port = port or free_port()
    log = tmp / f"fake_worker_{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_worker", "--port", str(port), *flags],
                            cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    p = Proc(proc, port, log)
    _wait_http(p.url + "/health", proc, log, 20)
    return p


def start_gateway(tmp: Path, workers: list[str], n_ready: int = 0, env: Optional[dict] = None,
                  *flags: str, data_dir: Optional[Path] = None, redis_url: Optional[str] = None) -> GatewayProc:
    """``env``: extra environment (settings as ``OMNISERVE_GATEWAY__…``); ``redis_url``: shared state
    in that Redis (``gateway.redis_url``), so several gateways started so act as one."""
    port = free_port()
    data = data_dir or tmp / "gw_data"
    log = tmp / f"gateway_{port}.log"
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMNISERVE_GATEWAY__HEALTH_INTERVAL_S="0.3")
    if redis_url:
        e["OMNISERVE_GATEWAY__REDIS_URL"] = redis_url
    e.update(env or {})
    cmd = [sys.executable, "-m", "omniserve.cli", "gateway", "--http", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data), "--log-level", "warning", *flags]
    if workers:
        cmd += ["--workers", ",".join(workers)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=e, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    g = GatewayProc(proc, port, log, data)
    _wait_http(g.url + "/health", proc, log, 30)
    if n_ready:
        wait_ready(g, n_ready)
    return g


def start_gateway_pair(tmp: Path, env: dict, data_dirs: tuple[Path, Path], redis_url: str) -> tuple[GatewayProc, GatewayProc]:
    """Two gateways on one Redis, no workers, started in the order of ``data_dirs`` (the first is
    stopped again when the second fails to start)."""
    first = start_gateway(tmp, [], 0, env, data_dir=data_dirs[0], redis_url=redis_url)
    try:
        return first, start_gateway(tmp, [], 0, env, data_dir=data_dirs[1], redis_url=redis_url)
    except BaseException:
        first.stop()
        raise


@contextmanager
def fake_system(tmp: Path, *worker_flags: str, env: Optional[dict] = None) -> Iterator[tuple[GatewayProc, Proc]]:
    """One fake worker (``worker_flags``) behind a gateway (``env``), both stopped afterwards."""
    w = start_fake_worker(tmp, *worker_flags)
    try:
        g = start_gateway(tmp, [w.url], 1, env)
        try:
            yield g, w
        finally:
            g.stop()
    finally:
        w.stop()


def wait_ready(g: Proc, n: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        last = httpx.get(g.url + "/health", timeout=2, trust_env=False).json()
        if last.get("workers_ready", 0) >= n:
            return last
        time.sleep(0.1)
    raise TimeoutError(f"gateway never had {n} ready workers: {last}")
