"""Keeping a stream's raw frames: NeXus/HDF5 data files in batches, linked by a master file.

Layout (Eiger-style, so that saxsdog, h5py and the usual Eiger tools read it back)::

    <name>_master.h5
        /entry                          NXentry
            data                        NXdata
                data_000001 -> <name>_data_000001.h5:/entry/data/data   (external links)
                data_000002 -> ...
                frame_numbers           (frames,) int64: the stream's frame numbers, in order
            instrument                  NXinstrument
                detector                NXdetector: count_time, frame_time, description,
                                        x/y_pixel_size, beam_center_x/y, detector_distance,
                                        detectorSpecific/data_collection_date (from the header)
                beam                    NXbeam: incident_wavelength (Å)
    <name>_data_000001.h5
        /entry/data/data                (n, rows, columns), chunks of one frame,
                                        bitshuffle-LZ4 (HDF5 filter 32008 via hdf5plugin)

Bitshuffle-LZ4 frames are stored as they came (``write_direct_chunk``: the stream blob is
the HDF5 chunk, nothing is decompressed or recompressed); frames in other encodings are
decoded and compressed by the filter.  A data file is written under a hidden temporary
name and renamed when it is complete (``frames_per_file`` frames, or the end); the master
file is rewritten atomically after each data file, so a crash loses at most the open batch.
The writing happens in a dedicated thread fed through a bounded queue.
"""

from __future__ import annotations

import logging
import os
import queue as _queue
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import PendingFile, atomic_output
from ..io.codecs import decode_frame, default_block_size, parse_encoding

log = logging.getLogger(__name__)

__all__ = ["NexusRawWriter"]

_GROW = 64


def _nx(group, cls: str) -> None:
    group.attrs["NX_class"] = cls


class NexusRawWriter:
    """Writes the frames of one series (see the module docstring).

    Parameters
    ----------
    folder
        Output folder (created).
    name
        File name prefix, e.g. ``series_7``.
    frames_per_file
        Frames per data file.
    header
        The series header (:class:`~saxsdog.streams.dectris.SeriesHeader`), for the
        master file's instrument fields.
    max_queue
        Frames waiting for the writer thread before :meth:`add` blocks.
    """

    def __init__(self, folder: str | os.PathLike[str], name: str, frames_per_file: int = 1000,
                 header: Any = None, max_queue: int = 256):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.frames_per_file = max(1, int(frames_per_file))
        self.config: dict[str, Any] = dict(getattr(header, "config", None) or {})
        self.master = self.folder / f"{name}_master.h5"
        self.data_files: list[Path] = []
        self.frame_numbers: list[int] = []
        self.frames = 0
        self.skipped = 0
        self.error: str | None = None
        self._queue: _queue.Queue = _queue.Queue(maxsize=max_queue)
        self._file: Any = None
        self._pending: PendingFile | None = None
        self._ds: Any = None
        self._n = 0
        self._shape: tuple[int, int] | None = None
        self._dtype: np.dtype | None = None
        self._thread = threading.Thread(target=self._run, name="saxsdog-raw-writer", daemon=True)
        self._thread.start()

    def add(self, frame: Any) -> None:
        """Queue a :class:`~saxsdog.streams.dectris.StreamFrame` (blocks while the queue is full)."""
        self._queue.put(frame)

    def close(self, timeout: float = 60.0) -> list[Path]:
        """Write what is queued, close the files; returns the master and data files."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the raw frame writer did not finish within %.0f s", timeout)
        return ([self.master] if self.master.exists() else []) + list(self.data_files)

    # -- writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                frame = self._queue.get()
                if frame is None:
                    break
                try:
                    self._write(frame)
                except Exception as exc:  # keep the stream going; report once
                    self.skipped += 1
                    if self.error is None:
                        self.error = f"{type(exc).__name__}: {exc}"
                        log.exception("cannot keep raw frame %s", getattr(frame, "frame", "?"))
        finally:
            self._finish_file()

    def _open(self, frame: Any) -> None:
        import h5py
        import hdf5plugin

        index = len(self.data_files) + 1
        final = self.folder / f"{self.name}_data_{index:06d}.h5"
        self._pending = PendingFile(final)
        f = h5py.File(self._pending.tmp, "w")
        entry = f.create_group("entry")
        _nx(entry, "NXentry")
        data = entry.create_group("data")
        _nx(data, "NXdata")
        data.attrs["signal"] = "data"
        assert self._shape is not None, "_write records the series' shape before the first file opens"
        rows, cols = self._shape
        self._ds = data.create_dataset("data", shape=(0, rows, cols), maxshape=(None, rows, cols),
                                       chunks=(1, rows, cols), dtype=self._dtype,
                                       **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
        self._file = f
        self._final = final
        self._n = 0

    def _write(self, frame: Any) -> None:
        kind, bits, order = parse_encoding(frame.encoding)
        dtype = np.dtype(frame.dtype).newbyteorder(order) if np.dtype(frame.dtype).itemsize > 1 \
            else np.dtype(frame.dtype)
        if self._shape is None:
            self._shape, self._dtype = tuple(frame.shape), dtype
        elif tuple(frame.shape) != self._shape or dtype != self._dtype:
            raise ValueError(f"frame {frame.frame} is {frame.shape} {dtype}, the series started with "
                             f"{self._shape} {self._dtype}")
        if self._file is None:
            self._open(frame)
        if self._n >= self._ds.shape[0]:
            self._ds.resize(self._n + _GROW, axis=0)
        nbytes = self._shape[0] * self._shape[1] * dtype.itemsize
        if kind == "bslz4" and bits == dtype.itemsize * 8:
            blob = bytes(frame.data)
            if len(blob) < 12 or struct.unpack_from(">Q", blob, 0)[0] != nbytes:
                # a header-less sender: add the filter's 12-byte header
                block = default_block_size(dtype.itemsize) * dtype.itemsize
                blob = struct.pack(">QI", nbytes, block) + blob
            self._ds.id.write_direct_chunk((self._n, 0, 0), blob)
        else:
            self._ds[self._n] = decode_frame(frame.data, frame.dtype, frame.shape, frame.encoding)
        self._n += 1
        self.frames += 1
        self.frame_numbers.append(int(frame.frame))
        if self._n >= self.frames_per_file:
            self._finish_file()

    def _finish_file(self) -> None:
        if self._file is None:
            return
        try:
            self._ds.resize(self._n, axis=0)
            self._file.close()
            assert self._pending is not None  # set with self._file
            self._pending.commit()
            self.data_files.append(self._final)
        finally:
            self._file = self._ds = None
        self._write_master()

    def _write_master(self) -> None:
        import h5py

        with atomic_output(self.master) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["default"] = "entry"
            entry = f.create_group("entry")
            _nx(entry, "NXentry")
            entry.attrs["default"] = "data"
            data = entry.create_group("data")
            _nx(data, "NXdata")
            for k, path in enumerate(self.data_files, start=1):
                data[f"data_{k:06d}"] = h5py.ExternalLink(path.name, "/entry/data/data")
            data.create_dataset("frame_numbers", data=np.asarray(self.frame_numbers[: self._stored()],
                                                                  dtype=np.int64))
            inst = entry.create_group("instrument")
            _nx(inst, "NXinstrument")
            det = inst.create_group("detector")
            _nx(det, "NXdetector")
            units = {"count_time": "s", "frame_time": "s", "x_pixel_size": "m", "y_pixel_size": "m",
                     "detector_distance": "m", "sensor_thickness": "m", "threshold_energy": "eV"}
            for key in ("count_time", "frame_time", "description", "detector_number", "x_pixel_size",
                        "y_pixel_size", "beam_center_x", "beam_center_y", "detector_distance",
                        "sensor_material", "sensor_thickness", "threshold_energy", "bit_depth_image"):
                v = self.config.get(key)
                if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                    ds = det.create_dataset(key, data=v)
                    if key in units:
                        ds.attrs["units"] = units[key]
            spec = det.create_group("detectorSpecific")
            spec.create_dataset("nimages", data=self._stored())
            date = self.config.get("data_collection_date")
            if isinstance(date, str) and date:
                spec.create_dataset("data_collection_date", data=date)
            wl = self.config.get("wavelength")
            if isinstance(wl, (int, float)) and not isinstance(wl, bool):
                beam = inst.create_group("beam")
                _nx(beam, "NXbeam")
                ds = beam.create_dataset("incident_wavelength", data=float(wl))
                ds.attrs["units"] = "angstrom"

    def _stored(self) -> int:
        """Frames in completed data files."""
        return self.frames - (self._n if self._file is not None else 0)
