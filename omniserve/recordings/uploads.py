"""What clients write to disk: a budget for all of it (uploads, comments, diagnostics), a file
written in pieces, and the browser recording built on it.

``StorageBudget`` keeps a running total of the bytes under the recording folders: measured once
(lazily, from a thread), then moved by every client write the store makes, and set again from the
periodic cleanup walk (which also sees what the worker recorded). A write that would pass the cap
is refused before it reaches the disk.

``StreamedFile`` writes into a private temp file in the destination folder, checking its own cap
and the budget on every piece, and is renamed into place only when complete. ``RecordingUpload`` checks a recording's type from
its first bytes before the rest is accepted.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional

TEMP_PREFIX = ".upload-"
# magic bytes -> file extension for /upload-recording
_MAGIC = [(b"\x1aE\xdf\xa3", "webm"), (b"OggS", "ogg"), (b"RIFF", "wav"), (b"fLaC", "flac")]


class BadUpload(ValueError):
    """Not something we store (HTTP 415 / 413 by route)."""


class StorageFull(Exception):
    """The storage cap would be exceeded (HTTP 507)."""


class TooLarge(Exception):
    """A single upload passed its own cap (HTTP 413)."""


class StorageBudget:
    def __init__(self, cap_bytes: Optional[int], measure: Callable[[], int]) -> None:
        self.cap_bytes = cap_bytes
        self._measure = measure
        self._used: Optional[int] = None
        self._lock = threading.Lock()

    def used(self) -> int:
        with self._lock:
            return self._used_locked()

    def _used_locked(self) -> int:
        if self._used is None:
            self._used = self._measure()
        return self._used

    def reserve(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            used = self._used_locked()
            if self.cap_bytes is not None and used + n > self.cap_bytes:
                raise StorageFull(f"session storage is full ({self.cap_bytes // (1024 * 1024)} MB)")
            self._used = used + n

    def release(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            if self._used is not None:
                self._used = max(0, self._used - n)

    def reset(self, used: int) -> None:
        with self._lock:
            self._used = max(0, used)


class StreamedFile:
    """``write`` pieces, then ``commit(name)`` (rename into the folder) or ``abort()``."""

    def __init__(self, folder: Path, budget: StorageBudget, max_bytes: int) -> None:
        self.folder = folder
        self.budget = budget
        self.max_bytes = max_bytes
        self.size = 0
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=folder)   # mode 0600
        self.tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes:
            raise TooLarge(f"upload too large (max {self.max_bytes} bytes)")
        self.budget.reserve(len(data))
        self.size += len(data)
        self._f.write(data)

    def commit(self, name: str) -> Path:
        self._f.close()
        dest = self.folder / name
        try:
            replaced = dest.stat().st_size if dest.is_file() else 0
        except OSError:
            replaced = 0
        os.replace(self.tmp, dest)
        self.budget.release(replaced)
        return dest

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)
        self.budget.release(self.size)
        self.size = 0


class RecordingUpload:
    """A browser recording on its way to ``client_recording.<ext>``: the type is checked from the
    first bytes, the size on every piece."""

    def __init__(self, file: StreamedFile) -> None:
        self._file = file
        self._head = b""
        self.ext: Optional[str] = None

    @property
    def size(self) -> int:
        return self._file.size

    def write(self, data: bytes) -> None:
        if self.ext is None and len(self._head) < 12:
            self._head += data[: 12 - len(self._head)]
            if len(self._head) >= 12:
                self._check_type()
        self._file.write(data)

    def _check_type(self) -> None:
        ext = next((e for magic, e in _MAGIC if self._head.startswith(magic)), None)
        if ext is None and self._head[4:8] == b"ftyp":
            ext = "mp4"
        if ext is None:
            raise BadUpload("unsupported recording type (WebM, Ogg, WAV, FLAC or MP4 expected)")
        self.ext = ext

    def commit(self) -> str:
        if self.ext is None:
            self._check_type()
        name = f"client_recording.{self.ext}"
        self._file.commit(name)
        return name

    def abort(self) -> None:
        self._file.abort()
