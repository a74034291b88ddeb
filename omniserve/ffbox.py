"""ffmpeg and ffprobe on untrusted bytes, boxed in.

- The input is written to a private file (0600, in a fresh 0700 folder) and named relative to
  that folder (``file:in.bin``), so no path of ours appears in an argument or a message.
- The demuxer is chosen from the magic bytes (``-f``) and ``-format_whitelist`` allows only it:
  ffmpeg never auto-probes, so an HLS playlist, a concat list or an image sequence cannot start
  a demuxer that opens other files. Bytes that are none of our containers never reach ffmpeg.
- ``-protocol_whitelist file``: the one input file is the only kind of thing it can open.
- A wall-clock deadline; stdout and stderr go to files in the box, and the run is killed once
  what it wrote passes ``max_output`` bytes (``-fs``/``-t`` in the arguments bound it first).
- A minimal environment (no settings or tokens of ours). stderr is logged at debug level and
  never shown to a client: ``ToolError`` carries a short reason only.

Shared by the gateway (reference voices) and the engine (video): it imports neither.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

# container (``mediaprobe.container``) -> (the demuxer for -f, the -format_whitelist entry)
DEMUXERS: dict[str, tuple[str, str]] = {
    "mp4": ("mov", "mov,mp4,m4a,3gp,3g2,mj2"),
    "webm": ("matroska", "matroska,webm"),
    "ogg": ("ogg", "ogg"),
    "mp3": ("mp3", "mp3"),
}
INPUT = "in.bin"
_POLL_S = 0.05
_STDERR_TAIL = 2000


class ToolError(Exception):
    """ffmpeg/ffprobe failed, ran too long or wrote too much; ``str(e)`` is safe for a client."""


def available(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


class Box:
    """A private folder holding one untrusted input file; runs ffmpeg/ffprobe on it.

    Use as a context manager: the folder and everything the tools wrote go away on exit."""

    def __init__(self, data: bytes, kind: str) -> None:
        if kind not in DEMUXERS:
            raise ValueError(f"no demuxer for {kind!r}")
        self.kind = kind
        self.folder = Path(tempfile.mkdtemp(prefix="omniserve-media-"))   # mode 0700
        fd = os.open(self.folder / INPUT, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, et: Optional[type], ev: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def input_args(self) -> list[str]:
        """The input, opened only by its whitelisted demuxer through the file protocol."""
        demuxer, allowed = DEMUXERS[self.kind]
        extra = ["-enable_drefs", "0"] if demuxer == "mov" else []   # mov: never follow external refs
        return ["-f", demuxer, "-format_whitelist", allowed, "-protocol_whitelist", "file", *extra,
                "-i", f"file:{INPUT}"]

    def outputs(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.name not in (INPUT, "stderr.txt"))

    def run(self, tool: str, args: list[str], *, timeout_s: float, max_output: int) -> bytes:
        """Run ``tool`` (ffmpeg or ffprobe) in the box; return its stdout (at most ``max_output``
        bytes). ToolError when it fails, passes the deadline or writes more than ``max_output``
        bytes in all (stdout and files)."""
        exe = shutil.which(tool)
        if exe is None:
            raise ToolError(f"{tool} is not installed on this server")
        head = [exe, "-hide_banner", "-v", "error"] + (["-nostdin"] if tool == "ffmpeg" else [])
        out_path, err_path = self.folder / "stdout.bin", self.folder / "stderr.txt"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(head + args, cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, close_fds=True)
            why = self._watch(proc, timeout_s, max_output)
        detail = err_path.read_bytes()[-_STDERR_TAIL:].decode(errors="replace").strip()
        if why is None and proc.returncode != 0:
            why = "damaged or unsupported content"
        if why is not None:
            log.debug("%s %s (rc=%s): %s", tool, why, proc.returncode, detail)
            raise ToolError(why)
        data = out_path.read_bytes()
        out_path.unlink()
        return data

    def audio(self, *, rate: int, max_seconds: float, timeout_s: float) -> np.ndarray:
        """The input's (first) audio track as mono float32 at ``rate``, at most ``max_seconds``."""
        cap = int(max_seconds * rate) * 4
        raw = self.run("ffmpeg", [*self.input_args(), "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(rate),
                                  "-t", f"{max_seconds:.3f}", "-f", "f32le", "-fs", str(cap), "pipe:1"],
                       timeout_s=timeout_s, max_output=cap + 64 * 1024)
        return np.frombuffer(raw[: min(len(raw), cap) // 4 * 4], dtype="<f4").astype(np.float32)

    def _watch(self, proc: subprocess.Popen, timeout_s: float, max_output: int) -> Optional[str]:
        deadline = time.monotonic() + max(0.1, timeout_s)
        try:
            while True:
                try:
                    proc.wait(_POLL_S)
                    return None if self._written() <= max_output else "output over its cap"
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() > deadline:
                    return f"took longer than {timeout_s:.0f} s"
                if self._written() > max_output:
                    return "output over its cap"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _written(self) -> int:
        total = 0
        for p in self.folder.iterdir():
            if p.name not in (INPUT, "stderr.txt"):
                try:
                    total += p.stat().st_size
                except FileNotFoundError:
                    pass
        return total


def decode_audio(data: bytes, kind: str, *, rate: int, max_seconds: float, timeout_s: float) -> np.ndarray:
    """Mono float32 at ``rate`` from an audio (or video) file of container ``kind``: at most
    ``max_seconds`` of it. ToolError when ffmpeg cannot decode it within ``timeout_s``."""
    with Box(data, kind) as box:
        return box.audio(rate=rate, max_seconds=max_seconds, timeout_s=timeout_s)
