"""Session store: what the worker recorded under ``<data_dir>/sessions/<id>/``, served read-only,
plus the client's own uploads (a browser recording, comments, diagnostics) and a cleanup task.

Every path is built from a validated id, then resolved and checked with ``is_relative_to`` (no
traversal, no symlink escape). The zip download is streamed from a thread as it is written.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
# magic bytes -> file extension for /upload-recording
_MAGIC = [(b"\x1aE\xdf\xa3", "webm"), (b"OggS", "ogg"), (b"RIFF", "wav"), (b"fLaC", "flac")]


class SessionNotFound(LookupError):
    pass


class BadUpload(ValueError):
    pass


class SessionStore:
    def __init__(self, root: Path, max_upload_bytes: int, max_comment_bytes: int) -> None:
        self.root = root
        self.max_upload_bytes = max_upload_bytes
        self.max_comment_bytes = max_comment_bytes
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- paths
    def dir(self, session_id: str, must_exist: bool = True) -> Path:
        if not SESSION_ID_RE.match(session_id or ""):
            raise SessionNotFound(session_id)
        root = self.root.resolve()
        d = (root / session_id).resolve()
        if not d.is_relative_to(root) or d == root:
            raise SessionNotFound(session_id)
        if must_exist and not d.is_dir():
            raise SessionNotFound(session_id)
        return d

    def file(self, session_id: str, rel: str) -> Path:
        d = self.dir(session_id)
        if not rel or "\x00" in rel or rel.startswith("/"):
            raise SessionNotFound(rel)
        p = (d / rel).resolve()
        if not p.is_relative_to(d) or not p.is_file():
            raise SessionNotFound(rel)
        return p

    # ------------------------------------------------------------------ read
    def meta(self, session_id: str) -> dict:
        d = self.dir(session_id)
        out: dict = {"session_id": session_id}
        m = d / "meta.json"
        if m.is_file():
            try:
                out.update(json.loads(m.read_text()))
            except ValueError:
                out["meta_error"] = "meta.json is not valid JSON"
        out["files"] = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
        return out

    def recording(self, session_id: str) -> dict:
        p = self.dir(session_id) / "recording.json"
        if not p.is_file():
            raise SessionNotFound("recording.json")
        return json.loads(p.read_text())

    def zip_stream(self, session_id: str) -> Iterator[bytes]:
        """Yield a zip of the session folder as it is written (never the whole archive in memory)."""
        d = self.dir(session_id)
        files = [p for p in sorted(d.rglob("*")) if p.is_file() and p.resolve().is_relative_to(d)]

        class _Sink:
            def __init__(self) -> None:
                self.parts: list[bytes] = []

            def write(self, b: bytes) -> int:
                self.parts.append(bytes(b))
                return len(b)

            def flush(self) -> None:
                pass

        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:  # type: ignore[arg-type]
            for p in files:
                with zf.open(str(p.relative_to(d)), "w", force_zip64=True) as dst, p.open("rb") as src:
                    while chunk := src.read(256 * 1024):
                        dst.write(chunk)
                        if sink.parts:
                            yield b"".join(sink.parts)
                            sink.parts.clear()
                if sink.parts:
                    yield b"".join(sink.parts)
                    sink.parts.clear()
        if sink.parts:
            yield b"".join(sink.parts)

    # ----------------------------------------------------------------- write
    def save_upload(self, session_id: str, body: bytes, content_type: str) -> str:
        d = self.dir(session_id)
        if len(body) > self.max_upload_bytes:
            raise BadUpload(f"upload too large (max {self.max_upload_bytes} bytes)")
        ext = next((e for magic, e in _MAGIC if body.startswith(magic)), None)
        if ext is None and body[4:8] == b"ftyp":
            ext = "mp4"
        if ext is None:
            raise BadUpload("unsupported recording type (WebM, Ogg, WAV, FLAC or MP4 expected)")
        if content_type and not content_type.split(";")[0].strip().startswith(("audio/", "video/", "application/octet-stream")):
            raise BadUpload(f"unexpected Content-Type {content_type!r}")
        name = f"client_recording.{ext}"
        (d / name).write_bytes(body)
        return name

    def comments(self, session_id: str) -> list[dict]:
        p = self.dir(session_id) / "comments.json"
        return json.loads(p.read_text()) if p.is_file() else []

    def add_comment(self, session_id: str, text: str, rating: Optional[int]) -> dict:
        d = self.dir(session_id)
        with self._lock:
            items = self.comments(session_id)
            used = sum(len(c.get("text", "")) for c in items)
            if used + len(text) > self.max_comment_bytes:
                raise BadUpload(f"comment space for this session is full ({self.max_comment_bytes} bytes)")
            c = {"text": text, "rating": rating, "created_at": time.time()}
            items.append(c)
            (d / "comments.json").write_text(json.dumps(items, indent=1, ensure_ascii=False))
        return c

    def append_diagnostic(self, key: str, text: str) -> None:
        if not SESSION_ID_RE.match(key):
            return
        try:
            d = self.dir(key)
        except SessionNotFound:
            d = self.root.parent / "diagnostics"
            d.mkdir(parents=True, exist_ok=True)
            d = d / key
            d.mkdir(exist_ok=True)
        with self._lock, (d / "client_diagnostics.jsonl").open("a", encoding="utf-8") as f:
            f.write(text.replace("\n", " ") + "\n")

    # --------------------------------------------------------------- cleanup
    def cleanup(self, retention_s: float, cap_bytes: int, now: Optional[float] = None) -> int:
        """Delete sessions older than ``retention_s``, then the oldest until under ``cap_bytes``."""
        if not self.root.is_dir():
            return 0
        now = now or time.time()
        entries = []
        for d in self.root.iterdir():
            if not d.is_dir() or d.is_symlink():
                continue
            try:
                size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
                entries.append((d.stat().st_mtime, size, d))
            except OSError:
                continue
        entries.sort()
        removed = 0
        total = sum(e[1] for e in entries)
        for mtime, size, d in entries:
            if now - mtime > retention_s or total > cap_bytes:
                shutil.rmtree(d, ignore_errors=True)
                total -= size
                removed += 1
        return removed

    async def cleanup_loop(self, interval_s: float, retention_s: float, cap_bytes: int) -> None:
        while True:
            try:
                n = await asyncio.to_thread(self.cleanup, retention_s, cap_bytes)
                if n:
                    log.info("session cleanup removed %d session(s)", n)
            except Exception:
                log.exception("session cleanup failed")
            await asyncio.sleep(interval_s)
