"""Session recording: ``<data_dir>/sessions/<recording_session_id>/`` (layout in docs/worker.md).

Why a writer thread: file I/O must never stall the event loop that serves ``stop`` and
``/health``. Every write is a closure put on this recorder's queue and run by its own thread;
files appear atomically (``tmp`` then ``os.replace``; streamed WAVs as ``.part`` until closed).

Bounded: bytes of audio and images are counted when a write is queued; past
``max_recording_bytes`` media are skipped and ``meta.json`` says ``audio_truncated: true``.
The id is ``secrets.token_urlsafe(16)`` (128 bits); a client-chosen session id is only a label.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from ..audio import IN_RATE, OUT_RATE, resample, to_wav_bytes
from .replay import StereoReplay, WavTape

log = logging.getLogger("omniserve.worker.recorder")

REPLAY_RATE = OUT_RATE
TIMELINE_FLUSH_EVERY = 10   # duplex units between rewrites of recording.json


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1, default=str).encode()


def image_ext(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


class Recorder:
    """One session's folder. Call from the event loop; the writing happens on ``_thread``."""

    def __init__(self, root: Path, kind: str, label: Optional[str], *, worker_index: int,
                 backend: str, max_bytes: int) -> None:
        self.id = secrets.token_urlsafe(16)
        self.dir = root / "sessions" / self.id
        self.max_bytes = max_bytes
        self.bytes = 0
        self.truncated = False
        self.timeline: list[dict] = []
        self.files: list[str] = []
        self.t0 = time.time()
        self._mono0 = time.monotonic()
        self.meta: dict[str, Any] = {
            "recording_session_id": self.id, "label": label, "type": kind,
            "worker_index": worker_index, "backend": backend, "status": "recording",
            "started_at": self.t0, "started_at_iso": datetime.fromtimestamp(self.t0, timezone.utc).isoformat(),
            "ended_at": None, "duration_s": None, "end_reason": None,
            "audio_truncated": False, "recorded_bytes": 0, "max_recording_bytes": max_bytes,
        }
        self._q: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue()
        self._done = threading.Event()
        self._duplex: Optional[_DuplexTapes] = None
        self.dir.mkdir(parents=True, exist_ok=False)
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.id[:6]}", daemon=True)
        self._thread.start()
        self._put(self._write_meta_now(dict(self.meta)))

    # ------------------------------------------------------------------ plumbing
    def now(self) -> float:
        """Seconds since the session started (the timeline clock)."""
        return time.monotonic() - self._mono0

    def _put(self, job: Callable[[], None]) -> None:
        self._q.put(job)

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                break
            try:
                job()
            except Exception as e:  # a full disk must not take the worker down
                log.error("recording %s: write failed: %s", self.id, e)
        self._done.set()

    def _reserve(self, n: int) -> bool:
        if self.truncated or self.bytes + n > self.max_bytes:
            self.truncated = True
            return False
        self.bytes += n
        return True

    def _write_meta_now(self, meta: dict) -> Callable[[], None]:
        return lambda: atomic_write(self.dir / "meta.json", _json(meta))

    # ------------------------------------------------------------------ public
    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)

    def write_wav(self, name: str, pcm: Optional[np.ndarray], rate: int) -> Optional[str]:
        """Queue ``name`` (a WAV of ``pcm``); returns the name, or None when empty or over the cap."""
        if pcm is None or len(pcm) == 0 or not self._reserve(2 * len(pcm) + 44):
            return None
        self.files.append(name)
        data = np.array(pcm, dtype=np.float32, copy=True)
        self._put(lambda: atomic_write(self.dir / name, to_wav_bytes(data, rate)))
        return name

    def write_blob(self, name: str, data: bytes) -> Optional[str]:
        if not data or not self._reserve(len(data)):
            return None
        self.files.append(name)
        if "/" in name:
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
        self._put(lambda: atomic_write(self.dir / name, data))
        return name

    def add_event(self, entry: dict) -> None:
        self.timeline.append(entry)

    def flush_timeline(self) -> None:
        doc = {"version": 1, "recording_session_id": self.id, "type": self.meta["type"],
               "sample_rates": {"user": IN_RATE, "ai": OUT_RATE, "replay": REPLAY_RATE},
               "timeline": list(self.timeline)}
        self._put(lambda: atomic_write(self.dir / "recording.json", _json(doc)))

    # --------------------------------------------------------------- duplex tapes
    def duplex_unit(self, user: np.ndarray, t_received: float, ai: Optional[np.ndarray],
                    t_sent: float) -> dict:
        """Add one unit's audio to user.wav, ai.wav and replay.wav; returns offsets for the timeline."""
        if self._duplex is None:
            self._duplex = _DuplexTapes(self.dir)
            self.files += ["user.wav", "ai.wav", "replay.wav"]
        n_ai = 0 if ai is None else len(ai)
        # user 16 kHz + AI 24 kHz + replay (2 ch, 24 kHz) of both
        cost = 2 * len(user) + 2 * n_ai + 4 * (len(user) * 3 // 2 + n_ai)
        if not self._reserve(cost):
            return {"audio_recorded": False}
        return self._duplex.add(self, user, t_received, ai, t_sent)

    # ------------------------------------------------------------------- finish
    def finish(self, end_reason: str, error: Optional[str] = None, **meta: Any) -> threading.Event:
        """Write the last timeline and meta, close the tapes, stop the thread. Returns 'done'."""
        self.flush_timeline()
        if self._duplex is not None:
            self._put(self._duplex.close)
        ended = time.time()
        self.meta.update(meta)
        self.meta.update({"status": "complete", "ended_at": ended, "duration_s": round(ended - self.t0, 3),
                          "end_reason": end_reason, "audio_truncated": self.truncated,
                          "recorded_bytes": self.bytes, "files": ["meta.json", "recording.json"] + self.files})
        if error:
            self.meta["error"] = error
        self._put(self._write_meta_now(dict(self.meta)))
        self._q.put(None)          # the writer thread ends after the jobs queued before it
        return self._done


class _DuplexTapes:
    """user.wav (16 kHz), ai.wav (24 kHz, AI audio back to back) and replay.wav (stereo 24 kHz)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.user_n = 0      # samples queued to user.wav
        self.ai_n = 0        # samples queued to ai.wav
        self.user_cur = 0    # replay cursor of the user channel
        self.ai_cur = 0      # replay cursor of the AI channel
        self._tapes: Optional[tuple[WavTape, WavTape, StereoReplay]] = None

    def _open(self) -> tuple[WavTape, WavTape, StereoReplay]:
        if self._tapes is None:
            self._tapes = (WavTape(self.folder / "user.wav", IN_RATE), WavTape(self.folder / "ai.wav", OUT_RATE),
                           StereoReplay(self.folder / "replay.wav", REPLAY_RATE))
        return self._tapes

    def add(self, rec: Recorder, user: np.ndarray, t_recv: float, ai: Optional[np.ndarray], t_sent: float) -> dict:
        user = np.array(user, dtype=np.float32, copy=True)
        ai = None if ai is None or len(ai) == 0 else np.array(ai, dtype=np.float32, copy=True)
        n24 = -(-len(user) * REPLAY_RATE // IN_RATE)  # resample_poly's output length (ceil)
        u_start = max(int(round((t_recv - len(user) / IN_RATE) * REPLAY_RATE)), self.user_cur)
        self.user_cur = u_start + n24
        out = {"user_offset": self.user_n, "user_samples": len(user), "replay_user_start": u_start,
               "replay_user_start_s": u_start / REPLAY_RATE, "ai_offset": self.ai_n, "ai_samples": 0,
               "replay_ai_start": None, "replay_ai_start_s": None, "audio_recorded": True}
        self.user_n += len(user)
        a_start = 0
        if ai is not None:
            a_start = max(int(round(t_sent * REPLAY_RATE)), self.ai_cur)
            self.ai_cur = a_start + len(ai)
            out.update(ai_samples=len(ai), replay_ai_start=a_start, replay_ai_start_s=a_start / REPLAY_RATE)
            self.ai_n += len(ai)
        # nothing later can land before both the user cursor and "now"
        commit = min(self.user_cur, int(rec.now() * REPLAY_RATE))

        def job() -> None:
            tu, ta, rp = self._open()
            tu.append(user)
            rp.place(0, u_start, resample(user, IN_RATE, REPLAY_RATE)[:n24])
            if ai is not None:
                ta.append(ai)
                rp.place(1, a_start, ai)
            rp.commit(commit)
        rec._put(job)
        return out

    def close(self) -> None:
        for t in self._open():  # a session with no recorded unit still leaves valid (empty) files
            t.close()


class NullRecorder:
    """Recording switched off (``worker.record_sessions: false``): same calls, nothing written."""

    id: Optional[str] = None
    truncated = False

    def __init__(self) -> None:
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._mono0

    def update_meta(self, **fields: Any) -> None: ...
    def write_wav(self, name: str, pcm: Any, rate: int) -> Optional[str]: return None
    def write_blob(self, name: str, data: bytes) -> Optional[str]: return None
    def add_event(self, entry: dict) -> None: ...
    def flush_timeline(self) -> None: ...
    def duplex_unit(self, user: np.ndarray, t_received: float, ai: Optional[np.ndarray],
                    t_sent: float) -> dict: return {"audio_recorded": False}

    def finish(self, end_reason: str, error: Optional[str] = None, **meta: Any) -> threading.Event:
        done = threading.Event()
        done.set()
        return done


AnyRecorder = Union[Recorder, NullRecorder]


def open_recorder(enabled: bool, data_dir: str, kind: str, label: Optional[str], *, worker_index: int,
                  backend: str, max_bytes: int) -> AnyRecorder:
    """A recorder for a new session, or a no-op one when recording is off or the disk refuses."""
    if not enabled:
        return NullRecorder()
    try:
        return Recorder(Path(data_dir), kind, label, worker_index=worker_index, backend=backend, max_bytes=max_bytes)
    except OSError as e:
        log.error("cannot create a recording folder under %s: %s", data_dir, e)
        return NullRecorder()
