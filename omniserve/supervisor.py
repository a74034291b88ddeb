"""Keeps the children of ``omniserve up`` running: restart on exit or when stuck, with backoff.

Each :meth:`Supervisor.tick` polls every running child's ``/health`` (in parallel, each with a
deadline) and the gateway's ``GET /workers``, then acts, in the main thread:

- a child that exited (crash, ``kill -9``, OOM) is started again after its backoff (1, 2, 4 … s,
  capped at 30 s; reset once it has answered ``/health`` for a minute);
- a worker that is alive but has not answered ``/health`` for ``stuck_after_s`` (``START_GRACE_S``
  before its first answer), or that the gateway lists as ``"stuck"``, has its process group
  SIGKILLed and is then started again the same way — same port, same index, same log.

The gateway is restarted when it exits, never for being slow. Each restart prints one line.
*Services* (the local Redis of ``up --redis``) start first, stop last and are restarted when they exit.
"""
from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import httpx

from .child import Child, describe_exit
from .tokens import bearer

START_GRACE_S = 60.0       # a fresh process may take this long (at least) before its first /health answer
STOP_WAIT_S = 10.0         # SIGTERM, then SIGKILL what is still there after this long
GATEWAY_FIRST_S = 3.0      # on stop, the gateway gets this long to close its clients before the workers go
STUCK = "stuck"            # the gateway's status for a worker that did not report idle after a session


def poll_timeout(stuck_after_s: float) -> float:
    """Per-request deadline: short enough that a silent child is noticed within ``stuck_after_s``."""
    return max(0.2, min(2.0, stuck_after_s / 3))


class Supervisor:
    def __init__(self, workers: list[Child], gateway: Child, stuck_after_s: float,
                 say: Callable[[str], None], admin_token_file: Optional[Path] = None,
                 admin_token: Optional[str] = None, services: Sequence[Child] = ()) -> None:
        self.workers = workers
        self.gateway = gateway
        self.services = list(services)
        self.children = [*self.services, *workers, gateway]
        self.stuck_after_s = stuck_after_s
        self.say = say
        self._admin_file = admin_token_file
        self._admin_token = admin_token
        self.give_up_after: Optional[int] = None   # failures of one child that end supervision (initial load)
        self.gave_up: Optional[Child] = None
        self._timeout = poll_timeout(stuck_after_s)
        self._client = httpx.Client(verify=False, trust_env=False)
        self._pool = ThreadPoolExecutor(max_workers=len(self.children) + 1, thread_name_prefix="health")

    def start(self) -> None:
        now = time.monotonic()
        for c in self.children:
            self._spawn(c, now)

    def _spawn(self, c: Child, now: float) -> None:
        try:
            c.spawn()
        except OSError as e:  # e.g. the command is not there: counts as a failed start
            self._restart(c, f"could not start ({e.strerror or type(e).__name__})", now)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    # ------------------------------------------------------------------ tick
    def tick(self) -> None:
        """Poll, then restart what needs it. Spawning happens here, in the caller's (main) thread."""
        polls = [self._pool.submit(c.poll_health, self._client, self._timeout) for c in self.children]
        views = self._pool.submit(self._gateway_workers)
        for f in polls:
            f.result()
        self._note_gateway_view(views.result())
        now = time.monotonic()
        for c in self.children:
            self._check(c, now)

    def _check(self, c: Child, now: float) -> None:
        if c.restart_at is not None:
            if now >= c.restart_at:
                self._spawn(c, now)
            return
        rc = c.returncode()
        if rc is not None:
            self._restart(c, f"exited ({describe_exit(rc)})", now)
            return
        why = self._stuck_reason(c, now)
        if why is not None:
            died = c.kill() is not None
            self._restart(c, f"{why}: SIGKILLed" + ("" if died else " (it has not exited yet)"), now)

    def _stuck_reason(self, c: Child, now: float) -> Optional[str]:
        if not c.spec.watch_stuck or not c.running():
            return None
        limit = self.stuck_after_s if c.last_answer is not None else max(self.stuck_after_s, START_GRACE_S)
        silent = c.silent_for(now)
        if silent > limit:
            return f"stuck (no /health answer for {silent:.0f} s)"
        if c.gateway_stuck:
            return "stuck (the gateway saw no idle report after a session)"
        return None

    def _restart(self, c: Child, why: str, now: float) -> None:
        c.last_failure = why
        delay = c.schedule_restart(now)
        if self.give_up_after is not None and c.failures >= self.give_up_after:
            self.gave_up = c
            return
        self.say(f"{c.name} {why}; restart #{c.failures} in {delay:g} s")

    # ------------------------------------------------------- gateway's view
    def _gateway_workers(self) -> list[dict[str, Any]]:
        """``GET /workers`` of the gateway ([] when it does not answer)."""
        if not self.gateway.running() or self.gateway.last_answer is None:
            return []
        url = self.gateway.spec.health_url.rsplit("/", 1)[0] + "/workers"
        try:
            r = self._client.get(url, headers=self._admin_headers(), timeout=self._timeout)
            views = r.json() if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return []
        return [v for v in views if isinstance(v, dict)] if isinstance(views, list) else []

    def _note_gateway_view(self, views: list[dict[str, Any]]) -> None:
        """A worker counts as stuck only after the gateway listed *this run of it* as not stuck."""
        by_url = {c.spec.url: c for c in self.workers}
        now = time.monotonic()
        for v in views:
            c = by_url.get(str(v.get("url")))
            if c is None or not c.running():
                continue
            ago = v.get("last_health_s_ago")
            if not isinstance(ago, (int, float)) or ago > now - c.spawned_at:
                continue  # the gateway has not heard from this run yet
            if v.get("status") != STUCK:
                c.gateway_saw_ok = True
            elif c.gateway_saw_ok:
                c.gateway_stuck = True

    def _admin_headers(self) -> dict[str, str]:
        if self._admin_token is None and self._admin_file is not None and self._admin_file.is_file():
            self._admin_token = self._admin_file.read_text().strip() or None
        return bearer(self._admin_token)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """SIGTERM the gateway, then (once it exited, or after 3 s) the workers, then the services;
        SIGKILL what is left at 10 s."""
        deadline = time.monotonic() + STOP_WAIT_S
        self._terminate(self.gateway)
        self._wait(self.gateway, time.monotonic() + GATEWAY_FIRST_S)
        for c in self.workers:
            self._terminate(c)
        for c in [*self.workers, self.gateway]:
            self._wait(c, deadline)
        for c in self.services:  # the gateway needs them until it has gone
            self._terminate(c)
            self._wait(c, deadline)
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                c.kill()

    @staticmethod
    def _terminate(c: Child) -> None:
        c.signal_group(signal.SIGTERM)
        c.signal_group(signal.SIGCONT)  # a stopped process handles its SIGTERM only once continued

    @staticmethod
    def _wait(c: Child, deadline: float) -> None:
        if c.proc is not None:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
