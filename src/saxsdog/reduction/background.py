"""Background subtraction with propagated errors.

A calibration's ``Background`` block (format version 2)::

    "Background": {"File": "empty_cell.chi", "Scale": 1.0,
                   "ExposureTime": 10, "Transmission": 0.92}

``File`` (relative to the calibration's folder) is either

* a **curve**: a ``.chi`` file (as saxsdog or the original writes it; x in nm⁻¹) or an
  NXcanSAS file (``.h5``/``.nxs``/``.nx``/``.hdf5`` holding one ``SASdata``; its ``Q`` in
  1/nm or 1/Å).  It is subtracted from every radial integrator's curve (Phi-mode and
  slice curves have other x axes and get no subtracted curve); or
* an **image** (any format saxsdog reads, or ``.npy``), integrated once with the same
  calibration, corrections and masks; every integrator's curve gets its subtracted curve.
  A file of several frames is the mean of its frames' normalized curves.

The background is normalized by its own ``ExposureTime``, ``Monitor`` and
``Transmission`` (each as in the ``Normalization`` block; absent: the ``Normalization``
block's setting, read from the background image's own header) and by the sample's
thickness and absolute scale, then multiplied by ``Scale`` k:

    I_sub = I_s − k·b_n,    σ_sub² = σ_s² + k²·σ_bn²

with ``I_s``, ``σ_s`` the frame's normalized curve and ``b_n``, ``σ_bn`` the normalized
background.  A curve has no image header: a header setting (``"header"``,
``{"Header": KEY}``), given or inherited, is refused for it with a message naming the
field; give the background's number (or ``null`` when the curve is already normalized).

**A curve already normalized.**  A curve whose file states the unit of the calibration's
curves (other than counts/pixel: a saxsdog ``.chi`` label ``Intensity (1/cm/sr)``, NXcanSAS
``I@saxsdog_unit``, or canSAS ``I@units = 1/cm`` for 1/cm/sr), e.g. the empty cell reduced
with the same calibration, is subtracted as it is, times ``Scale``: neither its exposure,
monitor and transmission nor the sample's thickness and absolute scale are applied again
(header settings inherited from ``Normalization`` do not matter then; the background's own
are refused).  A curve stating another unit is refused.  A curve in counts/pixel, or one
that does not state its unit (the original's files), is normalized as above.

**Another q grid.**  A background curve on the integrator's own grid (same number of
bins, centres equal to 1e-6 of a bin width) is used as it is, and so is one on that grid
without its empty bins (an NXcanSAS file saxsdog wrote: the bins it left out have no
background).  On another grid it is
**interpolated** linearly (errors propagated with the interpolation weights) within its
own q range, and a warning is logged once; the sample's bins outside that range have no
background, so the subtracted curve marks them empty (``Curve.valid`` false, written as
empty bins).  A background whose q range does not overlap the integrator's at all is
refused (``$.Background.File``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.integrators import Curve
from ..errors import CalibrationError

__all__ = ["CURVE_SUFFIXES", "BackgroundCurve", "read_background_curve", "is_curve_file", "on_grid",
           "subtract", "mean_curve", "chi_unit", "nxcansas_unit", "normalized_like"]

log = logging.getLogger(__name__)

#: File suffixes read as curves; an HDF5 file is a curve when it holds NXcanSAS SASdata.
CURVE_SUFFIXES = (".chi",)
_HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".nx", ".hdf", ".nx5")
_FIELD = "$.Background.File"


@dataclass
class BackgroundCurve:
    """A background as a curve: bin centres (nm⁻¹), mean intensity, error, bins with data."""

    x: np.ndarray
    intensity: np.ndarray
    error: np.ndarray
    valid: np.ndarray
    source: str = ""
    #: The intensity's unit as the file states it (a saxsdog ``.chi`` label, NXcanSAS
    #: ``I@saxsdog_unit`` or ``I@units``), ``None`` when the file does not say.
    unit: str | None = None


def _is_nxcansas(path: Path) -> bool:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        return False
    try:
        with h5py.File(path, "r") as f:
            for g in f.values():
                cls = g.attrs.get("canSAS_class") if isinstance(g, h5py.Group) else None
                if isinstance(cls, bytes):
                    cls = cls.decode()
                if cls == "SASentry":
                    return True
    except (OSError, ValueError):
        return False
    return False


def is_curve_file(path: str | Path) -> bool:
    """Whether a background file is a curve (``.chi``, or an HDF5 file with a SASentry)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in CURVE_SUFFIXES:
        return True
    return suffix in _HDF5_SUFFIXES and _is_nxcansas(p)


_Q_UNITS_TO_NM = {"1/nm": 1.0, "nm^-1": 1.0, "nm-1": 1.0, "1/a": 10.0, "1/angstrom": 10.0, "a^-1": 10.0,
                  "1/å": 10.0, "å^-1": 10.0, "angstrom^-1": 10.0, "1/m": 1e-9, "m^-1": 1e-9}


def _curve_arrays(x: np.ndarray, intensity: np.ndarray, error: np.ndarray | None, source: str) -> BackgroundCurve:
    x = np.asarray(x, dtype=np.float64)
    intensity = np.asarray(intensity, dtype=np.float64)
    if x.ndim != 1 or intensity.shape != x.shape or x.size < 2:
        raise CalibrationError(f"background curve {source} has no usable columns (x {x.shape}, I "
                               f"{intensity.shape})", _FIELD, source, "a curve of at least two bins")
    if error is None:
        log.warning("background curve %s has no error column: its errors are taken as 0", source)
        error = np.zeros_like(intensity)
    error = np.asarray(error, dtype=np.float64)
    if error.shape != x.shape:
        raise CalibrationError(f"background curve {source}: error column of {error.size} values for "
                               f"{x.size} bins", _FIELD, source, "one error per bin")
    finite = np.isfinite(x) & np.isfinite(intensity) & np.isfinite(error)
    # files write empty bins as I = 0, σ = 0 (the .chi layout) or leave them out (NXcanSAS)
    valid = finite & ((error > 0) | (intensity != 0))
    if not valid.any():
        raise CalibrationError(f"background curve {source} holds no data (every bin empty)", _FIELD, source,
                               "a curve with data")
    order = np.argsort(x, kind="stable")
    if not np.all(np.diff(x[order][valid[order]]) > 0):
        raise CalibrationError(f"background curve {source}: q values repeat", _FIELD, source,
                               "strictly increasing q")
    return BackgroundCurve(x[order], np.where(valid, intensity, 0.0)[order], np.where(valid, error, 0.0)[order],
                           valid[order], source)


def read_background_curve(path: str | Path) -> BackgroundCurve:
    """Read a background curve: ``.chi`` (x in nm⁻¹) or NXcanSAS with one curve.

    Raises
    ------
    CalibrationError
        At ``$.Background.File``: the file is missing, unreadable, not a curve, holds
        several curves, or its q unit is unknown.
    """
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"background file not found: {p}", _FIELD, str(p), "an existing file")
    if p.suffix.lower() in CURVE_SUFFIXES:
        from ..io.chi import read_chi

        try:
            chi = read_chi(p)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read the background curve: {exc}", _FIELD, str(p),
                                   "a .chi file") from None
        curve = _curve_arrays(chi.x, chi.intensity, chi.error, str(p))
        curve.unit = chi_unit(chi.labels)
        return curve
    from ..io.nxcansas import read_nxcansas

    try:
        frames = read_nxcansas(p)
    except (OSError, ValueError, KeyError) as exc:
        raise CalibrationError(f"cannot read the background curve: {exc}", _FIELD, str(p),
                               "an NXcanSAS file with one curve") from None
    if len(frames) != 1:
        raise CalibrationError(f"background file {p} holds {len(frames)} curves; give a file with one",
                               _FIELD, str(p), "an NXcanSAS file with one curve")
    fr = frames[0]
    units = str(fr.get("q_units") or "1/nm").strip().lower().replace(" ", "")
    if units not in _Q_UNITS_TO_NM:
        raise CalibrationError(f"background curve {p}: unknown Q unit {fr.get('q_units')!r}", _FIELD, str(p),
                               "Q in 1/nm or 1/angstrom")
    curve = _curve_arrays(np.asarray(fr["q"]) * _Q_UNITS_TO_NM[units], fr["I"], fr.get("Idev"), str(p))
    curve.unit = nxcansas_unit(fr.get("unit"), fr.get("I_units"))
    return curve


_CHI_INTENSITY = re.compile(r"^\s*Intensity\s*\((.+)\)\s*$")


def chi_unit(labels: Any) -> str | None:
    """The intensity unit a ``.chi`` file's column labels state (``Intensity (1/cm/sr)``;
    the original's ``Intensity (Count/Pixel)`` is counts/pixel), ``None`` when they do not."""
    if not isinstance(labels, (list, tuple)) or len(labels) < 2 or not isinstance(labels[1], str):
        return None
    m = _CHI_INTENSITY.match(labels[1])
    if m is None:
        return None
    unit = m.group(1).strip()
    return "counts/pixel" if unit.lower() == "count/pixel" else unit


def nxcansas_unit(saxsdog_unit: Any, units: Any) -> str | None:
    """The intensity unit of an NXcanSAS curve: saxsdog's own (``I@saxsdog_unit``), else
    absolute ``I@units`` (canSAS ``1/cm`` is dΣ/dΩ, saxsdog's ``1/cm/sr``); ``None`` for
    ``arbitrary`` or none."""
    if isinstance(saxsdog_unit, str) and saxsdog_unit.strip():
        return saxsdog_unit.strip()
    if isinstance(units, str) and units.strip().lower().replace(" ", "") in ("1/cm", "cm^-1", "cm-1"):
        return "1/cm/sr"
    return None


def normalized_like(curve: BackgroundCurve, unit: str, background: Mapping[str, Any]) -> bool:
    """Whether a background curve is already normalized as the calibration's curves are
    (its file states their unit, other than counts/pixel), so it is subtracted as it is
    (times ``Scale``) instead of being normalized a second time.

    Raises
    ------
    CalibrationError
        The file states another unit (it cannot be put on the curves' scale), or the
        background gives its own ExposureTime/Monitor/Transmission for a curve that is
        already normalized (it would be divided twice).
    """
    if curve.unit is None or curve.unit == "counts/pixel":
        return False  # counts per pixel (or unknown): normalized here
    if curve.unit != unit:
        raise CalibrationError(
            f"background curve {curve.source} is in {curve.unit}, the curves of this calibration in {unit}: "
            "reduce the background with this calibration (or give it in counts/pixel with its own "
            "ExposureTime, Monitor and Transmission)", _FIELD, curve.source, f"a curve in {unit} or counts/pixel")
    for name in ("ExposureTime", "Monitor", "Transmission"):
        if background.get(name) is not None:
            raise CalibrationError(
                f"background curve {curve.source} is already normalized ({curve.unit}, the unit of this "
                f"calibration's curves): its own {name} would divide it a second time; leave "
                f"$.Background.{name} out (or null)", f"$.Background.{name}", background.get(name), "null")
    return True


def on_grid(background: BackgroundCurve, x: np.ndarray, what: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The background on the bins ``x``: intensity, error and bins with background.

    The same grid is used as it is; another grid is interpolated within the
    background's q range (see the module docstring), bins outside it have none.

    Raises
    ------
    CalibrationError
        At ``$.Background.File`` when the ranges do not overlap.
    """
    x = np.asarray(x, dtype=np.float64)
    bx = background.x
    width = float(np.median(np.abs(np.diff(x)))) if x.size > 1 else 1.0
    if bx.size == x.size and np.all(np.abs(bx - x) <= 1e-6 * max(width, 1e-300)):
        return background.intensity.copy(), background.error.copy(), background.valid.copy()
    keep = background.valid
    kx, ki, ke = bx[keep], background.intensity[keep], background.error[keep]
    # the same grid without its empty bins (as NXcanSAS files are written): bin for bin
    pos = np.clip(np.searchsorted(x, kx), 0, x.size - 1)
    near = np.where(np.abs(x[pos] - kx) <= np.abs(x[np.maximum(pos - 1, 0)] - kx), pos, np.maximum(pos - 1, 0))
    if x.size and np.all(np.abs(x[near] - kx) <= 1e-6 * max(width, 1e-300)) and np.unique(near).size == near.size:
        intensity, error, valid = np.zeros_like(x), np.zeros_like(x), np.zeros(x.size, dtype=bool)
        intensity[near], error[near], valid[near] = ki, ke, True
        return intensity, error, valid
    inside = (x >= kx[0]) & (x <= kx[-1])
    if not inside.any():
        raise CalibrationError(
            f"background curve {background.source} covers q {kx[0]:.6g}..{kx[-1]:.6g} nm^-1, which does not "
            f"overlap the {what or 'integrator'}'s {x.min():.6g}..{x.max():.6g} nm^-1", _FIELD,
            background.source, "a background on the same q range")
    log.warning("background curve %s is on another q grid than the %s (%d bins, %.6g..%.6g nm^-1; the "
                "background has %d bins, %.6g..%.6g): interpolated linearly, %d bins outside its range have "
                "no subtracted value", background.source, what or "integrator", x.size, x.min(), x.max(),
                bx.size, kx[0], kx[-1], int((~inside).sum()))
    xi = x[inside]
    hi = np.clip(np.searchsorted(kx, xi, side="left"), 1, kx.size - 1)
    lo = hi - 1
    w = (xi - kx[lo]) / (kx[hi] - kx[lo])
    intensity = np.zeros_like(x)
    error = np.zeros_like(x)
    intensity[inside] = (1 - w) * ki[lo] + w * ki[hi]
    error[inside] = np.sqrt(((1 - w) * ke[lo]) ** 2 + (w * ke[hi]) ** 2)
    return intensity, error, inside


def subtract(curve: Curve, intensity: np.ndarray, error: np.ndarray, valid: np.ndarray | None = None,
             parameters: Callable[[np.ndarray], dict[str, Any]] | None = None) -> Curve:
    """``curve`` minus a background already normalized and scaled (k·b_n, k·σ_bn).

    The subtracted intensity is ``I − b``, its error ``√(σ² + σ_b²)``; bins where the
    curve or the background has no data are empty (0, marked in ``valid``).  The
    standard deviation (the spread of the frame's pixels) is the frame's.

    Parameters
    ----------
    curve
        The frame's normalized curve.
    intensity, error
        The background on the curve's bins, normalized and multiplied by its Scale.
    valid
        Bins where the background has data (default: all).
    parameters
        Integral parameters of the subtracted intensity (the integrator's), else none.
    """
    ok = np.asarray(curve.has_data, dtype=bool)
    if valid is not None:
        ok = ok & np.asarray(valid, dtype=bool)
    sub = np.where(ok, curve.intensity - intensity, 0.0)
    err = np.where(ok, np.sqrt(np.square(curve.poisson) + np.square(error)), 0.0)
    std = None if curve.stddev is None else np.where(ok, curve.stddev, 0.0)
    params = parameters(sub) if parameters is not None else {}
    return Curve(curve.x, sub, std, err, params, valid=ok, dummy_pixels=curve.dummy_pixels, unit=curve.unit,
                 rejected_pixels=curve.rejected_pixels)


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of normalized curves of one background (several frames): intensity,
    error ``√Σσ²/n`` and bins with data in every frame."""
    n = len(curves)
    if n == 1:
        return curves[0]
    valid = np.logical_and.reduce([v for _, _, v in curves])
    intensity = np.where(valid, sum(i for i, _, _ in curves) / n, 0.0)
    error = np.where(valid, np.sqrt(sum(np.square(e) for _, e, _ in curves)) / n, 0.0)
    return intensity, error, valid


def background_specs(background: Mapping[str, Any], normalization: Mapping[str, Any] | None
                     ) -> dict[str, tuple[Any, str]]:
    """The background's ExposureTime/Monitor/Transmission settings with the JSON path
    each comes from (its own field, else the Normalization block's)."""
    out: dict[str, tuple[Any, str]] = {}
    for name in ("ExposureTime", "Monitor", "Transmission"):
        if name in background:
            out[name] = (background[name], f"$.Background.{name}")
        else:
            out[name] = ((normalization or {}).get(name), f"$.Normalization.{name} (inherited by $.Background)")
    return out


def check_curve_specs(specs: Mapping[str, tuple[Any, str]]) -> None:
    """Refuse header settings for a curve background (it has no image header)."""
    for name, (spec, where) in specs.items():
        if isinstance(spec, (str, Mapping)):
            path = f"$.Background.{name}"
            raise CalibrationError(
                f"the background is a curve, which has no image header, but {where} reads {name} from "
                f"the header; give $.Background.{name} as a number (or null when the curve is already "
                f"normalized)", path, spec, "a number or null")


def finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
