"""Cleanup of a worker's recordings: those older than the retention go, then the oldest while the
total is over the storage cap; the store's budget is set to what remains. It runs on each worker
over its own ``data_dir`` (``worker.session_cleanup_interval_s``), on a thread."""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Optional

from .store import MB, RecordingStore, dir_size

log = logging.getLogger(__name__)


def cleanup(store: RecordingStore, retention_s: float, cap_bytes: int, now: Optional[float] = None) -> int:
    """Delete recordings (and diagnostics folders) older than ``retention_s``, then the oldest
    until under ``cap_bytes``. Returns how many folders went."""
    now = now or time.time()
    entries = []
    for root in (store.root, store.diagnostics_root):
        if not root.is_dir():
            continue
        for d in root.iterdir():
            if not d.is_dir() or d.is_symlink():
                continue
            try:
                entries.append((d.stat().st_mtime, dir_size(d), d))
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
    store.budget.reset(total)
    return removed


async def cleanup_loop(store: RecordingStore, interval_s: float, retention_days: float, cap_mb: float) -> None:
    while True:
        try:
            n = await asyncio.to_thread(cleanup, store, retention_days * 86400, int(cap_mb * MB))
            if n:
                log.info("recording cleanup removed %d folder(s)", n)
        except Exception:
            log.exception("recording cleanup failed")
        await asyncio.sleep(interval_s)
