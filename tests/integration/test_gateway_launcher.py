"""`omniserve up`: starts workers and the gateway, waits for them, prints the URL, and leaves no
process behind on SIGTERM — nor when the launcher itself is killed with SIGKILL; a worker that
cannot start ends it with a load failure. Restarts after the load: test_supervision.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.support.gateway_procs import REPO, free_port

FAKE = f"{sys.executable} -m tests.support.fake_worker --port {{port}} --index {{index}} --load-delay 1"


def _launch(tmp_path, port: int, base: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "omniserve.cli", "up", "--workers", "2", "--http", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--worker-base-port", str(base), "--worker-command", FAKE],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_line(p: subprocess.Popen, needle: str, timeout: float = 60) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            if p.poll() is not None:
                break
            continue
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError("".join(lines))


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_up_starts_and_stops_everything(tmp_path, how):
    port, base = free_port(), free_port()
    while base + 1 == port:
        base = free_port()
    p = _launch(tmp_path, port, base)
    try:
        lines = _wait_line(p, "omniserve is ready")
        assert any("loading" in ln for ln in lines)          # the progress display showed the load
        assert f"http://localhost:{port}" in lines[-1]
        children = _descendants(p.pid)
        assert len(children) >= 3
        st = httpx.get(f"http://127.0.0.1:{port}/status", trust_env=False).json()
        assert st["total_workers"] == 2
        deadline = time.monotonic() + 10
        while st["idle_workers"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            st = httpx.get(f"http://127.0.0.1:{port}/status", trust_env=False).json()
        assert st["idle_workers"] == 2
        p.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        p.wait(20)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_up_reports_a_worker_that_cannot_start(tmp_path):
    """A child that fails to start again and again during the initial load ends `up` with its log."""
    from tests.support.up_procs import Up

    u = Up.start(tmp_path, 1, worker_command=f"{sys.executable} -c 'import sys; print(\"no engine here\"); sys.exit(3)'")
    try:
        assert u.wait(40) == 1
        out = u.output()
        assert "worker 0 failed to start 3 times; last: exited (exit code 3)" in out, out
        assert "no engine here" in out                     # the tail of its log is shown
        assert out.count("restart #") == 2                 # two restarts were tried, each printed
    finally:
        u.stop()


def test_up_help_lists_the_supervision_flag():
    out = subprocess.run([sys.executable, "-m", "omniserve.cli", "up", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert "--stuck-after" in out and "/health" in out
