"""CBF (Pilatus/Eiger ``x-CBF_BYTE_OFFSET``): a hand-written, size-checked reader.

The text and MIME headers are parsed here from a bounded number of bytes; the declared
dimensions and binary size are checked against the expected image before the binary
section is read, and only that section (``X-Binary-Size`` bytes) is read. The
``Content-MD5`` checksum is verified. The byte-offset decoding itself is fabio's
compiled decoder. ``.cbf.gz`` / ``.cbf.bz2`` are decompressed with a cap of the bytes
the image can need.
"""

from __future__ import annotations

import base64
import hashlib
import re

import numpy as np

from saxsdog.errors import CorruptImageError, IncompleteImageError

from ._base import (
    HEADER_SLACK,
    MAX_IMAGE_BYTES,
    Frame,
    Shape,
    SourceBase,
    check_declared,
    check_frame_index,
    check_shape,
    dims,
    metadata_from_keys,
    read_exactly,
)
from ._compressed import BoundedStream, compression_of

MAGIC = b"###CBF"
BINARY_MARKER = b"\x0c\x1a\x04\xd5"
_SECTION = b"--CIF-BINARY-FORMAT-SECTION--"
#: The text and MIME headers must end (the binary marker appear) within this many bytes.
HEADER_MAX = HEADER_SLACK
#: Worst case of byte-offset compression: a 1-byte escape, a 2-byte escape, 8 bytes.
_WORST_BYTES_PER_PIXEL = 11
_TYPES = {
    "signed 8-bit integer": "i1", "unsigned 8-bit integer": "u1",
    "signed 16-bit integer": "i2", "unsigned 16-bit integer": "u2",
    "signed 32-bit integer": "i4", "unsigned 32-bit integer": "u4",
    "signed 64-bit integer": "i8", "unsigned 64-bit integer": "u8",
    "signed 32-bit real ieee": "f4", "signed 64-bit real ieee": "f8",
}
_RE_MIME = re.compile(rb"^\s*([A-Za-z0-9-]+)\s*:\s*(.*?)\s*$", re.MULTILINE)


def looks_like_cbf(head: bytes) -> bool:
    """Magic test: ``###CBF``, a prefix of it, or a CIF with an ``_array_data`` block."""
    return head.startswith(MAGIC) or MAGIC.startswith(head) or (
        b"_array_data" in head and b"data_" in head)


def _max_file_bytes(expected_shape: Shape | None) -> int:
    if expected_shape is None:
        return MAX_IMAGE_BYTES
    return int(expected_shape[0]) * int(expected_shape[1]) * _WORST_BYTES_PER_PIXEL + HEADER_SLACK


class CbfSource(SourceBase):
    """A CBF file whose header has been parsed and checked; pixels read on demand."""

    def __init__(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        self.path, self._expected = path, expected_shape
        self._stream: BoundedStream | None = None
        self._f = f
        kind = compression_of(head)
        limit = _max_file_bytes(expected_shape)
        if kind is None:
            if size > limit:
                where = f"a {dims(expected_shape)}" if expected_shape else "any"
                raise CorruptImageError(
                    path, f"not a {dims(expected_shape)} image: the file has {size} bytes, more "
                          f"than {where} CBF image can need ({limit}); not read" if expected_shape
                    else f"the file has {size} bytes, more than any CBF image may need "
                         f"({limit}); not read")
            text = self._scan_plain(head, size)
        else:
            self._stream = BoundedStream(path, f, kind)
            text = self._scan_compressed()
        self._parse(text)

    # -- header ------------------------------------------------------------- #
    def _scan_plain(self, head: bytes, size: int) -> bytes:
        buf = head
        while BINARY_MARKER not in buf and len(buf) < min(size, HEADER_MAX):
            more = read_exactly(self._f, len(buf), min(1 << 16, HEADER_MAX - len(buf)))
            if not more:
                break
            buf += more
        self._complete_after = size
        return self._head_until_marker(buf, size)

    def _scan_compressed(self) -> bytes:
        assert self._stream is not None
        n = 1 << 16
        buf = self._stream.read_prefix(n)
        while BINARY_MARKER not in buf and n < HEADER_MAX and not self._stream.eof:
            n = min(4 * n, HEADER_MAX)
            buf = self._stream.read_prefix(n)
        if BINARY_MARKER not in buf and not self._stream.eof and len(buf) < HEADER_MAX:
            raise IncompleteImageError(
                self.path, "compressed file is truncated; it is probably still being written")
        return self._head_until_marker(buf, len(buf) if self._stream.eof else HEADER_MAX + 1)

    def _head_until_marker(self, buf: bytes, size: int) -> bytes:
        pos = buf.find(BINARY_MARKER)
        if pos < 0:
            if len(buf) >= HEADER_MAX and size > HEADER_MAX:
                raise CorruptImageError(
                    self.path, f"not a CBF image: no binary section within the first "
                               f"{HEADER_MAX} bytes; not read further")
            if looks_like_cbf(buf[:64]) or b"_array_data" in buf:
                raise IncompleteImageError(
                    self.path, "CBF binary section has not been written yet (file is truncated)")
            raise CorruptImageError(self.path, "not a CBF file: it has no binary data section")
        self._begin = pos + len(BINARY_MARKER)
        return buf[:pos]

    def _parse(self, text: bytes) -> None:
        start = text.rfind(_SECTION)
        mime = text[max(start, 0):]
        keys = {k.decode("ascii", "replace"): v.decode("ascii", "replace").strip('"')
                for k, v in _RE_MIME.findall(mime)}
        self.mime = keys
        self.cif_text = text[: max(start, 0)].decode("utf-8", "replace")
        try:
            cols = int(keys["X-Binary-Size-Fastest-Dimension"])
            rows = int(keys["X-Binary-Size-Second-Dimension"])
            self._binsize = int(keys["X-Binary-Size"])
        except (KeyError, ValueError):
            raise CorruptImageError(
                self.path, "CBF header lacks X-Binary-Size, X-Binary-Size-Fastest-Dimension "
                           "or X-Binary-Size-Second-Dimension") from None
        etype = " ".join(keys.get("X-Binary-Element-Type", "signed 32-bit integer").lower().split())
        if etype not in _TYPES:
            raise CorruptImageError(self.path, f"unsupported CBF element type {etype!r}")
        self.dtype = np.dtype("<" + _TYPES[etype])
        self.shape = (rows, cols)
        check_declared(self.path, self.shape, self._expected, itemsize=self.dtype.itemsize)
        most = rows * cols * _WORST_BYTES_PER_PIXEL + 64
        if self._binsize > most:
            raise CorruptImageError(
                self.path, f"CBF header declares {self._binsize} bytes of binary data, more than "
                           f"a {dims(self.shape)} image can need ({most}); not read")
        content_type = keys.get("Content-Type", "")
        if "x-cbf_byte_offset" not in content_type.lower() and "conversions" in content_type:
            raise CorruptImageError(self.path, f"unsupported CBF compression ({content_type})")

    # -- pixels ------------------------------------------------------------- #
    def _binary(self) -> bytes:
        need = self._begin + self._binsize
        if self._stream is None:
            raw = read_exactly(self._f, self._begin, self._binsize)
            total = self._complete_after
        else:
            self._stream.read_prefix(need)
            raw = bytes(self._stream.data[self._begin:need])
            total = len(self._stream.data)
        if len(raw) < self._binsize:
            raise IncompleteImageError(
                self.path,
                f"file is truncated: it has {total} bytes but its CBF header announces binary "
                f"data up to byte {need}; it is probably still being written")
        md5 = self.mime.get("Content-MD5")
        if md5:
            got = base64.b64encode(hashlib.md5(raw).digest()).decode()
            if got != md5:
                raise CorruptImageError(
                    self.path, f"CBF binary data fails its MD5 checksum (header {md5}, data "
                               f"{got}): the file is damaged")
        return raw

    @property
    def nframes(self) -> int:
        return 1

    def frame(self, index: int) -> Frame:
        check_frame_index(self.path, index, 1)
        check_shape(self.path, self.shape, self._expected, "header declares")
        raw = self._binary()
        from fabio.compression import decByteOffset

        n = self.shape[0] * self.shape[1]
        try:
            data = decByteOffset(raw, size=n, dtype="int32" if self.dtype.name == "int32" else "int64")
        except Exception as exc:  # noqa: BLE001 - the compiled decoder raises anything
            raise CorruptImageError(self.path, f"CBF byte-offset data cannot be decoded: {exc}") from exc
        data = np.ascontiguousarray(data, dtype=self.dtype.newbyteorder("="))
        if data.size != n:
            raise CorruptImageError(self.path, f"CBF binary data decodes to {data.size} pixels, "
                                               f"the header declares {dims(self.shape)}")
        return Frame(data=data.reshape(self.shape), path=self.path, index=0, nframes=1,
                     metadata=self.header(0))

    def header(self, index: int = 0) -> dict:
        return metadata_from_keys({"text": self.cif_text, **self.mime})


class CbfReader:
    """:class:`~saxsdog.io.images.registry.FormatReader` for CBF."""

    name = "cbf"
    suffixes: tuple[str, ...] = (".cbf", ".cbf.gz", ".cbf.bz2")
    compressible = True

    def sniff(self, head: bytes) -> bool:
        return looks_like_cbf(head)

    def open(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        return CbfSource(path, f, size, head, expected_shape)
