"""EDF (ESRF data format), plain or ``.gz`` / ``.bz2``: fabio, behind size checks.

A plain (uncompressed) EDF of exactly one frame in one simple header block is read without
fabio: its header parsed as fabio parses it, its pixels with one ``preadv`` (into the
caller's reused buffer when given), in the dtype of fabio's own table.

The first header block is parsed here: ``Dim_1`` × ``Dim_2`` (columns × rows), the
data type and ``Size`` are checked against the expected image before fabio reads
anything, and a compressed file is expanded (with a cap of what the image can need)
into memory for fabio, so a small file declaring gigabytes is refused at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from saxsdog.errors import CorruptImageError, ImageError, IncompleteImageError

from ._base import (
    HEADER_SLACK,
    MAX_IMAGE_BYTES,
    Frame,
    ReadBuffer,
    Shape,
    SourceBase,
    byte_budget,
    check_declared,
    check_frame_index,
    check_shape,
    dims,
    metadata_from_keys,
    native,
    read_exactly,
    with_errors,
)
from ._compressed import BoundedStream, compression_of

_RE_KEY = re.compile(rb"^\s*([A-Za-z0-9_.-]+)\s*=\s*(.*?)\s*;?\s*$", re.MULTILINE)
_RE_CLOSE = re.compile(rb"}\r?\n")
_ITEMSIZES = {
    "signedbyte": 1, "unsignedbyte": 1, "unsignedchar": 1, "signedchar": 1,
    "signedshort": 2, "unsignedshort": 2, "signedinteger": 4, "unsignedinteger": 4,
    "signedlong": 4, "unsignedlong": 4, "signed64": 8, "unsigned64": 8,
    "floatvalue": 4, "float": 4, "realvalue": 4, "doublevalue": 8, "double": 8,
}


def looks_like_edf(head: bytes) -> bool:
    """Magic test: an EDF file starts with a ``{`` header block."""
    return head.lstrip()[:1] == b"{"


def first_header(path: str, head: bytes, complete: bool, lower: bool = True) -> dict[str, str]:
    """Key/value pairs of the first ``{ ... }`` block of ``head`` (keys lower-cased
    unless ``lower`` is false).

    ``complete`` says ``head`` is the whole file: a missing ``}`` is then truncation.
    """
    start = head.find(b"{")
    m = _RE_CLOSE.search(head, start + 1) if start >= 0 else None
    end = m.start() if m else -1
    if start < 0 or end < 0:
        if not complete and len(head) >= HEADER_SLACK:
            raise CorruptImageError(path, f"EDF header does not end within {HEADER_SLACK} bytes")
        raise IncompleteImageError(path, "EDF header is not complete yet (no closing '}' line)")
    pairs = {k.decode("ascii", "replace"): v.decode("utf-8", "replace")
             for k, v in _RE_KEY.findall(head[start + 1:end])}
    return {k.lower(): v for k, v in pairs.items()} if lower else pairs


_WHITESPACE = b" \t\n\r\x0b\x0c\x00"  # what fabio strips around keys and values (NUL too)


def fabio_header(block: bytes) -> dict[str, str] | None:
    """The header dict fabio makes of one ``{ ... }`` block's inside (``key = value ;`` split
    at ``;`` then at the first ``=``, stripped), or ``None`` when fabio would drop or warn
    about something (a non-ASCII or duplicate key): then only fabio reads the file."""
    header: dict[str, str] = {}
    for line in block.split(b";"):
        if b"=" not in line:
            continue
        key, val = line.split(b"=", 1)
        try:
            k, v = key.strip(_WHITESPACE).decode("ascii"), val.strip(_WHITESPACE).decode("ascii")
        except UnicodeDecodeError:
            return None
        if k in header:
            return None
        header[k] = v
    return header


@dataclass
class _FastEdf:
    """Where the pixels of a plain single-frame EDF are: read straight into an array."""

    offset: int
    shape: tuple[int, int]
    dtype: np.dtype
    header: dict[str, str]


def plain_edf(buf: bytes, size: int) -> _FastEdf | None:
    """The layout of an uncompressed EDF holding exactly one frame in one plain header block,
    or ``None`` for anything else (multi-frame, general blocks, compression, 3-D, odd types,
    a file longer or shorter than its header says: fabio reads those as before)."""
    start = buf.find(b"{")
    m = _RE_CLOSE.search(buf, start + 1) if start >= 0 else None
    if m is None:
        return None
    header = fabio_header(buf[start + 1:m.start()])
    if header is None or any(k in header for k in ("EDF_DataFormatVersion", "Dim_3", "Compression")):
        return None
    from fabio.edfimage import DATA_TYPES  # fabio's own table: the same dtype as its reader

    kind = DATA_TYPES.get(header.get("DataType", ""))
    order = {"LowByteFirst": "<", "HighByteFirst": ">"}.get(header.get("ByteOrder", ""))
    try:
        cols, rows = int(header["Dim_1"]), int(header["Dim_2"])
    except (KeyError, ValueError):
        return None
    if kind is None or order is None or cols <= 0 or rows <= 0:
        return None
    dtype = np.dtype(kind).newbyteorder(order)
    nbytes = rows * cols * dtype.itemsize
    for key in ("Size", "EDF_BinarySize"):
        if key in header and header[key].strip() != str(nbytes):
            return None
    offset = m.end()
    if size != offset + nbytes:
        return None
    return _FastEdf(offset, (rows, cols), dtype, header)


def check_edf_header(path: str, keys: dict[str, str], expected_shape: Shape | None) -> None:
    """Refuse before reading an EDF whose first header declares the wrong or a huge image."""
    try:
        cols, rows = int(keys["dim_1"]), int(keys["dim_2"])
    except (KeyError, ValueError):
        return  # fabio decides (1-D or odd EDFs)
    itemsize = _ITEMSIZES.get(keys.get("datatype", "").replace(" ", "").lower(), 4)
    check_declared(path, (rows, cols), expected_shape, itemsize=itemsize)
    try:
        declared = int(keys.get("size", "0"))
    except ValueError:
        declared = 0
    limit = byte_budget(expected_shape) if expected_shape is not None else MAX_IMAGE_BYTES
    if declared > limit:
        what = f"a {dims(expected_shape)} image" if expected_shape else "any image"
        raise CorruptImageError(path, f"EDF header declares Size = {declared} bytes, more than "
                                      f"{what} can need ({limit}); not read")


class EdfSource(SourceBase):
    """An EDF file read by fabio after its first header passed the size checks."""

    def __init__(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        self.path, self._expected = path, expected_shape
        self._f, self._kind = f, compression_of(head)
        self._stream: BoundedStream | None = None
        #: A plain single-frame EDF read without fabio (see :func:`plain_edf`).
        self._fast: _FastEdf | None = None
        #: Set by :func:`saxsdog.io.images.iter_frames`: read into this reused array.
        self.buffer: ReadBuffer | None = None
        self._size = size
        if self._kind is None:
            buf = head
            if b"}" not in head and size > len(head):
                buf = read_exactly(f, 0, min(size, HEADER_SLACK))
            self.raw_keys = first_header(path, buf, size <= len(buf), lower=False)
        else:
            self._stream = BoundedStream(path, f, self._kind)
            prefix = self._stream.read_prefix(64 << 10)
            if b"}" not in prefix and not self._stream.eof:
                prefix = self._stream.read_prefix(HEADER_SLACK)
            self.raw_keys = first_header(path, prefix, self._stream.eof, lower=False)
        #: The first header's keys as written (``raw_keys``) and lower-cased (``keys``).
        self.keys = {k.lower(): v for k, v in self.raw_keys.items()}
        check_edf_header(path, self.keys, expected_shape)
        if self._kind is None:
            self._fast = plain_edf(buf, size)
        self._img: Any = None  # fabio's image, loaded when pixels or frame counts are needed
        self._n = 1

    def _loaded(self):
        if self._img is not None:
            return self._img
        if self._stream is None:
            target: Any = self.path
        else:
            from fabio.fabioutils import (
                BytesIO,  # with the lock fabio's EDF reader wants
            )

            limit = MAX_IMAGE_BYTES if self._expected is None else byte_budget(self._expected)
            what = f"a {dims(self._expected)} image" if self._expected else "any image"
            target = BytesIO(self._stream.read_all(limit, what))
        self._img = self._load(target)
        self._n = int(getattr(self._img, "nframes", 1) or 1)
        return self._img

    def _load(self, target):
        from fabio.edfimage import EdfImage

        try:
            img = EdfImage().read(target)
        except EOFError as exc:
            raise IncompleteImageError(
                self.path, f"file ended before the image was complete ({exc})") from exc
        except Exception as exc:
            raise CorruptImageError(
                self.path, f"cannot be read as an EDF image: {type(exc).__name__}: {exc}") from exc
        if getattr(img, "incomplete_file", False) or getattr(img, "incomplete_data", False):
            raise IncompleteImageError(
                self.path, "file is truncated: the EDF header announces more data than the file holds")
        return img

    @property
    def nframes(self) -> int:
        if self._fast is not None:
            return 1
        self._loaded()
        return self._n

    def _fast_frame(self, fast: _FastEdf) -> Frame:
        """The pixels read with one ``preadv`` into a (reused) array, swapped in place if needed."""
        check_shape(self.path, fast.shape, self._expected, "header declares")
        data = np.empty(fast.shape, fast.dtype) if self.buffer is None else self.buffer.array(fast.shape, fast.dtype)
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        nbytes = view.nbytes
        got = 0
        try:
            while got < nbytes:
                n = os.preadv(self._f.fileno(), [view[got:]], fast.offset + got)
                if not n:
                    break
                got += n
        except OSError as exc:
            raise ImageError(self.path, f"cannot read file: {exc.strerror or exc}") from None
        if got < nbytes:
            raise IncompleteImageError(self.path, f"file is truncated: got {got} of {nbytes} bytes of pixel data")
        if not fast.dtype.isnative and fast.dtype.itemsize > 1:
            data.byteswap(inplace=True)
            data = data.view(fast.dtype.newbyteorder("="))
        return Frame(data=data, path=self.path, index=0, nframes=1, metadata=metadata_from_keys(dict(fast.header)))

    def _frame_image(self, index: int):
        img = self._loaded()
        check_frame_index(self.path, index, self._n)
        return img if index == 0 else img.getframe(index)

    def frame(self, index: int) -> Frame:
        if self._fast is not None:
            check_frame_index(self.path, index, 1)
            return self._fast_frame(self._fast)
        return with_errors(self.path, lambda: self._frame(index))

    def _frame(self, index: int) -> Frame:
        img = self._frame_image(index)
        shape = tuple(getattr(img, "shape", ()) or ())
        if len(shape) == 2:
            check_shape(self.path, shape, self._expected, "header declares")
        data = img.data
        if data is None:
            raise IncompleteImageError(self.path, "no pixel data could be read (file incomplete?)")
        if getattr(img, "incomplete_data", False):
            raise IncompleteImageError(self.path, "file is truncated: pixel data is incomplete")
        check_shape(self.path, data.shape, self._expected)
        return Frame(data=native(data), path=self.path, index=index, nframes=self._n,
                     metadata=metadata_from_keys(dict(getattr(img, "header", {}) or {})))

    def header(self, index: int = 0) -> dict:
        if index == 0:  # the first header is parsed already: no pixels are loaded
            return metadata_from_keys(self.raw_keys)
        img = with_errors(self.path, lambda: self._frame_image(index))
        return metadata_from_keys(dict(getattr(img, "header", {}) or {}))

    def close(self) -> None:
        f = getattr(self._img, "_file", None)
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass


class EdfReader:
    """:class:`~saxsdog.io.images.registry.FormatReader` for EDF."""

    name = "edf"
    suffixes: tuple[str, ...] = (".edf", ".edf.gz", ".edf.bz2")
    compressible = True

    def sniff(self, head: bytes) -> bool:
        return looks_like_edf(head)

    def open(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        return EdfSource(path, f, size, head, expected_shape)
