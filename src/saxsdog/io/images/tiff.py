"""TIFF: a hand-written fast path for Pilatus files, tifffile for everything else.

Uncompressed single-page TIFFs stored as one contiguous pixel block (what Pilatus
detectors write) are read by a small IFD parser followed by one ``readinto`` of the
pixel block straight into a NumPy array, through the file descriptor that was opened to
sniff the format. The declared size is checked against the expected shape and the file
size before any pixel is read (a worker's reader maps the pixel block instead of reading
it: :func:`_mapped_pixels`). Other TIFFs (compressed, tiled, multi-page) go through
tifffile.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from saxsdog.errors import CorruptImageError, ImageError, IncompleteImageError

from ._base import (
    Frame,
    ReadBuffer,
    Shape,
    SourceBase,
    check_declared,
    check_frame_index,
    check_shape,
    native,
    parse_date,
    parse_pilatus_text,
    pilatus_header_fields,
    set_date,
    with_errors,
)

MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_CLASSIC = (b"II*\x00", b"MM\x00*")

# TIFF field type -> (struct code, size)
_TIFF_TYPES = {
    1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1),
    7: ("B", 1), 8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8),
    13: ("I", 4),
}
_SAMPLE_KIND = {1: "u", 2: "i", 3: "f"}
#: One IFD entry (tag, type, count, value or offset) in each byte order.
_IFD_ENTRY = {"<": struct.Struct("<HHI4s"), ">": struct.Struct(">HHI4s")}
_TILE_TAGS = (322, 323, 324, 325)


@dataclass
class TiffInfo:
    """What the fast path needs from the first IFD."""

    byteorder: str
    width: int = 0
    height: int = 0
    dtype: np.dtype | None = None
    offset: int = 0
    nbytes: int = 0
    description: str = ""
    model: str = ""
    datetime: str = ""
    fast: bool = False


@dataclass(frozen=True)
class _Layout:
    """What :func:`parse_tiff` derives from a first IFD's entries alone (not its text tags)."""

    height: int
    width: int
    itemsize: int | None
    fast: bool
    dtype: np.dtype | None = None
    offset: int = 0
    nbytes: int = 0
    end: int = 0
    #: ``(tag, entry index)`` of the IFD's text tags (descriptions, the first Model and DateTime).
    texts: tuple[tuple[int, int], ...] = ()


#: ``(byte order, IFD offset, the IFD's entry bytes) -> _Layout`` of files parsed before whose
#: entries hold every number inline: a series' files repeat their first IFD byte for byte
#: (only the text of the description changes, not where it is), so a worker decodes it once.
#: Bounded: cleared when full.
_LAYOUTS: dict[tuple[str, int, bytes], _Layout] = {}
_MAX_LAYOUTS = 64
#: The tags whose values :class:`_Layout` holds (the text tags are read for every file).
_LAYOUT_TAGS = frozenset((256, 257, 258, 259, 273, 277, 279, 339, *_TILE_TAGS))


def parse_tiff(path: str, f, size: int, head: bytes, expected_shape: Shape | None = None
               ) -> TiffInfo:
    """Parse the first IFD of a classic TIFF.

    Sets ``fast`` when the image is a single page, one sample per pixel, uncompressed
    and stored as one contiguous block (Pilatus TIFFs). The declared size is checked
    against ``expected_shape`` first, then the file is checked to be long enough for
    the pixel block.  What the IFD's entries say (sizes, sample format, strips) is
    decoded once per distinct IFD (:data:`_LAYOUTS`); every check against this file
    (its expected shape, its size) and its text tags are done for every file.
    """
    bo = "<" if head[:2] == b"II" else ">"
    info = TiffInfo(byteorder=bo)

    def get(offset: int, n: int) -> bytes:
        if offset + n > size:
            raise IncompleteImageError(
                path,
                f"file is truncated: TIFF header refers to bytes {offset}..{offset + n} "
                f"but the file has only {size} bytes",
            )
        if offset + n <= len(head):
            return head[offset : offset + n]
        f.seek(offset)
        b = f.read(n)
        if len(b) != n:
            raise IncompleteImageError(path, f"short read of the TIFF header at byte {offset}")
        return b

    if len(head) < 8:
        raise IncompleteImageError(path, f"file has only {size} bytes, less than a TIFF header")
    (ifd,) = struct.unpack(bo + "I", head[4:8])
    if ifd < 8:
        raise CorruptImageError(path, f"invalid TIFF: first IFD offset is {ifd}")
    (n,) = struct.unpack(bo + "H", get(ifd, 2))
    if n == 0:
        raise CorruptImageError(path, "invalid TIFF: the first IFD has no entries")
    entries = get(ifd + 2, 12 * n + 4)
    (next_ifd,) = struct.unpack_from(bo + "I", entries, 12 * n)
    key = (bo, ifd, entries)
    layout = _LAYOUTS.get(key)
    tags: dict[int, tuple[int, int, bytes]] = {}
    descriptions: list[tuple[int, int, bytes]] = []  # tifffile may write two
    #: (tag, entry index) of the text tags read below: the descriptions, the first Model and DateTime
    texts: list[tuple[int, int]] = []
    if layout is None:
        for k, (tag, typ, count, field_) in enumerate(_IFD_ENTRY[bo].iter_unpack(memoryview(entries)[: 12 * n])):
            entry = (typ, count, field_)
            if tag not in tags:
                tags[tag] = entry
                if tag in (272, 306):
                    texts.append((tag, k))
            if tag == 270:
                descriptions.append(entry)
                texts.append((tag, k))
    else:  # only the text tags' entries (where the text is, not what it says, is in the layout)
        unpack = _IFD_ENTRY[bo].unpack_from
        for tag, k in layout.texts:
            entry = unpack(entries, 12 * k)[1:]
            if tag == 270:
                descriptions.append(entry)
            else:
                tags[tag] = entry
    #: Whether every number the layout needs sits in the entries themselves (cacheable).
    inline = [True]

    def value(tag: int, default=None, entry=None):
        if entry is None:
            if tag not in tags:
                return default
            entry = tags[tag]
        typ, count, field_ = entry
        if typ not in _TIFF_TYPES:
            return default
        code, sz = _TIFF_TYPES[typ]
        nb = sz * count
        if nb <= 4:
            raw = field_[:nb]
        else:
            if tag in _LAYOUT_TAGS:
                inline[0] = False
            (off,) = struct.unpack(bo + "I", field_)
            raw = get(off, nb)
        if typ == 2:
            return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")
        return struct.unpack(bo + code[0] * (count * len(code)), raw)

    if layout is not None:
        info.width, info.height = layout.width, layout.height
        check_declared(path, (layout.height, layout.width), expected_shape, itemsize=layout.itemsize)
    else:
        width = value(256)
        height = value(257)
        if not width or not height:
            raise CorruptImageError(path, "invalid TIFF: ImageWidth or ImageLength tag missing")
        info.width, info.height = int(width[0]), int(height[0])
        bps = value(258, (1,))
        itemsize = max(1, int(bps[0]) // 8) if bps else None
        # Before anything else is read: is this the image the caller expects?
        check_declared(path, (info.height, info.width), expected_shape, itemsize=itemsize)
    info.description = "\n".join(value(270, "", e) or "" for e in descriptions)
    info.model = value(272, "") or ""
    info.datetime = value(306, "") or ""
    if layout is None:
        layout = dataclasses.replace(_decode_layout(path, info, tags, value, bps, itemsize, next_ifd),
                                     texts=tuple(texts))
        if inline[0]:
            if len(_LAYOUTS) >= _MAX_LAYOUTS:
                _LAYOUTS.clear()
            _LAYOUTS[key] = layout
    if not layout.fast:
        return info  # not fast-path material: tifffile handles it
    if size < layout.end:
        raise IncompleteImageError(
            path,
            f"file is truncated: it has {size} bytes but its TIFF header says the pixel "
            f"data ends at byte {layout.end}; it is probably still being written",
        )
    info.dtype = layout.dtype
    info.offset = layout.offset
    info.nbytes = layout.nbytes
    info.fast = True
    return info


def _decode_layout(path: str, info: TiffInfo, tags: dict, value, bps, itemsize_declared: int | None,
                   next_ifd: int) -> _Layout:
    """:class:`_Layout` of an IFD (:func:`parse_tiff`'s ``value`` reads its tags).

    Raises
    ------
    CorruptImageError
        Its strips hold fewer bytes than its image needs.
    """
    compression = value(259, (1,))[0]
    spp = value(277, (1,))[0]
    fmt = value(339, (1,))[0]
    offsets = value(273)
    counts = value(279)
    slow = _Layout(info.height, info.width, itemsize_declared, False)
    if (
        next_ifd != 0
        or compression != 1
        or spp != 1
        or any(t in tags for t in _TILE_TAGS)
        or len(set(bps)) != 1
        or bps[0] not in (8, 16, 32, 64)
        or fmt not in _SAMPLE_KIND
        or (fmt == 3 and bps[0] == 8)
        or not offsets
        or not counts
        or len(offsets) != len(counts)
    ):
        return slow
    itemsize = bps[0] // 8
    nbytes = info.width * info.height * itemsize
    for k in range(len(offsets) - 1):
        if offsets[k] + counts[k] != offsets[k + 1]:
            return slow  # scattered strips
    if sum(counts) < nbytes:
        raise CorruptImageError(
            path,
            f"invalid TIFF: strips hold {sum(counts)} bytes but a {info.height}x{info.width} "
            f"image of {bps[0]}-bit samples needs {nbytes}",
        )
    end = max(o + c for o, c in zip(offsets, counts))
    return _Layout(info.height, info.width, itemsize_declared, True,
                   np.dtype(f"{info.byteorder}{_SAMPLE_KIND[fmt]}{itemsize}"), offsets[0], nbytes, end)


def tiff_metadata(info: TiffInfo) -> dict:
    meta = parse_pilatus_text(info.description) if info.description else {}
    fields = pilatus_header_fields(info.description) if info.description else {}
    if fields:
        meta["header"] = fields
    if "detector" not in meta and info.model.strip():
        meta["detector"] = info.model.strip()
    if "date" not in meta and info.datetime.strip():
        set_date(meta, parse_date(info.datetime))
    return meta


def read_tiff_fast(path: str, info: TiffInfo, expected_shape: Shape | None, f,
                   buffer: ReadBuffer | None = None) -> Frame:
    """Read the pixel block described by *info* (whose declared shape
    :func:`parse_tiff` checked) from the open raw file *f*.

    With ``buffer`` the pixels are read straight into its array (reused: the frame is valid
    until the buffer's next use); a file in the other byte order is swapped in place.  With
    a buffer that maps files (``ReadBuffer(map_files=True)``) the pixels of a native-order
    file are not read at all: the frame is a view of the mapped file (:func:`_mapped_pixels`).
    """
    shape = (info.height, info.width)
    dtype = info.dtype
    assert dtype is not None  # set by parse_tiff for fast-path files
    if buffer is not None and buffer.map_files:
        mapped = _mapped_pixels(path, info, f)
        if mapped is not None:
            return Frame(data=mapped, path=path, index=0, nframes=1, metadata=tiff_metadata(info))
    data = np.empty(shape, dtype=dtype) if buffer is None else buffer.array(shape, dtype)
    buf = memoryview(data).cast("B")  # type: ignore[arg-type]
    try:
        fd = f.fileno()
        got = 0
        while got < info.nbytes:  # pread: no seek, one system call in the usual case
            n = os.preadv(fd, [buf[got:]], info.offset + got)
            if not n:
                break
            got += n
    except OSError as exc:
        raise ImageError(path, f"cannot read file: {exc.strerror or exc}") from None
    if got < info.nbytes:
        raise IncompleteImageError(
            path, f"short read: got {got} of {info.nbytes} bytes of pixel data"
        )
    if not dtype.isnative and dtype.itemsize > 1:
        data.byteswap(inplace=True)  # no second array
        data = data.view(dtype.newbyteorder("="))
    return Frame(data=data, path=path, index=0, nframes=1, metadata=tiff_metadata(info))


def _mapped_pixels(path: str, info: TiffInfo, f) -> np.ndarray | None:
    """The pixel block of *info* as a view of the file mapped copy-on-write, or ``None``
    where it must be read instead (the other byte order, a misaligned block, a file
    system that cannot map).

    Why: from the page cache a read copies the 4 MB of a Pilatus 1M frame into the
    process's buffer, which the integration then reads again; mapped, the integration
    reads the page cache's pages themselves (measured on a 2-core VM, thread CPU of read
    plus integration: about 0.2 ms less per frame).  The mapping is private and writable
    (nothing is ever written: the array has the flags, hence the compiled kernels'
    signature, of a read one) and lives as long as the array.  Pages are mapped on first
    touch (read faults map the page cache's pages, no copy).

    Raises
    ------
    IncompleteImageError
        The file got shorter than its pixel block since its header was parsed.
    """
    dtype = info.dtype
    assert dtype is not None
    if not dtype.isnative or info.offset % dtype.itemsize:
        return None
    end = info.offset + info.nbytes
    try:
        mapping = mmap.mmap(f.fileno(), end, access=mmap.ACCESS_COPY)
    except ValueError:  # "mmap length is greater than file size"
        raise IncompleteImageError(
            path, f"file is truncated: its pixel data should end at byte {end} but the file is shorter; "
                  "it is probably still being written") from None
    except OSError:
        return None
    return np.frombuffer(mapping, dtype=dtype, count=info.width * info.height,
                         offset=info.offset).reshape(info.height, info.width)


class FastTiffSource(SourceBase):
    """A Pilatus-style TIFF read through the already open file descriptor."""

    def __init__(self, path: str, f, info: TiffInfo, expected_shape: Shape | None):
        self.path, self._f, self.info, self._expected = path, f, info, expected_shape
        #: Set by :func:`saxsdog.io.images.iter_frames`: read into this reused array.
        self.buffer: ReadBuffer | None = None

    @property
    def nframes(self) -> int:
        return 1

    def frame(self, index: int) -> Frame:
        check_frame_index(self.path, index, 1)
        return read_tiff_fast(self.path, self.info, self._expected, self._f, self.buffer)

    def header(self, index: int = 0) -> dict:
        return tiff_metadata(self.info)


# --------------------------------------------------------------------------- #
# Other TIFFs: tifffile
# --------------------------------------------------------------------------- #


def _tifffile_open(path: str):
    import tifffile

    return tifffile.TiffFile(path)


def _page_meta(page) -> dict:
    def tag(name: str) -> str:
        t = page.tags.get(name)
        return str(t.value) if t is not None and isinstance(t.value, str) else ""

    return tiff_metadata(TiffInfo(byteorder="<", description=tag("ImageDescription"),
                                  model=tag("Model"), datetime=tag("DateTime")))


class TifffileSource(SourceBase):
    """Any TIFF tifffile reads (compressed, tiled, multi-page, BigTIFF)."""

    def __init__(self, path: str, size: int, expected_shape: Shape | None):
        self.path, self.size, self._expected = path, size, expected_shape
        self._tf: Any = with_errors(path, lambda: _tifffile_open(path))

    @property
    def nframes(self) -> int:
        return with_errors(self.path, lambda: len(self._tf.pages))

    def frame(self, index: int) -> Frame:
        return with_errors(self.path, lambda: self._frame(index))

    def _frame(self, index: int) -> Frame:
        pages = self._tf.pages
        n = len(pages)
        check_frame_index(self.path, index, n)
        page = pages[index]
        check_declared(self.path, tuple(page.shape), self._expected,
                       itemsize=page.dtype.itemsize if page.dtype is not None else None)
        check_shape(self.path, tuple(page.shape), self._expected, "header declares")
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
        if ends and max(ends) > self.size:
            raise IncompleteImageError(
                self.path,
                f"file is truncated: it has {self.size} bytes but its TIFF header says the "
                f"pixel data ends at byte {max(ends)}; it is probably still being written",
            )
        try:
            data = page.asarray()
        except ValueError as exc:
            if "failed to read" in str(exc):
                raise IncompleteImageError(self.path,
                                           f"short read of the pixel data ({exc})") from exc
            raise
        return Frame(data=native(data), path=self.path, index=index, nframes=n,
                     metadata=_page_meta(page))

    def header(self, index: int = 0) -> dict:
        return with_errors(self.path, lambda: _page_meta(self._tf.pages[index]))

    def close(self) -> None:
        self._tf.close()


class TiffReader:
    """:class:`~saxsdog.io.images.registry.FormatReader` for TIFF."""

    name = "tiff"
    suffixes: tuple[str, ...] = (".tif", ".tiff")
    compressible = False

    def sniff(self, head: bytes) -> bool:
        return head[:4] in MAGICS

    def open(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        if head[:4] in _CLASSIC:
            info = parse_tiff(path, f, size, head, expected_shape)
            if info.fast:
                return FastTiffSource(path, f, info, expected_shape)
        return TifffileSource(path, size, expected_shape)
