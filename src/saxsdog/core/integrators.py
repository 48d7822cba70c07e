"""Integrators: an operator plus what a curve means (SPEC §4).

``I`` is the mean (corrected) intensity per bin in counts/pixel, ``A`` the effective
area in pixels and the standard deviation the spread of the (corrected) pixel values
within the bin.  Empty bins give 0 everywhere, never NaN.

Without :class:`~saxsdog.core.corrections.PixelCorrections` an integrator behaves as
before corrections existed (the operator's own polarization factor, the error
``√(I·A)/A``).  With them, the flat field, solid angle, polarization and dark are
applied per pixel, dummy pixels are excluded per frame and the error follows the chosen
model; the definitions (and how the bin mean differs from pyFAI's) are in
:mod:`saxsdog.core.corrections`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .corrections import PixelCorrections, check_frame_image, pixel_factor
from .geometry import Geometry
from .kernels import (accumulate, accumulate_corrected, accumulate_spread, default_method, flat_image, pack_factor,
                      root_of_positive)
from .operator import BinningOperator

__all__ = ["Curve", "Integrator", "RadialIntegrator", "PhiIntegrator", "SliceIntegrator",
           "CakeIntegrator", "IntegralParameters", "integral_parameters"]


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
    rejected_pixels
        With ``Corrections.SigmaClip``: the pixel entries of this frame the clipping
        rejected (zingers, hot pixels; :attr:`saxsdog.core.sigma_clip.ClipResult.rejected`);
        ``None`` without clipping.
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
    rejected_pixels: int | None = None

    @property
    def has_data(self) -> np.ndarray:
        """Boolean per bin: the bin holds data (see :attr:`valid`)."""
        if self.valid is not None:
            return self.valid
        holds: np.ndarray = np.asarray(self.poisson > 0) | np.asarray(self.intensity != 0)
        return holds


def integral_parameters(q: np.ndarray, intensity: np.ndarray, q_start: float = 0.0,
                        q_stop: float | None = None, edges: np.ndarray | None = None) -> dict[str, float | None]:
    """Integral parameters of a curve between ``q_start`` and ``q_stop``.

    ``I0 = ∫I dq``, ``I1 = ∫I q dq``, ``I2 = ∫I q² dq`` (the invariant), summed over the
    bins whose centre lies in ``[q_start, q_stop]``, and the correlation length ``π·I1/I2``.
    Without ``edges`` the bins are taken as uniform (width ``q[1] − q[0]``, midpoint rule,
    as always); with ``edges`` (non-uniform bins, e.g. log bins) each bin's intensity is
    integrated exactly over its own edges: ``∫ q^n dq = (e₁^(n+1) − e₀^(n+1))/(n+1)``.

    Parameters
    ----------
    q
        Bin centres (nm⁻¹).
    intensity
        Curve values.
    q_start, q_stop
        Range; ``q_stop`` ``None`` or ``<= 0`` means up to the last bin.
    edges
        ``len(q) + 1`` bin edges in nm⁻¹, or ``None`` for uniform bins.

    Returns
    -------
    dict
        ``I0``, ``I1``, ``I2``, ``invariant`` (= I2) and ``correlation_length``
        (``None`` when I2 is 0).
    """
    return IntegralParameters(q, q_start, q_stop, edges)(intensity)


class IntegralParameters:
    """:func:`integral_parameters` of one q axis and range, prepared once for many curves.

    The bins in range, their q (or their edges' powers) are found once; a curve then costs
    three sums.  The values are the function's to the last bit: the same products summed
    in the same order.
    """

    def __init__(self, q: np.ndarray, q_start: float = 0.0, q_stop: float | None = None,
                 edges: np.ndarray | None = None):
        q = np.asarray(q, dtype=np.float64)
        hi = np.inf if (q_stop is None or q_stop <= 0) else q_stop
        sel = (q >= q_start) & (q <= hi)
        self.size = q.size
        where = np.flatnonzero(sel)
        # a range of bins (sorted q: always) is a slice, a view of the curve; else an index array
        self._bins: slice | np.ndarray = where
        if where.size == 0:
            self._bins = slice(0, 0)
        elif where[-1] - where[0] + 1 == where.size:
            self._bins = slice(int(where[0]), int(where[-1]) + 1)
        self._uniform = edges is None
        if edges is None:
            self._dq = float(q[1] - q[0]) if q.size > 1 else 0.0
            self._q = q[sel]
        else:
            e = np.asarray(edges, dtype=np.float64)
            if e.shape != (q.size + 1,):
                raise ValueError(f"{e.size} edges for {q.size} bins (expected {q.size + 1})")
            e0, e1 = e[:-1][sel], e[1:][sel]
            self._widths = (e1 - e0, e1 * e1 - e0 * e0, e1 ** 3 - e0 ** 3)

    def __call__(self, intensity: np.ndarray) -> dict[str, float | None]:
        """The parameters of one curve (see :func:`integral_parameters`)."""
        intensity = np.asarray(intensity, dtype=np.float64)
        if intensity.shape != (self.size,):
            raise ValueError(f"a curve of {intensity.size} bins for an axis of {self.size}")
        iq = intensity[self._bins]
        if not np.isfinite(iq).all():
            iq = np.where(np.isfinite(iq), iq, 0.0)
        # (the arrays' own sum(): np.sum's reduction without its Python wrapper, the same bits)
        if self._uniform:
            dq, qs = self._dq, self._q
            iq_q = iq * qs
            i0 = float(iq.sum() * dq)
            i1 = float(iq_q.sum() * dq)
            i2 = float((iq_q * qs).sum() * dq)
        else:
            w0, w1, w2 = self._widths
            i0 = float((iq * w0).sum())
            i1 = float((iq * w1).sum() / 2.0)
            i2 = float((iq * w2).sum() / 3.0)
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
    corrections
        Per-pixel corrections, dummy pixels and error model; ``None`` for the behaviour
        before corrections existed (the operator's own correction, the legacy error).
    geometry
        The detector geometry (needed for solid angle and polarization corrections).

    Raises
    ------
    ValueError
        A dark or flat that does not fit the detector, a flat with zeros or negatives
        where the operator uses pixels, corrections needing a geometry without one.
    """

    kind = "Radial"

    def __init__(self, operator: BinningOperator, config: dict[str, Any] | None = None,
                 name: str = "", method: str | None = None, *,
                 corrections: PixelCorrections | None = None, geometry: Geometry | None = None,
                 factor_store: Any = None):
        self.operator = operator
        self.config = dict(config or {})
        self.name = name
        self.method = method
        self.corrections = corrections
        self.geometry = geometry
        #: Per-pixel factor g (flat float64) or None; the dark (flat float64) or None;
        #: the dark's constant bin sums Σ n g d.
        self._factor: np.ndarray | None = None
        self._packed_factor: np.ndarray | None = None
        self._dark: np.ndarray | None = None
        self._dark_sums: np.ndarray | None = None
        if corrections is not None:
            self._prepare(corrections, factor_store)

    def _prepare(self, corrections: PixelCorrections, factor_store: Any = None) -> None:
        """Fold the per-pixel corrections into one factor and the dark into bin sums (once).

        ``factor_store`` (``load() -> (factor, packed) | None``, ``save(factor, packed)``)
        keeps the two factor arrays between runs (the calibration's operator cache).
        """
        op = self.operator
        used = op.entries_per_pixel > 0
        stored = factor_store.load() if factor_store is not None else None
        if stored is not None:
            self._factor, self._packed_factor = stored
        else:
            self._factor = pixel_factor(corrections, op.shape, self.geometry, base=op.correction, used=used)
            # the factor as the numba kernel streams it (used pixels only, in stream order)
            self._packed_factor = pack_factor(op, self._factor) if self.method in (None, "numba") else None
            if factor_store is not None:
                factor_store.save(self._factor, self._packed_factor)
        if corrections.dark is not None:
            dark = check_frame_image("DarkFile", corrections.dark, op.shape)
            if not np.isfinite(dark[used]).all():
                raise ValueError("DarkFile: the dark holds values that are not finite where pixels are used")
            self._dark = dark
            self._dark_sums = accumulate_corrected(op, dark, factor=self._factor, method=self.method).signal
        if corrections.sigma_clip is not None and self.method in (None, "numba"):
            # factor and dark packed once for the clip kernel's stream; the module as
            # `from .sigma_clip import` finds it (sys.modules), not the package's attribute
            sigma_clip = importlib.import_module(".sigma_clip", __package__)
            pack = getattr(sigma_clip, "pack_corrections", None)
            self._packed_clip = pack(op, self._factor, self._dark, operator_correction=False) if pack else None

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
        """Mean (corrected) intensity per bin."""
        if self.corrections is not None:
            return self._corrected(image, stddev=False, error=False)[0]
        s1, _ = accumulate(self.operator, image, squares=False, method=self.method)
        mean: np.ndarray = s1 * self.operator.inverse_counts
        return mean

    def integrate_with_errors(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intensity, standard deviation and Poisson error per bin.

        Returns
        -------
        (I, stddev, poisson)
            float64 arrays; 0 in empty bins.  With corrections the third is the error of
            the chosen model.
        """
        if self.corrections is not None:
            intensity, std, err, _, _ = self._corrected(image, stddev=True)
            assert std is not None
            return intensity, std, err
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
        """``√(I·A)/A`` per bin, 0 for empty bins (the legacy error model).

        The same bytes as :meth:`_legacy_error` with the operator's area, from arrays
        computed once per integrator (three array passes a frame instead of eight).
        """
        area, safe_area, empty = self._legacy_area
        with np.errstate(invalid="ignore"):
            err: np.ndarray = intensity * area
        np.maximum(err, 0.0, out=err)
        np.sqrt(err, out=err)
        err /= safe_area
        err[empty] = 0.0
        return err

    @cached_property
    def _legacy_area(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The operator's area, the area with 1 for empty bins, and the empty bins' indices."""
        area = self.operator.area
        return area, np.where(area > 0, area, 1.0), np.flatnonzero(~(area > 0))

    @cached_property
    def _used_pixels(self) -> np.ndarray:
        """Boolean per pixel (flat): the operator uses it (for the dummy count of clipped frames)."""
        used: np.ndarray = self.operator.entries_per_pixel > 0
        return used

    @cached_property
    def _has_area(self) -> np.ndarray:
        """Bins with some operator weight (the ``valid`` of curves without dummies)."""
        has: np.ndarray = self.operator.area > 0
        return has

    def curve(self, image: np.ndarray, stddev: bool = True, *, scale: float = 1.0,
              dark_scale: float = 1.0) -> Curve:
        """Integrate with errors and classifiers.

        Parameters
        ----------
        image
            The frame.
        stddev
            ``False`` skips the standard deviation (the squares), which no file format
            stores: outputs need only I and the error.
        scale
            Multiplies intensity, error and standard deviation (the normalization,
            computed by the caller); the classifiers see the scaled curve.
        dark_scale
            Multiplies the dark before it is subtracted (frame over dark exposure time).

        Returns
        -------
        Curve
            With ``valid`` (bins keeping some pixel weight) and ``dummy_pixels`` set.
        """
        rejected: int | None = None
        if self.corrections is None:
            if stddev:
                intensity, std, poisson = self.integrate_with_errors(image)
            else:
                intensity = self.integrate(image)
                std, poisson = None, self.poisson_error(intensity)
            valid, n_dummy = self._has_area.copy(), 0
        elif self.corrections.sigma_clip is not None:
            intensity, std, poisson, valid, n_dummy, rejected = self._clipped(image, stddev, dark_scale)
        else:
            intensity, std, poisson, valid, n_dummy = self._corrected(image, stddev, dark_scale=dark_scale)
        if scale != 1.0:
            intensity = intensity * scale
            poisson = poisson * scale
            std = None if std is None else std * scale
        return Curve(self.x, intensity, std, poisson, self.parameters(intensity), valid=valid,
                     dummy_pixels=n_dummy, rejected_pixels=rejected)

    # -- the corrected paths ---------------------------------------------------------
    def _corrected(self, image: np.ndarray, stddev: bool, error: bool = True,
                   dark_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, int]:
        """Corrected intensity, stddev, error, valid bins and dummy count of one frame.

        One fused pass gives the sums, the Poisson variance sums and the dummies'
        weights; the azimuthal model adds a second pass for the spread around the mean.
        """
        corr = self.corrections
        assert corr is not None
        op = self.operator
        model = corr.error_model if error else ""
        flat = flat_image(op, image)
        dark = self._dark
        # The squares and the spread are not linear in the dark: subtract it per pixel
        # there; otherwise subtract its precomputed bin sums (the fast path).
        inline = dark is not None and (stddev or model == "azimuthal")
        sums = accumulate_corrected(
            op, flat, factor=self._factor, dark_inline=dark if inline else None,
            dark_removed=dark if (dark is not None and not inline and corr.mask_negative) else None,
            dark_scale=dark_scale, squares=stddev, poisson=(model == "poisson"),
            mask_negative=corr.mask_negative, dummy_value=corr.dummy_value, method=self.method,
            packed_factor=self._packed_factor if (self.method or default_method()) == "numba" else None)
        weight, inv = op.bin_counts, op.inverse_counts
        if sums.removed is not None and sums.dummy_pixels:
            weight = op.bin_counts - sums.removed
            with np.errstate(divide="ignore"):
                inv = np.where(weight > 0, 1.0 / np.where(weight > 0, weight, 1.0), 0.0)
        signal = sums.signal
        if dark is not None and not inline:
            assert self._dark_sums is not None
            dark_sums = self._dark_sums
            if sums.removed_dark is not None and sums.dummy_pixels:
                dark_sums = dark_sums - sums.removed_dark
            signal = signal - dark_scale * dark_sums
        intensity = signal * inv
        std = None
        if stddev:
            assert sums.squares is not None
            var = sums.squares * inv - intensity * intensity
            std = np.sqrt(np.maximum(var, 0.0))
        if model == "poisson":
            assert sums.variance is not None
            err = np.sqrt(sums.variance) * inv
        elif model == "azimuthal":
            spread = accumulate_spread(op, flat, intensity, factor=self._factor, dark=dark, dark_scale=dark_scale,
                                       mask_negative=corr.mask_negative, dummy_value=corr.dummy_value,
                                       method=self.method)
            err = np.sqrt(np.maximum(spread, 0.0)) * inv
        elif model == "legacy":
            err = self._legacy_error(intensity, weight / op.subpixels)
        else:
            err = np.zeros_like(intensity)
        return intensity, std, err, weight > 0, sums.dummy_pixels

    def _clipped(self, image: np.ndarray, stddev: bool,
                 dark_scale: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, int, int]:
        """The sigma-clipped robust mean (``saxsdog.core.sigma_clip``) of one frame (with the
        rejected entries' count last)."""
        from .sigma_clip import clip_accumulate

        corr = self.corrections
        assert corr is not None and corr.sigma_clip is not None
        op = self.operator
        flat = flat_image(op, image)
        sigma, cycles = corr.sigma_clip
        dark = self._dark
        packed = getattr(self, "_packed_clip", None)
        extra: dict[str, Any] = {"packed": packed, "dark_scale": dark_scale} if packed is not None else {}
        if dark is not None and dark_scale != 1.0 and packed is None:  # (packed: scaled by the kernel)
            dark = dark * dark_scale
        # self._factor already holds the operator's own correction (pixel_factor's base):
        # clip_accumulate must not multiply it in again (the keyword matters only then)
        once: dict[str, Any] = {"operator_correction": False} if op.correction is not None else {}
        res = clip_accumulate(op, flat, pixel_factor=self._factor, dark=dark,
                              sigma=float(sigma), cycles=int(cycles), error_model=corr.error_model,
                              mask_negative=corr.mask_negative, dummy_value=corr.dummy_value, method=self.method,
                              **once, **extra)
        n_dummy = 0
        if corr.mask_negative:
            with np.errstate(invalid="ignore"):
                bad = flat < 0
                if corr.dummy_value is not None:
                    bad |= flat == corr.dummy_value
            n_dummy = int(np.count_nonzero(bad & self._used_pixels))
        weight = np.asarray(res.weight, dtype=np.float64)
        return (np.asarray(res.intensity, dtype=np.float64), (np.asarray(res.stddev) if stddev else None),
                np.asarray(res.error, dtype=np.float64), weight > 0, n_dummy, int(res.rejected))

    @staticmethod
    def _legacy_error(intensity: np.ndarray, area: np.ndarray) -> np.ndarray:
        """``√(I·A)/A`` per bin, 0 for empty bins (the original's formula)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            err: np.ndarray = np.where(area > 0, np.sqrt(np.maximum(intensity * area, 0.0))
                                       / np.where(area > 0, area, 1.0), 0.0)
        return err


class RadialIntegrator(Integrator):
    """Azimuthal average versus q, with integral parameters in [qStart, qStop]."""

    kind = "Radial"

    def parameters(self, intensity: np.ndarray) -> dict[str, Any]:
        """Integral parameters in q (nm⁻¹) (see :func:`integral_parameters`).

        Bins in another unit, log bins or a radial range integrate over their own edges
        converted to q; today's uniform q bins keep the midpoint rule.
        """
        return self._integral_parameters(intensity)

    @cached_property
    def _integral_parameters(self) -> IntegralParameters:
        """The q axis and range of :meth:`parameters`, prepared once."""
        q, edges = _q_axis(self.operator)
        return IntegralParameters(q, float(self.config.get("qStart", 0.0)), self.config.get("qStop"), edges=edges)


def _q_axis(operator: BinningOperator) -> tuple[np.ndarray, np.ndarray | None]:
    """Bin centres and (unless today's uniform q bins) edges of a radial operator in nm⁻¹.

    Operators in another unit carry their centres and edges converted to q in
    ``meta["q_x"]`` and ``meta["q_edges"]`` (the build knows the geometry).
    """
    if "q_edges" in operator.meta:
        return (np.asarray(operator.meta["q_x"], dtype=np.float64),
                np.asarray(operator.meta["q_edges"], dtype=np.float64))
    edges = operator.meta.get("edges")
    return operator.x, (None if edges is None else np.asarray(edges, dtype=np.float64))


class PhiIntegrator(Integrator):
    """Intensity versus azimuth inside [qStart, qStop] (Phi-mode)."""

    kind = "Phi"


class SliceIntegrator(Integrator):
    """A GISAXS horizontal or vertical slice."""

    kind = "Slice"


class CakeIntegrator(Integrator):
    """A 2-D map I(radial, χ) (a cake): ``M`` azimuth bins × ``R`` radial bins.

    The curve's ``intensity``, ``poisson`` and ``stddev`` are flat arrays of ``M·R`` bins
    (bin ``a·R + r``); :meth:`as_map` reshapes any of them to ``(M, R)``, :attr:`x` holds
    the ``R`` radial centres and :attr:`azimuth` the ``M`` χ centres (degrees, clockwise
    on the image as read, as pyFAI's χ).
    """

    kind = "Cake"

    @property
    def map_shape(self) -> tuple[int, int]:
        """``(azimuth bins, radial bins)``."""
        m, r = self.operator.meta["cake"]
        return int(m), int(r)

    @property
    def azimuth(self) -> np.ndarray:
        """χ centres in degrees."""
        return np.asarray(self.operator.meta["azimuth"], dtype=np.float64)

    @property
    def radial_edges(self) -> np.ndarray:
        """Radial bin edges in the entry's unit."""
        return np.asarray(self.operator.meta["edges"], dtype=np.float64)

    @property
    def azimuth_edges(self) -> np.ndarray:
        """χ bin edges in degrees (a wrap-around sector runs past 180°)."""
        return np.asarray(self.operator.meta["azimuth_edges"], dtype=np.float64)

    @property
    def unit(self) -> str:
        """Unit of the radial axis."""
        return str(self.operator.meta.get("unit", "q_nm^-1"))

    def as_map(self, values: np.ndarray) -> np.ndarray:
        """A flat per-bin array as the ``(M, R)`` map (a view, no copy)."""
        return np.asarray(values).reshape(self.map_shape)

    @cached_property
    def _inverse_area(self) -> np.ndarray:
        area = self.operator.area
        inv: np.ndarray = np.where(area > 0, 1.0 / np.where(area > 0, area, 1.0), 0.0)
        return inv

    def poisson_error(self, intensity: np.ndarray) -> np.ndarray:
        """``√(I·A)/A = √(I/A)`` per bin, 0 for empty bins: the base's values in one pass over
        the map instead of seven (a 1000 × 360 map is 2.9 MB per array)."""
        return root_of_positive(intensity, self._inverse_area)
