"""What a detector stream says, whatever its version: series header, frame, series end.

Stream v1 (:mod:`saxsdog.streams.dectris`) and stream v2 (:mod:`saxsdog.streams.stream2`)
both parse their messages into these types, so the receiver and the source need not know
which version a detector speaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamFormatError", "SeriesHeader", "StreamFrame", "SeriesEnd", "frame_name"]


class StreamFormatError(ValueError):
    """A message does not follow the stream format (it is reported and skipped)."""


@dataclass
class SeriesHeader:
    """``dheader-1.0``: a series starts."""

    series: int
    header_detail: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamFrame:
    """``dimage-1.0``: one frame, still encoded.

    Attributes
    ----------
    series, frame
        Series id and frame number (from 0).
    shape
        ``(rows, columns)`` in NumPy order (the header's ``[x, y]`` reversed).
    dtype, encoding
        Pixel type and encoding of ``data``.
    data
        The data blob.
    hash
        The blob's MD5 as sent (may be empty).
    times
        ``start_time``, ``stop_time``, ``real_time`` in ns, when sent.
    appendix
        The ``image_appendix`` text, when sent.
    """

    series: int
    frame: int
    shape: tuple[int, int]
    dtype: str
    encoding: str
    data: bytes | memoryview
    hash: str = ""
    times: dict[str, int] = field(default_factory=dict)
    appendix: str | None = None

    @property
    def name(self) -> str:
        """``<series>_<frame:06d>``: the frame's name in outputs and run files."""
        return frame_name(self.series, self.frame)


@dataclass
class SeriesEnd:
    """``dseries_end-1.0``: the series is complete."""

    series: int


def frame_name(series: int, frame: int) -> str:
    """The name of a streamed frame: ``<series>_<frame:06d>``."""
    return f"{series}_{frame:06d}"
