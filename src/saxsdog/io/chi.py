"""The ``.chi`` curve format of the original SAXSDOG (and FIT2D's variant).

Layout written by the original (``numpy.savetxt`` with ``fmt='%.18e'``,
``newline='\\n '``, ``comments=''``)::

    <calibration JSON>
    <integral parameters JSON>
    <column labels JSON list>
       <number of rows>
     q I err
     ...

Every data line therefore starts with a space and the file ends with a newline
followed by one space.  Empty bins (no pixel with data) are rows ``q 0 0``, as the original
wrote them; the queue option ``chi_drop_empty`` (``saxsdog --chi-drop-empty``) leaves them
out (the row count on line 4 follows).  The reader accepts this layout, the 2014 layout (output
path, ``q [nm^-1]``, ``Intensity``, row count) and FIT2D's (title, axis label,
blank line, row count, two columns): all have a four-line header.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .fastfloat import lead_column, table_buffer

__all__ = ["ChiData", "ChiFormatter", "format_chi", "write_chi", "read_chi", "drop_empty_bins",
           "intensity_label"]

#: Column labels of a radial curve, as the original wrote them.
RADIAL_LABELS = ["Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]


def intensity_label(unit: str) -> str:
    """The intensity column's label: the original's for counts per pixel, else with the unit.

    >>> intensity_label("counts/pixel"), intensity_label("1/cm/sr")
    ('Intensity (Count/Pixel)', 'Intensity (1/cm/sr)')
    """
    return RADIAL_LABELS[1] if unit in ("counts/pixel", "") else f"Intensity ({unit})"


@dataclass
class ChiData:
    """A curve read from a ``.chi`` file.

    Attributes
    ----------
    x
        First column (q in nm⁻¹ for radial curves, azimuth for Phi-mode, q_h or q_v for slices).
    intensity
        Second column.
    error
        Third column, or ``None`` for two-column files (FIT2D).
    calibration
        The calibration JSON of the header, if present.
    parameters
        The integral parameters JSON of the header, if present.
    labels
        The column labels, if present.
    header
        The four raw header lines.
    """

    x: np.ndarray
    intensity: np.ndarray
    error: np.ndarray | None
    calibration: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    labels: list[str] | None = None
    header: list[str] = field(default_factory=list)

    @property
    def q(self) -> np.ndarray:
        """Alias of :attr:`x` for radial curves."""
        return self.x


def _header(calibration: dict[str, Any] | None, parameters: dict[str, Any] | None,
            labels: Sequence[str], nrows: int) -> str:
    return (
        json.dumps(calibration if calibration is not None else {}) + "\n"
        + json.dumps(parameters if parameters is not None else {}) + "\n"
        + json.dumps(list(labels)) + "\n"
        + "   " + str(nrows)
    )


def format_chi(columns: Sequence[np.ndarray], calibration: dict[str, Any] | None = None,
               parameters: dict[str, Any] | None = None,
               labels: Sequence[str] = RADIAL_LABELS) -> bytes:
    """Render columns as ``.chi`` bytes, identical to the original's ``numpy.savetxt`` call.

    Parameters
    ----------
    columns
        Equal-length 1-D arrays (usually q, I, error).
    calibration, parameters
        Dictionaries written as the first two JSON header lines.
    labels
        Column labels, written as a JSON list on the third header line.

    Returns
    -------
    bytes
        The file content.
    """
    data = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    if not np.all(np.isfinite(data)):
        # Files never carry NaN/inf: empty or undefined entries are written as 0.
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    nrows, ncols = data.shape
    row = " ".join(["%.18e"] * ncols) + "\n "
    # One formatting call for the whole table: the same bytes savetxt produces
    # row by row, several times faster.
    body = (row * nrows) % tuple(data.ravel().tolist())
    return (_header(calibration, parameters, labels, nrows) + "\n " + body).encode("latin-1")


class ChiFormatter:
    """Renders curves that share an x column (one integrator's) faster than :func:`format_chi`.

    The x column and the calibration line are formatted once; each curve then costs only
    its intensity and error columns.  The bytes are identical to :func:`format_chi`'s.
    """

    def __init__(self, x: np.ndarray, calibration: dict[str, Any] | None, labels: Sequence[str]):
        self._xcol = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        #: The x column's text, row by row (:func:`saxsdog.io.fastfloat.lead_column`).
        self._xtext = lead_column(self._xcol)
        self._calibration = (json.dumps(calibration if calibration is not None else {}) + "\n").encode("latin-1")
        self._label_list = list(labels)
        self._labels = json.dumps(self._label_list) + "\n"
        self._tail = self._row_count(self._xcol.size)
        #: ``unit -> (labels line, tail)`` (:meth:`_labels_for`): computed once per unit.
        self._by_unit: dict[str | None, tuple[str | None, bytes]] = {}

    def _row_count(self, nrows: int, labels: str | None = None) -> bytes:
        return ((self._labels if labels is None else labels) + "   " + str(nrows) + "\n ").encode("latin-1")

    def _labels_for(self, unit: str | None) -> tuple[str | None, bytes]:
        """``(labels line or None for the formatter's own, label and row-count lines)`` of a unit."""
        known = self._by_unit.get(unit)
        if known is None:
            labels_line = None  # the intensity label follows the unit (counts/pixel keeps the original's)
            if unit is not None and len(self._label_list) > 1 and intensity_label(unit) != self._label_list[1]:
                relabelled = list(self._label_list)
                relabelled[1] = intensity_label(unit)
                labels_line = json.dumps(relabelled) + "\n"
            known = (labels_line, self._tail if labels_line is None else self._row_count(self._xcol.size, labels_line))
            if len(self._by_unit) < 16:  # a calibration's curves have one or two units
                self._by_unit[unit] = known
        return known

    def render(self, intensity: np.ndarray, error: np.ndarray, parameters: dict[str, Any] | None,
               keep: np.ndarray | None = None, unit: str | None = None) -> bytes:
        """The ``.chi`` bytes of one curve (:meth:`render_parts` joined; the same arguments)."""
        return b"".join(self.render_parts(intensity, error, parameters, keep=keep, unit=unit))

    def render_parts(self, intensity: np.ndarray, error: np.ndarray, parameters: dict[str, Any] | None,
                     keep: np.ndarray | None = None, unit: str | None = None) -> list[bytes | memoryview]:
        """The ``.chi`` bytes of one curve as consecutive buffers (header lines, then the table).

        For writers that take several buffers at once (``os.writev``): the table is not
        copied once more into one ``bytes``.  Joined, they are :meth:`render`'s bytes.

        Parameters
        ----------
        intensity, error
            The curve's columns, one value per bin of the x column.
        parameters
            The integral parameters (second header line).
        keep
            Bool per bin: write only these rows (dropping empty bins, see
            :func:`drop_empty_bins`); the row count of the header follows.  ``None``: every
            row, the original's layout (empty bins as 0 rows).
        unit
            The curve's :attr:`~saxsdog.core.integrators.Curve.unit`: an intensity label
            other than the formatter's second one is written for units other than counts
            per pixel (:func:`intensity_label`); ``None`` keeps the formatter's labels.
        """
        # The numbers go through saxsdog.io.fastfloat: exactly the bytes of '%.18e' % value
        # (Python's formatting, which numpy.savetxt uses), about ten times faster; NaN and
        # infinities are written as 0 there (what numpy.nan_to_num would make of them).
        n = self._xcol.size
        if np.shape(intensity) != (n,) or np.shape(error) != (n,):
            raise ValueError(f"a curve of {np.size(intensity)} intensities and {np.size(error)} errors for "
                             f"{n} bins")
        table = np.empty((n, 2), dtype=np.float64)
        table[:, 0] = intensity
        table[:, 1] = error
        labels_line, tail = self._labels_for(unit)
        rows = None
        if keep is not None and not np.all(keep):
            rows = np.flatnonzero(np.asarray(keep, dtype=bool))
            tail = self._row_count(rows.size, labels_line)
        body = table_buffer(table, " ", "\n ", rows=rows, lead=self._xtext, zero_nonfinite=True)
        params = (json.dumps(parameters if parameters is not None else {}) + "\n").encode("latin-1")
        return [self._calibration, params, tail, body]


def drop_empty_bins(columns: Sequence[np.ndarray], has_data: np.ndarray) -> list[np.ndarray]:
    """The columns without the rows of empty bins (``has_data`` False).

    The original wrote every bin, an empty one as ``I = 0, err = 0``; the queue's
    ``chi_drop_empty`` option (``saxsdog --chi-drop-empty``) leaves them out instead, so that a
    fit reading the file sees no zero-uncertainty points.
    """
    keep = np.asarray(has_data, dtype=bool)
    return [np.asarray(c)[keep] for c in columns]


def write_chi(path: str | os.PathLike[str], columns: Sequence[np.ndarray],
              calibration: dict[str, Any] | None = None,
              parameters: dict[str, Any] | None = None,
              labels: Sequence[str] = RADIAL_LABELS) -> None:
    """Write a ``.chi`` file atomically (see :func:`format_chi`)."""
    atomic_write_bytes(path, format_chi(columns, calibration, parameters, labels))


def _try_json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def read_chi(path: str | os.PathLike[str]) -> ChiData:
    """Read a ``.chi`` file written by saxsdog, the original SAXSDOG or FIT2D.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    ChiData
        Columns and, where present, the header's calibration, parameters and labels.

    Raises
    ------
    ValueError
        If the file does not have the four-line header and numeric columns.
    """
    path = Path(path)
    with open(path, encoding="latin-1") as fh:
        header = [fh.readline().rstrip("\n") for _ in range(4)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # an empty table is checked below
                data = np.loadtxt(fh, ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{path}: not a .chi file ({exc})") from None
    if data.size == 0:
        data = np.zeros((0, 3))
    try:
        declared = int(header[3].strip())
    except ValueError:
        raise ValueError(f"{path}: not a .chi file (line 4 should be the row count, got {header[3]!r})") from None
    if declared != data.shape[0]:
        raise ValueError(f"{path}: header announces {declared} rows but the file has {data.shape[0]}")
    h0, h1, h2 = (_try_json(h) for h in header[:3])
    calibration = parameters = labels = None
    if isinstance(h0, dict):
        calibration = h0
        # The documented order is parameters then labels; the original's code wrote
        # labels then parameters.  Accept both.
        for item in (h1, h2):
            if isinstance(item, dict):
                parameters = item
            elif isinstance(item, list):
                labels = item
    return ChiData(
        x=data[:, 0].copy(),
        intensity=data[:, 1].copy(),
        error=data[:, 2].copy() if data.shape[1] > 2 else None,
        calibration=calibration,
        parameters=parameters,
        labels=labels,
        header=header,
    )
