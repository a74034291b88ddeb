"""A real ``redis-server`` (the Debian package) on a free loopback port, for tests and benches.

``RedisServer(tmp).start()`` runs it with persistence off (``--save '' --appendonly no``), its own
working folder, bound to 127.0.0.1 in protected mode, and returns once it answers PING.
``kill()`` is a crash (SIGKILL), ``stop()`` a clean shutdown, ``restart()`` a new, empty server on
the same port — what a gateway sees when Redis restarts under load. ``running_redis(tmp)`` is the
context manager; ``available()`` says whether the binary is installed (setup.sh installs it).
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.gateway_procs import end_processes, free_port

BINARY = "redis-server"
START_TIMEOUT_S = 10.0


def available() -> bool:
    return shutil.which(BINARY) is not None


class RedisServer:
    def __init__(self, tmp: Path, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.dir = tmp / f"redis_{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "redis.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous client for the test's own checks (short deadlines)."""
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def ping(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def start(self) -> "RedisServer":
        exe = shutil.which(BINARY)
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server; setup.sh does)")
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
               "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
               "--logfile", "", "--loglevel", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"redis-server did not answer PING in {START_TIMEOUT_S} s: {self.tail()}")
            time.sleep(0.05)
        return self

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        end_processes([self.proc], sig)
        self.proc = None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM; nothing is saved)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL): clients see their connections reset."""
        self._end(signal.SIGKILL)

    def restart(self) -> "RedisServer":
        """Stop if running, then a new, empty server on the same port."""
        self.stop()
        return self.start()


@contextmanager
def running_redis(tmp: Path) -> Iterator[RedisServer]:
    r = RedisServer(tmp).start()
    try:
        yield r
    finally:
        r.kill()
