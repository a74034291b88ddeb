"""Session store: what the worker recorded under ``<data_dir>/sessions/<id>/``, served read-only,
plus the client's own uploads (a browser recording, comments, diagnostics) and a cleanup task.

Every path is built from a validated id, then resolved and checked with ``is_relative_to`` (no
traversal, no symlink escape). The zip download is streamed from a thread as it is written.
Client writes count against one ``StorageBudget`` (``session_storage_cap_mb``): a recording is
streamed to a temp file in the session folder piece by piece (``RecordingUpload``) and renamed
when complete; diagnostics are capped per session; the cleanup walk re-measures the total.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path
from typing import Iterator, Optional

from .uploads import TEMP_PREFIX, BadUpload, RecordingUpload, StorageBudget, StorageFull, StreamedFile, TooLarge

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class SessionNotFound(LookupError):
    pass


__all__ = ["BadUpload", "RecordingUpload", "SessionNotFound", "SessionStore", "StorageFull", "TooLarge"]


def _dir_size(d: Path) -> int:
    total = 0
    for p in d.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _client_file(p: Path) -> bool:
    """Listed and zipped: everything but an upload still being written."""
    return p.is_file() and not p.name.startswith(TEMP_PREFIX)


class SessionStore:
    def __init__(self, root: Path, max_upload_bytes: int, max_comment_bytes: int, *,
                 cap_bytes: Optional[int] = None, max_diagnostics_bytes: int = 1024 * 1024) -> None:
        self.root = root
        self.diagnostics_root = root.parent / "diagnostics"
        self.max_upload_bytes = max_upload_bytes
        self.max_comment_bytes = max_comment_bytes
        self.max_diagnostics_bytes = max_diagnostics_bytes
        self.budget = StorageBudget(cap_bytes, self._measure)
        self._lock = threading.Lock()

    def _measure(self) -> int:
        return sum(_dir_size(r) for r in (self.root, self.diagnostics_root) if r.is_dir())

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
        out["files"] = sorted(str(p.relative_to(d)) for p in d.rglob("*") if _client_file(p))
        return out

    def recording(self, session_id: str) -> dict:
        p = self.dir(session_id) / "recording.json"
        if not p.is_file():
            raise SessionNotFound("recording.json")
        return json.loads(p.read_text())

    def zip_stream(self, session_id: str) -> Iterator[bytes]:
        """Yield a zip of the session folder as it is written (never the whole archive in memory)."""
        d = self.dir(session_id)
        files = [p for p in sorted(d.rglob("*")) if _client_file(p) and p.resolve().is_relative_to(d)]

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
    def open_upload(self, session_id: str, content_type: str) -> RecordingUpload:
        """Start receiving a browser recording (``write`` pieces, then ``commit`` or ``abort``)."""
        d = self.dir(session_id)
        if content_type and not content_type.split(";")[0].strip().startswith(("audio/", "video/", "application/octet-stream")):
            raise BadUpload(f"unexpected Content-Type {content_type[:80]!r}")
        return RecordingUpload(StreamedFile(d, self.budget, self.max_upload_bytes))

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
            data = json.dumps(items, indent=1, ensure_ascii=False).encode()
            dest = d / "comments.json"
            old = dest.stat().st_size if dest.is_file() else 0
            self.budget.reserve(len(data) - old)
            tmp = d / f"{TEMP_PREFIX}comments.part"
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            self.budget.release(old - len(data))
        return c

    def append_diagnostic(self, key: str, text: str) -> bool:
        """Append one line; False (nothing written) past the per-session cap or the storage cap."""
        if not SESSION_ID_RE.match(key):
            return False
        line = (text.replace("\n", " ") + "\n").encode("utf-8", errors="replace")
        try:
            d = self.dir(key)
        except SessionNotFound:
            d = self.diagnostics_root / key
        path = d / "client_diagnostics.jsonl"
        with self._lock:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            if size + len(line) > self.max_diagnostics_bytes:
                return False
            try:
                self.budget.reserve(len(line))
            except StorageFull:
                return False
            d.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as f:
                f.write(line)
        return True

    # --------------------------------------------------------------- cleanup
    def cleanup(self, retention_s: float, cap_bytes: int, now: Optional[float] = None) -> int:
        """Delete sessions (and diagnostics folders) older than ``retention_s``, then the oldest
        until under ``cap_bytes``; the storage budget is set to what remains."""
        now = now or time.time()
        entries = []
        for root in (self.root, self.diagnostics_root):
            if not root.is_dir():
                continue
            for d in root.iterdir():
                if not d.is_dir() or d.is_symlink():
                    continue
                try:
                    entries.append((d.stat().st_mtime, _dir_size(d), d))
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
        self.budget.reset(total)
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
