"""The session's background thread (live captions, camera notes) and the meter of the work the
session does off the unit call: ASR, its own LLM prefills, vision. A reply's LLM and TTS threads
keep their own meter (``SpokenReply.work``)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from ..reply import WorkMeter


class Background:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="duplex-bg")
        self.meter = WorkMeter()        # stages "asr", "llm", "vision"
        self._closed = False

    def submit(self, job: Callable[[], None]) -> Future:
        return self._pool.submit(job)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job submitted so far has run (one worker: a no-op queued last)."""
        if self._closed:
            return True
        try:
            self._pool.submit(lambda: None).result(timeout)
        except FutureTimeout:
            return False
        except RuntimeError:            # shut down meanwhile
            return True
        return True

    def shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
