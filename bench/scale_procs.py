"""The processes of ``bench/scale.py``: echo workers, a gateway setup (one process, or a
``--processes N`` group on Redis), and ``Reaper``, which ends everything started here — also on an
error or Ctrl-C — and checks that nothing is left. The waiting clients are ``bench/waiters.py``.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx
import psutil

from tests.support.gateway_procs import REPO, GatewayProc, end_processes, free_port, start_gateway
from tests.support.redis_server import RedisServer

class Reaper:
    """Every process this bench starts, or saw its gateway groups start; ``reap()`` kills what is left."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}
        self.names: dict[int, str] = {}

    def add(self, pid: int) -> None:
        if pid in self.procs:
            return
        try:
            p = psutil.Process(pid)
            self.procs[pid], self.names[pid] = p, " ".join(p.cmdline()[:5])
        except psutil.Error:
            pass

    def alive(self) -> list[psutil.Process]:
        out = []
        for p in self.procs.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out

    def strays(self, marker: str) -> list[psutil.Process]:
        """Any process on the machine whose command line names ``marker`` (this run's folder)."""
        out = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if p.pid != os.getpid() and any(marker in a for a in (p.info["cmdline"] or [])):
                    out.append(p)
                    self.add(p.pid)
            except psutil.Error:
                continue
        return out

    def reap(self) -> list[str]:
        """SIGKILL whatever is still running; the command lines of what had to be killed."""
        left = self.alive()
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=5)
        return [f"{p.pid} {self.names.get(p.pid, '')}" for p in left]


# Fresh-connection probes after the kill come from their own loopback address. The waiters hold
# nearly every ephemeral port of 127.0.0.1, and the ports the victim's waiters freed are exactly those
# whose SO_REUSEPORT hash picked the victim's place in the group, which the kernel hands to one
# member (the restarted one or a survivor, by where the victim sat): probes from 127.0.0.1 would all
# land on that one member. Real clients (or a proxy with several source addresses) do not.
PROBE_SOURCES = ("127.0.0.2", "127.0.0.1")


def _http_json(url: str, timeout: float = 2.0, source: Optional[str] = None) -> dict:
    """One GET on a fresh connection (behind a shared port the kernel picks the process per connection)."""
    if source is None:
        return httpx.get(url, timeout=timeout, trust_env=False, headers={"Connection": "close"}).json()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=timeout, trust_env=False) as c:
        return c.get(url, headers={"Connection": "close"}).json()


class Workers:
    """``count`` echo fake workers (one slot each) in ``procs`` processes."""

    def __init__(self, tmp: Path, reaper: Reaper, count: int, procs: int = 2) -> None:
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []
        per = -(-count // procs)
        for k in range(procs):
            log = tmp / f"workers_{k}.log"
            for _attempt in range(3):    # a port picked free may be taken meanwhile: pick again
                part: list[int] = []
                while len(part) < min(per, count - len(self.ports)):
                    port = free_port()
                    if port not in part and port not in self.ports:
                        part.append(port)
                p = subprocess.Popen([sys.executable, "-m", "tests.support.fake_worker", "--ports",
                                      ",".join(map(str, part)), "--echo"], cwd=REPO, stdout=log.open("ab"),
                                     stderr=subprocess.STDOUT)
                reaper.add(p.pid)
                if self._up(p, part, 30):
                    break
                p.kill()
                p.wait(5)
            else:
                raise RuntimeError(f"fake workers would not start: {log.read_text()[-2000:]}")
            self.procs.append(p)
            self.ports += part

    @staticmethod
    def _up(p: subprocess.Popen, ports: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and p.poll() is None:
            try:
                for port in ports:
                    _http_json(f"http://127.0.0.1:{port}/health")
                return True
            except (httpx.HTTPError, ValueError):
                time.sleep(0.1)
        return False

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def busy(self) -> int:
        """Slots not idle (or not answering), by each worker's own /health."""
        n = 0
        for u in self.urls:
            try:
                n += 0 if _http_json(u + "/health").get("slots_free") == 1 else 1
            except (httpx.HTTPError, ValueError):
                n += 1
        return n

    def wait_idle(self, timeout: float) -> float:
        t0 = time.monotonic()
        while self.busy():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{self.busy()} worker slots still busy after {timeout} s")
            time.sleep(0.3)
        return time.monotonic() - t0

    def stop(self) -> None:
        end_processes(self.procs)


class Setup:
    """One gateway configuration: ``processes`` = 1 without Redis (in-process state), or a
    ``--processes N`` group (one port, SO_REUSEPORT) sharing a fresh ``redis-server``."""

    def __init__(self, tmp: Path, reaper: Reaper, workers: list[str], processes: int, redis: bool, env: dict,
                 extra: tuple[str, ...] = ()) -> None:
        self.k = processes
        self.reaper = reaper
        self.redis: Optional[RedisServer] = None
        self.g: Optional[GatewayProc] = None
        if redis:
            self.redis = RedisServer(tmp).start()
            assert self.redis.proc is not None
            reaper.add(self.redis.proc.pid)
        flags = ("--processes", str(processes), "--redis-url", self.redis.url) if self.redis else ()
        self.g = start_gateway(tmp, workers, 0, env, *flags, *extra, data_dir=tmp / "gw_data")
        reaper.add(self.g.proc.pid)
        self.ids = self.wait_up(len(workers), 60)

    @property
    def ws(self) -> str:
        assert self.g is not None
        return self.g.ws

    def members(self) -> list[psutil.Process]:
        """The processes that serve (the group's parent serves nothing)."""
        assert self.g is not None
        if self.k == 1 and self.redis is None:
            return [psutil.Process(self.g.proc.pid)]
        out = []
        for c in psutil.Process(self.g.proc.pid).children():
            try:
                if "--member" in c.cmdline() and c.status() != psutil.STATUS_ZOMBIE:
                    out.append(c)
                    self.reaper.add(c.pid)
            except psutil.Error:
                continue
        return out

    def tree(self) -> list[psutil.Process]:
        """Members and the group's parent: the gateway side's CPU."""
        assert self.g is not None
        ms = self.members()
        return ms if len(ms) == 1 and ms[0].pid == self.g.proc.pid else [psutil.Process(self.g.proc.pid), *ms]

    def health_id(self, timeout: float = 2.0, source: Optional[str] = None) -> Optional[str]:
        """The gateway id of whichever member answers ``/health`` on a fresh connection (from ``source``)."""
        assert self.g is not None
        try:
            return str(_http_json(self.g.url + "/health", timeout, source)["gateway_id"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def gateways_in_redis(self) -> set[str]:
        """The gateway ids Redis knows (``gws``), with whether their lease is still held."""
        if self.redis is None:
            return set()
        with self.redis.client() as c:
            return {g for g in c.smembers("omniserve:gws") if c.exists(f"omniserve:gw:{g}")}

    def wait_up(self, n_workers: int, timeout: float) -> set[str]:
        """Until every member runs, answers, and sees ``n_workers`` ready workers; their gateway ids."""
        assert self.g is not None
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        while time.monotonic() < deadline:
            if len(self.members()) == self.k:
                try:
                    h = _http_json(self.g.url + "/health")
                    if h.get("workers_ready", 0) >= n_workers:
                        ready.add(h["gateway_id"])
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                if len(ready) == self.k:
                    return ready
            time.sleep(0.05)
        raise TimeoutError(f"{len(ready)} of {self.k} gateway processes ready in {timeout} s:\n{self.g.tail()}")

    def free_slots(self) -> int:
        assert self.g is not None
        try:
            return int(_http_json(self.g.url + "/status").get("free_slots", 0))
        except (httpx.HTTPError, ValueError):
            return 0

    def wait_free(self, slots: int, timeout: float) -> int:
        """Until ``/status`` says ``slots`` free on as many fresh connections in a row as there are
        members, or the timeout; the free slots last seen."""
        deadline = time.monotonic() + timeout
        good = free = 0
        while good < self.k and time.monotonic() < deadline:
            free = self.free_slots()
            good = good + 1 if free >= slots else 0
            time.sleep(0.05)
        return free

    def slots_not_free(self) -> list[str]:
        """Slots Redis does not count free, with why (state, ticket, gateway) — after a drain, a leak."""
        if self.redis is None:
            return []
        out = []
        with self.redis.client() as c:
            for k in c.scan_iter("omniserve:slot:*"):
                h = c.hgetall(k)
                if h.get("state") != "free":
                    out.append(f"{k.split(':', 2)[-1]} {h.get('state')} ticket={h.get('ticket')} gw={h.get('gw')}")
        return out

    def log_summary(self, top: int = 6) -> list[str]:
        """The gateway log's WARNING/ERROR lines, counted by message (numbers and addresses blurred)."""
        assert self.g is not None
        seen: dict[str, int] = {}
        for line in self.g.tail(5_000_000).splitlines():
            m = re.search(r" (WARNING|ERROR|CRITICAL) (.*)", line)
            if m:
                text = re.sub(r"\d+", "N", m.group(0).strip())[:160]
                seen[text] = seen.get(text, 0) + 1
        return [f"{n} × {text}" for text, n in sorted(seen.items(), key=lambda kv: -kv[1])[:top]]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.members())

    def redis_memory(self) -> int:
        if self.redis is None:
            return 0
        with self.redis.client() as c:
            return int(c.info("memory")["used_memory"])

    def queue_length(self) -> int:
        """The global queue's length: Redis's sorted set, or the single gateway's /health."""
        if self.redis is not None:
            with self.redis.client() as c:
                return int(c.zcard("omniserve:q"))
        assert self.g is not None
        return int(_http_json(self.g.url + "/health")["queue_length"])

    def redis_snapshot(self) -> str:
        """The queue and the slots' states, for a failure report."""
        if self.redis is None or not self.redis.ping():
            return ""
        with self.redis.client() as c:
            q = c.zrange("omniserve:q", 0, 9, withscores=True)
            states: dict[str, int] = {}
            odd: list[str] = []
            for k in c.scan_iter("omniserve:slot:*"):
                h = c.hgetall(k)
                states[h.get("state", "?")] = states.get(h.get("state", "?"), 0) + 1
                if h.get("state") != "free" and len(odd) < 5:
                    odd.append(f"{k}: {h}")
            return (f"redis: queue {c.zcard('omniserve:q')} (head {q}), free set {c.zcard('omniserve:free')}, "
                    f"slot states {states}, gateways {c.smembers('omniserve:gws')}\n  " + "\n  ".join(odd))

    def victim_state(self, gid: str) -> list[str]:
        """What Redis still holds for gateway ``gid`` (empty once its lease was reaped)."""
        assert self.redis is not None
        left = []
        with self.redis.client() as c:
            if c.sismember("omniserve:gws", gid):
                left.append("in gws")
            left += [k for k in (f"omniserve:gw:{gid}", f"omniserve:gwt:{gid}", f"omniserve:gwc:{gid}") if c.exists(k)]
            left += [k for k in c.scan_iter("omniserve:slot:*") if c.hget(k, "gw") == gid]
        return left

    def stop(self) -> None:
        if self.g is not None:
            self.g.stop()
        if self.redis is not None:
            self.redis.kill()


def kill_member(p: psutil.Process) -> float:
    """SIGKILL one gateway process; the moment (monotonic)."""
    t = time.monotonic()
    p.send_signal(signal.SIGKILL)
    return t
