"""Streaming writers for long recordings: a mono WAV tape and the stereo duplex replay.

Both write to ``<name>.part`` while the session runs and are renamed to ``<name>`` when closed,
so a reader never sees a half-written file under the final name. Memory stays bounded: the
replay mixer holds only the audio that lies beyond the last committed point of the timeline.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf


class WavTape:
    """Mono 16-bit WAV written incrementally (``append``), published on ``close``."""

    def __init__(self, path: Path, rate: int, channels: int = 1) -> None:
        self.path = path
        self.rate = rate
        self.frames = 0
        self._part = path.with_name(path.name + ".part")
        self._f = sf.SoundFile(str(self._part), "w", samplerate=rate, channels=channels,
                               format="WAV", subtype="PCM_16")

    def append(self, pcm: np.ndarray) -> None:
        pcm = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0)
        self._f.write(pcm)
        self.frames += pcm.shape[0]

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            os.replace(self._part, self.path)


class StereoReplay:
    """User audio on the left, AI audio on the right, on one timeline (samples at ``rate``).

    ``place(channel, start, pcm)`` may be called in any order as long as ``start`` is not before
    ``committed``; ``commit(upto)`` writes everything before ``upto`` to the tape.
    """

    def __init__(self, path: Path, rate: int) -> None:
        self.rate = rate
        self._tape = WavTape(path, rate, channels=2)
        self.committed = 0                       # samples already on the tape
        self._buf = np.zeros((0, 2), dtype=np.float32)

    def place(self, channel: int, start: int, pcm: np.ndarray) -> int:
        """Mix ``pcm`` into ``channel`` at sample ``start`` (moved to ``committed`` if earlier)."""
        start = max(start, self.committed)
        off = start - self.committed
        end = off + len(pcm)
        if end > len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros((end - len(self._buf), 2), np.float32)])
        self._buf[off:end, channel] += np.asarray(pcm, dtype=np.float32)
        return start

    def commit(self, upto: int) -> None:
        n = min(max(0, upto - self.committed), len(self._buf))
        if n:
            self._tape.append(self._buf[:n])
            self._buf = self._buf[n:]
            self.committed += n

    @property
    def end(self) -> int:
        return self.committed + len(self._buf)

    def close(self) -> None:
        self.commit(self.end)
        self._tape.close()
