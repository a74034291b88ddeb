"""`omniserve up [--workers N] [--http] [--port P]`: N local workers + the gateway, one command.

Starts ``omniserve worker --port 22400+i --index i`` for each worker and then the gateway, shows
the workers' progress (``/health``: loading → idle), prints the URL, and then supervises
(``omniserve.supervisor``): a worker or gateway that exits, or a worker that is stuck, is started
again with backoff while the rest keeps serving. It stops everything on Ctrl-C/SIGTERM, or when a
child fails to start ``START_ATTEMPTS`` times during the initial load. Children get
``PR_SET_PDEATHSIG`` so they die with the launcher even if it is killed with SIGKILL: no orphans.

The launcher loads (or creates) ``<data_dir>/worker_token`` and hands it to the workers
(``OMNISERVE_WORKER__TOKEN``) and the gateway (``OMNISERVE_GATEWAY__WORKER_TOKEN``); its own
``/health`` polls of the workers carry it too.

``--redis`` also starts a local ``redis-server`` (``local_redis``: unix socket, persistence off,
supervised, started first and stopped last) and hands its URL to the gateway
(``OMNISERVE_GATEWAY__REDIS_URL``, not the command line); ``--redis-url URL`` hands over an existing
one. ``--gateway-processes N`` runs the gateway as N processes on its port and needs one of them.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from .child import Child, ChildSpec
from .config import load_settings
from .local_redis import LocalRedis
from .supervisor import Supervisor
from .tokens import ADMIN_TOKEN_FILE, WORKER_TOKEN_FILE, bearer, load_or_create

BASE_PORT = 22400
LOAD_TIMEOUT_S = 1800.0
START_ATTEMPTS = 3          # failed starts of one child during the initial load that end `up`
TICK_S = 0.5
WATCH_ARM_S = 3.0     # how long "ready" waits for the supervisor's first sighting of each worker
DEFAULT_STUCK_AFTER_S = 6.0   # 20x the worst /health delay measured during speech replies (0.3 s)


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return v


def _count(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="number of local workers (default 1)")
    p.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    p.add_argument("--port", type=int, help="gateway port (default 8006)")
    p.add_argument("--host", help="gateway bind address (default 0.0.0.0)")
    p.add_argument("--data-dir", help="data folder shared by the gateway and the workers")
    p.add_argument("--worker-base-port", type=int, default=BASE_PORT, help="first worker port (default 22400)")
    p.add_argument("--public-name", action="append", dest="public_names", metavar="NAME",
                   help="a host name or address clients use to reach the gateway (Host allow-list); repeatable")
    p.add_argument("--stuck-after", type=_positive, default=DEFAULT_STUCK_AFTER_S, metavar="SECONDS",
                   help="restart a worker whose /health has not answered for this long (default 6)")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--redis", action="store_true",
                   help="also start a local redis-server (a unix socket only, no TCP port; persistence off; "
                        "restarted like the workers) and keep the gateway's shared state in it")
    r.add_argument("--redis-url", metavar="URL",
                   help="keep the gateway's shared state in this Redis instead (gateway.redis_url), "
                        "e.g. redis://10.0.0.5:6379/0")
    p.add_argument("--gateway-processes", type=_count, metavar="N",
                   help="run the gateway as N processes on its port, e.g. one per core "
                        "(gateway.processes; more than 1 needs --redis, --redis-url or gateway.redis_url)")
    p.add_argument("--worker-command", help=argparse.SUPPRESS)  # tests: a stand-in worker, {port} {index}


class Display:
    """The one-line progress display (rewritten in place on a terminal) and whole-line messages."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = ""
        self.open_line = False

    def progress(self, line: str) -> None:
        if self.tty:
            print("\r" + line.ljust(len(self.last)), end="", flush=True)
            self.open_line = True
        elif line.split("] ", 1)[1] != self.last.split("] ", 1)[-1]:
            print(line, flush=True)
        self.last = line

    def end_line(self) -> None:
        if self.open_line:
            print(flush=True)
            self.open_line = False

    def say(self, text: str) -> None:
        self.end_line()
        print(text, file=sys.stderr, flush=True)


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = load_settings(getattr(args, "config", None), {"data_dir": args.data_dir})
        self.data_dir = Path(self.settings.data_dir)
        self.logs = self.data_dir / "logs"
        self.stopping = False
        self.display = Display()
        g = self.settings.gateway
        self.port = args.port or g.port
        self.http = args.http or g.http
        self.gateway_url = f"{'http' if self.http else 'https'}://localhost:{self.port}"
        self.worker_token, _ = load_or_create(g.worker_token, self.data_dir, WORKER_TOKEN_FILE)
        self.worker_urls = [f"http://127.0.0.1:{args.worker_base_port + i}" for i in range(args.workers)]
        self.redis = LocalRedis(self.data_dir) if getattr(args, "redis", False) else None
        self.redis_url = self.redis.url if self.redis else (getattr(args, "redis_url", None) or g.redis_url)
        self.gateway_processes = getattr(args, "gateway_processes", None) or g.processes
        services = [Child(self.redis.spec(self.logs / "redis.log"))] if self.redis else []
        self.sup = Supervisor(self._worker_children(), self._gateway_child(), args.stuck_after, self.display.say,
                              admin_token_file=self.data_dir / ADMIN_TOKEN_FILE, admin_token=g.admin_token,
                              services=services)

    def _config_flag(self) -> list[str]:
        return ["--config", self.args.config] if getattr(self.args, "config", None) else []

    def worker_cmd(self, port: int, index: int) -> list[str]:
        if self.args.worker_command:
            return shlex.split(self.args.worker_command.format(port=port, index=index))
        return [sys.executable, "-m", "omniserve.cli", "worker", "--port", str(port), "--index", str(index),
                *self._config_flag(), "--data-dir", str(self.data_dir)]

    def _worker_children(self) -> list[Child]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMNISERVE_WORKER__TOKEN=self.worker_token)
        out = []
        for i, url in enumerate(self.worker_urls):
            port = self.args.worker_base_port + i
            out.append(Child(ChildSpec(f"worker {i}", self.worker_cmd(port, i), env, self.logs / f"worker_{i}.log",
                                       url + "/health", bearer(self.worker_token), url, watch_stuck=True)))
        return out

    def _gateway_child(self) -> Child:
        cmd = [sys.executable, "-m", "omniserve.cli", "gateway", "--port", str(self.port),
               "--workers", ",".join(self.worker_urls), "--data-dir", str(self.data_dir), "--log-level", "warning",
               *self._config_flag()]
        if self.args.host:
            cmd += ["--host", self.args.host]
        for name in getattr(self.args, "public_names", None) or []:
            cmd += ["--public-name", name]
        if self.http:
            cmd.append("--http")
        if self.gateway_processes > 1:
            cmd += ["--processes", str(self.gateway_processes)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMNISERVE_GATEWAY__WORKER_TOKEN=self.worker_token)
        if self.redis_url:  # not on the command line, where `ps` would show a password
            env["OMNISERVE_GATEWAY__REDIS_URL"] = self.redis_url
        # its output (URL, first-run admin token) goes to this terminal
        return Child(ChildSpec("gateway", cmd, env, None, self.gateway_url + "/health"))

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sup.give_up_after = START_ATTEMPTS
        self.sup.start()

    def _load_failed(self) -> bool:
        c = self.sup.gave_up
        if c is None:
            return False
        self.display.say(f"{c.name} failed to start {c.failures} times; last: {c.last_failure}\n{c.log_tail()}")
        return True

    def wait_ready(self) -> bool:
        """Supervise until every worker finished loading and the gateway saw them; show progress."""
        t0 = time.monotonic()
        loaded_at: Optional[float] = None
        workers, gw = self.sup.workers, self.sup.gateway
        while not self.stopping:
            self.sup.tick()
            if self._load_failed():
                return False
            states = [w.label() for w in workers]
            gw_ok = gw.running() and gw.answering
            gw_ready = int(gw.body.get("workers_ready", 0) or 0) if gw_ok else 0
            self.display.progress(f"[{time.monotonic() - t0:5.0f} s] " + "  ".join(
                f"{w.name}: {s}" for w, s in zip(workers, states)) + f"  gateway: {'up' if gw_ok else 'starting'}")
            usable = sum(1 for s in states if s not in ("starting", "restarting", "loading", "?", "error"))
            # ready once every worker finished loading AND the gateway's own health poll saw them;
            # and once the supervisor's view of the gateway's worker list holds each of them (its
            # "stuck" watch needs that first sighting; a few ticks at most, then ready regardless)
            loaded = gw_ok and all(s not in ("starting", "restarting", "loading", "?") for s in states) \
                and gw_ready >= usable
            if not loaded:
                loaded_at = None
            elif loaded_at is None:
                loaded_at = time.monotonic()
            if loaded and loaded_at is not None and (all(w.gateway_saw_ok for w in workers)
                                                     or time.monotonic() - loaded_at > WATCH_ARM_S):
                self.display.end_line()
                if "error" in states:
                    print("warning: some workers report an error; see " + str(self.logs), file=sys.stderr)
                return True
            if time.monotonic() - t0 > LOAD_TIMEOUT_S:
                self.display.say(f"workers not ready after {LOAD_TIMEOUT_S:.0f} s")
                return False
            time.sleep(TICK_S)
        return False

    def supervise(self) -> None:
        """After the initial load: restart whatever fails, for as long as the launcher runs."""
        self.sup.give_up_after = None
        while not self.stopping:
            self.sup.tick()
            time.sleep(TICK_S)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "redis", False) and LocalRedis.executable() is None:
        print("--redis needs redis-server (Debian package redis-server; setup.sh installs it), "
              "or use --redis-url URL", file=sys.stderr)
        return 2
    lau = Launcher(args)
    if lau.gateway_processes > 1 and not lau.redis_url:
        print(f"{lau.gateway_processes} gateway processes need Redis: add --redis (a local redis-server) "
              "or --redis-url URL", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        lau.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        lau.start()
        print(f"starting {args.workers} worker(s) (logs in {lau.logs}) and the gateway …", flush=True)
        if lau.redis is not None:
            print(f"redis: {lau.redis_url}", flush=True)
        if lau.wait_ready():
            print(f"\nomniserve is ready: {lau.gateway_url}   (Ctrl-C to stop)", flush=True)
            token_file = lau.data_dir / ADMIN_TOKEN_FILE
            if token_file.exists():
                print(f"admin page: {lau.gateway_url}/admin  (token in {token_file})", flush=True)
            lau.supervise()
        elif not lau.stopping:
            code = 1
    finally:
        lau.display.end_line()
        print("\nstopping …", flush=True)
        lau.sup.stop()
        lau.sup.close()
        if lau.redis is not None:
            lau.redis.cleanup()
    return code
