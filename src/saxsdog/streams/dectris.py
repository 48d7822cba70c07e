"""Dectris detector streams (SIMPLON stream API v1, "stream v1"): receive, parse, send.

Stream v2 (CBOR, :mod:`saxsdog.streams.stream2`) arrives over the same kind of socket and
is recognised message by message, so one receiver takes either.

A detector (or its simulator) binds a ZeroMQ PUSH socket; a client connects a PULL socket
and gets each message exactly once (several clients would share the frames between them),
so one process, saxsdog's coordinator, holds the connection and hands the frames, still
compressed, to the worker pool.

Messages (every part JSON, except data blobs):

``dheader-1.0`` (series header, at ``arm``)
    part 1 ``{"htype": "dheader-1.0", "series": <id>, "header_detail": "all"|"basic"|"none"}``;
    with ``basic`` or ``all``, part 2 holds the detector configuration (``count_time``,
    ``frame_time``, ``wavelength``, ``description``, ``x_pixel_size``, ``beam_center_x`` ...);
    with ``all``, pairs of a ``dflatfield-1.0`` / ``dpixelmask-1.0`` / ``dcountrate_table-1.0``
    header and its blob follow; a ``header_appendix`` may come last.
``dimage-1.0`` (one frame)
    part 1 ``{"htype": "dimage-1.0", "series": <id>, "frame": <n>, "hash": <md5>}``;
    part 2 ``{"htype": "dimage_d-1.0", "shape": [x, y], "type": "uint32",
    "encoding": "bs32-lz4<", "size": <blob bytes>}`` — ``shape`` is ``[columns, rows]``;
    part 3 the data blob (see :mod:`saxsdog.io.codecs`);
    part 4 ``{"htype": "dconfig-1.0", "start_time": ns, "stop_time": ns, "real_time": ns}``;
    an ``image_appendix`` may follow as part 5.
``dseries_end-1.0`` (after the last frame)
    ``{"htype": "dseries_end-1.0", "series": <id>}``.

A message that does not follow this is reported and skipped; the receiver keeps going.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..extras import import_optional
from ..io.codecs import FrameDecodeError, parse_encoding
from .messages import SeriesEnd, SeriesHeader, StreamFormatError, StreamFrame
from .stream2 import is_v2, parse_message_v2

log = logging.getLogger(__name__)

__all__ = [
    "StreamFormatError",
    "SeriesHeader",
    "StreamFrame",
    "SeriesEnd",
    "parse_message",
    "DectrisReceiver",
    "DectrisStreamSource",
    "DectrisSender",
]



def _bytes(part: Any) -> bytes:
    if isinstance(part, (bytes, bytearray)):
        return bytes(part)
    b = getattr(part, "bytes", None)  # zmq.Frame
    if b is not None:
        return b
    return bytes(memoryview(part))


def _json(part: Any, what: str) -> dict[str, Any]:
    raw = part if isinstance(part, (bytes, bytearray)) else _bytes(part)
    if len(raw) > 1 << 20:
        raise StreamFormatError(f"{what} is {len(raw)} bytes, not a JSON header")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StreamFormatError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise StreamFormatError(f"{what} is not a JSON object")
    return obj


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise StreamFormatError(f"{what} has no valid {key!r} (got {v!r})")
    return v


def parse_message(parts: Sequence[Any]) -> SeriesHeader | StreamFrame | SeriesEnd:
    """Parse one message of a stream v1 (multipart JSON + blob) or v2 (one CBOR part).

    Stream v2 messages are recognised by their first byte and parsed by
    :func:`saxsdog.streams.stream2.parse_message_v2`.

    Parameters
    ----------
    parts
        The message parts (``bytes`` or ``zmq.Frame``).

    Returns
    -------
    SeriesHeader, StreamFrame or SeriesEnd

    Raises
    ------
    StreamFormatError
        Anything that does not follow the format (unknown ``htype``, missing parts or keys,
        a blob of the wrong size, an unknown encoding or pixel type).
    """
    if not parts:
        raise StreamFormatError("empty message")
    if is_v2(parts):
        part = parts[0]
        return parse_message_v2(part.buffer if hasattr(part, "buffer") else part)
    head = _json(parts[0], "part 1")
    htype = head.get("htype")
    if not isinstance(htype, str):
        raise StreamFormatError("part 1 has no 'htype'")
    kind = htype.rsplit("-", 1)[0]
    if kind == "dheader":
        series = _int(head, "series", "dheader")
        detail = head.get("header_detail", "none")
        config: dict[str, Any] = {}
        if detail in ("basic", "all"):
            if len(parts) < 2:
                raise StreamFormatError(f"dheader with header_detail {detail!r} has no configuration part")
            config = _json(parts[1], "dheader part 2 (configuration)")
        return SeriesHeader(series, str(detail), config)
    if kind == "dseries_end":
        return SeriesEnd(_int(head, "series", "dseries_end"))
    if kind != "dimage":
        raise StreamFormatError(f"unknown message type {htype!r}")
    series = _int(head, "series", "dimage")
    frame = _int(head, "frame", "dimage")
    if len(parts) < 4:
        raise StreamFormatError(f"dimage of frame {frame} has {len(parts)} parts, expected 4 or 5")
    shape, dtype, encoding, size = _image_info(_bytes(parts[1]), frame)
    blob = parts[2]
    # zero-copy: a view of the received message (copied once, into the workers' shared memory)
    data = blob.buffer if hasattr(blob, "buffer") else _bytes(blob)
    if size is not None and size != memoryview(data).nbytes:
        raise StreamFormatError(f"frame {frame}: the blob has {memoryview(data).nbytes} bytes, its header "
                                f"says {size}")
    times: dict[str, int] = {}
    tail = _json(parts[3], f"dconfig of frame {frame}")
    for k in ("start_time", "stop_time", "real_time"):
        v = tail.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            times[k] = int(v)
    appendix = _bytes(parts[4]).decode("utf-8", "replace") if len(parts) > 4 else None
    return StreamFrame(series, frame, (shape[1], shape[0]), dtype, encoding,
                       data, str(head.get("hash", "")), times, appendix)


_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32")

#: ``dimage_d`` parts seen last (raw bytes → what :func:`_image_info` made of them): a
#: detector sends the same part with every frame of a series, so it is parsed once.
_INFO_CACHE: dict[bytes, tuple[list[int], str, str, Any]] = {}
_INFO_CACHE_SIZE = 16


def _image_info(raw: bytes, frame: int) -> tuple[list[int], str, str, Any]:
    """A frame's ``dimage_d`` part, checked: ``(shape [x, y], pixel type, encoding, size)``."""
    cached = _INFO_CACHE.get(raw)
    if cached is not None:
        return cached
    info = _json(raw, f"dimage_d of frame {frame}")
    if not str(info.get("htype", "")).startswith("dimage_d"):
        raise StreamFormatError(f"part 2 of frame {frame} is {info.get('htype')!r}, expected 'dimage_d-1.0'")
    shape = info.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise StreamFormatError(f"frame {frame} has no valid shape [x, y] (got {shape!r})")
    dtype = info.get("type")
    encoding = info.get("encoding", "")
    if not isinstance(dtype, str) or dtype not in _TYPES:
        raise StreamFormatError(f"frame {frame} has an unsupported pixel type {dtype!r}")
    try:
        parse_encoding(encoding if isinstance(encoding, str) else None)
    except FrameDecodeError as exc:
        raise StreamFormatError(f"frame {frame}: {exc}") from None
    value = (shape, dtype, encoding or "", info.get("size"))
    if len(_INFO_CACHE) >= _INFO_CACHE_SIZE:
        _INFO_CACHE.clear()
    _INFO_CACHE[raw] = value
    return value

#: Frames a stream source lets wait in the coordinator (queued, in flight) before it holds
#: the detector back (see :class:`DectrisStreamSource`).
MAX_BACKLOG = 32
#: Messages ZeroMQ receives ahead of the stream source (its receive high-water mark).
RECEIVE_BUFFER = 32


class DectrisReceiver:
    """Receives a stream in a thread: a PULL socket connected to the detector.

    Parameters
    ----------
    endpoint
        The detector's stream address, ``tcp://HOST:9999``.
    on_message
        Called in the receiver thread with every parsed message.
    on_error
        Called in the receiver thread with the reason of every malformed message.
    rcvhwm
        Messages ZeroMQ may buffer before the detector is held back (see
        :data:`RECEIVE_BUFFER`).
    """

    def __init__(self, endpoint: str, on_message: Callable[[Any], None],
                 on_error: Callable[[str], None] | None = None, rcvhwm: int | None = None):
        self.endpoint = endpoint
        self.on_message = on_message
        self.on_error = on_error
        self.rcvhwm = RECEIVE_BUFFER if rcvhwm is None else max(1, int(rcvhwm))
        self.received = 0
        self.malformed = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 10.0) -> "DectrisReceiver":
        """Connect and start receiving (returns once the socket is connected)."""
        for module in ("zmq", "lz4.block", "cbor2"):  # else the receiving thread dies without a word
            import_optional(module, "stream", "the detector stream")
        self._thread = threading.Thread(target=self._run, name="saxsdog-stream", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self.error is not None:
            raise OSError(self.error)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving and close the socket (messages not yet received stay with the detector)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        import zmq

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.PULL)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
            try:
                sock.connect(self.endpoint)
            except zmq.ZMQError as exc:
                self.error = f"cannot connect to {self.endpoint}: {exc}"
                return
            finally:
                self._ready.set()
            while not self._stop.is_set():
                try:  # a message waiting (a fast detector): no poll first
                    parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    sock.poll(100)  # wait for the next one (or look at the stop flag again)
                    continue
                self.received += 1
                try:
                    msg = parse_message(parts)
                except StreamFormatError as exc:
                    self.malformed += 1
                    log.warning("malformed stream message skipped: %s", exc)
                    if self.on_error is not None:
                        self.on_error(str(exc))
                    continue
                try:
                    self.on_message(msg)
                except Exception:  # a failing consumer must not end the stream
                    log.exception("stream message handler failed")
        finally:
            sock.close(0)


class DectrisStreamSource:
    """Feeds the frames of a Dectris stream into an :class:`~saxsdog.pipeline.queue.ImageQueue`.

    The receiver thread parses each message and queues the frame's still-encoded blob as an
    in-memory task named ``<root>/<series>_<frame:06d>``; the workers decode and integrate
    it.  Optionally every frame is also kept raw (:class:`~saxsdog.streams.raw.NexusRawWriter`).

    Parameters
    ----------
    endpoint
        ``tcp://HOST:9999``.
    queue
        A started image queue.
    keep_raw
        Folder for the raw frames (NeXus master + data files per series), or ``None``.
    frames_per_file
        Frames per raw data file.
    max_backlog
        Frames queued in the coordinator before the receiver waits (the detector then
        buffers; nothing is dropped); it goes on once results have brought the backlog down
        to three quarters of this.
    rcvhwm
        Messages ZeroMQ buffers in the coordinator on top of the backlog
        (:data:`RECEIVE_BUFFER`).

    Notes
    -----
    Both bounds are small on purpose (:data:`MAX_BACKLOG`, :data:`RECEIVE_BUFFER`): a
    frame waits in the detector (its buffer is made for that) or in the kernel's socket
    buffers rather than in the coordinator.  With 256 + 1000 frames allowed, a detector
    faster than the workers filled up to a gigabyte of the coordinator's memory, every
    message came in fresh, never-touched pages (ZeroMQ's receiving thread spent 0.45 ms
    per Pilatus 1M frame, 0.18 ms with 32 + 32) and was cold in the cache when copied to
    the workers.  32 frames are still eight times what two workers hold at once.
    """

    def __init__(self, endpoint: str, queue: Any, keep_raw: str | os.PathLike[str] | None = None,
                 frames_per_file: int = 1000, max_backlog: int | None = None, rcvhwm: int | None = None):
        self.endpoint = endpoint
        self.queue = queue
        self.keep_raw = Path(keep_raw) if keep_raw is not None else None
        self.frames_per_file = frames_per_file
        self.max_backlog = max(1, int(MAX_BACKLOG if max_backlog is None else max_backlog))
        self._resume_at = max(1, self.max_backlog * 3 // 4) if self.max_backlog > 1 else 0
        self.frames = 0
        self.series: int | None = None
        self.header: SeriesHeader | None = None
        #: Set when the current series has ended (cleared when the next one starts).
        self.ended = threading.Event()
        #: Ids of the series that ended (or were abandoned for a new one), in order.
        self.completed: list[int] = []
        self.errors: deque[str] = deque(maxlen=100)
        self.raw_files: list[Path] = []
        self._raw: Any = None
        self._stopping = threading.Event()
        #: Signalled by results while the receiver holds the detector back (a full backlog).
        self._room = threading.Condition()
        self._holding = False
        self.receiver = DectrisReceiver(endpoint, self._on_message, self._on_error, rcvhwm=rcvhwm)

    @property
    def malformed(self) -> int:
        """Malformed messages skipped."""
        return self.receiver.malformed

    def start(self) -> "DectrisStreamSource":
        add_callback = getattr(self.queue, "add_callback", None)
        if add_callback is not None:
            add_callback(self._result_arrived)
        if getattr(getattr(self.queue, "options", None), "output_format", None) == "nxcansas-run":
            # the series' first result opens its run file in the queue's dispatcher: loading
            # the HDF5 library there (~0.1 s) would hold up that frame and those behind it
            import h5py  # noqa: F401

            from ..io import nxcansas  # noqa: F401
        self.receiver.start()
        return self

    def stop(self) -> None:
        """Stop receiving and close the raw files."""
        self._stopping.set()
        self._wake()
        self.receiver.stop()
        self._close_raw()

    def _result_arrived(self, result: Any) -> None:
        """A result reached the queue (its dispatcher thread): room for a held-back frame.

        The receiver is woken once the backlog is down to three quarters of its bound, so
        it then queues a run of frames instead of one per result (a wake-up per result cost
        the dispatcher ~8 % of its time when the detector outran the workers).
        """
        if self._holding and self.queue.backlog <= self._resume_at:  # cheap when nobody waits
            self._wake()

    def _wake(self) -> None:
        with self._room:
            self._room.notify_all()

    def _on_error(self, reason: str) -> None:
        self.errors.append(reason)

    def _metadata(self) -> dict[str, Any]:
        """Per-frame metadata: few values, because each is written for every frame of a run file.

        The whole header configuration goes to the raw frames' master file (``--keep-raw``).
        """
        cfg = self.header.config if self.header is not None else {}
        meta: dict[str, Any] = {}
        v = cfg.get("count_time")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            meta["exposure_time"] = float(v)
        fields = self._header_fields(cfg)
        if fields:
            # the calibration's Normalization reads it ({"Header": "count_time"}); a dict,
            # so it is not among the scalars written per frame
            meta["header"] = dict(fields)
        return meta

    @staticmethod
    def _appendix_fields(appendix: str | None) -> dict[str, str]:
        """Scalar fields of a frame's ``image_appendix`` when it is a JSON object (a
        per-frame monitor, say), as text; else nothing."""
        if not appendix or not appendix.lstrip().startswith("{"):
            return {}
        try:
            value = json.loads(appendix)
        except ValueError:
            return {}
        if not isinstance(value, dict):
            return {}
        from ..io.images._base import header_fields_from_keys

        return header_fields_from_keys(value)

    def _header_fields(self, cfg: dict[str, Any]) -> dict[str, str]:
        """The series header's scalar fields as text (computed once per series header)."""
        cached = getattr(self, "_fields_cache", None)
        if cached is not None and cached[0] is cfg:
            return cached[1]
        from ..io.images._base import header_fields_from_keys

        fields = header_fields_from_keys(cfg)
        self._fields_cache = (cfg, fields)
        return fields

    def run_name(self, series: int) -> str:
        """The NXcanSAS run of a series: ``<run name>_<id>``, by default ``series_<id>``.

        Every series is a run of its own, closed (renamed into place) when the series ends.
        """
        return f"{getattr(self.queue.options, 'run_name', None) or 'series'}_{series}"

    def _new_series(self, series: int) -> None:
        self._end_series()
        self.series = series
        self.ended.clear()

    def _end_series(self) -> None:
        """The current series is complete (or abandoned): close its raw files and run."""
        self._close_raw()
        if self.series is not None and self.series not in self.completed:
            # the run is handed over first: whoever sees the series completed and then waits
            # for the queue to be idle finds its run file in place
            self.queue.finish_run(self.run_name(self.series))
            self.completed.append(self.series)

    def _on_message(self, msg: Any) -> None:
        if isinstance(msg, SeriesHeader):
            self.header = msg
            self._new_series(msg.series)
            return
        if isinstance(msg, SeriesEnd):
            if self.series is None or msg.series == self.series:
                self._end_series()
                self.ended.set()
            return
        frame: StreamFrame = msg
        if frame.series != self.series:
            if self.header is not None and self.header.series != frame.series:
                self.header = None  # a header of another series
            self._new_series(frame.series)
        meta = self._metadata()
        appendix = self._appendix_fields(frame.appendix)
        if appendix:  # the frame's own values win over the series header's
            meta["header"] = {**meta.get("header", {}), **appendix}
        meta.update({"series": frame.series, "frame": frame.frame, "timestamp": time.time()})
        if "start_time" in frame.times:
            meta["start_time"] = frame.times["start_time"]
        from ..pipeline.tasks import FramePayload, ImageTask

        payload = FramePayload(frame.data, frame.dtype, frame.shape, frame.encoding, meta)
        if self.keep_raw is not None:
            if self._raw is None:
                from .raw import NexusRawWriter

                self._raw = NexusRawWriter(self.keep_raw, f"series_{frame.series}",
                                           frames_per_file=self.frames_per_file, header=self.header)
            self._raw.add(frame)
        # Hold the detector back rather than buffer without bound: wait for a result to
        # make room (woken by it, not polling; the timeout covers a result that woke nobody)
        if self.queue.backlog >= self.max_backlog:
            with self._room:
                self._holding = True
                try:
                    while self.queue.backlog >= self.max_backlog and not self._stopping.is_set():
                        self._room.wait(0.25)
                finally:
                    self._holding = False
        self.queue.push_task(ImageTask(os.path.join(self.queue.root, frame.name), self.queue.root,
                                       payload=payload, run=self.run_name(frame.series)))
        self.frames += 1

    def _close_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                self.raw_files.extend(raw.close())
            except Exception:
                log.exception("cannot close the raw frame files")


class DectrisSender:
    """The detector's side of a stream v1, for tests, benchmarks and replays.

    Binds a PUSH socket (on loopback by default) and sends series headers, frames and
    series ends in the published format.

    Parameters
    ----------
    endpoint
        Address to bind, ``tcp://127.0.0.1:0`` picks a free port (see :attr:`endpoint`).
    sndhwm
        Messages ZeroMQ may buffer before :meth:`send_frame` waits.
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:0", sndhwm: int = 1000):
        import zmq

        self._zmq = zmq
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        if endpoint.endswith(":0"):
            port = self.socket.bind_to_random_port(endpoint.rsplit(":", 1)[0])
            endpoint = f"{endpoint.rsplit(':', 1)[0]}:{port}"
        else:
            self.socket.bind(endpoint)
        self.endpoint = endpoint
        self._info_parts: dict[tuple, bytes] = {}

    def send_parts(self, parts: Sequence[bytes], timeout: float = 30.0) -> None:
        """Send one raw multipart message (waits at most ``timeout`` s for a receiver)."""
        self.socket.setsockopt(self._zmq.SNDTIMEO, int(timeout * 1000))
        self.socket.send_multipart(list(parts), copy=False)

    def send_header(self, series: int, config: dict[str, Any] | None = None, detail: str = "basic",
                    timeout: float = 30.0) -> None:
        """``dheader-1.0`` with the detector configuration (``basic``) or without (``none``)."""
        parts = [json.dumps({"htype": "dheader-1.0", "series": series, "header_detail": detail}).encode()]
        if detail in ("basic", "all"):
            parts.append(json.dumps(config or {}).encode())
        self.send_parts(parts, timeout)

    def send_frame(self, series: int, frame: int, blob: bytes, shape: tuple[int, int], dtype: str,
                   encoding: str, times: dict[str, int] | None = None, timeout: float = 30.0,
                   with_hash: bool = False) -> None:
        """One ``dimage-1.0`` message; ``shape`` is ``(rows, columns)``, sent as ``[x, y]``.

        ``with_hash`` fills the ``hash`` field with the blob's MD5 (costs about 1 ms per
        Pilatus 1M frame; detectors may leave it empty, as the simulator does).
        """
        digest = ""
        if with_hash:
            import hashlib

            digest = hashlib.md5(blob).hexdigest()
        p1 = {"htype": "dimage-1.0", "series": series, "frame": frame, "hash": digest}
        # parts 2 and 4 are the same frame after frame: encoded once (the sender is a
        # benchmark's load too)
        key = (tuple(shape), dtype, encoding, memoryview(blob).nbytes)
        p2 = self._info_parts.get(key)
        if p2 is None:
            p2 = self._info_parts[key] = json.dumps(
                {"htype": "dimage_d-1.0", "shape": [int(shape[1]), int(shape[0])], "type": dtype,
                 "encoding": encoding, "size": key[3]}).encode()
        p4 = (json.dumps({"htype": "dconfig-1.0", **times}).encode() if times is not None else
              b'{"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0, "real_time": 0}')
        self.send_parts([json.dumps(p1).encode(), p2, blob, p4], timeout)

    def send_end(self, series: int, timeout: float = 30.0) -> None:
        """``dseries_end-1.0``."""
        self.send_parts([json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()], timeout)

    def close(self) -> None:
        self.socket.close()
        self.context.term()

    def __enter__(self) -> "DectrisSender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
