"""The one table of image formats, and everything that is derived from it.

Each format is a :class:`FormatReader`: its file-name suffixes, a magic test on the
first bytes, and ``open`` giving an :class:`~saxsdog.io.images._base.ImageSource`
(frames and headers). Format detection, :func:`is_image_file`,
:data:`IMAGE_EXTENSIONS` and :func:`strip_image_suffix` (output naming) all read
:data:`FORMATS`, so a suffix added there is known everywhere.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Protocol

from saxsdog.errors import CorruptImageError, IncompleteImageError

from ._base import PathLike, Shape, file_kind
from ._compressed import compression_of, compression_prefix
from .cbf import CbfReader
from .edf import EdfReader
from .hdf5 import Hdf5Reader
from .tiff import MAGICS as _TIFF_MAGICS
from .tiff import TiffReader

log = logging.getLogger("saxsdog.io.images")

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "FormatReader",
    "detect_format",
    "format_by_name",
    "is_image_file",
    "strip_image_suffix",
]


class FormatReader(Protocol):
    """One image format.

    Attributes
    ----------
    name
        Short name (``"tiff"``, ``"cbf"``, ``"edf"``, ``"hdf5"``).
    suffixes
        Lower-case file-name suffixes, compressed variants included (``".edf.gz"``).
    compressible
        Whether ``.gz`` / ``.bz2`` files of this format are read.
    """

    name: str
    suffixes: tuple[str, ...]
    compressible: bool

    def sniff(self, head: bytes) -> bool:
        """Whether the first bytes of a file are this format's magic."""
        ...

    def open(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        """Open the file (``f`` is open, ``head`` its first bytes) and check its header."""
        ...


#: The formats, in the order their magic is tested.
FORMATS: tuple[FormatReader, ...] = (TiffReader(), Hdf5Reader(), EdfReader(), CbfReader())
assert FORMATS[0].name == "tiff"  # detect_format's shortcut

#: Every file-name suffix saxsdog reads (lower case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(s for fmt in FORMATS for s in fmt.suffixes)

# Longest first, so ".edf.gz" wins over a bare ".gz".
_SUFFIXES: tuple[tuple[str, FormatReader], ...] = tuple(
    sorted(((s, fmt) for fmt in FORMATS for s in fmt.suffixes), key=lambda sf: -len(sf[0])))

_TEMP_SUFFIXES = (".part", ".tmp", "~")
# Eiger data files ("<prefix>_data_000001.h5") are read through their master file.
_EIGER_DATA_FILE = re.compile(r"_data_\d{6}\.(h5|hdf5)$", re.IGNORECASE)


def _suffix_of(name: str) -> tuple[str, FormatReader] | None:
    low = name.lower()
    for suffix, fmt in _SUFFIXES:
        if low.endswith(suffix) and len(low) > len(suffix):
            return suffix, fmt
    return None


def format_by_name(path: PathLike) -> FormatReader | None:
    """The format a file name announces, or ``None``."""
    found = _suffix_of(os.path.basename(os.fspath(path)))
    return found[1] if found else None


def strip_image_suffix(name: str) -> str:
    """``name`` without its image suffix (``x.edf.gz`` -> ``x``); other names lose their
    last suffix only (``y_master.h5`` -> ``y_master``, ``z.dat`` -> ``z``)."""
    found = _suffix_of(name)
    if found:
        return name[: -len(found[0])]
    return Path(name).stem


_warned: set[str] = set()


def warn_skipped(path: str, reason: str) -> None:
    """Log once per path that a file is skipped, and why."""
    if path in _warned:
        return
    if len(_warned) > 10000:
        _warned.clear()
    _warned.add(path)
    log.warning("skipping %s: %s", path, reason)


def is_image_file(path: PathLike, check_file: bool = False) -> bool:
    """Whether *path* names an image file saxsdog can read, judged by its name.

    Parameters
    ----------
    path
        File name or path; the file need not exist.
    check_file
        Also refuse (with a warning naming it) a path that exists but is not a
        regular file: a FIFO, device or socket is never opened.

    Returns
    -------
    bool
        ``True`` for the suffixes in :data:`IMAGE_EXTENSIONS` (case-insensitive).
        ``False`` for hidden files (name starting with ``.``), temporary files
        (ending in ``.part``, ``.tmp`` or ``~``) and Eiger data files
        (``*_data_NNNNNN.h5``), whose frames are read through their master file.
    """
    p = os.fspath(path)
    name = os.path.basename(p)
    if not name or name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES):
        return False
    if _EIGER_DATA_FILE.search(name):
        return False
    if _suffix_of(name) is None:
        return False
    if check_file:
        try:
            mode = os.stat(p).st_mode
        except OSError:
            return True  # gone or unreadable: the reader says which
        if not stat.S_ISREG(mode):
            warn_skipped(p, f"it is a {file_kind(mode)}, not a regular file")
            return False
    return True


def detect_format(path: str, head: bytes) -> FormatReader | None:
    """The format of a file from its first bytes (its name breaks ties for compressed
    files); ``None`` when nothing matches a file whose name announces no known format.

    Raises
    ------
    IncompleteImageError
        ``head`` is too short to tell but could start an image.
    CorruptImageError
        The name announces a format and the content is not that format.
    """
    if head[:4] in _TIFF_MAGICS:  # the common case first, without looking at the name
        return FORMATS[0]
    by_name = format_by_name(path)
    for fmt in FORMATS:
        if fmt.sniff(head):
            if by_name is not None and by_name.name == "tiff":
                break  # a .tif that is something else: refused below
            return fmt
    if len(head) < 8 and (any(m.startswith(head) for m in _TIFF_MAGICS)
                          or b"\x89HDF\r\n\x1a\n".startswith(head)):
        raise IncompleteImageError(path, f"file has only {len(head)} bytes, less than an image header")
    if compression_prefix(head) and by_name is not None and by_name.compressible:
        raise IncompleteImageError(path, f"file has only {len(head)} bytes, less than a "
                                         "compressed stream's header")
    if compression_of(head):
        if by_name is not None and by_name.compressible:
            return by_name
        return None
    if by_name is not None:
        if by_name.name in ("tiff", "hdf5"):
            raise CorruptImageError(
                path, f"not a{'n' if by_name.name == 'hdf5' else ''} {by_name.name.upper()} file: "
                      f"it starts with {head[:8]!r} instead of the {by_name.name.upper()} signature")
        raise CorruptImageError(
            path, f"not a {by_name.name.upper()} file: it starts with {head[:16]!r}")
    return None
