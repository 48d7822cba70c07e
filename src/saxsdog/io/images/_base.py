"""What every format module shares: the :class:`Frame`, safe opening, size limits,
shape checks and header metadata parsing."""

from __future__ import annotations

import abc

import io
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from saxsdog.errors import (
    CorruptImageError,
    ImageError,
    ImageShapeError,
    IncompleteImageError,
)

PathLike = str | os.PathLike

Shape = tuple[int, int]

#: Header bytes every reader gets to sniff the format.
HEAD_BYTES = 8192
#: Room for headers around the pixels when bounding what a file may hold or decompress to.
HEADER_SLACK = 1 << 20
#: Without an expected shape, no single image may need more than this (a 16M-pixel
#: Eiger frame of 64-bit values is 128 MiB); larger declarations are refused unread.
MAX_IMAGE_BYTES = 1 << 30
#: Widest sample saxsdog reads (float64/int64); bounds the bytes of an expected shape.
MAX_ITEMSIZE = 8


@dataclass
class Frame:
    """One 2-D detector frame.

    Attributes
    ----------
    data
        The pixels, 2-D, C-contiguous, native byte order, dtype as stored.
    path
        The file the frame was read from.
    index
        Index of the frame inside a multi-frame file (0 for single-frame files).
    nframes
        Number of frames in that file.
    metadata
        Header values when known: ``"date"`` (ISO-8601 str), ``"timestamp"``
        (float, Unix epoch seconds), ``"exposure_time"`` (float, s),
        ``"wavelength"`` (float, Å), ``"detector"`` (str). Unknown keys are
        absent.  ``"header"`` (``dict[str, str]``, present when the header has
        fields) holds the header's raw fields as text, for the calibration's
        ``Normalization`` (``{"Header": "Flux"}``): Pilatus ``# Key value`` lines
        (TIFF, CBF), the EDF header keys, the CBF MIME keys, HDF5/NeXus scalar
        datasets (by name, e.g. ``count_time``, and by path) and attributes.
    """

    data: np.ndarray
    path: str
    index: int = 0
    nframes: int = 1
    metadata: dict = field(default_factory=dict)


class ReadBuffer:
    """One pixel array reused from frame to frame by a reader (a worker holds one).

    A reader that can read straight into memory (the uncompressed TIFF fast path) fills
    :meth:`array` instead of allocating a new 4 MB array per frame: no page faults on
    fresh memory, no allocator churn over tens of thousands of frames.  A frame read into
    it is only valid until the next frame is read with the same buffer: the caller must be
    done with ``Frame.data`` (or copy it) by then.

    With ``map_files`` (what a worker asks for) such a reader maps the file instead: no copy
    at all, the pixels are read once, by the integration, straight from the page cache.
    """

    def __init__(self, map_files: bool = False) -> None:
        self._array: np.ndarray | None = None
        #: Let readers map an uncompressed file's pixels instead of copying them
        #: (:func:`saxsdog.io.images.tiff.read_tiff_fast`): the frame is then a view of the
        #: file's pages in the page cache, valid as long as it is referenced.  The caveat:
        #: a file truncated by its writer while its frame is in use kills the process
        #: with SIGBUS (a worker pool replaces the worker and retries the image).
        self.map_files = map_files

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The buffer as a C-contiguous array of ``shape`` and ``dtype`` (made anew when they change)."""
        a = self._array
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self._array = np.empty(shape, dtype=dtype)
        return a


class ImageSource(Protocol):
    """An opened image file: its frames and their headers.

    Returned by :meth:`FormatReader.open`; used as a context manager.
    """

    path: str

    @property
    def nframes(self) -> int: ...

    def frame(self, index: int) -> Frame: ...

    def header(self, index: int = 0) -> dict: ...

    def close(self) -> None: ...

    def __enter__(self) -> ImageSource: ...

    def __exit__(self, *exc: object) -> None: ...


class SourceBase(abc.ABC):
    """Context-manager plumbing and frame iteration for :class:`ImageSource` classes
    (each format's source implements :meth:`frame`)."""

    path: str

    @property
    def nframes(self) -> int:  # pragma: no cover - overridden
        return 1

    @abc.abstractmethod
    def frame(self, index: int) -> Frame:
        """Frame ``index`` (from 0) with its header."""

    def frames(self) -> Iterator[Frame]:
        """Every frame in order."""
        for i in range(self.nframes):
            yield self.frame(i)

    def close(self) -> None:  # noqa: B027 - optional: most sources hold nothing open
        """Release the file (nothing to do by default)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- #
# Opening: regular files only
# --------------------------------------------------------------------------- #

_FILE_KINDS = (
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def file_kind(mode: int) -> str:
    """A readable name for the file type of ``st_mode`` (``"FIFO (named pipe)"``, ...)."""
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    if stat.S_ISDIR(mode):
        return "directory"
    return "regular file" if stat.S_ISREG(mode) else "special file"


def _not_regular(path: str, mode: int) -> ImageError:
    if stat.S_ISDIR(mode):
        return ImageError(path, "is a directory, not an image file")
    return ImageError(path, f"is a {file_kind(mode)}, not a regular file: it is not opened "
                            "(reading it could block forever)")


def open_regular(path: str) -> tuple[io.FileIO, int]:
    """Open ``path`` for reading if, and only if, it is a regular file.

    A FIFO, device or socket is refused before ``open`` (which would block on a FIFO
    without a writer); the file is opened with ``O_NONBLOCK`` and checked again with
    ``fstat``, so a regular file swapped for a FIFO in between cannot block either.

    Returns
    -------
    (file, size)
        An unbuffered binary file and its size in bytes.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(path, f"cannot open file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return io.FileIO(fd, "rb", closefd=True), st.st_size


# --------------------------------------------------------------------------- #
# Sizes and shapes
# --------------------------------------------------------------------------- #


def dims(shape: tuple[int, ...]) -> str:
    """``(1043, 981)`` -> ``"1043×981"``."""
    return "×".join(str(int(s)) for s in shape)


def byte_budget(expected_shape: Shape | None, itemsize: int = MAX_ITEMSIZE) -> int:
    """Most bytes an image may need: the expected frame at ``itemsize`` plus header slack,
    or :data:`MAX_IMAGE_BYTES` without an expected shape."""
    if expected_shape is None:
        return MAX_IMAGE_BYTES
    return int(expected_shape[0]) * int(expected_shape[1]) * itemsize + HEADER_SLACK


def check_declared(path: str, declared: tuple[int, ...], expected: Shape | None,
                   itemsize: int | None = None, what: str = "header declares") -> None:
    """Refuse, before reading, an image whose header declares the wrong or a huge size.

    Raises
    ------
    ImageShapeError
        ``declared`` (rows, columns) differs from ``expected``.
    CorruptImageError
        Without ``expected``: the declared image needs more than :data:`MAX_IMAGE_BYTES`.
    """
    if expected is not None and len(declared) == 2:
        check_shape(path, declared, expected, what)
    if itemsize is not None and declared:
        nbytes = int(itemsize)
        for d in declared:
            nbytes *= int(d)
        if nbytes > MAX_IMAGE_BYTES:
            raise CorruptImageError(
                path, f"{what} a {dims(declared)} image of {nbytes / 2**30:.1f} GiB, more than "
                      f"the {MAX_IMAGE_BYTES / 2**30:.0f} GiB any image may need")


def check_shape(path: str, shape: tuple[int, ...], expected: Shape | None,
                what: str = "it is") -> None:
    """Check a frame is 2-D and, when given, has the expected (rows, columns)."""
    if len(shape) != 2:
        raise CorruptImageError(path, f"image is not 2-D: its data has shape {tuple(shape)}")
    if expected is not None and (int(shape[0]), int(shape[1])) != (
        int(expected[0]), int(expected[1])
    ):
        raise ImageShapeError(path, f"not a {dims(expected)} image ({what} {dims(shape)}, "
                                    f"rows×columns)")


def check_frame_index(path: str, frame: int, nframes: int) -> None:
    if not (0 <= frame < nframes):
        raise ImageError(
            path, f"frame index {frame} is out of range: the file has {nframes} frame(s)"
        )


def native(a: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order."""
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def with_errors(path: str, fn):
    """Run *fn*, converting stray library exceptions into saxsdog errors."""
    try:
        return fn()
    except ImageError:
        raise
    except MemoryError:
        raise
    except EOFError as exc:
        raise IncompleteImageError(
            path, f"file ended before the image was complete ({exc})"
        ) from exc
    except Exception as exc:
        raise CorruptImageError(
            path, f"cannot be read as an image: {type(exc).__name__}: {exc}"
        ) from exc


def read_exactly(f, offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset`` of an unbuffered file (fewer only at its end)."""
    f.seek(offset)
    parts = []
    got = 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


# --------------------------------------------------------------------------- #
# Metadata parsing
# --------------------------------------------------------------------------- #

NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_RE_EXPOSURE = re.compile(r"Exposure_time[:=]?\s+" + NUM)
_RE_WAVELENGTH = re.compile(r"Wavelength[:=]?\s+" + NUM + r"\s*([A-Za-zÅ]*)")
_RE_DETECTOR = re.compile(r"^#\s*Detector:\s*(.+?)\s*$", re.MULTILINE)
_RE_PILATUS_DATE = re.compile(
    r"^#\s*(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?"
    r"|\d{4}/[A-Za-z]{3}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)\s*$",
    re.MULTILINE,
)

_DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y/%b/%d %H:%M:%S.%f",
    "%Y/%b/%d %H:%M:%S",
    "%Y:%m:%d %H:%M:%S",  # TIFF DateTime tag
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%a %b %d %H:%M:%S %Y",  # ctime(), ESRF EDF "Date"
    "%d-%b-%Y %H:%M:%S",
    "%d-%b-%Y %H:%M:%S.%f",
)

_RE_NUMERIC_DATE = re.compile(
    r"(\d{4})[-:/](\d{2})[-:/](\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6})\d*)?"
)


def parse_date(text: str) -> datetime | None:
    """Parse a detector date string; naive results are local time."""
    s = " ".join(str(text).strip().split())
    if not s:
        return None
    m = _RE_NUMERIC_DATE.fullmatch(s)
    if m:  # fast path for the common numeric formats (Pilatus, TIFF DateTime)
        try:
            y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
            us = int((m.group(7) or "0").ljust(6, "0"))
            return datetime(y, mo, d, h, mi, sec, us)
        except ValueError:
            return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def set_date(meta: dict, dt: datetime | None) -> None:
    if dt is None:
        return
    meta["date"] = dt.isoformat()
    try:
        meta["timestamp"] = dt.timestamp()  # naive -> local time (see the package doc)
    except (OverflowError, OSError, ValueError):
        pass


def wavelength_to_angstrom(value: float, unit: str) -> float | None:
    u = unit.strip().lower()
    if u in ("a", "å", "angstrom", "angstroms", "ang"):
        return value
    if u in ("nm", "nanometer", "nanometre"):
        return value * 10.0
    if u in ("m", "meter", "metre", "meters", "metres"):
        return value * 1e10
    if u == "":
        # ESRF EDF convention stores metres (e.g. 1e-10); otherwise assume Å.
        return value * 1e10 if 0 < value < 1e-5 else value
    return None


def parse_pilatus_text(text: str) -> dict:
    """Metadata from Pilatus ``# key value`` header lines (TIFF/CBF)."""
    meta: dict[str, Any] = {}
    m = _RE_DETECTOR.search(text)
    if m:
        meta["detector"] = m.group(1)
    m = _RE_PILATUS_DATE.search(text)
    if m:
        set_date(meta, parse_date(m.group(1)))
    m = _RE_EXPOSURE.search(text)
    if m:
        meta["exposure_time"] = float(m.group(1))
    m = _RE_WAVELENGTH.search(text)
    if m:
        wl = wavelength_to_angstrom(float(m.group(1)), m.group(2))
        if wl is not None:
            meta["wavelength"] = wl
    return meta


def _first_number(text: Any) -> tuple[float, str] | None:
    m = re.match(r"\s*" + NUM + r"\s*([A-Za-zÅ]*)", str(text))
    if not m:
        return None
    return float(m.group(1)), m.group(2)


def metadata_from_keys(header: dict) -> dict:
    """Metadata from a key/value header (EDF, CBF)."""
    lower = {str(k).lower(): v for k, v in header.items()}
    text = "\n".join(str(v) for v in header.values() if isinstance(v, str) and "#" in v)
    meta = parse_pilatus_text(text) if text else {}
    for key in ("exposure_time", "exposuretime", "count_time", "acq_expo_time", "exposure"):
        if "exposure_time" in meta:
            break
        if key in lower:
            n = _first_number(lower[key])
            if n is not None:
                meta["exposure_time"] = n[0]
    for key in ("wavelength",):
        if "wavelength" not in meta and key in lower:
            n = _first_number(lower[key])
            if n is not None:
                wl = wavelength_to_angstrom(*n)
                if wl is not None:
                    meta["wavelength"] = wl
    for key in ("date", "datetime", "start_time", "time_of_day"):
        if "date" not in meta and key in lower:
            set_date(meta, parse_date(lower[key]))
    for key in ("detector", "detectormodel", "detector_model", "model"):
        if "detector" not in meta and key in lower and str(lower[key]).strip():
            meta["detector"] = str(lower[key]).strip()
    fields = header_fields_from_keys(header)
    if fields:
        meta["header"] = fields
    return meta


# --------------------------------------------------------------------------- #
# Raw header fields (metadata["header"])
# --------------------------------------------------------------------------- #

#: A Pilatus header line: ``# Key value``, ``# Key: value`` or ``# Key = value``.
_RE_HEADER_LINE = re.compile(r"^#\s*([A-Za-z][\w.\-/]*)\s*[:=]?\s*(.*?)\s*$")
#: Bound on the fields kept of one header (a malformed file cannot fill memory).
MAX_HEADER_FIELDS = 4096
#: Longest field value kept (longer values are cut).
MAX_HEADER_VALUE = 4096


def pilatus_header_fields(text: str) -> dict[str, str]:
    """The ``# Key value`` lines of a Pilatus header as ``{key: value}`` (text).

    ``# Exposure_time 10.0000000 s`` gives ``{"Exposure_time": "10.0000000 s"}``; ``:``
    or ``=`` after the key is dropped (``# Tau = 0 s`` → ``"Tau": "0 s"``).  Lines
    without a key (the date line ``# 2013-06-06T17:57:26.675``) are skipped; the first
    line of a repeated key wins.
    """
    fields: dict[str, str] = {}
    known = _HEADER_LINES
    for line in text.splitlines():
        field = known.get(line, _UNSEEN)
        if field is _UNSEEN:
            m = _RE_HEADER_LINE.match(line.strip())
            field = (m.group(1), m.group(2)[:MAX_HEADER_VALUE]) if m else None
            if len(line) <= _KNOWN_LINE_LENGTH:
                if len(known) >= _KNOWN_LINES:
                    known.clear()
                known[line] = field
        if field is not None and field[0] not in fields:
            fields[field[0]] = field[1]
            if len(fields) >= MAX_HEADER_FIELDS:
                break
    return fields


#: Header lines seen before and their ``(key, value)`` (``None``: not a field): a series'
#: frames repeat nearly every line of their headers (only the date and a counter change), so
#: a worker parses each line once.  Bounded: cleared when full.
_HEADER_LINES: dict[str, tuple[str, str] | None] = {}
_KNOWN_LINES = 4096
_KNOWN_LINE_LENGTH = 512
_UNSEEN: Any = object()


def header_text(value: Any) -> str | None:
    """A header value as text (``None`` for values that are not scalars)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (str, int, float)):
        text = value if isinstance(value, str) else repr(value)
        return text[:MAX_HEADER_VALUE]
    return None


def header_fields_from_keys(header: dict) -> dict[str, str]:
    """Raw fields of a key/value header (EDF, CBF MIME, a stream's configuration).

    Scalar values are kept as text; a value holding Pilatus ``# Key value`` lines (a
    CBF's ``_array_data.header_contents``) contributes those lines' fields too (the
    header's own keys win).
    """
    fields: dict[str, str] = {}
    for key, value in header.items():
        text = header_text(value)
        if text is None:
            continue
        if isinstance(value, str) and "\n" in value and "#" in value:
            for k, v in pilatus_header_fields(value).items():
                fields.setdefault(k, v)
            continue
        fields[str(key)] = text
        if len(fields) >= MAX_HEADER_FIELDS:
            break
    return fields

