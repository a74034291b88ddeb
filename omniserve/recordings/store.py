"""``RecordingStore``: the recordings under ``<data_dir>/sessions/<id>/``, read-only, plus what
clients add to one (a browser recording, comments, diagnostics).

Every path is built from a validated id (``ids.valid_id``), then resolved and checked with
``is_relative_to`` (no traversal, no symlink escape): nothing outside the store is ever read or
listed. The zip download is streamed as it is written. Client writes count against one
``StorageBudget`` (``worker.session_storage_cap_mb``): a recording upload is streamed to a temp
file in the recording folder piece by piece (``RecordingUpload``) and renamed when complete;
comments and diagnostics are capped per recording. Diagnostics for a session that has no
recording go to ``<data_dir>/diagnostics/<session key>/``.

Methods do file I/O: call them from a thread (the worker's routes do).
"""
from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from pathlib import Path
from typing import IO, Iterator, Optional, cast

from ..config import Settings
from .ids import valid_id
from .uploads import TEMP_PREFIX, BadUpload, RecordingUpload, StorageBudget, StorageFull, StreamedFile

MB = 1024 * 1024


class RecordingNotFound(LookupError):
    pass


def dir_size(d: Path) -> int:
    total = 0
    for p in d.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


class RecordingStore:
    def __init__(self, root: Path, *, max_upload_bytes: int, max_comment_bytes: int,
                 max_diagnostics_bytes: int, cap_bytes: Optional[int] = None) -> None:
        self.root = root
        self.diagnostics_root = root.parent / "diagnostics"
        self.max_upload_bytes = max_upload_bytes
        self.max_comment_bytes = max_comment_bytes
        self.max_diagnostics_bytes = max_diagnostics_bytes
        self.budget = StorageBudget(cap_bytes, self._measure)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> "RecordingStore":
        """The store a worker serves: its ``data_dir`` and its ``worker`` caps."""
        w = settings.worker
        return cls(Path(settings.data_dir) / "sessions", max_upload_bytes=w.max_upload_recording_bytes,
                   max_comment_bytes=w.max_comment_bytes, max_diagnostics_bytes=w.max_diagnostics_file_bytes,
                   cap_bytes=int(w.session_storage_cap_mb * MB))

    def _measure(self) -> int:
        return sum(dir_size(r) for r in (self.root, self.diagnostics_root) if r.is_dir())

    # ----------------------------------------------------------------- paths
    def dir(self, rec_id: str, must_exist: bool = True) -> Path:
        if not valid_id(rec_id):
            raise RecordingNotFound(rec_id)
        root = self.root.resolve()
        d = (root / rec_id).resolve()
        if not d.is_relative_to(root) or d == root:
            raise RecordingNotFound(rec_id)
        if must_exist and not d.is_dir():
            raise RecordingNotFound(rec_id)
        return d

    def file(self, rec_id: str, rel: str) -> Path:
        d = self.dir(rec_id)
        if not rel or "\x00" in rel or rel.startswith("/"):
            raise RecordingNotFound(rel)
        p = (d / rel).resolve()
        if not p.is_relative_to(d) or not p.is_file():
            raise RecordingNotFound(rel)
        return p

    @staticmethod
    def _files(d: Path) -> list[Path]:
        """Listed and zipped: the files inside the folder, but no upload still being written."""
        return [p for p in sorted(d.rglob("*"))
                if p.is_file() and not p.name.startswith(TEMP_PREFIX) and p.resolve().is_relative_to(d)]

    # ------------------------------------------------------------------ read
    def meta(self, rec_id: str) -> dict:
        d = self.dir(rec_id)
        out: dict = {"session_id": rec_id}
        m = d / "meta.json"
        if m.is_file():
            try:
                out.update(json.loads(m.read_text()))
            except ValueError:
                out["meta_error"] = "meta.json is not valid JSON"
        out["files"] = [str(p.relative_to(d)) for p in self._files(d)]
        return out

    def recording(self, rec_id: str) -> Path:
        """``recording.json`` (served as it is: the recorder writes it atomically)."""
        return self.file(rec_id, "recording.json")

    def zip_stream(self, rec_id: str) -> Iterator[bytes]:
        """Yield a zip of the recording folder as it is written (never the whole archive in memory)."""
        d = self.dir(rec_id)
        files = self._files(d)

        class _Sink:
            def __init__(self) -> None:
                self.parts: list[bytes] = []

            def write(self, b: bytes) -> int:
                self.parts.append(bytes(b))
                return len(b)

            def flush(self) -> None:
                pass

        sink = _Sink()
        with zipfile.ZipFile(cast(IO[bytes], sink), "w", compression=zipfile.ZIP_STORED) as zf:
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
    def open_upload(self, rec_id: str, content_type: str) -> RecordingUpload:
        """Start receiving a browser recording (``write`` pieces, then ``commit`` or ``abort``)."""
        d = self.dir(rec_id)
        if content_type and not content_type.split(";")[0].strip().startswith(("audio/", "video/", "application/octet-stream")):
            raise BadUpload(f"unexpected Content-Type {content_type[:80]!r}")
        return RecordingUpload(StreamedFile(d, self.budget, self.max_upload_bytes))

    def comments(self, rec_id: str) -> list[dict]:
        p = self.dir(rec_id) / "comments.json"
        return json.loads(p.read_text()) if p.is_file() else []

    def add_comment(self, rec_id: str, text: str, rating: Optional[int]) -> dict:
        d = self.dir(rec_id)
        with self._lock:
            items = self.comments(rec_id)
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
        """Append one line to the recording ``key`` (else ``diagnostics/<key>/``); False (nothing
        written) past the per-session cap or the storage cap."""
        if not valid_id(key):
            return False
        line = (text.replace("\n", " ") + "\n").encode("utf-8", errors="replace")
        try:
            d = self.dir(key)
        except RecordingNotFound:
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
