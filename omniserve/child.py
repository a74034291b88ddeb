"""One child process of ``omniserve up``: how to start it, how it last answered, how to end it.

A :class:`Child` owns its command line, environment and log file, so the supervisor can start it
again on the same port with the same log (appended). Every child runs in its own process group
(killing the group also ends anything it started) and gets ``PR_SET_PDEATHSIG``: it receives
SIGTERM when the launcher's main thread dies, even by SIGKILL — so children must be started from
the main thread only.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
from pydantic import ValidationError

from .protocol.worker import WorkerHealth, WorkerStatus

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 60.0   # a child that answered /health over this long starts its backoff afresh
KILL_WAIT_S = 5.0        # after SIGKILL of the group, wait this long for the process to be reaped

PR_SET_PDEATHSIG = 1
try:  # loaded in the parent: the child, between fork and exec, only makes one system call
    _LIBC: Optional[ctypes.CDLL] = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the launcher dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Backoff:
    """1, 2, 4 … s, capped; ``reset()`` starts again from the first delay."""

    first_s: float = BACKOFF_FIRST_S
    max_s: float = BACKOFF_MAX_S
    next_s: float = BACKOFF_FIRST_S

    def take(self) -> float:
        d = self.next_s
        self.next_s = min(self.max_s, d * 2)
        return d

    def reset(self) -> None:
        self.next_s = self.first_s


@dataclass
class ChildSpec:
    name: str                           # "worker 0", "gateway"
    cmd: list[str]
    env: dict[str, str]
    log: Optional[Path]                 # None: the child writes to the launcher's terminal
    health_url: str
    headers: dict[str, str] = field(default_factory=dict)   # sent with each /health poll
    url: str = ""                       # how the gateway names this worker in GET /workers
    watch_stuck: bool = False           # restart it when alive but silent (workers)


class Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.proc: Optional[subprocess.Popen] = None
        self.backoff = Backoff()
        self.failures = 0                      # restarts since it last ran healthy for a minute
        self.restart_at: Optional[float] = None
        self.spawned_at = 0.0
        self.first_answer: Optional[float] = None
        self.last_answer: Optional[float] = None
        self.body: dict[str, Any] = {}         # the latest /health JSON
        self.answering = False                 # the latest /health poll got an answer
        self.last_failure = ""                 # why it was last restarted
        self.gateway_saw_ok = False            # the gateway listed this run as not stuck
        self.gateway_stuck = False             # ... and later as stuck

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def spawn(self) -> None:
        out = self.spec.log.open("ab") if self.spec.log else None
        try:
            self.proc = subprocess.Popen(self.spec.cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent, env=self.spec.env)
        finally:
            if out is not None:
                out.close()  # the child holds its own copy
        self.restart_at = None
        self.spawned_at = time.monotonic()
        self.first_answer = self.last_answer = None
        self.body = {}
        self.answering = False
        self.gateway_saw_ok = self.gateway_stuck = False

    def returncode(self) -> Optional[int]:
        """None while it runs (or while a restart is pending)."""
        return self.proc.poll() if self.proc is not None and self.restart_at is None else None

    def running(self) -> bool:
        return self.proc is not None and self.restart_at is None and self.proc.poll() is None

    # ------------------------------------------------------------------ health
    def poll_health(self, client: httpx.Client, timeout_s: float) -> None:
        """Any HTTP answer counts as alive; a 200 with a JSON object also updates ``body``."""
        if not self.running() or not self.spec.health_url:  # no URL (redis): watched for exit only
            return
        try:
            r = client.get(self.spec.health_url, headers=self.spec.headers, timeout=timeout_s)
        except httpx.HTTPError:
            self.answering = False
            return
        now = time.monotonic()
        self.answering = True
        self.first_answer = self.first_answer or now
        self.last_answer = now
        if r.status_code == 200:
            try:
                body = r.json()
            except ValueError:
                body = None
            self.body = body if isinstance(body, dict) else {}

    def silent_for(self, now: float) -> float:
        return now - (self.last_answer or self.spawned_at)

    def label(self) -> str:
        """For the progress display: starting | restarting | the worker's own status (loading,
        idle, error, busy_chat …), with its free slots when it has several ("idle 2/3 free");
        "?" when its /health is not a ``WorkerHealth``."""
        if self.restart_at is not None:
            return "restarting"
        if self.last_answer is None:
            return "starting"
        try:
            h = WorkerHealth.model_validate(self.body)
        except ValidationError:
            return "?"
        status = h.worker_status.value
        if h.slots_total > 1 and h.worker_status not in (WorkerStatus.LOADING, WorkerStatus.ERROR):
            return f"{status} {h.slots_free}/{h.slots_total} free"
        return status

    # ------------------------------------------------------------- lifecycle
    def schedule_restart(self, now: float) -> float:
        """The process has ended: start it again after the next backoff delay (returned)."""
        if self.first_answer is not None and self.last_answer is not None \
                and self.last_answer - self.first_answer >= HEALTHY_RESET_S:
            self.backoff.reset()
            self.failures = 0
        self.failures += 1
        delay = self.backoff.take()
        self.restart_at = now + delay
        return delay

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> Optional[int]:
        """SIGKILL its process group and reap it; the return code (None if it would not die)."""
        self.signal_group(signal.SIGKILL)
        if self.proc is None:
            return None
        try:
            return self.proc.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, n: int = 3000) -> str:
        log = self.spec.log
        return log.read_text(errors="replace")[-n:] if log is not None and log.exists() else ""
