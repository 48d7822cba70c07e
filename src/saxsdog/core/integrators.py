"""Integrators: an operator plus what a curve means (SPEC §4).

``I`` is the mean (corrected) intensity per bin in counts/pixel, ``A`` the effective
area in pixels, the Poisson error ``√(I·A)/A`` and the standard deviation the spread of
the (corrected) pixel values within the bin.  Empty bins give 0 everywhere, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernels import accumulate
from .operator import BinningOperator

__all__ = ["Curve", "Integrator", "RadialIntegrator", "PhiIntegrator", "SliceIntegrator",
           "integral_parameters"]


@dataclass
class Curve:
    """One integrated curve.

    Attributes
    ----------
    x
        Bin centres (q in nm⁻¹, azimuth in degrees, or the slice q scale).
    intensity
        Mean intensity per bin.
    stddev
        Standard deviation of pixel values per bin (``None`` when not computed).
    poisson
        Poisson error of the mean per bin.
    parameters
        Integral parameters (radial curves only), else an empty dict.
    valid
        Per bin, whether it holds data (some unmasked, non-dummy pixel area); ``None``
        means "where the operator's area is positive".  Outputs that omit empty bins
        (NXcanSAS) use it.
    dummy_pixels
        Pixels of this frame the operator would have used but that were excluded as
        dummies (negative or ``DummyValue``) by ``Corrections.MaskNegative``.
    unit
        Unit of ``intensity`` and ``poisson`` after normalization (``"counts/pixel"``,
        ``"counts/pixel/s"``, ``"1/cm/sr"`` ...).
    subtracted
        The background-subtracted curve (same bins, errors propagated), when the
        calibration has a ``Background``; else ``None``.
    """

    x: np.ndarray
    intensity: np.ndarray
    stddev: np.ndarray | None
    poisson: np.ndarray
    parameters: dict[str, Any]
    valid: np.ndarray | None = None
    dummy_pixels: int = 0
    unit: str = "counts/pixel"
    subtracted: Curve | None = None

    @property
    def has_data(self) -> np.ndarray:
        """Boolean per bin: the bin holds data (see :attr:`valid`)."""
        if self.valid is not None:
            return self.valid
        return np.asarray(self.poisson > 0) | np.asarray(self.intensity != 0)


def integral_parameters(q: np.ndarray, intensity: np.ndarray, q_start: float = 0.0,
                        q_stop: float | None = None) -> dict[str, float | None]:
    """Integral parameters of a curve between ``q_start`` and ``q_stop``.

    ``I0 = ∫I dq``, ``I1 = ∫I q dq``, ``I2 = ∫I q² dq`` (the invariant), summed over the
    bins whose centre lies in ``[q_start, q_stop]`` with the uniform bin width, and the
    correlation length ``π·I1/I2``.

    Parameters
    ----------
    q
        Uniformly spaced bin centres.
    intensity
        Curve values.
    q_start, q_stop
        Range; ``q_stop`` ``None`` or ``<= 0`` means up to the last bin.

    Returns
    -------
    dict
        ``I0``, ``I1``, ``I2``, ``invariant`` (= I2) and ``correlation_length``
        (``None`` when I2 is 0).
    """
    q = np.asarray(q, dtype=np.float64)
    intensity = np.asarray(intensity, dtype=np.float64)
    dq = float(q[1] - q[0]) if q.size > 1 else 0.0
    hi = np.inf if (q_stop is None or q_stop <= 0) else q_stop
    sel = (q >= q_start) & (q <= hi)
    iq = np.where(np.isfinite(intensity[sel]), intensity[sel], 0.0)
    qs = q[sel]
    i0 = float(np.sum(iq) * dq)
    i1 = float(np.sum(iq * qs) * dq)
    i2 = float(np.sum(iq * qs * qs) * dq)
    return {
        "I0": i0,
        "I1": i1,
        "I2": i2,
        "invariant": i2,
        "correlation_length": (float(np.pi * i1 / i2) if i2 != 0 else None),
    }


class Integrator:
    """Apply a :class:`BinningOperator` and turn sums into curves.

    Parameters
    ----------
    operator
        The operator.
    config
        The calibration entry this integrator stands for (a mask or a slice).
    name
        A short name for file suffixes and legends.
    method
        Kernel name (``None``: the fastest available).
    """

    kind = "Radial"

    def __init__(self, operator: BinningOperator, config: dict[str, Any] | None = None,
                 name: str = "", method: str | None = None):
        self.operator = operator
        self.config = dict(config or {})
        self.name = name
        self.method = method

    @property
    def x(self) -> np.ndarray:
        """Bin centres."""
        return self.operator.x

    @property
    def area(self) -> np.ndarray:
        """Effective area of each bin in pixels."""
        return self.operator.area

    @property
    def x_label(self) -> str:
        """Label of the x column."""
        return self.operator.x_label

    def integrate(self, image: np.ndarray) -> np.ndarray:
        """Mean intensity per bin."""
        s1, _ = accumulate(self.operator, image, squares=False, method=self.method)
        mean: np.ndarray = s1 * self.operator.inverse_counts
        return mean

    def integrate_with_errors(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intensity, standard deviation and Poisson error per bin.

        Returns
        -------
        (I, stddev, poisson)
            float64 arrays; 0 in empty bins.
        """
        s1, s2 = accumulate(self.operator, image, squares=True, method=self.method)
        inv = self.operator.inverse_counts
        intensity = s1 * inv
        var = s2 * inv - intensity * intensity
        stddev = np.sqrt(np.maximum(var, 0.0))
        return intensity, stddev, self.poisson_error(intensity)

    def parameters(self, intensity: np.ndarray) -> dict[str, Any]:
        """Classifiers of a curve (none for this kind)."""
        return {}

    def poisson_error(self, intensity: np.ndarray) -> np.ndarray:
        """``√(I·A)/A`` per bin, 0 for empty bins."""
        area = self.operator.area
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(area > 0, np.sqrt(np.maximum(intensity * area, 0.0)) / np.where(area > 0, area, 1.0), 0.0)

    def curve(self, image: np.ndarray, stddev: bool = True) -> Curve:
        """Integrate with errors and classifiers.

        ``stddev=False`` skips the standard deviation (a second pass over the squares),
        which no file format stores: outputs need only I and the Poisson error.
        """
        if stddev:
            intensity, std, poisson = self.integrate_with_errors(image)
        else:
            intensity = self.integrate(image)
            std, poisson = None, self.poisson_error(intensity)
        return Curve(self.x, intensity, std, poisson, self.parameters(intensity),
                     valid=self.operator.area > 0)


class RadialIntegrator(Integrator):
    """Azimuthal average versus q, with integral parameters in [qStart, qStop]."""

    kind = "Radial"

    def parameters(self, intensity: np.ndarray) -> dict[str, Any]:
        """Integral parameters (see :func:`integral_parameters`)."""
        return integral_parameters(self.x, intensity, float(self.config.get("qStart", 0.0)),
                                   self.config.get("qStop"))


class PhiIntegrator(Integrator):
    """Intensity versus azimuth inside [qStart, qStop] (Phi-mode)."""

    kind = "Phi"


class SliceIntegrator(Integrator):
    """A GISAXS horizontal or vertical slice."""

    kind = "Slice"
