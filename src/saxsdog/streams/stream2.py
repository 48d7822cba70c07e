"""Dectris stream v2 (SIMPLON 2022.1+): one CBOR message per ZeroMQ message.

Messages are CBOR maps with a ``type``:

``start`` (arm)
    ``series_id``, ``series_unique_id``, ``channels`` (channel names in data order),
    ``count_time``, ``frame_time``, ``incident_wavelength`` (Å), ``image_size_x/y``, ...
``image`` (one exposure)
    ``series_id``, ``image_id``, ``start_time`` / ``stop_time`` / ``real_time`` as rationals
    ``[numerator, denominator]`` in seconds, and ``data``: channel name → multi-dimensional
    array (RFC 8746: tag 40 ``[[rows, columns], typed array]``, row-major), whose typed
    array (tags 64–87) holds the pixels as a byte string, or compressed inside tag 56500
    ``["bslz4", element size, bytes]`` (bitshuffle-LZ4, HDF5 filter framing) or
    ``["lz4", 0, bytes]`` (LZ4 HDF5 filter framing).
``end`` (disarm)
    ``series_id``.

Parsing keeps the pixels compressed: the frame's blob (a memoryview) and its encoding
(``bs32-lz4<``, ``h5lz4<``, ``<`` ...) go to the workers exactly as with stream v1.  Images carry every
active channel; the first one (in the start message's ``channels`` order) is integrated.

Messages are read by a small CBOR reader of our own (:func:`_read`) that gives byte strings
as views of the received message: ``cbor2`` copies every byte string, a megabyte per
Pilatus 1M frame (0.25–0.5 ms of the receiving thread per frame).  What it does not know
(indefinite lengths, tags other than the ones above and the self-describe marker, deep
nesting) goes to ``cbor2``, which parses it as before.
"""

from __future__ import annotations

import datetime
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .messages import SeriesEnd, SeriesHeader, StreamFormatError, StreamFrame

__all__ = ["parse_message_v2", "encode_start", "encode_image", "encode_end", "is_v2", "ImageTemplate"]

#: RFC 8746 typed-array tags: tag → (NumPy type name, byte order).
TYPED_ARRAY_TAGS = {
    64: ("uint8", "<"), 65: ("uint16", ">"), 66: ("uint32", ">"), 72: ("int8", "<"),
    73: ("int16", ">"), 74: ("int32", ">"), 81: ("float32", ">"),
    69: ("uint16", "<"), 70: ("uint32", "<"), 77: ("int16", "<"), 78: ("int32", "<"),
    85: ("float32", "<"),
}
_TAG_OF = {v: k for k, v in TYPED_ARRAY_TAGS.items()}
MULTI_DIM_ROW_MAJOR = 40
DECTRIS_COMPRESSION = 56500
SELF_DESCRIBE_TAG = 55799
SELF_DESCRIBE = b"\xd9\xd9\xf7"  # how tag 55799 starts a message

#: Scalar start-message fields kept as the series configuration (v1 names where they differ).
_CONFIG_FIELDS = {"count_time": "count_time", "frame_time": "frame_time",
                  "incident_wavelength": "wavelength", "incident_energy": "incident_energy",
                  "beam_center_x": "beam_center_x", "beam_center_y": "beam_center_y",
                  "pixel_size_x": "x_pixel_size", "pixel_size_y": "y_pixel_size",
                  "detector_description": "description", "detector_serial_number": "detector_number",
                  "number_of_images": "nimages", "image_size_x": "x_pixels_in_detector",
                  "image_size_y": "y_pixels_in_detector", "sensor_material": "sensor_material",
                  "sensor_thickness": "sensor_thickness", "saturation_value": "countrate_correction_count_cutoff",
                  "series_unique_id": "series_unique_id", "arm_date": "data_collection_date"}


class _Compressed:
    """Tag 56500 content, kept compressed."""

    __slots__ = ("algorithm", "modifier", "data")

    def __init__(self, value: Any):
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str)
                and isinstance(value[1], int) and isinstance(value[2], (bytes, bytearray, memoryview))):
            raise StreamFormatError("tag 56500 is not [algorithm, modifier, bytes]")
        self.algorithm, self.modifier, self.data = value


class _Typed:
    """A typed array (RFC 8746): pixel type, byte order and its (possibly compressed) bytes."""

    __slots__ = ("dtype", "order", "content")

    def __init__(self, tag: int, content: Any):
        self.dtype, self.order = TYPED_ARRAY_TAGS[tag]
        if not isinstance(content, (bytes, bytearray, memoryview, _Compressed)):
            raise StreamFormatError(f"typed array (tag {tag}) holds no byte string")
        self.content = content


class _MultiDim:
    __slots__ = ("dims", "typed")

    def __init__(self, value: Any):
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (list, tuple))):
            raise StreamFormatError("tag 40 is not [dimensions, array]")
        self.dims = [d for d in value[0]]
        self.typed = value[1]


def _tag_hook(*args: Any) -> Any:
    # cbor2 calls hook(decoder, tag) in 5.x and hook(tag, immutable) in 6.x
    import cbor2

    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    if tag.tag == SELF_DESCRIBE_TAG:  # "self-described CBOR" marker in front of a message
        return tag.value
    if tag.tag == DECTRIS_COMPRESSION:
        return _Compressed(tag.value)
    if tag.tag in TYPED_ARRAY_TAGS:
        return _Typed(tag.tag, tag.value)
    if tag.tag == MULTI_DIM_ROW_MAJOR:
        return _MultiDim(tag.value)
    return tag


class _NotOurs(Exception):
    """The fast reader does not handle this message: ``cbor2`` parses it."""


class _Malformed(Exception):
    """The message is not well-formed CBOR."""


_HALF = struct.Struct(">e")
_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")
_MAX_DEPTH = 32
_SIMPLE = {20: False, 21: True, 22: None, 23: None}


def _read(buf: memoryview, pos: int, depth: int = 0) -> tuple[Any, int]:
    """One CBOR data item at ``pos`` of ``buf`` (a ``B`` memoryview): ``(value, next position)``.

    Byte strings come back as memoryviews of ``buf`` (no copy); tags 40, 56500 and the
    typed arrays become :class:`_MultiDim`, :class:`_Compressed`, :class:`_Typed` as with
    ``cbor2``'s tag hook.  Raises :class:`_NotOurs` for what it leaves to ``cbor2`` and
    :class:`_Malformed` for data that end early.
    """
    if depth > _MAX_DEPTH:
        raise _NotOurs
    end = buf.nbytes
    if pos >= end:
        raise _Malformed("the data end inside an item")
    initial = buf[pos]
    major, info = initial >> 5, initial & 31
    pos += 1
    if info < 24:
        arg = info
    elif info <= 27:
        width = 1 << (info - 24)
        if pos + width > end:
            raise _Malformed("the data end inside an item's head")
        if major == 7 and info > 24:  # a float: half, single or double precision
            fmt = _HALF if info == 25 else (_FLOAT if info == 26 else _DOUBLE)
            return fmt.unpack_from(buf, pos)[0], pos + width
        arg = int.from_bytes(buf[pos:pos + width], "big")
        pos += width
    else:
        raise _NotOurs  # indefinite length (31) or reserved
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if pos + arg > end:
            raise _Malformed(f"a string of {arg} bytes runs past the message's end")
        chunk = buf[pos:pos + arg]
        if major == 2:
            return chunk, pos + arg
        try:
            return str(chunk, "utf-8"), pos + arg
        except UnicodeDecodeError as exc:
            raise _Malformed(f"a text string is not UTF-8: {exc}") from None
    if major == 4:
        items = []
        for _ in range(arg):
            value, pos = _read(buf, pos, depth + 1)
            items.append(value)
        return items, pos
    if major == 5:
        obj: dict[Any, Any] = {}
        for _ in range(arg):
            key, pos = _read(buf, pos, depth + 1)
            if isinstance(key, memoryview):
                key = bytes(key)
            elif isinstance(key, list):
                raise _NotOurs
            obj[key], pos = _read(buf, pos, depth + 1)
        return obj, pos
    if major == 6:
        value, pos = _read(buf, pos, depth + 1)
        if arg == SELF_DESCRIBE_TAG:
            return value, pos
        if arg == DECTRIS_COMPRESSION:
            return _Compressed(value), pos
        if arg in TYPED_ARRAY_TAGS:
            return _Typed(arg, value), pos
        if arg == MULTI_DIM_ROW_MAJOR:
            return _MultiDim(value), pos
        raise _NotOurs  # dates, big numbers ...: cbor2 knows them
    if arg in _SIMPLE:
        return _SIMPLE[arg], pos
    raise _NotOurs


def _loads(raw: bytes | bytearray | memoryview) -> Any:
    """A whole message: the fast reader, else ``cbor2`` (see the module docstring)."""
    buf = memoryview(raw).cast("B") if memoryview(raw).format != "B" else memoryview(raw)
    try:
        value, pos = _read(buf, 0)
    except _NotOurs:
        pass
    else:
        if pos == buf.nbytes:
            return value
        # data after the item: cbor2 reports it as it always did
    import cbor2

    return cbor2.loads(raw, tag_hook=_tag_hook)


def _plain(value: Any) -> Any:
    """``value`` with the views of byte strings made ``bytes`` (as ``cbor2`` gives them)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def is_v2(parts: Sequence[Any]) -> bool:
    """Whether a ZeroMQ message looks like stream v2 (one part that is CBOR, not JSON)."""
    if len(parts) != 1:
        return False
    head = bytes(memoryview(parts[0])[:3])
    return head == SELF_DESCRIBE or (bool(head) and 0xA0 <= head[0] <= 0xBF)


def _int(msg: Mapping[str, Any], key: str) -> int:
    v = msg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise StreamFormatError(f"stream v2 {msg.get('type')!r} message has no valid {key!r} (got {v!r})")
    return v


def _ns(rational: Any) -> int | None:
    if (isinstance(rational, (list, tuple)) and len(rational) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in rational) and rational[1] > 0):
        return rational[0] * 1_000_000_000 // rational[1]
    return None


def _scalar(v: Any) -> Any:
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, bool) or isinstance(v, (int, str)):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return v
    return None


def parse_message_v2(raw: bytes | bytearray | memoryview) -> SeriesHeader | StreamFrame | SeriesEnd:
    """Parse one stream v2 message (see the module docstring).

    Returns
    -------
    SeriesHeader, StreamFrame or SeriesEnd
        The same objects as stream v1; a frame's ``data`` is its still-compressed blob.

    Raises
    ------
    StreamFormatError
        Not CBOR, not a map with a known ``type``, missing fields, or pixel data that are
        not a two-dimensional typed array with a supported type and compression.
    """
    try:
        msg = _loads(raw)  # byte strings: views of the received buffer, not copies
    except StreamFormatError:
        raise
    except _Malformed as exc:
        raise StreamFormatError(f"not a stream v2 message: {exc}") from None
    except Exception as exc:  # cbor2.CBORDecodeError and what a hook raised inside it
        cause = exc.__cause__ if isinstance(exc.__cause__, StreamFormatError) else exc
        raise StreamFormatError(f"not a stream v2 message: {cause}") from None
    if not isinstance(msg, Mapping):  # a frozendict after the self-describe tag
        raise StreamFormatError("stream v2 message is not a CBOR map")
    kind = msg.get("type")
    if kind == "start":
        series = _int(msg, "series_id")
        config: dict[str, Any] = {}
        for key, name in _CONFIG_FIELDS.items():
            v = _scalar(msg.get(key))
            if v is not None:
                config[name] = v
        channels = msg.get("channels")
        if isinstance(channels, (list, tuple)) and all(isinstance(c, str) for c in channels):
            config["channels"] = ",".join(channels)
        return SeriesHeader(series, "basic", config)
    if kind == "end":
        return SeriesEnd(_int(msg, "series_id"))
    if kind != "image":
        raise StreamFormatError(f"unknown stream v2 message type {kind!r}")
    series = _int(msg, "series_id")
    frame = _int(msg, "image_id")
    data = msg.get("data")
    if not isinstance(data, Mapping) or not data:
        raise StreamFormatError(f"image {frame} has no channel data")
    channel, array = next(iter(data.items()))
    if not isinstance(array, _MultiDim) or len(array.dims) != 2:
        raise StreamFormatError(f"image {frame}: channel {channel!r} is not a 2-D array (tag 40)")
    rows, cols = array.dims
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in (rows, cols)):
        raise StreamFormatError(f"image {frame}: bad dimensions {array.dims!r}")
    typed = array.typed
    if not isinstance(typed, _Typed):
        raise StreamFormatError(f"image {frame}: the pixels are not a supported typed array")
    content = typed.content
    if isinstance(content, _Compressed):
        if content.algorithm == "bslz4":
            encoding = f"bs{8 * content.modifier}-lz4{typed.order}"
        elif content.algorithm == "lz4":
            encoding = f"h5lz4{typed.order}"
        else:
            raise StreamFormatError(f"image {frame}: unknown compression {content.algorithm!r}")
        blob = content.data
    else:
        encoding, blob = typed.order, content
    times = {k: t for k in ("start_time", "stop_time", "real_time") if (t := _ns(msg.get(k))) is not None}
    appendix = _appendix_text(msg.get("user_data"))
    # a view, like a stream v1 blob: the queue copies views into the workers' shared memory,
    # while bytes would be pickled through the worker's pipe (two more copies of the frame)
    return StreamFrame(series, frame, (rows, cols), typed.dtype, encoding, memoryview(blob), "", times, appendix)


def _appendix_text(user_data: Any) -> str | None:
    """An image's ``user_data`` as the frame's appendix text: a text as it is, a map or list as
    JSON (so a map of per-frame values reaches the header fields as a stream v1 appendix
    does), anything else as its ``str``."""
    if user_data is None or isinstance(user_data, str):
        return user_data
    value = _plain(user_data)
    if isinstance(value, (dict, list)):
        import json

        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):  # keys JSON cannot take
            pass
    return str(value)


# --------------------------------------------------------------------------- #
# Encoding (the detector's side: tests, benchmarks, replays)
# --------------------------------------------------------------------------- #


def encode_start(series: int, config: dict[str, Any] | None = None, channels: tuple[str, ...] = ("threshold_1",)
                 ) -> bytes:
    """A ``start`` message (``config``: further start fields such as ``count_time``)."""
    import cbor2
    from cbor2 import CBORTag

    msg = {"type": "start", "series_id": series, "series_unique_id": f"saxsdog-{series}",
           "channels": list(channels), **(config or {})}
    return cbor2.dumps(CBORTag(SELF_DESCRIBE_TAG, msg))


def encode_image(series: int, image: int, blob: bytes, shape: tuple[int, int], dtype: str, encoding: str,
                 start_ns: int = 0, channel: str = "threshold_1") -> bytes:
    """An ``image`` message; ``encoding`` as for stream v1 (``bs32-lz4<``, ``h5lz4<``, ``<``)."""
    import cbor2
    from cbor2 import CBORTag

    order = encoding[-1] if encoding[-1:] in "<>" and encoding else "<"
    tag = _TAG_OF.get((dtype, "<" if dtype in ("uint8", "int8") else order))
    if tag is None:
        raise ValueError(f"no typed-array tag for {dtype} {order}")
    if encoding.startswith("bs"):
        bits = int(encoding[2:].split("-")[0])
        content: Any = CBORTag(DECTRIS_COMPRESSION, ["bslz4", bits // 8, blob])
    elif encoding.startswith("h5lz4"):
        content = CBORTag(DECTRIS_COMPRESSION, ["lz4", 0, blob])
    else:
        content = blob
    msg = {"type": "image", "series_id": series, "series_unique_id": f"saxsdog-{series}", "image_id": image,
           "start_time": [start_ns, 1_000_000_000], "stop_time": [start_ns, 1_000_000_000],
           "real_time": [0, 1_000_000_000],
           "data": {channel: CBORTag(MULTI_DIM_ROW_MAJOR, [[int(shape[0]), int(shape[1])], CBORTag(tag, content)])}}
    return cbor2.dumps(CBORTag(SELF_DESCRIBE_TAG, msg))


class ImageTemplate:
    """One frame's ``image`` message, encoded once and re-sent under other image numbers.

    The image number is written as a 4-byte CBOR integer (valid CBOR, not the shortest
    form), so :meth:`message` only overwrites those 4 bytes of the encoded message: a
    replay or a benchmark's detector sends a megabyte frame without encoding or copying it.

    Parameters
    ----------
    series, blob, shape, dtype, encoding
        As for :func:`encode_image`.
    """

    _PLACEHOLDER = 0xFFFFFFFF  # encodes as 0x1a + 4 bytes: the slot the image number goes into

    def __init__(self, series: int, blob: bytes, shape: tuple[int, int], dtype: str, encoding: str):
        self.data = bytearray(encode_image(series, self._PLACEHOLDER, blob, shape, dtype, encoding))
        head = b"\x68image_id\x1a\xff\xff\xff\xff"  # the key (text of 8) and the 4-byte placeholder
        at = self.data.find(head)
        if at < 0 or self.data.find(head, at + 1) >= 0:  # pragma: no cover - the encoder's layout changed
            raise ValueError("cannot find the image number in the encoded message")
        self._offset = at + len(head) - 4

    def message(self, image: int) -> bytearray:
        """The message of image number ``image`` (< 2**32): the template's own buffer, changed
        in place; wait until the previous send of it is done before calling again."""
        struct.pack_into(">I", self.data, self._offset, image)
        return self.data


def encode_end(series: int) -> bytes:
    """An ``end`` message."""
    import cbor2
    from cbor2 import CBORTag

    return cbor2.dumps(CBORTag(SELF_DESCRIBE_TAG, {"type": "end", "series_id": series,
                                                   "series_unique_id": f"saxsdog-{series}"}))
