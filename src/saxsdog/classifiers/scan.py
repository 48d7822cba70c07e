"""Scan maps: classifier values of a raster scan's frames as 2-D images (NXdata).

The calibration's ``"Scan": {"Shape": [rows, columns], "Keys": ["ROI.sum", "Guinier.Rg"]}``
places frame number ``n`` (the last number in the frame's name, counted from the smallest
seen, or from ``Start``) at row ``n // columns``, column ``n % columns`` (``"Snake": true``:
every other row runs backwards, as a meander scan records it).  Frames beyond the shape are
ignored; positions without a frame are NaN.

When the image headers hold the scan's indices, ``"RowKey"`` and ``"ColumnKey"`` name the
header fields of the row and column (from 0; ``Shape`` may then be left out: the maps grow
to the largest indices seen), or ``"IndexKey"`` the field of the point number (placed as the
name's number would be).  The calibration then runs the ``ScanPosition`` classifier, which
reads them in the workers (keys ``ScanPosition.row``, ``.column``, ``.index``); a frame whose
header lacks them falls back to its name's number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import CalibrationError

__all__ = ["ScanMap", "header_keys", "POSITION_KEYS"]

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class ScanMap:
    """Collects the values of ``Keys`` per frame position.

    Parameters
    ----------
    spec
        The ``Scan`` block.
    known_keys
        The parameter keys the calibration's classifiers write (``Keys`` must be among them).
    path
        JSON path of the block, for errors.
    """

    def __init__(self, spec: Mapping[str, Any], known_keys: list[str], path: str = "$.Scan"):
        self.header_keys = header_keys(spec, path)
        by_row_column = "RowKey" in self.header_keys and "ColumnKey" in self.header_keys
        shape = spec.get("Shape")
        self.fixed_shape = shape is not None or not by_row_column
        if self.fixed_shape and (not isinstance(shape, (list, tuple)) or len(shape) != 2
                                 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
            raise CalibrationError("invalid scan shape", f"{path}.Shape", shape,
                                   "[rows, columns], positive integers (needed unless RowKey and ColumnKey are given)")
        self.shape = (int(shape[0]), int(shape[1])) if shape is not None else (0, 0)
        keys = spec.get("Keys") or []
        if not isinstance(keys, list) or not keys:
            raise CalibrationError("a scan needs the keys to map", f"{path}.Keys", keys,
                                   f"a list of keys, e.g. {known_keys[:3]}")
        for i, k in enumerate(keys):
            if k not in known_keys:
                raise CalibrationError(f"no classifier writes {k!r}", f"{path}.Keys[{i}]", k,
                                       f"one of {', '.join(known_keys)}")
        self.keys = list(keys)
        self.snake = bool(spec.get("Snake", False))
        start = spec.get("Start")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
            raise CalibrationError("invalid start", f"{path}.Start", start, "a frame number ≥ 0")
        self.start: int | None = start
        self._values: dict[int, dict[str, float]] = {}
        self._placed: dict[tuple[int, int], dict[str, float]] = {}  # by the header's row and column
        self.last_position: tuple[int, int] | None = None

    def add(self, name: str, parameters: Mapping[str, Any]) -> bool:
        """Record one frame's values; ``False`` when neither its header nor its name places it.

        :attr:`last_position` is then the frame's (row, column) in the map as far as known now
        (``None`` outside it): the page draws the map from these.
        """
        self.last_position = None
        values = {k: _number(parameters.get(k)) for k in self.keys}
        row, col = _index(parameters.get("ScanPosition.row")), _index(parameters.get("ScanPosition.column"))
        if row is not None and col is not None:
            if self.fixed_shape and (row >= self.shape[0] or col >= self.shape[1]):
                return False
            self._placed[(row, col)] = values
            if not self.fixed_shape:
                self.shape = (max(self.shape[0], row + 1), max(self.shape[1], col + 1))
            self.last_position = (row, col)
            return True
        index = _index(parameters.get("ScanPosition.index"))
        if index is None:
            m = _LAST_NUMBER.search(name)
            if m is None:
                return False
            index = int(m.group(1))
        if not self.fixed_shape:  # placed by row and column only: a frame without them is left out
            return False
        self._values[index] = values
        self.last_position = self.position(index - (self.start if self.start is not None else min(self._values)))
        return True

    def position(self, index: int) -> tuple[int, int] | None:
        """Row and column of the index-th frame of the scan (``None`` beyond the shape)."""
        rows, cols = self.shape
        if index < 0 or index >= rows * cols:
            return None
        r, c = divmod(index, cols)
        if self.snake and r % 2 == 1:
            c = cols - 1 - c
        return r, c

    def maps(self) -> dict[str, np.ndarray]:
        """One ``shape`` float array per key (NaN where no frame is)."""
        out = {k: np.full(self.shape, np.nan) for k in self.keys}
        for place, placed_values in self._placed.items():
            for k, v in placed_values.items():
                out[k][place] = v
        if not self._values:
            return out
        start = self.start if self.start is not None else min(self._values)
        for number, values in self._values.items():
            pos = self.position(number - start)
            if pos is None:
                continue
            for k, v in values.items():
                out[k][pos] = v
        return out

    @property
    def frames(self) -> int:
        """Frames recorded so far."""
        return len(self._values) + len(self._placed)

    def nexus_bytes(self, title: str = "scan") -> bytes:
        """The maps as a NeXus file (one NXdata per key, in memory)."""
        import h5py

        maps = self.maps()
        with h5py.File(f"{title}.h5", "w", driver="core", backing_store=False) as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["default"] = _h5name(self.keys[0])
            entry["title"] = title
            for k, data in maps.items():
                g = entry.create_group(_h5name(k))
                g.attrs["NX_class"] = "NXdata"
                g.attrs["signal"] = "data"
                g.attrs["axes"] = ["row", "column"]
                g.attrs["interpretation"] = "image"
                d = g.create_dataset("data", data=data)
                d.attrs["long_name"] = k
                g["row"] = np.arange(self.shape[0])
                g["column"] = np.arange(self.shape[1])
            f.attrs["default"] = "entry"
            f.flush()
            return bytes(f.id.get_file_image())


#: The keys of the ``ScanPosition`` classifier (mappable like any other).
POSITION_KEYS = ("ScanPosition.row", "ScanPosition.column", "ScanPosition.index")


def header_keys(spec: Mapping[str, Any], path: str = "$.Scan") -> dict[str, str]:
    """The ``Scan`` block's header field names (``RowKey``, ``ColumnKey``, ``IndexKey``), checked."""
    out: dict[str, str] = {}
    for name in ("RowKey", "ColumnKey", "IndexKey"):
        v = spec.get(name)
        if v is None:
            continue
        if not isinstance(v, str) or not v:
            raise CalibrationError("not a header field name", f"{path}.{name}", v, "the name of a header field")
        out[name] = v
    if ("RowKey" in out) != ("ColumnKey" in out):
        missing = "ColumnKey" if "RowKey" in out else "RowKey"
        raise CalibrationError("RowKey and ColumnKey go together", f"{path}.{missing}", None,
                               "the header field of the other index")
    return out


def _index(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        return None
    return int(round(value))


def _h5name(key: str) -> str:
    return key.replace("/", "_")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return float("nan")
