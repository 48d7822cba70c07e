"""Robust per-bin means by iterative sigma clipping (``Corrections.SigmaClip``).

A zinger (a cosmic ray, a single pixel with 10⁶ counts) or a hot pixel drags a bin's
mean far from the truth.  Clipping rejects, per bin, the pixels whose corrected value lies
more than ``Sigma`` standard deviations from the bin's mean, recomputes the mean and
repeats up to ``Cycles`` times or until nothing more is rejected.

Definitions (operator layout as in :mod:`saxsdog.core.operator`: pixel ``j`` gives the
entries ``(b, n_bj)``, ``n_bj`` the number of its sub-pixels in bin ``b``):

* corrected pixel value ``c_j = g_j (p_j − d_j)`` with ``g_j`` the per-pixel factor
  (``1/(flat·Ω·P)``, times the operator's own ``correction`` when it has one, exactly as
  :func:`saxsdog.core.kernels.accumulate` applies it) and ``d_j`` the scaled dark;
* pixels that are NaN, negative (``mask_negative``) or equal to ``dummy_value`` never
  enter a bin (they are not counted as rejected);
* over the kept entries of bin ``b``: weight ``W_b = Σ n_bj``, mean
  ``m_b = Σ n_bj c_j / W_b`` (the mean of corrected pixels, as the plain integrator) and
  spread ``σ_b² = Σ n_bj (c_j − m_b)² / W_b``;
* an entry is rejected when **not** ``|c_j − m_b| ≤ t_b σ_b`` with
  ``t_b = max(Sigma, √(2 ln(N_b / √(2π))))``, ``N_b = max(W_b / ov², 3)`` the kept area in
  pixels: Chauvenet's criterion raises the threshold in very large bins, where a few
  values beyond ``Sigma·σ`` are expected from Gaussian noise alone.  Rejection is final
  (an entry is never re-admitted).

Reported per bin: ``intensity = m_b``; ``stddev = σ_b``; ``weight = W_b``; ``error`` by
``error_model``:

``"poisson"``
    exact propagation of Poisson noise of the raw counts through the weighted mean,
    ``√(Σ n_bj² g_j² p_j) / W_b`` over the kept entries (``p_j`` clipped at 0);
``"azimuthal"``
    the error of the mean from the azimuthal spread as pyFAI defines its ``sem``,
    ``√(Σ n_bj² (c_j − m_b)²) / W_b``;
``"legacy"``
    the original's ``√(I·A)/A`` with ``A = W_b/ov²`` the kept area in pixels.

Empty bins give 0 everywhere.

Relation to pyFAI's ``sigma_clip_ng`` (``AzimuthalIntegrator.sigma_clip``, CSR engine)
------------------------------------------------------------------------------------
Matched: the rejection test ``not |x − ⟨x⟩| ≤ t·σ`` with the same Chauvenet threshold
and pixel count (``max(count, 3)``), statistics from the previous cycle, rejected pixels
staying rejected, and the number of cycles (pyFAI always runs them all; stopping when a
cycle rejects nothing gives the same result, since the statistics no longer change).  The
azimuthal ``sem`` formula is pyFAI's with its coefficients ``c`` = ``n_bj`` and its
normalization 1 (the corrections sit in ``c_j``).  Without sub-pixel splitting
(Oversampling 1), no flat/solid angle/polarization and ``error_model="azimuthal"``, the
kept set, means and sem are those of pyFAI's ``sigma_clip_ng(..., error_model="azimuthal")``
with ``method=("no", "csr", ...)``: on the real Pilatus image with 500 zingers, a median
relative deviation of 2e-8 (pyFAI computes in float32), the bins that differ more having
traded a pixel on their edge with a neighbour (pyFAI's float32 positions).  At
Oversampling 3 against pyFAI's full splitting the median is 3e-4.

Different, on purpose:

* σ used for clipping is **always the measured azimuthal spread**.  pyFAI clips against
  the σ of its error model, i.e. with ``error_model="poisson"`` against the σ that the
  Poisson model predicts for one pixel (``√max(1, raw)``), which also rejects genuine
  anisotropy.  Here ``error_model`` only chooses the reported error.
* With sub-pixel splitting we clip **entries** (a pixel's share in one bin), tested against
  that bin's statistics; pyFAI rejects whole pixels against a back-projected mean of the
  bins they touch (and advises against splitting when clipping).
* The bin mean is the mean of corrected pixels ``Σ n c / Σ n``; pyFAI's is the ratio of
  sums ``Σ (p − d) / Σ flat·Ω·P``.  Both agree when the corrections are uniform in a bin.
* The spread ``σ_b`` weights by ``n_bj`` (pyFAI: by ``c²`` and normalization²), the same as
  the plain integrator's standard deviation; pyFAI floors the Poisson variance at 1 count.

Two kernels, selected by name (``SAXSDOG_KERNEL`` chooses as for plain integration):

``"scipy"``
    The NumPy reference: every cycle tests all kept entries and recomputes every bin's
    sums from the kept ones.
``"numba"``
    One streaming pass over the entries in memory order accumulates the sums and holds
    aside the outliers: the entries outside 90 % of the band each bin had at the end of
    the previous call on the operator (the first call tracks each bin's extreme values
    instead).  A cycle then tests only the held entries of the bins whose statistics
    changed, which is exact as long as the new band covers the window the others lie in;
    a bin where it does not (or with more outliers than it can hold) is scanned entry by
    entry.  Held entries never enter the running sums, so removing a 10⁶-count zinger
    does not cost the remaining sum its precision; bins where a large value had to be
    subtracted are re-accumulated.  The results never depend on the previous call, only
    the speed does; they agree with the reference to rounding (1e-12, tested).

Pure NumPy: no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .kernels import chosen_method, registered_methods
from .operator import BinningOperator

__all__ = ["ClipResult", "clip_accumulate", "available_methods", "default_method", "ERROR_MODELS"]

#: Error models :func:`clip_accumulate` understands.
ERROR_MODELS = ("poisson", "azimuthal", "legacy")
_MODE = {"legacy": 0, "poisson": 1, "azimuthal": 2}


@dataclass
class ClipResult:
    """Per-bin result of a sigma-clipped integration.

    Attributes
    ----------
    intensity
        Robust mean per bin (corrected counts/pixel); 0 in empty bins.
    error
        Its error under the chosen error model.
    stddev
        Spread (standard deviation) of the kept corrected pixel values.
    weight
        Sub-pixel count of the kept entries per bin (float64).
    rejected
        Entries (a pixel's share in one bin) rejected in total, over all cycles.
    """

    intensity: np.ndarray
    error: np.ndarray
    stddev: np.ndarray
    weight: np.ndarray
    rejected: int


@dataclass
class _Sums:
    """Per-bin sums over the kept entries (float64, length ``n_bins``)."""

    w: np.ndarray    # Σ n
    s1: np.ndarray   # Σ n c
    s2: np.ndarray   # Σ n c²
    e: np.ndarray    # poisson: Σ n² g² max(p, 0); azimuthal: Σ n² c (zeros for legacy)
    q0: np.ndarray   # azimuthal: Σ n² (zeros otherwise)
    q2: np.ndarray   # azimuthal: Σ n² c² (zeros otherwise)


_Kernel = Callable[..., tuple[_Sums, int]]
_REGISTRY: dict[str, _Kernel] = {}


# -- statistics shared by both kernels -------------------------------------------------

def _statistics(sums: _Sums, subpixels: int, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, spread and rejection limit ``t_b σ_b`` per bin (0 where empty)."""
    w = sums.w
    has = w > 0
    safe_w = np.where(has, w, 1.0)
    mean = np.where(has, sums.s1 / safe_w, 0.0)
    var = np.where(has, np.maximum(sums.s2 / safe_w - mean * mean, 0.0), 0.0)
    std = np.sqrt(var)
    n_pixels = np.maximum(w / subpixels, 3.0)
    chauvenet = np.sqrt(2.0 * np.log(n_pixels / math.sqrt(2.0 * math.pi)))
    limit = np.maximum(sigma, chauvenet) * std
    return mean, std, limit


def _result(sums: _Sums, subpixels: int, sigma: float, mode: int, rejected: int) -> ClipResult:
    mean, std, _ = _statistics(sums, subpixels, sigma)
    w = sums.w
    has = w > 0
    safe_w = np.where(has, w, 1.0)
    if mode == 1:
        err2 = sums.e
    elif mode == 2:
        # Σ n² (c − m)² expanded over the accumulated sums.
        err2 = sums.q2 - 2.0 * mean * sums.e + mean * mean * sums.q0
    else:
        area = w / subpixels
        err2 = mean * area * subpixels * subpixels  # (√(I·A)/A)² · W² with A = W/ov²
    error = np.where(has, np.sqrt(np.maximum(err2, 0.0)) / safe_w, 0.0)
    return ClipResult(intensity=mean, error=error, stddev=std, weight=w.astype(np.float64, copy=True),
                      rejected=int(rejected))


# -- the NumPy reference ---------------------------------------------------------------

def _pixel_values(flat: np.ndarray, factor: np.ndarray | None, dark: np.ndarray | None,
                  mask_negative: bool, dummy_value: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw values (float64), corrected values and the usable-pixel mask, per pixel."""
    raw = flat.astype(np.float64)
    if factor is not None:  # a stored float32 factor: compute in float64 as the numba kernel
        factor = np.asarray(factor, dtype=np.float64)
    usable = ~np.isnan(raw)
    if mask_negative:
        usable &= raw >= 0
    if dummy_value is not None:
        usable &= raw != dummy_value
    corrected = raw - dark if dark is not None else raw.copy()
    if factor is not None:
        corrected *= factor
    return raw, corrected, usable


def _scipy_clip(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None, dark: np.ndarray | None,
                sigma: float, cycles: int, mode: int, mask_negative: bool,
                dummy_value: float | None) -> tuple[_Sums, int]:
    raw, corrected, usable = _pixel_values(flat, factor, dark, mask_negative, dummy_value)
    pix = op.entry_pixels
    bins = op.bins.astype(np.int64)
    n = op.counts.astype(np.float64)
    c = corrected[pix]
    kept = usable[pix]
    g2p = None
    if factor is not None:
        factor = np.asarray(factor, dtype=np.float64)
    if mode == 1:
        g = factor[pix] if factor is not None else np.ones(pix.size)
        g2p = g * g * np.maximum(raw[pix], 0.0)

    def sums() -> _Sums:
        b, nk, ck = bins[kept], n[kept], c[kept]

        def total(weights: np.ndarray) -> np.ndarray:
            return np.bincount(b, weights=weights, minlength=op.n_bins)

        zero = np.zeros(op.n_bins)
        e, q0, q2 = zero, zero, zero
        if mode == 1 and g2p is not None:
            e = total(nk * nk * g2p[kept])
        elif mode == 2:
            q0, e, q2 = total(nk * nk), total(nk * nk * ck), total(nk * nk * ck * ck)
        return _Sums(total(nk), total(nk * ck), total(nk * ck * ck), e, q0, q2)

    current = sums()
    rejected = 0
    for _ in range(cycles):
        mean, _, limit = _statistics(current, op.subpixels, sigma)
        with np.errstate(invalid="ignore"):
            reject = kept & ~(np.abs(c - mean[bins]) <= limit[bins])
        n_reject = int(np.count_nonzero(reject))
        if n_reject == 0:
            break
        rejected += n_reject
        kept &= ~reject
        current = sums()
    return current, rejected


_REGISTRY["scipy"] = _scipy_clip


# -- the streaming numba kernel --------------------------------------------------------

try:  # pragma: no branch - depends on the environment
    import numba

    from .kernels import vector_add4

    _LANES = 4
    #: Outliers held out of the running sums per bin (more: the bin is scanned).
    _K = 16
    #: The next call's window, as a fraction of this call's final band.
    _HOLD_AT = 0.9
    #: Above this fraction of all entries in the bins to scan, a scan streams all entries
    #: instead of visiting those bins through the bin-major index.
    _STREAM_FRACTION = 0.15
    # Entry states.
    _KEPT, _REJECTED, _UNUSABLE, _HELD = 0, 1, 2, 3

    # How the numba kernel avoids streaming the image once per cycle.  The first pass
    # accumulates the sums; entries outside a per-bin window are not added but *held* (up to
    # K per bin, with their entry).  The window is the band of the previous call on this
    # operator narrowed to 90 %, so the held entries are the outliers, and every entry not
    # held lies within the window.  (On the first call there is no window: the pass tracks
    # each lane's smallest and largest value instead, branch-free, as the bounds.)  A cycle
    # then only tests the held entries of a changed bin, provided its new band still covers
    # both bounds (checked with the very expression of the rejection test, which is
    # monotonic in the value, so this is exact); otherwise that bin alone is scanned.  The
    # results never depend on the window, only the speed does.  Holding
    # the outliers out of the running sums keeps a zinger from dominating their rounding;
    # an entry subtracted from a running sum that is larger than the rest of it (a zinger
    # that was not held) flags the bin, which is then re-accumulated from scratch.
    #
    # Measured dead ends (Pilatus 1M, Oversampling 3, 500 zingers, pixel factor + dark,
    # thread CPU): the first pass is ~all of the cost (2.0 ms plain, 2.9 ms with factor and
    # dark; the cycles add 0.1-0.3 ms).  Replacing it by kernels.accumulate_corrected
    # (squares + poisson, inline dark: 1.5 ms) plus a pass over the entries that only flags
    # bins holding a value outside mean ± limit (1.3 ms, 0.8 ms without factor and dark)
    # already costs as much before the flagged bins are redone: they are 65 % of the
    # entries with the zingers (22 % on the clean image), and they must be re-accumulated
    # (subtracting a zinger from the stream sums loses the 1e-12 agreement).  Dark and
    # factor side by side in one (pixels, 2) array read no faster than two arrays: the
    # pass is bound by the bytes, not by the number of streams.
    #
    # Running sums are arrays of n_bins * 4 lanes: s1 Σ n c, s2 Σ n c², and e (poisson:
    # Σ n² g² p) or q1 Σ n² c and q2 Σ n² c² (azimuthal); unused ones are None, pruned by
    # numba at compile time.  Accumulations are written out in the hot loops: a helper
    # taking the arrays costs reference-count updates per entry.

    @numba.njit(inline="always")
    def _value(img, j, factor, dark):  # type: ignore[no-untyped-def]  # pragma: no cover
        p = np.float64(img[j])
        c = p
        if dark is not None:
            c -= dark[j]
        g = 1.0
        if factor is not None:
            g = np.float64(factor[j])  # a stored float32 factor too: products in float64
            c *= g
        return p, c, g

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _add(k, b, sign, img, pix, counts, factor, dark, s1, s2, e, q1, q2):  # type: ignore[no-untyped-def]  # noqa: E501  # pragma: no cover
        # Add (sign 1) or subtract (sign -1) entry k of bin b: the rare paths.
        p, c, g = _value(img, pix[k], factor, dark)
        n = np.float64(counts[k])
        i = b * 4 + (k & 3)
        nc = sign * n * c
        s1[i] += nc
        s2[i] += nc * c
        if e is not None:
            e[i] += sign * n * n * g * g * max(p, 0.0)
        if q1 is not None:
            q1[i] += n * nc
        if q2 is not None:
            q2[i] += n * nc * c

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_first(img, pix, bins, counts, factor, dark, floor, dummy,  # type: ignore[no-untyped-def]
                  lower, upper, state, removed, held_n, overflow, top, topk, low, high,  # pragma: no cover
                  slots, e, q1, q2):
        # First pass: every usable entry into the running sums (four interleaved lanes per
        # bin, as kernels.py, to break the dependency on a running sum), or held.  An
        # entry's sums (Σ n c, Σ n c², and Σ n² g² p or Σ n² c and Σ n² c²) go to its lane's
        # slot of 4 numbers in `slots` in one vector add (kernels.vector_add4); the caller
        # then spreads them into the lane arrays s1, s2, e, q1, q2 the cycles work on
        # (`e`, `q1`, `q2` here only say which sums are wanted).  Unusable entries (NaN, negative, dummy) get their own state
        # and their counts go to `removed`: the weights need no accumulator (W = counts −
        # removed).  Unusable is `not p >= floor` (floor 0 with MaskNegative, else −inf: NaN
        # always fails) or `p == dummy` (NaN without a dummy value: never true); bitwise
        # `|` keeps each test a single, well-predicted branch.
        for k in range(pix.size):
            p, c, g = _value(img, pix[k], factor, dark)
            b = np.int64(bins[k])
            n = np.float64(counts[k])
            if (not (p >= floor)) | (p == dummy):
                state[k] = 2
                removed[2 * b] += n
                removed[2 * b + 1] += n * n
                continue
            if (c > upper[b]) | (c < lower[b]):
                if held_n[b] < _K:
                    slot = b * _K + held_n[b]
                    top[slot] = c
                    topk[slot] = k
                    held_n[b] += 1
                    state[k] = 3
                    continue
                overflow[b] = 1
            i = b * 4 + (k & 3)
            nc = n * c
            x2 = 0.0
            x3 = 0.0
            if e is not None:
                x2 = n * n * g * g * max(p, 0.0)
            if q1 is not None:
                x2 = n * nc
            if q2 is not None:
                x3 = n * nc * c
            vector_add4(slots, i, nc, nc * c, x2, x3)  # type: ignore[call-arg]  # (an intrinsic)
            if low is not None:
                low[i] = min(low[i], c)
            if high is not None:
                high[i] = max(high[i], c)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _reject(k, b, img, pix, counts, factor, dark, state, removed, changed, flagged,  # type: ignore[no-untyped-def]
                s1, s2, e, q1, q2):  # pragma: no cover
        # Reject entry k of bin b; take it out of the running sums unless it is held.
        n = np.float64(counts[k])
        changed[b] = 1
        removed[2 * b] += n
        removed[2 * b + 1] += n * n
        held = state[k] == 3
        state[k] = 1
        if held:
            return
        base = b * 4
        p, c, g = _value(img, pix[k], factor, dark)
        big = n * c * c > 0.5 * (s2[base] + s2[base + 1] + s2[base + 2] + s2[base + 3])
        if e is not None:
            big = big or n * n * g * g * max(p, 0.0) > 0.5 * (e[base] + e[base + 1] + e[base + 2] + e[base + 3])
        if q2 is not None:
            big = big or n * n * c * c > 0.5 * (q2[base] + q2[base + 1] + q2[base + 2] + q2[base + 3])
        if big:
            flagged[b] = 1
        _add(k, b, -1.0, img, pix, counts, factor, dark, s1, s2, e, q1, q2)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_extremes(img, pix, counts, factor, dark, mean, limit, active, state, removed, changed, flagged,  # type: ignore[no-untyped-def]  # noqa: E501
                     scan, held_n, top, topk, lower, upper, overflow, low, high, s1, s2, e, q1, q2):  # pragma: no cover
        # One cycle on the remembered extremes of every changed bin; bins whose band no
        # longer covers the bounds of the other entries are marked for a scan.
        rejected = 0
        for b in range(active.size):
            if not active[b]:
                continue
            m = mean[b]
            lim = limit[b]
            base = b * _K
            # Every entry not held lies within [lowest, highest]: the window, or the tracked
            # extremes (±inf when the lanes saw no entry).
            if low is not None and high is not None:
                lowest = min(min(low[4 * b], low[4 * b + 1]), min(low[4 * b + 2], low[4 * b + 3]))
                highest = max(max(high[4 * b], high[4 * b + 1]), max(high[4 * b + 2], high[4 * b + 3]))
            else:
                lowest = lower[b]
                highest = upper[b]
                if overflow[b]:
                    scan[b] = 1
            if (lowest != np.inf and not (abs(lowest - m) <= lim)) or \
                    (highest != -np.inf and not (abs(highest - m) <= lim)):
                scan[b] = 1
            for r in range(held_n[b]):
                k = topk[base + r]
                c = top[base + r]
                if state[k] == 1:
                    continue
                if not (abs(c - m) <= lim):
                    rejected += 1
                    _reject(k, b, img, pix, counts, factor, dark, state, removed, changed, flagged,
                            s1, s2, e, q1, q2)
        return rejected

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_scan_gather(img, pix, counts, factor, dark, mean, limit, scan_bins, order, starts,  # type: ignore[no-untyped-def]  # noqa: E501
                        state, removed, changed, flagged, low, high, s1, s2, e, q1, q2):  # pragma: no cover
        # Test the kept, not remembered entries of the bins to scan (bin-major index).
        # With tracked extremes (`low`, `high`: the first call on an operator, reset by the
        # caller for the scanned bins), the entries that stay kept give their bin's new
        # extremes in lane 0: the next cycle then tests the bin's bounds without the
        # entries just rejected, instead of scanning it again for them.
        rejected = 0
        for a in range(scan_bins.size):
            b = np.int64(scan_bins[a])
            m = mean[b]
            lim = limit[b]
            for o in range(starts[b], starts[b + 1]):
                k = np.int64(order[o])
                if state[k]:
                    continue
                p, c, g = _value(img, pix[k], factor, dark)
                if abs(c - m) <= lim:
                    if low is not None and high is not None:
                        low[4 * b] = min(low[4 * b], c)
                        high[4 * b] = max(high[4 * b], c)
                    continue
                rejected += 1
                _reject(k, b, img, pix, counts, factor, dark, state, removed, changed, flagged, s1, s2, e, q1, q2)
        return rejected

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_scan_stream(img, pix, bins, counts, factor, dark, mean, limit, scan,  # type: ignore[no-untyped-def]
                        state, removed, changed, flagged, low, high, s1, s2, e, q1, q2):  # pragma: no cover
        # The same scan streaming all entries in memory order (when many bins need it).
        rejected = 0
        for k in range(pix.size):
            if state[k]:
                continue
            b = np.int64(bins[k])
            if not scan[b]:
                continue
            p, c, g = _value(img, pix[k], factor, dark)
            if abs(c - mean[b]) <= limit[b]:
                if low is not None and high is not None:
                    low[4 * b] = min(low[4 * b], c)
                    high[4 * b] = max(high[4 * b], c)
                continue
            rejected += 1
            _reject(k, b, img, pix, counts, factor, dark, state, removed, changed, flagged, s1, s2, e, q1, q2)
        return rejected

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_readd(img, pix, counts, factor, dark, redo_bins, order, starts, state,  # type: ignore[no-untyped-def]
                  s1, s2, e, q1, q2):  # pragma: no cover
        # Re-accumulate the running sums of flagged bins from their kept entries.
        for a in range(redo_bins.size):
            b = np.int64(redo_bins[a])
            for o in range(starts[b], starts[b + 1]):
                k = np.int64(order[o])
                if state[k] == 0:
                    _add(k, b, 1.0, img, pix, counts, factor, dark, s1, s2, e, q1, q2)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_readd_stream(img, pix, bins, counts, factor, dark, redo, state, s1, s2, e, q1, q2):  # type: ignore[no-untyped-def]  # noqa: E501  # pragma: no cover
        # The same in memory order (when many bins are flagged).
        for k in range(pix.size):
            if state[k] == 0:
                b = np.int64(bins[k])
                if redo[b]:
                    _add(k, b, 1.0, img, pix, counts, factor, dark, s1, s2, e, q1, q2)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_fold(img, pix, counts, factor, dark, state, held_n, top, topk, out, s1, s2, e, q1, q2):  # type: ignore[no-untyped-def]  # noqa: E501  # pragma: no cover
        # Per-bin totals: the four lanes plus the held entries (rows of `out`: Σ n c,
        # Σ n c², Σ n² g² p or Σ n² c, Σ n² c²).
        for b in range(out.shape[1]):
            t1 = 0.0
            t2 = 0.0
            t3 = 0.0
            t4 = 0.0
            for r in range(held_n[b]):
                k = topk[b * _K + r]
                if state[k] != 3:
                    continue
                p, c, g = _value(img, pix[k], factor, dark)
                n = np.float64(counts[k])
                t1 += n * c
                t2 += n * c * c
                if e is not None:
                    t3 += n * n * g * g * max(p, 0.0)
                if q1 is not None:
                    t3 += n * n * c
                if q2 is not None:
                    t4 += n * n * c * c
            for lane in range(4):
                i = 4 * b + lane
                t1 += s1[i]
                t2 += s2[i]
                if e is not None:
                    t3 += e[i]
                if q1 is not None:
                    t3 += q1[i]
                if q2 is not None:
                    t4 += q2[i]
            out[0, b] = t1
            out[1, b] = t2
            out[2, b] = t3
            out[3, b] = t4

    def _bin_index(op: BinningOperator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entries per bin, and the entries in bin-major order with each bin's start
        (built once per operator, the first time a bin has to be scanned)."""
        cache = op.__dict__.setdefault("_sigma_clip_cache", {})
        if "order" not in cache:
            per_bin = np.bincount(op.bins, minlength=op.n_bins)
            cache["per_bin"] = per_bin
            cache["order"] = np.argsort(op.bins, kind="stable").astype(np.int32)
            cache["starts"] = np.concatenate([[0], np.cumsum(per_bin)]).astype(np.int64)
        return cache["per_bin"], cache["order"], cache["starts"]

    def _squared_counts(op: BinningOperator) -> np.ndarray:
        """Σ n² per bin over all entries (cached on the operator)."""
        cache = op.__dict__.setdefault("_sigma_clip_cache", {})
        if "n2" not in cache:
            cache["n2"] = np.bincount(op.bins, weights=op.counts.astype(np.float64) ** 2, minlength=op.n_bins)
        n2: np.ndarray = cache["n2"]
        return n2

    def _numba_clip(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None, dark: np.ndarray | None,
                    sigma: float, cycles: int, mode: int, mask_negative: bool,
                    dummy_value: float | None) -> tuple[_Sums, int]:
        nb = op.n_bins
        size = nb * _LANES

        def lanes(wanted: bool) -> np.ndarray | None:
            return np.zeros(size) if wanted else None

        running = (np.zeros(size), np.zeros(size), lanes(mode == 1), lanes(mode == 2), lanes(mode == 2))
        s1, s2, e, q1, q2 = running
        # Zero-filled: only the pages of slots in use are ever touched (cake operators have
        # many bins).
        top, topk = np.zeros(nb * _K), np.zeros(nb * _K, dtype=np.int64)
        held_n = np.zeros(nb, dtype=np.int64)
        overflow = np.zeros(nb, dtype=np.uint8)
        cache = op.__dict__.setdefault("_sigma_clip_cache", {})
        window = cache.get("window")
        low = high = None
        if window is None:
            lower, upper = np.full(nb, -np.inf), np.full(nb, np.inf)
            low, high = np.full(size, np.inf), np.full(size, -np.inf)
        else:
            lower, upper = window
        removed = np.zeros(2 * nb)  # per bin: Σ n and Σ n² of unusable and rejected entries
        state = np.zeros(op.bins.size, dtype=np.uint8)
        pix = op.entry_pixels
        slots = np.zeros(4 * size)
        _nb_first(flat, pix, op.bins, op.counts, factor, dark, 0.0 if mask_negative else -np.inf,
                  np.nan if dummy_value is None else dummy_value, lower, upper, state, removed, held_n, overflow,
                  top, topk, low, high, slots, e, q1, q2)
        s1[:] = slots[0::4]
        s2[:] = slots[1::4]
        if e is not None:
            e[:] = slots[2::4]
        if q1 is not None and q2 is not None:
            q1[:] = slots[2::4]
            q2[:] = slots[3::4]
        zero = np.zeros(nb)

        def sums() -> _Sums:
            out = np.zeros((4, nb))
            _nb_fold(flat, pix, op.counts, factor, dark, state, held_n, top, topk, out, *running)
            gone = removed.reshape(nb, 2)
            return _Sums(op.bin_counts - gone[:, 0], out[0], out[1], out[2],
                         _squared_counts(op) - gone[:, 1] if mode == 2 else zero, out[3])

        current = sums()
        active = (current.w > 0).astype(np.uint8)
        flagged = np.zeros(nb, dtype=np.uint8)
        rejected = 0
        for _ in range(cycles):
            mean, _, limit = _statistics(current, op.subpixels, sigma)
            changed = np.zeros(nb, dtype=np.uint8)
            scan = np.zeros(nb, dtype=np.uint8)
            n_reject = int(_nb_extremes(flat, pix, op.counts, factor, dark, mean, limit, active, state, removed,
                                        changed, flagged, scan, held_n, top, topk, lower, upper, overflow, low, high,
                                        *running))
            scan_bins = np.flatnonzero(scan)
            if scan_bins.size:
                if low is not None and high is not None:  # the scan gives these bins new extremes
                    low.reshape(nb, _LANES)[scan_bins] = np.inf
                    high.reshape(nb, _LANES)[scan_bins] = -np.inf
                per_bin, order, starts = _bin_index(op)
                if per_bin[scan_bins].sum() > _STREAM_FRACTION * op.bins.size:
                    n_reject += int(_nb_scan_stream(flat, pix, op.bins, op.counts, factor, dark, mean, limit, scan,
                                                    state, removed, changed, flagged, low, high, *running))
                else:
                    n_reject += int(_nb_scan_gather(flat, pix, op.counts, factor, dark, mean, limit, scan_bins,
                                                    order, starts, state, removed, changed, flagged, low, high,
                                                    *running))
            rejected += n_reject
            if n_reject == 0:
                break
            current = sums()
            active = changed  # unchanged bins keep their statistics: nothing new to reject
        redo = np.flatnonzero(flagged)
        if redo.size:
            for a in running:
                if a is not None:
                    a.reshape(nb, _LANES)[redo] = 0.0
            per_bin, order, starts = _bin_index(op)
            if per_bin[redo].sum() > _STREAM_FRACTION * op.bins.size:
                _nb_readd_stream(flat, pix, op.bins, op.counts, factor, dark, flagged, state, *running)
            else:
                _nb_readd(flat, pix, op.counts, factor, dark, redo, order, starts, state, *running)
            current = sums()
        mean, _, limit = _statistics(current, op.subpixels, sigma)
        # Replaced, never modified in place: a concurrent call may be reading the old one.
        has = current.w > 0
        cache["window"] = (np.where(has, mean - _HOLD_AT * limit, -np.inf), np.where(has, mean + _HOLD_AT * limit, np.inf))
        return current, rejected

    _REGISTRY["numba"] = _numba_clip
except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
    pass


def available_methods() -> list[str]:
    """Names of the clipping kernels usable here, fastest first."""
    return registered_methods(_REGISTRY)


def default_method() -> str:
    """The kernel used unless one is asked for (``SAXSDOG_KERNEL`` overrides, as for plain
    integration)."""
    return chosen_method(_REGISTRY)


def _per_pixel(name: str, values: np.ndarray | None, n_pix: int) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values)
    # a stored float32 factor (saxsdog.core.corrections.pixel_factor) is used as it is: the
    # kernels compute in float64 from it, and a float64 copy would cost 8 MB a frame
    arr = np.ascontiguousarray(values, dtype=values.dtype if values.dtype in (np.float32, np.float64)
                               else np.float64).reshape(-1)
    if arr.size != n_pix:
        raise ValueError(f"{name} has {arr.size} values, the image {n_pix} pixels")
    return arr


def clip_accumulate(op: BinningOperator, flat_image: np.ndarray, *, pixel_factor: np.ndarray | None,
                    dark: np.ndarray | None, sigma: float, cycles: int, error_model: str = "poisson",
                    mask_negative: bool = True, dummy_value: float | None = None,
                    method: str | None = None, operator_correction: bool = True) -> ClipResult:
    """Sigma-clipped mean, error and spread per bin (definitions in the module docstring).

    Parameters
    ----------
    op
        The operator.
    flat_image
        The frame, flattened to ``rows·cols`` values (a 2-D array of ``op.shape`` is
        accepted too); any real dtype.
    pixel_factor
        ``g_j`` per pixel (float64, length ``rows·cols``), or ``None`` for 1.  The
        operator's own ``correction`` multiplies it when present.
    dark
        Dark per pixel, already scaled to the frame's exposure, or ``None``.
    sigma
        Rejection threshold in standard deviations (> 0).
    cycles
        Maximum number of rejection cycles (0: no clipping, plain statistics).
    error_model
        ``"poisson"``, ``"azimuthal"`` or ``"legacy"``.
    mask_negative
        Exclude pixels < 0 (Pilatus gaps and dead pixels).
    dummy_value
        Exclude pixels equal to this value too (``None``: none).
    method
        Kernel name (see :func:`available_methods`); default :func:`default_method`.
    operator_correction
        Multiply ``pixel_factor`` by the operator's own ``correction``; ``False`` when the
        factor already holds it (an integrator's, from
        :func:`saxsdog.core.corrections.pixel_factor` with ``base=``).

    Returns
    -------
    ClipResult

    Raises
    ------
    ValueError
        On a wrong image/factor/dark size, ``sigma <= 0``, ``cycles < 0`` or an unknown
        error model or method.
    """
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"SigmaClip Sigma must be a positive number, got {sigma!r}")
    if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)) or cycles < 0:
        raise ValueError(f"SigmaClip Cycles must be a whole number >= 0, got {cycles!r}")
    if error_model not in _MODE:
        raise ValueError(f"unknown error model {error_model!r}; choose from {list(ERROR_MODELS)}")
    name = method or default_method()
    if name not in _REGISTRY:
        raise ValueError(f"unknown sigma-clip kernel {name!r}; choose from {available_methods()}")
    n_pix = op.shape[0] * op.shape[1]
    image = np.asarray(flat_image)
    if image.size != n_pix or image.ndim not in (1, 2) or (image.ndim == 2 and image.shape != tuple(op.shape)):
        raise ValueError(f"image of shape {image.shape} does not match the calibration's {tuple(op.shape)}")
    flat = np.ascontiguousarray(image).reshape(-1)
    if flat.dtype.kind == "b":
        flat = flat.astype(np.uint8)
    elif flat.dtype.kind not in "iuf":
        raise TypeError(f"cannot integrate an image of dtype {image.dtype}")
    factor = _per_pixel("pixel_factor", pixel_factor, n_pix)
    if op.correction is not None and operator_correction:
        factor = op.correction.astype(np.float64) if factor is None else factor * op.correction
    dark_arr = _per_pixel("dark", dark, n_pix)
    mode = _MODE[error_model]
    sums, rejected = _REGISTRY[name](op, flat, factor, dark_arr, float(sigma), int(cycles), mode,
                                     bool(mask_negative), None if dummy_value is None else float(dummy_value))
    return _result(sums, op.subpixels, float(sigma), mode, rejected)
