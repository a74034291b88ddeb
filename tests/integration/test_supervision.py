"""`omniserve up` supervises: a worker killed with SIGKILL, stopped with SIGSTOP or listed as stuck by
the gateway, and the gateway killed with SIGKILL, are started again by themselves while the rest
keeps serving; SIGTERM of the launcher afterwards still leaves no process behind. Real processes on
loopback, with the test worker."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.support.up_procs import FAKE, Up, wait_for

RESTART_BOUND_S = 15.0


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    u = Up.start(tmp_path_factory.mktemp("supervision"), 2, "--stuck-after", "3",
                 env={"OMNISERVE_GATEWAY__HEALTH_INTERVAL_S": "0.3"})
    try:
        u.wait_line("omniserve is ready")
        yield u
    finally:
        u.stop()


def _get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=2, trust_env=False, **kw)


def _answers(url: str) -> bool:
    try:
        return _get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _replaced(up: Up, name: str, old: int):
    return lambda: (pid if (pid := up.child_pid(name)) not in (None, old) else None)


def _gateway_hears_again(up: Up, i: int, since: float):
    """The gateway lists worker i as idle from a health report made after ``since``."""
    def check() -> bool:
        try:
            views = _get(up.url + "/workers").json()
        except (httpx.HTTPError, ValueError):
            return False
        v = next((v for v in views if v["url"] == up.worker_url(i)), None)
        ago = v and v.get("last_health_s_ago")
        return bool(v and v["status"] == "idle" and ago is not None and ago < time.monotonic() - since)
    return check


class HealthWatch:
    """Polls the gateway's /health in the background and counts the times it did not answer."""

    def __init__(self, url: str) -> None:
        self.url, self.polls, self.misses = url + "/health", 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls += 1
            self.misses += not _answers(self.url)
            self._stop.wait(0.1)

    def __enter__(self) -> "HealthWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_worker_token_is_handed_to_the_workers(up):
    token = (up.data_dir / "worker_token").read_text().strip()
    assert _get(up.worker_url(0) + "/health").status_code == 401
    assert _get(up.worker_url(0) + "/health", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert _get(up.url + "/health").json()["workers_ready"] == 2     # the gateway sends it too


def test_killed_worker_is_replaced_while_the_gateway_serves(up):
    old = up.child_pid("worker 0")
    assert old is not None
    with HealthWatch(up.url) as watch:
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = wait_for("worker 0 replaced", _replaced(up, "worker 0", old), RESTART_BOUND_S)
        seen_new = time.monotonic()
        wait_for("gateway reports worker 0 ready again", _gateway_hears_again(up, 0, seen_new),
                 RESTART_BOUND_S - (seen_new - t0))
    assert watch.polls > 5 and watch.misses == 0
    assert up.proc.poll() is None
    assert new != old and not psutil.pid_exists(old)
    assert "worker 0 exited (killed by SIGKILL); restart #1 in 1 s" in up.output()


def test_stopped_worker_is_killed_and_replaced(up):
    old = up.child_pid("worker 1")
    assert old is not None
    t0 = time.monotonic()
    os.kill(old, signal.SIGSTOP)
    wait_for("worker 1 replaced", _replaced(up, "worker 1", old), RESTART_BOUND_S)
    seen_new = time.monotonic()
    wait_for("gateway reports worker 1 ready again", _gateway_hears_again(up, 1, seen_new),
             RESTART_BOUND_S - (seen_new - t0))
    assert not psutil.pid_exists(old)                                  # SIGKILLed and reaped
    line = up.wait_line("worker 1 stuck", 1)
    assert "SIGKILLed" in line and "restart #1" in line
    assert up.proc.poll() is None


def test_killed_gateway_is_restarted(up):
    old = up.child_pid("gateway")
    assert old is not None
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    wait_for("gateway replaced", _replaced(up, "gateway", old), RESTART_BOUND_S)
    wait_for("gateway answers again", lambda: _answers(up.url + "/health"), RESTART_BOUND_S - (time.monotonic() - t0))
    assert "gateway exited (killed by SIGKILL)" in up.wait_line("gateway exited", 1)
    assert up.proc.poll() is None


def test_sigterm_after_restarts_leaves_nothing(up):
    old = up.child_pid("worker 0")
    os.kill(old, signal.SIGKILL)                                       # one more restart right before
    wait_for("worker 0 replaced", _replaced(up, "worker 0", old), RESTART_BOUND_S)
    children = up.descendants()
    assert len(children) >= 3
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(20) == 0
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [c.cmdline() for c in alive]


def _chat_once(ws_url: str) -> dict:
    from websockets.sync.client import connect

    with connect(ws_url + "/ws/chat", open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"messages": [{"role": "user", "content": "hi"}], "streaming": True}))
        while True:
            m = json.loads(ws.recv(timeout=10))
            if m.get("type") in ("done", "error"):
                return m


def test_worker_the_gateway_marks_stuck_is_replaced(tmp_path):
    """A worker that answers /health but never reports idle after a session: the gateway lists it
    as stuck, and the launcher replaces it (its own /health deadline never fires here)."""
    u = Up.start(tmp_path, 1, "--stuck-after", "60", worker_command=FAKE + " --stuck",
                 env={"OMNISERVE_GATEWAY__HEALTH_INTERVAL_S": "0.3", "OMNISERVE_GATEWAY__RELEASE_IDLE_TIMEOUT_S": "1"})
    try:
        u.wait_line("omniserve is ready")
        old = u.child_pid("worker 0")
        assert _chat_once(u.url.replace("http", "ws"))["type"] == "done"
        wait_for("worker 0 replaced", _replaced(u, "worker 0", old), RESTART_BOUND_S)
        wait_for("gateway reports worker 0 ready again", _gateway_hears_again(u, 0, time.monotonic()),
                 RESTART_BOUND_S)
        assert "worker 0 stuck (the gateway saw no idle report after a session): SIGKILLed" in u.output()
        assert u.output().count("worker 0 stuck") == 1         # replaced once, not again for a stale view
    finally:
        u.stop()
