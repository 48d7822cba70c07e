"""Messages between the coordinator and the workers (local IPC only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArenaRef:
    """Where a frame's bytes wait in the coordinator's shared memory (see ``PayloadArena``)."""

    slot: int
    length: int


@dataclass(frozen=True)
class FramePayload:
    """One detector frame held in memory, still compressed (e.g. received from a stream).

    The coordinator only forwards these bytes; the worker decodes them (see
    :func:`saxsdog.io.codecs.decode_frame`), so decompression runs in parallel.

    Attributes
    ----------
    data
        The encoded pixels (the stream's data blob): bytes, a memoryview of the received
        message (coordinator side only), or an :class:`ArenaRef` into shared memory (on
        the way to a forked worker).
    dtype
        NumPy name of the pixel type (``"uint32"``, ``"uint16"``, ...).
    shape
        ``(rows, columns)`` in NumPy order (a Dectris header's ``[x, y]`` reversed).
    encoding
        ``"bs32-lz4<"`` (bitshuffle + LZ4), ``"lz4<"`` (plain LZ4 block), ``"<"`` or ``""``
        (raw little-endian); see :func:`saxsdog.io.codecs.decode_frame`.
    metadata
        Scalar header values of the frame (``timestamp``, ``series``, ``frame``, ...).
    """

    data: bytes | memoryview | ArenaRef
    dtype: str
    shape: tuple[int, int]
    encoding: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageTask:
    """One image to process: a file (all of its frames), or one in-memory frame.

    Attributes
    ----------
    path
        Absolute path of the image file; for an in-memory frame a virtual path inside
        ``root`` whose name is the frame's name (``<root>/<series>_<frame:06d>``), which
        also names its outputs and de-duplicates it.
    root
        The directory being processed (for output naming).
    attempt
        How many times it was tried already.
    first_seen
        Monotonic time when it was first queued (for the retry timeout).
    payload
        The frame itself when it does not come from a file (detector streams).
    skip_frames
        Frame indices whose results exist already (resuming into NXcanSAS run files):
        they are reported as skipped without being integrated.
    run
        The NXcanSAS run the frame belongs to, when not the queue's own (each series of a
        detector stream is a run: ``series_<id>``).
    output_stem
        The name its outputs get instead of the image's own stem, when another image of
        the queue writes that name already (``x~2``: see :func:`~saxsdog.pipeline.naming.output_base`).
    """

    path: str
    root: str
    attempt: int = 0
    first_seen: float = 0.0
    payload: FramePayload | None = None
    skip_frames: frozenset[int] = frozenset()
    run: str | None = None
    output_stem: str | None = None


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
        ``{"kind", "conf", "columnLabels", "array": [x, I, err(, stddev)]}`` (NumPy arrays).
    live
        The curves are a live-plot sample (they include the standard deviation).
        Always present for frames integrated for NXcanSAS run files.
    name
        The frame's name in run files and plots: the image path relative to the queue's
        directory (``sub/img_00001.tif``), ``#<index>`` appended for frames of multi-frame
        files, or ``<series>_<frame:06d>`` for streamed frames.
    alarms
        The classifier alarms the frame raised (``"Guinier.Rg=7.1 above 5"``), set by the
        coordinator (:mod:`saxsdog.pipeline.classify_sink`).
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
    live: bool = False
    name: str = ""
    alarms: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None
