"""Labellings of sub-pixels: radial axes in units, linear or log bins, ranges, azimuth sectors.

The integration operator (:mod:`saxsdog.core.operator`) takes any labelling of the
sub-pixels; this module says which bin a sub-pixel belongs to for every integration mode.

Radial units
------------
``q_nm^-1`` (default), ``q_A^-1``, ``2th_deg`` and ``r_mm`` (the distance from the beam
axis, perpendicular to the beam, in mm: pyFAI's ``r_mm``).  Every value equals pyFAI's for
the same geometry (tested to 1e-9 relative).

Azimuth convention (one for the whole package)
----------------------------------------------
χ is measured on the image *as read* (row 0 at the top) **clockwise** from the horizontal
axis pointing right (3 o'clock), in degrees, in (−180°, 180°]: a spot 60° above 3 o'clock
has χ = −60°, straight down (6 o'clock) is χ = +90°.  This is pyFAI's χ for the image as
read, computed in the same way in the laboratory frame (perpendicular to the beam, so a
tilted detector gives pyFAI's χ too), so maps compare directly.  Phi-mode, sectors
(``AzimuthRange``), cake maps and the polarization angle use it.  The original SAXSDOG
also measured clockwise but in radians, and its number of Phi bins mixed millimetres and
pixels; saxsdog before this convention measured counter-clockwise.

Everything here is pure NumPy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import Geometry

__all__ = ["UNITS", "UnitInfo", "BinningError", "RadialAxis", "AzimuthAxis", "radial_values",
           "chi_degrees", "unit_max", "q_from_unit", "radial_axis", "azimuth_axis",
           "MAX_CAKE_BINS"]

#: Largest number of bins a cake map may have (R × M); 4 M bins hold 32 MB per float64 map.
MAX_CAKE_BINS = 4_000_000


@dataclass(frozen=True)
class UnitInfo:
    """A radial unit: its column label and its unit string in NeXus/NXcanSAS files."""

    label: str
    nx_unit: str


#: The radial units, by the name a calibration uses in ``Unit``.
UNITS: dict[str, UnitInfo] = {
    "q_nm^-1": UnitInfo("Scattering Vector  q [$nm^{-1}$]", "1/nm"),
    "q_A^-1": UnitInfo("Scattering Vector  q [$\\AA^{-1}$]", "1/angstrom"),
    "2th_deg": UnitInfo("Scattering Angle  2$\\theta$ [deg]", "degree"),
    "r_mm": UnitInfo("Radius  r [mm]", "mm"),
}


class BinningError(ValueError):
    """A binning parameter is invalid; ``field`` names the calibration field, ``value`` its value."""

    def __init__(self, message: str, field: str, value: Any, expected: str = ""):
        super().__init__(message)
        self.field = field
        self.value = value
        self.expected = expected


# -- per sub-pixel values ---------------------------------------------------------------

def _lab_perpendicular(geometry: Geometry, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components of the sample-to-pixel vector perpendicular to the beam (mm).

    Horizontal (right) and vertical (up) as the image is displayed.  The tilt turns the
    in-plane direction at ``tilt_rotation`` out of the plane by ``tilt`` (its projection
    shrinks by cos tilt); the perpendicular in-plane direction is unchanged.
    """
    tilt = np.radians(geometry.tilt_deg)
    rot = np.radians(geometry.tilt_rotation_deg)
    c, s = np.cos(rot), np.sin(rot)
    along = (dx * c + dy * s) * np.cos(tilt)
    across = -dx * s + dy * c
    return along * c - across * s, along * s + across * c


def chi_degrees(geometry: Geometry, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """χ in degrees (see the module's convention) for offsets from the beam centre in mm."""
    h, v = _lab_perpendicular(geometry, dx, dy)
    chi: np.ndarray = np.degrees(np.arctan2(-v, h))
    return chi


def radial_values(geometry: Geometry, unit: str, q: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The radial coordinate in ``unit`` of sub-pixels with modulus ``q`` (nm⁻¹) and offsets (mm)."""
    if unit == "q_nm^-1":
        return q
    if unit == "q_A^-1":
        out: np.ndarray = q * 0.1
        return out
    if unit == "2th_deg":
        out = np.degrees(2.0 * np.arcsin(np.minimum(q / geometry.q_factor, 1.0)))
        return out
    if unit == "r_mm":
        u = geometry._along_beam(dx, dy)
        out = np.sqrt(np.maximum(dx * dx + dy * dy - u * u, 0.0))
        return out
    raise BinningError(f"unknown radial unit {unit!r} (expected one of {', '.join(UNITS)})", "Unit", unit,
                       "one of " + ", ".join(UNITS))


def q_from_unit(geometry: Geometry, unit: str, values: np.ndarray) -> np.ndarray:
    """q (nm⁻¹) for radial values in ``unit`` (used for the integral parameters).

    Exact for the q units and 2θ; for ``r_mm`` it takes 2θ = atan(r/d), exact for an
    untilted detector.
    """
    v = np.asarray(values, dtype=np.float64)
    if unit == "q_nm^-1":
        return v
    if unit == "q_A^-1":
        out: np.ndarray = v * 10.0
        return out
    if unit == "2th_deg":
        out = geometry.q_factor * np.sin(np.radians(v) / 2.0)
        return out
    if unit == "r_mm":
        out = geometry.q_factor * np.sin(np.arctan(v / geometry.distance_mm) / 2.0)
        return out
    raise BinningError(f"unknown radial unit {unit!r}", "Unit", unit, "one of " + ", ".join(UNITS))


def unit_max(geometry: Geometry, unit: str) -> float:
    """Largest radial value in ``unit`` anywhere on the detector surface.

    For q it is :meth:`Geometry.max_q` (today's bins); the other units are monotonic
    along rays from the beam centre too, so the boundary, sampled 10 times per pixel,
    holds the maximum.
    """
    if unit == "q_nm^-1":
        return geometry.max_q()
    nrows, ncols = geometry.shape
    rr = np.linspace(0.0, nrows, 10 * nrows + 1)
    cc = np.linspace(0.0, ncols, 10 * ncols + 1)
    edges_r = np.concatenate([rr, rr, np.zeros_like(cc), np.full_like(cc, nrows)])
    edges_c = np.concatenate([np.zeros_like(rr), np.full_like(rr, ncols), cc, cc])
    dx, dy = geometry._offsets_mm(edges_r, edges_c)
    q = geometry.q_factor * np.sqrt(geometry.sin2_theta_half(dx, dy))
    return float(radial_values(geometry, unit, q, dx, dy).max()) * (1 + 1e-12)


# -- axes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RadialAxis:
    """Radial bins of one integration.

    Attributes
    ----------
    unit
        Radial unit (a key of :data:`UNITS`).
    n_bins
        Number of bins.
    edges
        ``n_bins + 1`` bin edges in ``unit``.
    log
        Bins uniform in log (geometric) rather than linear.
    open_ended
        Today's default bins (linear from 0, no range): values beyond the last edge go into
        the last bin instead of none, as before.
    """

    unit: str
    n_bins: int
    edges: np.ndarray
    log: bool = False
    open_ended: bool = False

    @property
    def width(self) -> float:
        """Bin width of linear bins."""
        return float(self.edges[1] - self.edges[0])

    @property
    def centres(self) -> np.ndarray:
        """Bin centres: arithmetic for linear bins, geometric for log bins."""
        e = self.edges
        if self.log:
            out: np.ndarray = np.sqrt(e[:-1] * e[1:])
            return out
        if self.open_ended:
            out = (np.arange(self.n_bins) + 0.5) * self.width  # exactly today's centres
            return out
        out = 0.5 * (e[:-1] + e[1:])
        return out

    def labels(self, values: np.ndarray) -> np.ndarray:
        """Bin index per value, −1 outside the axis."""
        n = self.n_bins
        if self.open_ended:
            lab: np.ndarray = np.minimum((values / self.width).astype(np.int64), n - 1)
            return lab
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.log:
                t = np.log(values / lo) * (n / np.log(hi / lo))
            else:
                t = (values - lo) * (n / (hi - lo))
        lab = np.floor(t).astype(np.int64)
        lab[~((values >= lo) & (values < hi))] = -1
        np.minimum(lab, n - 1, out=lab)
        return lab


def radial_axis(geometry: Geometry, unit: str = "q_nm^-1", binning: str = "linear",
                pixels_per_bin: float = 1.0, points_per_decade: float | None = None,
                radial_range: tuple[float, float] | None = None, n_bins: int | None = None,
                field: str = "RadialRange") -> RadialAxis:
    """The radial bins a calibration entry asks for.

    Parameters
    ----------
    geometry
        Detector geometry.
    unit
        Radial unit (a key of :data:`UNITS`).
    binning
        ``"linear"`` or ``"log"``.
    pixels_per_bin
        Linear bins: width in (average) detector pixels, as today: the width is
        ``max · pixels_per_bin / r_max`` with ``max`` the unit's largest value and ``r_max``
        the largest beam-centre-to-corner distance in pixels.
    points_per_decade
        Log bins: at least this many bins per factor 10 (``n = ⌈ppd · log10(max/min)⌉``
        geometric bins with edges exactly at the range ends).
    radial_range
        ``(min, max)`` in ``unit``: sub-pixels outside make no bin.  Default: from 0 (log: from
        one pixel's width) to the largest value.
    n_bins
        A fixed number of bins over the range (the cake's ``RadialBins``) instead of the
        width rule.
    field
        Name of the range's calibration field, for error messages.

    Raises
    ------
    BinningError
        Unknown unit or binning, empty or inverted range, log bins from 0 or below.
    """
    if unit not in UNITS:
        raise BinningError(f"unknown radial unit {unit!r} (expected one of {', '.join(UNITS)})", "Unit", unit,
                           "one of " + ", ".join(UNITS))
    if binning not in ("linear", "log"):
        raise BinningError(f"unknown Binning {binning!r} (expected 'linear' or 'log')", "Binning", binning,
                           "'linear' or 'log'")
    if not pixels_per_bin > 0:
        raise BinningError("PixelPerRadialElement must be positive", "PixelPerRadialElement", pixels_per_bin,
                           "a positive number")
    r_max = geometry.max_radius_px()
    v_max = unit_max(geometry, unit)
    one_pixel = v_max / r_max
    if radial_range is not None:
        lo, hi = (float(radial_range[0]), float(radial_range[1]))
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            raise BinningError(f"{field} [{lo:g}, {hi:g}] is empty or inverted", field, [lo, hi],
                               "[min, max] with min < max")
        if hi <= 0 or lo >= v_max:
            raise BinningError(f"{field} [{lo:g}, {hi:g}] {unit} lies outside the detector (0 … {v_max:.6g})",
                               field, [lo, hi], f"a range overlapping 0 … {v_max:.6g} {unit}")
    if binning == "log":
        ppd = points_per_decade
        if ppd is None or not ppd > 0:
            raise BinningError("log Binning needs a positive PointsPerDecade", "PointsPerDecade", ppd,
                               "a positive number")
        lo, hi = radial_range if radial_range is not None else (one_pixel, v_max)
        lo, hi = float(lo), float(hi)
        if lo <= 0:
            raise BinningError(f"log bins start above 0, not at {field} min {lo:g}", field, [lo, hi],
                               "min > 0 for log Binning")
        n = int(n_bins) if n_bins is not None else max(1, int(np.ceil(ppd * np.log10(hi / lo) - 1e-9)))
        edges = np.geomspace(lo, hi, n + 1)
        edges[0], edges[-1] = lo, hi
        return RadialAxis(unit, n, edges, log=True)
    if radial_range is None and n_bins is None:
        n = int(np.floor(r_max / pixels_per_bin)) + 1
        width = v_max * pixels_per_bin / r_max
        return RadialAxis(unit, n, np.arange(n + 1) * width, open_ended=True)
    lo, hi = radial_range if radial_range is not None else (0.0, v_max)
    lo, hi = float(lo), float(hi)
    if n_bins is not None:
        n = int(n_bins)
    else:
        n = max(1, int(round((hi - lo) / (one_pixel * pixels_per_bin))))
    edges = np.linspace(lo, hi, n + 1)
    return RadialAxis(unit, n, edges)


@dataclass(frozen=True)
class AzimuthAxis:
    """Azimuth bins over a sector ``[start, start + width)`` of χ (degrees, clockwise)."""

    start: float
    width: float
    n_bins: int

    @property
    def full_circle(self) -> bool:
        """The axis covers every azimuth."""
        return self.width >= 360.0

    @property
    def edges(self) -> np.ndarray:
        """Bin edges in degrees (may run past 180° for a wrap-around sector)."""
        return self.start + np.arange(self.n_bins + 1) * (self.width / self.n_bins)

    @property
    def centres(self) -> np.ndarray:
        """Bin centres in degrees, as pyFAI's χ: wrapped into (−180°, 180°]."""
        c = self.start + (np.arange(self.n_bins) + 0.5) * (self.width / self.n_bins)
        out: np.ndarray = np.where(c > 180.0, c - 360.0, c)
        return out

    def labels(self, chi: np.ndarray) -> np.ndarray:
        """Bin index per χ (degrees), −1 outside the sector."""
        rel = np.mod(chi - self.start, 360.0)
        lab: np.ndarray = np.floor(rel * (self.n_bins / self.width)).astype(np.int64)
        if self.full_circle:
            lab %= self.n_bins
        else:
            lab[rel >= self.width] = -1
        return lab


def azimuth_axis(azimuth_range: tuple[float, float] | None, n_bins: int, r_max_px: float | None = None,
                 field: str = "AzimuthRange", bins_field: str = "PhiBins") -> AzimuthAxis:
    """Azimuth bins over ``AzimuthRange`` ``[start, stop]`` (degrees, χ convention).

    The sector runs clockwise from ``start`` to ``stop``; ``stop < start`` wraps through
    180° (``[170, -170]`` is the 20° sector around 9 o'clock).  ``None``: the full circle
    from −180°.

    Raises
    ------
    BinningError
        An empty sector (``start == stop``), one wider than 360°, values beyond ±360°, a
        sector narrower than one pixel at the largest distance from the beam centre
        (``r_max_px``: no pixel could lie in it), or fewer than one bin.
    """
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise BinningError(f"{bins_field} must be a positive integer, not {n_bins!r}", bins_field, n_bins,
                           "an integer >= 1")
    if azimuth_range is None:
        return AzimuthAxis(-180.0, 360.0, int(n_bins))
    start, stop = float(azimuth_range[0]), float(azimuth_range[1])
    if not all(np.isfinite(v) and -360.0 <= v <= 360.0 for v in (start, stop)):
        raise BinningError(f"{field} [{start:g}, {stop:g}] must lie within ±360°", field, [start, stop],
                           "[start, stop] in degrees within ±360")
    if start == stop:
        raise BinningError(f"{field} [{start:g}, {stop:g}] is an empty sector", field, [start, stop],
                           "start != stop (stop < start wraps through 180°)")
    width = stop - start if stop > start else stop - start + 360.0
    if width > 360.0:
        raise BinningError(f"{field} [{start:g}, {stop:g}] is wider than 360°", field, [start, stop],
                           "a sector of at most 360°")
    if r_max_px is not None and np.radians(width) * r_max_px < 1.0:
        raise BinningError(f"{field} [{start:g}, {stop:g}] is {width:g}° wide: narrower than one pixel even "
                           f"{r_max_px:.0f} pixels from the beam centre", field, [start, stop],
                           f"a sector wider than {np.degrees(1.0 / r_max_px):.3g}°")
    return AzimuthAxis(start, width, int(n_bins))
