"""Many gateway processes on one port: ``omniserve gateway --processes 2 --redis-url …`` against a
real ``redis-server`` and two test workers. Both processes take connections (each ``/health`` names
its own ``gateway_id``); one killed with SIGKILL is started again while the port keeps answering;
SIGTERM to the parent stops every process; with HTTPS the certificate and admin token are made once;
more than one process without Redis is refused. ``omniserve up --redis --gateway-processes 2``
starts, supervises and stops its own ``redis-server``. Real processes on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
import redis

from tests.support import redis_server
from tests.support.gateway_procs import REPO, GatewayProc, free_port, start_fake_worker, start_gateway, wait_ready
from tests.support.up_procs import Up, wait_for

pytestmark = pytest.mark.skipif(not redis_server.available(), reason="redis-server is not installed (setup.sh)")

RESTART_BOUND_S = 15.0


def _health(url: str, **kw) -> dict:
    """One ``/health`` on a fresh connection (the kernel picks the process per connection)."""
    return httpx.get(url + "/health", timeout=2, trust_env=False, headers={"Connection": "close"}, **kw).json()


def _ids(url: str, want: int = 2, tries: int = 60, **kw) -> set[str]:
    """The gateway ids that answered, over up to ``tries`` fresh connections (stops at ``want``)."""
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(_health(url, **kw)["gateway_id"])
        if len(seen) >= want:
            break
    return seen


def _members(parent: int) -> list[psutil.Process]:
    out = []
    for c in psutil.Process(parent).children():
        try:
            if "--member" in c.cmdline() and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.Error:
            continue
    return out


class Watch:
    """Polls ``/health`` on fresh connections in the background; counts the polls not answered."""

    def __init__(self, url: str) -> None:
        self.url, self.polls, self.misses = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls += 1
            try:
                _health(self.url)
            except (httpx.HTTPError, ValueError):
                self.misses += 1
            self._stop.wait(0.05)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway_processes")
    r = redis_server.RedisServer(tmp).start()
    workers = [start_fake_worker(tmp), start_fake_worker(tmp)]
    try:
        g = start_gateway(tmp, [w.url for w in workers], 0, None, "--processes", "2", "--redis-url", r.url)
        try:
            yield g, workers, r
        finally:
            g.stop()
    finally:
        for w in workers:
            w.stop()
        r.kill()


def test_both_processes_take_connections(system):
    g, _, _ = system
    wait_for("two gateway processes", lambda: len(_members(g.proc.pid)) == 2, 20)
    wait_for("both processes answer", lambda: len(_ids(g.url)) == 2, 20)
    wait_ready(g, 2)                    # the workers are seen through the shared port
    assert "omniserve gateway on http://127.0.0.1" in g.tail() and "2 processes" in g.tail()


def test_killed_process_is_restarted_while_the_port_answers(system):
    g, _, _ = system
    before = wait_for("both processes answer", lambda: ids if len(ids := _ids(g.url)) == 2 else None, 20)
    victim = _members(g.proc.pid)[0]
    with Watch(g.url) as watch:
        victim.kill()
        victim.wait(5)
        wait_for("a new gateway process", lambda: len([m for m in _members(g.proc.pid) if m.pid != victim.pid]) == 2,
                 RESTART_BOUND_S)
        after = wait_for("the new process answers", lambda: (ids if len(ids := _ids(g.url)) == 2 and ids != before
                                                              else None), RESTART_BOUND_S)
    # at most the connection the kernel had already queued on the killed process's socket is lost
    assert watch.polls > 10 and watch.misses <= 1, (watch.polls, watch.misses)
    assert len(after & before) == 1           # the survivor kept its id; the new process has its own
    assert g.proc.poll() is None
    assert "exited (killed by SIGKILL); restart #1 in 1 s" in g.tail()


def _gateway_cmd(tmp, port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "omniserve.cli", "gateway", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(tmp / "data"), "--log-level", "warning", *flags]


def test_https_group_makes_the_certificate_once_and_sigterm_stops_all(tmp_path):
    r = redis_server.RedisServer(tmp_path).start()
    port = free_port()
    log = tmp_path / "gateway.log"
    proc = subprocess.Popen(_gateway_cmd(tmp_path, port, "--processes", "2", "--redis-url", r.url), cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    g = GatewayProc(proc, port, log, tmp_path / "data")
    try:
        url = f"https://127.0.0.1:{port}"
        wait_for("HTTPS answers", lambda: _answers(url), 30)
        wait_for("both processes serve TLS", lambda: len(_ids(url, verify=False)) == 2, 20)
        out = g.tail()
        assert out.count("admin token (saved in") == 1 and g.token in out   # printed once, the one saved
        assert out.count("omniserve gateway on https://") == 1
        assert (tmp_path / "data" / "tls" / "cert.pem").is_file()
        members = _members(proc.pid)
        assert len(members) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        gone, alive = psutil.wait_procs(members, timeout=5)
        assert not alive, [m.pid for m in alive]
        assert not _answers(url)
    finally:
        g.stop(signal.SIGKILL)
        r.kill()


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=1, trust_env=False, verify=False)
        return True
    except httpx.HTTPError:
        return False


def test_many_processes_without_redis_are_refused(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OMNISERVE_GATEWAY__REDIS_URL"}
    p = subprocess.run(_gateway_cmd(tmp_path, port, "--http", "--processes", "2"), cwd=REPO, capture_output=True,
                       text=True, timeout=60, env=env)
    assert p.returncode == 2
    assert "--processes 2 needs Redis (--redis-url URL" in p.stderr
    assert not (tmp_path / "data" / "admin_token").exists()          # refused before doing anything
    up = subprocess.run([sys.executable, "-m", "omniserve.cli", "up", "--http", "--gateway-processes", "2",
                         "--data-dir", str(tmp_path / "up")], cwd=REPO, capture_output=True, text=True, timeout=60,
                        env=env)
    assert up.returncode == 2 and "add --redis" in up.stderr


def _redis_child(u: Up) -> psutil.Process | None:
    for c in psutil.Process(u.proc.pid).children():
        try:
            if c.name() == "redis-server" and c.status() != psutil.STATUS_ZOMBIE:
                return c
        except psutil.Error:
            continue
    return None


def test_up_runs_its_own_redis_for_gateway_processes(tmp_path):
    u = Up.start(tmp_path, 1, "--redis", "--gateway-processes", "2")
    try:
        u.wait_line("omniserve is ready")
        sock = u.data_dir / "redis" / "redis.sock"
        assert f"redis: unix://{sock}" in u.output()
        assert oct(sock.stat().st_mode & 0o777) == "0o700"
        with redis.Redis(unix_socket_path=str(sock), socket_timeout=2) as c:
            assert c.ping()
            assert c.config_get("save") == {"save": ""} and c.config_get("appendonly") == {"appendonly": "no"}
        gw = psutil.Process(u.child_pid("gateway"))
        assert gw.environ()["OMNISERVE_GATEWAY__REDIS_URL"] == f"unix://{sock}"   # handed over, not on the
        assert "--processes" in gw.cmdline() and str(sock) not in " ".join(gw.cmdline())  # command line
        wait_for("both gateway processes answer", lambda: len(_ids(u.url)) == 2, 20)

        old = _redis_child(u)
        assert old is not None
        old.kill()
        new = wait_for("redis restarted", lambda: (c if (c := _redis_child(u)) and c.pid != old.pid else None),
                       RESTART_BOUND_S)
        u.wait_line("redis exited (killed by SIGKILL); restart #1", 5)

        def pong() -> bool:
            try:
                with redis.Redis(unix_socket_path=str(sock), socket_timeout=1) as c:
                    return bool(c.ping())
            except redis.RedisError:
                return False
        wait_for("redis answers again", pong, RESTART_BOUND_S)
        everything = u.descendants()
        u.proc.send_signal(signal.SIGTERM)
        assert u.wait(30) == 0
        gone, alive = psutil.wait_procs(everything, timeout=10)
        assert not alive, [p.pid for p in alive]
        assert new in gone and not sock.exists()
    finally:
        u.stop()
