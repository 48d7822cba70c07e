"""Per-pixel corrections of a frame and the definition of a corrected bin mean.

The correction sequence (after Pauw, J. Phys.: Condens. Matter 2013, and Pauw et al.,
J. Appl. Cryst. 2017) applied to a raw pixel value ``p_j`` is

    c_j = g_j · (p_j − s·d_j),    g_j = 1 / (f_j · Ω_j · P_j)

with ``d`` the dark image (counts at the dark's own exposure) scaled by ``s`` (the ratio
of exposure times, given per frame), ``f`` the flat field, ``Ω`` the relative solid
angle (:meth:`~saxsdog.core.geometry.Geometry.solid_angle`, pyFAI's convention: 1 at
normal incidence) and ``P`` the polarization factor
(:func:`~saxsdog.core.operator.polarization_factor`).  Every factor is per pixel and
independent of the frame, so ``g`` is computed once per integrator and the dark's
contribution to the bin sums, ``D_b = Σ_j n_bj g_j d_j``, is a constant vector: a frame
still costs one streaming pass over the image.

Bin mean
--------
saxsdog's intensity is the *mean of the corrected pixels*, weighted by the sub-pixel
counts ``n_bj`` of the operator::

    I_b = Σ_j n_bj c_j / Σ_j n_bj = (Σ_j n_bj g_j p_j − s·D_b) / Σ_j n_bj

pyFAI (``integrate1d``) returns the *ratio of sums* ``Σ_j w_bj (p_j − d_j) / Σ_j w_bj
f_j Ω_j P_j`` (``w`` its pixel-splitting fractions), i.e. a mean of the corrected values
weighted by the pixels' sensitivity ``f Ω P``.  Both are unbiased when the expected
dark-subtracted counts follow the corrections within a bin (``E[p−d] = I·fΩP``, the
case the corrections are made for); they then differ only in how the noise is weighted,
and the ratio of sums has the smaller variance when the sensitivity varies strongly
within a bin (by the factor ``mean(w)·mean(1/w)`` to first order).  They differ
systematically by the weighted covariance of ``c`` and ``fΩP`` within the bin,
``I_ratio − I_mean = cov(fΩP, c) / mean(fΩP)``: when the corrections do not describe the
detector (a wrong flat field applied to a real image), when the scattering is
anisotropic along a ring whose polarization or solid angle varies (strong tilts, wide
angles), or at a few counts per pixel.  For smooth corrections varying by a few
per cent within a ring the difference is second order (of order 1e-4).  The mean of
corrected pixels is kept because it is what calibrations of version 1 computed (with
polarization): their intensities stay byte-identical.

Conventions
-----------
saxsdog's polarization ``Fraction F`` and ``Angle A`` (degrees) correspond to pyFAI's
``polarization_factor = 2F − 1`` and ``axis_offset = −A`` (in radians).  Checked
numerically: pyFAI's ``polarization()`` array and saxsdog's factor agree to 3e-8 for an
untilted detector and 2e-7 at the tilt of the example calibration (−0.56°); at large tilts
(15°) they differ by up to 1e-4 because saxsdog (like the original) measures the
azimuth in the detector plane, pyFAI in the laboratory frame.

Error models
------------
``"poisson"``
    Exact propagation of Poisson counting noise (``Var p_j = p_j``, the dark and the
    corrections taken as exact):
    ``Var I_b = Σ_j n_bj² g_j² max(p_j, 0) / (Σ_j n_bj)²``.  Pixels split over several
    bins are counted with their squared share, which the old ``√(I·A)/A`` did not do.
``"azimuthal"``
    The error of the mean estimated from the spread of the corrected values around it,
    as pyFAI's ``error_model="azimuthal"`` (its ``sem``) with weights ``n_bj``:
    ``Var I_b = Σ_j n_bj² (c_j − I_b)² / (Σ_j n_bj)²``.
``"legacy"``
    The original's ``√(I_b·A_b)/A_b`` with ``A_b`` the effective area in pixels,
    byte-identical to saxsdog before corrections existed.

Pure NumPy: no I/O here (the calibration reads the dark and flat files).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Geometry
from .operator import polarization_factor

__all__ = ["ERROR_MODELS", "PixelCorrections", "pixel_factor", "check_frame_image"]

#: The error models a calibration may choose (see the module docstring).
ERROR_MODELS = ("poisson", "azimuthal", "legacy")


@dataclass(frozen=True, eq=False)
class PixelCorrections:
    """Per-pixel corrections an integrator applies to every frame.

    Attributes
    ----------
    flat
        Flat field of the image shape; corrected values are divided by it.  Must be
        finite and positive wherever the operator uses a pixel.
    solid_angle
        Divide by the relative solid angle (pyFAI's ``solidAngleArray``: 1 at normal
        incidence).  Needs the integrator's geometry.
    polarization
        ``(Fraction, Angle)`` in saxsdog's convention (see the module docstring), or
        ``None``.  Needs the integrator's geometry.
    dark
        Dark image of the image shape, in counts at the dark's own exposure; multiplied
        by the frame's ``dark_scale`` and subtracted before the other corrections.
    mask_negative
        Exclude pixels with a negative value in the frame (Pilatus gaps −1, dead −2),
        and those equal to ``dummy_value``, from that frame's bins.
    dummy_value
        A further value marking invalid pixels (only with ``mask_negative``).
    error_model
        ``"poisson"``, ``"azimuthal"`` or ``"legacy"`` (see the module docstring).
    sigma_clip
        ``(Sigma, Cycles)`` for a robust bin mean rejecting outliers, or ``None``.

    Arrays are compared by identity (``eq=False``), so instances stay hashable.
    """

    flat: np.ndarray | None = None
    solid_angle: bool = False
    polarization: tuple[float, float] | None = None
    dark: np.ndarray | None = None
    mask_negative: bool = True
    dummy_value: float | None = None
    error_model: str = "poisson"
    sigma_clip: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        if self.error_model not in ERROR_MODELS:
            raise ValueError(f"ErrorModel {self.error_model!r} is not one of {', '.join(ERROR_MODELS)}")
        for name, arr in (("FlatFile", self.flat), ("DarkFile", self.dark)):
            if arr is not None and np.ndim(arr) != 2:
                raise ValueError(f"{name}: expected a 2-D image, got an array of shape {np.shape(arr)}")
        if self.polarization is not None:
            fraction, angle = self.polarization
            if not (0.0 <= float(fraction) <= 1.0 and np.isfinite(float(angle))):
                raise ValueError(f"PolarizationCorrection: Fraction must lie in [0, 1] and Angle be finite, "
                                 f"got {self.polarization!r}")
        if self.dummy_value is not None and not np.isfinite(float(self.dummy_value)):
            raise ValueError(f"DummyValue must be a finite number, got {self.dummy_value!r}")
        if self.sigma_clip is not None:
            sigma, cycles = self.sigma_clip
            if not (float(sigma) > 0 and int(cycles) >= 1):
                raise ValueError(f"SigmaClip: Sigma must be > 0 and Cycles >= 1, got {self.sigma_clip!r}")

    @property
    def needs_geometry(self) -> bool:
        """Whether the corrections depend on the detector geometry."""
        return self.solid_angle or self.polarization is not None

    @property
    def pixel_factors(self) -> bool:
        """Whether any multiplicative per-pixel factor (flat, Ω, P) is set."""
        return self.flat is not None or self.needs_geometry

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary (for provenance notes and logs)."""
        return {"flat": self.flat is not None, "solid_angle": self.solid_angle,
                "polarization": list(self.polarization) if self.polarization is not None else None,
                "dark": self.dark is not None, "mask_negative": self.mask_negative,
                "dummy_value": self.dummy_value, "error_model": self.error_model,
                "sigma_clip": list(self.sigma_clip) if self.sigma_clip is not None else None}


def check_frame_image(name: str, array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A dark or flat as a flat float64 array, or a ``ValueError`` naming the problem.

    Parameters
    ----------
    name
        The field the array comes from (``"DarkFile"``, ``"FlatFile"``), for the message.
    array
        The image.
    shape
        The detector shape ``(rows, cols)`` it must have.
    """
    array = np.asarray(array)
    if array.shape != tuple(shape):
        raise ValueError(f"{name}: image of shape {array.shape} differs from the detector's {tuple(shape)}")
    if array.dtype.kind not in "iufb":
        raise ValueError(f"{name}: cannot use an image of dtype {array.dtype}")
    flat: np.ndarray = np.ascontiguousarray(array, dtype=np.float64).reshape(-1)
    return flat


def pixel_factor(corrections: PixelCorrections, shape: tuple[int, int], geometry: Geometry | None = None,
                 base: np.ndarray | None = None, used: np.ndarray | None = None) -> np.ndarray | None:
    """The per-pixel factor ``g = base / (flat · Ω · P)`` as a flat float64 array.

    Parameters
    ----------
    corrections
        The corrections.
    shape
        Detector shape.
    geometry
        Needed for the solid angle and the polarization.
    base
        A factor the operator already carries (``BinningOperator.correction``: the
        polarization of operators built with ``polarization=``), multiplied in first so
        that a polarization-only correction gives exactly the operator's bytes.
    used
        Boolean per pixel (flat), the pixels the operator uses; the flat field is
        validated there only.

    Returns
    -------
    numpy.ndarray or None
        ``None`` when there is no factor at all (every ``g_j = 1``).

    Raises
    ------
    ValueError
        A flat of the wrong shape or with values ≤ 0 or not finite where used; a geometry
        missing for solid angle or polarization; polarization given twice.
    """
    if corrections.needs_geometry and geometry is None:
        raise ValueError("SolidAngle and PolarizationCorrection need the detector geometry")
    if geometry is not None and tuple(geometry.shape) != tuple(shape):
        raise ValueError(f"geometry shape {geometry.shape} differs from the operator's {tuple(shape)}")
    if corrections.polarization is not None and base is not None:
        raise ValueError("polarization given twice: the operator already carries a polarization correction "
                         "(build it without polarization= when PixelCorrections.polarization is set)")
    factor: np.ndarray | None = None if base is None else np.asarray(base, dtype=np.float64)
    if corrections.polarization is not None:
        assert geometry is not None
        # 1/P exactly as the operator builder computes it, so the bytes agree.
        factor = 1.0 / polarization_factor(geometry, *corrections.polarization).ravel()
    divisor: np.ndarray | None = None
    if corrections.flat is not None:
        flat = check_frame_image("FlatFile", corrections.flat, shape)
        where = used if used is not None else np.ones(flat.size, dtype=bool)
        bad = where & ~(np.isfinite(flat) & (flat > 0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"FlatFile: {int(bad.sum())} used pixels are zero, negative or not finite "
                             f"(first at row {k // shape[1]}, column {k % shape[1]}: {float(flat[k]):g})")
        divisor = np.where(where, flat, 1.0)
    if corrections.solid_angle:
        assert geometry is not None
        omega = geometry.solid_angle().ravel()
        divisor = omega if divisor is None else divisor * omega
    if divisor is not None:
        factor = 1.0 / divisor if factor is None else factor / divisor
    return factor
