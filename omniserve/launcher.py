"""`omniserve up [--workers N] [--http] [--port P]`: N local workers + the gateway, one command.

Starts ``omniserve worker --port 22400+i --index i`` for each worker and then the gateway, shows
the workers' progress (``/health``: loading → idle), prints the URL, and on Ctrl-C/SIGTERM stops
everything. Children get ``PR_SET_PDEATHSIG`` so they die with the launcher even if it is killed
with SIGKILL: no orphans.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

from .config import load_settings

BASE_PORT = 22400
LOAD_TIMEOUT_S = 1800.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="number of local workers (default 1)")
    p.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    p.add_argument("--port", type=int, help="gateway port (default 8006)")
    p.add_argument("--host", help="gateway bind address (default 0.0.0.0)")
    p.add_argument("--data-dir", help="data folder shared by the gateway and the workers")
    p.add_argument("--worker-base-port", type=int, default=BASE_PORT, help="first worker port (default 22400)")
    p.add_argument("--worker-command", help=argparse.SUPPRESS)  # tests: a stand-in worker, {port} {index}


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the launcher dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = load_settings(getattr(args, "config", None), {"data_dir": args.data_dir})
        self.data_dir = Path(self.settings.data_dir)
        self.logs = self.data_dir / "logs"
        self.procs: list[tuple[str, subprocess.Popen, Optional[Path]]] = []
        self.stopping = False

    def _spawn(self, name: str, cmd: list[str], log: Optional[Path]) -> subprocess.Popen:
        out = log.open("ab") if log else None
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_die_with_parent,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.procs.append((name, p, log))
        return p

    def worker_cmd(self, port: int, index: int) -> list[str]:
        if self.args.worker_command:
            return shlex.split(self.args.worker_command.format(port=port, index=index))
        cmd = [sys.executable, "-m", "omniserve.cli", "worker", "--port", str(port), "--index", str(index)]
        if getattr(self.args, "config", None):
            cmd += ["--config", self.args.config]
        return cmd + ["--data-dir", str(self.data_dir)]

    def start(self) -> tuple[list[str], str]:
        self.logs.mkdir(parents=True, exist_ok=True)
        urls = []
        for i in range(self.args.workers):
            port = self.args.worker_base_port + i
            self._spawn(f"worker {i}", self.worker_cmd(port, i), self.logs / f"worker_{i}.log")
            urls.append(f"http://127.0.0.1:{port}")
        g = self.settings.gateway
        port = self.args.port or g.port
        http = self.args.http or g.http
        cmd = [sys.executable, "-m", "omniserve.cli", "gateway", "--port", str(port), "--workers", ",".join(urls),
               "--data-dir", str(self.data_dir), "--log-level", "warning"]
        if getattr(self.args, "config", None):
            cmd += ["--config", self.args.config]
        if self.args.host:
            cmd += ["--host", self.args.host]
        if http:
            cmd.append("--http")
        self._spawn("gateway", cmd, None)  # its output (URL, first-run admin token) goes to this terminal
        return urls, f"{'http' if http else 'https'}://localhost:{port}"

    def _failed(self) -> Optional[str]:
        for name, p, log in self.procs:
            if p.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
                return f"{name} exited with code {p.returncode}\n{tail}"
        return None

    def wait_ready(self, urls: list[str], gateway_url: str) -> bool:
        """Poll each worker's /health until none is loading; show progress on one line."""
        t0 = time.monotonic()
        tty = sys.stdout.isatty()
        last = ""
        with httpx.Client(timeout=2, verify=False, trust_env=False) as c:
            while not self.stopping:
                if (why := self._failed()) is not None:
                    print(f"\n{why}", file=sys.stderr)
                    return False
                states = []
                for u in urls:
                    try:
                        states.append(c.get(u + "/health").json().get("worker_status", "?"))
                    except (httpx.HTTPError, ValueError):
                        states.append("starting")
                try:
                    gw = c.get(gateway_url + "/health").json()
                    gw_ok, gw_ready = True, int(gw.get("workers_ready", 0))
                except (httpx.HTTPError, ValueError):
                    gw_ok, gw_ready = False, 0
                line = f"[{time.monotonic() - t0:5.0f} s] " + "  ".join(
                    f"worker {i}: {s}" for i, s in enumerate(states)) + f"  gateway: {'up' if gw_ok else 'starting'}"
                if tty:
                    print("\r" + line.ljust(len(last)), end="", flush=True)
                elif line.split("] ", 1)[1] != last.split("] ", 1)[-1]:
                    print(line, flush=True)
                last = line
                usable = sum(1 for s in states if s not in ("starting", "loading", "?", "error"))
                # ready once every worker finished loading AND the gateway's own health poll saw them
                if gw_ok and all(s not in ("starting", "loading", "?") for s in states) and gw_ready >= usable:
                    if tty:
                        print()
                    if "error" in states:
                        print("warning: some workers report an error; see " + str(self.logs), file=sys.stderr)
                    return True
                if time.monotonic() - t0 > LOAD_TIMEOUT_S:
                    print(f"\nworkers not ready after {LOAD_TIMEOUT_S:.0f} s", file=sys.stderr)
                    return False
                time.sleep(0.5)
        return False

    def stop(self) -> None:
        """SIGTERM every child (gateway first), then SIGKILL what is still there after 10 s."""
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for _, p, _ in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    lau = Launcher(args)

    def on_signal(signum, _frame):
        lau.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        urls, gateway_url = lau.start()
        print(f"starting {len(urls)} worker(s) (logs in {lau.logs}) and the gateway …", flush=True)
        if lau.wait_ready(urls, gateway_url):
            print(f"\nomniserve is ready: {gateway_url}   (Ctrl-C to stop)", flush=True)
            token_file = lau.data_dir / "admin_token"
            if token_file.exists():
                print(f"admin page: {gateway_url}/admin  (token in {token_file})", flush=True)
            while not lau.stopping:
                if (why := lau._failed()) is not None:
                    print(f"\n{why}", file=sys.stderr)
                    code = 1
                    break
                time.sleep(0.5)
        elif not lau.stopping:
            code = 1
    finally:
        print("\nstopping …", flush=True)
        lau.stop()
    return code
