"""Encodings of detector frames in Dectris streams: bitshuffle-LZ4, LZ4, raw.

A Dectris stream (SIMPLON stream API v1) sends each frame's pixels as one data blob and
names its encoding in the ``dimage_d-1.0`` part: ``[bs<bits>-][lz4][<|>]``.

``"bs32-lz4<"`` (also ``bs16``, ``bs8``)
    Bitshuffle + LZ4, exactly the chunk format of the HDF5 bitshuffle filter (the same bytes
    sit in an Eiger HDF5 data file's chunks):

    * 12-byte header: uncompressed size in bytes (uint64, big-endian), block size in bytes
      (uint32, big-endian; default 8192, i.e. 2048 elements of 4 bytes);
    * then every block of ``block size`` elements, bit-transposed and LZ4-compressed, as
      ``<compressed size: uint32 big-endian><LZ4 block>``; the last, shorter block is
      rounded down to a multiple of 8 elements, and the remaining ``n % 8`` elements follow
      uncompressed.

    Some senders (the ``eiger-simulator`` package) leave the 12-byte header out; a blob
    whose first 8 bytes do not give the frame's size is read as such a header-less stream
    with the default block size.
``"lz4<"``
    One plain LZ4 block of the whole frame, without a size prefix.
``"<"``, ``">"`` or ``""``
    Raw pixels.

The trailing ``<``/``>`` gives the byte order of the pixels (little-/big-endian).

Decoding uses the ``bitshuffle`` package when it is installed (SIMD, fastest) and
otherwise ``lz4`` with a NumPy bit-unshuffle (:func:`bitunshuffle`); both are tested
against blobs made by ``hdf5plugin``'s bitshuffle filter.  Every block's size is checked
against the end of the blob before any C decoder reads the block (with bitshuffle, in the
same compiled pass that decodes it: :func:`_fused_decoder`), so malformed data raise
:class:`FrameDecodeError` instead of crashing the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FrameDecodeError",
    "parse_encoding",
    "decode_frame",
    "encode_frame",
    "bitunshuffle",
    "bitshuffle_available",
    "default_block_size",
    "hdf5plugin_bslz4",
    "hdf5plugin_h5lz4",
    "simd_path",
    "warm_up",
]

#: Pixel types a Dectris stream may announce.
SUPPORTED_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32")

_ENCODING = re.compile(r"(?:bs(?P<bits>8|16|32|64)-?|(?P<h5>h5))?(?P<lz4>lz4)?(?P<order>[<>])?")
_TARGET_BLOCK_BYTES = 8192  # bitshuffle's BSHUF_TARGET_BLOCK_SIZE_B
_BLOCKED_MULT = 8  # bitshuffle's BSHUF_BLOCKED_MULT
_MIN_BLOCK = 128  # bitshuffle's BSHUF_MIN_RECOMMEND_BLOCK


class FrameDecodeError(ValueError):
    """A frame's data blob does not match its announced encoding, type or shape."""


_omp = threading.local()


def _single_threaded_openmp() -> None:
    """Make bitshuffle's OpenMP loops run in the calling thread only.

    The parallelism of saxsdog comes from its worker processes; OpenMP threads on top
    would oversubscribe the cores, and a GNU OpenMP thread pool does not survive a fork.
    ``omp_set_num_threads`` applies to the calling thread, so this runs once per thread.
    """
    if getattr(_omp, "done", False):
        return
    _omp.done = True
    try:
        import bitshuffle  # noqa: PLC0415

        libs = Path(bitshuffle.__file__).resolve().parent.parent / "bitshuffle.libs"
        candidates = sorted(libs.glob("libgomp*.so*")) if libs.is_dir() else []
        name = str(candidates[0]) if candidates else ctypes.util.find_library("gomp")
        if name:
            ctypes.CDLL(name).omp_set_num_threads(1)
    except (ImportError, OSError, AttributeError):  # pragma: no cover - no OpenMP: nothing to limit
        pass


def _bitshuffle_module():
    try:
        import bitshuffle  # noqa: PLC0415 - optional, C extension
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    _single_threaded_openmp()
    return bitshuffle


def bitshuffle_available() -> bool:
    """Whether the ``bitshuffle`` package (the fast decoder) is importable."""
    return _bitshuffle_module() is not None


def parse_encoding(encoding: str | None) -> tuple[str, int | None, str]:
    """Split an encoding string into ``(kind, element bits, byte order)``.

    Parameters
    ----------
    encoding
        ``"bs32-lz4<"``, ``"lz4<"``, ``"h5lz4<"``, ``"<"``, ``""`` or ``None``.

    Returns
    -------
    tuple
        ``kind`` is ``"bslz4"``, ``"lz4"``, ``"h5lz4"`` or ``"raw"``; ``bits`` the bitshuffle element
        size in bits (``None`` unless bslz4); ``order`` ``"<"`` or ``">"`` (default ``"<"``).

    Raises
    ------
    FrameDecodeError
        Unknown encoding (e.g. bitshuffle without LZ4).
    """
    text = (encoding or "").strip()
    m = _ENCODING.fullmatch(text)
    if m is None or ((m.group("bits") or m.group("h5")) and not m.group("lz4")):
        raise FrameDecodeError(f"unknown encoding {encoding!r} (expected e.g. 'bs32-lz4<', 'lz4<' or '<')")
    order = m.group("order") or "<"
    if m.group("bits"):
        return "bslz4", int(m.group("bits")), order
    if m.group("h5"):
        return "h5lz4", None, order
    if m.group("lz4"):
        return "lz4", None, order
    return "raw", None, order


def default_block_size(itemsize: int) -> int:
    """bitshuffle's default block size in elements for an element size in bytes."""
    block = _TARGET_BLOCK_BYTES // itemsize
    block = (block // _BLOCKED_MULT) * _BLOCKED_MULT
    return max(block, _MIN_BLOCK)


def _dtype(dtype: Any, order: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise FrameDecodeError(f"unknown pixel type {dtype!r}") from exc
    if dt.kind not in "uif" or dt.itemsize > 8:
        raise FrameDecodeError(f"unsupported pixel type {dtype!r}")
    return dt.newbyteorder(order) if dt.itemsize > 1 else dt


def decode_frame(data: bytes | bytearray | memoryview, dtype: Any, shape: tuple[int, int],
                 encoding: str | None, implementation: str = "auto", out: np.ndarray | None = None,
                 buffer: Any = None) -> np.ndarray:
    """Decode one frame's data blob into a 2-D array.

    Parameters
    ----------
    data
        The blob as received.
    dtype
        Pixel type (``"uint32"`` ...).
    shape
        ``(rows, columns)`` in NumPy order.
    encoding
        See the module docstring.
    implementation
        For bitshuffle-LZ4: ``"bitshuffle"`` (the C package), ``"numpy"`` (``lz4`` + NumPy)
        or ``"auto"`` (the package when installed).
    out
        The array to decode into (C-contiguous, writeable, ``shape``, the native-order
        ``dtype``): bitshuffle-LZ4 is decoded straight into it, without a new 4 MB array
        per frame.  Returned.
    buffer
        Instead of ``out``: an object whose ``array(shape, dtype)`` gives that array (a
        worker's :class:`~saxsdog.io.images.ReadBuffer`, reused from frame to frame).

    Returns
    -------
    numpy.ndarray
        C-contiguous, native byte order, the given dtype and shape (writeable); ``out``
        (or the buffer's array) when given.

    Raises
    ------
    FrameDecodeError
        The blob does not decode to exactly ``rows × columns`` pixels of that type.
    ValueError
        ``out`` does not have the frame's shape and native dtype.
    """
    kind, bits, order = parse_encoding(encoding)
    dt = _dtype(dtype, order)
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise FrameDecodeError(f"bad frame shape {shape!r}") from exc
    if rows <= 0 or cols <= 0:
        raise FrameDecodeError(f"bad frame shape {shape!r}")
    n = rows * cols
    nbytes = n * dt.itemsize
    native = dt.newbyteorder("=")
    if out is None and buffer is not None:
        out = buffer.array((rows, cols), native)
    if out is not None and not (isinstance(out, np.ndarray) and out.shape == (rows, cols)
                                and out.dtype == native and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"cannot decode a {rows}×{cols} {native.name} frame into "
                         f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', type(out).__name__)}")
    buf = memoryview(data).cast("B")
    if kind == "raw":
        if buf.nbytes != nbytes:
            raise FrameDecodeError(f"raw frame of {buf.nbytes} bytes, expected {nbytes} "
                                   f"({rows}×{cols} {dt.name})")
        return _into(np.frombuffer(buf, dtype=dt).reshape(rows, cols), out)
    if kind == "h5lz4":
        return _into(np.frombuffer(_h5lz4_decompress(buf, nbytes), dtype=dt).reshape(rows, cols), out)
    if kind == "lz4":
        return _into(np.frombuffer(_lz4_decompress(buf, nbytes), dtype=dt).reshape(rows, cols), out)
    assert bits is not None
    if bits != dt.itemsize * 8:
        raise FrameDecodeError(f"encoding {encoding!r} is for {bits}-bit elements, but the pixel type "
                               f"{dt.name} has {dt.itemsize * 8} bits")
    if out is None:
        out = np.empty((rows, cols), dtype=native)
    _bslz4_decode(buf, dt, n, implementation, out.reshape(-1).view(np.uint8))
    if not dt.isnative:  # the bytes of big-endian pixels: swapped in place, no second array
        out.byteswap(inplace=True)
    return out


def _into(pixels: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``pixels`` (a read-only view, any byte order) as a new native array, or copied into ``out``."""
    if out is None:
        return pixels.astype(pixels.dtype.newbyteorder("="))  # always a copy: writeable, contiguous
    np.copyto(out, pixels)
    return out


def _lz4_decompress(buf: memoryview, size: int) -> bytes:
    import lz4.block  # noqa: PLC0415

    try:
        raw = lz4.block.decompress(buf, uncompressed_size=size)
    except Exception as exc:  # lz4.block.LZ4BlockError and friends
        raise FrameDecodeError(f"LZ4 data do not decode to {size} bytes: {exc}") from exc
    if len(raw) != size:
        raise FrameDecodeError(f"LZ4 data decode to {len(raw)} bytes, expected {size}")
    return raw


def _h5lz4_decompress(buf: memoryview, size: int) -> bytes:
    """LZ4 in the framing of the HDF5 LZ4 filter (stream v2's ``["lz4", 0, ...]``).

    12-byte header: total size (uint64, big-endian) and block size (uint32, big-endian);
    then per block ``<compressed size: uint32 big-endian><data>``, where a block whose
    compressed size equals its plain size is stored uncompressed.
    """
    import lz4.block  # noqa: PLC0415

    if buf.nbytes < 12:
        raise FrameDecodeError(f"LZ4 (HDF5 framing) data of {buf.nbytes} bytes have no header")
    total, block = struct.unpack_from(">QI", buf, 0)
    if total != size:
        raise FrameDecodeError(f"LZ4 (HDF5 framing) data hold {total} bytes, expected {size}")
    if block == 0:
        raise FrameDecodeError("LZ4 (HDF5 framing) block size is 0")
    pieces, pos, left = [], 12, total
    try:
        while left > 0:
            plain = min(block, left)
            if pos + 4 > buf.nbytes:
                raise FrameDecodeError(f"LZ4 (HDF5 framing) data end after {total - left} of {total} bytes")
            (csize,) = struct.unpack_from(">I", buf, pos)
            pos += 4
            if csize == 0 or pos + csize > buf.nbytes:
                raise FrameDecodeError(f"LZ4 (HDF5 framing) block claims {csize} bytes, "
                                       f"{buf.nbytes - pos} are left")
            chunk = buf[pos:pos + csize]
            piece = bytes(chunk) if csize == plain else lz4.block.decompress(chunk, uncompressed_size=plain)
            if len(piece) != plain:
                raise FrameDecodeError("an LZ4 (HDF5 framing) block decodes to the wrong size")
            pieces.append(piece)
            pos += csize
            left -= plain
    except FrameDecodeError:
        raise
    except Exception as exc:  # lz4.block.LZ4BlockError
        raise FrameDecodeError(f"LZ4 (HDF5 framing) block does not decode: {exc}") from exc
    if pos != buf.nbytes:
        raise FrameDecodeError(f"LZ4 (HDF5 framing) data have {buf.nbytes - pos} bytes too many")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _bslz4_layout(buf: memoryview, itemsize: int, n: int, want_blocks: bool = True
                  ) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Check a bitshuffle-LZ4 blob's framing.

    With ``want_blocks=False`` the block list may come back empty (a compiled check of the
    framing is enough when the C decoder does the rest).

    Returns
    -------
    (offset, block, blocks)
        Where the blocks start (12 with the header, 0 without), the block size in
        elements, and every block as ``(start, compressed size, elements)``; the
        ``n % 8`` left-over elements follow the last block raw.
    """
    nbytes = n * itemsize
    offset, block = _bslz4_header(buf, itemsize, n)
    sizes = [block] * (n // block)
    last = n % block
    last -= last % _BLOCKED_MULT
    if last:
        sizes.append(last)
    leftover = (n % _BLOCKED_MULT) * itemsize
    end = buf.nbytes - leftover
    scan = _block_scanner() if not want_blocks else None
    if scan is not None and end > offset:
        # compiled fast path (hundreds of blocks per frame); a blob it rejects is walked
        # again below for the precise message
        if scan(np.frombuffer(buf, dtype=np.uint8), offset, end, len(sizes)) == end:
            return offset, block, []
    pos = offset
    blocks: list[tuple[int, int, int]] = []
    for elems in sizes:
        if pos + 4 > end:
            raise FrameDecodeError(f"bitshuffle-LZ4 data end after {len(blocks)} of {len(sizes)} blocks "
                                   f"(frame of {nbytes} bytes expected)")
        (csize,) = struct.unpack_from(">I", buf, pos)
        if csize == 0 or pos + 4 + csize > end:
            raise FrameDecodeError(f"bitshuffle-LZ4 block {len(blocks)} claims {csize} bytes, "
                                   f"{end - pos - 4} are left")
        blocks.append((pos + 4, csize, elems))
        pos += 4 + csize
    if pos != end:
        raise FrameDecodeError(f"bitshuffle-LZ4 data have {end - pos} bytes more than {len(sizes)} blocks "
                               "and the left-over elements need")
    return offset, block, blocks


@functools.cache
def _block_scanner():
    """A compiled walk over the ``<size><LZ4 block>`` framing, or ``None`` without numba.

    ``scan(buf, pos, end, nblocks)`` returns the position after ``nblocks`` blocks, or -1
    when a size is zero or runs past ``end``.
    """
    try:
        import numba  # noqa: PLC0415
    except ImportError:  # pragma: no cover - numba is a dependency
        return None

    @numba.njit(cache=True, nogil=True)
    def scan(buf, pos, end, nblocks):  # pragma: no cover - compiled
        for _ in range(nblocks):
            if pos + 4 > end:
                return -1
            csize = ((np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16)
                     | (np.int64(buf[pos + 2]) << 8) | np.int64(buf[pos + 3]))
            if csize == 0 or pos + 4 + csize > end:
                return -1
            pos += 4 + csize
        return pos

    return scan



def bitunshuffle(raw: np.ndarray, itemsize: int) -> np.ndarray:
    """Undo bitshuffle's bit transposition of blocks (NumPy reference implementation).

    Parameters
    ----------
    raw
        ``uint8`` array of shape ``(nblocks, block × itemsize)``: decompressed blocks of
        ``block`` elements each (``block`` a multiple of 8).
    itemsize
        Element size in bytes.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(nblocks, block × itemsize)`` holding the elements'
        bytes in their original order.

    Notes
    -----
    A block of ``m`` elements is stored as ``itemsize × 8`` bit-rows: row ``(j, k)`` holds
    bit ``k`` of byte ``j`` of every element, eight elements per byte, least significant
    bit first (bitshuffle's ``trans_byte_elem`` → ``trans_bit_byte`` → ``trans_bitrow_eight``).
    """
    nblocks = raw.shape[0]
    m = raw.shape[1] // itemsize
    rows = raw.reshape(nblocks, itemsize, 8, m // 8)
    bits = np.unpackbits(rows, axis=3, bitorder="little")  # [block, byte j, bit k, element]
    out = np.packbits(bits.transpose(0, 3, 1, 2), axis=3, bitorder="little")  # [block, element, byte, 1]
    return out.reshape(nblocks, m * itemsize)


def _bslz4_decode(buf: memoryview, dt: np.dtype, n: int, implementation: str, target: np.ndarray) -> None:
    """Decode a bitshuffle-LZ4 blob of ``n`` elements of ``dt`` into ``target`` (``uint8``, ``n × itemsize``).

    The bytes land as the blob holds them (the caller swaps big-endian pixels).
    """
    if implementation not in ("auto", "bitshuffle", "numpy"):
        raise ValueError(f"unknown implementation {implementation!r}")
    bs = _bitshuffle_module() if implementation != "numpy" else None
    if implementation == "bitshuffle" and bs is None:
        raise ImportError("the bitshuffle package is not installed")
    if bs is not None:
        fused = _fused_decoder()
        if fused is not None and n * dt.itemsize < 1 << 31:  # LZ4 sizes are C ints
            _bslz4_decode_fused(fused, buf, dt.itemsize, n, target)
            return
    offset, block, blocks = _bslz4_layout(buf, dt.itemsize, n, want_blocks=bs is None)
    if bs is not None:
        body = np.frombuffer(buf, dtype=np.uint8)
        decompress = _c_decompress_lz4()
        if decompress is None:  # pragma: no cover - a bitshuffle build without the C symbol
            try:
                target[:] = bs.decompress_lz4(body[offset:], (n,), dt, block).view(np.uint8)
            except Exception as exc:  # noqa: BLE001 - the C decoder reports bad LZ4 data as errors
                raise FrameDecodeError(f"bitshuffle-LZ4 data do not decode: {exc}") from exc
            return
        # straight into the target, the GIL released (the framing was checked above: the C
        # decoder trusts the block sizes)
        consumed = decompress(body.ctypes.data + offset, target.ctypes.data, n, dt.itemsize, block)
        if consumed != buf.nbytes - offset:
            raise FrameDecodeError("bitshuffle-LZ4 data do not decode" + (
                f" (error {consumed})" if consumed < 0 else f": {consumed} of {buf.nbytes - offset} bytes used"))
        return
    import lz4.block  # noqa: PLC0415

    itemsize = dt.itemsize
    out = target
    full = [b for b in blocks if b[2] == block]
    try:
        if full:
            raw = b"".join(lz4.block.decompress(buf[s:s + c], uncompressed_size=block * itemsize)
                           for s, c, _ in full)
            if len(raw) != len(full) * block * itemsize:
                raise FrameDecodeError("a bitshuffle-LZ4 block decodes to the wrong size")
            arr = np.frombuffer(raw, dtype=np.uint8).reshape(len(full), block * itemsize)
            out[: len(full) * block * itemsize] = bitunshuffle(arr, itemsize).ravel()
        pos = len(full) * block * itemsize
        for s, c, elems in blocks[len(full):]:
            raw = lz4.block.decompress(buf[s:s + c], uncompressed_size=elems * itemsize)
            if len(raw) != elems * itemsize:
                raise FrameDecodeError("the last bitshuffle-LZ4 block decodes to the wrong size")
            arr = np.frombuffer(raw, dtype=np.uint8).reshape(1, elems * itemsize)
            out[pos:pos + elems * itemsize] = bitunshuffle(arr, itemsize).ravel()
            pos += elems * itemsize
    except FrameDecodeError:
        raise
    except Exception as exc:  # lz4.block.LZ4BlockError
        raise FrameDecodeError(f"bitshuffle-LZ4 block does not decode: {exc}") from exc
    leftover = n * itemsize - pos
    if leftover:
        out[pos:] = np.frombuffer(buf, dtype=np.uint8, offset=buf.nbytes - leftover)


def _bslz4_header(buf: memoryview, itemsize: int, n: int) -> tuple[int, int]:
    """Where a bitshuffle-LZ4 blob's blocks start (12 with the header, 0 without) and its
    block size in elements (checked: a multiple of 8 elements)."""
    if buf.nbytes >= 12:
        total, block_bytes = struct.unpack_from(">QI", buf, 0)
        if total == n * itemsize:
            if block_bytes == 0 or block_bytes % itemsize:
                raise FrameDecodeError(f"bitshuffle header gives a block size of {block_bytes} bytes, "
                                       f"not a multiple of the {itemsize}-byte elements")
            block = block_bytes // itemsize
            if block % _BLOCKED_MULT:
                raise FrameDecodeError(f"bitshuffle block size {block} is not a multiple of 8 elements")
            return 12, block
    return 0, default_block_size(itemsize)


_scratch = threading.local()


def _scratch_buffers(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Two scratch arrays of at least ``nbytes`` for one block, kept per thread (reused)."""
    have = getattr(_scratch, "pair", None)
    if have is None or have[0].nbytes < nbytes:
        have = _scratch.pair = (np.empty(max(nbytes, 1 << 16), np.uint8), np.empty(max(nbytes, 1 << 16), np.uint8))
    return have


def _bslz4_decode_fused(fused: tuple, buf: memoryview, itemsize: int, n: int, target: np.ndarray) -> None:
    """bitshuffle-LZ4 through :func:`_fused_decoder`: the framing checked block by block as it
    is decoded (one pass over the blob), straight into ``target``."""
    kernel, lz4, bitrow, shuffle = fused
    offset, block = _bslz4_header(buf, itemsize, n)
    leftover = (n % _BLOCKED_MULT) * itemsize
    end = buf.nbytes - leftover
    body = np.frombuffer(buf, dtype=np.uint8)
    tmp1, tmp2 = _scratch_buffers(min(block, n) * itemsize)
    pos = kernel(lz4, bitrow, shuffle, body, offset, end, target, n, itemsize, block, tmp1, tmp2) \
        if end >= offset else -1
    if pos == end:
        if leftover:
            target[n * itemsize - leftover:] = body[end:]
        return
    if pos != -3:  # a framing error: the detailed walk names it
        _bslz4_layout(buf, itemsize, n, want_blocks=True)
        raise FrameDecodeError("bitshuffle-LZ4 data do not match their framing")  # pragma: no cover
    raise FrameDecodeError("bitshuffle-LZ4 data do not decode (a block's LZ4 data are corrupt)")


#: ``bshuf_untrans_bit_elem``'s two steps per SIMD build of bitshuffle (its ``_AVX512`` variant
#: transposes byte rows with the AVX2 code): what :func:`_fused_decoder` calls per block.
_UNTRANSPOSE_STEPS = {
    "AVX512": ("bshuf_trans_byte_bitrow_AVX", "bshuf_shuffle_bit_eightelem_AVX512"),
    "AVX2": ("bshuf_trans_byte_bitrow_AVX", "bshuf_shuffle_bit_eightelem_AVX"),
    "SSE2": ("bshuf_trans_byte_bitrow_SSE", "bshuf_shuffle_bit_eightelem_SSE"),
    "NEON": ("bshuf_trans_byte_bitrow_NEON", "bshuf_shuffle_bit_eightelem_NEON"),
    "scalar": ("bshuf_trans_byte_bitrow_scal", "bshuf_shuffle_bit_eightelem_scal"),
}


@functools.cache
def _fused_decoder() -> tuple | None:
    """A bitshuffle-LZ4 decoder that checks the framing as it goes, or ``None``.

    bitshuffle's own ``bshuf_decompress_lz4`` trusts every block's size field, so a blob had
    to be walked once before it (a chain of ~500 dependent reads spread over the frame's
    megabyte: cache misses, 0.05–0.1 ms per Pilatus 1M frame in a worker) and was then read
    again; per block it also allocates two scratch buffers and takes OpenMP locks.  Here a
    compiled loop (numba, no GIL) reads each block's size, checks it against the end of the
    blob, and calls LZ4's bounds-checked ``LZ4_decompress_safe`` and bitshuffle's two SIMD
    bit-untranspose steps (the same functions ``bshuf_untrans_bit_elem`` calls) on reused
    scratch buffers, all exported by the bitshuffle wheel.

    Returns ``(kernel, lz4, bit-row step, shuffle step)``; ``None`` without numba, without
    the symbols, or when a self-check against ``bshuf_decompress_lz4`` on small frames of
    1-, 2- and 4-byte elements disagrees (then the walk and bitshuffle's decoder are used).
    """
    bs = _bitshuffle_module()
    plain = _c_decompress_lz4()
    steps = _UNTRANSPOSE_STEPS.get(simd_path())
    if bs is None or plain is None or steps is None:
        return None
    try:
        import numba  # noqa: PLC0415

        lib = ctypes.CDLL(bs.ext.__file__)
        size_t = ctypes.c_size_t  # pointers as integers: numba passes them in the same registers
        lz4_type = ctypes.CFUNCTYPE(ctypes.c_int, size_t, size_t, ctypes.c_int, ctypes.c_int)
        step_type = ctypes.CFUNCTYPE(ctypes.c_int64, size_t, size_t, size_t, size_t)
        lz4 = lz4_type(_address(lib.LZ4_decompress_safe))
        bitrow = step_type(_address(getattr(lib, steps[0])))
        shuffle = step_type(_address(getattr(lib, steps[1])))
    except (ImportError, OSError, AttributeError):  # pragma: no cover - depends on the build
        return None
    fused = (_fused_kernel(numba), lz4, bitrow, shuffle)
    try:
        rng = np.random.default_rng(3)
        for dtype in (np.uint8, np.uint16, np.uint32):
            a = rng.poisson(30.0, size=(37, 1231)).astype(dtype)  # full blocks, a short one, left-overs
            blob = encode_frame(a, f"bs{8 * a.itemsize}-lz4<")
            want = np.empty(a.size * a.itemsize, np.uint8)
            got = np.empty_like(want)
            plain(np.frombuffer(blob, np.uint8).ctypes.data + 12, want.ctypes.data, a.size, a.itemsize,
                  default_block_size(a.itemsize))
            _bslz4_decode_fused(fused, memoryview(blob), a.itemsize, a.size, got)
            if not (np.array_equal(got, want) and np.array_equal(got.view(dtype), a.ravel())):
                raise FrameDecodeError(f"{a.dtype} frame decoded differently")  # pragma: no cover
    except Exception:  # pragma: no cover - a build whose steps differ: the plain path
        import logging  # noqa: PLC0415

        logging.getLogger(__name__).warning("the fused bitshuffle-LZ4 decoder is not used", exc_info=True)
        return None
    return fused


def _address(fn: Any) -> int:
    """The address of a C function of a loaded library."""
    address = ctypes.cast(fn, ctypes.c_void_p).value
    if not address:  # pragma: no cover - a symbol resolves to an address
        raise AttributeError("a C function without an address")
    return address


def _fused_kernel(numba):
    """The compiled block loop of :func:`_fused_decoder` (the C functions are arguments,
    so the compiled code can be cached on disk)."""

    @numba.njit(cache=True, nogil=True)
    def decode_blocks(lz4, bitrow, shuffle, buf, pos, end, out, n, itemsize, block, tmp1, tmp2):  # pragma: no cover
        # returns the position after the last block (== end when the framing is exact),
        # -1 when a block's size runs past the end, -2 when it is 0, -3 when LZ4 fails
        src = buf.ctypes.data
        dst = out.ctypes.data
        t1 = tmp1.ctypes.data
        t2 = tmp2.ctypes.data
        done = 0
        while True:
            elems = block if done + block <= n else (n - done) - (n - done) % 8
            if elems <= 0:
                return pos
            if pos + 4 > end:
                return -1
            csize = ((np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16)
                     | (np.int64(buf[pos + 2]) << 8) | np.int64(buf[pos + 3]))
            if csize == 0:
                return -2
            if pos + 4 + csize > end:
                return -1
            nbytes = elems * itemsize
            if lz4(src + pos + 4, t1, np.int32(csize), np.int32(nbytes)) != nbytes:
                return -3
            if bitrow(t1, t2, elems, itemsize) < 0 or shuffle(t2, dst + done * itemsize, elems, itemsize) < 0:
                return -3
            pos += 4 + csize
            done += elems

    return decode_blocks


@functools.cache
def _c_decompress_lz4():
    """bitshuffle's own C entry point ``bshuf_decompress_lz4`` (its SIMD build), or ``None``.

    The Python wrapper ``bitshuffle.decompress_lz4`` allocates a new array per call;
    the C function writes into memory we give it: the worker's reused frame buffer.
    ``bshuf_decompress_lz4(in, out, elements, element size, block size)`` returns the
    bytes of ``in`` it used, or a negative error code.
    """
    bs = _bitshuffle_module()
    if bs is None:
        return None
    try:
        fn = ctypes.CDLL(bs.ext.__file__).bshuf_decompress_lz4
    except (OSError, AttributeError):  # pragma: no cover - depends on the build
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
    return fn


def simd_path() -> str:
    """The bit-transpose instructions the installed bitshuffle uses (``AVX512``, ``AVX2``,
    ``SSE2``, ``NEON``), ``scalar``, or ``numpy`` without the package."""
    bs = _bitshuffle_module()
    if bs is None:
        return "numpy"
    for name in ("AVX512", "AVX2", "SSE2", "NEON"):
        check = getattr(bs, f"using_{name}", None)
        if check is not None and check():
            return name
    return "scalar"


def warm_up() -> None:
    """Load the decoder and its compiled framing check for every argument type a frame
    brings (a read-only blob, a blob in writeable shared memory), so that the first
    frame of a process does not pay for it (tens of milliseconds)."""
    a = np.arange(64, dtype=np.uint32).reshape(8, 8)
    blob = encode_frame(a, "bs32-lz4<") if bitshuffle_available() else None
    if blob is None:
        return
    out = np.empty_like(a)
    for data in (blob, bytearray(blob)):  # read-only and writeable: two compiled framing checks
        decode_frame(data, "uint32", a.shape, "bs32-lz4<", out=out)


# --------------------------------------------------------------------------- #
# Encoding (senders, tests, benchmarks)
# --------------------------------------------------------------------------- #


def hdf5plugin_bslz4(array: np.ndarray) -> bytes:
    """Bitshuffle-LZ4 blob of a 2-D array made by ``hdf5plugin``'s HDF5 filter.

    The frame is written as one chunk of an in-memory HDF5 dataset and the compressed chunk
    is read back raw: exactly what an Eiger stores in its data files and sends as a
    ``bs<bits>-lz4<`` stream blob (12-byte header included).
    """
    import hdf5plugin  # noqa: PLC0415

    return _hdf5plugin_chunk(array, hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))


def hdf5plugin_h5lz4(array: np.ndarray) -> bytes:
    """LZ4 blob in the HDF5 LZ4 filter's framing, made by ``hdf5plugin`` (``h5lz4<``)."""
    import hdf5plugin  # noqa: PLC0415

    return _hdf5plugin_chunk(array, hdf5plugin.LZ4())


def _hdf5plugin_chunk(array: np.ndarray, compression) -> bytes:
    import h5py  # noqa: PLC0415

    a = np.ascontiguousarray(array)
    with h5py.File(f"saxsdog-chunk-{id(a)}.h5", "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("d", data=a, chunks=a.shape, **compression)
        _mask, chunk = ds.id.read_direct_chunk((0,) * a.ndim)
    return bytes(chunk)


def encode_frame(array: np.ndarray, encoding: str, implementation: str = "auto") -> bytes:
    """Encode a frame as a Dectris stream would (the inverse of :func:`decode_frame`).

    Parameters
    ----------
    array
        The pixels (2-D).
    encoding
        ``"bs32-lz4<"`` (the element size must match the dtype), ``"lz4<"``, ``"<"`` ...
    implementation
        For bitshuffle-LZ4: ``"bitshuffle"``, ``"hdf5plugin"`` or ``"auto"``.

    Returns
    -------
    bytes
        The data blob (with the 12-byte header for bitshuffle-LZ4).
    """
    kind, bits, order = parse_encoding(encoding)
    a = np.ascontiguousarray(array)
    if a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder("<" if order == "<" else ">"))
    if kind == "raw":
        return a.tobytes()
    if kind == "lz4":
        import lz4.block  # noqa: PLC0415

        return lz4.block.compress(a.tobytes(), store_size=False)
    if kind == "h5lz4":
        return hdf5plugin_h5lz4(a)
    if bits != a.dtype.itemsize * 8:
        raise ValueError(f"encoding {encoding!r} needs {bits}-bit pixels, got {a.dtype}")
    bs = _bitshuffle_module() if implementation in ("auto", "bitshuffle") else None
    if bs is None:
        if implementation == "bitshuffle":
            raise ImportError("the bitshuffle package is not installed")
        return hdf5plugin_bslz4(a)
    block = default_block_size(a.dtype.itemsize)
    body = bs.compress_lz4(a.reshape(-1), block)
    return struct.pack(">QI", a.nbytes, block * a.dtype.itemsize) + body.tobytes()
