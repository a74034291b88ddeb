"""`omniserve up` as a real process for launcher tests, with the zero-compute test worker.

``Up.start(tmp, workers=2, *flags)`` runs the launcher on free loopback ports with
``--worker-command`` pointing at ``tests/support/fake_worker.py``; a reader thread keeps every
line the launcher prints (``lines``), and ``child_pid`` finds the current process of a child.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

import psutil

from tests.support.gateway_procs import REPO, free_port

FAKE = f"{sys.executable} -m tests.support.fake_worker --port {{port}} --index {{index}} --load-delay 1"
T = TypeVar("T")


def free_port_run(n: int) -> int:
    """A first port such that it and the n-1 after it are free now."""
    for _ in range(100):
        base = free_port()
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)


@dataclass
class Up:
    proc: subprocess.Popen
    port: int
    base: int
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    reader: Optional[threading.Thread] = None

    @classmethod
    def start(cls, tmp: Path, workers: int, *flags: str, worker_command: str = FAKE,
              env: Optional[dict[str, str]] = None) -> "Up":
        base = free_port_run(workers)
        port = free_port()
        while base <= port < base + workers:
            port = free_port()
        data = tmp / "data"
        e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniserve.cli", "up", "--workers", str(workers), "--http", "--host", "127.0.0.1",
             "--port", str(port), "--data-dir", str(data), "--worker-base-port", str(base),
             "--worker-command", worker_command, *flags],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e)
        up = cls(proc, port, base, data)
        up.reader = threading.Thread(target=up._read, daemon=True)
        up.reader.start()
        return up

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base + i}"

    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, needle: str, timeout: float = 60) -> str:
        def seen() -> Optional[str]:
            if self.proc.poll() is not None and not any(needle in ln for ln in self.lines):
                raise AssertionError(f"launcher exited ({self.proc.returncode}):\n{self.output()}")
            return next((ln for ln in self.lines if needle in ln), None)
        try:
            return wait_for(f"{needle!r} printed", seen, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.output()}") from None

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child_pid(self, name: str) -> Optional[int]:
        """The live child process of ``"gateway"`` or ``"worker N"``."""
        for c in psutil.Process(self.proc.pid).children():
            try:
                cmd = c.cmdline()
                if c.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if name == "gateway" and "gateway" in cmd:
                return c.pid
            if name.startswith("worker ") and "--port" in cmd \
                    and cmd[cmd.index("--port") + 1] == str(self.base + int(name.split()[1])):
                return c.pid
        return None

    def wait(self, timeout: float) -> int:
        """The launcher's exit code, once it has exited and all its output is in ``lines``."""
        code = self.proc.wait(timeout)
        if self.reader is not None:
            self.reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
