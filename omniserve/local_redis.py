"""A local ``redis-server`` for ``omniserve up --redis``: the gateway's shared state on this machine.

It listens on a unix socket only (no TCP port: ``--port 0``), mode 0700 in a 0700 folder, so only
this user reaches it; persistence is off (``--save '' --appendonly no``: the queue and slot
claims are live state, and a restarted Redis starts empty). Its folder is
``<data_dir>/redis``; when that path is too long for a unix socket (about 100 bytes) the socket
goes into a private temporary folder instead, removed by :meth:`LocalRedis.cleanup`. The launcher
supervises it like the other children (restart with backoff when it exits).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .child import ChildSpec

REDIS_SERVER = "redis-server"   # the Debian package redis-server (setup.sh installs it)
MAX_SOCKET_PATH = 100           # sun_path holds 108 bytes on Linux; keep a margin


class LocalRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "redis"
        self._tmp: Optional[Path] = None
        sock = self.dir / "redis.sock"
        if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
            self._tmp = Path(tempfile.mkdtemp(prefix="omniserve-redis-"))
            sock = self._tmp / "redis.sock"
        self.socket = sock
        self.url = f"unix://{sock}"

    @staticmethod
    def executable() -> Optional[str]:
        return shutil.which(REDIS_SERVER)

    def spec(self, log: Path) -> ChildSpec:
        """How to start it (the folder is made here); no HTTP health: it is watched for exit."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = [self.executable() or REDIS_SERVER, "--port", "0", "--unixsocket", str(self.socket),
               "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
               "--daemonize", "no", "--protected-mode", "yes"]
        return ChildSpec("redis", cmd, dict(os.environ), log, health_url="")

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
