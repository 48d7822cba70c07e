"""Kernels applying a :class:`~saxsdog.core.operator.BinningOperator` to an image.

Two implementations, selected by name:

``"scipy"``
    The reference: a ``scipy.sparse`` CSR matrix–vector product.  Always available.
``"numba"``
    One streaming pass over the image in memory order, scattering into the (small,
    cache-resident) bin arrays; integer sub-pixel counts, float64 accumulation.
    Registered only if numba imports.

Both return count-weighted sums ``Σ_j n_bj c_j`` (and ``Σ_j n_bj c_j²``) where ``c_j`` is
the corrected pixel value; callers normalise by the bin counts.

:func:`accumulate_corrected` is the same pass with the corrections of
:mod:`saxsdog.core.corrections`: a per-pixel factor ``g``, a dark (inline, or only
for the dummies' share when the caller subtracts the dark's constant bin vector), the
exact Poisson variance sums ``Σ n² g² max(p, 0)`` and per-frame exclusion of dummy pixels,
all in one pass.  :func:`accumulate_spread` is the second pass of the azimuthal error
model.  The scipy versions are the references the numba kernels are tested against.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .operator import BinningOperator

__all__ = ["available_methods", "default_method", "accumulate", "accumulate_corrected",
           "accumulate_spread", "CorrectedSums"]

_Kernel = Callable[[BinningOperator, np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]
_REGISTRY: dict[str, _Kernel] = {}


@dataclass
class CorrectedSums:
    """Bin sums of one corrected frame (see :func:`accumulate_corrected`).

    Attributes
    ----------
    signal
        ``Σ_j n_bj g_j (p_j − s·d_j)`` over the frame's non-dummy pixels when the dark was
        given inline, else ``Σ_j n_bj g_j p_j``.
    squares
        ``Σ_j n_bj c_j²`` (``None`` unless asked for).
    variance
        ``Σ_j n_bj² g_j² max(p_j, 0)`` (``None`` unless asked for).
    removed
        ``Σ_j n_bj`` over the dummy pixels (``None`` without ``mask_negative``).
    removed_dark
        ``Σ_j n_bj g_j d_j`` over the dummy pixels (``None`` unless a dark was given for it).
    dummy_pixels
        Dummy pixels of the frame that the operator uses.
    """

    signal: np.ndarray
    squares: np.ndarray | None = None
    variance: np.ndarray | None = None
    removed: np.ndarray | None = None
    removed_dark: np.ndarray | None = None
    dummy_pixels: int = 0


#: ``kernel(op, flat, factor, dark_inline, dark_removed, dark_scale, squares, poisson,
#: mask_negative, dummy_value)``
_CorrectedKernel = Callable[..., CorrectedSums]
#: ``kernel(op, flat, mean, factor, dark, dark_scale, mask_negative, dummy_value)``
_SpreadKernel = Callable[..., np.ndarray]
_CORRECTED: dict[str, _CorrectedKernel] = {}
_SPREAD: dict[str, _SpreadKernel] = {}


def _counts_csr(op: BinningOperator, squared: bool = False) -> Any:
    """The operator's sub-pixel counts (or their squares) as a cached CSR matrix."""
    import scipy.sparse as sp

    cache = op.__dict__.setdefault("_scipy_cache", {})
    key = "counts2" if squared else "counts"
    m = cache.get(key)
    if m is None:
        n_pix = op.shape[0] * op.shape[1]
        weights = op.counts.astype(np.float64)
        if squared:
            weights = weights * weights
        m = sp.csr_matrix(
            sp.coo_matrix((weights, (op.bins.astype(np.int64), op.entry_pixels)), shape=(op.n_bins, n_pix))
        )
        cache[key] = m
    return m


def _dummies(flat: np.ndarray, mask_negative: bool, dummy_value: float | None) -> np.ndarray | None:
    """Boolean per pixel: excluded as a dummy in this frame (``None``: none at all)."""
    if not mask_negative:
        return None
    with np.errstate(invalid="ignore"):
        bad = flat < 0
        if dummy_value is not None:
            bad |= flat == dummy_value
    return bad if bad.any() else None


def _scipy_accumulate(op: BinningOperator, flat: np.ndarray, squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
    m = _counts_csr(op)
    values = flat.astype(np.float64)
    if op.correction is not None:
        values = values * op.correction
    s1 = m @ values
    s2 = m @ (values * values) if squares else None
    return s1, s2


_REGISTRY["scipy"] = _scipy_accumulate

#: Above this many bins (cake maps) the numba kernel accumulates in one lane, not four.
_ONE_LANE_BINS = 32768
#: Up to this many pixels a frame is first scanned for dummies (the main pass then tests
#: none when there are none); larger frames are tested in the main pass, once.  Measured
#: (thread CPU time, interleaved): the scan saves 7 % of the exact-error pass on a Pilatus
#: 1M (frame and operator stay in the last-level cache) and costs 12 % on an Eiger 16M (a
#: second read of 90 MB from memory).
_PRESCAN_PIXELS = 4_000_000

def _scipy_corrected(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None,
                     dark_inline: np.ndarray | None, dark_removed: np.ndarray | None, dark_scale: float,
                     squares: bool, poisson: bool, mask_negative: bool,
                     dummy_value: float | None) -> CorrectedSums:
    m = _counts_csr(op)
    raw = flat.astype(np.float64)
    values = raw
    if dark_inline is not None:
        values = raw - dark_scale * dark_inline
    if factor is not None:
        values = values * factor
    bad = _dummies(flat, mask_negative, dummy_value)
    if bad is not None:
        values = np.where(bad, 0.0, values)
    out = CorrectedSums(m @ values)
    if squares:
        out.squares = m @ (values * values)
    if poisson:
        var = np.maximum(raw, 0.0)
        if factor is not None:
            var = var * (factor * factor)
        if bad is not None:
            var = np.where(bad, 0.0, var)
        out.variance = _counts_csr(op, squared=True) @ var
    if mask_negative:
        out.removed = np.zeros(op.n_bins)
        if dark_removed is not None:
            out.removed_dark = np.zeros(op.n_bins)
        if bad is not None:
            out.removed = m @ bad.astype(np.float64)
            if dark_removed is not None:
                gd = dark_removed if factor is None else dark_removed * factor
                out.removed_dark = m @ np.where(bad, gd, 0.0)
            out.dummy_pixels = int(np.count_nonzero(bad & (op.entries_per_pixel > 0)))
    return out


def _scipy_spread(op: BinningOperator, flat: np.ndarray, mean: np.ndarray, factor: np.ndarray | None,
                  dark: np.ndarray | None, dark_scale: float, mask_negative: bool,
                  dummy_value: float | None) -> np.ndarray:
    values = flat.astype(np.float64)
    if dark is not None:
        values = values - dark_scale * dark
    if factor is not None:
        values = values * factor
    pix = op.entry_pixels
    delta = values[pix] - mean[op.bins]
    weights = op.counts.astype(np.float64) ** 2 * delta * delta
    bad = _dummies(flat, mask_negative, dummy_value)
    if bad is not None:
        weights = np.where(bad[pix], 0.0, weights)
    spread: np.ndarray = np.bincount(op.bins, weights=weights, minlength=op.n_bins).astype(np.float64)
    return spread


_CORRECTED["scipy"] = _scipy_corrected
_SPREAD["scipy"] = _scipy_spread

try:  # pragma: no branch - depends on the environment
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_value(img, j, g, dark_inline, dark_scale, want_var):  # type: ignore[no-untyped-def]  # pragma: no cover
        # The corrected value v = g (p − s d) of pixel j and its Poisson variance term
        # g² max(p, 0) (= max(g v, 0) without an inline dark, since g > 0: one product less).
        p = np.float64(img[j])
        v = p
        if dark_inline is not None:
            v = p - dark_scale * dark_inline[j]
        if g is not None:
            v *= g[j]
        var = 0.0
        if want_var:
            if dark_inline is None:
                gv = v
                if g is not None:
                    gv = v * g[j]
                var = max(gv, 0.0)
            else:
                var = max(p, 0.0)
                if g is not None:
                    var *= g[j] * g[j]
        return p, v, var

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_add(out, out2, outvar, i, c, v, var):  # type: ignore[no-untyped-def]  # pragma: no cover
        out[i] += c * v
        if out2 is not None:
            out2[i] += c * v * v
        if outvar is not None:
            w = np.float64(c)
            outvar[i] += w * w * var

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_drop(removed, removed_dark, b, c, gd):  # type: ignore[no-untyped-def]  # pragma: no cover
        removed[b] += c
        if removed_dark is not None:
            removed_dark[b] += c * gd

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_dummy_dark(j, g, dark_removed):  # type: ignore[no-untyped-def]  # pragma: no cover
        gd = 0.0
        if dark_removed is not None:
            gd = dark_removed[j]
            if g is not None:
                gd *= g[j]
        return gd

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_streams(img, wl, wk, wb, wc, pl, pk, pb, pc, rl, rk, rb, rc,  # type: ignore[no-untyped-def]
                    g, dark_inline, dark_removed, dark_scale, out, out2, outvar,
                    removed, removed_dark, dummy, has_dummy, shift):  # pragma: no cover
        # Returns the number of dummy pixels met (0 unless ``removed`` is given).
        # One pass over the image in three pixel-ordered streams (see StreamLayout): whole
        # pixels, pixels split over two adjacent bins, the rest.  A pixel's corrected value
        # (and variance term) is computed once for all its entries.  2**shift interleaved
        # accumulator lanes per bin (4; 1 for cake maps, see _ONE_LANE_BINS), chosen by the
        # position in the stream, break the store-to-load dependency on out[b] when
        # consecutive pixels hit the same bin.  Every optional array is pruned at compile
        # time when None.  With ``removed`` (MaskNegative) each pixel is tested here, once,
        # on the value just loaded (a separate scan for dummies first would read the image
        # twice: 20 % of the pass on a 16-Mpixel frame that does not fit in the cache);
        # dummies only add their weight (and dark share) to the small `removed` vectors.
        # Indices are unsigned: numba then skips the negative-index wraparound.
        lane_mask = (np.uint64(1) << shift) - np.uint64(1)
        want_var = outvar is not None
        n_dummy = 0
        bits = np.uint64(16)  # STREAM_BLOCK_BITS: pixel = block << 16 | low
        for blk in range(wk.size - 1):
            base = np.uint64(blk) << bits
            for tt in range(wk[blk], wk[blk + 1]):
                t = np.uint64(tt)
                j = base + np.uint64(wl[t])
                p, v, var = _nb_value(img, j, g, dark_inline, dark_scale, want_var)
                if removed is not None:
                    if p < 0.0 or (has_dummy and p == dummy):
                        _nb_drop(removed, removed_dark, wb[t], wc[t], _nb_dummy_dark(j, g, dark_removed))
                        n_dummy += 1
                        continue
                _nb_add(out, out2, outvar, (np.uint64(wb[t]) << shift) + (t & lane_mask), wc[t], v, var)
        for blk in range(pk.size - 1):
            base = np.uint64(blk) << bits
            for tt in range(pk[blk], pk[blk + 1]):
                t = np.uint64(tt)
                j = base + np.uint64(pl[t])
                p, v, var = _nb_value(img, j, g, dark_inline, dark_scale, want_var)
                b = np.uint64(pb[t])
                if removed is not None:
                    if p < 0.0 or (has_dummy and p == dummy):
                        gd = _nb_dummy_dark(j, g, dark_removed)
                        _nb_drop(removed, removed_dark, b, pc[t, 0], gd)
                        _nb_drop(removed, removed_dark, b + np.uint64(1), pc[t, 1], gd)
                        n_dummy += 1
                        continue
                i = (b << shift) + (t & lane_mask)
                _nb_add(out, out2, outvar, i, pc[t, 0], v, var)
                _nb_add(out, out2, outvar, i + (np.uint64(1) << shift), pc[t, 1], v, var)
        for blk in range(rk.size - 1):
            base = np.uint64(blk) << bits
            for tt in range(rk[blk], rk[blk + 1]):
                t = np.uint64(tt)
                j = base + np.uint64(rl[t])
                p, v, var = _nb_value(img, j, g, dark_inline, dark_scale, want_var)
                if removed is not None:
                    if p < 0.0 or (has_dummy and p == dummy):
                        _nb_drop(removed, removed_dark, rb[t], rc[t], _nb_dummy_dark(j, g, dark_removed))
                        # a pixel's entries are consecutive in this stream: count it once
                        n_dummy += tt == rk[blk] or rl[t - np.uint64(1)] != rl[t]
                        continue
                _nb_add(out, out2, outvar, (np.uint64(rb[t]) << shift) + (t & lane_mask), rc[t], v, var)
        return n_dummy

    def _run_streams(op: BinningOperator, flat: np.ndarray, g: np.ndarray | None, dark_inline: np.ndarray | None,
                     dark_removed: np.ndarray | None, dark_scale: float, out: np.ndarray, out2: np.ndarray | None,
                     outvar: np.ndarray | None, removed: np.ndarray | None, removed_dark: np.ndarray | None,
                     dummy: float, has_dummy: bool) -> int:
        s = op.streams
        return int(_nb_streams(flat, s.whole_low, s.whole_blocks, s.whole_bins, s.whole_counts,
                    s.pair_low, s.pair_blocks, s.pair_bins, s.pair_counts,
                    s.rest_low, s.rest_blocks, s.rest_bins, s.rest_counts, g, dark_inline, dark_removed, float(dark_scale),
                    out, out2, outvar, removed, removed_dark, dummy, has_dummy, np.uint64(_lane_shift(op.n_bins))))

    def _numba_accumulate(op: BinningOperator, flat: np.ndarray,
                          squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
        # the plain sums are the corrected kernel's with g = the operator's own correction
        out, out2 = _lanes(op.n_bins, True), _lanes(op.n_bins, squares)
        assert out is not None
        _run_streams(op, flat, op.correction, None, None, 1.0, out, out2, None, None, None, 0.0, False)
        s1 = _fold(out, op.n_bins)
        assert s1 is not None
        return s1, _fold(out2, op.n_bins)

    _REGISTRY["numba"] = _numba_accumulate

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_count_dummies(img, entries_per_pixel, dummy, has_dummy):  # type: ignore[no-untyped-def]  # pragma: no cover
        # A quick scan (~0.1 ms per megapixel): most frames have no dummy pixel the
        # operator uses (the mask covers the gaps), and then the main pass needs no test
        # at all.  Only for frames that stay in the cache (see _PRESCAN_PIXELS).
        n = 0
        for j in range(img.size):
            p = img[np.uint64(j)]
            bad = p < 0
            if has_dummy:
                bad = bad or p == dummy
            n += bad and entries_per_pixel[np.uint64(j)] > 0
        return n

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_spread(img, pix, bins, counts, mean, g, dark, dark_scale,  # type: ignore[no-untyped-def]
                   check, dummy, has_dummy, out, shift):  # pragma: no cover
        for k in range(pix.size):
            j = np.uint64(pix[k])
            p = np.float64(img[j])
            if check and (p < 0.0 or (has_dummy and p == dummy)):
                continue
            v = p
            if dark is not None:
                v = p - dark_scale * dark[j]
            if g is not None:
                v *= g[j]
            b = np.uint64(bins[k])
            w = np.float64(counts[k])
            delta = v - mean[b]
            out[(b << shift) + (np.uint64(k) & ((np.uint64(1) << shift) - np.uint64(1)))] += w * w * delta * delta

    def _lane_shift(n_bins: int) -> int:
        # four lanes break the store-to-load dependency of consecutive entries in one bin;
        # a cake map's many bins would make them four large arrays to zero and fold
        return 0 if n_bins > _ONE_LANE_BINS else 2

    def _lanes(n_bins: int, wanted: bool) -> np.ndarray | None:
        return np.zeros(n_bins << _lane_shift(n_bins), dtype=np.float64) if wanted else None

    def _fold(lanes: np.ndarray | None, n_bins: int) -> np.ndarray | None:
        if lanes is None:
            return None
        shift = _lane_shift(n_bins)
        if shift == 0:
            return lanes
        # lane by lane in lane order: strided adds are four times faster than
        # reshape(n, lanes).sum(axis=1), whose inner loop runs over only four numbers
        step = 1 << shift
        folded: np.ndarray = lanes[0::step] + lanes[1::step]
        for lane in range(2, step):
            folded += lanes[lane::step]
        return folded

    def _numba_corrected(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None,
                         dark_inline: np.ndarray | None, dark_removed: np.ndarray | None, dark_scale: float,
                         squares: bool, poisson: bool, mask_negative: bool,
                         dummy_value: float | None) -> CorrectedSums:
        n = op.n_bins
        out, out2, outvar = _lanes(n, True), _lanes(n, squares), _lanes(n, poisson)
        dummy = float(dummy_value) if dummy_value is not None else 0.0
        removed = np.zeros(n) if mask_negative else None
        removed_dark = np.zeros(n) if (mask_negative and dark_removed is not None) else None
        check = mask_negative
        if mask_negative and flat.size <= _PRESCAN_PIXELS:
            check = int(_nb_count_dummies(flat, op.entries_per_pixel, dummy, dummy_value is not None)) > 0
        assert out is not None
        n_dummy = int(_run_streams(op, flat, factor, dark_inline,
                                   dark_removed if (check and removed_dark is not None) else None,
                                   dark_scale, out, out2, outvar, removed if check else None,
                                   removed_dark if check else None, dummy, dummy_value is not None))
        signal = _fold(out, n)
        assert signal is not None
        return CorrectedSums(signal, _fold(out2, n), _fold(outvar, n), removed, removed_dark, n_dummy)

    def _numba_spread(op: BinningOperator, flat: np.ndarray, mean: np.ndarray, factor: np.ndarray | None,
                      dark: np.ndarray | None, dark_scale: float, mask_negative: bool,
                      dummy_value: float | None) -> np.ndarray:
        out = _lanes(op.n_bins, True)
        _nb_spread(flat, op.entry_pixels, op.bins, op.counts, np.ascontiguousarray(mean, dtype=np.float64),
                   factor, dark, float(dark_scale), bool(mask_negative),
                   float(dummy_value) if dummy_value is not None else 0.0, dummy_value is not None, out,
                   np.uint64(_lane_shift(op.n_bins)))
        spread = _fold(out, op.n_bins)
        assert spread is not None
        return spread

    _CORRECTED["numba"] = _numba_corrected
    _SPREAD["numba"] = _numba_spread
except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
    pass


def registered_methods(registry: Mapping[str, object]) -> list[str]:
    """Names of the kernels in ``registry`` (one per implementation), fastest first."""
    return [m for m in ("numba", "scipy") if m in registry]


def chosen_method(registry: Mapping[str, object]) -> str:
    """The kernel of ``registry`` used unless one is asked for (``SAXSDOG_KERNEL`` overrides,
    for every family of kernels alike)."""
    wanted = os.environ.get("SAXSDOG_KERNEL")
    if wanted:
        if wanted not in registry:
            raise ValueError(f"SAXSDOG_KERNEL={wanted!r} is not available; choose from "
                             f"{registered_methods(registry)}")
        return wanted
    return registered_methods(registry)[0]


def available_methods() -> list[str]:
    """Names of the kernels usable in this environment, fastest first."""
    return registered_methods(_REGISTRY)


def default_method() -> str:
    """The kernel used unless one is asked for (``SAXSDOG_KERNEL`` overrides)."""
    return chosen_method(_REGISTRY)


def accumulate(op: BinningOperator, image: np.ndarray, squares: bool = False,
               method: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Count-weighted bin sums of an image.

    Parameters
    ----------
    op
        The operator.
    image
        2-D image of ``op.shape`` (any real dtype).
    squares
        Also return the sums of squared (corrected) pixel values.
    method
        Kernel name (see :func:`available_methods`); default :func:`default_method`.

    Returns
    -------
    (sums, sums_of_squares)
        float64 arrays of length ``op.n_bins``; the second is ``None`` unless ``squares``.
    """
    kernel = _REGISTRY[method or default_method()]
    return kernel(op, flat_image(op, image), squares)


def flat_image(op: BinningOperator, image: np.ndarray) -> np.ndarray:
    """The image as the contiguous 1-D array the kernels stream (no copy when possible).

    Raises
    ------
    ValueError
        If the shape differs from the operator's.
    TypeError
        If the dtype is not a real number (booleans are read as 0/1).
    """
    image = np.asarray(image)
    if image.shape != tuple(op.shape):
        raise ValueError(f"image shape {image.shape} differs from the calibration's {tuple(op.shape)}")
    flat = np.ascontiguousarray(image).reshape(-1)
    if flat.dtype.kind not in "iuf":
        if flat.dtype.kind == "b":
            flat = flat.astype(np.uint8)
        else:
            raise TypeError(f"cannot integrate an image of dtype {image.dtype}")
    return flat


def accumulate_corrected(op: BinningOperator, image: np.ndarray, *, factor: np.ndarray | None = None,
                         dark_inline: np.ndarray | None = None, dark_removed: np.ndarray | None = None,
                         dark_scale: float = 1.0, squares: bool = False, poisson: bool = False,
                         mask_negative: bool = False, dummy_value: float | None = None,
                         method: str | None = None) -> CorrectedSums:
    """Bin sums of a corrected frame, in one streaming pass.

    Parameters
    ----------
    op
        The operator (its own ``correction`` is ignored: fold it into ``factor``).
    image
        2-D image (or its flat view from :func:`flat_image`).
    factor
        Per-pixel factor ``g`` (flat float64), or ``None`` for 1.
    dark_inline
        Dark (flat float64) subtracted per pixel, times ``dark_scale``: needed for the
        squares and the spread, which are not linear in the dark.
    dark_removed
        The dark, used only to return the dummies' share ``Σ n g d`` (when the caller
        subtracts a precomputed ``Σ n g d`` vector instead of an inline dark).
    dark_scale
        Multiplies the inline dark.
    squares
        Also ``Σ n c²`` (for the standard deviation).
    poisson
        Also ``Σ n² g² max(p, 0)`` (the exact Poisson variance of the bin sums).
    mask_negative, dummy_value
        Exclude pixels ``< 0`` (and ``== dummy_value``) of this frame.
    method
        Kernel name.

    Returns
    -------
    CorrectedSums
    """
    flat = image.reshape(-1) if image.ndim == 1 else flat_image(op, image)
    if flat.size != op.shape[0] * op.shape[1]:
        raise ValueError(f"image of {flat.size} pixels differs from the calibration's {tuple(op.shape)}")
    kernel = _CORRECTED[method or default_method()]
    return kernel(op, flat, factor, dark_inline, dark_removed, dark_scale, squares, poisson, mask_negative,
                  dummy_value)


def accumulate_spread(op: BinningOperator, image: np.ndarray, mean: np.ndarray, *,
                      factor: np.ndarray | None = None, dark: np.ndarray | None = None, dark_scale: float = 1.0,
                      mask_negative: bool = False, dummy_value: float | None = None,
                      method: str | None = None) -> np.ndarray:
    """``Σ_j n_bj² (c_j − mean_b)²`` per bin over the frame's non-dummy pixels.

    The second pass of the azimuthal error model (the mean must be known first); the
    exact two-pass form avoids the cancellation of a one-pass sum of squares.
    """
    flat = image.reshape(-1) if image.ndim == 1 else flat_image(op, image)
    kernel = _SPREAD[method or default_method()]
    return kernel(op, flat, mean, factor, dark, dark_scale, mask_negative, dummy_value)
