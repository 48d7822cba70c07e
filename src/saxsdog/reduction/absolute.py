"""Absolute intensity: the factor that puts curves on the scale of dΣ/dΩ (1/cm, per steradian).

A standard of known differential scattering cross-section per unit volume dΣ/dΩ is
measured with the same calibration as the samples (the same normalization by exposure
time, monitor, transmission and thickness, and the same background subtraction, e.g. the
empty capillary), and one factor ``k`` is fitted so that ``k · I_measured(q) ≈ dΣ/dΩ(q)``.
That factor, times any ``AbsoluteScale`` already applied to the standard's curve, is the
calibration's ``Normalization.AbsoluteScale``; every curve reduced with it is then in 1/cm.

Two kinds of standard
---------------------
Water
    Flat in q at small angles.  Its forward scattering follows from the compressibility
    equation of a one-component liquid: with n molecules per volume, Z = 10 electrons per
    molecule, r_e the classical electron radius and κ_T the isothermal compressibility,
    ``dΣ/dΩ = n² (Z r_e)² k_B T κ_T``.  At 20 °C this gives 0.0164 cm⁻¹; the measured value
    used by SAXS laboratories is 0.01632 cm⁻¹ (Orthaber, Bergmann & Glatter, "SAXS
    experiments on absolute scale with Kratky systems using water as a secondary
    standard", J. Appl. Cryst. 33 (2000) 218–225), which :func:`water_cross_section`
    returns at 20 °C.  At other temperatures it is scaled by ``n(T)² T κ_T(T)`` relative to
    20 °C, with the density and compressibility of liquid water at atmospheric pressure
    from G. S. Kell, "Density, thermal expansivity, and compressibility of liquid water
    from 0 to 150 °C", J. Chem. Eng. Data 20 (1975) 97–105 (its equations for ρ(t) and
    κ_T(t), t in °C, valid 0–100 °C at 1 atm).  The product has its minimum near 22 °C:
    +0.9 % at 10 °C, +0.04 % at 25 °C, +0.4 % at 30 °C, +1.7 % at 40 °C.
A reference table
    (q, dΣ/dΩ[, σ]) rows, such as the certificate of NIST's glassy-carbon SRM 3600.  The
    reference is interpolated onto the measured q in log-log (both positive) and the one
    factor fitted over the q range the two share.

The fit
-------
Weighted least squares of ``I_i = c · R_i`` with weights ``1 / (σ_I,i² + c² σ_R,i²)``
(iterated, since the reference's σ enters through c), ``c = Σ w I R / Σ w R²``; the
factor is ``k = 1 / c``.  Its standard uncertainty is ``σ_c = (Σ w R²)^-1/2`` propagated to
k, multiplied by √(χ²/ν) when that exceeds 1 (the scatter about the fit is larger than
the errors say; ν = N − 1).  A curve without an error column is fitted unweighted and the
uncertainty taken from the scatter alone.
"""

from __future__ import annotations

import copy
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saxsdog.errors import SaxsdogError

__all__ = ["WATER_20C_PER_CM", "AbsoluteScaleError", "MeasuredCurve", "ReferenceTable", "ScaleFit",
           "water_density", "water_compressibility", "water_cross_section", "read_curve",
           "read_reference_table", "parse_reference_table", "fit_scale", "fit_water",
           "applied_normalization", "thickness_divisor", "with_absolute_scale", "plot_fit"]

#: dΣ/dΩ of water at 20 °C for X-rays, 1/cm (Orthaber, Bergmann & Glatter 2000).
WATER_20C_PER_CM = 0.01632
#: Temperatures (°C) over which the water value is scaled (liquid at 1 atm; Kell's fits).
WATER_TEMPERATURE_RANGE_C = (0.0, 100.0)
#: q units a reference table may be in, and the factor to nm⁻¹ (saxsdog's q unit).
Q_UNITS = {"1/nm": 1.0, "1/A": 10.0}
_CURVE_SUFFIXES = (".chi", ".dat", ".txt", ".csv")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".nx", ".hdf")


class AbsoluteScaleError(SaxsdogError, ValueError):
    """A standard or reference that cannot give a factor; the message names file and problem."""


# --------------------------------------------------------------------------- water

def water_density(t_c: float) -> float:
    """Density of liquid water at 1 atm, kg/m³ (Kell 1975, t in °C)."""
    num = (999.83952 + 16.945176 * t_c - 7.9870401e-3 * t_c ** 2 - 46.170461e-6 * t_c ** 3
           + 105.56302e-9 * t_c ** 4 - 280.54253e-12 * t_c ** 5)
    return num / (1.0 + 16.879850e-3 * t_c)


def water_compressibility(t_c: float) -> float:
    """Isothermal compressibility of liquid water at 1 atm, 1/Pa (Kell 1975, t in °C)."""
    num = (50.88496 + 0.6163813 * t_c + 1.459187e-3 * t_c ** 2 + 20.08438e-6 * t_c ** 3
           - 58.47727e-9 * t_c ** 4 + 410.4110e-12 * t_c ** 5)
    per_bar = 1e-6 * num / (1.0 + 19.67348e-3 * t_c)
    return per_bar * 1e-5  # 1 bar = 1e5 Pa


def _forward_scattering_shape(t_c: float) -> float:
    """n² T κ_T up to constants: the temperature dependence of water's dΣ/dΩ."""
    return water_density(t_c) ** 2 * (t_c + 273.15) * water_compressibility(t_c)


def water_cross_section(temperature_c: float = 20.0) -> float:
    """dΣ/dΩ of water for X-rays at small angles, 1/cm, at ``temperature_c`` (°C).

    0.01632 cm⁻¹ at 20 °C, scaled by ``n² T κ_T`` (see the module's docstring).

    Raises
    ------
    AbsoluteScaleError
        A temperature outside 0–100 °C (not liquid water at 1 atm).
    """
    lo, hi = WATER_TEMPERATURE_RANGE_C
    if not (isinstance(temperature_c, (int, float)) and lo <= temperature_c <= hi):
        raise AbsoluteScaleError(f"water temperature {temperature_c!r} °C is outside {lo:g}–{hi:g} °C "
                                 "(liquid water at 1 atm)")
    return WATER_20C_PER_CM * _forward_scattering_shape(float(temperature_c)) / _forward_scattering_shape(20.0)


# --------------------------------------------------------------------------- inputs

@dataclass
class MeasuredCurve:
    """A measured standard's curve: the bins that hold data, q in nm⁻¹.

    ``calibration`` is the calibration the curve was reduced with (from its file's header,
    or the one it was integrated with), ``None`` when unknown.
    """

    q: np.ndarray
    intensity: np.ndarray
    error: np.ndarray | None
    source: str
    calibration: dict[str, Any] | None = None
    unit: str = "counts/pixel"
    note: str = ""


@dataclass
class ReferenceTable:
    """A reference dΣ/dΩ(q) table, q in nm⁻¹ ascending, values in 1/cm."""

    q: np.ndarray
    value: np.ndarray
    sigma: np.ndarray | None
    source: str
    q_unit_note: str = ""


def _finite_curve(q, intensity, error, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    q = np.asarray(q, dtype=np.float64)
    intensity = np.asarray(intensity, dtype=np.float64)
    error = None if error is None else np.asarray(error, dtype=np.float64)
    if q.size == 0:
        raise AbsoluteScaleError(f"{source}: the curve has no data rows")
    # Bins without pixels are written as 0 rows (I = 0, σ = 0); they are not data.
    keep = np.isfinite(q) & np.isfinite(intensity) & (q > 0)
    if error is not None:
        keep &= np.isfinite(error) & ((error > 0) | (intensity != 0))
    else:
        keep &= intensity != 0
    if not keep.any():
        raise AbsoluteScaleError(f"{source}: the curve has no bins with data (every row is empty or q ≤ 0)")
    return q[keep], intensity[keep], None if error is None else error[keep]


def read_curve(path: str | os.PathLike[str], frame: int = 0) -> MeasuredCurve:
    """Read a measured standard's curve: a ``.chi`` file, an NXcanSAS file (frame ``frame``),
    or a plain column file (``.dat``, ``.txt``, ``.csv``: q in nm⁻¹, I[, σ]).

    Raises
    ------
    AbsoluteScaleError
        Missing or empty file, not a curve, no bins with data; the message names the file.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise AbsoluteScaleError(f"{source}: no such file" if not path.exists() else f"{source}: not a file")
    if path.stat().st_size == 0:
        raise AbsoluteScaleError(f"{source}: the file is empty")
    if path.suffix.lower() in _HDF5_SUFFIXES:
        from saxsdog.io.nxcansas import read_nxcansas

        try:
            frames = read_nxcansas(path)
        except (OSError, ValueError, KeyError) as exc:
            raise AbsoluteScaleError(f"{source}: not an NXcanSAS curve ({exc})") from None
        if not 0 <= frame < len(frames):
            raise AbsoluteScaleError(f"{source}: frame {frame} requested, the file holds {len(frames)}")
        chosen = frames[frame]
        scale = Q_UNITS["1/A"] if str(chosen.get("q_units") or "").lower() in ("1/a", "1/angstrom", "a^-1") else 1.0
        q, intensity, error = _finite_curve(chosen["q"] * scale, chosen["I"], chosen["Idev"], source)
        note = f"frame {frame + 1} of {len(frames)}" if len(frames) > 1 else ""
        return MeasuredCurve(q, intensity, error, source, chosen.get("calibration"),
                             str(chosen.get("I_units") or "counts/pixel"), note)
    from saxsdog.io.chi import read_chi

    try:
        data = read_chi(path)
    except ValueError:
        if path.suffix.lower() == ".chi":
            raise AbsoluteScaleError(f"{source}: not a .chi file (a four-line header, then q I σ rows)") from None
        return _read_plain_curve(path, source)
    except (OSError, UnicodeDecodeError) as exc:
        message = str(exc)
        raise AbsoluteScaleError(message if message.startswith(source) else f"{source}: {message}") from None
    q, intensity, error = _finite_curve(data.x, data.intensity, data.error, source)
    return MeasuredCurve(q, intensity, error, source, data.calibration)


_COMMENT = ("#", "%", "!", ";", "//")


def _detect_q_unit(header_lines: Sequence[str]) -> str | None:
    text = " ".join(header_lines)
    if re.search(r"nm", text, re.IGNORECASE):
        return "1/nm"
    if re.search(r"Å|angstrom|\bA\s*\^?\s*-\s*1|1\s*/\s*A\b|\bA-1\b|\(A\)|\[A\]", text, re.IGNORECASE):
        return "1/A"
    return None


def _numeric_rows(text: str, source: str) -> tuple[list[str], list[tuple[int, list[float]]]]:
    """Header lines and numeric rows ``(line number, numbers)`` of a column table's text."""
    header: list[str] = []
    rows: list[tuple[int, list[float]]] = []
    for lineno, raw_line in enumerate(io.StringIO(text), start=1):
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith(_COMMENT):
            header.append(line)
            continue
        fields = [f for f in re.split(r"[,;\t ]+", line) if f]
        try:
            numbers = [float(f) for f in fields]
        except ValueError:
            if rows:
                raise AbsoluteScaleError(f"{source}, line {lineno}: not a number in {line[:60]!r}") from None
            header.append(line)  # a column-title line before the data
            continue
        rows.append((lineno, numbers))
    return header, rows


def _read_plain_curve(path: Path, source: str) -> MeasuredCurve:
    """A curve from a plain column file (q in nm⁻¹, I[, σ]), e.g. another program's ``.dat``."""
    _, rows = _numeric_rows(path.read_text(encoding="utf-8-sig", errors="replace"), source)
    if not rows:
        raise AbsoluteScaleError(f"{source}: no data rows (expected columns q [1/nm], I[, σ])")
    short = next(((ln, n) for ln, n in rows if len(n) < 2), None)
    if short is not None:
        raise AbsoluteScaleError(f"{source}, line {short[0]}: missing column: a curve needs q and I "
                                 "(and optionally σ) per row, this row has one")
    ncols = min(3, min(len(n) for _, n in rows))
    table = np.array([n[:ncols] for _, n in rows], dtype=np.float64)
    q, intensity, error = _finite_curve(table[:, 0], table[:, 1], table[:, 2] if ncols == 3 else None, source)
    return MeasuredCurve(q, intensity, error, source)


def parse_reference_table(text: str, source: str, q_unit: str = "auto") -> ReferenceTable:
    """Parse a reference table's text: q, dΣ/dΩ (1/cm) and optionally σ per row.

    Columns may be separated by commas, semicolons, tabs or spaces; lines starting with
    ``#``, ``%``, ``!``, ``;`` or ``//`` and non-numeric lines before the data are headers.
    ``q_unit`` is ``"1/nm"``, ``"1/A"``, or ``"auto"``: from a header naming nm or Å,
    else nm⁻¹ (saxsdog's unit; the report says so).  A third column is taken as one
    standard uncertainty of dΣ/dΩ.

    Raises
    ------
    AbsoluteScaleError
        No data rows, a missing column, a non-number, q or dΣ/dΩ ≤ 0, σ < 0, a q given
        twice; the message names the file and line.
    """
    if q_unit not in ("auto", *Q_UNITS):
        raise AbsoluteScaleError(f"{source}: unknown q unit {q_unit!r} (use 1/nm, 1/A or auto)")
    header, rows = _numeric_rows(text, source)
    if not rows:
        raise AbsoluteScaleError(f"{source}: no data rows (expected columns q, dΣ/dΩ[, σ])")
    width = min(len(n) for _, n in rows)
    if width < 2:
        lineno = next(ln for ln, n in rows if len(n) < 2)
        raise AbsoluteScaleError(f"{source}, line {lineno}: missing column: a reference table needs q and "
                                 "dΣ/dΩ (and optionally σ) per row, this row has one")
    ncols = min(width, 3)
    table = np.array([n[:ncols] for _, n in rows], dtype=np.float64)
    linenos = np.array([ln for ln, _ in rows])
    names = ["q", "dΣ/dΩ", "σ"]
    for col in range(ncols):
        bad = ~np.isfinite(table[:, col]) | ((table[:, col] < 0) if col == 2 else (table[:, col] <= 0))
        if bad.any():
            first = int(np.argmax(bad))
            what = "negative" if col == 2 else "not positive"
            raise AbsoluteScaleError(
                f"{source}, line {linenos[first]}: {names[col]} = {table[first, col]:g} is {what} "
                f"({int(bad.sum())} such row(s)); "
                + ("a reference's σ must be ≥ 0" if col == 2 else
                   f"a reference needs {names[col]} > 0 (it is interpolated in log-log)"))
    order = np.argsort(table[:, 0], kind="stable")
    table, linenos = table[order], linenos[order]
    dup = np.flatnonzero(np.diff(table[:, 0]) == 0)
    if dup.size:
        raise AbsoluteScaleError(f"{source}, lines {linenos[dup[0]]} and {linenos[dup[0] + 1]}: "
                                 f"q = {table[dup[0], 0]:g} is given twice")
    note = ""
    unit = q_unit
    if unit == "auto":
        unit = _detect_q_unit(header) or "1/nm"
        note = "q unit from the header" if _detect_q_unit(header) else "q taken as nm⁻¹ (no unit in the header)"
    return ReferenceTable(table[:, 0] * Q_UNITS[unit], table[:, 1], table[:, 2] if ncols == 3 else None,
                          source, note)


def read_reference_table(path: str | os.PathLike[str], q_unit: str = "auto") -> ReferenceTable:
    """Read a reference table file (CSV or whitespace ``.dat``); see :func:`parse_reference_table`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise AbsoluteScaleError(f"{source}: no such file") from None
    except OSError as exc:
        raise AbsoluteScaleError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise AbsoluteScaleError(f"{source}: the file is empty")
    return parse_reference_table(text, source, q_unit)


# --------------------------------------------------------------------------- the fit

@dataclass
class ScaleFit:
    """The fitted factor and what it was fitted on.

    Attributes
    ----------
    factor, uncertainty
        ``k`` with ``k · I_measured ≈ dΣ/dΩ`` and its standard uncertainty.
    q_min, q_max, points
        The q range (nm⁻¹) and number of bins the fit used.
    chi2_reduced
        χ²/ν of the fit (ν = points − 1); NaN when the curve has no errors.
    standard
        What the factor was fitted against (``"water at 20 °C (0.01632 1/cm)"``, a file name).
    q, measured, measured_error, reference, reference_error
        The fitted bins: measured intensity and the reference interpolated onto them.
    """

    factor: float
    uncertainty: float
    q_min: float
    q_max: float
    points: int
    chi2_reduced: float
    standard: str
    source: str
    q: np.ndarray = field(repr=False)
    measured: np.ndarray = field(repr=False)
    measured_error: np.ndarray | None = field(repr=False)
    reference: np.ndarray = field(repr=False)
    reference_error: np.ndarray | None = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        """The fit report, a few lines of text."""
        rel = self.uncertainty / self.factor if self.factor else float("nan")
        chi2 = "n/a (no error column)" if math.isnan(self.chi2_reduced) else f"{self.chi2_reduced:.3g}"
        lines = [f"standard: {self.standard}",
                 f"measured: {self.source}",
                 f"factor: {self.factor:.6g} ± {self.uncertainty:.2g} ({100 * rel:.2g} %)",
                 f"q range: {self.q_min:.4g} – {self.q_max:.4g} nm⁻¹, {self.points} points",
                 f"χ²/ν: {chi2}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def as_dict(self) -> dict[str, Any]:
        """The numbers of the fit (no arrays), JSON-ready."""
        return {"factor": self.factor, "uncertainty": self.uncertainty, "q_min": self.q_min,
                "q_max": self.q_max, "points": self.points,
                "chi2_reduced": None if math.isnan(self.chi2_reduced) else self.chi2_reduced,
                "standard": self.standard, "source": self.source, "notes": list(self.notes)}


def _select(curve: MeasuredCurve, q_range: tuple[float, float] | None) -> np.ndarray:
    if q_range is None:
        return np.ones(curve.q.shape, dtype=bool)
    lo, hi = q_range
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise AbsoluteScaleError(f"q range {lo:g} – {hi:g} nm⁻¹ is not an interval (give a < b)")
    sel = (curve.q >= lo) & (curve.q <= hi)
    if sel.sum() < 2:
        raise AbsoluteScaleError(f"{curve.source}: fewer than 2 bins with data in the q range {lo:g} – {hi:g} nm⁻¹ "
                                 f"(the curve has data from {curve.q.min():.4g} to {curve.q.max():.4g} nm⁻¹)")
    return sel


def _weighted_scale(intensity: np.ndarray, error: np.ndarray | None, reference: np.ndarray,
                    reference_error: np.ndarray | None) -> tuple[float, float, float]:
    """``c`` of ``I ≈ c·R``, its standard uncertainty and χ²/ν (NaN without errors)."""
    n = intensity.size
    if error is None:
        c = float(np.dot(intensity, reference) / np.dot(reference, reference))
        resid = intensity - c * reference
        s2 = float(np.dot(resid, resid)) / max(n - 1, 1)
        return c, math.sqrt(s2 / float(np.dot(reference, reference))), float("nan")
    c = float(np.sum(intensity * reference / error ** 2) / np.sum(reference ** 2 / error ** 2))
    for _ in range(20):  # the reference's σ enters the weights through c
        var = error ** 2 + (0.0 if reference_error is None else (c * reference_error) ** 2)
        w = 1.0 / var
        new = float(np.sum(w * intensity * reference) / np.sum(w * reference ** 2))
        done = abs(new - c) <= 1e-12 * abs(c)
        c = new
        if done or reference_error is None:
            break
    sigma_c = math.sqrt(1.0 / float(np.sum(w * reference ** 2)))
    chi2 = float(np.sum(w * (intensity - c * reference) ** 2)) / max(n - 1, 1)
    return c, sigma_c * max(1.0, math.sqrt(chi2)), chi2


def _check_errors(curve: MeasuredCurve, sel: np.ndarray) -> np.ndarray | None:
    if curve.error is None:
        return None
    err = curve.error[sel]
    if np.any(err <= 0):
        raise AbsoluteScaleError(f"{curve.source}: {int(np.sum(err <= 0))} bin(s) in the fit range have an error "
                                 "≤ 0 with data; their weight would be infinite")
    return err


def _finish(c: float, sigma_c: float, chi2: float, curve: MeasuredCurve, sel: np.ndarray, err,
            reference: np.ndarray, reference_error, standard: str, notes: list[str]) -> ScaleFit:
    if not c > 0:
        raise AbsoluteScaleError(f"{curve.source}: the measured intensity is not positive on average over the fit "
                                 f"range (scale {c:.3g}); is the background subtracted twice, or the wrong curve?")
    q = curve.q[sel]
    return ScaleFit(1.0 / c, sigma_c / c ** 2, float(q.min()), float(q.max()), int(q.size), chi2, standard,
                    curve.source, q, curve.intensity[sel], err, reference, reference_error,
                    ([curve.note] if curve.note else []) + notes)


def fit_water(curve: MeasuredCurve, temperature_c: float = 20.0,
              q_range: tuple[float, float] | None = None) -> ScaleFit:
    """The factor from a measured water curve (flat dΣ/dΩ, see :func:`water_cross_section`).

    Parameters
    ----------
    curve
        Water minus the empty cell, normalized as the samples will be.
    temperature_c
        The water's temperature, °C.
    q_range
        ``(a, b)`` nm⁻¹; default every bin with data.  Water is flat only at small
        angles (below about 10 nm⁻¹, where its structure peak starts).
    """
    level = water_cross_section(temperature_c)
    sel = _select(curve, q_range)
    err = _check_errors(curve, sel)
    reference = np.full(int(sel.sum()), level)
    c, sigma_c, chi2 = _weighted_scale(curve.intensity[sel], err, reference, None)
    standard = f"water at {temperature_c:g} °C ({level:.5g} 1/cm)"
    return _finish(c, sigma_c, chi2, curve, sel, err, reference, None, standard, [])


def fit_scale(curve: MeasuredCurve, reference: ReferenceTable,
              q_range: tuple[float, float] | None = None) -> ScaleFit:
    """The factor from a measured curve and a reference table, over the q range both cover.

    The reference (and its σ, as a relative error) is interpolated onto the measured q
    in log-log; it is never extrapolated.

    Raises
    ------
    AbsoluteScaleError
        The curve and the reference share fewer than 2 bins (both q ranges in the message).
    """
    sel = _select(curve, q_range)
    inside = (curve.q >= reference.q[0]) & (curve.q <= reference.q[-1])
    sel &= inside
    if sel.sum() < 2:
        where = "" if q_range is None else f" within --q-range {q_range[0]:g} – {q_range[1]:g}"
        raise AbsoluteScaleError(
            f"the q ranges do not overlap{where}: {curve.source} has data from {curve.q.min():.4g} to "
            f"{curve.q.max():.4g} nm⁻¹, the reference {reference.source} from {reference.q[0]:.4g} to "
            f"{reference.q[-1]:.4g} nm⁻¹ ({int(sel.sum())} shared bin(s); at least 2 are needed). "
            "Is the reference's q unit right (--q-unit)?")
    err = _check_errors(curve, sel)
    log_q = np.log(curve.q[sel])
    log_ref_q = np.log(reference.q)
    ref = np.exp(np.interp(log_q, log_ref_q, np.log(reference.value)))
    ref_err = None
    if reference.sigma is not None:
        ref_err = ref * np.interp(log_q, log_ref_q, reference.sigma / reference.value)
    c, sigma_c, chi2 = _weighted_scale(curve.intensity[sel], err, ref, ref_err)
    notes = [reference.q_unit_note] if reference.q_unit_note else []
    if ref_err is not None:  # a certificate's σ is largely a common scale error, not point noise
        notes.append("the uncertainty treats the reference's σ as independent per point; add the "
                     "certificate's overall scale uncertainty in quadrature")
    return _finish(c, sigma_c, chi2, curve, sel, err, ref, ref_err, Path(reference.source).name, notes)


# --------------------------------------------------------------------------- calibration

def applied_normalization(calibration: Mapping[str, Any] | None) -> tuple[float, float | None]:
    """``(AbsoluteScale, ThicknessMM)`` a calibration applies (1 and ``None`` when it has none)."""
    block = (calibration or {}).get("Normalization") or {}
    if not isinstance(block, Mapping):
        return 1.0, None
    scale = block.get("AbsoluteScale")
    thickness = block.get("ThicknessMM")
    scale = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else 1.0
    thickness = (float(thickness) if isinstance(thickness, (int, float)) and not isinstance(thickness, bool)
                 else None)
    return scale, thickness


def thickness_divisor(thickness_mm: float | None) -> float:
    """What the normalization divides a curve by for a sample thickness (1 without one).

    The thickness in cm, so that an absolute curve is in 1/cm.
    """
    return 1.0 if thickness_mm is None else float(thickness_mm) / 10.0


def with_absolute_scale(calibration: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """A copy of a calibration (any spelling) whose ``Normalization.AbsoluteScale`` is ``factor``."""
    if not (math.isfinite(factor) and factor > 0):
        raise AbsoluteScaleError(f"absolute scale {factor!r} is not a positive number")
    doc = copy.deepcopy(dict(calibration))
    block = doc.get("Normalization")
    block = dict(block) if isinstance(block, Mapping) else {}
    block["AbsoluteScale"] = float(factor)
    doc["Normalization"] = block
    return doc


# --------------------------------------------------------------------------- plot

def plot_fit(fit: ScaleFit, path: str | os.PathLike[str]) -> Path:
    """Write the fit as a plot (format from the suffix, e.g. ``.svg``): the scaled measured
    curve with its errors over the reference, log-log, and the residuals in σ below.

    Raises
    ------
    saxsdog.extras.MissingExtraError
        matplotlib is not installed (``saxsdog[plot]``).
    """
    from saxsdog.extras import import_optional

    import_optional("matplotlib", "plot", "the fit plot (--plot)")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    scaled = fit.factor * fit.measured
    if fit.measured_error is not None:
        top.errorbar(fit.q, scaled, yerr=fit.factor * fit.measured_error, fmt=".", ms=3, lw=0.6,
                     label="measured × factor")
    else:
        top.plot(fit.q, scaled, ".", ms=3, label="measured × factor")
    top.plot(fit.q, fit.reference, "-", color="black", lw=1.2, label=fit.standard)
    top.set_xscale("log")
    top.set_yscale("log")
    top.set_ylabel("dΣ/dΩ [1/cm]")
    top.set_title(f"factor {fit.factor:.5g} ± {fit.uncertainty:.2g}", fontsize=10)
    top.legend(fontsize=8)
    if fit.measured_error is not None:
        total = np.hypot(fit.factor * fit.measured_error,
                         0.0 if fit.reference_error is None else fit.reference_error)
        bottom.plot(fit.q, (scaled - fit.reference) / total, ".", ms=3)
        bottom.set_ylabel("residual [σ]")
    else:
        bottom.plot(fit.q, scaled / fit.reference - 1.0, ".", ms=3)
        bottom.set_ylabel("relative residual")
    bottom.axhline(0.0, color="black", lw=0.8)
    bottom.set_xlabel("q [nm$^{-1}$]")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
