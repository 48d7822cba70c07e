"""HDF5: Eiger master files and NeXus (h5py, with the hdf5plugin filters).

``import hdf5plugin`` happens before any HDF5 file is opened, so bitshuffle/LZ4 (Eiger)
and other filter plugins decode. Images are looked up in this order: Eiger master links
``/entry/data/data_NNNNNN`` (frames of all data files concatenated in link order),
``/entry/data/data``, the NeXus ``default``/``signal`` chain, any ``NXdata`` group with a
``signal``, the first 3-D numeric dataset, the first 2-D numeric dataset. Leading
dimensions beyond the last two are flattened into frames. The frame shape is checked
against the expected one before a frame is read. Eiger overflow values and pixel masks
are passed through untouched.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from saxsdog.errors import CorruptImageError, ImageError, IncompleteImageError

from ._base import (
    MAX_HEADER_FIELDS,
    Frame,
    Shape,
    SourceBase,
    check_declared,
    check_frame_index,
    check_shape,
    header_text,
    parse_date,
    set_date,
    wavelength_to_angstrom,
)

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HDF5_SIG = SIGNATURE


class LazyHeaderFields(Mapping):
    """``Frame.metadata["header"]`` of an HDF5 frame: a read-only ``{str: str}`` mapping
    whose fields are read when it is first looked at (see :meth:`H5Source.header_fields`).

    Scanning every scalar of a NeXus file costs milliseconds (tens of µs per dataset),
    which most frames never need; a frame whose calibration reads a header field pays it
    once per file.  Compares equal to a dict of the same fields; pickles as a dict.
    """

    __slots__ = ("_source", "_index", "_fields")

    def __init__(self, source: H5Source, index: int):
        self._source: H5Source | None = source
        self._index = index
        self._fields: dict[str, str] | None = None

    def _resolved(self) -> dict[str, str]:
        if self._fields is None:
            assert self._source is not None
            self._fields = self._source.header_fields(self._index)
            self._source = None  # the file's fields are kept; the source may go
        return self._fields

    def __getitem__(self, key: str) -> str:
        return self._resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._resolved() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._resolved()) if self._fields is not None else f"<header fields of frame {self._index}, not read yet>"

    def __reduce__(self):
        return (dict, (self._resolved(),))


class H5Source(SourceBase):
    """An open HDF5 file with its image datasets located.

    ``segments`` is a list of ``(dataset, nframes)``; an Eiger master has one
    segment per ``data_NNNNNN`` link, a NeXus file one.
    """

    def __init__(self, path: str, expected_shape: Shape | None = None):
        self.path = path
        self._expected = expected_shape
        self.file: Any = None
        self.segments: list[tuple[Any, int]] = []
        self._nframes = 0
        self._meta: dict | None = None
        self._frame_time: float | None = None
        self._scanned: tuple[dict[str, str], dict[str, str]] | None = None
        self._image_names: list[str] = []

    # -- context management ------------------------------------------------ #
    def open(self) -> H5Source:
        """Open the file and locate its image datasets."""
        self._open()
        try:
            self._locate()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except Exception:  # noqa: BLE001
                pass
            self.file = None
        # The image datasets of an Eiger master live in the files its external links name:
        # dropping them closes those files too, even while a frame's LazyHeaderFields keeps
        # this source (an HDF5 file left open in a process that then forks workers is
        # shared with them by the HDF5 library, and their reads of it fail).
        self.segments = []

    # -- opening ------------------------------------------------------------ #
    def _open(self) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other filters)

        try:
            self.file = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise ImageError(self.path, "no such file") from None
        except OSError as exc:
            raise self._classify_open_error(exc) from exc
        except Exception as exc:
            raise CorruptImageError(self.path, f"cannot be opened as HDF5: {exc}") from exc

    def _classify_open_error(self, exc: Exception) -> ImageError:
        msg = str(exc)
        low = msg.lower()
        if "truncated file" in low:
            return IncompleteImageError(
                self.path, f"HDF5 file is truncated, probably still being written ({msg})"
            )
        if "lock" in low:
            return IncompleteImageError(
                self.path,
                f"HDF5 file is locked by its writer, probably still being written ({msg})",
            )
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
        except OSError:
            head = b""
        if head == _HDF5_SIG:
            return IncompleteImageError(
                self.path, f"HDF5 file cannot be opened yet, probably still being written ({msg})"
            )
        return CorruptImageError(self.path, f"not a readable HDF5 file ({msg})")

    # -- locating the images ----------------------------------------------- #
    def _locate(self) -> None:
        import h5py

        f = self.file
        try:
            found = self._eiger_segments(f)
            if not found:
                ds = self._nexus_signal(f) or self._first_image_dataset(f)
                if ds is None:
                    raise CorruptImageError(
                        self.path, "HDF5 file contains no 2-D or 3-D numeric image dataset"
                    )
                found = [ds]
        except ImageError:
            raise
        except (KeyError, OSError, RuntimeError, ValueError) as exc:
            raise IncompleteImageError(
                self.path, f"HDF5 structure cannot be read yet ({exc})"
            ) from exc
        for ds in found:
            if not isinstance(ds, h5py.Dataset) or ds.ndim < 2:
                raise CorruptImageError(
                    self.path, f"HDF5 object {ds.name} is not an image dataset"
                )
            n = int(math.prod(ds.shape[:-2])) if ds.ndim > 2 else 1
            self.segments.append((ds, n))
        self._nframes = sum(n for _, n in self.segments)
        self._image_names = [ds.name for ds, _ in self.segments]

    def _eiger_segments(self, f) -> list:
        import h5py

        grp = f.get("/entry/data")
        if not isinstance(grp, h5py.Group):
            return []
        names = sorted(k for k in grp.keys() if re.fullmatch(r"data_\d{6}", k))
        out = []
        for name in names:
            link = grp.get(name, getlink=True)
            try:
                ds = grp[name]
            except (KeyError, OSError) as exc:
                target = (
                    f" -> {link.filename}:{link.path}"
                    if isinstance(link, h5py.ExternalLink)
                    else ""
                )
                raise IncompleteImageError(
                    self.path,
                    f"Eiger data link /entry/data/{name}{target} cannot be opened: the data "
                    f"file is missing or still being written ({exc})",
                ) from exc
            out.append(ds)
        if not out:
            d = grp.get("data")
            if isinstance(d, h5py.Dataset) and d.ndim >= 2:
                out.append(d)
        return out

    def _nexus_signal(self, f):
        import h5py

        def attr(obj, name):
            v = obj.attrs.get(name)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if isinstance(v, np.ndarray) and v.size == 1:
                v = v.item()
                if isinstance(v, bytes):
                    v = v.decode("utf-8", "replace")
            return v

        def signal_of(grp):
            sig = attr(grp, "signal")
            if isinstance(sig, str) and isinstance(grp.get(sig), h5py.Dataset):
                ds = grp[sig]
                if ds.ndim >= 2 and ds.dtype.kind in "uif":
                    return ds
            return None

        # Follow the NeXus "default" attributes first.
        grp = f
        for _ in range(3):
            d = attr(grp, "default")
            if not isinstance(d, str) or not isinstance(grp.get(d), h5py.Group):
                break
            grp = grp[d]
            ds = signal_of(grp)
            if ds is not None:
                return ds
        found: list[Any] = []

        def visit(name, obj):
            if found:
                return True
            if isinstance(obj, h5py.Group) and attr(obj, "NX_class") == "NXdata":
                ds = signal_of(obj)
                if ds is not None:
                    found.append(ds)
                    return True
            elif isinstance(obj, h5py.Dataset) and attr(obj, "signal") in (1, "1"):
                if obj.ndim >= 2 and obj.dtype.kind in "uif":
                    found.append(obj)
                    return True
            return None

        f.visititems(visit)
        return found[0] if found else None

    def _first_image_dataset(self, f):
        import h5py

        three: list = []
        two: list = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "uif":
                if obj.ndim == 3 and not three:
                    three.append(obj)
                    return True
                if obj.ndim == 2 and not two and min(obj.shape) > 1:
                    two.append(obj)
            return None

        f.visititems(visit)
        return (three or two or [None])[0]

    # -- metadata ----------------------------------------------------------- #
    def _scalar(self, *paths: str):
        import h5py

        for p in paths:
            try:
                obj = self.file.get(p)
            except (KeyError, OSError, RuntimeError, ValueError):
                continue
            if not isinstance(obj, h5py.Dataset):
                continue
            try:
                v = obj[()]
            except (OSError, RuntimeError, ValueError, TypeError):
                continue
            if isinstance(v, np.ndarray):
                if v.size == 0:
                    continue
                v = v.flat[0]
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            units = obj.attrs.get("units", "")
            if isinstance(units, bytes):
                units = units.decode("utf-8", "replace")
            return v, str(units)
        return None

    def _base_metadata(self) -> dict:
        if self._meta is not None:
            return self._meta
        meta: dict[str, Any] = {}
        det = "/entry/instrument/detector"
        v = self._scalar(f"{det}/count_time")
        if v is not None:
            try:
                meta["exposure_time"] = float(v[0])
            except (TypeError, ValueError):
                pass
        v = self._scalar(
            "/entry/instrument/beam/incident_wavelength",
            "/entry/instrument/monochromator/wavelength",
            "/entry/instrument/source/wavelength",
        )
        if v is not None:
            try:
                wl = wavelength_to_angstrom(float(v[0]), v[1] or "A")
                if wl is not None:
                    meta["wavelength"] = wl
            except (TypeError, ValueError):
                pass
        v = self._scalar(f"{det}/description", f"{det}/model", f"{det}/local_name")
        if v is not None and str(v[0]).strip():
            meta["detector"] = str(v[0]).strip()
        v = self._scalar(f"{det}/detectorSpecific/data_collection_date", "/entry/start_time")
        if v is not None:
            set_date(meta, parse_date(str(v[0])))
        v = self._scalar(f"{det}/frame_time")
        if v is not None:
            try:
                self._frame_time = float(v[0])
            except (TypeError, ValueError):
                pass
        self._meta = meta
        return meta

    def header_fields(self, index: int) -> dict[str, str]:
        """Raw header fields of frame ``index``: every scalar dataset and attribute outside
        the image data (the file is opened again if it was closed meanwhile).

        A scalar dataset is listed by its path without the leading ``/``
        (``entry/instrument/detector/count_time``) and by its name (``count_time``; the
        first one found in breadth order wins, so ``entry/instrument/detector/count_time``
        before a deeper one).  An attribute is listed as ``<path>@<name>`` and, on the
        root, ``@<name>``.  A 1-D dataset with one value per frame (a monitor written
        per frame, ``NDAttributes``) is read at the frame's index.  The scan is bounded to
        :data:`~._base.MAX_HEADER_FIELDS` objects and done once per file.
        """
        if self.file is not None:
            return self._fields_of(self.file, index)
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                return self._fields_of(f, index)
        except (OSError, ValueError):
            return dict(self._scanned[0]) if self._scanned is not None else {}

    def _fields_of(self, f: Any, index: int) -> dict[str, str]:
        if self._scanned is None:
            self._scanned = self._scan_fields(f)
        fields, per_frame = self._scanned
        fields = dict(fields)
        for key, path in per_frame.items():
            if key in fields:
                continue
            try:
                text = header_text(f[path][index])
            except (KeyError, OSError, RuntimeError, ValueError, TypeError, IndexError):
                continue
            if text is not None:
                fields[key] = text
        return fields

    def _scan_fields(self, f: Any) -> tuple[dict[str, str], dict[str, str]]:
        """Scalar fields, and the per-frame datasets' keys → paths, of the open file ``f``."""
        import h5py

        fields: dict[str, str] = {}
        per_frame: dict[str, str] = {}
        nframes = self._nframes
        images = set(self._image_names)
        visited = 0
        queue: list[Any] = [f]
        while queue and visited < MAX_HEADER_FIELDS:
            group = queue.pop(0)
            self._attr_fields(group, fields)
            try:
                names = list(group.keys())
            except (KeyError, OSError, RuntimeError, ValueError):
                continue
            for name in names:
                visited += 1
                if visited >= MAX_HEADER_FIELDS:
                    break
                try:
                    link = group.get(name, getlink=True)
                    if isinstance(link, h5py.ExternalLink):
                        continue  # data files of an Eiger master: not opened for the header
                    obj = group.get(name)
                except (KeyError, OSError, RuntimeError, ValueError):
                    continue
                if isinstance(obj, h5py.Group):
                    queue.append(obj)
                    continue
                if not isinstance(obj, h5py.Dataset) or obj.name in images:
                    continue
                path = obj.name.lstrip("/")
                try:
                    if obj.size == 1 and obj.ndim <= 1:
                        text = header_text(obj[()] if obj.ndim == 0 else obj[0])
                        if text is not None:
                            fields[path] = text
                            fields.setdefault(name, text)
                    elif (obj.ndim == 1 and nframes > 1 and obj.shape[0] == nframes
                          and obj.dtype.kind in "iufb"):
                        per_frame[path] = obj.name
                        per_frame.setdefault(name, obj.name)
                except (OSError, RuntimeError, ValueError, TypeError):
                    continue
                self._attr_fields(obj, fields)
        return fields, per_frame

    @staticmethod
    def _attr_fields(obj: Any, fields: dict[str, str]) -> None:
        try:
            items = list(obj.attrs.items())
        except (KeyError, OSError, RuntimeError, ValueError, TypeError):
            return
        prefix = obj.name.lstrip("/")
        for key, value in items:
            if isinstance(value, np.ndarray):
                if value.size != 1:
                    continue
                value = value.flat[0]
            text = header_text(value)
            if text is not None:
                fields[f"{prefix}@{key}"] = text

    def metadata(self, index: int) -> dict:
        """Metadata for frame *index*; date/timestamp advance by ``frame_time``; the raw
        header fields (``"header"``) are read when first looked at."""
        meta = dict(self._base_metadata())
        if index and self._frame_time and "date" in meta:
            dt = parse_date(meta["date"])
            if dt is not None:
                set_date(meta, dt + timedelta(seconds=index * self._frame_time))
        meta["header"] = LazyHeaderFields(self, index)
        return meta

    @property
    def nframes(self) -> int:
        return self._nframes

    def header(self, index: int = 0) -> dict:
        return self.metadata(index)

    # -- reading ------------------------------------------------------------ #
    def frame(self, index: int, expected_shape: Shape | None = None) -> Frame:
        if expected_shape is None:
            expected_shape = self._expected
        check_frame_index(self.path, index, self.nframes)
        local = index
        for segment, n in self.segments:
            if local < n:
                ds = segment
                break
            local -= n
        shape = tuple(ds.shape[-2:])
        check_declared(self.path, shape, expected_shape, itemsize=ds.dtype.itemsize,
                       what="dataset is")
        check_shape(self.path, shape, expected_shape, "dataset is")
        dtype = ds.dtype.newbyteorder("=") if ds.dtype.byteorder not in ("=", "|") else ds.dtype
        data = np.empty(shape, dtype=dtype)
        if ds.ndim == 2:
            sel: Any = np.s_[...]
        else:
            sel = tuple(int(i) for i in np.unravel_index(local, ds.shape[:-2])) + (
                slice(None),
                slice(None),
            )
        try:
            ds.read_direct(data, source_sel=sel)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            msg = str(exc)
            if "filter" in msg.lower() and ("not" in msg.lower() or "can't" in msg.lower()):
                raise CorruptImageError(
                    self.path,
                    f"HDF5 dataset {ds.name} uses a compression filter that is not "
                    f"available ({msg})",
                ) from exc
            raise IncompleteImageError(
                self.path,
                f"frame {index} of HDF5 dataset {ds.name} cannot be read, probably still "
                f"being written ({msg})",
            ) from exc
        return Frame(
            data=data, path=self.path, index=index, nframes=self.nframes,
            metadata=self.metadata(index),
        )


class Hdf5Reader:
    """:class:`~saxsdog.io.images.registry.FormatReader` for HDF5 / NeXus / Eiger masters."""

    name = "hdf5"
    suffixes: tuple[str, ...] = (".h5", ".hdf5", ".nxs", ".hdf", ".nx5")
    compressible = False

    def sniff(self, head: bytes) -> bool:
        return head.startswith(SIGNATURE)

    def open(self, path: str, f, size: int, head: bytes, expected_shape: Shape | None):
        return H5Source(path, expected_shape).open()
