"""Kernels applying a :class:`~saxsdog.core.operator.BinningOperator` to an image.

Two implementations, selected by name:

``"scipy"``
    The reference: a ``scipy.sparse`` CSR matrix–vector product.  Always available.
``"numba"``
    One streaming pass over the image in memory order (the operator's
    :class:`~saxsdog.core.operator.StreamLayout`: 2 bytes a used pixel), scattering into
    small, cache-resident arrays; integer sub-pixel counts, float64 accumulation.  With
    16-bit codes (up to 4095 bins at Oversampling 3) each pixel's value is added to the
    slot of its code, the weights applied once per code (``_nb_code_sums``); larger
    operators add each pixel's weighted sums as one vector per bin (``_nb_streams``).
    The pass of a clean frame (no per-pixel dummy test, no inline dark, no squares: the
    pipeline's plain and exact-Poisson curves) of a frame whose streams fit in the cache
    (``_STEPPED_BYTES``) loads image, codes and factor four pixels at a time
    (``_chunk_sums``): that pass is bound by the core's memory operations, not by memory
    bandwidth, so one load per four pixels and stream instead of one per pixel halves the
    exact-Poisson frame of a Pilatus 1M.  Registered only if numba imports.

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

from .operator import BinningOperator, StreamLayout

__all__ = ["available_methods", "default_method", "accumulate", "accumulate_corrected",
           "accumulate_spread", "pack_factor", "root_of_positive", "CorrectedSums"]

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


def _as_float64(factor: np.ndarray | None) -> np.ndarray | None:
    """A stored (float32 or float64) factor in float64: the numba kernels compute in float64
    from the stored values, so the reference must too (``g²`` in float32 would not)."""
    return None if factor is None else np.asarray(factor, dtype=np.float64)


def _scipy_accumulate(op: BinningOperator, flat: np.ndarray, squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
    m = _counts_csr(op)
    values = flat.astype(np.float64)
    if op.correction is not None:
        values = values * op.correction
    s1 = m @ values
    s2 = m @ (values * values) if squares else None
    return s1, s2


_REGISTRY["scipy"] = _scipy_accumulate

#: An operator with up to this many codes (bins × 2**code_bits: 16 a bin at Oversampling
#: 3, so 4095 bins) has its main stream summed by code (_nb_code_sums), larger ones (cake
#: maps) by weighted vectors per bin (the code slots, zeroed every frame, would no longer
#: fit in the core's L2 cache).  One way per operator, whatever is asked: the signal is
#: then the same to the last bit with or without the variance or the squares.  (The same
#: limit as 16-bit codes: trash.bit_length() + code_bits <= 16.)
_CODE_SLOTS = 1 << 16
#: The clean pass by code goes in steps of four pixels (_chunk_sums) while the image,
#: codes and factor it streams take at most this many bytes (at the used pixels): then the
#: pass is bound by the core's memory operations, which the steps save.  A frame streamed
#: from main memory is bound by its bandwidth, and there the steps measured slower than
#: pixel by pixel.  Measured (thread CPU time, interleaved with the loop pixel by pixel):
#: Pilatus 1M, 9 MB with a factor, exact Poisson 0.58 -> 0.31 ms, plain 0.28 -> 0.24 ms;
#: Eiger 16M, 101 MB, plain 12.2 -> 14.1 ms, exact Poisson 14.8 -> 15.5 ms.
_STEPPED_BYTES = 24 << 20
#: Above this many bins (cake maps) the numba kernel accumulates in one lane, not four.
_ONE_LANE_BINS = 32768
#: With MaskNegative, frames up to this many pixels are first integrated as if they had no
#: dummy pixel, keeping only their smallest value (no branch); only a frame that has some
#: (where the operator uses pixels) is integrated again, testing each pixel.  The operator
#: remembers whether its previous frame had dummies and then tests at once, so a run pays
#: the second pass about once.  Larger frames are always tested in the pass; no limit by
#: default.  Measured (thread CPU time, interleaved, Pilatus 1M, exact errors): the test
#: in the pass costs 0.15 ms a frame, the earlier scan for dummies before the pass 0.14 ms
#: (more in a worker, where the frame has left the cache), the smallest value 0.05 ms.
_PRESCAN_PIXELS = 1 << 62

def _scipy_corrected(op: BinningOperator, flat: np.ndarray, factor: np.ndarray | None,
                     dark_inline: np.ndarray | None, dark_removed: np.ndarray | None, dark_scale: float,
                     squares: bool, poisson: bool, mask_negative: bool,
                     dummy_value: float | None, packed_factor: np.ndarray | None = None) -> CorrectedSums:
    del packed_factor  # the reference reads `factor` at each pixel
    m = _counts_csr(op)
    factor = _as_float64(factor)
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
    factor = _as_float64(factor)
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
    def _nb_value(img, j, g, gi, dark_inline, dark_scale, want_var):  # type: ignore[no-untyped-def]  # pragma: no cover
        # The corrected value v = g (p − s d) of pixel j and its Poisson variance term
        # g² max(p, 0) (= max(g v, 0) without an inline dark, since g > 0: one product less).
        # g may be stored in float32: every product is taken in float64.  g[gi] is the
        # pixel's factor (gi = j for a factor per pixel, the stream position for a factor
        # per stream, see _run_streams).
        p = np.float64(img[j])
        v = p
        if dark_inline is not None:
            v = p - dark_scale * dark_inline[j]
        gj = 1.0
        if g is not None:
            gj = np.float64(g[gi])
            v *= gj
        var = 0.0
        if want_var:
            if dark_inline is None:
                gv = v
                if g is not None:
                    gv = v * gj
                var = max(gv, 0.0)
            else:
                var = max(p, 0.0)
                if g is not None:
                    var *= gj * gj
        return p, v, var

    from llvmlite import ir as _ir
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    def _vector_accumulate(width: int) -> Any:
        """An intrinsic ``acc_add(acc, slot, table, c, v, u)``: one ``width``-wide vector
        read-modify-write ``acc[slot] += table[c] * (v, v, u, u)`` (``(v, v)`` for width 2).

        numba does not vectorise the scattered adds of the stream kernel (its SLP pass is
        off), so they are written here as LLVM vector operations: the 2 or 4 sums of a
        pixel take one load, one multiply, one add and one store.
        """
        @_intrinsic
        def acc_add(typingctx, acc, slot, table, c, v, u):  # type: ignore[no-untyped-def]  # pragma: no cover
            sig = _types.void(acc, slot, table, c, v, u)

            def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
                acc_v, slot_v, table_v, c_v, v_v, u_v = args
                arr = context.make_array(signature.args[0])(context, builder, acc_v)
                tab = context.make_array(signature.args[2])(context, builder, table_v)
                vec_t = _ir.VectorType(_ir.DoubleType(), width)
                i64 = _ir.IntType(64)
                shift = _ir.Constant(i64, width.bit_length() - 1)

                def element(data: Any, index: Any) -> Any:
                    index = builder.zext(index, i64) if index.type.width < 64 else index
                    return builder.bitcast(builder.gep(data, [builder.shl(index, shift)]), vec_t.as_pointer())

                weights = builder.load(element(tab.data, c_v))
                weights.align = 8
                values = _ir.Constant(vec_t, _ir.Undefined)
                for k in range(width):
                    values = builder.insert_element(values, v_v if k < 2 else u_v, _ir.Constant(_ir.IntType(32), k))
                target = element(arr.data, slot_v)
                old = builder.load(target)
                old.align = 8
                store = builder.store(builder.fadd(old, builder.fmul(weights, values)), target)
                store.align = 8
                return context.get_dummy_value()

            return sig, codegen

        return acc_add

    _acc2 = _vector_accumulate(2)
    _acc4 = _vector_accumulate(4)

    def _vector_add_codegen(width: int) -> Any:
        """The code of ``acc[width slot : width slot + width] += (x0, ..., x_width-1)``: one
        vector read-modify-write of float64 ``acc`` (shared by the 4- and 2-wide adds)."""
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            vec_t = _ir.VectorType(_ir.DoubleType(), width)
            i64 = _ir.IntType(64)
            index = args[1]
            index = builder.zext(index, i64) if index.type.width < 64 else index
            shift = _ir.Constant(i64, width.bit_length() - 1)
            target = builder.bitcast(builder.gep(arr.data, [builder.shl(index, shift)]), vec_t.as_pointer())
            values = _ir.Constant(vec_t, _ir.Undefined)
            for k in range(width):
                values = builder.insert_element(values, args[2 + k], _ir.Constant(_ir.IntType(32), k))
            old = builder.load(target)
            old.align = 8
            store = builder.store(builder.fadd(old, values), target)
            store.align = 8
            return context.get_dummy_value()

        return codegen

    @_intrinsic
    def vector_add4(typingctx, acc, slot, x0, x1, x2, x3):  # type: ignore[no-untyped-def]  # pragma: no cover
        """``acc[4 slot : 4 slot + 4] += (x0, x1, x2, x3)`` as one vector read-modify-write
        (float64 ``acc``; for kernels that add several sums of one entry at once)."""
        f64 = _types.float64
        return _types.void(acc, slot, f64, f64, f64, f64), _vector_add_codegen(4)

    @_intrinsic
    def _vector_add2(typingctx, acc, slot, x0, x1):  # type: ignore[no-untyped-def]  # pragma: no cover
        """``acc[2 slot : 2 slot + 2] += (x0, x1)`` as one vector read-modify-write (float64 ``acc``)."""
        return _types.void(acc, slot, _types.float64, _types.float64), _vector_add_codegen(2)

    #: Pixels of one step of :func:`_code_chunk` (two steps a loop iteration).
    _CHUNK = 4

    def _code_chunk(width: int) -> Any:
        """An intrinsic ``chunk(slots, codes, t, img, j, g, gi, with_var) -> uint64``: the pass
        by code (_nb_code_sums) for the ``width`` pixels ``j … j + width − 1`` at stream
        positions ``t …``, without dummy test or dark: ``slots[code] += v`` (or
        ``slots[2 code : 2 code + 2] += (v, max(g v, 0))`` ``with_var``), ``v = g p``.

        The image, the codes and the factor (read at ``gi …``, ``g`` may be None) are loaded
        as vectors and the values computed as vectors; the slots are then updated one pixel
        after the other, in order, with the very operations (and so the very bits) of the
        scalar loop.  The pass is bound by the core's memory operations: one load a
        ``width`` pixels of each stream instead of one a pixel is most of the gain (4
        pixels a step measured faster than 8, whose 512-bit values cost more to split).
        Returns a bit per pixel whose value is negative (the dummy detection of the pass).
        The arrays must be C-contiguous (the callers' are).
        """
        @_intrinsic
        def chunk(typingctx, slots, codes, t, img, j, g, gi, with_var):  # type: ignore[no-untyped-def]  # pragma: no cover
            has_g = not isinstance(g, _types.NoneType)
            for arr in (slots, codes, img) + ((g,) if has_g else ()):
                if not isinstance(arr, _types.Array) or arr.layout != "C":
                    return None  # (no implementation: a strided array never gets vector loads)
            want_var = not isinstance(with_var, _types.NoneType)
            sig = _types.uint64(slots, codes, t, img, j, g, gi, with_var)

            def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
                slots_v, codes_v, t_v, img_v, j_v, g_v, gi_v, _ = args
                i32, i64, dbl = _ir.IntType(32), _ir.IntType(64), _ir.DoubleType()
                vec_t = _ir.VectorType(dbl, width)

                def load(k: int, value: Any, index: Any) -> tuple[Any, Any]:
                    # `width` consecutive elements of argument k from `index`
                    ty = signature.args[k]
                    elem = context.get_data_type(ty.dtype)
                    ptr = builder.gep(context.make_array(ty)(context, builder, value).data, [index])
                    ptr = builder.bitcast(ptr, _ir.VectorType(elem, width).as_pointer())
                    got = builder.load(ptr)
                    got.align = ty.dtype.bitwidth // 8
                    return got, ty.dtype

                def as_double(vec: Any, dtype: Any) -> Any:
                    # the conversions of np.float64(x), lane by lane
                    if isinstance(dtype, _types.Integer):
                        return builder.sitofp(vec, vec_t) if dtype.signed else builder.uitofp(vec, vec_t)  # type: ignore[attr-defined]
                    if dtype.bitwidth < 64:
                        return builder.fpext(vec, vec_t)
                    return vec

                code_vec, _ = load(1, codes_v, t_v)
                p = as_double(*load(3, img_v, j_v))
                zero = _ir.Constant(vec_t, [0.0] * width)
                negative = builder.fcmp_ordered("<", p, zero)
                v = p
                if has_g:
                    gj = as_double(*load(5, g_v, gi_v))
                    v = builder.fmul(p, gj)
                if want_var:
                    u = builder.fmul(v, gj) if has_g else v
                    # max(u, 0.0) as numba computes it: NaN and −0.0 stay
                    u = builder.select(builder.fcmp_ordered("<", u, zero), zero, u)
                data = context.make_array(signature.args[0])(context, builder, slots_v).data
                pair_t = _ir.VectorType(dbl, 2)
                for k in range(width):
                    code = builder.extract_element(code_vec, _ir.Constant(i32, k))
                    code = builder.zext(code, i64) if code.type.width < 64 else code
                    if want_var:
                        target = builder.bitcast(builder.gep(data, [builder.shl(code, _ir.Constant(i64, 1))]),
                                                 pair_t.as_pointer())
                        add = builder.shuffle_vector(v, u, _ir.Constant(_ir.VectorType(i32, 2), [k, width + k]))
                    else:
                        target = builder.gep(data, [code])
                        add = builder.extract_element(v, _ir.Constant(i32, k))
                    old = builder.load(target)
                    old.align = 8
                    store = builder.store(builder.fadd(old, add), target)
                    store.align = 8
                bits = builder.bitcast(negative, _ir.IntType(width))
                return builder.zext(bits, i64)

            return sig, codegen

        return chunk

    _chunk_sums = _code_chunk(_CHUNK)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_drop(removed, removed_dark, b, c, gd):  # type: ignore[no-untyped-def]  # pragma: no cover
        removed[b] += c
        if removed_dark is not None:
            removed_dark[b] += c * gd

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_dummy_dark(j, g, gi, dark_removed):  # type: ignore[no-untyped-def]  # pragma: no cover
        gd = 0.0
        if dark_removed is not None:
            gd = np.float64(dark_removed[j])
            if g is not None:
                gd *= np.float64(g[gi])
        return gd

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_streams(img, run_pixels, run_starts, codes, code_bits, trash,  # type: ignore[no-untyped-def]
                    rl, rk, rb, rc, table, gm, gr, per_stream, dark_inline, dark_removed, dark_scale, acc,
                    out2, with_var, square_slots, removed, removed_dark, detected, dummy, shift):  # pragma: no cover
        # Returns the number of dummy pixels met (0 unless ``removed`` or ``detected`` is given).
        # One pass over the image in two pixel-ordered streams (see StreamLayout): the main
        # stream, one code per used pixel in runs of consecutive pixels (a whole pixel or a
        # pair over two adjacent bins, or the `trash` bin for the others), and the rest
        # stream's entries.  A pixel's corrected value v (and variance term u) is computed
        # once for all its entries.  (With 16-bit codes the caller sums the main stream
        # with _nb_code_sums and passes no runs: this kernel then does the rest stream.)
        #
        # The sums go to slots of `acc`, 2 numbers a slot (4 ``with_var``): a main-stream
        # pixel with code (b, c) adds (n1 v, n2 v[, n1² u, n2² u]) to slot b in one vector
        # operation, the weights from row c of `table` ((ov², 0) for a whole pixel,
        # (c, ov² − c) for a pair), and _Accumulators.sums adds each slot's second number
        # to the next bin.  The trash slot (bin n_bins) takes the rest stream's pixels
        # without a branch and is never read.  A slot is always read and written whole,
        # so a pixel never overlaps part of the slot an earlier one is still writing
        # (which would stall the forwarding from store to load).  2**shift interleaved
        # slots per bin (4; 1 for cake maps, see _ONE_LANE_BINS), chosen by the position
        # in the stream, break the store-to-load dependency when consecutive pixels hit
        # the same bin.  The rest stream and the squares (`out2`, same lanes, one number)
        # add scalars.  Every optional array is pruned at compile time when None.
        #
        # A pixel is a dummy when p < 0 or p == dummy (dummy is −1 without a DummyValue:
        # no other value).  Two ways to meet them:
        # * ``removed`` given (MaskNegative, dummies expected): each pixel is tested on the
        #   value just loaded; dummies only add their weight (and dark share) to the small
        #   `removed` vectors.  The test and its branch cost 10-20 % of the pass.
        # * ``detected`` given (MaskNegative, no dummy expected, no DummyValue ≥ 0): every
        #   pixel is summed and only the smallest value is kept (a select, no branch);
        #   returns 1 when it is negative, and the caller repeats the pass the first way.
        # Indices are unsigned: numba then skips the negative-index wraparound.
        lane_mask = (np.uint64(1) << shift) - np.uint64(1)
        code_mask = (np.uint64(1) << code_bits) - np.uint64(1)
        want_var = with_var is not None
        # ``square_slots`` (squares without the variance): the slots' second half holds
        # (n1 v², n2 v²) instead, from a table of (n1, n2, n1, n2)
        want_sq = square_slots is not None and not want_var
        width = np.uint64(4) if (want_var or want_sq) else np.uint64(2)
        n_dummy = 0
        lowest = np.inf  # the smallest value met (NaN never: p < lowest is false)
        for r in range(run_pixels.size):
            t0 = np.uint64(run_starts[r])
            # pixel = stream position + offset (wraps around as unsigned: the sum is right)
            offset = np.uint64(run_pixels[r]) - t0
            for t in range(t0, np.uint64(run_starts[r + 1])):
                j = t + offset
                code = np.uint64(codes[t])
                b = code >> code_bits
                c = code & code_mask
                gi = t if per_stream is not None else j
                p, v, var = _nb_value(img, j, gm, gi, dark_inline, dark_scale, want_var)
                if detected is not None:
                    lowest = p if p < lowest else lowest
                if removed is not None:
                    if p < 0.0 or p == dummy:
                        if b != trash:  # (a trash pixel is counted in the rest stream)
                            gd = _nb_dummy_dark(j, gm, gi, dark_removed)
                            _nb_drop(removed, removed_dark, b, table[c * width], gd)
                            if c != np.uint64(0):
                                _nb_drop(removed, removed_dark, b + np.uint64(1), table[c * width + np.uint64(1)], gd)
                            n_dummy += 1
                        continue
                i = (b << shift) + (t & lane_mask)
                if want_var:
                    _acc4(acc, i, table, c, v, var)
                elif want_sq:
                    _acc4(acc, i, table, c, v, v * v)
                else:
                    _acc2(acc, i, table, c, v, var)
                if out2 is not None:
                    vv = v * v
                    out2[i] += table[c * width] * vv
                    out2[i + (np.uint64(1) << shift)] += table[c * width + np.uint64(1)] * vv
        bits = np.uint64(16)  # STREAM_BLOCK_BITS: pixel = block << 16 | low
        for blk in range(rk.size - 1):
            base = np.uint64(blk) << bits
            for tt in range(rk[blk], rk[blk + 1]):
                pos = np.uint64(tt)
                j = base + np.uint64(rl[pos])
                gi = pos if per_stream is not None else j
                p, v, var = _nb_value(img, j, gr, gi, dark_inline, dark_scale, want_var)
                if detected is not None:
                    lowest = p if p < lowest else lowest
                if removed is not None:
                    if p < 0.0 or p == dummy:
                        _nb_drop(removed, removed_dark, rb[pos], rc[pos], _nb_dummy_dark(j, gr, gi, dark_removed))
                        # a pixel's entries are consecutive in this stream: count it once
                        n_dummy += tt == rk[blk] or rl[pos - np.uint64(1)] != rl[pos]
                        continue
                i = (np.uint64(rb[pos]) << shift) + (pos & lane_mask)
                cr = np.float64(rc[pos])
                acc[i * width] += cr * v
                if want_var:
                    acc[i * width + np.uint64(2)] += cr * cr * var
                elif want_sq:
                    acc[i * width + np.uint64(2)] += cr * v * v
                if out2 is not None:
                    out2[i] += cr * v * v
        if detected is not None and lowest < 0.0:
            return 1  # some dummy: the caller integrates again, counting them
        return n_dummy

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_code_sums(img, run_pixels, run_starts, codes, code_bits, trash, table,  # type: ignore[no-untyped-def]
                      g, per_stream, dark_inline, dark_removed, dark_scale, slots, with_var, with_sq,
                      removed, removed_dark, detected, dummy, stepped):  # pragma: no cover
        # The main stream summed by code: a pixel's value v (and variance term u
        # ``with_var``, square v² ``with_sq``) is added to the slot of its code, with
        # neither weight nor lane (a code is a bin and a split, so consecutive pixels
        # seldom share a slot): one scalar add, or one 2- or 4-wide vector add.  The
        # weights (n1, n2 of row c of `table`) are applied once per code by
        # _nb_fold_codes.  Dummies as in _nb_streams (``removed`` or ``detected``); the
        # same return value.
        # ``stepped`` and without dummy test, dark or squares (the pass of a clean frame),
        # a run is done _CHUNK pixels a step by _chunk_sums, the rest of it by the loop
        # below (see _STEPPED_BYTES for when).
        want_var = with_var is not None
        want_sq = with_sq is not None
        code_mask = (np.uint64(1) << code_bits) - np.uint64(1)
        n_dummy = 0
        lowest = np.inf
        negative = np.uint64(0)  # the chunks' bits of negative values
        step = np.uint64(_CHUNK)
        for r in range(run_pixels.size):
            t0 = np.uint64(run_starts[r])
            t1 = np.uint64(run_starts[r + 1])
            offset = np.uint64(run_pixels[r]) - t0
            if stepped is not None and removed is None and dark_inline is None and with_sq is None:
                while t0 + step + step <= t1:
                    t2 = t0 + step
                    negative |= _chunk_sums(slots, codes, t0, img, t0 + offset, g,
                                            t0 if per_stream is not None else t0 + offset, with_var)
                    negative |= _chunk_sums(slots, codes, t2, img, t2 + offset, g,
                                            t2 if per_stream is not None else t2 + offset, with_var)
                    t0 += step + step
            for t in range(t0, t1):
                j = t + offset
                code = np.uint64(codes[t])
                gi = t if per_stream is not None else j
                p, v, var = _nb_value(img, j, g, gi, dark_inline, dark_scale, want_var)
                if detected is not None:
                    lowest = p if p < lowest else lowest
                if removed is not None:
                    if p < 0.0 or p == dummy:
                        b = code >> code_bits
                        if b != trash:  # (a trash pixel is counted in the rest stream)
                            c = code & code_mask
                            gd = _nb_dummy_dark(j, g, gi, dark_removed)
                            _nb_drop(removed, removed_dark, b, table[c * np.uint64(2)], gd)
                            if c != np.uint64(0):
                                _nb_drop(removed, removed_dark, b + np.uint64(1), table[c * np.uint64(2) + np.uint64(1)],
                                         gd)
                            n_dummy += 1
                        continue
                if want_var and want_sq:
                    vector_add4(slots, code, v, var, v * v, 0.0)  # type: ignore[call-arg]  # (an intrinsic)
                elif want_var:
                    _vector_add2(slots, code, v, var)  # type: ignore[call-arg]
                elif want_sq:
                    _vector_add2(slots, code, v, v * v)  # type: ignore[call-arg]
                else:
                    slots[code] += v
        if detected is not None and (lowest < 0.0 or negative != np.uint64(0)):
            return 1
        return n_dummy

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_fold_codes(slots, parts, code_bits, n_bins, table, acc, width, shift,  # type: ignore[no-untyped-def]
                       with_var, with_sq, out2):  # pragma: no cover
        # Adds the code slots of _nb_code_sums, weighted, to lane 0 of the accumulators
        # (the layout of _nb_streams's: (n1 v, n2 v[, n1² u, n2² u | n1 v², n2 v²]) a
        # slot, the squares in `out2` beside the variance).
        per_bin = np.uint64(1) << code_bits
        two = np.uint64(2)
        for bb in range(n_bins):
            b = np.uint64(bb)
            s1 = s2 = u1 = u2 = q1 = q2 = 0.0
            for cc in range(per_bin):
                c = np.uint64(cc)
                n1 = table[c * two]
                n2 = table[c * two + np.uint64(1)]
                k = (b * per_bin + c) * parts
                x = slots[k]
                s1 += n1 * x
                s2 += n2 * x
                if with_var is not None:
                    xu = slots[k + np.uint64(1)]
                    u1 += n1 * n1 * xu
                    u2 += n2 * n2 * xu
                if with_sq is not None:
                    xq = slots[k + (two if with_var is not None else np.uint64(1))]
                    q1 += n1 * xq
                    q2 += n2 * xq
            i = (b << shift) * width
            acc[i] += s1
            acc[i + np.uint64(1)] += s2
            if with_var is not None:
                acc[i + two] += u1
                acc[i + np.uint64(3)] += u2
            elif with_sq is not None:
                acc[i + two] += q1
                acc[i + np.uint64(3)] += q2
            if out2 is not None:
                out2[b << shift] += q1
                out2[(b + np.uint64(1)) << shift] += q2

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_pair_sums(acc, width, component, out):  # type: ignore[no-untyped-def]  # pragma: no cover
        # _Accumulators.sums of one lane: out[b] = acc[b w + k] + acc[(b − 1) w + k + 1]
        # (a slot's first number plus the previous bin's second), the same additions.
        for bb in range(out.size):
            b = np.uint64(bb)
            x = acc[b * width + component]
            if bb > 0:
                x += acc[(b - np.uint64(1)) * width + component + np.uint64(1)]
            out[b] = x

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_root_of_positive(values, scale, out):  # type: ignore[no-untyped-def]  # pragma: no cover
        # out = sqrt(np.maximum(values, 0) * scale), element by element in one pass: the
        # same operations (NumPy's maximum keeps NaN and gives +0.0 for −0.0; sqrt is
        # correctly rounded in both)
        for k in range(values.size):
            x = values[k]
            if not (x > 0.0 or x != x):
                x = 0.0
            out[k] = np.sqrt(x * scale[k])

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_fold_bins(slots, parts, code_bits, n_bins, table,  # type: ignore[no-untyped-def]
                      signal, variance):  # pragma: no cover
        # _nb_fold_codes straight into the bin sums (length n_bins + 1), when the rest
        # stream is empty and no squares are asked for: no lanes to zero, fill and fold.
        # The same products in the same order: signal[b] = s1(b) + s2(b − 1), the very
        # bits _Accumulators.sums gives from the lanes (their other lanes hold +0.0 then).
        per_bin = np.uint64(1) << code_bits
        two = np.uint64(2)
        for bb in range(n_bins):
            b = np.uint64(bb)
            s1 = s2 = u1 = u2 = 0.0
            for cc in range(per_bin):
                c = np.uint64(cc)
                n1 = table[c * two]
                n2 = table[c * two + np.uint64(1)]
                k = (b * per_bin + c) * parts
                x = slots[k]
                s1 += n1 * x
                s2 += n2 * x
                if variance is not None:
                    xu = slots[k + np.uint64(1)]
                    u1 += n1 * n1 * xu
                    u2 += n2 * n2 * xu
            signal[b] += s1
            signal[b + np.uint64(1)] += s2
            if variance is not None:
                variance[b] += u1
                variance[b + np.uint64(1)] += u2

    #: Passed as ``detected`` (or ``with_var``) to switch a feature on: numba compiles the
    #: kernel once with it and once with None, so the switch costs nothing in the loop.
    _ON = np.zeros(1, dtype=np.uint8)
    _TABLES: dict[tuple[int, int, int, bool], np.ndarray] = {}

    def _weights(subpixels: int, code_bits: int, width: int, squares: bool = False) -> np.ndarray:
        """Per code c (0 … 2**code_bits − 1) the weights of one vector add, float64, flat:
        (n1, n2[, n1², n2²]) with (n1, n2) = (ov², 0) for c = 0 (a whole pixel) and
        (c, ov² − c) for a pair; (n1, n2, n1, n2) for the squares in the slots."""
        key = (subpixels, code_bits, width, squares)
        table = _TABLES.get(key)
        if table is None:
            c = np.arange(1 << code_bits, dtype=np.float64)
            first = np.where(c == 0, float(subpixels), c)
            second = np.where(c == 0, 0.0, subpixels - c)
            columns = [first, second]
            if width == 4:
                columns += [first, second] if squares else [first * first, second * second]
            table = np.ascontiguousarray(np.stack(columns, axis=1)).reshape(-1)
            _TABLES[key] = table
        return table

    @dataclass
    class _Accumulators:
        """The kernel's output slots (see _nb_streams) and how to fold them into bin sums.

        There are ``n_bins + 2`` slots a lane: the trash bin (``n_bins``) and the bin after
        it, where a trash pixel's second number and square go."""

        n_bins: int
        width: int
        acc: np.ndarray
        out2: np.ndarray | None
        #: The squares are in the slots' second half (asked for without the variance).
        square_slots: bool = False
        #: With an operator of _direct streams: the bin sums of the signal (0) and the
        #: variance (2), n_bins + 1 long, filled by _nb_fold_bins (``acc`` is then unused).
        direct: dict[int, np.ndarray] | None = None

        @classmethod
        def new(cls, n_bins: int, var: bool, squares: bool, direct: bool = False) -> _Accumulators:
            if direct and not squares:
                sums = {0: np.zeros(n_bins + 1)}
                if var:
                    sums[2] = np.zeros(n_bins + 1)
                return cls(n_bins, 4 if var else 2, np.zeros(0), None, False, sums)
            in_slots = squares and not var
            width = 4 if (var or in_slots) else 2
            lanes = 1 << _lane_shift(n_bins)
            return cls(n_bins, width, _aligned_zeros((n_bins + 2) * lanes * width),
                       _lanes(n_bins, squares and not in_slots, n_bins + 2), in_slots)

        def squares(self) -> np.ndarray | None:
            """Bin sums of the squares, or None when not asked for."""
            if self.square_slots:
                return self.sums(2)
            folded = _fold(self.out2, self.n_bins)
            return None if folded is None else folded[:self.n_bins]

        def sums(self, component: int) -> np.ndarray:
            """Bin sums of the signal (component 0) or the variance (2): a slot's first
            number plus the previous bin's second."""
            if self.direct is not None:
                return self.direct[component][:self.n_bins]
            if _lane_shift(self.n_bins) == 0:  # one lane (cake maps): one pass, no strided copies
                total1 = np.empty(self.n_bins)
                _nb_pair_sums(self.acc, np.uint64(self.width), np.uint64(component), total1)
                return total1
            first = _fold(self.acc[component::self.width], self.n_bins)
            second = _fold(self.acc[component + 1::self.width], self.n_bins)
            assert first is not None and second is not None
            total: np.ndarray = np.array(first[:self.n_bins])  # a copy: with one lane _fold returns the view
            total[1:] += second[:self.n_bins - 1]
            return total

    def _aligned_zeros(size: int) -> np.ndarray:
        """float64 zeros starting on a 64-byte boundary (a slot never straddles a cache line)."""
        raw = np.zeros(size + 8)
        offset = (-raw.ctypes.data % 64) // 8
        aligned: np.ndarray = raw[offset:offset + size]
        return aligned

    def _factor_streams(op: BinningOperator, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The main and rest stream slices of a factor packed by :func:`pack_factor`."""
        s = op.streams
        n_main = s.codes.size
        if packed.size != n_main + s.rest_low.size:
            raise ValueError(f"a packed factor of {packed.size} values does not match the operator's streams")
        return packed[:n_main], packed[n_main:]

    def _by_code(s: StreamLayout) -> bool:
        """Whether the kernels sum the main stream of ``s`` by code (see _CODE_SLOTS)."""
        return (s.trash + 1) << s.code_bits <= _CODE_SLOTS

    def _stepped(s: StreamLayout, flat: np.ndarray, g: np.ndarray | None) -> bool:
        """Whether the pass by code of a clean frame goes in steps of _CHUNK pixels: when the
        bytes it streams fit in the cache (see _STEPPED_BYTES)."""
        per_pixel = flat.itemsize + s.codes.itemsize + (g.itemsize if g is not None else 0)
        return s.codes.size * per_pixel <= _STEPPED_BYTES

    def _direct(s: StreamLayout) -> bool:
        """Whether the sums of ``s`` (without squares) are folded from the code slots straight
        into the bins (_nb_fold_bins): summed by code, with an empty rest stream."""
        return _by_code(s) and s.rest_low.size == 0

    def _run_streams(op: BinningOperator, flat: np.ndarray, g: np.ndarray | None, dark_inline: np.ndarray | None,
                     dark_removed: np.ndarray | None, dark_scale: float, acc: _Accumulators,
                     removed: np.ndarray | None, removed_dark: np.ndarray | None,
                     detect: bool, dummy: float, packed: bool = False) -> int:
        s = op.streams
        var = acc.width == 4 and not acc.square_slots
        # A factor per pixel is read at the pixel; a packed one (pack_factor: the used
        # pixels' only, in stream order) at the position in each stream, in order.
        per_stream = packed and g is not None
        gs = _factor_streams(op, g) if (per_stream and g is not None) else (g, g)
        shift = np.uint64(_lane_shift(op.n_bins))
        runs, starts = s.run_pixels, s.run_starts
        met = 0
        if _by_code(s):
            # the main stream by code (_nb_code_sums, _nb_fold_codes), then the rest stream
            squares = acc.square_slots or acc.out2 is not None
            parts = 4 if (var and squares) else 2 if (var or squares) else 1
            slots = np.zeros(((s.trash + 1) << s.code_bits) * parts)
            table = _weights(s.subpixels, s.code_bits, 2)
            met = int(_nb_code_sums(flat, runs, starts, s.codes, np.uint64(s.code_bits), np.uint64(s.trash), table,
                                    gs[0], _ON if per_stream else None, dark_inline, dark_removed, float(dark_scale),
                                    slots, _ON if var else None, _ON if squares else None, removed, removed_dark,
                                    _ON if detect else None, float(dummy), _ON if _stepped(s, flat, gs[0]) else None))
            if acc.direct is not None:  # (the rest stream is empty: nothing more to add)
                _nb_fold_bins(slots, np.uint64(parts), np.uint64(s.code_bits), np.uint64(op.n_bins), table,
                              acc.direct[0], acc.direct.get(2))
                return met
            _nb_fold_codes(slots, np.uint64(parts), np.uint64(s.code_bits), np.uint64(op.n_bins), table, acc.acc,
                           np.uint64(acc.width), shift, _ON if var else None, _ON if squares else None, acc.out2)
            runs, starts = runs[:0], starts[:1]
        # (a dummy count adds up; a detection flag is 0 or 1 from either stream)
        rest = int(_nb_streams(flat, runs, starts, s.codes, np.uint64(s.code_bits), np.uint64(s.trash),
                   s.rest_low, s.rest_blocks, s.rest_bins, s.rest_counts,
                   _weights(s.subpixels, s.code_bits, acc.width, acc.square_slots),
                   *gs, _ON if per_stream else None, dark_inline, dark_removed, float(dark_scale), acc.acc, acc.out2,
                   _ON if var else None, _ON if acc.square_slots else None,
                   removed, removed_dark, _ON if detect else None, float(dummy), shift))
        return (met | rest) if detect else met + rest

    def _numba_accumulate(op: BinningOperator, flat: np.ndarray,
                          squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
        # the plain sums are the corrected kernel's with g = the operator's own correction
        acc = _Accumulators.new(op.n_bins, False, squares, _direct(op.streams))
        g = None if op.correction is None else np.ascontiguousarray(op.correction)
        _run_streams(op, np.ascontiguousarray(flat), g, None, None, 1.0, acc, None, None, False, -1.0)
        return acc.sums(0), acc.squares()

    _REGISTRY["numba"] = _numba_accumulate

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

    def _lanes(n_bins: int, wanted: bool, slots: int | None = None) -> np.ndarray | None:
        # ``slots`` per lane (default n_bins); the lane count is the one of n_bins
        size = n_bins if slots is None else slots
        return np.zeros(size << _lane_shift(n_bins), dtype=np.float64) if wanted else None

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
                         dummy_value: float | None, packed_factor: np.ndarray | None = None) -> CorrectedSums:
        n = op.n_bins
        packed = packed_factor is not None
        if packed:
            factor = packed_factor
        # the clean pass loads vectors (_chunk_sums): contiguous arrays (no copy when they are)
        flat = np.ascontiguousarray(flat)
        factor = None if factor is None else np.ascontiguousarray(factor)
        # −1 stands for "no DummyValue": p == −1 is already a dummy by p < 0
        dummy = float(dummy_value) if dummy_value is not None else -1.0
        removed = np.zeros(n) if mask_negative else None
        removed_dark = np.zeros(n) if (mask_negative and dark_removed is not None) else None
        # The pass that only counts dummies first, unless the previous frame on this
        # operator had some (speed only: the sums never depend on the hint).
        detect = (mask_negative and dummy < 0.0 and flat.size <= _PRESCAN_PIXELS
                  and not op.__dict__.get("_dummy_hint", False))
        direct = _direct(op.streams)
        while True:
            acc = _Accumulators.new(n, poisson, squares, direct)
            check = mask_negative and not detect
            n_dummy = int(_run_streams(op, flat, factor, dark_inline, dark_removed if check else None, dark_scale,
                                       acc, removed if check else None, removed_dark if check else None,
                                       detect, dummy, packed))
            if mask_negative:
                op.__dict__["_dummy_hint"] = n_dummy > 0
            if not (detect and n_dummy):
                break
            detect = False  # dummies met: the sums hold them, integrate again excluding them
        return CorrectedSums(acc.sums(0), acc.squares(), acc.sums(2) if poisson else None, removed,
                             removed_dark, n_dummy)

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
                         method: str | None = None, packed_factor: np.ndarray | None = None) -> CorrectedSums:
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
    packed_factor
        ``pack_factor(op, factor)``, kept by the caller: the numba kernel then reads the
        factor in stream order and only for the used pixels (in a worker, where the
        factor has left the cache between frames, a third fewer bytes read, in order);
        the scipy reference reads ``factor``.

    Returns
    -------
    CorrectedSums
    """
    flat = image.reshape(-1) if image.ndim == 1 else flat_image(op, image)
    if flat.size != op.shape[0] * op.shape[1]:
        raise ValueError(f"image of {flat.size} pixels differs from the calibration's {tuple(op.shape)}")
    kernel = _CORRECTED[method or default_method()]
    if packed_factor is not None and factor is None:
        raise ValueError("packed_factor needs the factor it was packed from")
    return kernel(op, flat, factor, dark_inline, dark_removed, dark_scale, squares, poisson, mask_negative,
                  dummy_value, packed_factor=packed_factor)


def pack_factor(op: BinningOperator, factor: np.ndarray | None) -> np.ndarray | None:
    """A per-pixel factor as the numba kernel streams it (see ``accumulate_corrected``):
    the values at the used pixels (the main stream of ``op.streams``), then at the rest
    stream's entries (``None`` without numba or without a factor)."""
    if factor is None or "numba" not in _CORRECTED:
        return None
    s = op.streams
    flat = np.asarray(factor).reshape(-1)
    packed: np.ndarray = np.ascontiguousarray(np.concatenate([flat[s.main_pixels], flat[s.rest_pixels]]))
    return packed


def root_of_positive(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``sqrt(max(values, 0) · scale)`` per element (float64, same shape), the bytes of
    ``np.sqrt(np.maximum(values, 0.0) * scale)``: in one compiled pass when numba is there
    (a cake map's error is three NumPy passes over 2.9 MB arrays otherwise)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    scale = np.ascontiguousarray(scale, dtype=np.float64)
    if values.shape != scale.shape:
        raise ValueError(f"values of shape {values.shape} and scale of shape {scale.shape} differ")
    if "numba" not in _CORRECTED:
        out: np.ndarray = np.maximum(values, 0.0)
        out *= scale
        np.sqrt(out, out=out)
        return out
    result = np.empty_like(values)
    _nb_root_of_positive(values.reshape(-1), scale.reshape(-1), result.reshape(-1))
    return result


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
