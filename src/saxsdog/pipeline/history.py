"""History of processed images and running statistics."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

from .state import HashedMap
from .tasks import ImageResult

#: Failing images whose reasons a :class:`History` lists (the latest); the rest are counted.
MAX_FAILURES_LISTED = 10_000

_STAGES = ("read", "integrate", "write")


def dummy_pixels(result: ImageResult) -> int | None:
    """The frame's dummy-pixel count: pixels the first integrator would use that were excluded
    (negative or ``DummyValue``) in this frame; ``None`` when unknown (a failed or skipped
    frame, an integrator without parameters)."""
    params = next(iter(result.parameters.values()), None) if result.parameters else None
    value = params.get("dummy_pixels") if isinstance(params, dict) else None
    return int(value) if value is not None else None


class History:
    """Per-image records and queue statistics (thread-safe).

    Each record: path, frame, outputs, parameters, image_time, processed_at, timings,
    error, skipped and dummy_pixels (:func:`dummy_pixels`); the latest ``max_records`` are
    kept (a bounded memory over a long run).  Statistics: frames/s over the last ``window``
    seconds and overall, images processed, failures, per-stage mean timings.

    Failures: :attr:`failed` counts every image failing now (a later success of the frame
    that failed clears it); :attr:`failures` lists the reasons of the latest
    ``max_failures`` of them (path -> error, oldest first), so that a run in which every
    image fails keeps a bounded memory too.  The ones no longer listed
    (:attr:`failures_not_listed`) are remembered as 16-byte hashes, enough to count their
    later success (a server's ledger keeps every reason).
    """

    def __init__(self, window: float = 5.0, max_records: int = 1_000_000,
                 max_failures: int = MAX_FAILURES_LISTED):
        self._lock = threading.Lock()
        self.records: deque[dict[str, Any]] = deque(maxlen=max(0, int(max_records)))
        #: The latest failing images' reasons (at most ``max_failures``, oldest first).
        self.failures: dict[str, str] = {}
        #: The frame each entry of ``failures`` is about: only that frame's later success
        #: (a retry) clears it, not another frame of the same file.
        self._failed_frame: dict[str, int] = {}
        #: Failing images no longer listed: hash(path) -> the failed frame (-1: it succeeded since).
        self._failed_unlisted = HashedMap()
        self.max_failures = max(1, int(max_failures))
        #: Images failing now, listed in :attr:`failures` or not.
        self.failed = 0
        self.window = window
        self._recent: deque[float] = deque()
        self._stage_sum = dict.fromkeys(_STAGES, 0.0)
        self._stage_n = 0
        self.processed = 0
        self.skipped = 0
        self.started = time.time()
        self.first_result: float | None = None
        self.last_result: float | None = None
        self.latest: ImageResult | None = None
        self.latest_curves: ImageResult | None = None

    def add(self, result: ImageResult) -> None:
        """Record one frame's result."""
        now = time.time()
        with self._lock:
            if result.error is not None:
                self._add_failure(result.path, result.frame, result.error)
            elif result.skipped:
                self.skipped += 1
            else:
                self.processed += 1
                self._clear_failure(result.path, result.frame)
                self._recent.append(now)
                self._trim_recent(now)  # bounded by the rate, even if nobody asks for it
                self.first_result = self.first_result or now
                self.last_result = now
                for s in _STAGES:
                    self._stage_sum[s] += result.timings.get(s, 0.0)
                self._stage_n += 1
                self.latest = result
                if result.curves and result.live:
                    self.latest_curves = result
            if self.records.maxlen:
                self.records.append({
                    "path": result.path, "frame": result.frame, "outputs": result.outputs,
                    "parameters": result.parameters, "image_time": result.image_time,
                    "processed_at": result.processed_at, "timings": result.timings,
                    "error": result.error, "skipped": result.skipped, "alarms": result.alarms,
                })
                self.records[-1]["dummy_pixels"] = dummy_pixels(result)

    def _trim_recent(self, now: float) -> None:
        recent, oldest = self._recent, now - self.window
        while recent and recent[0] < oldest:
            recent.popleft()

    def _add_failure(self, path: str, frame: int, error: str) -> None:
        unlisted = self._failed_unlisted.get(path) if len(self._failed_unlisted) else None
        if path in self.failures:
            del self.failures[path]  # listed again as the latest
        elif unlisted is not None and unlisted >= 0:
            self._failed_unlisted[path] = -1  # counted already: listed again
        else:
            self.failed += 1
        self.failures[path] = error
        self._failed_frame[path] = frame
        while len(self.failures) > self.max_failures:
            oldest = next(iter(self.failures))
            del self.failures[oldest]
            self._failed_unlisted[oldest] = self._failed_frame.pop(oldest)

    def _clear_failure(self, path: str, frame: int) -> None:
        """The frame ``frame`` of ``path`` succeeded: if it is the one that failed, it fails no more."""
        if path in self.failures:
            if self._failed_frame[path] == frame:
                del self.failures[path]
                del self._failed_frame[path]
                self.failed -= 1
        elif len(self._failed_unlisted) and self._failed_unlisted.get(path, -1) == frame:
            self._failed_unlisted[path] = -1
            self.failed -= 1

    @property
    def failures_not_listed(self) -> int:
        """Images failing now whose reason is no longer in :attr:`failures` (beyond ``max_failures``)."""
        return self.failed - len(self.failures)

    @property
    def max_records(self) -> int:
        """How many of the latest records are kept."""
        return self.records.maxlen or 0

    @max_records.setter
    def max_records(self, n: int) -> None:
        with self._lock:
            self.records = deque(self.records, maxlen=max(0, int(n)))

    def frames_per_second(self) -> float:
        """Rate over the last ``window`` seconds."""
        now = time.time()
        with self._lock:
            self._trim_recent(now)
            if not self._recent:
                return 0.0
            span = max(now - max(self._recent[0], self.started), 1e-3)
            return len(self._recent) / min(span, self.window)

    def overall_rate(self) -> float:
        """Frames per second from the first to the last result."""
        with self._lock:
            if self.processed < 2 or self.first_result is None or self.last_result is None:
                return 0.0
            return (self.processed - 1) / max(self.last_result - self.first_result, 1e-9)

    def stage_means(self) -> dict[str, float]:
        """Mean seconds per frame in each stage."""
        with self._lock:
            n = max(self._stage_n, 1)
            return {s: self._stage_sum[s] / n for s in _STAGES}

    def snapshot(self, since: int = 0) -> list[dict[str, Any]]:
        """Records from index ``since`` on."""
        with self._lock:
            return list(itertools.islice(self.records, since, None))
