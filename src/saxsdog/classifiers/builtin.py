"""The built-in classifiers (registered on import).

Curve classifiers get a :class:`~saxsdog.core.integrators.Curve` (q in nm⁻¹); only bins that
hold data and have a positive error are used.  Image classifiers get the raw frame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.integrators import integral_parameters
from ..errors import CalibrationError
from .base import Classifier, ClassifierContext, register

__all__ = ["IntegralParameters", "Guinier", "Porod", "RamboTainer", "CorMap", "ImageStats", "Zingers", "ROI",
           "ScanPosition", "CakeROI", "curve_data", "freesas", "header_number"]

_FREESAS_FOR = "the Guinier, RamboTainer and CorMap classifiers"


def freesas(module: str = "freesas") -> Any:
    """Import a freesas module, or raise naming the ``classify`` extra to install."""
    from ..extras import import_optional

    return import_optional(module, "classify", _FREESAS_FOR)


def curve_data(curve: Any, q_range: tuple[float, float] | None = None) -> np.ndarray:
    """``(n, 3)`` array of q, I, error over the bins that hold data (and lie in ``q_range``).

    Computed once per curve for the classifiers that use the whole curve (kept in the
    curve's scratch space while :meth:`ClassifierSet.apply` runs).
    """
    shared = getattr(curve, "_classifier_scratch", None) if q_range is None else None
    if shared is not None and "data" in shared:
        cached: np.ndarray = shared["data"]
        return cached
    q = np.asarray(curve.x, dtype=np.float64)
    intensity = np.asarray(curve.intensity, dtype=np.float64)
    error = np.asarray(curve.poisson, dtype=np.float64)
    keep = np.asarray(curve.has_data, dtype=bool) & (error > 0) & np.isfinite(intensity)
    if q_range is not None:
        keep &= (q >= q_range[0]) & (q <= q_range[1])
    data = np.column_stack((q[keep], intensity[keep], error[keep]))
    if shared is not None:
        shared["data"] = data
    return data


@register
class IntegralParameters(Classifier):
    """I0 = ∫I dq, I1 = ∫I q dq, I2 = ∫I q² dq and the correlation length π·I1/I2 in [qStart, qStop]
    (the mask's fields), as the original computed them.  Always first; keys stay bare."""

    kind = "IntegralParameters"
    description = "integral parameters I0, I1, I2 and the correlation length in the mask's [qStart, qStop]"
    units = {"I0": "I·nm⁻¹", "I1": "I·nm⁻²", "I2": "I·nm⁻³", "invariant": "I·nm⁻³", "correlation_length": "nm"}
    primary = "I0"
    bare_keys = True
    uses_subtracted = False

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        if "I0" in data.parameters:  # the integrator computed them already (the original's numbers)
            return dict(data.parameters)
        if integrator is not None and hasattr(integrator, "parameters"):
            params = integrator.parameters(data.intensity)
            if params:
                return dict(params)
        return integral_parameters(data.x, data.intensity)


def _fit_range(data: np.ndarray, start: int, end: int) -> tuple[float | None, float | None]:
    if start is None or end is None or start < 0 or end <= start or end > len(data):
        return None, None
    return float(data[start, 0]), float(data[end - 1, 0])


def _positive(value: Any) -> bool:
    try:
        return bool(np.isfinite(value) and value > 0)
    except TypeError:
        return False


def _guinier_errors(data: np.ndarray, start: int | None, end: int | None, rg: float,
                    i0: float) -> tuple[float | None, float | None]:
    """Errors of Rg and I(0) from a weighted least-squares fit of ln I = ln I0 − q² Rg²/3
    over ``data[start:end]`` (σ of ln I = σ_I / I: the curve's errors propagated, as freesas
    does); ``(None, None)`` when the region cannot give them."""
    if start is None or end is None or end - start < 3:
        return None, None
    q, intensity, sigma = data[start:end, 0], data[start:end, 1], data[start:end, 2]
    ok = (intensity > 0) & (sigma > 0)
    if ok.sum() < 3:
        return None, None
    x, s = q[ok] ** 2, sigma[ok] / intensity[ok]
    w = 1.0 / s ** 2
    design = np.column_stack([np.ones_like(x), x])
    normal = design.T @ (design * w[:, None])
    try:
        cov = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        return None, None
    sigma_a, sigma_b = float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
    if not rg > 0:
        return None, None
    # Rg = sqrt(−3b): σ_Rg = 3 σ_b / (2 Rg);  I0 = exp(a): σ_I0 = I0 σ_a
    return 3.0 * sigma_b / (2.0 * rg), abs(i0) * sigma_a


@register
class Guinier(Classifier):
    """Radius of gyration and I(0) from freesas' automatic Guinier analysis (``autoRg``), or its
    Guinier peak analysis (``auto_gpa``) with ``"AutoGPA": true``."""

    kind = "Guinier"
    description = "Rg and I(0) from the automatic Guinier fit (freesas autoRg)"
    units = {"Rg": "nm", "Rg_error": "nm", "I0": "I", "I0_error": "I", "q_min": "nm⁻¹", "q_max": "nm⁻¹",
             "points": "", "quality": "", "aggregated": "", "status": ""}
    primary = "Rg"
    options = {"QRange": None, "AutoGPA": False}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        self.range = self.q_range("QRange", None)
        if not isinstance(self.settings["AutoGPA"], bool):
            raise CalibrationError("not a boolean", f"{path}.AutoGPA", self.settings["AutoGPA"], "true or false")
        autorg = freesas("freesas.autorg")
        self._fit = autorg.auto_gpa if self.settings["AutoGPA"] else autorg.autoRg
        # freesas raises these (from its compiled module) when a curve has too few points
        self._insufficient = getattr(autorg, "InsufficientDataError", ValueError)
        self._no_region = getattr(autorg, "NoGuinierRegionError", ValueError)

    def fit(self, data: np.ndarray) -> tuple[Any, str]:
        """freesas' result (or ``None``) and a status."""
        if len(data) < 3:
            return None, "failed: too few points"
        try:
            result = self._fit(data)
        except self._insufficient:
            return None, "failed: too few points"
        except self._no_region:
            return None, "failed: no Guinier region"
        rg = getattr(result, "Rg", None)
        if rg is None or not np.isfinite(rg) or rg <= 0:  # freesas returns Rg = -1 on failure
            return None, "failed: no Guinier region"
        return result, "ok"

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        arr = curve_data(data, self.range)
        result, status = self.fit(arr)
        shared = getattr(data, "_classifier_scratch", None)
        if shared is not None:
            shared["guinier"] = (result, arr)
        if result is None:
            return self.empty(status)
        q_min, q_max = _fit_range(arr, result.start_point, result.end_point)
        rg_error, i0_error = result.sigma_Rg, result.sigma_I0
        if not (_positive(rg_error) and _positive(i0_error)):
            # freesas sometimes reports an error of 0 for a valid Rg (short regions): an error
            # bar of 0 claims certainty, so take them from the weighted Guinier fit of its region
            rg_error, i0_error = _guinier_errors(arr, result.start_point, result.end_point, result.Rg, result.I0)
        return {"Rg": result.Rg, "Rg_error": rg_error, "I0": result.I0, "I0_error": i0_error,
                "q_min": q_min, "q_max": q_max,
                "points": int(result.end_point - result.start_point) if result.end_point is not None else None,
                "quality": result.quality,
                "aggregated": None if result.aggregated is None else float(result.aggregated),
                "status": status}


@register
class RamboTainer(Classifier):
    """Volume of correlation Vc, Qr = Vc²/Rg and the protein mass (Rambo & Tainer 2013, freesas
    ``invariants.calc_Rambo_Tainer``), when the Guinier analysis succeeded."""

    kind = "RamboTainer"
    description = "volume of correlation and mass (Rambo-Tainer) from the Guinier result"
    units = {"Vc": "nm²", "Vc_error": "nm²", "Qr": "nm³", "mass": "kDa", "mass_error": "kDa", "status": ""}
    primary = "mass"
    options = {"QMax": 2.0}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        self.q_max = self.number("QMax", minimum=0.0)
        self._rambo_tainer = freesas("freesas.invariants").calc_Rambo_Tainer  # a function: picklable (Dask)
        self._guinier = Guinier({"Kind": "Guinier"}, context, path)

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        shared = getattr(data, "_classifier_scratch", None)
        if shared is not None and "guinier" in shared:
            result, arr = shared["guinier"]
            status = "ok" if result is not None else "failed: no Guinier result"
        else:
            arr = curve_data(data)
            result, status = self._guinier.fit(arr)
        if result is None:
            return self.empty(status if status.startswith("failed") else "failed: " + status)
        import logging

        logging.getLogger("freesas.invariants").disabled = True  # it logs an error per frame otherwise
        rt = self._rambo_tainer(arr, result, qmax=self.q_max)
        if rt is None:
            return self.empty("failed: Guinier range starts beyond QMax")
        return {"Vc": rt.Vc, "Vc_error": rt.sigma_Vc, "Qr": rt.Qr, "mass": rt.mass, "mass_error": rt.sigma_mass,
                "status": "ok"}


@register
class Porod(Classifier):
    """Power-law exponent and Porod constant over ``QRange``, and the extrapolated invariant.

    A weighted straight line through log I versus log q in ``QRange`` gives the exponent
    (−4 for a sharp interface, −2 for a Gaussian chain); the constant is the mean of
    ``I·q⁴`` there.  The invariant ``Q* = ∫₀^∞ I q² dq`` is the trapezoid over the measured
    bins, plus ``I(q₁)·q₁³/3`` below the first bin (a flat curve; the Guinier law when the
    Guinier classifier ran first and succeeded) and, above the last bin, the integral of the
    fitted power law ``A·q^m`` (only for m < −3: otherwise the tail diverges, and the
    invariant is reported as failed).  The mask's I2 is the truncated integral.
    """

    kind = "Porod"
    description = "Porod exponent and constant in QRange, and the invariant extrapolated to 0 and ∞"
    units = {"exponent": "", "exponent_error": "", "constant": "I·nm⁻⁴", "invariant": "I·nm⁻³",
             "invariant_measured": "I·nm⁻³", "status": ""}
    primary = "exponent"
    options = {"QRange": None}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        q = context.q
        default = None
        if q is not None and q.size > 3:  # the upper third of the curve
            default = [float(q[-1] - (q[-1] - q[0]) / 3.0), float(q[-1])]
        self.range = self.q_range("QRange", default)

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        arr = curve_data(data)
        if len(arr) < 3:
            return self.empty("failed: too few points")
        q, intensity, error = arr[:, 0], arr[:, 1], arr[:, 2]
        lo, hi = self.range if self.range is not None else (q[0], q[-1])
        sel = (q >= lo) & (q <= hi) & (intensity > 0)
        out: dict[str, Any] = self.empty("ok")
        status = "ok"
        if np.count_nonzero(sel) < 3:
            status = "failed: fewer than 3 positive points in QRange"
            slope = amp = None
        else:
            x = np.log(q[sel])
            y = np.log(intensity[sel])
            w = (intensity[sel] / error[sel]) ** 2  # 1/σ² of log I
            sw = w.sum()
            xm = (w * x).sum() / sw
            ym = (w * y).sum() / sw
            sxx = (w * (x - xm) ** 2).sum()
            slope = float((w * (x - xm) * (y - ym)).sum() / sxx)
            resid = y - ym - slope * (x - xm)
            dof = max(int(sel.sum()) - 2, 1)
            chi2 = float((w * resid * resid).sum() / dof)
            out["exponent"] = slope
            out["exponent_error"] = float(np.sqrt(max(chi2, 1.0) / sxx))
            amp = float(np.exp(ym - slope * xm))
            out["constant"] = float(np.mean(intensity[sel] * q[sel] ** 4))
        measured = float(np.trapezoid(intensity * q * q, q))
        out["invariant_measured"] = measured
        low = _low_q_part(q[0], intensity[0], getattr(data, "_classifier_scratch", None))
        if slope is not None and amp is not None and slope < -3.0:
            tail = -amp * q[-1] ** (slope + 3.0) / (slope + 3.0)
            out["invariant"] = measured + low + float(tail)
        elif status == "ok":
            status = "failed: exponent ≥ -3, the invariant's tail diverges"
        out["status"] = status
        return out


def _low_q_part(q1: float, i1: float, shared: dict | None) -> float:
    """∫₀^q₁ I q² dq below the first bin: Guinier's law when it was fitted, else I constant."""
    if shared and shared.get("guinier") and shared["guinier"][0] is not None:
        g = shared["guinier"][0]
        qs = np.linspace(0.0, q1, 65)
        return float(np.trapezoid(g.I0 * np.exp(-(qs * g.Rg) ** 2 / 3.0) * qs * qs, qs))
    return float(i1 * q1 ** 3 / 3.0)


@register
class CorMap(Classifier):
    """Frame similarity by the correlation map test (Franke et al. 2015, freesas ``cormap.gof``).

    Compares the curve with a reference: the ``previous`` frame, the ``first`` frame of the
    run, or a ``background`` curve read from ``File`` (a ``.chi`` file).  ``P`` is freesas'
    probability that the two are the same; ``P_adjusted = min(1, P·m)`` is corrected for
    multiple testing (Bonferroni, as BioXTAS RAW does), with ``m`` the option
    ``Comparisons`` when given, else the number of comparisons made so far in the run.
    ``similar`` is ``P_adjusted ≥ Alpha`` (default 0.01, RAW's default threshold).
    Runs in the coordinator, in the order the frames were taken.
    """

    kind = "CorMap"
    stateful = True
    description = "probability that the frame equals the previous/first/background curve (CorMap, Bonferroni)"
    units = {"P": "", "P_adjusted": "", "C": "", "n": "", "similar": "", "status": ""}
    primary = "P_adjusted"
    options = {"Reference": "previous", "File": None, "QRange": None, "Alpha": 0.01, "Comparisons": None}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        self.reference = self.choice("Reference", ("previous", "first", "background"))
        self.range = self.q_range("QRange", None)
        self.alpha = self.number("Alpha", minimum=0.0, maximum=1.0)
        self.comparisons: int | None = None if self.settings["Comparisons"] is None else \
            int(self.number("Comparisons", minimum=1, integer=True))
        self._gof = freesas("freesas.cormap").gof
        self.background: np.ndarray | None = None
        if self.reference == "background":
            self.background = self._read_background(path)
        self.reset()

    def _read_background(self, path: str) -> np.ndarray:
        from pathlib import Path

        from ..io.chi import read_chi

        name = self.settings["File"]
        if not isinstance(name, str) or not name:
            raise CalibrationError("a background reference needs the background curve", f"{path}.File", name,
                                   "the path of a .chi file")
        p = Path(name)
        if not p.is_absolute() and self.context.base_dir is not None:
            p = Path(self.context.base_dir) / p
        try:
            chi = read_chi(p)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read the background curve: {exc}", f"{path}.File", name,
                                   "a readable .chi file") from None
        return np.column_stack((chi.x, chi.intensity)).astype(np.float64)

    def reset(self) -> None:
        self.first: np.ndarray | None = None
        self.tested = 0

    def select(self, curve: Any) -> tuple[np.ndarray, np.ndarray]:
        """q and I of the bins compared (data, positive error, in QRange)."""
        arr = curve_data(curve, self.range)
        return arr[:, 0], arr[:, 1]

    def compare(self, q: np.ndarray, intensity: np.ndarray, ref_q: np.ndarray, ref_i: np.ndarray,
                m: int | None = None) -> dict[str, Any]:
        """The test of one pair; ``m`` comparisons for the correction (default :attr:`comparisons`)."""
        if ref_q.shape != q.shape or not np.array_equal(ref_q, q):
            common, ia, ib = np.intersect1d(q, ref_q, return_indices=True)
            intensity, ref_i = intensity[ia], ref_i[ib]
        if intensity.size < 3:
            return self.empty("failed: fewer than 3 common bins")
        g = self._gof(np.ascontiguousarray(ref_i), np.ascontiguousarray(intensity))
        tests = m or self.comparisons or 1
        p_adj = min(1.0, float(g.P) * tests)
        return {"P": float(g.P), "P_adjusted": p_adj, "C": int(g.c), "n": int(g.n),
                "similar": bool(p_adj >= self.alpha), "status": "ok"}

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        """Compare with ``data``'s reference; ``metadata["previous"]`` is the previous frame's curve."""
        q, intensity = self.select(data)
        if self.reference == "background":
            assert self.background is not None
            bq, bi = self.background[:, 0], self.background[:, 1]
            ref = (bq, bi)
        elif self.reference == "first":
            if self.first is None:
                self.first = np.column_stack((q, intensity))
                return self.empty("reference: first frame")
            ref = (self.first[:, 0], self.first[:, 1])
        else:
            previous = (metadata or {}).get("previous")
            if previous is None:
                return self.empty("reference: no previous frame")
            ref = self.select(previous)
        self.tested += 1
        return self.compare(q, intensity, ref[0], ref[1], self.comparisons or self.tested)


@register
class ImageStats(Classifier):
    """Total counts, the maximum pixel and its position, and the number of pixels at or above the
    detector's count cutoff (``Cutoff``, else the image header's ``Count_cutoff``): a saturation
    warning.  Negative pixels (detector gaps, dead pixels) are left out."""

    kind = "ImageStats"
    input = "image"
    description = "total counts, maximum pixel and saturated pixels of the raw frame"
    units = {"total": "counts", "max": "counts", "max_row": "pixel", "max_col": "pixel", "saturated": "pixels",
             "cutoff": "counts", "status": ""}
    primary = "max"
    options = {"Cutoff": None}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        self.cutoff = None if self.settings["Cutoff"] is None else self.number("Cutoff", minimum=0)

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        img = np.asarray(data)
        flat = img.reshape(-1)
        positive = flat[flat >= 0] if flat.dtype.kind in "if" and flat.min() < 0 else flat
        idx = int(np.argmax(flat))
        cutoff = self.cutoff if self.cutoff is not None else header_cutoff(metadata)
        saturated = int(np.count_nonzero(flat >= cutoff)) if cutoff is not None else None
        return {"total": float(positive.sum(dtype=np.float64)), "max": float(flat[idx]),
                "max_row": idx // img.shape[1], "max_col": idx % img.shape[1], "saturated": saturated,
                "cutoff": cutoff,
                "status": ("saturated" if saturated else "ok") if cutoff is not None else "ok: no cutoff known"}


def header_cutoff(metadata: Mapping[str, Any] | None) -> float | None:
    """The detector's count cutoff from the image header (Pilatus ``# Count_cutoff 1048500 counts``)."""
    if not metadata:
        return None
    for source in (metadata.get("header") or {}, metadata):
        if not isinstance(source, Mapping):
            continue
        for key in ("Count_cutoff", "count_cutoff", "countrate_correction_count_cutoff"):
            value = source.get(key)
            if value is None:
                continue
            try:
                return float(str(value).split()[0])
            except (ValueError, IndexError):
                continue
    return None


@register
class Zingers(Classifier):
    """Zingers and hot pixels: pixels far above the median of their 3×3 neighbourhood.

    A pixel p counts when ``p − median₃ₓ₃ > Threshold·√(median₃ₓ₃ + 1)`` and ``p ≥ MinCounts``
    (a selective median filter: the median is taken only where ``p`` exceeds its smallest
    neighbour by the same margin, a necessary condition; one compiled pass over the frame,
    a few milliseconds for a Pilatus 1M, with NumPy as the fallback).
    Negative pixels are treated as 0.
    """

    kind = "Zingers"
    input = "image"
    description = "number of zingers / hot pixels (selective 3x3 median filter)"
    units = {"count": "pixels", "status": ""}
    primary = "count"
    options = {"Threshold": 10.0, "MinCounts": 10}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        self.threshold = self.number("Threshold", minimum=0.0)
        self.min_counts = self.number("MinCounts", minimum=0.0)

    def positions(self, image: np.ndarray) -> np.ndarray:
        """``(n, 2)`` row, column of the zingers (a compiled single pass when numba is there)."""
        image = np.asarray(image)
        if _zinger_kernel is not None and image.ndim == 2 and image.dtype.kind in "iuf":
            found = _zinger_kernel(np.ascontiguousarray(image), float(self.threshold), float(self.min_counts))
            return found
        return self.positions_numpy(image)

    def positions_numpy(self, image: np.ndarray) -> np.ndarray:
        """:meth:`positions` in NumPy (without numba)."""
        img = np.maximum(np.asarray(image, dtype=np.float64), 0.0)
        pad = np.pad(img, 1, mode="edge")
        rows, cols = img.shape
        low = None
        for dr in (0, 1, 2):
            for dc in (0, 1, 2):
                if dr == 1 and dc == 1:
                    continue
                v = pad[dr:dr + rows, dc:dc + cols]
                low = v.copy() if low is None else np.minimum(low, v, out=low)
        assert low is not None
        cand = (img >= self.min_counts) & (img - low > self.threshold * np.sqrt(low + 1.0))
        r, c = np.nonzero(cand)
        if r.size == 0:
            return np.empty((0, 2), dtype=np.int64)
        patches = np.stack([pad[r + dr, c + dc] for dr in (0, 1, 2) for dc in (0, 1, 2)], axis=1)
        med = np.median(patches, axis=1)
        p = img[r, c]
        hit = p - med > self.threshold * np.sqrt(med + 1.0)
        return np.column_stack((r[hit], c[hit]))

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        return {"count": int(len(self.positions(data))), "status": "ok"}


try:  # pragma: no branch - numba is a dependency, but stay usable without it
    import numba

    @numba.njit(cache=True, nogil=True)
    def _zinger_kernel(img, threshold, min_counts):  # type: ignore[no-untyped-def]  # pragma: no cover
        rows, cols = img.shape
        found = []
        patch = np.empty(9)
        for r in range(rows):
            for c in range(cols):
                p = max(np.float64(img[r, c]), 0.0)
                if p < min_counts:
                    continue
                low = np.inf  # the smallest neighbour: the median is no smaller (a cheap test first)
                for dr in range(-1, 2):
                    rr = min(max(r + dr, 0), rows - 1)
                    for dc in range(-1, 2):
                        if dr == 0 and dc == 0:
                            continue
                        cc = min(max(c + dc, 0), cols - 1)
                        low = min(low, max(np.float64(img[rr, cc]), 0.0))
                if p - low <= threshold * np.sqrt(low + 1.0):
                    continue
                k = 0
                for dr in range(-1, 2):
                    rr = min(max(r + dr, 0), rows - 1)
                    for dc in range(-1, 2):
                        cc = min(max(c + dc, 0), cols - 1)
                        patch[k] = max(np.float64(img[rr, cc]), 0.0)
                        k += 1
                med = np.sort(patch)[4]
                if p - med > threshold * np.sqrt(med + 1.0):
                    found.append((r, c))
        out = np.empty((len(found), 2), dtype=np.int64)
        for i in range(len(found)):
            out[i, 0] = found[i][0]
            out[i, 1] = found[i][1]
        return out
except ImportError:  # pragma: no cover
    _zinger_kernel = None  # type: ignore[assignment]


@register
class ROI(Classifier):
    """Sum, pixel count, mean and intensity-weighted centroid (row, column) in a region of interest.

    ``Rectangle``: ``[first row, last row, first column, last column]`` (pixels, inclusive, NumPy
    order: row 0 is the first row of the image array); ``Annulus``:
    ``{"Center": [row, column], "Radius": [inner, outer]}`` in pixels (the centre defaults to the
    beam centre); ``QRange``: ``[qmin, qmax]`` nm⁻¹ (an annulus in q).  Exactly one of them.
    Negative pixels (detector gaps) are left out.
    """

    kind = "ROI"
    input = "image"
    description = "sum and centroid in a rectangle or annulus (pixels or q)"
    units = {"sum": "counts", "pixels": "pixels", "mean": "counts/pixel", "centroid_row": "pixel",
             "centroid_col": "pixel"}
    primary = "sum"
    options = {"Rectangle": None, "Annulus": None, "QRange": None}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        given = [k for k in ("Rectangle", "Annulus", "QRange") if self.settings[k] is not None]
        if len(given) != 1:
            raise CalibrationError("an ROI needs exactly one of Rectangle, Annulus or QRange", path,
                                   given or None, "one region")
        rows, cols = context.shape
        if given[0] == "Rectangle":
            mask = self._rectangle(rows, cols)
        elif given[0] == "Annulus":
            mask = self._annulus(rows, cols)
        else:
            self.context = ClassifierContext(context.shape)  # the pixel q range, not the curve's
            lo, hi = self.q_range("QRange", None) or (0.0, 0.0)
            assert context.q_map is not None
            q = context.q_map()
            mask = (q >= lo) & (q < hi)
            self.context = context
        if not mask.any():
            raise CalibrationError("the ROI holds no pixel of the detector", f"{path}.{given[0]}",
                                   self.settings[given[0]], f"a region inside the {rows}×{cols} detector")
        self.index = np.flatnonzero(mask)
        self.rows = (self.index // cols).astype(np.float64)
        self.cols = (self.index % cols).astype(np.float64)

    def _numbers(self, value: Any, n: int, where: str, expected: str) -> list[float]:
        if (not isinstance(value, (list, tuple)) or len(value) != n
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise CalibrationError("invalid region", where, value, expected)
        return [float(v) for v in value]

    def _rectangle(self, rows: int, cols: int) -> np.ndarray:
        where = f"{self.path}.Rectangle"
        r0, r1, c0, c1 = self._numbers(self.settings["Rectangle"], 4, where,
                                       "[first row, last row, first column, last column]")
        if not (r0 <= r1 and c0 <= c1 and all(float(v).is_integer() for v in (r0, r1, c0, c1))):
            raise CalibrationError("invalid rectangle", where, self.settings["Rectangle"],
                                   "integer pixel indices with first ≤ last")
        if r0 < 0 or c0 < 0 or r1 >= rows or c1 >= cols:
            raise CalibrationError(f"the rectangle lies outside the {rows}×{cols} detector", where,
                                   self.settings["Rectangle"], f"rows 0..{rows - 1} and columns 0..{cols - 1}")
        mask = np.zeros((rows, cols), dtype=bool)
        mask[int(r0):int(r1) + 1, int(c0):int(c1) + 1] = True
        return mask

    def _annulus(self, rows: int, cols: int) -> np.ndarray:
        where = f"{self.path}.Annulus"
        spec = self.settings["Annulus"]
        if not isinstance(spec, Mapping) or set(spec) - {"Center", "Radius"} or "Radius" not in spec:
            raise CalibrationError("invalid annulus", where, spec, '{"Center": [row, column], "Radius": [inner, outer]}')
        inner, outer = self._numbers(spec["Radius"], 2, f"{where}.Radius", "[inner, outer] pixels, inner < outer")
        if not 0 <= inner < outer:
            raise CalibrationError("invalid radii", f"{where}.Radius", spec["Radius"], "0 ≤ inner < outer")
        center = spec.get("Center")
        if center is None:
            center = self.context.extra.get("beam_center_rc")
        if center is None:
            raise CalibrationError("the annulus needs a centre", f"{where}.Center", None, "[row, column]")
        cr, cc = self._numbers(list(center), 2, f"{where}.Center", "[row, column] pixels")
        r = np.arange(rows, dtype=np.float64)[:, None] - cr
        c = np.arange(cols, dtype=np.float64)[None, :] - cc
        d2 = r * r + c * c
        return (d2 >= inner * inner) & (d2 < outer * outer)

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        v = np.asarray(data).reshape(-1)[self.index].astype(np.float64)
        good = v >= 0
        if not good.all():
            v = np.where(good, v, 0.0)
        total = float(v.sum())
        n = int(np.count_nonzero(good))
        row: float | None = None
        col: float | None = None
        if total > 0:
            # elementwise then sum: a BLAS dot here can stall on its thread pool (ms on a busy machine)
            row, col = float(np.sum(v * self.rows) / total), float(np.sum(v * self.cols) / total)
        return {"sum": total, "pixels": n, "mean": total / n if n else None, "centroid_row": row,
                "centroid_col": col}


_FIRST_NUMBER = re.compile(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def header_number(metadata: Mapping[str, Any] | None, key: str | None) -> float | None:
    """The first number of the image header's field ``key`` (``None`` when absent or not a number)."""
    if not key or not metadata:
        return None
    header = metadata.get("header") or {}
    value = header.get(key) if hasattr(header, "get") else None
    if value is None:
        value = metadata.get(key)  # a field the reader parsed itself
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    m = _FIRST_NUMBER.search(str(value)) if value is not None else None
    return float(m.group(0)) if m else None


@register
class ScanPosition(Classifier):
    """The frame's position in a raster scan, read from its image header.

    ``RowKey`` and ``ColumnKey`` name header fields holding the row and column index (from
    0), ``IndexKey`` one holding the point number; the first number of the field's text is
    taken.  The ``Scan`` block adds this classifier itself when it names header fields.
    """

    kind = "ScanPosition"
    input = "image"
    description = "row, column or point number of a raster scan, from the image header"
    units = {"row": "", "column": "", "index": ""}
    primary = "index"
    options = {"RowKey": None, "ColumnKey": None, "IndexKey": None}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        for name in self.options:
            v = self.settings[name]
            if v is not None and (not isinstance(v, str) or not v):
                raise CalibrationError("not a header field name", f"{path}.{name}", v, "the name of a header field")
        if all(self.settings[n] is None for n in self.options):
            raise CalibrationError("a scan position needs a header field", path, None, "RowKey and ColumnKey, or IndexKey")

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        return {"row": header_number(metadata, self.settings["RowKey"]),
                "column": header_number(metadata, self.settings["ColumnKey"]),
                "index": header_number(metadata, self.settings["IndexKey"])}


@register
class CakeROI(Classifier):
    """Sum, mean and intensity-weighted centroid of a region of a cake map I(radial, χ).

    ``Mask``: the index of the calibration's ``Masks`` entry with the ``Cake`` (default the
    first one); ``RadialRange``: ``[min, max]`` in that entry's ``Unit``; ``ChiRange``:
    ``[start, stop]`` degrees (χ as the cake's, a range with stop < start wraps through 180°);
    both default to the whole map.  The region is the cake bins whose centres lie inside.
    ``sum`` is Σ I·A over those bins (A: the pixels in a bin; the counts, before
    normalization), ``mean`` = sum / ΣA, the centroid weighs each bin by I·A.  The values go
    to the first integrator's parameters, as the image classifiers'.
    """

    kind = "CakeROI"
    input = "cake"
    description = "sum and centroid in a radial × chi region of a cake map"
    units = {"sum": "I·pixels", "pixels": "pixels", "mean": "I", "bins": "", "centroid_radial": "Unit",
             "centroid_chi": "°"}
    primary = "sum"
    options = {"Mask": None, "RadialRange": None, "ChiRange": None}

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        super().__init__(spec, context, path)
        cakes: dict[int, Any] = context.extra.get("cakes") or {}
        mask = self.settings["Mask"]
        if mask is None:
            if not cakes:
                raise CalibrationError("a CakeROI needs a Masks entry with a Cake", f"{path}.Kind", self.kind,
                                       'a Masks entry with "Cake": {"RadialBins": ..., "AzimuthBins": ...}')
            mask = min(cakes)
        if isinstance(mask, bool) or not isinstance(mask, int) or mask not in cakes:
            raise CalibrationError("not the index of a Masks entry with a Cake", f"{path}.Mask", mask,
                                   f"one of {sorted(cakes)}" if cakes else "a Masks entry with a Cake")
        self.mask = int(mask)
        radial, chi = (np.asarray(a, dtype=np.float64) for a in cakes[self.mask])
        r_sel = self._range("RadialRange", radial, lambda v, lo, hi: (v >= lo) & (v <= hi), "the cake's radial axis")
        c_sel = self._range("ChiRange", chi, _in_chi_range, "the cake's chi (degrees)")
        sel = c_sel[:, None] & r_sel[None, :]
        if not sel.any():
            raise CalibrationError("the region holds no bin of the cake", path, [self.settings["RadialRange"],
                                   self.settings["ChiRange"]], "ranges that cross on the map")
        self.index = np.flatnonzero(sel)
        self.radial = np.broadcast_to(radial[None, :], sel.shape).reshape(-1)[self.index]
        self.chi = np.broadcast_to(chi[:, None], sel.shape).reshape(-1)[self.index]

    def _range(self, name: str, axis: np.ndarray, inside: Any, what: str) -> np.ndarray:
        value = self.settings[name]
        if value is None:
            return np.ones(axis.size, dtype=bool)
        where = f"{self.path}.{name}"
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or (name == "RadialRange" and not value[0] < value[1])):
            raise CalibrationError("not a range", where, value, "[min, max]" if name == "RadialRange" else
                                   "[start, stop] degrees")
        sel: np.ndarray = inside(axis, float(value[0]), float(value[1]))
        if not sel.any():
            raise CalibrationError(f"the range lies outside {what} ({axis.min():.4g} to {axis.max():.4g})", where,
                                   value, f"a range overlapping [{axis.min():.4g}, {axis.max():.4g}]")
        return sel

    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None, integrator: Any = None) -> dict[str, Any]:
        intensity = np.asarray(data.intensity, dtype=np.float64).reshape(-1)[self.index]
        area = np.asarray(integrator.operator.area, dtype=np.float64).reshape(-1)[self.index]
        good = (area > 0) & np.isfinite(intensity)
        weight = np.where(good, intensity * area, 0.0)
        total = float(weight.sum())
        pixels = float(area[good].sum())
        centroid_r = centroid_c = None
        if total > 0:
            centroid_r = float(np.sum(weight * self.radial) / total)
            centroid_c = float(np.sum(weight * self.chi) / total)
        return {"sum": total, "pixels": pixels, "mean": total / pixels if pixels else None,
                "bins": int(np.count_nonzero(good)), "centroid_radial": centroid_r, "centroid_chi": centroid_c}


def _in_chi_range(chi: np.ndarray, start: float, stop: float) -> np.ndarray:
    """χ (degrees) within [start, stop], going up from start (through 180° when stop < start)."""
    span = (stop - start) % 360.0 or (360.0 if stop != start else 0.0)
    sel: np.ndarray = ((chi - start) % 360.0) <= span + 1e-9
    return sel
