"""History of processed images and running statistics."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

from .tasks import ImageResult

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
    """

    def __init__(self, window: float = 5.0, max_records: int = 1_000_000):
        self._lock = threading.Lock()
        self.records: deque[dict[str, Any]] = deque(maxlen=max(0, int(max_records)))
        self.failures: dict[str, str] = {}
        #: The frame each entry of ``failures`` is about: only that frame's later success
        #: (a retry) clears it, not another frame of the same file.
        self._failed_frame: dict[str, int] = {}
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
                self.failures[result.path] = result.error
                self._failed_frame[result.path] = result.frame
            elif result.skipped:
                self.skipped += 1
            else:
                self.processed += 1
                if self._failed_frame.get(result.path, result.frame) == result.frame:
                    self.failures.pop(result.path, None)
                    self._failed_frame.pop(result.path, None)
                self._recent.append(now)
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
            while self._recent and self._recent[0] < now - self.window:
                self._recent.popleft()
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
