"""Messages between the coordinator and the workers (local IPC only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageTask:
    """One image file to process (all of its frames).

    Attributes
    ----------
    path
        Absolute path of the image file.
    root
        The directory being processed (for output naming).
    attempt
        How many times it was tried already.
    first_seen
        Monotonic time when it was first queued (for the retry timeout).
    """

    path: str
    root: str
    attempt: int = 0
    first_seen: float = 0.0


@dataclass
class ImageResult:
    """What processing one frame produced.

    Attributes
    ----------
    path, frame
        The image file and frame index (0 for single-frame files).
    outputs
        Files written (empty when skipped or failed).
    parameters
        Integral parameters per integrator, keyed ``R0``, ``P1``, ...
    image_time
        Acquisition time from the image header (Unix seconds), else the file's mtime.
    timings
        Seconds spent reading, integrating and writing.
    error
        Why it failed, or ``None``.
    retryable
        The failure may go away (file still being written).
    skipped
        Outputs existed already (resume / OverwriteFiles false).
    curves
        When requested, every integrator's curve as the original's graph objects:
        ``{"kind", "conf", "columnLabels", "array": [x, I, err, stddev]}`` (NumPy arrays).
    """

    path: str
    frame: int = 0
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    image_time: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = False
    skipped: bool = False
    processed_at: float = 0.0
    worker: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    curves: list[dict[str, Any]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
