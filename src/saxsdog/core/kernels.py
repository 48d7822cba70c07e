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
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .operator import BinningOperator

__all__ = ["available_methods", "default_method", "accumulate"]

_Kernel = Callable[[BinningOperator, np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]
_REGISTRY: dict[str, _Kernel] = {}


def _scipy_accumulate(op: BinningOperator, flat: np.ndarray, squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
    import scipy.sparse as sp

    cache = op.__dict__.setdefault("_scipy_cache", {})
    m = cache.get("counts")
    if m is None:
        n_pix = op.shape[0] * op.shape[1]
        m = sp.csr_matrix(
            sp.coo_matrix((op.counts.astype(np.float64), (op.bins.astype(np.int64), op.entry_pixels)),
                          shape=(op.n_bins, n_pix))
        )
        cache["counts"] = m
    values = flat.astype(np.float64)
    if op.correction is not None:
        values = values * op.correction
    s1 = m @ values
    s2 = m @ (values * values) if squares else None
    return s1, s2


_REGISTRY["scipy"] = _scipy_accumulate

#: Above this many bins (cake maps) the numba kernel accumulates in one lane, not four.
_ONE_LANE_BINS = 32768

try:  # pragma: no branch - depends on the environment
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_kernel(img, pix, bins, counts, corr, out, out2):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Entries are streamed in pixel order (the image is read sequentially).  Four
        # interleaved accumulator lanes break the store-to-load dependency on out[b]
        # when consecutive entries hit the same bin (the common case); numba prunes the
        # `is None` branches at compile time, giving one specialisation per variant.
        for k in range(pix.size):
            j = pix[k]
            v = np.float64(img[j])
            if corr is not None:
                v *= corr[j]
            i = np.int64(bins[k]) * 4 + (k & 3)
            c = counts[k]
            out[i] += c * v
            if out2 is not None:
                out2[i] += c * v * v

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_kernel_one_lane(img, pix, bins, counts, corr, out, out2):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Many bins (a cake map): four lanes would be four times a large array to zero and
        # sum per frame, and consecutive entries rarely share a bin anyway.
        for k in range(pix.size):
            j = pix[k]
            v = np.float64(img[j])
            if corr is not None:
                v *= corr[j]
            b = bins[k]
            c = counts[k]
            out[b] += c * v
            if out2 is not None:
                out2[b] += c * v * v

    def _numba_accumulate(op: BinningOperator, flat: np.ndarray,
                          squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if op.n_bins > _ONE_LANE_BINS:
            s1 = np.zeros(op.n_bins, dtype=np.float64)
            s2 = np.zeros(op.n_bins, dtype=np.float64) if squares else None
            _nb_kernel_one_lane(flat, op.entry_pixels, op.bins, op.counts, op.correction, s1, s2)
            return s1, s2
        out = np.zeros(op.n_bins * 4, dtype=np.float64)
        out2 = np.zeros(op.n_bins * 4, dtype=np.float64) if squares else None
        _nb_kernel(flat, op.entry_pixels, op.bins, op.counts, op.correction, out, out2)
        s1 = out.reshape(op.n_bins, 4).sum(axis=1)
        return s1, (out2.reshape(op.n_bins, 4).sum(axis=1) if out2 is not None else None)

    _REGISTRY["numba"] = _numba_accumulate
except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
    pass


def available_methods() -> list[str]:
    """Names of the kernels usable in this environment, fastest first."""
    return [m for m in ("numba", "scipy") if m in _REGISTRY]


def default_method() -> str:
    """The kernel used unless one is asked for (``SAXSDOG_KERNEL`` overrides)."""
    wanted = os.environ.get("SAXSDOG_KERNEL")
    if wanted:
        if wanted not in _REGISTRY:
            raise ValueError(f"SAXSDOG_KERNEL={wanted!r} is not available; choose from {available_methods()}")
        return wanted
    return available_methods()[0]


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
    image = np.asarray(image)
    if image.shape != tuple(op.shape):
        raise ValueError(f"image shape {image.shape} differs from the calibration's {tuple(op.shape)}")
    kernel = _REGISTRY[method or default_method()]
    flat = np.ascontiguousarray(image).reshape(-1)
    if flat.dtype.kind not in "iuf":
        if flat.dtype.kind == "b":
            flat = flat.astype(np.uint8)
        else:
            raise TypeError(f"cannot integrate an image of dtype {image.dtype}")
    return kernel(op, flat, squares)
