"""Bounded decompression of ``.gz`` / ``.bz2`` image files.

A few megabytes of gzip can expand to gigabytes; a reader never asks for more than
the bytes the expected image (plus header slack) can need, and a stream that would
give more is refused instead of being expanded.
"""

from __future__ import annotations

import bz2
import zlib
from typing import Any

from saxsdog.errors import CorruptImageError, IncompleteImageError

_CHUNK = 1 << 20


def compression_of(head: bytes) -> str | None:
    """``"gz"``, ``"bz2"`` or ``None`` judged by the magic bytes."""
    if head[:2] == b"\x1f\x8b":
        return "gz"
    if head[:3] == b"BZh":
        return "bz2"
    return None


def compression_prefix(head: bytes) -> bool:
    """Whether ``head`` is too short to tell but could start a compressed stream."""
    return len(head) < 3 and (b"\x1f\x8b".startswith(head) or b"BZh".startswith(head))


class BoundedStream:
    """Decompress an open compressed file on demand, never beyond what is asked for.

    Parameters
    ----------
    path
        For error messages.
    f
        The open (unbuffered, binary) file, read from its start.
    kind
        ``"gz"`` or ``"bz2"``.
    """

    def __init__(self, path: str, f, kind: str):
        self.path, self._f, self.kind = path, f, kind
        self._d: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if kind == "gz" else bz2.BZ2Decompressor()
        self._pending = b""  # compressed input not yet fed
        self.data = bytearray()
        self.eof = False
        self._input_done = False
        f.seek(0)

    def _feed(self, want: int) -> None:
        d = self._d
        while not self.eof and len(self.data) < want:
            if not self._pending:
                if self.kind == "gz" and d.unconsumed_tail:
                    self._pending = d.unconsumed_tail
                elif self.kind == "bz2" and not d.needs_input:
                    self._pending = b""
                else:
                    chunk = self._f.read(_CHUNK)
                    if not chunk:
                        self._input_done = True
                        return
                    self._pending = chunk
            room = want - len(self.data)
            try:
                if self.kind == "gz":
                    out = d.decompress(self._pending, room)
                    self._pending = d.unconsumed_tail
                    self.eof = d.eof
                else:
                    out = d.decompress(self._pending, max_length=room)
                    self._pending = b""
                    self.eof = d.eof
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                raise CorruptImageError(self.path, f"damaged {self.kind} stream ({exc})") from exc
            self.data += out

    def read_prefix(self, n: int) -> bytes:
        """Up to the first ``n`` decompressed bytes (fewer if the stream is shorter)."""
        self._feed(n)
        return bytes(self.data[:n])

    def read_all(self, limit: int, what: str) -> bytes:
        """The whole decompressed content, refused if it exceeds ``limit`` bytes.

        Raises
        ------
        CorruptImageError
            More than ``limit`` bytes (``what`` says what the limit is for).
        IncompleteImageError
            The compressed stream stops before its end (still being written).
        """
        self._feed(limit + 1)
        if len(self.data) > limit:
            raise CorruptImageError(
                self.path, f"decompresses to more than {limit} bytes, more than {what} can need; "
                           "not expanded further")
        if not self.eof:
            raise IncompleteImageError(
                self.path, "compressed file is truncated; it is probably still being written")
        return bytes(self.data)
