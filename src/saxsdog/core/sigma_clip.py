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
    One streaming pass over the pixels in memory order (as the plain kernel streams them:
    the pixel index implied, one count per pixel split over two adjacent bins, whose two
    entries are added in one vector operation) accumulates the sums and holds aside the
    outliers: the entries outside 90 % of the band each bin had at the end of the previous
    call on the operator (the first call tracks each bin's extreme values instead).  A
    cycle then tests only the held entries of the bins whose statistics changed, which is
    exact as long as the new band covers the window the others lie in; a bin where it
    does not (or with more outliers than it can hold) is scanned entry by entry.  Held
    entries never enter the running sums, so removing a 10⁶-count zinger does not cost
    the remaining sum its precision; bins where a large value had to be subtracted are
    re-accumulated.  The results never depend on the previous call, only the speed does;
    they agree with the reference to rounding (1e-12, tested).  A calibration's factor
    and dark packed once by :func:`pack_corrections` (an :class:`~saxsdog.core.integrators.
    Integrator` with ``SigmaClip`` does) are read in stream order, only for the used pixels.

Pure NumPy: no I/O here.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernels import chosen_method, registered_methods
from .operator import BinningOperator

__all__ = ["ClipResult", "PackedCorrections", "clip_accumulate", "pack_corrections", "available_methods",
           "default_method", "ERROR_MODELS"]

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


@dataclass(frozen=True, eq=False)
class PackedCorrections:
    """A calibration's per-pixel factor and dark as the numba kernel streams them.

    Made once per calibration by :func:`pack_corrections` and passed to every
    :func:`clip_accumulate` call with the very ``pixel_factor`` and ``dark`` arrays it was
    made from (checked by identity; the arrays must not be changed in place afterwards).
    The values of the used pixels in the kernel's stream order are read forwards by the
    first pass instead of being gathered from the full-frame arrays.
    """

    #: The operator, and the arrays it was packed from (identity), and whether the
    #: operator's own correction was multiplied in.
    operator: BinningOperator
    factor: np.ndarray | None
    dark: np.ndarray | None
    operator_correction: bool
    #: The per-pixel factor the kernels use (the operator's correction folded in).
    pixel_factor: np.ndarray | None
    #: Factor and dark at the whole pixels, the pairs and the other entries (float64).
    stream_factor: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    stream_dark: tuple[np.ndarray, np.ndarray, np.ndarray] | None


#: Per operator (by identity, dropped with it; not pickled with it): the numba kernel's
#: layout, the previous call's window, whether its frame needed the dummy test, and a
#: pool of scan marks.
_CACHES: dict[int, dict[str, object]] = {}


def _cache(op: BinningOperator) -> dict[str, object]:
    """The numba kernel's derived data for ``op``."""
    key = id(op)
    cache = _CACHES.get(key)
    if cache is None:
        cache = _CACHES.setdefault(key, {})
        weakref.finalize(op, _CACHES.pop, key, None)
    return cache


def _forget_window(op: BinningOperator) -> None:
    """Forget the previous call's bands (as before the first frame of a run)."""
    _cache(op).pop("window", None)


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

def _pixel_values(flat: np.ndarray, factor: np.ndarray | None, dark: np.ndarray | None, dark_scale: float,
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
    if dark is not None and dark_scale != 1.0:
        dark = dark * dark_scale
    corrected = raw - dark if dark is not None else raw.copy()
    if factor is not None:
        corrected *= factor
    return raw, corrected, usable


def _scipy_clip(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None, dark: np.ndarray | None,
                dark_scale: float, sigma: float, cycles: int, mode: int, mask_negative: bool,
                dummy_value: float | None, packed: PackedCorrections | None) -> tuple[_Sums, int]:
    del packed  # the reference reads the factor and the dark at each pixel
    raw, corrected, usable = _pixel_values(flat, factor, dark, dark_scale, mask_negative, dummy_value)
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

    from llvmlite import ir as _ir
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    from .kernels import _aligned_zeros, vector_add4

    @_intrinsic
    def vector_add8(typingctx, acc, slot, table, n, c, cc, x, y):  # type: ignore[no-untyped-def]  # pragma: no cover
        """``acc[8 slot : 8 slot + 8] += table[8 n : 8 n + 8] * (c, c, cc, cc, x, x, y, y)`` as
        one vector read-modify-write (float64 ``acc`` and ``table``): the sums of an adjacent
        pair's two entries at once (``table`` holds their counts, see _Layout)."""
        f64 = _types.float64
        sig = _types.void(acc, slot, table, n, f64, f64, f64, f64)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            tab = context.make_array(signature.args[2])(context, builder, args[2])
            vec_t = _ir.VectorType(_ir.DoubleType(), 8)
            i64 = _ir.IntType(64)

            def element(data: Any, index: Any) -> Any:
                index = builder.zext(index, i64) if index.type.width < 64 else index
                return builder.bitcast(builder.gep(data, [builder.shl(index, _ir.Constant(i64, 3))]),
                                       vec_t.as_pointer())

            weights = builder.load(element(tab.data, args[3]))
            weights.align = 8
            values = _ir.Constant(vec_t, _ir.Undefined)
            for k, v in enumerate((args[4], args[4], args[5], args[5], args[6], args[6], args[7], args[7])):
                values = builder.insert_element(values, v, _ir.Constant(_ir.IntType(32), k))
            target = element(arr.data, args[1])
            old = builder.load(target)
            old.align = 8
            store = builder.store(builder.fadd(old, builder.fmul(weights, values)), target)
            store.align = 8
            return context.get_dummy_value()

        return sig, codegen

    #: Outliers held out of the running sums per bin (more: the bin is scanned).
    _K = 16
    #: The next call's window, as a fraction of this call's final band.
    _HOLD_AT = 0.9
    #: Above this fraction of all entries in the bins to scan, a scan streams the pixels
    #: instead of visiting those bins through the bin-major index.
    _STREAM_FRACTION = 0.15
    #: Pixels per block of the streams (their pixel indices are 16-bit within a block).
    _BLOCK_BITS = 16
    #: Passed for an optional array argument to switch a feature on (numba compiles each
    #: kernel once with it and once with None: the switch costs nothing in the loop).
    _ON = np.zeros(1, dtype=np.uint8)

    # How the numba kernel avoids streaming the image once per cycle.  The first pass
    # (_nb_pass) accumulates the sums; entries outside a per-bin window are not added but
    # *held* (up to K per bin, with their value, count, Poisson term and pixel).  The
    # window is the band of the previous call on this operator narrowed to 90 %, so the
    # held entries are the outliers, and every entry not held lies within the window.  (On
    # the first call there is no window: the pass tracks each lane's smallest and largest
    # value instead, branch-free, as the bounds.)  A cycle then only tests the held entries
    # of a changed bin, provided its new band still covers both bounds (checked with the
    # very expression of the rejection test, which is monotonic in the value, so this is
    # exact); otherwise that bin alone is scanned.  The results never depend on the window,
    # only the speed does.  Holding the outliers out of the running sums keeps a zinger
    # from dominating their rounding; an entry subtracted from a running sum that is larger
    # than the rest of it (a zinger that was not held) flags the bin, which is then
    # re-accumulated from scratch before the next statistics.
    #
    # The first pass streams the pixels as the plain kernel does (see _Layout): pixel
    # index implied, one count per adjacent pair, no per-entry state (held entries are
    # identified by pixel and bin; a scan marks the entries it meets in a per-entry array
    # indexed in bin-major order, reset afterwards).  pack_corrections puts the factor and
    # the dark in stream order for the used pixels once per calibration, so the pass reads
    # them forwards.  The frame's smallest value is kept instead of testing each pixel for
    # a dummy; only a frame where it is negative (or a sum is NaN) is passed again with the
    # test.  The cycles, scans and re-accumulation run in one compiled call (_nb_clip): no
    # NumPy statistics per cycle.
    #
    # Measured (Pilatus 1M, Oversampling 3, Sigma 4, Cycles 3, 500 zingers, thread CPU per
    # frame, interleaved with the previous kernel on a loaded machine; minimum of 10-20
    # rounds): the first pass is still ~all of the cost (1.5 of 1.7 ms), the cycles 0.1 ms.
    # What paid, against the previous kernel (a pass over the entries through a 4-byte
    # pixel index, writing a state byte per entry, per-cycle NumPy statistics):
    # * pixels streamed with the pixel index implied and one count per adjacent pair, no
    #   per-entry state (held entries known by pixel and bin), cycles in one compiled call:
    #   2.7 -> 2.1 ms without factor and dark, 3.7 -> 2.9 ms with them;
    # * a pair's two entries in one 8-wide vector add when its value lies within both
    #   bins' windows (their intersection, one test instead of two), unsigned indices (no
    #   negative-index wraparound): -> 1.7 ms, 2.1 ms with factor and dark packed;
    # * factor and dark packed in stream order (pack_corrections): 2.5 -> 2.1 ms; the frame's
    #   smallest value kept instead of a dummy test per pixel.
    # The pass is bound by its instructions as much as by its bytes: an inlined helper
    # taking the arrays that branches (an early return, the hold test) made numba keep
    # reference counts per entry (100 ms a frame), hence the written-out loops.
    # Dead ends before: replacing the pass by kernels.accumulate_corrected (squares +
    # poisson, inline dark: 1.5 ms) plus a pass over the entries that only flags bins
    # holding a value outside mean ± limit (1.3 ms, 0.8 ms without factor and dark) costs as
    # much before the flagged bins are redone: they are 65 % of the entries with the zingers
    # (22 % on the clean image), and they must be re-accumulated (subtracting a zinger from
    # the stream sums loses the 1e-12 agreement).  Dark and factor side by side in one
    # (pixels, 2) array read no faster than two arrays.  A float32 factor breaks the
    # precision tests.
    #
    # Running sums: per bin 4 lanes (chosen by the stream position, breaking the
    # store-to-load dependency of consecutive entries in one bin) of 4 numbers, added as one
    # vector (kernels.vector_add4): Σ n c, Σ n c², and Σ n² g² p (poisson) or Σ n² c and
    # Σ n² c² (azimuthal); and per first bin of adjacent pairs 4 lanes of 8 numbers (the
    # same sums of its two bins, interleaved, one cache line; see _bin_sum).

    @dataclass(frozen=True)
    class _Layout:
        """An operator's entries for the clipping kernel, built once per operator.

        Three pixel-ordered streams as the plain kernel's (saxsdog.core.operator's
        StreamLayout, re-derived here so that the two can change independently): whole
        pixels (pixel, bin, count), pixels split over two adjacent bins whose counts add
        up to ``ov²`` (pixel, first bin, first count), and every other entry (pixel, bin,
        count).  Pixel indices are their low 16 bits with, per block of 2¹⁶ pixels, the
        stream position where the block starts.  Plus the bin-major index for scans: per
        bin (``starts``) the entries' pixels (ascending) and counts.
        """

        streams: tuple[np.ndarray, ...]
        whole: np.ndarray
        pair: np.ndarray
        rest: np.ndarray
        bin_pixels: np.ndarray
        bin_counts: np.ndarray
        starts: np.ndarray
        weights: np.ndarray
        squared: np.ndarray
        #: Per first count n of a pair: (n, ov² − n, n, ov² − n, n², (ov² − n)², n², (ov² − n)²).
        pair_table: np.ndarray

        @classmethod
        def of(cls, op: BinningOperator) -> _Layout:
            epp = op.entries_per_pixel
            first = np.zeros(epp.size, dtype=np.int64)
            np.cumsum(epp[:-1], out=first[1:], dtype=np.int64)
            whole = np.flatnonzero(epp == 1)
            two = np.flatnonzero(epp == 2)
            k2 = first[two]
            adjacent = (op.bins[k2 + 1].astype(np.int64) == op.bins[k2].astype(np.int64) + 1) & \
                (op.counts[k2].astype(np.int64) + op.counts[k2 + 1].astype(np.int64) == op.subpixels)
            pair = two[adjacent]
            kp = k2[adjacent]
            in_rest = np.ones(op.bins.size, dtype=bool)
            in_rest[first[whole]] = False
            in_rest[kp] = False
            in_rest[kp + 1] = False
            rest_entries = np.flatnonzero(in_rest)
            rest = np.searchsorted(first + epp, rest_entries, side="right")  # each entry's pixel
            starts_px = np.arange((epp.size >> _BLOCK_BITS) + 2, dtype=np.int64) << _BLOCK_BITS

            def split(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                low = (pixels & ((1 << _BLOCK_BITS) - 1)).astype(np.uint16)
                return low, np.searchsorted(pixels, starts_px).astype(np.int64)

            streams = (*split(whole), op.bins[first[whole]], op.counts[first[whole]],
                       *split(pair), op.bins[kp], op.counts[kp],
                       *split(rest), op.bins[rest_entries], op.counts[rest_entries])
            order = np.argsort(op.bins, kind="stable")  # entries are pixel-major: pixels ascend per bin
            per_bin = np.bincount(op.bins, minlength=op.n_bins)
            counts = op.counts.astype(np.float64)
            # each entry's pixel, not kept (op.entry_pixels would stay cached on the operator)
            entry_pixels = np.repeat(np.arange(epp.size, dtype=np.int32), epp.astype(np.int64))
            return cls(streams, whole, pair, rest, entry_pixels[order], op.counts[order],
                       np.concatenate([[0], np.cumsum(per_bin)]).astype(np.int64),
                       np.bincount(op.bins, weights=counts, minlength=op.n_bins),
                       np.bincount(op.bins, weights=counts * counts, minlength=op.n_bins),
                       cls._pair_table(op.subpixels))

        @staticmethod
        def _pair_table(subpixels: int) -> np.ndarray:
            n = np.arange(256, dtype=np.float64)
            m = subpixels - n
            return np.ascontiguousarray(np.stack([n, m, n, m, n * n, m * m, n * n, m * m], axis=1)).reshape(-1)

        def pack(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Per-pixel values (float64) at the whole pixels, the pairs and the other
            entries, in stream order."""
            return (np.ascontiguousarray(values[self.whole], dtype=np.float64),
                    np.ascontiguousarray(values[self.pair], dtype=np.float64),
                    np.ascontiguousarray(values[self.rest], dtype=np.float64))

    def _layout(op: BinningOperator) -> _Layout:
        cache = _cache(op)
        layout = cache.get("layout")
        if layout is None:
            layout = cache["layout"] = _Layout.of(op)
        assert isinstance(layout, _Layout)
        return layout

    @numba.njit(inline="always")
    def _pixel(img, j, t, g, d, scale, want_u):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Raw value p of pixel j, its corrected value c = g (p − s d) and Poisson term
        # u = g² max(p, 0); g and d at t (the pixel, or the stream position when packed).
        p = np.float64(img[j])
        c = p
        if d is not None:
            c = p - scale * d[t]
        gg = 1.0
        if g is not None:
            gg = np.float64(g[t])  # a stored float32 factor too: products in float64
            c *= gg
        u = 0.0
        if want_u is not None:
            u = gg * gg * max(p, 0.0)
        return p, c, u

    @numba.njit(inline="always")
    def _hold(b, c, n, u, j, held_n, overflow, hc, hn, hu, hj):  # type: ignore[no-untyped-def]  # pragma: no cover
        # An entry outside its bin's window: held (True), or it flags the bin's overflow.
        h = held_n[b]
        held = h < _K
        if held:
            s = b * _K + h
            hc[s] = c
            hn[s] = n
            hu[s] = u
            hj[s] = j
            held_n[b] = h + 1
        else:
            overflow[b] = 1
        return held

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_pass(img, wl, wk, wb, wc, pl, pk, pb, pc, rl, rk, rb, rc, ov2,  # type: ignore[no-untyped-def]
                 gw, gp, gr, dw, dp, dr, per_stream, scale, test, floor, dummy, lower, upper, pair_low, pair_high,
                 slots, pslots, pair_table, low, high, removed, held_n, overflow, hc, hn, hu, hj,
                 want_u, want_q):  # pragma: no cover
        # The first pass over the three streams; returns the frame's smallest value met.
        # With ``test`` each pixel is tested: unusable ones (``not p >= floor``, floor 0
        # with MaskNegative, else −inf, so NaN always fails; or p == dummy, NaN without a
        # DummyValue) only add their counts to ``removed`` (per bin Σ n, Σ n²).  Without,
        # every pixel is taken and the caller passes again with the test when the smallest
        # value or a NaN sum shows an unusable pixel.  An entry outside its bin's window
        # is held (_hold); the others are added to their lane's slot in one vector add.
        # Written out per stream: a helper taking the arrays in the common path would cost
        # reference-count updates per entry (numba keeps them in branching helpers).
        lowest = np.inf
        for blk in range(wk.size - 1):
            base = blk << _BLOCK_BITS
            for t in range(wk[blk], wk[blk + 1]):
                j = base + np.int64(wl[t])
                p, c, u = _pixel(img, j, t if per_stream is not None else j, gw, dw, scale, want_u)
                b = np.int64(wb[t])
                n = np.float64(wc[t])
                if test is not None:
                    if (not (p >= floor)) | (p == dummy):
                        removed[2 * b] += n
                        removed[2 * b + 1] += n * n
                        continue
                else:
                    lowest = p if p < lowest else lowest
                if ((c > upper[b]) | (c < lower[b])) and _hold(b, c, n, u, j, held_n, overflow, hc, hn, hu, hj):
                    continue
                i = b * 4 + (t & 3)
                nc = n * c
                x2 = 0.0
                x3 = 0.0
                if want_u is not None:
                    x2 = n * n * u
                if want_q is not None:
                    x2 = n * nc
                    x3 = x2 * c
                vector_add4(slots, i, nc, nc * c, x2, x3)  # type: ignore[call-arg]  # (an intrinsic)
                if low is not None:
                    low[i] = min(low[i], c)
                    high[i] = max(high[i], c)
        for blk in range(pk.size - 1):
            base = np.uint64(blk) << np.uint64(_BLOCK_BITS)  # type: ignore[assignment]
            for tt in range(pk[blk], pk[blk + 1]):
                # unsigned indices: numba then skips the negative-index wraparound
                t = np.uint64(tt)  # type: ignore[assignment]
                j = base + np.uint64(pl[t])  # type: ignore[assignment]
                p, c, u = _pixel(img, j, t if per_stream is not None else j, gp, dp, scale, want_u)
                b = np.uint64(pb[t])  # type: ignore[assignment]
                if test is not None:
                    if (not (p >= floor)) | (p == dummy):
                        b0 = np.int64(b)
                        n0 = np.float64(pc[t])
                        n1 = ov2 - n0
                        removed[2 * b0] += n0
                        removed[2 * b0 + 1] += n0 * n0
                        removed[2 * b0 + 2] += n1
                        removed[2 * b0 + 3] += n1 * n1
                        continue
                else:
                    lowest = p if p < lowest else lowest
                if (c <= pair_high[b]) & (c >= pair_low[b]):
                    # within the windows of both bins (their intersection): the pixel's
                    # sums for both bins in one 8-wide vector add into its pair slot
                    cc = c * c
                    x = 0.0
                    y = 0.0
                    if want_u is not None:
                        x = u
                    if want_q is not None:
                        x = c
                        y = cc
                    i = (b << np.uint64(2)) + (t & np.uint64(3))
                    vector_add8(pslots, i, pair_table, pc[t], c, cc, x, y)  # type: ignore[call-arg]
                    if low is not None:
                        i1 = i + np.uint64(4)
                        low[i] = min(low[i], c)
                        high[i] = max(high[i], c)
                        low[i1] = min(low[i1], c)
                        high[i1] = max(high[i1], c)
                    continue
                # an entry to hold: each bin on its own
                b0 = np.int64(b)
                b1 = b0 + 1
                n0 = np.float64(pc[t])
                n1 = ov2 - n0
                lane = np.int64(tt) & 3
                if not (((c > upper[b0]) | (c < lower[b0])) and
                        _hold(b0, c, n0, u, j, held_n, overflow, hc, hn, hu, hj)):
                    i = b0 * 4 + lane
                    nc = n0 * c
                    x2 = 0.0
                    x3 = 0.0
                    if want_u is not None:
                        x2 = n0 * n0 * u
                    if want_q is not None:
                        x2 = n0 * nc
                        x3 = x2 * c
                    vector_add4(slots, i, nc, nc * c, x2, x3)  # type: ignore[call-arg]  # (an intrinsic)
                    if low is not None:
                        low[i] = min(low[i], c)
                        high[i] = max(high[i], c)
                if not (((c > upper[b1]) | (c < lower[b1])) and
                        _hold(b1, c, n1, u, j, held_n, overflow, hc, hn, hu, hj)):
                    i = b1 * 4 + lane
                    nc = n1 * c
                    x2 = 0.0
                    x3 = 0.0
                    if want_u is not None:
                        x2 = n1 * n1 * u
                    if want_q is not None:
                        x2 = n1 * nc
                        x3 = x2 * c
                    vector_add4(slots, i, nc, nc * c, x2, x3)  # type: ignore[call-arg]  # (an intrinsic)
                    if low is not None:
                        low[i] = min(low[i], c)
                        high[i] = max(high[i], c)
        for blk in range(rk.size - 1):
            base = blk << _BLOCK_BITS
            for t in range(rk[blk], rk[blk + 1]):
                j = base + np.int64(rl[t])
                p, c, u = _pixel(img, j, t if per_stream is not None else j, gr, dr, scale, want_u)
                b = np.int64(rb[t])
                n = np.float64(rc[t])
                if test is not None:
                    if (not (p >= floor)) | (p == dummy):
                        removed[2 * b] += n
                        removed[2 * b + 1] += n * n
                        continue
                else:
                    lowest = p if p < lowest else lowest
                if ((c > upper[b]) | (c < lower[b])) and _hold(b, c, n, u, j, held_n, overflow, hc, hn, hu, hj):
                    continue
                i = b * 4 + (t & 3)
                nc = n * c
                x2 = 0.0
                x3 = 0.0
                if want_u is not None:
                    x2 = n * n * u
                if want_q is not None:
                    x2 = n * nc
                    x3 = x2 * c
                vector_add4(slots, i, nc, nc * c, x2, x3)  # type: ignore[call-arg]  # (an intrinsic)
                if low is not None:
                    low[i] = min(low[i], c)
                    high[i] = max(high[i], c)
        return lowest

    @numba.njit(inline="always")
    def _bin_sum(slots, pslots, b, k):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Running sum k of bin b over its lanes: its own slots (4 numbers a lane), the pair
        # slots of the pairs starting in it (8 numbers a lane: sum k of the first bin at
        # 2k, of the second at 2k + 1) and of those starting in the bin before.
        total = 0.0
        for lane in range(4):
            total += slots[16 * b + 4 * lane + k] + pslots[32 * b + 8 * lane + 2 * k]
            if b > 0:
                total += pslots[32 * (b - 1) + 8 * lane + 2 * k + 1]
        return total

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_fold(slots, pslots, held_n, hc, hn, hu, hout, w0, n2, removed, out, want_u, want_q):  # type: ignore[no-untyped-def]  # noqa: E501  # pragma: no cover
        # Per-bin sums into the rows of `out`: W, Σ n c, Σ n c², Σ n² g² p or Σ n² c,
        # Σ n² (azimuthal), Σ n² c² (azimuthal): the lanes (of the bin's own slots and of
        # the pair slots it is first or second bin of) plus the held entries kept.
        for b in range(held_n.size):
            t1 = 0.0
            t2 = 0.0
            t3 = 0.0
            t4 = 0.0
            for r in range(held_n[b]):
                s = b * _K + r
                if hout[s]:
                    continue
                n = hn[s]
                c = hc[s]
                t1 += n * c
                t2 += n * c * c
                if want_u is not None:
                    t3 += n * n * hu[s]
                if want_q is not None:
                    t3 += n * n * c
                    t4 += n * n * c * c
            t1 += _bin_sum(slots, pslots, b, 0)
            t2 += _bin_sum(slots, pslots, b, 1)
            t3 += _bin_sum(slots, pslots, b, 2)
            t4 += _bin_sum(slots, pslots, b, 3)
            out[0, b] = w0[b] - removed[2 * b]
            out[1, b] = t1
            out[2, b] = t2
            out[3, b] = t3
            if want_q is not None:
                out[4, b] = n2[b] - removed[2 * b + 1]
            out[5, b] = t4

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_statistics(out, subpixels, sigma, mean, limit):  # type: ignore[no-untyped-def]  # pragma: no cover
        # _statistics, bin by bin.
        root = math.sqrt(2.0 * math.pi)
        for b in range(mean.size):
            w = out[0, b]
            if w > 0:
                m = out[1, b] / w
                std = math.sqrt(max(out[2, b] / w - m * m, 0.0))
                chauvenet = math.sqrt(2.0 * math.log(max(w / subpixels, 3.0) / root))
                mean[b] = m
                limit[b] = max(sigma, chauvenet) * std
            else:
                mean[b] = 0.0
                limit[b] = 0.0

    @numba.njit(inline="always")
    def _subtract(b, n, c, u, slots, pslots, flagged, want_u, want_q):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Take a rejected entry that was added out of bin b's running sums (lane 0); a
        # value larger than the rest of a sum flags the bin for re-accumulation.
        base = 16 * b
        nc = n * c
        x2 = 0.0
        x3 = 0.0
        if want_u is not None:
            x2 = n * n * u
        if want_q is not None:
            x2 = n * nc
            x3 = x2 * c
        big = nc * c > 0.5 * _bin_sum(slots, pslots, b, 1)
        if want_u is not None:
            big = big or x2 > 0.5 * _bin_sum(slots, pslots, b, 2)
        if want_q is not None:
            big = big or x3 > 0.5 * _bin_sum(slots, pslots, b, 3)
        if big:
            flagged[b] = 1
        slots[base] -= nc
        slots[base + 1] -= nc * c
        slots[base + 2] -= x2
        slots[base + 3] -= x3

    @numba.njit(inline="always")
    def _find(bin_pixels, starts, b, j):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Bin-major position of pixel j's entry in bin b (the pixels of a bin ascend).
        lo = starts[b]
        hi = starts[b + 1]
        while lo < hi:
            mid = (lo + hi) >> 1
            if bin_pixels[mid] < j:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @numba.njit(inline="always")
    def _mark_held(b, marked, held_n, hj, bin_pixels, starts, mark, pixel_mark):  # type: ignore[no-untyped-def]  # pragma: no cover  # noqa: E501
        # Before bin b is visited entry by entry: mark its held entries (they are tested
        # from the held slots), once per call.
        if marked[b]:
            return
        marked[b] = 1
        for r in range(held_n[b]):
            j = hj[b * _K + r]
            mark[_find(bin_pixels, starts, b, j)] = 2
            pixel_mark[j] = 1

    @numba.njit(inline="always")
    def _reject_scanned(b, n, c, u, j, o, mark, pixel_mark, removed, changed, flagged, slots, pslots,  # type: ignore[no-untyped-def]  # noqa: E501
                        want_u, want_q):  # pragma: no cover
        # A scanned entry (bin-major position o) is rejected: marked, and taken out of the sums.
        mark[o] = 1
        pixel_mark[j] = 1
        changed[b] = 1
        removed[2 * b] += n
        removed[2 * b + 1] += n * n
        _subtract(b, n, c, u, slots, pslots, flagged, want_u, want_q)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_scan_gather(img, gpix, dpix, scale, floor, dummy, bin_pixels, bin_counts, starts, scan, mean, limit,  # type: ignore[no-untyped-def]  # noqa: E501
                        marked, held_n, hj, mark, pixel_mark, removed, changed, flagged, slots, pslots, low, high,
                        want_u, want_q):  # pragma: no cover
        # Test the kept, not held entries of the bins to scan, bin by bin.  With tracked
        # extremes (`low`, `high`: the first call on an operator, reset by the caller for
        # the scanned bins), the entries that stay give their bin's new extremes in lane 0:
        # the next cycle then tests the bin's bounds without the entries just rejected.
        rejected = 0
        for b in range(scan.size):
            if not scan[b]:
                continue
            _mark_held(b, marked, held_n, hj, bin_pixels, starts, mark, pixel_mark)
            m = mean[b]
            lim = limit[b]
            for o in range(starts[b], starts[b + 1]):
                if mark[o]:
                    continue
                j = np.int64(bin_pixels[o])
                p, c, u = _pixel(img, j, j, gpix, dpix, scale, want_u)
                if (not (p >= floor)) | (p == dummy):
                    continue
                if abs(c - m) <= lim:
                    if low is not None:
                        low[4 * b] = min(low[4 * b], c)
                        high[4 * b] = max(high[4 * b], c)
                    continue
                rejected += 1
                _reject_scanned(b, np.float64(bin_counts[o]), c, u, j, o, mark, pixel_mark, removed, changed,
                                flagged, slots, pslots, want_u, want_q)
        return rejected

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _scan_rare(b, n, c, u, j, m, lim, bin_pixels, starts, mark, pixel_mark, low, high,  # type: ignore[no-untyped-def]  # noqa: E501
                   removed, changed, flagged, slots, pslots, want_u, want_q):  # pragma: no cover
        # The stream scan's entry of a pixel with some held or rejected entry, or outside
        # the band: skipped when marked, else tested.  Returns 1 when rejected.
        o = _find(bin_pixels, starts, b, j)
        rejected = 0
        if not mark[o]:
            if abs(c - m) <= lim:
                if low is not None:
                    low[4 * b] = min(low[4 * b], c)
                    high[4 * b] = max(high[4 * b], c)
            else:
                rejected = 1
                _reject_scanned(b, n, c, u, j, o, mark, pixel_mark, removed, changed, flagged, slots, pslots,
                                want_u, want_q)
        return rejected

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_scan_stream(img, wl, wk, wb, wc, pl, pk, pb, pc, rl, rk, rb, rc, ov2,  # type: ignore[no-untyped-def]
                        gw, gp, gr, dw, dp, dr, per_stream, scale, floor, dummy, scan, mean, limit,
                        bin_pixels, starts, mark, pixel_mark, removed, changed, flagged, slots, pslots, low, high,
                        want_u, want_q):  # pragma: no cover
        # The same scan streaming the pixels (when the bins to scan hold many entries; the
        # caller has marked their held entries).
        rejected = 0
        for blk in range(wk.size - 1):
            base = blk << _BLOCK_BITS
            for t in range(wk[blk], wk[blk + 1]):
                b = np.int64(wb[t])
                if not scan[b]:
                    continue
                j = base + np.int64(wl[t])
                p, c, u = _pixel(img, j, t if per_stream is not None else j, gw, dw, scale, want_u)
                if (not (p >= floor)) | (p == dummy):
                    continue
                n = np.float64(wc[t])
                if scan[b]:
                    if pixel_mark[j] or not (abs(c - mean[b]) <= limit[b]):
                        rejected += _scan_rare(b, n, c, u, j, mean[b], limit[b], bin_pixels, starts, mark,
                                               pixel_mark, low, high, removed, changed, flagged, slots, pslots, want_u, want_q)
                    elif low is not None:
                        low[4 * b] = min(low[4 * b], c)
                        high[4 * b] = max(high[4 * b], c)
        for blk in range(pk.size - 1):
            base = blk << _BLOCK_BITS
            for t in range(pk[blk], pk[blk + 1]):
                b0 = np.int64(pb[t])
                b1 = b0 + 1
                if not (scan[b0] or scan[b1]):
                    continue
                j = base + np.int64(pl[t])
                p, c, u = _pixel(img, j, t if per_stream is not None else j, gp, dp, scale, want_u)
                if (not (p >= floor)) | (p == dummy):
                    continue
                n0 = np.float64(pc[t])
                n1 = ov2 - n0
                if scan[b0]:
                    if pixel_mark[j] or not (abs(c - mean[b0]) <= limit[b0]):
                        rejected += _scan_rare(b0, n0, c, u, j, mean[b0], limit[b0], bin_pixels, starts, mark,
                                               pixel_mark, low, high, removed, changed, flagged, slots, pslots, want_u, want_q)
                    elif low is not None:
                        low[4 * b0] = min(low[4 * b0], c)
                        high[4 * b0] = max(high[4 * b0], c)
                if scan[b1]:
                    if pixel_mark[j] or not (abs(c - mean[b1]) <= limit[b1]):
                        rejected += _scan_rare(b1, n1, c, u, j, mean[b1], limit[b1], bin_pixels, starts, mark,
                                               pixel_mark, low, high, removed, changed, flagged, slots, pslots, want_u, want_q)
                    elif low is not None:
                        low[4 * b1] = min(low[4 * b1], c)
                        high[4 * b1] = max(high[4 * b1], c)
        for blk in range(rk.size - 1):
            base = blk << _BLOCK_BITS
            for t in range(rk[blk], rk[blk + 1]):
                b = np.int64(rb[t])
                if not scan[b]:
                    continue
                j = base + np.int64(rl[t])
                p, c, u = _pixel(img, j, t if per_stream is not None else j, gr, dr, scale, want_u)
                if (not (p >= floor)) | (p == dummy):
                    continue
                n = np.float64(rc[t])
                if scan[b]:
                    if pixel_mark[j] or not (abs(c - mean[b]) <= limit[b]):
                        rejected += _scan_rare(b, n, c, u, j, mean[b], limit[b], bin_pixels, starts, mark,
                                               pixel_mark, low, high, removed, changed, flagged, slots, pslots, want_u, want_q)
                    elif low is not None:
                        low[4 * b] = min(low[4 * b], c)
                        high[4 * b] = max(high[4 * b], c)
        return rejected

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_readd(img, gpix, dpix, scale, floor, dummy, bin_pixels, bin_counts, starts, flagged, marked, held_n,  # type: ignore[no-untyped-def]  # noqa: E501
                  hj, mark, pixel_mark, slots, pslots, want_u, want_q):  # pragma: no cover
        # Re-accumulate the running sums of the flagged bins from their kept, not held entries.
        for b in range(flagged.size):
            if not flagged[b]:
                continue
            flagged[b] = 0
            _mark_held(b, marked, held_n, hj, bin_pixels, starts, mark, pixel_mark)
            slots[16 * b:16 * b + 16] = 0.0
            for lane in range(4):
                for k in range(4):
                    pslots[32 * b + 8 * lane + 2 * k] = 0.0
                    if b > 0:
                        pslots[32 * (b - 1) + 8 * lane + 2 * k + 1] = 0.0
            for o in range(starts[b], starts[b + 1]):
                if mark[o]:
                    continue
                j = np.int64(bin_pixels[o])
                p, c, u = _pixel(img, j, j, gpix, dpix, scale, want_u)
                if (not (p >= floor)) | (p == dummy):
                    continue
                n = np.float64(bin_counts[o])
                nc = n * c
                x2 = 0.0
                x3 = 0.0
                if want_u is not None:
                    x2 = n * n * u
                if want_q is not None:
                    x2 = n * nc
                    x3 = x2 * c
                vector_add4(slots, 4 * b + (o & 3), nc, nc * c, x2, x3)  # type: ignore[call-arg]

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_cycles(img, wl, wk, wb, wc, pl, pk, pb, pc, rl, rk, rb, rc, ov2,  # type: ignore[no-untyped-def]
                   gw, gp, gr, dw, dp, dr, per_stream, gpix, dpix, scale, floor, dummy, subpixels, sigma, cycles,
                   bin_pixels, bin_counts, starts, w0, n2, lower, upper, slots, pslots, low, high, removed, held_n,
                   overflow, hc, hn, hu, hj, mark, pixel_mark, out, window_low, window_high,
                   want_u, want_q):  # pragma: no cover
        # The cycles after the first pass, the final sums in `out` (see _nb_fold) and the
        # next call's window; returns the number of entries rejected.
        nb = held_n.size
        hout = np.zeros(nb * _K, dtype=np.uint8)
        mean = np.empty(nb)
        limit = np.empty(nb)
        active = np.empty(nb, dtype=np.uint8)
        changed = np.zeros(nb, dtype=np.uint8)
        scan = np.zeros(nb, dtype=np.uint8)
        flagged = np.zeros(nb, dtype=np.uint8)
        marked = np.zeros(nb, dtype=np.uint8)
        _nb_fold(slots, pslots, held_n, hc, hn, hu, hout, w0, n2, removed, out, want_u, want_q)
        for b in range(nb):
            active[b] = out[0, b] > 0
        total = bin_pixels.size
        rejected = 0
        for _ in range(cycles):
            _nb_statistics(out, subpixels, sigma, mean, limit)
            n_reject = 0
            n_scan = 0
            for b in range(nb):
                changed[b] = 0
                scan[b] = 0
                if not active[b]:
                    continue
                m = mean[b]
                lim = limit[b]
                # Every entry not held lies within [lowest, highest]: the window, or the
                # tracked extremes (±inf when the lanes saw no entry).
                if low is not None:
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
                    s = b * _K + r
                    if hout[s]:
                        continue
                    if not (abs(hc[s] - m) <= lim):
                        hout[s] = 1
                        n = hn[s]
                        removed[2 * b] += n
                        removed[2 * b + 1] += n * n
                        changed[b] = 1
                        n_reject += 1
                if scan[b]:
                    n_scan += starts[b + 1] - starts[b]
                    if low is not None:  # the scan gives the bin new extremes
                        low[4 * b:4 * b + 4] = np.inf
                        high[4 * b:4 * b + 4] = -np.inf
            if n_scan > _STREAM_FRACTION * total:
                for b in range(nb):
                    if scan[b]:
                        _mark_held(b, marked, held_n, hj, bin_pixels, starts, mark, pixel_mark)
                n_reject += _nb_scan_stream(img, wl, wk, wb, wc, pl, pk, pb, pc, rl, rk, rb, rc, ov2,
                                            gw, gp, gr, dw, dp, dr, per_stream, scale, floor, dummy, scan, mean,
                                            limit, bin_pixels, starts, mark, pixel_mark, removed, changed, flagged,
                                            slots, pslots, low, high, want_u, want_q)
            elif n_scan:
                n_reject += _nb_scan_gather(img, gpix, dpix, scale, floor, dummy, bin_pixels, bin_counts, starts,
                                            scan, mean, limit, marked, held_n, hj, mark, pixel_mark, removed,
                                            changed, flagged, slots, pslots, low, high, want_u, want_q)
            rejected += n_reject
            if n_reject == 0:
                break
            _nb_readd(img, gpix, dpix, scale, floor, dummy, bin_pixels, bin_counts, starts, flagged, marked,
                      held_n, hj, mark, pixel_mark, slots, pslots, want_u, want_q)
            _nb_fold(slots, pslots, held_n, hc, hn, hu, hout, w0, n2, removed, out, want_u, want_q)
            for b in range(nb):  # unchanged bins keep their statistics: nothing new to reject
                active[b] = changed[b]
        # Reset the marks for the next call (the pool), and the next call's window.
        for b in range(nb):
            if marked[b]:
                for o in range(starts[b], starts[b + 1]):
                    if mark[o]:
                        pixel_mark[bin_pixels[o]] = 0
                        mark[o] = 0
        _nb_statistics(out, subpixels, sigma, mean, limit)
        for b in range(nb):
            if out[0, b] > 0:
                window_low[b] = mean[b] - _HOLD_AT * limit[b]
                window_high[b] = mean[b] + _HOLD_AT * limit[b]
            else:
                window_low[b] = -np.inf
                window_high[b] = np.inf
        return rejected

    def _numba_clip(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None, dark: np.ndarray | None,
                    dark_scale: float, sigma: float, cycles: int, mode: int, mask_negative: bool,
                    dummy_value: float | None, packed: PackedCorrections | None) -> tuple[_Sums, int]:
        layout = _layout(op)
        cache = _cache(op)
        nb = op.n_bins
        want_u = _ON if mode == 1 else None
        want_q = _ON if mode == 2 else None
        gs: tuple[np.ndarray | None, ...]
        ds: tuple[np.ndarray | None, ...]
        if packed is not None:
            per_stream = _ON
            gs = packed.stream_factor or (None, None, None)
            ds = packed.stream_dark or (None, None, None)
        else:
            per_stream = None
            gs, ds = (factor, factor, factor), (dark, dark, dark)
        window = cache.get("window")
        if window is None:
            lower, upper = np.full(nb, -np.inf), np.full(nb, np.inf)
        else:
            lower, upper = window  # type: ignore[misc]
        # A pair's value within both its bins' windows: within their intersection.
        pair_low, pair_high = lower.copy(), upper.copy()
        np.maximum(lower[:-1], lower[1:], out=pair_low[:-1])
        np.minimum(upper[:-1], upper[1:], out=pair_high[:-1])
        floor = 0.0 if mask_negative else -np.inf
        dummy = np.nan if dummy_value is None else dummy_value
        # Test each pixel at once when a DummyValue is set or the previous frame needed it.
        test = _ON if (dummy_value is not None or cache.get("dummies", False)) else None
        size = nb * 4
        hc, hn, hu = np.empty(nb * _K), np.empty(nb * _K), np.empty(nb * _K)
        hj = np.empty(nb * _K, dtype=np.int64)
        ov2 = float(op.subpixels)
        while True:
            slots = np.zeros(4 * size)
            pslots = _aligned_zeros(8 * size)  # one cache line a pair slot
            low = high = None
            if window is None:
                low, high = np.full(size, np.inf), np.full(size, -np.inf)
            removed = np.zeros(2 * nb + 2)  # + 2: a pair's second bin may be the last one
            held_n = np.zeros(nb, dtype=np.int64)
            overflow = np.zeros(nb, dtype=np.uint8)
            lowest = _nb_pass(  # type: ignore[call-arg]
                flat, *layout.streams, ov2, *gs, *ds, per_stream, dark_scale, test, floor, dummy,
                lower, upper, pair_low, pair_high, slots, pslots, layout.pair_table, low, high,
                removed, held_n, overflow, hc, hn, hu, hj, want_u, want_q)
            if test is not None:
                break
            if not (lowest < floor or np.isnan(slots).any() or np.isnan(pslots).any()):
                break
            test = _ON  # an unusable pixel was taken: pass again, testing each pixel
        cache["dummies"] = test is not None
        pool = cache.setdefault("marks", [])
        assert isinstance(pool, list)
        try:
            mark, pixel_mark = pool.pop()
        except IndexError:
            mark, pixel_mark = np.zeros(op.bins.size, dtype=np.uint8), np.zeros(flat.size, dtype=np.uint8)
        out = np.zeros((6, nb))
        window_low, window_high = np.empty(nb), np.empty(nb)
        gpix = packed.pixel_factor if packed is not None else factor
        rejected = _nb_cycles(  # type: ignore[call-arg]
            flat, *layout.streams, ov2, *gs, *ds, per_stream, gpix, dark, dark_scale, floor,
            dummy, float(op.subpixels), sigma, cycles, layout.bin_pixels, layout.bin_counts,
            layout.starts, layout.weights, layout.squared, lower, upper, slots, pslots, low, high,
            removed, held_n, overflow, hc, hn, hu, hj, mark, pixel_mark, out,
            window_low, window_high, want_u, want_q)
        pool.append((mark, pixel_mark))
        # Replaced, never modified in place: a concurrent call may be reading the old one.
        cache["window"] = (window_low, window_high)
        zero = np.zeros(nb)
        return _Sums(out[0], out[1], out[2], out[3], out[4] if mode == 2 else zero, out[5]), int(rejected)

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


def _combined_factor(op: BinningOperator, pixel_factor: np.ndarray | None,
                     operator_correction: bool) -> np.ndarray | None:
    """The per-pixel factor the kernels use (checked; the operator's correction folded in)."""
    factor = _per_pixel("pixel_factor", pixel_factor, op.shape[0] * op.shape[1])
    if op.correction is not None and operator_correction:
        factor = op.correction.astype(np.float64) if factor is None else factor * op.correction
    return factor


def pack_corrections(op: BinningOperator, pixel_factor: np.ndarray | None, dark: np.ndarray | None, *,
                     operator_correction: bool = True) -> PackedCorrections | None:
    """The factor and dark of a calibration packed for :func:`clip_accumulate` (once).

    Parameters are those of :func:`clip_accumulate` (``dark`` unscaled: the frame's
    ``dark_scale`` is applied per call).  Returns ``None`` without numba or when there
    is neither a factor nor a dark (nothing to pack).

    Raises
    ------
    ValueError
        On a factor or dark of the wrong size.
    """
    n_pix = op.shape[0] * op.shape[1]
    combined = _combined_factor(op, pixel_factor, operator_correction)
    dark_arr = _per_pixel("dark", dark, n_pix)
    if "numba" not in _REGISTRY or (combined is None and dark_arr is None):
        return None
    layout = _layout(op)
    return PackedCorrections(op, pixel_factor, dark, bool(operator_correction) and op.correction is not None, combined,
                             None if combined is None else layout.pack(combined),
                             None if dark_arr is None else layout.pack(dark_arr))


def clip_accumulate(op: BinningOperator, flat_image: np.ndarray, *, pixel_factor: np.ndarray | None,
                    dark: np.ndarray | None, sigma: float, cycles: int, error_model: str = "poisson",
                    mask_negative: bool = True, dummy_value: float | None = None,
                    method: str | None = None, operator_correction: bool = True, dark_scale: float = 1.0,
                    packed: PackedCorrections | None = None) -> ClipResult:
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
        Dark per pixel, or ``None``; ``dark_scale`` multiplies it (frame over dark
        exposure time).
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
    dark_scale
        Multiplies the dark before it is subtracted.
    packed
        ``pack_corrections(op, pixel_factor, dark, operator_correction=...)``, kept by
        the caller for its calibration: the numba kernel then streams the factor and the
        dark of the used pixels in order (the results are the same without it).

    Returns
    -------
    ClipResult

    Raises
    ------
    ValueError
        On a wrong image/factor/dark size, ``sigma <= 0``, ``cycles < 0``, an unknown
        error model or method, or ``packed`` made for another operator, factor or dark.
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
    if not (isinstance(dark_scale, (int, float)) and math.isfinite(dark_scale)):
        raise ValueError(f"dark_scale must be a finite number, got {dark_scale!r}")
    if packed is not None:
        if packed.operator is not op or packed.factor is not pixel_factor or packed.dark is not dark or \
                packed.operator_correction != (bool(operator_correction) and op.correction is not None):
            raise ValueError("packed corrections were made for another operator, pixel_factor or dark")
        factor = packed.pixel_factor  # the product with the operator's correction, made once
        _per_pixel("pixel_factor", pixel_factor, n_pix)
    else:
        factor = _combined_factor(op, pixel_factor, operator_correction)
    dark_arr = _per_pixel("dark", dark, n_pix)
    mode = _MODE[error_model]
    sums, rejected = _REGISTRY[name](op, flat, factor, dark_arr, float(dark_scale), float(sigma), int(cycles), mode,
                                     bool(mask_negative), None if dummy_value is None else float(dummy_value),
                                     packed)
    return _result(sums, op.subpixels, float(sigma), mode, rejected)
