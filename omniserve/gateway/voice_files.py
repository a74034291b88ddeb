"""``LocalVoices``: uploaded voices on this host's disk, ``<data_dir>/ref_audio/``.

Each voice is two files: ``<id>.wav`` (16 kHz mono) and ``<id>.json``, its record (name, length,
when). Every write goes to a temporary file of its own and is renamed into place, and no file is
shared between voices, so several processes on one data folder (``gateway --processes N``) never
overwrite each other's voices. A voice exists while both files do; the record is written last and
removed first. ``refresh()`` re-reads the folder when it changed (another process added or removed
a voice). An ``index.json`` from before (one file for all records) is still read.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Optional

NAME_RE = re.compile(r'^[^<>&"`\\]{1,64}$')   # plus str.isprintable(); escaping then changes nothing
ID_RE = re.compile(r"^ra_[0-9a-f]{16}$")
LEGACY_INDEX = "index.json"


def valid_meta(meta: object) -> Optional[dict]:
    """A stored voice's record (``name``, ``duration_s``, ``created_at``), or None when malformed."""
    if not isinstance(meta, dict):
        return None
    name, dur, created = meta.get("name"), meta.get("duration_s"), meta.get("created_at")
    if not (isinstance(name, str) and NAME_RE.match(name) and name.isprintable()
            and isinstance(dur, (int, float)) and isinstance(created, (int, float))):
        return None
    return {"name": name, "duration_s": float(dur), "created_at": float(created)}


class LocalVoices:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self.items: dict[str, dict] = {}
        self._seen_mtime: Optional[int] = None
        self._gen = 0                  # bumped by every put and remove of this process
        self.refresh()

    def _file(self, ref_id: str, ext: str) -> Path:
        return self.folder / f"{ref_id}.{ext}"

    def refresh(self) -> None:
        """Re-read the folder if it changed since the last read."""
        try:
            mtime = self.folder.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._seen_mtime:
            return
        gen = self._gen
        items: dict[str, dict] = {}
        legacy = self.folder / LEGACY_INDEX
        try:
            old = json.loads(legacy.read_text()) if legacy.is_file() else {}
        except (OSError, ValueError):
            old = {}
        for k, v in (old.items() if isinstance(old, dict) else ()):
            if ID_RE.match(k) and (m := valid_meta(v)) is not None and self._file(k, "wav").is_file():
                items[k] = m
        for p in self.folder.glob("ra_*.json"):
            k = p.stem
            if not ID_RE.match(k) or not self._file(k, "wav").is_file():
                continue
            try:
                m = valid_meta(json.loads(p.read_text()))
            except (OSError, ValueError):
                m = None
            if m is not None:
                items[k] = m
        with self._lock:
            if gen == self._gen:
                self.items, self._seen_mtime = items, mtime
            else:                      # a put or remove of ours ran meanwhile: read again next time
                self._seen_mtime = None

    def put(self, ref_id: str, meta: dict, wav: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write(self._file(ref_id, "wav"), wav)
        _write(self._file(ref_id, "json"), json.dumps(meta).encode())
        with self._lock:       # a new dict, never changed in place: listings iterate it in other threads
            self.items = {**self.items, ref_id: meta}
            self._gen += 1

    def remove(self, ref_id: str) -> bool:
        if not ID_RE.match(ref_id):
            return False
        with self._lock:
            known = ref_id in self.items
            self.items = {k: v for k, v in self.items.items() if k != ref_id}
            self._gen += 1
        self._file(ref_id, "json").unlink(missing_ok=True)
        self._file(ref_id, "wav").unlink(missing_ok=True)
        return known

    def path(self, ref_id: str) -> Optional[Path]:
        if not ID_RE.match(ref_id) or ref_id not in self.items:
            return None
        p = self._file(ref_id, "wav").resolve()
        return p if p.is_relative_to(self.folder.resolve()) and p.is_file() else None

    def read(self, ref_id: str) -> Optional[bytes]:
        p = self.path(ref_id)
        try:
            return p.read_bytes() if p is not None else None
        except OSError:
            return None


def _write(path: Path, data: bytes) -> None:
    """Into a temporary file of this writer's own, then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
