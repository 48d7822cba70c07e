"""Reading detector images: Pilatus TIFF, CBF, EDF and HDF5 (Eiger / NeXus).

Every reader returns :class:`Frame` objects holding one 2-D frame in the dtype
it is stored with (``int32`` for Pilatus; ``-1``/``-2`` mark dead and gap
pixels and are *not* touched here) plus whatever metadata the header provides.

Formats
-------
One module per format (:mod:`.tiff`, :mod:`.cbf`, :mod:`.edf`, :mod:`.hdf5`), each a
:class:`~saxsdog.io.images.registry.FormatReader` (suffixes, magic test, ``open``
giving frames and headers) listed once in :data:`~saxsdog.io.images.registry.FORMATS`;
detection, :func:`is_image_file`, :data:`IMAGE_EXTENSIONS` and output naming derive
from that table. :func:`iter_images` is the one folder walker.

Errors are always one of the classes in :mod:`saxsdog.errors`:

* :class:`~saxsdog.errors.IncompleteImageError` -- the file exists but is not
  complete yet (empty, shorter than its header promises, an HDF5 file that is
  truncated, locked by its writer or whose external data file is missing).
  Callers retry these after a back-off.
* :class:`~saxsdog.errors.CorruptImageError` -- not a readable image at all, or a
  header that declares more than the image can need (refused unread).
* :class:`~saxsdog.errors.ImageShapeError` -- ``expected_shape`` was given and
  the header declares another shape: "not a 1043×981 image (header declares
  50000×60000, rows×columns)", reported before the pixels are read.
* :class:`~saxsdog.errors.ImageError` -- anything else (no such file, not a regular
  file, frame index out of range, permission denied).

Safety
------
Only regular files are opened (a FIFO would block ``open`` forever): the type is
checked before ``open``, which is done with ``O_NONBLOCK`` and checked again with
``fstat``. Declared sizes (TIFF tags, CBF MIME header, EDF ``Dim_1``/``Dim_2``/``Size``)
are checked against ``expected_shape`` before reading, and compressed files are never
expanded beyond what the image can need (see :mod:`._base` for the limits).

Speed
-----
Uncompressed single-strip (or contiguous multi-strip) TIFFs -- which is what
Pilatus detectors write -- are read by a small IFD parser followed by one
``readinto`` of the pixel block straight into a NumPy array. CBF headers are parsed
here and only the binary section is read and decoded (fabio's compiled byte-offset
decoder). Everything else goes through tifffile (other TIFFs), fabio (EDF) or h5py
(HDF5).

Measured for ``buf1_00000.tif`` (Pilatus 1M, 4 MB, from the page cache, best
of 7 x 100 reads, 2-core VM)::

    fabio.open(path).data               4.5  ms
    tifffile.imread(path)               0.40 ms
    tifffile.TiffFile(...).asarray()    0.32 ms
    read_image(path)  (fast path)       0.21 ms  (IFD parse, truncation check,
                                                  metadata; one open())
    read_header(path)                   0.04 ms

Dates
-----
Detector headers (Pilatus ``# 2013-06-06T17:57:26.675`` lines, the TIFF
``DateTime`` tag, EDF ``Date`` keys) carry no time zone. They are interpreted
as *local time of the machine running saxsdog* (which at a beamline is the
detector's time zone) to compute ``metadata["timestamp"]``; ``metadata["date"]``
keeps the naive ISO-8601 string. Dates with an explicit UTC offset (Eiger,
NeXus ``start_time``) are converted exactly. For HDF5 series with a
``detector/frame_time``, frame *i* gets ``date``/``timestamp`` of the series
start plus ``i * frame_time``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from saxsdog.errors import ImageError, IncompleteImageError

from ._base import HEAD_BYTES, Frame, PathLike, ReadBuffer, Shape, SourceBase, open_regular
from .discovery import file_signature, inside, iter_images
from .registry import (
    FORMATS,
    IMAGE_EXTENSIONS,
    FormatReader,
    detect_format,
    format_by_name,
    is_image_file,
    strip_image_suffix,
)

__all__ = [
    "file_signature",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "FormatReader",
    "Frame",
    "ReadBuffer",
    "count_frames",
    "format_by_name",
    "inside",
    "is_image_file",
    "iter_frames",
    "iter_images",
    "open_image",
    "read_header",
    "read_image",
    "strip_image_suffix",
]


class _FabioSource(SourceBase):
    """Any other format fabio knows (files whose content and name match no entry of
    :data:`FORMATS`)."""

    def __init__(self, path: str, expected_shape: Shape | None):
        import fabio

        from ._base import with_errors

        self.path, self._expected = path, expected_shape
        self._img = with_errors(path, lambda: fabio.open(path))
        self._n = int(getattr(self._img, "nframes", 1) or 1)

    @property
    def nframes(self) -> int:
        return self._n

    def frame(self, index: int) -> Frame:
        from ._base import (
            check_frame_index,
            check_shape,
            metadata_from_keys,
            native,
            with_errors,
        )

        check_frame_index(self.path, index, self._n)
        img = self._img if index == 0 else with_errors(self.path, lambda: self._img.getframe(index))
        data = img.data
        check_shape(self.path, data.shape, self._expected)
        return Frame(data=native(data), path=self.path, index=index, nframes=self._n,
                     metadata=metadata_from_keys(dict(getattr(img, "header", {}) or {})))

    def header(self, index: int = 0) -> dict:
        from ._base import metadata_from_keys

        return metadata_from_keys(dict(getattr(self._img, "header", {}) or {}))


def _open_source(p: str, expected_shape: Shape | None):
    """``(file, source)`` for :func:`open_image`; the caller closes both."""
    f, size = open_regular(p)
    try:
        if size == 0:
            raise IncompleteImageError(
                p, "file is empty (0 bytes); it is probably still being written")
        try:
            head = os.pread(f.fileno(), HEAD_BYTES, 0)  # leaves the position at 0
        except OSError as exc:
            raise ImageError(p, f"cannot read file: {exc.strerror or exc}") from None
        fmt = detect_format(p, head)
        source = (_FabioSource(p, expected_shape) if fmt is None
                  else fmt.open(p, f, size, head, expected_shape))
    except BaseException:
        f.close()
        raise
    return f, source


@contextmanager
def open_image(path: PathLike, expected_shape: Shape | None = None) -> Iterator[SourceBase]:
    """Open an image file and check its header: a source of frames and headers.

    The file is opened once (a regular file only), its format detected from its first
    bytes (:func:`~saxsdog.io.images.registry.detect_format`), and the format's reader
    checks the declared size against ``expected_shape`` before any pixel is read.
    """
    f, source = _open_source(os.fspath(path), expected_shape)
    with f, source:
        yield source


def read_image(
    path: PathLike, frame: int = 0, expected_shape: tuple[int, int] | None = None
) -> Frame:
    """Read one frame of an image file.

    Parameters
    ----------
    path
        TIFF, CBF, EDF (optionally ``.gz``/``.bz2``) or HDF5/NeXus file.
    frame
        Frame index inside a multi-frame file (HDF5 stacks, multi-page TIFF,
        multi-frame EDF).
    expected_shape
        ``(rows, columns)`` the caller expects (the calibration's image size);
        checked against the header before the pixels are read.

    Returns
    -------
    Frame

    Raises
    ------
    IncompleteImageError
        The file is present but not completely written yet (retry later).
    CorruptImageError
        The file is not a readable image.
    ImageShapeError
        The image shape differs from *expected_shape*.
    ImageError
        No such file, not a regular file, frame index out of range, file not readable.
    """
    f, src = _open_source(os.fspath(path), expected_shape)  # no context manager: speed
    try:
        return src.frame(frame)
    finally:
        src.close()
        f.close()


def iter_frames(path: PathLike, expected_shape: tuple[int, int] | None = None,
                buffer: ReadBuffer | None = None) -> Iterator[Frame]:
    """Yield every frame of a file in order.

    TIFF, CBF and EDF files usually hold one frame; HDF5 stacks ``(N, H, W)``
    yield ``N`` frames. The file is opened once and closed when the iterator is
    exhausted or closed.

    With ``buffer`` (a :class:`ReadBuffer`), readers that can read in place (uncompressed
    TIFF) fill it instead of a new array: each frame is then valid only until the next one
    is read with that buffer.

    Raises
    ------
    IncompleteImageError, CorruptImageError, ImageShapeError, ImageError
        As :func:`read_image`.
    """
    f, src = _open_source(os.fspath(path), expected_shape)  # no context manager: once per frame file
    try:
        if buffer is not None and hasattr(src, "buffer"):
            src.buffer = buffer
        for i in range(src.nframes):
            yield src.frame(i)
    finally:
        try:
            src.close()
        finally:
            f.close()


def count_frames(path: PathLike) -> int:
    """Number of frames in an image file (1 for ordinary TIFF/CBF/EDF).

    Raises
    ------
    IncompleteImageError, CorruptImageError, ImageError
        As :func:`read_image`.
    """
    with open_image(path) as src:
        return src.nframes


def read_header(path: PathLike) -> dict:
    """Metadata of an image file without reading its pixels (when the format allows).

    Returns
    -------
    dict
        The same dictionary :func:`read_image` puts in ``Frame.metadata`` for
        frame 0 (keys ``date``, ``timestamp``, ``exposure_time``,
        ``wavelength``, ``detector`` when known).

    Raises
    ------
    IncompleteImageError, CorruptImageError, ImageError
        As :func:`read_image`.
    """
    f, src = _open_source(os.fspath(path), None)
    try:
        return src.header(0)
    finally:
        src.close()
        f.close()
