"""``omniserve gateway --processes N``: N gateway processes on one port, so one host uses all its cores.

The parent serves nothing. Before any member exists it does the once-only first-run work — the
self-signed certificate, the admin and worker tokens — so the members never race to write them,
and prints the URL (and a just-generated admin token) once. It checks that the port is free, then
starts N *members*: the same ``omniserve gateway`` command line plus ``--member``. Each member binds
its own listening socket with ``SO_REUSEPORT`` (:func:`member_sockets`) and the kernel spreads new
connections over them. A member holds its own clients' sockets; what every member must see (the
FIFO, slot claims, registries) lives in Redis, so more than one process needs ``gateway.redis_url``.

A member that exits is started again after a backoff (1, 2, 4 … s, capped at 30 s; reset by a run
of a minute), with one logged line. While no member has yet run ``UP_AFTER_S``, a member that fails
``START_ATTEMPTS`` times ends the group (exit 1): it would not start. SIGTERM or SIGINT: SIGTERM to
every member, SIGKILL to what is left after ``STOP_WAIT_S``. The members' Prometheus metrics go
to ``<data_dir>/metrics/gateway_<port>/`` (``metrics.prepare_multiprocess``), so ``/metrics`` of any
member reports the whole group.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ..child import HEALTHY_RESET_S, Child, ChildSpec, describe_exit
from ..config import Settings

log = logging.getLogger(__name__)

MEMBER_FLAG = "--member"
START_ATTEMPTS = 3      # failures of one member, before the group ever came up, that end it
UP_AFTER_S = 10.0       # a run this long means the group comes up (later failures only restart)
STOP_WAIT_S = 8.0       # members shut down gracefully within 3 s (uvicorn); SIGKILL after this
TICK_S = 0.2


def member_sockets(host: str, port: int, reuse_port: bool = True) -> list[socket.socket]:
    """Bound (not yet listening) TCP sockets for ``host:port`` — one per address, as asyncio's own
    ``create_server`` would make — with ``SO_REUSEPORT`` so the members share the port."""
    socks: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, addr in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_PASSIVE):
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def port_free(host: str, port: int) -> Optional[str]:
    """None when nothing listens on ``host:port`` (bound without ``SO_REUSEPORT``, so an old group
    of members, which would happily share the port, counts as busy too); else why not."""
    try:
        for s in member_sockets(host, port, reuse_port=False):
            s.close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"
    return None


class MemberGroup:
    """N member processes of one command line, restarted when they exit."""

    def __init__(self, cmd: list[str], n: int, env: dict[str, str]) -> None:
        self.members = [Child(ChildSpec(f"gateway process {i}", cmd, env, None, "")) for i in range(n)]
        self.came_up = False
        self.gave_up: Optional[str] = None

    def start(self) -> None:
        for c in self.members:
            c.spawn()
        log.info("started %d gateway processes (pids %s)", len(self.members),
                 ", ".join(str(c.pid) for c in self.members))

    def tick(self, now: float) -> None:
        for c in self.members:
            if c.restart_at is not None:
                if now >= c.restart_at:
                    self._spawn(c, now)
                continue
            rc = c.returncode()
            if rc is not None:
                self._exited(c, f"exited ({describe_exit(rc)})", now)
            elif now - c.spawned_at >= UP_AFTER_S:
                self.came_up = True

    def _spawn(self, c: Child, now: float) -> None:
        try:
            c.spawn()
            log.warning("%s started again (pid %s)", c.name, c.pid)
        except OSError as e:
            self._exited(c, f"could not start ({e.strerror or type(e).__name__})", now)

    def _exited(self, c: Child, why: str, now: float) -> None:
        pid = c.pid
        if now - c.spawned_at >= HEALTHY_RESET_S:   # it had served a while: a fresh failure count
            c.backoff.reset()
            c.failures = 0
        delay = c.schedule_restart(now)
        c.last_failure = why
        if not self.came_up and c.failures >= START_ATTEMPTS:
            self.gave_up = f"{c.name} failed to start {c.failures} times; last: {why}"
            return
        log.warning("%s (pid %s) %s; restart #%d in %g s", c.name, pid, why, c.failures, delay)

    def stop(self) -> None:
        deadline = time.monotonic() + STOP_WAIT_S
        for c in self.members:
            c.signal_group(signal.SIGTERM)
            c.signal_group(signal.SIGCONT)   # a stopped process handles its SIGTERM only once continued
        for c in self.members:
            if c.proc is not None:
                try:
                    c.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %s) did not stop in %g s: SIGKILL", c.name, c.pid, STOP_WAIT_S)
                    c.kill()


def run_group(settings: Settings, argv: list[str], first_run: Callable[[], None]) -> int:
    """The parent: refuse without Redis, do ``first_run`` (certificate, tokens, banner) once, then
    keep ``gateway.processes`` members of ``omniserve gateway <argv> --member`` running."""
    s = settings.gateway
    if not s.redis_url:
        print(f"--processes {s.processes} needs Redis (--redis-url URL, or gateway.redis_url): the processes "
              "share one queue and one worker registry there", file=sys.stderr, flush=True)
        return 2
    busy = port_free(s.host, s.port)
    if busy is not None:
        print(f"cannot listen on {busy}", file=sys.stderr, flush=True)
        return 1
    first_run()
    from .metrics import prepare_multiprocess

    # /metrics of any member merges all members' metrics (prometheus_client's multiprocess mode)
    metrics_dir = Path(settings.data_dir) / "metrics" / f"gateway_{s.port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **prepare_multiprocess(metrics_dir))
    group = MemberGroup([sys.executable, "-m", "omniserve.cli", *argv, MEMBER_FLAG], s.processes, env)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    group.start()
    try:
        while not stopping:
            group.tick(time.monotonic())
            if group.gave_up:
                print(group.gave_up, file=sys.stderr, flush=True)
                code = 1
                break
            time.sleep(TICK_S)
    finally:
        group.stop()
    return code
