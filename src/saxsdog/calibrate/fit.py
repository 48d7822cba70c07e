"""Find calibrant rings on an image and refine the detector geometry from them.

The steps, none of which needs a click or a hand-tuned guess:

1. **Valid pixels**: dead and gap pixels (negative, or the dummy value) and the template's
   mask are excluded, with a margin, so detector gaps and their edges never look like rings.
2. **Ridge pixels**: on the logarithm of the image (so faint outer rings count as much as the
   bright inner ones) the Hessian of a smoothed copy finds pixels on the crest of a line-like
   ridge; its normal points along the radius of the ring it lies on.  When this finds no
   rings (broad ones, 10 px and more), coarser smoothing is tried.
3. **Beam centre**: the ridge normals all pass (nearly) through the beam centre; their robust
   least-squares intersection gives it, also when it lies off the detector.  Beamstop edges,
   gap edges and parasitic streaks are outliers of that fit; it is then moved to where the
   innermost rings (least shifted by a tilt) are sharpest.
4. **Rings and orders**: around that centre, the fraction of each radius' pixels that are
   ridge pixels peaks at the rings.  Each pairing of a ring with a calibrant line implies a
   distance; the distances whose predicted rings match the most rings found, with the fewest
   predicted rings missing, are the candidate order assignments (matched tightly, and
   loosely for wide-angle rings on a tilted detector, which stray further from circles).
5. **Control points and refinement**: along rays from the beam centre, each predicted ring
   gives a control point (the centroid of its crest above half maximum, over a straight
   baseline); distance, beam centre, tilt and tilt rotation (and optionally the wavelength)
   are refined by least squares on the points' 2θ residuals, rejecting outliers, starting
   with the innermost rings and widening to every ring on the detector.  At small angles a
   tilt and its opposite bend the rings almost alike, so both are tried.
   When this reading of the rings as circles gives no fit (a strong tilt at a short
   distance makes them ellipses whose centres drift with their size; a centre far off the
   detector leaves short arcs of them), steps 4–5 are repeated from the tilt, centre and
   rough distance under which the ridge pixels' radii are sharpest (a simplex search from
   several tilts, :func:`_tilt_search`), refined first on the ridge pixels themselves.
6. **Checks**: the RMS residual; the ratio to the residual when every ring is fitted with a
   geometry of its own (one geometry forced onto rings that do not share it: a wavelength
   far too long, a wrong calibrant); rings of ridge pixels that no calibrant line explains;
   calibrant lines between the rings found that show no ring; only two or three of the many
   rings the geometry puts on the detector found; a distance under 20 mm.  A candidate
   failing them passes to the next one; when all fail, the first one's reason is raised.

A result whose residuals are large, or that rests on too few rings, is an error
(:class:`PoorFitError`), never a confident wrong geometry.  One limit is physics: at small
angles the wavelength and the distance are almost degenerate, so a wavelength too *short*
(by up to a few times) is absorbed by a longer distance and a tilt; ``saxsdog calibrate``
warns when the wavelength given differs from the image header's, and says the wavelength
looks wrong when the fitted distance is far from ``--distance-mm`` (:func:`distance_mismatch`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, optimize, signal

from saxsdog.core.geometry import Geometry
from saxsdog.errors import SaxsdogError

__all__ = ["CalibrationFitError", "NoRingsError", "PoorFitError", "RingStats", "CalibrationFit",
           "valid_pixels", "hidden_ring_fraction", "wavelength_mismatch", "distance_mismatch", "fit_calibrant"]


#: Largest tilt (degrees, along each axis) the refinement considers; the issue's range is 15°.
MAX_TILT_DEG = 30.0

#: A fitted distance below this (mm) is refused: no calibrant image is taken so close, and a
#: fit that ends there has made a geometry up for a couple of ridges.
MIN_DISTANCE_MM = 20.0

#: Smoothing scales (px) of the ridge search, finest first: coarser ones only when it finds no rings.
RIDGE_SCALES_PX = (1.5, 3.0, 6.0)

#: A fit whose RMS is more than this many times the RMS of each ring fitted alone is reported
#: with a warning (on the real silver-behenate image: 1.28 at the header's wavelength, 1.55 at
#: half of it; ideal synthetic images 1.0-1.2).
WARN_INCONSISTENCY = 1.45


class CalibrationFitError(SaxsdogError, ValueError):
    """The calibrant fit failed; the message says why."""


class NoRingsError(CalibrationFitError):
    """No calibrant rings were found on the image (or none that match the calibrant)."""


class PoorFitError(CalibrationFitError):
    """Rings were found but the refined geometry does not describe them well."""


@dataclass
class RingStats:
    """Per-ring summary of the final fit."""

    line: int            # index into the calibrant's d-spacings (0 = largest d)
    d_spacing_A: float
    two_theta_deg: float
    points: int          # control points used
    rms_px: float        # RMS residual, pixels (radial)
    mean_px: float       # mean residual, pixels (radial)


@dataclass
class CalibrationFit:
    """The refined geometry with its uncertainties and the evidence it rests on."""

    geometry: Geometry
    calibrant: str
    d_spacings: np.ndarray
    #: one-sigma uncertainties: BeamCenterY, BeamCenterX (px), DistanceMM, TiltAngleDeg, TiltRotDeg,
    #: WavelengthA (when refined)
    uncertainties: dict[str, float]
    rings: list[RingStats]
    #: control points: row and column (continuous, from the top/left edges) and calibrant line
    points_row: np.ndarray
    points_col: np.ndarray
    points_line: np.ndarray
    rms_px: float
    refined_wavelength: bool
    elapsed_s: float
    warnings: list[str] = field(default_factory=list)
    #: RMS of the fit over the RMS when every ring is fitted with a geometry of its own (≈ 1: consistent)
    consistency: float = 1.0
    #: correlation of neighbouring control points' residuals; the uncertainties are inflated by
    #: sqrt((1 + ρ)/(1 − ρ)) for it
    residual_correlation: float = 0.0

    @property
    def rings_used(self) -> int:
        return len(self.rings)

    def summary(self, points: bool = False) -> dict[str, Any]:
        """The fitted parameters, their uncertainties and quality figures (JSON-ready).

        ``points``: also the control points (``row``, ``col``: continuous coordinates from the
        top/left edges, pixel centres at +0.5; ``line``: calibrant line), for a page to draw.
        """
        g = self.geometry
        return {"calibrant": self.calibrant, "BeamCenter": [g.beam_center[0], g.beam_center[1]],
                "DetectorDistanceMM": g.distance_mm, "TiltAngleDeg": g.tilt_deg, "TiltRotDeg": g.tilt_rotation_deg,
                "Wavelength": g.wavelength_A, "uncertainties": dict(self.uncertainties), "rms_px": self.rms_px,
                "rings": [r.__dict__.copy() for r in self.rings], "points": int(self.points_row.size),
                "elapsed_s": self.elapsed_s, "warnings": list(self.warnings), "consistency": self.consistency,
                "residual_correlation": self.residual_correlation,
                **({"control_points": {"row": self.points_row.tolist(), "col": self.points_col.tolist(),
                                       "line": self.points_line.astype(int).tolist()}} if points else {})}


# ----------------------------------------------------------------------------- model

def _two_theta(params: np.ndarray, rows: np.ndarray, cols: np.ndarray, nrows: int,
               pixel_mm: tuple[float, float]) -> np.ndarray:
    """2θ at continuous (row, col) positions for params [Y, X, d, a, b].

    ``a, b = sin(tilt)·(cos rot, sin rot)``: the same formula as :class:`Geometry`, in a
    parametrisation without the singularity of the rotation at zero tilt.
    """
    y_c, x_c, d, a, b = params[:5]
    dx = (cols - x_c) * pixel_mm[1]
    dy = ((nrows - rows) - y_c) * pixel_mm[0]
    u = a * dx + b * dy
    r2 = dx * dx + dy * dy
    result: np.ndarray = np.arctan2(np.sqrt(np.maximum(r2 - u * u, 0.0)), d + u)
    return result


def _line_two_theta(d_spacings: np.ndarray, wavelength_A: float) -> np.ndarray:
    x = wavelength_A / (2.0 * d_spacings)
    out = np.full(x.shape, np.nan)
    ok = x < 1.0
    out[ok] = 2.0 * np.arcsin(x[ok])
    return out


def _tilt_from_ab(a: float, b: float) -> tuple[float, float]:
    s = min(math.hypot(a, b), 1.0)
    tilt = math.degrees(math.asin(s))
    rot = math.degrees(math.atan2(b, a)) if s > 0 else 0.0
    return tilt, rot


def _ab_from_tilt(tilt_deg: float, rot_deg: float) -> tuple[float, float]:
    s = math.sin(math.radians(tilt_deg))
    return s * math.cos(math.radians(rot_deg)), s * math.sin(math.radians(rot_deg))


# ----------------------------------------------------------------------------- pixels

def valid_pixels(image: np.ndarray, mask: np.ndarray | None = None, dummy_value: float | None = None) -> np.ndarray:
    """Pixels the fit may use: not negative (Pilatus −1/−2 gaps), not the dummy value, not masked.

    ``mask`` is saxsdog's validity map (``True`` = pixel used), as :func:`saxsdog.io.masks.read_mask`
    returns it.
    """
    valid = np.isfinite(image) & (image >= 0)
    if dummy_value is not None:
        valid &= image != dummy_value
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    return valid


#: A mask hiding more of the image's ring pixels than this is not used for the fit (the
#: command and the page: an old calibration's mask drawn for another beamstop).
MAX_HIDDEN_RING_FRACTION = 0.25


def hidden_ring_fraction(image: np.ndarray, mask: np.ndarray, dummy_value: float | None = None) -> float:
    """Fraction of the ring (ridge) pixels of ``image`` that ``mask`` hides.

    The ridge pixels are found with only the image's own dead, gap and dummy pixels
    excluded.  A template calibration's mask drawn for another beamstop position, or for
    a sector, can hide half of every ring: fitted on the rest, distance, centre and tilt
    trade off against each other and come out wrong by more than the integration allows.
    ``mask`` is saxsdog's validity map (``True`` = pixel used).  Returns 0 without rings.
    """
    valid = valid_pixels(image, None, dummy_value)
    rows, cols, _, _, _ = _ridge_points(np.where(valid, image, 0).astype(np.float64), valid)
    if rows.size == 0:
        return 0.0
    used = np.asarray(mask, dtype=bool)[rows.astype(np.int64), cols.astype(np.int64)]
    return float(1.0 - used.mean())


def wavelength_mismatch(wavelength_A: float, header_wavelength_A: float | None, tolerance: float = 0.01) -> str:
    """A warning when the wavelength used differs from the image header's by more than ``tolerance``.

    At the small angles of most calibrant images the wavelength and the distance are almost
    degenerate: a wavelength too short by up to a few times fits as well with a longer distance
    and a few degrees of tilt, so the fit alone cannot refuse it.  Empty when they agree or the
    header has none.
    """
    if not header_wavelength_A or not header_wavelength_A > 0:
        return ""
    off = wavelength_A / float(header_wavelength_A) - 1
    if abs(off) <= tolerance:
        return ""
    return (f"the wavelength {wavelength_A:g} Å differs from the image header's {float(header_wavelength_A):g} Å "
            f"by {abs(off):.0%}: at these small angles the fit cannot tell, and the distance comes out "
            f"scaled by about {float(header_wavelength_A) / wavelength_A:.3g} (check which wavelength is right)")


#: A fitted distance further than this (relative) from a distance the user or the header gives
#: is reported with the wavelength that would reconcile them.
DISTANCE_MISMATCH = 0.2


def distance_mismatch(fitted_mm: float, reference_mm: float | None, source: str, wavelength_A: float,
                      tolerance: float = DISTANCE_MISMATCH) -> str:
    """A warning when the fitted distance is more than ``tolerance`` (relative) from ``reference_mm``.

    At small angles ``D tan 2θ ≈ D λ / d``: the rings fix the product of distance and
    wavelength, not each, so a wavelength too short by a factor fits as well at a distance
    longer by about that factor (and a few degrees of tilt).  A distance known otherwise (a
    rough ``--distance-mm``, a header's) tells which is wrong.  ``source`` names it
    ("--distance-mm", "the image header").  Empty when they agree or no reference is known.
    """
    if not reference_mm or not reference_mm > 0 or not fitted_mm > 0:
        return ""
    off = fitted_mm / float(reference_mm) - 1
    if abs(off) <= tolerance:
        return ""
    implied = wavelength_A * fitted_mm / float(reference_mm)
    return (f"the wavelength looks wrong: the fitted distance {fitted_mm:.1f} mm is {abs(off):.0%} from "
            f"{source}'s {float(reference_mm):g} mm; the rings fix distance times wavelength, and at "
            f"{float(reference_mm):g} mm they need about {implied:.4g} Å, not {wavelength_A:g} Å (check the "
            "wavelength, or the distance)")


def _smooth(values: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores pixels of zero weight (normalized convolution)."""
    num = ndimage.gaussian_filter(values * weights, sigma, mode="nearest")
    den = ndimage.gaussian_filter(weights, sigma, mode="nearest")
    out: np.ndarray = num / np.maximum(den, 1e-6)
    return out


def _ridge_points(image: np.ndarray, valid: np.ndarray, sigma: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels on the crest of line-like ridges of log(image), with their normals and strengths.

    Returns rows, cols (index coordinates), normal components (n_row, n_col) and strength.
    """
    w = valid.astype(np.float64)
    log_image = np.log1p(np.where(valid, np.maximum(image, 0), 0).astype(np.float64))
    smooth = _smooth(log_image, w, sigma)
    g_r, g_c = np.gradient(smooth)
    h_rr, h_rc = np.gradient(g_r)
    _, h_cc = np.gradient(g_c)
    # eigenvalues of the 2x2 Hessian: l1 <= l2; the normal belongs to l1 (most negative)
    half_trace = 0.5 * (h_rr + h_cc)
    root = np.sqrt(0.25 * (h_rr - h_cc) ** 2 + h_rc ** 2)
    l1 = half_trace - root
    l2 = half_trace + root
    # eigenvector of l1: (h_rc, l1 - h_rr) or (l1 - h_cc, h_rc)
    n_r = np.where(np.abs(h_rr - l1) < np.abs(h_cc - l1), l1 - h_cc, h_rc)
    n_c = np.where(np.abs(h_rr - l1) < np.abs(h_cc - l1), h_rc, l1 - h_rr)
    norm = np.hypot(n_r, n_c)
    norm[norm == 0] = 1.0
    n_r /= norm
    n_c /= norm
    # far from invalid pixels: their edges are steps, not rings
    far = ndimage.binary_erosion(valid, structure=np.ones((3, 3), bool), iterations=int(3 * sigma) + 2,
                                 border_value=0)
    strength = -l1
    offset = -(g_r * n_r + g_c * n_c) / np.where(l1 < 0, l1, -1.0)  # Newton step to the crest
    candidate = far & (l1 < 0) & (np.abs(l2) < 0.5 * strength) & (np.abs(offset) < 0.5)
    if not candidate.any():
        empty = np.zeros(0)
        return empty, empty, empty, empty, empty
    # noise level of the strength: robust spread over the whole valid area
    s_valid = strength[far]
    level = np.median(np.abs(s_valid)) * 1.4826 + 1e-12
    keep = candidate & (strength > 4.0 * level)
    rows, cols = np.nonzero(keep)
    return (rows.astype(np.float64), cols.astype(np.float64), n_r[rows, cols], n_c[rows, cols],
            strength[rows, cols])


def _centre_from_normals(rows: np.ndarray, cols: np.ndarray, n_r: np.ndarray, n_c: np.ndarray,
                         shape: tuple[int, int]) -> tuple[float, float] | None:
    """Robust intersection point (row, col) of the lines through the points along their normals."""
    if rows.size < 20:
        return None
    rng = np.random.default_rng(1)
    if rows.size > 40000:
        pick = rng.choice(rows.size, 40000, replace=False)
        rows, cols, n_r, n_c = rows[pick], cols[pick], n_r[pick], n_c[pick]
    m = min(20000, rows.size * 4)
    i = rng.integers(0, rows.size, m)
    j = rng.integers(0, rows.size, m)
    # intersection of p_i + s n_i and p_j + t n_j
    det = n_r[i] * (-n_c[j]) - n_c[i] * (-n_r[j])
    ok = np.abs(det) > math.sin(math.radians(15))
    i, j, det = i[ok], j[ok], det[ok]
    if i.size < 10:
        return None
    dr = rows[j] - rows[i]
    dc = cols[j] - cols[i]
    s = (dr * (-n_c[j]) - dc * (-n_r[j])) / det
    pr = rows[i] + s * n_r[i]
    pc = cols[i] + s * n_c[i]
    nrows, ncols = shape
    span = 2.0 * max(nrows, ncols)
    inside = (pr > -span) & (pr < nrows + span) & (pc > -span) & (pc < ncols + span)
    pr, pc = pr[inside], pc[inside]
    if pr.size < 10:
        return None
    # densest cell of a coarse 2-D histogram, then the median of the intersections near it
    bin_px = max(nrows, ncols) / 40.0
    r_edges = np.arange(-span, nrows + span + bin_px, bin_px)
    c_edges = np.arange(-span, ncols + span + bin_px, bin_px)
    hist, _, _ = np.histogram2d(pr, pc, bins=(r_edges, c_edges))
    hist = ndimage.uniform_filter(hist, 3, mode="constant")
    k = np.unravel_index(np.argmax(hist), hist.shape)
    cr, cc = r_edges[k[0]] + bin_px / 2, c_edges[k[1]] + bin_px / 2
    near = np.hypot(pr - cr, pc - cc) < 2 * bin_px
    if near.sum() >= 5:
        cr, cc = float(np.median(pr[near])), float(np.median(pc[near]))
    # iteratively reweighted least squares on the distances of the lines from the centre
    t_r, t_c = -n_c, n_r  # tangents
    for scale in (bin_px, bin_px / 3, 10.0, 4.0, 2.0):
        dist = t_r * (cr - rows) + t_c * (cc - cols)
        weight = np.where(np.abs(dist) < scale, (1 - (dist / scale) ** 2) ** 2, 0.0)
        if weight.sum() < 10:
            break
        a11 = np.sum(weight * t_r * t_r)
        a12 = np.sum(weight * t_r * t_c)
        a22 = np.sum(weight * t_c * t_c)
        b1 = np.sum(weight * t_r * (t_r * rows + t_c * cols))
        b2 = np.sum(weight * t_c * (t_r * rows + t_c * cols))
        det2 = a11 * a22 - a12 * a12
        if det2 <= 1e-9 * (a11 + a22) ** 2:
            break
        cr = (a22 * b1 - a12 * b2) / det2
        cc = (a11 * b2 - a12 * b1) / det2
    return float(cr), float(cc)


def _sharpen_centre(rows: np.ndarray, cols: np.ndarray, centre: tuple[float, float]) -> tuple[float, float]:
    """Move the centre to where the ridge pixels' radii are most concentrated (sharpest histogram)."""
    rng = np.random.default_rng(2)
    if rows.size > 30000:
        pick = rng.choice(rows.size, 30000, replace=False)
        rows, cols = rows[pick], cols[pick]
    cr, cc = centre
    # the innermost rings only: under a tilt, each ring's centre is shifted from the beam
    # centre in proportion to tan²(2θ), so the outer rings would pull the centre away
    radius = np.hypot(rows - cr, cols - cc)
    inner = radius <= max(np.percentile(radius, 30), 40.0)
    rows, cols = rows[inner], cols[inner]

    def score(r0: float, c0: float, bin_px: float) -> float:
        h = np.bincount((np.hypot(rows - r0, cols - c0) / bin_px).astype(np.int64))
        return float(np.sum(h.astype(np.float64) ** 2))

    for span, step, bin_px in ((48.0, 6.0, 6.0), (9.0, 1.5, 2.0), (2.0, 0.5, 1.0), (0.5, 0.125, 1.0)):
        offsets = np.arange(-span, span + step / 2, step)
        best = (score(cr, cc, bin_px), cr, cc)
        for dr in offsets:
            for dc in offsets:
                value = score(cr + dr, cc + dc, bin_px)
                if value > best[0]:
                    best = (value, cr + dr, cc + dc)
        cr, cc = best[1], best[2]
    return float(cr), float(cc)


def _equivalent_radius(p: np.ndarray, rows: np.ndarray, cols: np.ndarray, nrows: int,
                       pixel_mm: tuple[float, float]) -> np.ndarray:
    """Radius (px) the points (continuous coordinates) would have at their 2θ on an untilted
    detector at distance ``p[2]``: ``D tan 2θ / pixel``.  Without tilt, their distance from the
    centre.  Points beyond 80° of 2θ are NaN."""
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    tth = _two_theta(p, rows, cols, nrows, pixel_mm)
    out: np.ndarray = np.where(tth < math.radians(80), p[2] * np.tan(np.minimum(tth, math.radians(80))) / px,
                               np.nan)
    return out


def _ring_radii(rows: np.ndarray, cols: np.ndarray, strength: np.ndarray, valid: np.ndarray,
                p: np.ndarray, pixel_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Radii (px) of rings for the geometry ``p`` = [Y, X, d, a, b] and their prominence.

    The radii are equivalent radii (:func:`_equivalent_radius`): without tilt, the distance of
    the ridge pixels (index coordinates ``rows``, ``cols``) from the centre.  The fraction of
    the valid pixels at each radius that are ridge pixels peaks at rings, whatever their
    intensity.  Returns radii, prominences and the covered radius range.
    """
    nrows = valid.shape[0]
    vr, vc = np.nonzero(valid[::2, ::2])
    r_valid = _equivalent_radius(p, vr * 2.0 + 0.5, vc * 2.0 + 0.5, nrows, pixel_mm)
    r_valid = r_valid[np.isfinite(r_valid)]
    r_ridge = _equivalent_radius(p, rows + 0.5, cols + 0.5, nrows, pixel_mm)
    r_ridge = r_ridge[np.isfinite(r_ridge)]
    if r_valid.size == 0 or r_ridge.size == 0:
        return np.zeros(0), np.zeros(0), 0.0, 0.0
    bin_px = 2.0
    n_bins = int(min(float(r_valid.max()), 1e5) / bin_px) + 2
    coverage = np.bincount(np.minimum(r_valid / bin_px, n_bins - 1).astype(int), minlength=n_bins)[:n_bins] * 4.0
    ridge = np.bincount(np.minimum(r_ridge / bin_px, n_bins - 1).astype(int),
                        minlength=n_bins)[:n_bins].astype(np.float64)
    enough = coverage >= 60
    fraction = np.where(enough, ridge / np.maximum(coverage, 1), 0.0)
    fraction = ndimage.gaussian_filter1d(fraction, 1.0)
    if not enough.any():
        return np.zeros(0), np.zeros(0), 0.0, 0.0
    floor = float(np.median(fraction[enough]))
    spread = float(np.median(np.abs(fraction[enough] - floor)) * 1.4826) + 1e-6
    top = float(np.percentile(fraction[enough], 99))
    peaks, props = signal.find_peaks(fraction, prominence=max(6 * spread, 0.1 * top, 0.01), distance=3)
    covered = np.nonzero(enough)[0]
    r_lo, r_hi = covered[0] * bin_px, (covered[-1] + 1) * bin_px
    # refine each peak position by a centroid of the ridge radii near it
    radii = []
    for peak in peaks:
        r0 = (peak + 0.5) * bin_px
        near = np.abs(r_ridge - r0) < 2 * bin_px
        radii.append(float(np.median(r_ridge[near])) if near.sum() >= 3 else r0)
    return np.asarray(radii), np.asarray(props["prominences"]), r_lo, r_hi


def _tilt_search(rows: np.ndarray, cols: np.ndarray, p0: np.ndarray, nrows: int, pixel_mm: tuple[float, float],
                 distances_mm: list[float], count: int = 1) -> list[np.ndarray]:
    """The geometry [Y, X, d, a, b] near ``p0``'s centre under which the ridge pixels'
    equivalent radii are most concentrated (sharpest rings), searched from several tilts.

    A strong tilt at a short distance (or a centre far off the detector, where the rings are
    short arcs) turns the rings into ellipses whose centres drift with their size: no one
    centre makes their radii sharp, and the rings found around the best circle centre are
    smeared or missed.  This needs no calibrant: from each of ``distances_mm`` it starts with
    no tilt and with 5°, 10° and 15° in eight directions, and moves the centre, the distance
    and the tilt (as tilt over distance, the combination that bends the rings at small angles)
    by a simplex search, on coarse and then finer bins, from the most promising starts; returns
    the ``count`` best geometries found, best first.  The distance found is a rough one: the
    calibrant's lines fix it.
    """
    rng = np.random.default_rng(3)
    if rows.size > 6000:
        pick = rng.choice(rows.size, 6000, replace=False)
        rows, cols = rows[pick], cols[pick]
    r_cont, c_cont = rows + 0.5, cols + 0.5

    def params(x: np.ndarray, d0: float) -> np.ndarray:
        d = d0 * math.exp(float(np.clip(x[2], -1.6, 1.6)))
        return np.array([x[0], x[1], d, x[3] * d / d0, x[4] * d / d0])

    def cost(x: np.ndarray, d0: float, bin_px: float) -> float:
        p = params(x, d0)
        # within a tilt of 20°, the distance within 5 times and the centre within 300 px of the
        # start: far beyond, a centre thousands of pixels away squeezes every radius into a few bins
        if (math.hypot(p[3], p[4]) > math.sin(math.radians(20)) or abs(x[2]) > 1.6
                or max(abs(x[0] - p0[0]), abs(x[1] - p0[1])) > 300):
            return 0.0
        r = _equivalent_radius(p, r_cont, c_cont, nrows, pixel_mm) / bin_px
        r = r[np.isfinite(r) & (r < 50000)]
        if r.size < 10:
            return 0.0
        h = ndimage.gaussian_filter1d(np.bincount(r.astype(np.int64)).astype(np.float64), 1.0)
        # times the spread of the radii, so that a geometry that only shrinks all radii alike
        # (sharper rings, in fewer bins) gains nothing
        return -float(np.sum(h * h)) / rows.size ** 2 * float(np.std(r))

    starts: list[tuple[np.ndarray, float]] = []
    for d0 in distances_mm:
        starts.append((np.array([p0[0], p0[1], 0.0, 0.0, 0.0]), d0))
        for tilt in (5.0, 10.0, 15.0):
            for rot in range(-180, 180, 45):
                a, b = _ab_from_tilt(tilt, rot)
                starts.append((np.array([p0[0], p0[1], 0.0, a, b]), d0))
    steps = np.array([8.0, 8.0, 0.15, 0.04, 0.04])

    def simplex(x: np.ndarray, d0: float, bin_px: float, scale: float, maxfev: int) -> tuple[float, np.ndarray, float]:
        initial = np.vstack([x] + [x + np.eye(5)[k] * steps[k] * scale for k in range(5)])
        result = optimize.minimize(cost, x, args=(d0, bin_px), method="Nelder-Mead",
                                   options={"initial_simplex": initial, "maxfev": maxfev, "xatol": 1e-3,
                                            "fatol": 1e-9})
        return float(result.fun), np.asarray(result.x), d0

    # the most promising starts (by their own cost) on coarse bins, the best of those finer
    promising = sorted(starts, key=lambda start: cost(start[0], start[1], 4.0))[:10]
    coarse = sorted((simplex(x, d0, 4.0, 1.0, 200) for x, d0 in promising), key=lambda item: item[0])
    fine = []
    for _, x, d0 in coarse[:3]:
        _, x, _ = simplex(x, d0, 2.0, 0.5, 300)
        fine.append(simplex(x, d0, 1.0, 0.2, 300))
    fine.sort(key=lambda item: item[0])
    return [params(x, d0) for _, x, d0 in fine[:count]]


def _assign_orders(radii: np.ndarray, prominence: np.ndarray, line_tth: np.ndarray, pixel_mm: float,
                   r_lo: float, r_hi: float, distance_guess_mm: float | None, rel_tol: float = 0.015,
                   count: int = 2) -> list[tuple[float, np.ndarray]]:
    """Distance (mm) and calibrant line of each ring radius that best explain the radii.

    Every pairing of a found radius with a calibrant line implies a distance; the one whose
    predicted rings match the most radii (weighted by prominence), with the fewest predicted
    rings missing between the first and the last matched, wins.  Returns the ``count`` best
    (distance, assignment) pairs with distinct distances, best first; empty when no distance
    matches at least two radii within ``rel_tol`` (relative) + 2 px.
    """
    good = np.isfinite(line_tth) & (line_tth < math.radians(89))
    lines = np.nonzero(good)[0]
    tan_lines = np.tan(line_tth[lines])
    found: list[tuple[float, float, np.ndarray]] = []
    weights = prominence / prominence.max()
    for r in radii:
        for t in tan_lines[:60]:
            distance = r * pixel_mm / t
            if distance_guess_mm is not None and not (distance_guess_mm / 1.6 < distance < distance_guess_mm * 1.6):
                continue
            predicted = distance * tan_lines / pixel_mm
            # match each radius to the nearest predicted ring
            idx = np.searchsorted(predicted, radii)
            lo = np.clip(idx - 1, 0, predicted.size - 1)
            hi = np.clip(idx, 0, predicted.size - 1)
            nearest = np.where(np.abs(predicted[lo] - radii) < np.abs(predicted[hi] - radii), lo, hi)
            error = np.abs(predicted[nearest] - radii)
            tol = 2.0 + rel_tol * radii
            matched = error < tol
            if matched.sum() < 2:
                continue
            r_first, r_last = radii[matched].min(), radii[matched].max()
            inside = ((predicted >= r_first - 1) & (predicted <= r_last + 1) & (predicted > r_lo)
                      & (predicted < r_hi))
            # predicted rings between the first and the last matched that no radius explains
            gaps = np.min(np.abs(predicted[inside][:, None] - radii[None, :]), axis=1)
            missing = int(np.sum(gaps > 2.0 + rel_tol * predicted[inside]))
            score = float(weights[matched].sum()) + matched.sum() - 1.0 * missing
            score -= 0.5 * float(np.mean(error[matched] / tol[matched]))
            found.append((score, distance, np.where(matched, lines[nearest], -1)))
    found.sort(key=lambda item: -item[0])
    out: list[tuple[float, np.ndarray]] = []
    for _, distance, assignment in found:
        # least-squares distance from the matched radii
        m = assignment >= 0
        t = np.tan(line_tth[assignment[m]])
        distance = float(np.sum(radii[m] * pixel_mm * t) / np.sum(t * t))
        if all(abs(distance / d - 1) > 0.02 for d, _ in out):
            out.append((distance, assignment))
        if len(out) >= count:
            break
    return out


def _ridge_refine(p: np.ndarray, rows: np.ndarray, cols: np.ndarray, d_spacings: np.ndarray, wavelength_A: float,
                  nrows: int, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Refine a rough geometry [Y, X, d, a, b] on the ridge pixels themselves.

    Each ridge pixel is given the calibrant line nearest to its equivalent radius, if close
    enough, and the geometry is refined on them; then again with a tighter tolerance.  From
    a start a few degrees of tilt and tens of pixels off (the tilt search's), this brings the
    predicted rings close enough for the control points' search windows.
    """
    if rows.size > 20000:
        pick = np.random.default_rng(4).choice(rows.size, 20000, replace=False)
        rows, cols = rows[pick], cols[pick]
    r_cont, c_cont = rows + 0.5, cols + 0.5
    line_tth = _line_two_theta(d_spacings, wavelength_A)
    lines = np.nonzero(np.isfinite(line_tth) & (line_tth < math.radians(80)))[0]
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    q = np.array([*p[:5], wavelength_A])
    for tolerance_px in (8.0, 4.0, 2.0):
        r_eq = _equivalent_radius(q, r_cont, c_cont, nrows, pixel_mm)
        line_r = q[2] * np.tan(line_tth[lines]) / px
        ok = np.isfinite(r_eq)
        idx = np.clip(np.searchsorted(line_r, r_eq[ok]), 1, max(line_r.size - 1, 1))
        lo = np.clip(idx - 1, 0, line_r.size - 1)
        hi = np.clip(idx, 0, line_r.size - 1)
        nearest = np.where(np.abs(line_r[lo] - r_eq[ok]) <= np.abs(line_r[hi] - r_eq[ok]), lo, hi)
        distance = np.abs(line_r[nearest] - r_eq[ok])
        # unambiguous: well within the tolerance and nearer its line than a third of the way to the next
        spacing = np.maximum(np.abs(line_r[hi] - line_r[lo]), 1.0)
        close = (distance < tolerance_px) & (distance < spacing / 3)
        if close.sum() < 50 or np.unique(nearest[close]).size < 2:
            break
        sel_rows, sel_cols = r_cont[ok][close], c_cont[ok][close]
        q, _, _ = _refine(q, sel_rows, sel_cols, lines[nearest[close]], d_spacings, nrows, pixel_mm, False,
                          covariance=False)
        if math.hypot(q[3], q[4]) > 0.5 or not q[2] > 0:
            break
    return q[:5]


# ----------------------------------------------------------------------------- control points

def _control_points(image: np.ndarray, valid: np.ndarray, params: np.ndarray, pixel_mm: tuple[float, float],
                    lines: np.ndarray, line_tth: np.ndarray, half_window_px: np.ndarray,
                    max_rays: int = 720) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Control points on the predicted rings ``lines``: rows, cols, line index, amplitude.

    Along rays from the beam centre, the crest of each ring within ±half_window px of its
    predicted position is located by the centroid above half maximum.
    """
    nrows, ncols = image.shape
    y_c, x_c, d, a, b = params[:5]
    img = np.where(valid, image, 0).astype(np.float32)
    validf = valid.astype(np.float32)
    step = 0.25
    out_r, out_c, out_l, out_a = [], [], [], []
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    for line, window in zip(lines, half_window_px):
        tan_t = math.tan(line_tth[line])
        # rays: enough for ~3 px spacing along the ring
        approx_r = d * tan_t / px
        n_rays = int(np.clip(2 * math.pi * approx_r / 3.0, 36, max_rays))
        phi = np.linspace(-math.pi, math.pi, n_rays, endpoint=False)
        e_x, e_y = np.cos(phi), np.sin(phi)
        # direction in mm per step along the ray, in-plane; beta = component along the beam per unit
        beta = a * e_x + b * e_y
        denom = np.sqrt(np.maximum(1 - beta * beta, 0)) - beta * tan_t
        ok = denom > 1e-6
        s_mm = np.where(ok, d * tan_t / np.where(ok, denom, 1.0), np.nan)
        # pixels per mm along the ray (for anisotropic pixels)
        s_px = s_mm * np.sqrt((e_x / pixel_mm[1]) ** 2 + (e_y / pixel_mm[0]) ** 2)
        offsets = np.arange(-window, window + step / 2, step)
        sample_px = s_px[:, None] + offsets[None, :]
        # unit step in pixels along the ray
        scale = 1.0 / np.sqrt((e_x / pixel_mm[1]) ** 2 + (e_y / pixel_mm[0]) ** 2)  # mm per pixel of ray
        col = x_c + sample_px * (scale * e_x / pixel_mm[1])[:, None]
        row = nrows - (y_c + sample_px * (scale * e_y / pixel_mm[0])[:, None])
        inside = ok & np.all((col >= 1) & (col < ncols - 1) & (row >= 1) & (row < nrows - 1), axis=1)
        if not inside.any():
            continue
        col, row = col[inside], row[inside]
        coords = np.vstack([(row - 0.5).ravel(), (col - 0.5).ravel()])
        values = ndimage.map_coordinates(img, coords, order=1, mode="nearest").reshape(row.shape)
        good = ndimage.map_coordinates(validf, coords, order=1, mode="nearest").reshape(row.shape)
        clean = np.all(good > 0.999, axis=1)
        values, row, col = values[clean], row[clean], col[clean]
        if values.shape[0] == 0:
            continue
        n = values.shape[1]
        edge = max(2, n // 8)
        # a straight baseline through both ends of the window: the background under a ring
        # near the beamstop slopes steeply, and a flat one would pull the crest inwards
        left = values[:, :edge].mean(axis=1)
        right = values[:, -edge:].mean(axis=1)
        ramp = np.linspace(0.0, 1.0, n)[None, :]
        baseline = left[:, None] + (right - left)[:, None] * ramp
        base = np.minimum(left, right)
        values = values - baseline
        top = np.argmax(values, axis=1)
        interior = (top >= edge) & (top < n - edge)
        amp = values[np.arange(values.shape[0]), top]
        half = 0.5 * amp
        # contiguous run above half maximum around the top
        above = values >= half[:, None]
        idx = np.arange(n)[None, :]
        left_break = np.where(~above & (idx < top[:, None]), idx, -1).max(axis=1)
        right_break = np.where(~above & (idx > top[:, None]), idx, n).min(axis=1)
        run = (idx > left_break[:, None]) & (idx < right_break[:, None])
        weight = np.where(run, values - half[:, None], 0.0)
        wsum = weight.sum(axis=1)
        noise = np.sqrt(np.maximum(base, 1.0))
        snr_ok = amp > 4.0 * noise
        closed = (left_break >= 0) & (right_break < n)
        keep = interior & closed & snr_ok & (wsum > 0)
        if keep.sum() < 3:
            continue
        pos = (weight * offsets[None, :]).sum(axis=1) / np.where(wsum > 0, wsum, 1)
        rays = np.nonzero(inside)[0][clean][keep]
        s_found = s_px[rays] + pos[keep]
        fcol = x_c + s_found * scale[rays] * e_x[rays] / pixel_mm[1]
        frow = nrows - (y_c + s_found * scale[rays] * e_y[rays] / pixel_mm[0])
        amps = amp[keep]
        # drop points much fainter than the ring's typical crest (another ring's tail, noise)
        strong = amps > 0.25 * np.median(amps)
        out_r.append(frow[strong])
        out_c.append(fcol[strong])
        out_l.append(np.full(int(strong.sum()), line))
        out_a.append(amps[strong])
    if not out_r:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, dtype=int), empty
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_l), np.concatenate(out_a)


# ----------------------------------------------------------------------------- refinement

def _refine(params: np.ndarray, rows: np.ndarray, cols: np.ndarray, line: np.ndarray, d_spacings: np.ndarray,
            nrows: int, pixel_mm: tuple[float, float], refine_wavelength: bool, fix_tilt: bool = False,
            covariance: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares refinement with outlier rejection.

    ``params`` = [Y, X, d, a, b, λ].  Returns the refined params, the mask of points kept and
    the covariance of the free parameters (in the order of ``params``, fixed ones zero).
    """
    free = np.array([True, True, True, not fix_tilt, not fix_tilt, refine_wavelength])
    keep = np.ones(rows.size, bool)
    p = params.copy()

    def residual(x: np.ndarray, sel: np.ndarray) -> np.ndarray:
        q = p.copy()
        q[free] = x
        target = 2.0 * np.arcsin(q[5] / (2.0 * d_spacings[line[sel]]))
        return _two_theta(q, rows[sel], cols[sel], nrows, pixel_mm) - target

    # 2θ per pixel at the rings, to express a pixel tolerance in 2θ
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    cov = np.zeros((6, 6))
    # a tilt within ±MAX_TILT_DEG along each axis: short arcs of rings far from the beam centre
    # bend alike under a distance, a centre and a tilt of 50° or more, a minimum no detector
    # is set up at (the refinement ran there from a start of 3° off)
    limit = math.sin(math.radians(MAX_TILT_DEG))
    lower = np.array([-np.inf, -np.inf, 1e-3, -limit, -limit, 1e-3])[free]
    upper = np.array([np.inf, np.inf, np.inf, limit, limit, np.inf])[free]
    p[free] = np.clip(p[free], lower + 1e-9, upper - 1e-9)
    for it in range(4):
        sel = keep
        if sel.sum() < free.sum() + 3:
            break
        rad_per_px = px / p[2] * np.cos(_two_theta(p, rows[sel], cols[sel], nrows, pixel_mm)) ** 2
        scale = float(np.median(rad_per_px))
        result = optimize.least_squares(residual, p[free], args=(sel,), method="trf", bounds=(lower, upper),
                                        loss="soft_l1" if it == 0 else "linear", f_scale=scale,
                                        x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=200)
        p[free] = result.x
        # reject points beyond 4 robust sigmas (in pixel units) of the whole set
        rad_per_px_all = px / p[2] * np.cos(_two_theta(p, rows, cols, nrows, pixel_mm)) ** 2
        res_px = residual(p[free], np.ones(rows.size, bool)) / rad_per_px_all
        sigma = 1.4826 * float(np.median(np.abs(res_px[keep]))) + 1e-6
        new_keep = np.abs(res_px) < max(4.0 * sigma, 0.05)
        if np.array_equal(new_keep, keep) and it > 0:
            keep = new_keep
            break
        keep = new_keep
    if not covariance:
        return p, keep, cov
    # covariance from the Jacobian of the final set
    sel = keep
    result = optimize.least_squares(residual, p[free], args=(sel,), method="trf", x_scale="jac",
                                    xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=50)
    p[free] = result.x
    jac = result.jac
    dof = max(int(sel.sum()) - int(free.sum()), 1)
    s2 = float(np.sum(result.fun ** 2)) / dof
    try:
        cov_free = np.linalg.pinv(jac.T @ jac) * s2
    except np.linalg.LinAlgError:
        cov_free = np.full((int(free.sum()),) * 2, np.nan)
    idx = np.nonzero(free)[0]
    cov[np.ix_(idx, idx)] = cov_free
    return p, keep, cov


def _radial_residual_px(p: np.ndarray, rows: np.ndarray, cols: np.ndarray, line: np.ndarray,
                        d_spacings: np.ndarray, nrows: int, pixel_mm: tuple[float, float]) -> np.ndarray:
    tth = _two_theta(p, rows, cols, nrows, pixel_mm)
    target = 2.0 * np.arcsin(p[5] / (2.0 * d_spacings[line]))
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    out: np.ndarray = (tth - target) / (px / p[2] * np.cos(tth) ** 2)
    return out


def _predicted_lines(p: np.ndarray, line_tth: np.ndarray, valid: np.ndarray, pixel_mm: tuple[float, float],
                     tth_limit: float | None = None) -> np.ndarray:
    """Calibrant lines whose ring crosses valid pixels (checked on a coarse grid)."""
    nrows, ncols = valid.shape
    rr, cc = np.mgrid[0:nrows:4, 0:ncols:4]
    v = valid[::4, ::4]
    tth = _two_theta(p, rr[v] + 2.0, cc[v] + 2.0, nrows, pixel_mm)
    if tth.size == 0:
        return np.zeros(0, dtype=int)
    lo, hi = float(tth.min()), float(tth.max())
    if tth_limit is not None:
        hi = min(hi, tth_limit)
    ok = np.isfinite(line_tth) & (line_tth > lo) & (line_tth < hi)
    lines = np.nonzero(ok)[0]
    # need a fair number of valid pixels near the ring
    hist, edges = np.histogram(tth, bins=2000, range=(lo, float(tth.max())))
    keep = []
    for k in lines:
        b = min(int((line_tth[k] - lo) / (edges[1] - edges[0])), hist.size - 1)
        if hist[max(b - 1, 0):b + 2].sum() >= 3:
            keep.append(k)
    return np.asarray(keep, dtype=int)


def _windows(p: np.ndarray, lines: np.ndarray, line_tth: np.ndarray, pixel_mm: tuple[float, float],
             max_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Search half-windows (px) per line, and which lines are separated enough to use."""
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    radius = p[2] * np.tan(line_tth) / px
    all_lines = np.nonzero(np.isfinite(radius))[0]
    r_all = radius[all_lines]
    windows, usable = [], []
    for k in lines:
        others = r_all[all_lines != k]
        gap = float(np.min(np.abs(others - radius[k]))) if others.size else np.inf
        windows.append(min(max_px, 0.45 * gap))
        usable.append(gap > 4.0)
    return np.asarray(windows), np.asarray(usable, dtype=bool)


def fit_calibrant(image: np.ndarray, d_spacings: np.ndarray, wavelength_A: float,
                  pixel_size_um: tuple[float, float], *, calibrant: str = "", mask: np.ndarray | None = None,
                  dummy_value: float | None = None, distance_guess_mm: float | None = None,
                  refine_wavelength: bool = False, max_rms_px: float = 1.0,
                  max_inconsistency: float = 2.5) -> CalibrationFit:
    """Find the calibrant's rings on ``image`` and refine the geometry.

    Parameters
    ----------
    image
        The calibrant image as read (row 0 at the top), any numeric dtype.
    d_spacings
        The calibrant's d-spacings in Å (see :func:`saxsdog.calibrate.calibrants.d_spacings`).
    wavelength_A
        Wavelength in Å (a starting value when ``refine_wavelength``).
    pixel_size_um
        ``(vertical, horizontal)`` pixel size in µm.
    calibrant
        The calibrant's name, for the report.
    mask
        Validity map (``True`` = pixel used), e.g. the template calibration's mask.
    dummy_value
        A pixel value that marks pixels without data (besides negative values).
    distance_guess_mm
        A rough distance: order assignments implying a distance more than 1.6 times off are
        not considered.
    refine_wavelength
        Refine the wavelength too (only meaningful with rings at wide angles).
    max_rms_px
        Largest acceptable RMS residual, pixels.
    max_inconsistency
        Largest accepted ratio of the RMS residual to that of each ring fitted alone (with a
        centre, distance and tilt of its own).

    Raises
    ------
    NoRingsError
        No rings, or none that match the calibrant.
    PoorFitError
        The refined geometry leaves large residuals or rests on too few rings.
    """
    t0 = time.perf_counter()
    image = np.asarray(image)
    if image.ndim != 2:
        raise CalibrationFitError(f"expected a 2-D image, got shape {image.shape}")
    if not (wavelength_A > 0 and math.isfinite(wavelength_A)):
        raise CalibrationFitError(f"bad wavelength {wavelength_A!r} Å")
    d_spacings = np.sort(np.asarray(d_spacings, dtype=np.float64))[::-1]
    nrows, ncols = image.shape
    pixel_mm = (pixel_size_um[0] * 1e-3, pixel_size_um[-1] * 1e-3)
    valid = valid_pixels(image, mask, dummy_value)
    if valid.sum() < 1000:
        raise NoRingsError("no rings found: fewer than 1000 valid pixels on the image")
    data = np.where(valid, image, 0).astype(np.float64)
    line_tth = _line_two_theta(d_spacings, wavelength_A)

    def at_scale(sigma: float) -> CalibrationFit:
        # 2-3: ridge pixels and the beam centre
        rows, cols, n_r, n_c, strength = _ridge_points(data, valid, sigma)
        if rows.size < 50:
            raise NoRingsError("no rings found: the image shows no ring-like ridges")
        centre = _centre_from_normals(rows, cols, n_r, n_c, image.shape)
        if centre is None:
            raise NoRingsError("no rings found: the ridges on the image do not share a centre")
        centre = _sharpen_centre(rows, cols, centre)
        px = 0.5 * (pixel_mm[0] + pixel_mm[1])
        # continuous coordinates (index + 0.5), no tilt; the distance is a placeholder until
        # the rings' orders fix it
        untilted = np.array([nrows - (centre[0] + 0.5), centre[1] + 0.5, 1000.0, 0.0, 0.0])
        distances: list[float] = []

        def fit_around(start: np.ndarray, polish: bool = False) -> CalibrationFit:
            # 4: rings and orders
            radii, prominence, r_lo, r_hi = _ring_radii(rows, cols, strength, valid, start, pixel_mm)
            if radii.size < 2:
                raise NoRingsError(f"no rings found: {radii.size} ring(s) around the centre (row "
                                   f"{nrows - start[0]:.0f}, column {start[1]:.0f}); at least 2 are needed")
            tight = _assign_orders(radii, prominence, line_tth, px, r_lo, r_hi, distance_guess_mm, 0.015, 2)
            # rings at wide angles on a tilted detector stray further from a circle: looser matches too
            loose = _assign_orders(radii, prominence, line_tth, px, r_lo, r_hi, distance_guess_mm, 0.05, 2)
            candidates: list[tuple[float, np.ndarray]] = []
            for candidate in [c for pair in zip(tight + [None] * 2, loose + [None] * 2) for c in pair
                              if c is not None]:
                if all(abs(candidate[0] / d - 1) > 0.02 for d, _ in candidates):
                    candidates.append(candidate)
            if not candidates:
                raise NoRingsError(f"no rings found that match {calibrant or 'the calibrant'} at {wavelength_A} Å: "
                                   f"{radii.size} rings at radii {', '.join(f'{r:.0f}' for r in radii[:8])} px "
                                   "(wrong calibrant, wavelength or pixel size?)")
            distances.extend(d for d, _ in candidates)
            first_error: CalibrationFitError | None = None
            for distance, assignment in candidates[:3]:
                # the tilt found as tilt over distance (what bends the rings) at the distance of the orders
                p_start = np.array([start[0], start[1], distance, *(start[3:5] * distance / start[2])])
                tilt = math.hypot(p_start[3], p_start[4])
                if tilt > 0.5:
                    p_start[3:5] *= 0.5 / tilt
                if polish:
                    p_start = _ridge_refine(p_start, rows, cols, d_spacings, wavelength_A, nrows, pixel_mm)
                try:
                    return _fit_from(data, valid, p_start, assignment, radii, d_spacings, wavelength_A,
                                     pixel_size_um, pixel_mm, calibrant, refine_wavelength, max_rms_px,
                                     max_inconsistency, rows, cols, t0)
                except CalibrationFitError as exc:  # the next most likely order assignment
                    first_error = first_error or exc
            assert first_error is not None
            raise first_error

        try:
            return fit_around(untilted)
        except CalibrationFitError as exc:
            untilted_error = exc
        # a strong tilt at a short distance, or a centre far off the detector: the rings are
        # ellipses (or short arcs of them) that no circle centre makes sharp; search for the
        # tilt that does, then assign orders and refine again.  When that fails too, the
        # reason told is the untilted one (the image's plainest reading)
        guesses = [float(d) for d in sorted({round(d) for d in distances[:2] if d > MIN_DISTANCE_MM} | {200, 600, 2000})]
        starts = [untilted]
        # seen from far off the detector the rings are short arcs, and moving the centre towards
        # or away from them changes every radius alike: their sharpness hardly tells where along
        # that line the centre is, so starts along it are tried too
        outside = max(-untilted[1], untilted[1] - ncols, -untilted[0], untilted[0] - nrows)
        if outside > 50:
            towards = np.array([untilted[0] - nrows / 2, untilted[1] - ncols / 2])
            towards /= np.hypot(*towards)
            for shift in (-120.0, 120.0, -240.0, 240.0):
                shifted = untilted.copy()
                shifted[:2] += shift * towards
                starts.append(shifted)
        for k, start in enumerate(starts):
            # the two best geometries from the centre found, the best from the others
            for searched in _tilt_search(rows, cols, start, nrows, pixel_mm, guesses, 2 if k == 0 else 1):
                try:
                    return fit_around(searched, polish=True)
                except CalibrationFitError:
                    pass
        raise untilted_error from None

    # broad rings (a long distance, a wide beam or a fine powder's size broadening: 10 px and
    # more) curve too gently for the fine scale against the noise of the background: when the
    # fine scale finds no rings, coarser ones are tried; the fine scale's reason is the one told
    no_rings: NoRingsError | None = None
    for sigma in RIDGE_SCALES_PX:
        try:
            return at_scale(sigma)
        except NoRingsError as exc:
            no_rings = no_rings or exc
    assert no_rings is not None
    raise no_rings


def _fit_from(data: np.ndarray, valid: np.ndarray, start: np.ndarray, assignment: np.ndarray, radii: np.ndarray,
              d_spacings: np.ndarray, wavelength_A: float, pixel_size_um: tuple[float, float],
              pixel_mm: tuple[float, float], calibrant: str, refine_wavelength: bool, max_rms_px: float,
              max_inconsistency: float, rows: np.ndarray, cols: np.ndarray, t0: float) -> CalibrationFit:
    """Refine from one order assignment and check the result (see :func:`fit_calibrant`)."""
    nrows, ncols = data.shape
    line_tth = _line_two_theta(d_spacings, wavelength_A)
    warnings: list[str] = []
    # start: [Y, X, d, a, b] in continuous coordinates (index + 0.5)
    p = np.array([*start[:5], wavelength_A])

    # 5: control points and refinement, widening from the rings found to every ring on the detector
    matched_lines = np.unique(assignment[assignment >= 0])
    # start with the innermost rings (least distorted by a tilt), then widen step by step
    tth_limit = float(line_tth[matched_lines[min(2, matched_lines.size - 1)]]) * 1.02
    pts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    # the points the last refinement used (``keep`` refers to them, not to a later stage's)
    fitted: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    keep = np.zeros(0, bool)
    cov = np.zeros((6, 6))
    max_window = max(8.0, 0.04 * float(radii.max()))
    widest = False
    for stage in range(20):
        if stage == 0:
            lines = matched_lines[line_tth[matched_lines] <= tth_limit]
        else:
            lines = _predicted_lines(p, line_tth, valid, pixel_mm, None if widest else tth_limit)
        windows, usable = _windows(p, lines, line_tth, pixel_mm, max_window)
        lines, windows = lines[usable], windows[usable]
        if lines.size == 0:
            break
        pts = _control_points(data, valid, p, pixel_mm, lines, line_tth, windows)
        if np.unique(pts[2]).size < 2 or pts[0].size < 12:
            if stage == 0:
                break
            widest = True
            continue
        previous = p.copy()
        # the wavelength only once the geometry has converged with it fixed: at small angles it is
        # almost degenerate with the distance, and freed early it runs away
        free_wavelength = refine_wavelength and widest and stage >= 3
        p, keep, cov = _refine(p, pts[0], pts[1], pts[2], d_spacings, nrows, pixel_mm, free_wavelength)
        fitted = pts
        if free_wavelength and not 0.8 < p[5] / wavelength_A < 1.25:
            # run away along the distance–wavelength degeneracy: no later stage brings it back
            raise PoorFitError(f"poor fit: the wavelength cannot be refined from these rings (it ran to {p[5]:.4g} "
                               f"Å from {wavelength_A:.5g} Å): they are at too small angles; fix it instead")
        if not widest and math.hypot(p[3], p[4]) > math.sin(math.radians(0.2)):
            # at small angles a tilt and its opposite bend the rings almost alike: try the other
            mirrored = p.copy()
            mirrored[3:5] *= -1
            q, keep_q, cov_q = _refine(mirrored, pts[0], pts[1], pts[2], d_spacings, nrows, pixel_mm, False)
            cost_p = np.median(np.abs(_radial_residual_px(p, *pts[:3], d_spacings, nrows, pixel_mm)))
            cost_q = np.median(np.abs(_radial_residual_px(q, *pts[:3], d_spacings, nrows, pixel_mm)))
            if cost_q < cost_p:
                p, keep, cov = q, keep_q, cov_q
        line_tth = _line_two_theta(d_spacings, p[5])
        change_px = max(abs(p[0] - previous[0]), abs(p[1] - previous[1]),
                        abs(p[2] - previous[2]) / p[2] * 1000)
        rms_now = float(np.sqrt(np.mean(_radial_residual_px(p, pts[0][keep], pts[1][keep], pts[2][keep],
                                                            d_spacings, nrows, pixel_mm) ** 2)))
        max_window = max(4.0, min(max_window, 6.0 * rms_now + 4.0))
        if widest and change_px < 2e-3 and free_wavelength == refine_wavelength:
            break
        if not widest:
            tth_limit *= 1.4
            widest = tth_limit > math.pi
    if fitted is None or keep.sum() < 12:
        raise NoRingsError(f"no rings found: too few control points on the rings of {calibrant or 'the calibrant'}")
    rows_k, cols_k, line_k = fitted[0][keep], fitted[1][keep], fitted[2][keep]
    res_px = _radial_residual_px(p, rows_k, cols_k, line_k, d_spacings, nrows, pixel_mm)
    rms = float(np.sqrt(np.mean(res_px ** 2)))
    rings = []
    for k in np.unique(line_k):
        sel = line_k == k
        rings.append(RingStats(int(k), float(d_spacings[k]), math.degrees(float(line_tth[k])), int(sel.sum()),
                               float(np.sqrt(np.mean(res_px[sel] ** 2))), float(np.mean(res_px[sel]))))
    rings = [r for r in rings if r.points >= 8]
    tilt, rot = _tilt_from_ab(p[3], p[4])
    geometry = Geometry(shape=(nrows, ncols), beam_center=(float(p[0]), float(p[1])), distance_mm=float(p[2]),
                        pixel_size_um=(float(pixel_size_um[0]), float(pixel_size_um[-1])),
                        wavelength_A=float(p[5]), tilt_deg=tilt, tilt_rotation_deg=rot)
    # neighbouring control points share pixels and systematic errors: their residuals are
    # correlated, so the points count less than their number; inflate the uncertainties as
    # for a first-order autoregressive series
    rho = _neighbour_correlation(p, rows_k, cols_k, line_k, res_px, nrows)
    inflation = math.sqrt((1 + rho) / (1 - rho))
    uncertainties = {k: v * inflation for k, v in _uncertainties(p, cov, refine_wavelength).items()}
    elapsed = time.perf_counter() - t0
    fit = CalibrationFit(geometry, calibrant, d_spacings, uncertainties, rings, rows_k, cols_k, line_k, rms,
                         refine_wavelength, elapsed, warnings, residual_correlation=rho)
    if len(rings) < 2:
        raise PoorFitError(f"poor fit: only {len(rings)} ring(s) with enough control points; at least 2 are "
                           "needed (is the calibrant right?)")
    if rms > max_rms_px:
        raise PoorFitError(f"poor fit (residual {rms:.2f} px RMS, more than {max_rms_px:g} px): wrong calibrant, "
                           f"wavelength ({wavelength_A} Å) or pixel size?")
    if refine_wavelength and not (uncertainties["WavelengthA"] < 0.01 * p[5] and 0.8 < p[5] / wavelength_A < 1.25):
        raise PoorFitError(f"poor fit: the wavelength cannot be refined from these rings (it ran to {p[5]:.4g} Å "
                           f"from {wavelength_A:.5g} Å, ± {uncertainties['WavelengthA']:.3g} Å): they are at too "
                           "small angles; fix it instead")
    # each ring alone, with a cone section of its own, is the best any geometry can do; a global
    # fit much worse than that forces one geometry on rings that belong to another (wrong
    # wavelength or calibrant), bending them with a tilt
    floor = _ring_by_ring_rms(p, rows_k, cols_k, line_k, d_spacings, nrows, pixel_mm)
    fit.consistency = rms / floor if floor > 0 else 1.0
    if fit.consistency > max_inconsistency:
        raise PoorFitError(f"poor fit (residual {rms:.2f} px RMS, {fit.consistency:.2f} times what each ring "
                           f"alone allows): the rings do not share one geometry at {p[5]:.5g} Å; wrong "
                           "wavelength or calibrant?")
    if fit.consistency > WARN_INCONSISTENCY:
        # short of a refusal, but not a confident result: a wavelength too short (or a mask that
        # hides half of every ring) is absorbed by a longer distance and a tilt, at a price
        warnings.append(f"the rings share one geometry {fit.consistency:.2f} times worse than each ring alone "
                        f"allows (about 1.0-1.3 for a right wavelength): check the wavelength ({p[5]:.5g} Å; "
                        f"one too short fits with a longer distance and a tilt, here {tilt:.2f}°), the calibrant "
                        "and the mask")
    # rings on the image that no calibrant line explains: a wrong calibrant (or wavelength)
    unexplained = _unexplained_rings(p, rows, cols, valid, line_tth, pixel_mm)
    if len(unexplained) >= max(2, 0.3 * radii.size):
        raise PoorFitError(f"poor fit: {len(unexplained)} of the {radii.size} rings on the image (at "
                           f"{', '.join(f'{r:.0f}' for r in unexplained[:6])} px, as radii at the fitted distance) are no lines of "
                           f"{calibrant or 'the calibrant'} at {p[5]:.5g} Å: wrong calibrant or wavelength?")
    # calibrant lines on valid pixels between the first and the last ring found, without points
    used = np.asarray([r.line for r in rings])
    between = _predicted_lines(p, line_tth, valid, pixel_mm)
    between = between[(between > used.min()) & (between < used.max())]
    missing = np.setdiff1d(between, used)
    if missing.size and missing.size >= 0.25 * (between.size + 2):
        raise PoorFitError(f"poor fit: the calibrant lines {', '.join(str(k + 1) for k in missing[:8])} of "
                           f"{calibrant or 'the calibrant'} lie between the rings found (lines "
                           f"{', '.join(str(k + 1) for k in used[:8])}) but show no ring: wrong calibrant or "
                           "wavelength?")
    found = len(rings)
    expected = _predicted_lines(p, line_tth, valid, pixel_mm).size
    if expected and found < 0.3 * expected and found < 4:
        # two or three rings of the many the geometry puts on the detector: a geometry made up
        # for a couple of ridges (a beamstop's edge, a gap's), not the calibrant's rings
        raise PoorFitError(f"poor fit: only {found} of the {expected} rings of {calibrant or 'the calibrant'} the "
                           f"fitted geometry ({p[2]:.1f} mm) puts on the detector are on the image: wrong calibrant "
                           "or wavelength, or too few rings?")
    if p[2] < MIN_DISTANCE_MM:
        raise PoorFitError(f"poor fit: the fitted distance {p[2]:.2f} mm is implausible (less than "
                           f"{MIN_DISTANCE_MM:g} mm): wrong calibrant or wavelength?")
    if expected and found < 0.3 * expected:
        warnings.append(f"only {found} of the {expected} calibrant rings expected on the detector were found")
    return fit


def _neighbour_correlation(p: np.ndarray, rows: np.ndarray, cols: np.ndarray, line: np.ndarray, res_px: np.ndarray,
                           nrows: int) -> float:
    """Correlation of the residuals of neighbouring control points along each ring (0–0.95)."""
    psi = np.arctan2((nrows - rows) - p[0], cols - p[1])
    num = den = 0.0
    for k in np.unique(line):
        sel = line == k
        order = np.argsort(psi[sel])
        e = res_px[sel][order]
        e = e - e.mean()
        adjacent = np.diff(psi[sel][order]) < 0.05
        num += float(np.sum((e[1:] * e[:-1])[adjacent]))
        den += float(np.sum(e * e))
    return float(np.clip(num / den, 0.0, 0.95)) if den > 0 else 0.0


def _ring_by_ring_rms(p: np.ndarray, rows: np.ndarray, cols: np.ndarray, line: np.ndarray, d_spacings: np.ndarray,
                      nrows: int, pixel_mm: tuple[float, float]) -> float:
    """Pooled RMS residual (px) when every ring gets its own centre, distance and tilt."""
    total, count = 0.0, 0
    ring_lines, sizes = np.unique(line, return_counts=True)
    for k in ring_lines[np.argsort(sizes)[::-1][:10]]:  # the ten best-sampled rings tell enough
        sel = line == k
        if sel.sum() < 20:
            continue
        q, keep, _ = _refine(p, rows[sel], cols[sel], line[sel], d_spacings, nrows, pixel_mm, False,
                             covariance=False)
        res = _radial_residual_px(q, rows[sel][keep], cols[sel][keep], line[sel][keep], d_spacings, nrows, pixel_mm)
        total += float(np.sum(res ** 2))
        count += int(keep.sum())
    return math.sqrt(total / count) if count else 0.0


def _unexplained_rings(p: np.ndarray, rows: np.ndarray, cols: np.ndarray, valid: np.ndarray,
                       line_tth: np.ndarray, pixel_mm: tuple[float, float]) -> list[float]:
    """Clear rings of ridge pixels, 40 px or more from the centre, that the fitted
    geometry puts on no calibrant line; as radii (px) at the fitted distance.

    With the fitted geometry every ridge pixel gets its 2θ, written as the radius
    ``D tan 2θ`` it would have on an untilted detector; real rings are sharp peaks of the
    fraction of ridge pixels at that radius.
    """
    nrows = valid.shape[0]
    px = 0.5 * (pixel_mm[0] + pixel_mm[1])
    to_radius = p[2] / px
    r_ridge = to_radius * np.tan(_two_theta(p, rows + 0.5, cols + 0.5, nrows, pixel_mm))
    vr, vc = np.nonzero(valid[::2, ::2])
    r_valid = to_radius * np.tan(_two_theta(p, vr * 2.0 + 1.0, vc * 2.0 + 1.0, nrows, pixel_mm))
    bin_px = 2.0
    n_bins = int(min(r_valid.max(), 1e5) / bin_px) + 2
    coverage = np.bincount(np.clip(r_valid / bin_px, 0, n_bins - 1).astype(int), minlength=n_bins) * 4.0
    ridge = np.bincount(np.clip(r_ridge / bin_px, 0, n_bins - 1).astype(int), minlength=n_bins).astype(float)
    enough = coverage >= 60
    fraction = ndimage.gaussian_filter1d(np.where(enough, ridge / np.maximum(coverage, 1), 0.0), 1.0)
    if not enough.any():
        return []
    top = float(np.percentile(fraction[enough], 99))
    peaks, props = signal.find_peaks(fraction, prominence=max(0.3 * float(fraction.max()), 0.1 * top, 0.01),
                                     distance=3)
    line_r = to_radius * np.tan(line_tth[np.isfinite(line_tth) & (line_tth < math.radians(89))])
    # beyond the edge of a round beamstop (which makes a ring of its own)
    lo, hi = 40.0, np.inf
    out = []
    for b in peaks:
        r = (b + 0.5) * bin_px
        if lo < r < hi and float(np.min(np.abs(line_r - r))) > 3.0 + 0.01 * r:
            out.append(r)
    return out


def _uncertainties(p: np.ndarray, cov: np.ndarray, refine_wavelength: bool) -> dict[str, float]:
    """One-sigma uncertainties of the stored parameters from the covariance of [Y, X, d, a, b, λ]."""
    var = np.diag(cov)
    out = {"BeamCenterY": math.sqrt(max(var[0], 0)), "BeamCenterX": math.sqrt(max(var[1], 0)),
           "DetectorDistanceMM": math.sqrt(max(var[2], 0))}
    a, b = p[3], p[4]
    s = math.hypot(a, b)
    if s > 1e-12:
        # tilt = asin(s), rot = atan2(b, a)
        dtilt = np.array([a / s, b / s]) / math.sqrt(max(1 - s * s, 1e-12))
        drot = np.array([-b, a]) / (s * s)
        c2 = cov[3:5, 3:5]
        out["TiltAngleDeg"] = math.degrees(math.sqrt(max(float(dtilt @ c2 @ dtilt), 0)))
        out["TiltRotDeg"] = math.degrees(math.sqrt(max(float(drot @ c2 @ drot), 0)))
    else:
        out["TiltAngleDeg"] = math.degrees(math.sqrt(max(var[3] + var[4], 0)))
        out["TiltRotDeg"] = float("nan")
    if refine_wavelength:
        out["WavelengthA"] = math.sqrt(max(var[5], 0))
    return out

