"""The oversampled sparse integration operator (SPEC §4).

Every pixel is split into ``ov × ov`` sub-pixels; each sub-pixel gets the label of the
bin it falls into (a radial q bin, an azimuth bin, or a slice column/row).  The pixel's
weight in a bin is the number of its sub-pixels there.  Storing these *integer* counts
(rather than floating-point fractions) keeps the operator exact: a constant image gives
an exactly constant curve and the total intensity is conserved to rounding of the sums.

Layout (pixel-major, the order in which an image is streamed from memory)::

    entries_per_pixel[j]   number of bins pixel j contributes to (0: masked / unused)
    bins[k], counts[k]     the k-th (bin, sub-pixel count) pair, pixels in order

A bin's intensity is ``I_b = Σ_j n_bj c_j / Σ_j n_bj`` with ``c_j`` the (optionally
polarization-corrected) pixel value: the mean in counts per pixel.  The effective area is
``A_b = Σ_j n_bj / ov²`` pixels.

The operator holds only the geometry of the binning (and, for calibrations of version 1,
the polarization factor in ``correction``).  Flat field, solid angle, polarization and
dark of :class:`~saxsdog.core.corrections.PixelCorrections` are applied by the
integrator, which folds ``correction`` into its own per-pixel factor, so one cached
operator serves every set of corrections.

Pure NumPy: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .geometry import Geometry

#: One block's entries: pixel indices, bin indices and sub-pixel counts.
_Part = tuple[np.ndarray, np.ndarray, np.ndarray]
#: ``label_fn(q, dx, dy)`` → an integer label (bin) per sub-pixel, negative for none.
_LabelFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

__all__ = [
    "BinningOperator",
    "build_radial_operator",
    "build_phi_operator",
    "build_slice_operator",
    "polarization_factor",
    "radial_bins",
    "OPERATOR_FORMAT_VERSION",
]

#: Bumped whenever the build algorithm changes, so cached operators are rebuilt.
OPERATOR_FORMAT_VERSION = 1

#: Sub-pixels processed per block while building (bounds memory for large detectors).
_BLOCK_SUBPIXELS = 4_000_000


@dataclass
class BinningOperator:
    """A sparse, pixel-major integration operator.

    Attributes
    ----------
    shape
        Image shape ``(rows, cols)`` the operator applies to.
    n_bins
        Number of output bins.
    entries_per_pixel
        ``uint8`` array of length ``rows*cols``.
    bins
        Bin index of each entry (``uint16`` when it fits, else ``int32``).
    counts
        Sub-pixel count of each entry (``uint8``).
    subpixels
        Sub-pixels per pixel (``ov²``).
    x
        Bin centres (q in nm⁻¹, azimuth in degrees, or the slice's q scale).
    correction
        Optional per-pixel multiplicative correction (e.g. 1/polarization), float64.
    kind
        ``"Radial"``, ``"Phi"`` or ``"Slice"``.
    x_label
        Label of the x column.
    """

    shape: tuple[int, int]
    n_bins: int
    entries_per_pixel: np.ndarray
    bins: np.ndarray
    counts: np.ndarray
    subpixels: int
    x: np.ndarray
    correction: np.ndarray | None = None
    kind: str = "Radial"
    x_label: str = "Scattering Vector  q [$nm^{-1}$]"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_pix = self.shape[0] * self.shape[1]
        if self.entries_per_pixel.shape != (n_pix,):
            raise ValueError("entries_per_pixel does not match the image shape")
        if self.bins.shape != self.counts.shape:
            raise ValueError("bins and counts differ in length")
        if int(self.entries_per_pixel.sum(dtype=np.int64)) != self.bins.size:
            raise ValueError("entries_per_pixel does not add up to the number of entries")

    @cached_property
    def bin_counts(self) -> np.ndarray:
        """Total sub-pixel count per bin (float64)."""
        return np.bincount(self.bins, weights=self.counts, minlength=self.n_bins).astype(np.float64)

    @cached_property
    def area(self) -> np.ndarray:
        """Effective area per bin, in pixels."""
        return self.bin_counts / self.subpixels

    @cached_property
    def inverse_counts(self) -> np.ndarray:
        """``1 / bin_counts`` with 0 for empty bins."""
        with np.errstate(divide="ignore"):
            inv = np.where(self.bin_counts > 0, 1.0 / self.bin_counts, 0.0)
        return inv

    @cached_property
    def entry_pixels(self) -> np.ndarray:
        """Pixel index of each entry (int32), for the sparse-matrix view."""
        return np.repeat(np.arange(self.entries_per_pixel.size, dtype=np.int32),
                         self.entries_per_pixel.astype(np.int64))

    @property
    def nbytes(self) -> int:
        """Memory held by the operator arrays."""
        n = self.entries_per_pixel.nbytes + self.bins.nbytes + self.counts.nbytes + self.x.nbytes
        return n + (self.correction.nbytes if self.correction is not None else 0)

    def to_csr(self, squared_correction: bool = False) -> Any:
        """The operator as a ``scipy.sparse.csr_matrix`` of shape ``(n_bins, pixels)``.

        Row ``b`` holds ``n_bj / Σ_j n_bj`` times the pixel correction (squared when
        ``squared_correction``), so ``I = M @ image.ravel()``.  This is the reference
        implementation the fast kernels are tested against.
        """
        import scipy.sparse as sp

        weights = self.counts.astype(np.float64) * self.inverse_counts[self.bins]
        if self.correction is not None:
            corr = self.correction[self.entry_pixels]
            weights = weights * (corr * corr if squared_correction else corr)
        n_pix = self.shape[0] * self.shape[1]
        m = sp.coo_matrix((weights, (self.bins.astype(np.int64), self.entry_pixels)),
                          shape=(self.n_bins, n_pix))
        return m.tocsr()


# -- shared building blocks ----------------------------------------------------------

def _aggregate_block(labels: np.ndarray, ov: int, first_pixel: int, n_cols: int,
                     valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn sub-pixel labels of a block of rows into per-pixel (bin, count) entries.

    Parameters
    ----------
    labels
        Integer labels of shape ``(rows_in_block*ov, n_cols*ov)``; negative = not counted.
    ov
        Oversampling.
    first_pixel
        Flat index of the block's first pixel.
    n_cols
        Detector columns.
    valid
        Flat boolean validity of the block's pixels, or ``None`` for all valid.

    Returns
    -------
    (pixel, bin, count)
        Entry arrays, ordered by pixel then bin.
    """
    nr = labels.shape[0] // ov
    s = ov * ov
    per_pixel = labels.reshape(nr, ov, n_cols, ov).transpose(0, 2, 1, 3).reshape(nr * n_cols, s)
    if valid is not None:
        per_pixel = np.where(valid[:, None], per_pixel, -1)
    if s > 1:
        per_pixel = np.sort(per_pixel, axis=1)  # negatives first, then ascending bins
    flat = per_pixel.ravel()
    is_valid = flat >= 0
    start = is_valid.copy()
    if s > 1:
        same_as_prev = np.empty_like(start)
        same_as_prev[0] = False
        same_as_prev[1:] = flat[1:] == flat[:-1]
        same_as_prev[::s] = False  # a new pixel always starts a new run
        start &= ~same_as_prev
    starts = np.flatnonzero(start)
    if starts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    # Valid labels are contiguous at the end of each sorted pixel row, so a run ends at
    # the next run's start or at the end of its pixel.
    nxt = np.empty_like(starts)
    nxt[:-1] = starts[1:]
    nxt[-1] = flat.size
    pixel_end = (starts // s + 1) * s
    counts = np.minimum(nxt, pixel_end) - starts
    return starts // s + first_pixel, flat[starts].astype(np.int64), counts


def _assemble(shape: tuple[int, int], n_bins: int, parts: list[_Part], subpixels: int, x: np.ndarray,
              kind: str, x_label: str, correction: np.ndarray | None, meta: dict[str, Any]) -> BinningOperator:
    n_pix = shape[0] * shape[1]
    if parts:
        pix = np.concatenate([p[0] for p in parts])
        bins = np.concatenate([p[1] for p in parts])
        counts = np.concatenate([p[2] for p in parts])
    else:
        pix = bins = counts = np.zeros(0, dtype=np.int64)
    per_pixel = np.bincount(pix, minlength=n_pix)
    if per_pixel.size and per_pixel.max() > 255:
        raise ValueError("too many bins per pixel (oversampling too large)")
    bin_dtype = np.uint16 if n_bins <= np.iinfo(np.uint16).max + 1 else np.int32
    return BinningOperator(
        shape=shape,
        n_bins=int(n_bins),
        entries_per_pixel=per_pixel.astype(np.uint8),
        bins=bins.astype(bin_dtype),
        counts=counts.astype(np.uint8),
        subpixels=subpixels,
        x=np.asarray(x, dtype=np.float64),
        correction=correction,
        kind=kind,
        x_label=x_label,
        meta=meta,
    )


def _row_blocks(geometry: Geometry, ov: int) -> Iterator[slice]:
    nrows, ncols = geometry.shape
    step = max(1, _BLOCK_SUBPIXELS // max(1, ncols * ov * ov))
    for r0 in range(0, nrows, step):
        yield slice(r0, min(nrows, r0 + step))


def _label_subpixels(geometry: Geometry, valid_mask: np.ndarray | None, ov: int,
                     label_fn: _LabelFn) -> list[_Part]:
    """Label every sub-pixel block by block and aggregate per pixel.

    ``label_fn(q, dx, dy)`` gets q (nm⁻¹) and the offsets from the beam centre (mm) of a
    block's sub-pixels and returns integer labels (negative: not counted).
    """
    valid = _check_mask(valid_mask, geometry.shape)
    _, col_coords = geometry.pixel_centers(ov)
    ncols = geometry.shape[1]
    parts: list[_Part] = []
    for rows in _row_blocks(geometry, ov):
        row_coords, _ = geometry.pixel_centers(ov, rows)
        dx, dy = geometry._offsets_mm(row_coords[:, None], col_coords[None, :])
        q = geometry.q_factor * np.sqrt(geometry.sin2_theta_half(dx, dy))
        first = rows.start * ncols
        block_valid = None if valid is None else valid[first: rows.stop * ncols]
        parts.append(_aggregate_block(label_fn(q, dx, dy), ov, first, ncols, block_valid))
    return parts


def _check_mask(valid_mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if valid_mask is None:
        return None
    valid_mask = np.asarray(valid_mask, dtype=bool)
    if valid_mask.shape != tuple(shape):
        raise ValueError(f"mask shape {valid_mask.shape} differs from the image shape {tuple(shape)}")
    return valid_mask.ravel()


def polarization_factor(geometry: Geometry, fraction: float, angle_deg: float) -> np.ndarray:
    """Polarization factor P per pixel (the original SAXSDOG manual, §5.4).

    ``P = F (1 − cos²(φ − A) sin²2θ) + (1 − F)(1 − sin²(φ − A) sin²2θ)`` where φ is the
    azimuth measured clockwise from the horizontal axis as the image is displayed (the
    original's convention), ``A`` the angle of the polarization plane and ``F`` the
    fraction polarized in that plane.  Measured intensities are divided by ``P``.
    """
    tth = geometry.two_theta(1)
    phi_cw = -geometry.azimuth(1)
    s2 = np.sin(tth) ** 2
    a = phi_cw - np.radians(angle_deg)
    factor: np.ndarray = fraction * (1.0 - np.cos(a) ** 2 * s2) + (1.0 - fraction) * (1.0 - np.sin(a) ** 2 * s2)
    return factor


def radial_bins(geometry: Geometry, pixels_per_bin: float) -> tuple[int, float]:
    """Number of radial bins and their width in q.

    Bins are uniform in q from 0; their width corresponds on average to
    ``pixels_per_bin`` detector pixels: ``dq = q_max · pixels_per_bin / r_max``, with
    ``r_max`` the largest beam-centre-to-corner distance in pixels (as the original).
    """
    if not pixels_per_bin > 0:
        raise ValueError("pixels_per_bin must be positive")
    r_max = geometry.max_radius_px()
    q_max = geometry.max_q()
    n_bins = int(np.floor(r_max / pixels_per_bin)) + 1
    return n_bins, q_max * pixels_per_bin / r_max


# -- the three operators -------------------------------------------------------------

def build_radial_operator(geometry: Geometry, valid_mask: np.ndarray | None = None,
                          oversampling: int = 3, pixels_per_bin: float = 1.0,
                          polarization: tuple[float, float] | None = None) -> BinningOperator:
    """Build the radial (azimuthal-average) operator, bins uniform in q.

    Parameters
    ----------
    geometry
        Detector geometry.
    valid_mask
        Boolean array of the image shape, ``True`` where a pixel is used; ``None``: all.
    oversampling
        Sub-pixels per pixel edge.
    pixels_per_bin
        Bin width in (average) detector pixels.
    polarization
        ``(fraction, angle_deg)`` to fold the polarization correction in, or ``None``.

    Returns
    -------
    BinningOperator
        With ``x`` the bin centres in nm⁻¹.
    """
    ov = int(oversampling)
    if not 1 <= ov <= 15:
        raise ValueError("oversampling must be between 1 and 15")
    n_bins, dq = radial_bins(geometry, pixels_per_bin)

    def labels(q: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return np.minimum((q / dq).astype(np.int64), n_bins - 1)

    parts = _label_subpixels(geometry, valid_mask, ov, labels)
    correction = None
    if polarization is not None:
        correction = 1.0 / polarization_factor(geometry, *polarization).ravel()
    x = (np.arange(n_bins) + 0.5) * dq
    return _assemble(geometry.shape, n_bins, parts, ov * ov, x, "Radial",
                     "Scattering Vector  q [$nm^{-1}$]", correction, {"dq": dq})


def build_phi_operator(geometry: Geometry, valid_mask: np.ndarray | None = None,
                       oversampling: int = 3, q_range: tuple[float, float] = (0.0, np.inf),
                       n_bins: int = 360,
                       polarization: tuple[float, float] | None = None) -> BinningOperator:
    """Build the Phi-mode operator: intensity versus azimuth within ``q_range``.

    Azimuth bins cover [−180°, 180°) uniformly, measured counter-clockwise from the
    horizontal axis (pointing right) as the image is displayed; only sub-pixels with
    ``q_start <= q < q_stop`` count.
    """
    ov = int(oversampling)
    if not 1 <= ov <= 15:
        raise ValueError("oversampling must be between 1 and 15")
    q_start, q_stop = q_range

    def labels(q: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        psi = np.degrees(np.arctan2(dy, dx))
        lab: np.ndarray = np.floor((psi + 180.0) / 360.0 * n_bins).astype(np.int64) % n_bins
        lab[(q < q_start) | (q >= q_stop)] = -1
        return lab

    parts = _label_subpixels(geometry, valid_mask, ov, labels)
    correction = None
    if polarization is not None:
        correction = 1.0 / polarization_factor(geometry, *polarization).ravel()
    x = -180.0 + (np.arange(n_bins) + 0.5) * 360.0 / n_bins
    return _assemble(geometry.shape, n_bins, parts, ov * ov, x, "Phi", "Azimuth [deg]",
                     correction, {"q_range": [q_start, q_stop]})


def slice_band(shape: tuple[int, int], direction: str, position: int, margin: int) -> tuple[int, int]:
    """Rows (direction ``x``) or columns (``y``) a slice averages over, as ``[start, stop)``.

    Follows the original: for an ``x`` slice ``CutPosition`` counts rows from the bottom
    edge (FIT2D Y), the band is rows ``rows−pos−margin … rows−pos+margin`` from the top;
    for a ``y`` slice it is columns ``pos−1−margin … pos−1+margin``.
    """
    nrows, ncols = shape
    if direction == "x":
        lo, hi = nrows - position - margin, nrows - position + margin + 1
        limit = nrows
    elif direction == "y":
        lo, hi = position - 1 - margin, position + margin
        limit = ncols
    else:
        raise ValueError(f"unknown slice direction {direction!r} (expected 'x' or 'y')")
    lo, hi = max(0, lo), min(limit, hi)
    if lo >= hi:
        raise ValueError(f"slice at {position}±{margin} lies outside the detector")
    return lo, hi


def slice_q_scale(geometry: Geometry, direction: str, plane: str, incident_angle_deg: float) -> np.ndarray:
    """q scale of a GISAXS slice along its direction (one value per row/column).

    In the detector frame without Ewald-sphere correction (the SAXSDOG paper, §4.3): ``InPlane``
    gives ``q_h = 4π/λ sin(2θ_f/2)`` from the horizontal exit angle (signed), ``Vertical``
    gives ``q_v = 2π/λ (sin α_f + sin α_i)`` with α_f the vertical exit angle (positive
    upwards).  ``direction`` says which detector axis runs along the slice; ``plane``
    whether that axis is parallel to the sample surface (InPlane) or normal to it.
    """
    nrows, ncols = geometry.shape
    y_c, x_c = geometry.beam_center
    px_v, px_h = geometry.pixel_size_um
    d = geometry.distance_mm
    k = 2.0 * np.pi / (geometry.wavelength_A * 0.1)
    if direction == "x":  # along columns
        offsets_mm = (np.arange(ncols) + 0.5 - x_c) * px_h * 1e-3
    elif direction == "y":  # along rows, upward positive
        offsets_mm = ((nrows - (np.arange(nrows) + 0.5)) - y_c) * px_v * 1e-3
    else:
        raise ValueError(f"unknown slice direction {direction!r} (expected 'x' or 'y')")
    angle = np.arctan(offsets_mm / d)
    q: np.ndarray
    if plane == "InPlane":
        q = 2.0 * k * np.sin(angle / 2.0)
        return q
    if plane == "Vertical":
        q = k * (np.sin(angle) + np.sin(np.radians(incident_angle_deg)))
        return q
    raise ValueError(f"unknown slice plane {plane!r} (expected 'InPlane' or 'Vertical')")


def build_slice_operator(geometry: Geometry, valid_mask: np.ndarray | None, direction: str,
                         plane: str, position: int, margin: int,
                         incident_angle_deg: float = 0.0) -> BinningOperator:
    """Build a GISAXS slice operator: the mean over a band of rows (or columns).

    Parameters
    ----------
    geometry
        Detector geometry (for the q scale).
    valid_mask
        Boolean validity map, or ``None`` for no mask (``MaskRef = -1``).
    direction
        ``"x"``: a horizontal band, one bin per column; ``"y"``: vertical, one per row.
    plane
        ``"InPlane"`` or ``"Vertical"`` (q scale, see :func:`slice_q_scale`).
    position, margin
        Band centre and half-width in pixels (see :func:`slice_band`).
    incident_angle_deg
        Incidence angle for the vertical q scale.
    """
    nrows, ncols = geometry.shape
    valid = _check_mask(valid_mask, geometry.shape)
    lo, hi = slice_band(geometry.shape, direction, position, margin)
    labels = np.full(geometry.shape, -1, dtype=np.int64)
    if direction == "x":
        labels[lo:hi, :] = np.arange(ncols)[None, :]
        n_bins = ncols
    else:
        labels[:, lo:hi] = np.arange(nrows)[:, None]
        n_bins = nrows
    parts = [_aggregate_block(labels, 1, 0, ncols, valid)]
    x = slice_q_scale(geometry, direction, plane, incident_angle_deg)
    label = ("vertical scattering vector $q_{v}$ [$nm^{-1}$]" if plane == "Vertical"
             else "horizontal scattering vector $q_{h}$ [$nm^{-1}$]")
    return _assemble(geometry.shape, n_bins, parts, 1, x, "Slice", label, None,
                     {"band": [lo, hi], "direction": direction, "plane": plane})
