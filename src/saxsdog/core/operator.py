"""The oversampled sparse integration operator (SPEC §4).

Every pixel is split into ``ov × ov`` sub-pixels; each sub-pixel gets the label of the
bin it falls into (a radial bin in any unit, linear or log, optionally within a sector; an
azimuth bin; a (radial, azimuth) bin of a cake map; or a slice column/row).  The pixel's
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

No I/O here: NumPy, and numba (when installed) only to derive the kernels' stream layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .binning import (MAX_CAKE_BINS, UNITS, BinningError, RadialAxis, _lab_perpendicular, azimuth_axis, chi_degrees,
                      q_from_unit, radial_axis, radial_values)
from .geometry import Geometry

#: One block's entries, compact (see :func:`_compact_part`): the block's first pixel, the
#: entries of each of its pixels (uint8), the bins (uint16 or int32) and the counts (uint8).
_Part = tuple[int, np.ndarray, np.ndarray, np.ndarray]
#: ``label_fn(q, dx, dy)`` → an integer label (bin) per sub-pixel, negative for none.
_LabelFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

__all__ = [
    "BinningOperator",
    "build_radial_operator",
    "build_phi_operator",
    "build_cake_operator",
    "build_slice_operator",
    "polarization_factor",
    "radial_bins",
    "StreamLayout",
    "OPERATOR_FORMAT_VERSION",
]

#: Bumped whenever the build algorithm changes, so cached operators are rebuilt.
OPERATOR_FORMAT_VERSION = 2  # 2: the polarization angle is an angle of χ (lab frame)

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
        Bin centres (radial bins in their unit, azimuth χ in degrees, a cake's radial
        centres, or the slice's q scale).
    correction
        Optional per-pixel multiplicative correction (e.g. 1/polarization), float64.
    kind
        ``"Radial"``, ``"Phi"``, ``"Cake"`` or ``"Slice"``.
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

    #: Derived data re-computed on first use: not pickled (a worker or a Dask task gets the
    #: operator's own arrays only, not twice their size).
    _DERIVED = ("streams", "entry_pixels", "_scipy_cache", "_dummy_hint")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @cached_property
    def streams(self) -> StreamLayout:
        """The entries regrouped by shape for the fast kernels (derived once, not cached on disk)."""
        return StreamLayout.of(self)

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


#: Pixels per block of a :class:`StreamLayout`'s rest stream (its pixel indices are 16-bit
#: within a block).
STREAM_BLOCK_BITS = 16


@dataclass(frozen=True)
class StreamLayout:
    """The operator's entries regrouped for the numba kernels: one code per used pixel.

    Most pixels fall either wholly into one bin or into two adjacent bins (at
    Oversampling 3 and one pixel per radial element, 13 % and 87 % of the used pixels of
    the example calibration and of an Eiger 16M at 3 m).  Such a pixel is described by its
    first bin ``b`` and its first count ``n_b`` alone (``n_b + n_b+1 = ov²``: every
    sub-pixel falls in one of the two bins), and its pixel index is implied when the
    used pixels are listed in order as runs of consecutive pixels (module gaps and masks
    make few, long runs: 12 317 on an Eiger 16M, 997 on the example Pilatus 1M).

    ``main``
        Every used pixel in pixel order, in runs: run ``r`` holds the pixels
        ``run_pixels[r] + (0 … run_starts[r+1] − run_starts[r] − 1)`` at stream positions
        ``run_starts[r] …``.  Each pixel has one code ``(bin << code_bits) | c``
        (``codes``): ``c = 0`` a whole pixel, all ``ov²`` sub-pixels in ``bin``; ``c ≥ 1``
        a pair, ``c`` sub-pixels in ``bin`` and ``ov² − c`` in ``bin + 1``.  Any other
        pixel (three or more bins, non-adjacent bins, a pair or a whole pixel that lost
        sub-pixels at the edge of the binned range) has the bin ``trash = n_bins``: the
        kernel adds it to a slot past the last bin, never read (no branch), and
        integrates its entries from the rest stream.
    ``rest``
        The entries of those other pixels: pixel, bin, count, in pixel order.  Pixel
        indices are stored as their low 16 bits (``rest_low``) with, per block of 2¹⁶
        pixels, the stream position where the block starts (``rest_blocks``, length
        blocks + 1).

    A pixel costs 2 bytes of operator (``codes`` is ``uint16`` while the bins and
    ``code_bits`` fit in 16 bits: up to 4095 bins at Oversampling 3 or 4, else ``uint32``)
    instead of the entry layout's 5 or 10 (bin, count and a 2-byte index per entry); in
    a memory-bound pass over an Eiger 16M that is most of the time.
    """

    run_pixels: np.ndarray
    run_starts: np.ndarray
    codes: np.ndarray
    rest_low: np.ndarray
    rest_blocks: np.ndarray
    rest_bins: np.ndarray
    rest_counts: np.ndarray
    #: Sub-pixels per pixel (``ov²``): a pair's second count is ``subpixels − c``.
    subpixels: int = 1
    #: Low bits of a code holding the pair's first count (0: a whole pixel).
    code_bits: int = 0
    #: The bin of the pixels integrated from the rest stream (= the operator's n_bins).
    trash: int = 0

    @classmethod
    def of(cls, op: BinningOperator, fast: bool = True) -> StreamLayout:
        """Regroup ``op``'s entries in O(entries): in one compiled pass over the pixels when
        numba is there (``fast``; 0.1 s for an Eiger 16M, where the NumPy steps, each a
        pass with its temporaries, take several seconds), else with NumPy."""
        ov2 = int(op.subpixels)
        code_bits = max(ov2 - 1, 0).bit_length()
        trash = int(op.n_bins)
        bits = trash.bit_length() + code_bits
        dtype = np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else np.uint64
        if fast and _nb_layout is not None:
            epp = op.entries_per_pixel
            n_used, n_runs, n_rest = _nb_layout_sizes(epp, op.bins, op.counts, ov2)
            codes = np.empty(n_used + 1, dtype=dtype)
            run_pixels = np.empty(n_runs, dtype=np.int64)
            run_starts = np.empty(n_runs + 1, dtype=np.int64)
            rest_pixels = np.empty(n_rest, dtype=np.int64)
            rest = np.empty(n_rest, dtype=np.int64)
            _nb_layout(epp, op.bins, op.counts, ov2, code_bits, trash, codes, run_pixels, run_starts,
                       rest_pixels, rest)
            codes = codes[:n_used]
        else:
            codes, run_pixels, run_starts, rest_pixels, rest = cls._numpy_layout(op, code_bits, trash, dtype)
        n_blocks = (op.entries_per_pixel.size >> STREAM_BLOCK_BITS) + 1
        starts = np.arange(n_blocks + 1, dtype=np.int64) << STREAM_BLOCK_BITS
        low = (rest_pixels & ((1 << STREAM_BLOCK_BITS) - 1)).astype(np.uint16)
        return cls(run_pixels, run_starts, codes,
                   low, np.searchsorted(rest_pixels, starts).astype(np.int64), op.bins[rest], op.counts[rest],
                   ov2, code_bits, trash)

    @staticmethod
    def _numpy_layout(op: BinningOperator, code_bits: int, trash: int,
                      dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Codes, runs and the rest's pixels and entry indices with NumPy (see :meth:`of`)."""
        epp = op.entries_per_pixel
        ov2 = int(op.subpixels)
        used = np.flatnonzero(epp)
        per_used = epp[used].astype(np.int64)
        first = np.zeros(used.size, dtype=np.int64)  # entry index of each used pixel's first entry
        np.cumsum(per_used[:-1], out=first[1:])
        b0 = op.bins[first].astype(np.int64)
        c0 = op.counts[first].astype(np.int64)
        whole = (per_used == 1) & (c0 == ov2)
        second = np.minimum(first + 1, max(op.bins.size - 1, 0))
        # one count suffices only when the pixel's sub-pixels all lie in the two bins
        pair = ((per_used == 2) & (op.bins[second].astype(np.int64) == b0 + 1)
                & (c0 + op.counts[second].astype(np.int64) == ov2))
        in_main = whole | pair
        codes: np.ndarray = np.where(in_main, (b0 << code_bits) | np.where(pair, c0, 0),
                                     trash << code_bits).astype(dtype)
        run_first = np.flatnonzero(np.diff(used, prepend=-2) != 1)
        run_pixels = used[run_first].astype(np.int64)
        run_starts = np.append(run_first, used.size).astype(np.int64)
        # the rest: every entry of the pixels not in the main stream
        other = np.flatnonzero(~in_main)
        rest_pixels = np.repeat(used[other], per_used[other]).astype(np.int64)
        group_start = np.cumsum(per_used[other]) - per_used[other]
        rest = np.repeat(first[other] - group_start, per_used[other]) + np.arange(rest_pixels.size, dtype=np.int64)
        return codes, run_pixels, run_starts, rest_pixels, rest

    @staticmethod
    def pixels(low: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """Full pixel indices (int64) of a stream from its ``*_low`` and ``*_blocks``."""
        block = np.repeat(np.arange(blocks.size - 1, dtype=np.int64), np.diff(blocks))
        full: np.ndarray = (block << STREAM_BLOCK_BITS) + low.astype(np.int64)
        return full

    @property
    def main_pixels(self) -> np.ndarray:
        """Pixel index (int64) of each code: the used pixels in order."""
        lengths = np.diff(self.run_starts)
        offsets = np.arange(self.codes.size, dtype=np.int64) - np.repeat(self.run_starts[:-1], lengths)
        full: np.ndarray = np.repeat(self.run_pixels, lengths) + offsets
        return full

    @property
    def main_bins(self) -> np.ndarray:
        """Bin of each code (``trash`` for the pixels of the rest stream), int64."""
        return self.codes.astype(np.int64) >> self.code_bits

    @property
    def main_first(self) -> np.ndarray:
        """First count of each code: ``ov²`` for a whole pixel, ``c`` for a pair, int64."""
        c = self.codes.astype(np.int64) & ((1 << self.code_bits) - 1)
        first: np.ndarray = np.where(c == 0, self.subpixels, c)
        return first

    def _kind(self, pair: bool) -> np.ndarray:
        c = self.codes.astype(np.int64) & ((1 << self.code_bits) - 1)
        kind: np.ndarray = (self.main_bins != self.trash) & ((c > 0) if pair else (c == 0))
        return kind

    @property
    def whole_pixels(self) -> np.ndarray:
        """Pixel indices of the whole pixels (all sub-pixels in one bin)."""
        pixels: np.ndarray = self.main_pixels[self._kind(False)]
        return pixels

    @property
    def pair_pixels(self) -> np.ndarray:
        """Pixel indices of the adjacent pairs."""
        pixels: np.ndarray = self.main_pixels[self._kind(True)]
        return pixels

    @property
    def pair_counts(self) -> np.ndarray:
        """Both counts of each adjacent pair, shape ``(pairs, 2)``."""
        first = self.main_first[self._kind(True)]
        return np.stack([first, self.subpixels - first], axis=1)

    @property
    def rest_pixels(self) -> np.ndarray:
        """Pixel index of each remaining entry."""
        return self.pixels(self.rest_low, self.rest_blocks)

    @property
    def nbytes(self) -> int:
        """Memory held by the streams."""
        return sum(int(a.nbytes) for a in (getattr(self, f) for f in self.__dataclass_fields__)
                   if isinstance(a, np.ndarray))


try:  # pragma: no branch - depends on the environment
    import numba as _numba

    @_numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_pixel_code(j, k, epp, bins, counts, ov2):  # type: ignore[no-untyped-def]  # pragma: no cover
        # Pixel j (its first entry k): (entries, low code bits): 0 for a whole pixel, the
        # first count for an adjacent pair whose counts add up to ov², −1 for the rest
        # stream.  Without branches (a pixel's shape is random: a branch would be
        # mispredicted a pixel in seven); the entries past the end are never used.
        e = np.int64(epp[j])
        last = bins.size - 1
        k0 = min(k, last)
        k1 = min(k + 1, last)
        b0, c0 = np.int64(bins[k0]), np.int64(counts[k0])
        b1, c1 = np.int64(bins[k1]), np.int64(counts[k1])
        whole = (e == 1) & (c0 == ov2)
        pair = (e == 2) & (b1 == b0 + 1) & (c0 + c1 == ov2)
        return e, (c0 if pair else 0) if (whole | pair) else -1

    @_numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_layout_sizes(epp, bins, counts, ov2):  # type: ignore[no-untyped-def]  # pragma: no cover
        # (used pixels, runs, rest entries) of StreamLayout.of
        n_used = n_runs = n_rest = 0
        k = 0
        previous = False
        for j in range(epp.size):
            e, c = _nb_pixel_code(j, k, epp, bins, counts, ov2)
            used = e != 0
            n_used += used
            n_runs += used & (not previous)
            previous = used
            n_rest += e if c < 0 else 0
            k += e
        return n_used, n_runs, n_rest

    @_numba.njit(cache=True, nogil=True, boundscheck=False)
    def _nb_layout(epp, bins, counts, ov2, code_bits, trash, codes, run_pixels,  # type: ignore[no-untyped-def]
                   run_starts, rest_pixels, rest):  # pragma: no cover
        # Fills the arrays sized by _nb_layout_sizes (the layout of _numpy_layout);
        # `codes` has one spare element, written by unused pixels.
        k = u = r = q = 0
        previous = False
        for j in range(epp.size):
            e, c = _nb_pixel_code(j, k, epp, bins, counts, ov2)
            used = e != 0
            if used and not previous:  # (rare: runs are long)
                run_pixels[r] = j
                run_starts[r] = u
                r += 1
            previous = used
            b = np.int64(bins[min(k, bins.size - 1)]) if c >= 0 else trash
            codes[u] = (b << code_bits) | max(c, 0)
            if c < 0 and used:
                for m in range(e):
                    rest_pixels[q] = j
                    rest[q] = k + m
                    q += 1
            u += used
            k += e
        run_starts[r] = u
except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
    _nb_layout = _nb_layout_sizes = None  # type: ignore[assignment]


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


def _compact_part(entries: tuple[np.ndarray, np.ndarray, np.ndarray], first_pixel: int, n_pixels: int) -> _Part:
    """A block's entries from :func:`_aggregate_block` (three int64 arrays) in 4 bytes an
    entry or less, kept until :func:`_assemble` (24 bytes an entry made most of the peak
    memory of a large detector's build: 1.9 GB for an Eiger 16M)."""
    pix, bins, counts = entries
    per_pixel = np.bincount(pix - first_pixel, minlength=n_pixels)
    if per_pixel.size and per_pixel.max() > 255:
        raise ValueError("too many bins per pixel (oversampling too large)")
    bin_dtype = np.uint16 if bins.size == 0 or bins.max() <= np.iinfo(np.uint16).max else np.int32
    return first_pixel, per_pixel.astype(np.uint8), bins.astype(bin_dtype), counts.astype(np.uint8)


def _assemble(shape: tuple[int, int], n_bins: int, parts: list[_Part], subpixels: int, x: np.ndarray,
              kind: str, x_label: str, correction: np.ndarray | None, meta: dict[str, Any]) -> BinningOperator:
    """The operator from its blocks' parts (in pixel order); empties ``parts`` as it goes."""
    n_pix = shape[0] * shape[1]
    bin_dtype = np.uint16 if n_bins <= np.iinfo(np.uint16).max + 1 else np.int32
    n_entries = sum(p[2].size for p in parts)
    per_pixel = np.zeros(n_pix, dtype=np.uint8)
    bins = np.empty(n_entries, dtype=bin_dtype)
    counts = np.empty(n_entries, dtype=np.uint8)
    at = 0
    parts.reverse()
    while parts:  # (each part freed once copied)
        first, block_epp, block_bins, block_counts = parts.pop()
        per_pixel[first:first + block_epp.size] = block_epp
        bins[at:at + block_bins.size] = block_bins
        counts[at:at + block_counts.size] = block_counts
        at += block_bins.size
    return BinningOperator(
        shape=shape,
        n_bins=int(n_bins),
        entries_per_pixel=per_pixel,
        bins=bins,
        counts=counts,
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
        parts.append(_compact_part(_aggregate_block(label_fn(q, dx, dy), ov, first, ncols, block_valid), first,
                                   (rows.stop - rows.start) * ncols))
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

    ``P = F (1 − cos²(χ − A) sin²2θ) + (1 − F)(1 − sin²(χ − A) sin²2θ)`` where χ is the
    package's azimuth (:func:`saxsdog.core.binning.chi_degrees`: clockwise from 3 o'clock
    on the image as read, in the laboratory frame perpendicular to the beam, as pyFAI's χ,
    so a tilted detector gives pyFAI's factor too), ``A`` the angle of the polarization
    plane and ``F`` the fraction polarized in that plane.  Measured intensities are
    divided by ``P``.  In pyFAI's terms: ``polarization_factor = 2F − 1``,
    ``axis_offset = −A``.
    """
    tth = geometry.two_theta(1)
    rc, cc = geometry.pixel_centers(1)
    dx, dy = geometry._offsets_mm(rc[:, None], cc[None, :])
    # the plane of polarization is perpendicular to the beam: its angle is an angle of χ,
    # not of the detector plane (the two differ on a tilted detector)
    chi = np.radians(chi_degrees(geometry, dx, dy))
    s2 = np.sin(tth) ** 2
    a = chi - np.radians(angle_deg)
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


# -- the operators (labellings: saxsdog.core.binning) ----------------------------------

def _check_oversampling(oversampling: int) -> int:
    ov = int(oversampling)
    if not 1 <= ov <= 15:
        raise ValueError("oversampling must be between 1 and 15")
    return ov


def _radial_meta(geometry: Geometry, axis: RadialAxis, meta: dict[str, Any]) -> dict[str, Any]:
    """Operator metadata of a radial axis: unit, NeXus unit, unless today's bins the edges,
    and for units other than nm⁻¹ the centres and edges in q (for the integral parameters)."""
    if axis.unit != "q_nm^-1":
        meta["unit"] = axis.unit
        meta["nx_unit"] = UNITS[axis.unit].nx_unit
        meta["q_x"] = [float(v) for v in q_from_unit(geometry, axis.unit, axis.centres)]
        meta["q_edges"] = [float(v) for v in q_from_unit(geometry, axis.unit, axis.edges)]
    if not axis.open_ended:
        meta["edges"] = [float(e) for e in axis.edges]
        meta["binning"] = "log" if axis.log else "linear"
    return meta


def build_radial_operator(geometry: Geometry, valid_mask: np.ndarray | None = None,
                          oversampling: int = 3, pixels_per_bin: float = 1.0,
                          polarization: tuple[float, float] | None = None, *,
                          unit: str = "q_nm^-1", binning: str = "linear",
                          points_per_decade: float | None = None,
                          radial_range: tuple[float, float] | None = None,
                          azimuth_range: tuple[float, float] | None = None) -> BinningOperator:
    """Build the radial (azimuthal-average) operator.

    Parameters
    ----------
    geometry
        Detector geometry.
    valid_mask
        Boolean array of the image shape, ``True`` where a pixel is used; ``None``: all.
    oversampling
        Sub-pixels per pixel edge.
    pixels_per_bin
        Linear bins: width in (average) detector pixels.
    polarization
        ``(fraction, angle_deg)`` to fold the polarization correction in, or ``None``.
    unit, binning, points_per_decade, radial_range
        The radial axis (see :func:`saxsdog.core.binning.radial_axis`); the defaults give
        today's bins, uniform in q from 0.
    azimuth_range
        ``(start, stop)`` in degrees of χ for a sector (see
        :func:`saxsdog.core.binning.azimuth_axis`); ``None``: the full circle.

    Returns
    -------
    BinningOperator
        With ``x`` the bin centres in ``unit``; ``meta["edges"]`` the edges unless the bins
        are today's default.
    """
    ov = _check_oversampling(oversampling)
    axis = radial_axis(geometry, unit, binning, pixels_per_bin, points_per_decade, radial_range)
    sector = (azimuth_axis(azimuth_range, 1, geometry.max_radius_px())
              if azimuth_range is not None else None)

    def labels(q: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        lab = axis.labels(radial_values(geometry, unit, q, dx, dy))
        if sector is not None:
            lab[sector.labels(chi_degrees(geometry, dx, dy)) < 0] = -1
        return lab

    parts = _label_subpixels(geometry, valid_mask, ov, labels)
    correction = None
    if polarization is not None:
        correction = 1.0 / polarization_factor(geometry, *polarization).ravel()
    meta: dict[str, Any] = {"dq": axis.width} if not axis.log else {}
    if sector is not None:
        meta["azimuth_range"] = [sector.start, sector.start + sector.width]
    return _assemble(geometry.shape, axis.n_bins, parts, ov * ov, axis.centres, "Radial",
                     UNITS[unit].label, correction, _radial_meta(geometry, axis, meta))


def build_phi_operator(geometry: Geometry, valid_mask: np.ndarray | None = None,
                       oversampling: int = 3, q_range: tuple[float, float] = (0.0, np.inf),
                       n_bins: int = 360,
                       polarization: tuple[float, float] | None = None, *,
                       azimuth_range: tuple[float, float] | None = None,
                       unit: str = "q_nm^-1") -> BinningOperator:
    """Build the Phi-mode operator: intensity versus azimuth χ within a radial range.

    Azimuth bins cover [−180°, 180°) (or ``azimuth_range``) uniformly in χ, measured
    clockwise from 3 o'clock on the image as read, as pyFAI's χ (see
    :mod:`saxsdog.core.binning`); only sub-pixels with ``start <= value < stop`` of
    ``q_range`` (in ``unit``, default nm⁻¹) count.
    """
    ov = _check_oversampling(oversampling)
    r_start, r_stop = q_range
    if not r_stop > r_start:
        raise BinningError(f"radial range [{r_start:g}, {r_stop:g}] of Phi-mode is empty or inverted",
                           "qStop", r_stop, "qStop > qStart (or 0 for the largest q)")
    azimuth = azimuth_axis(azimuth_range, n_bins, geometry.max_radius_px())
    if unit not in UNITS:
        raise BinningError(f"unknown radial unit {unit!r}", "Unit", unit, "one of " + ", ".join(UNITS))

    def labels(q: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        lab = azimuth.labels(chi_degrees(geometry, dx, dy))
        v = radial_values(geometry, unit, q, dx, dy)
        lab[(v < r_start) | (v >= r_stop)] = -1
        return lab

    parts = _label_subpixels(geometry, valid_mask, ov, labels)
    correction = None
    if polarization is not None:
        correction = 1.0 / polarization_factor(geometry, *polarization).ravel()
    meta: dict[str, Any] = {"q_range": [r_start, r_stop], "azimuth_edges": [float(e) for e in azimuth.edges]}
    if unit != "q_nm^-1":
        meta["unit"] = unit
    return _assemble(geometry.shape, azimuth.n_bins, parts, ov * ov, azimuth.centres, "Phi",
                     "Azimuth [deg]", correction, meta)


def build_cake_operator(geometry: Geometry, valid_mask: np.ndarray | None = None,
                        oversampling: int = 3, radial_bins: int = 1000, azimuth_bins: int = 360,
                        polarization: tuple[float, float] | None = None, *,
                        unit: str = "q_nm^-1", binning: str = "linear",
                        radial_range: tuple[float, float] | None = None,
                        azimuth_range: tuple[float, float] | None = None) -> BinningOperator:
    """Build a cake operator: a 2-D map I(radial, χ) with ``radial_bins × azimuth_bins`` bins.

    Bin ``b = a · R + r`` holds radial bin ``r`` of azimuth bin ``a``, so a curve's
    intensity reshapes to ``(azimuth_bins, radial_bins)``.  The operator's ``x`` holds the
    ``R`` radial centres, ``meta["azimuth"]`` the ``M`` χ centres.
    """
    ov = _check_oversampling(oversampling)
    for name, value in (("RadialBins", radial_bins), ("AzimuthBins", azimuth_bins)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise BinningError(f"Cake {name} must be a positive integer, not {value!r}", "Cake", value,
                               f"{name} >= 1")
    total = int(radial_bins) * int(azimuth_bins)
    if total > MAX_CAKE_BINS:
        raise BinningError(f"Cake of {radial_bins} × {azimuth_bins} = {total:.3g} bins is more than "
                           f"{MAX_CAKE_BINS:.3g}", "Cake", {"RadialBins": radial_bins, "AzimuthBins": azimuth_bins},
                           f"RadialBins × AzimuthBins <= {MAX_CAKE_BINS}")
    n_r = int(radial_bins)
    axis = radial_axis(geometry, unit, binning, 1.0, 1.0, radial_range, n_bins=n_r)
    azimuth = azimuth_axis(azimuth_range, int(azimuth_bins), geometry.max_radius_px(),
                           bins_field="Cake")

    def labels(q: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        lab_r = axis.labels(radial_values(geometry, unit, q, dx, dy))
        lab_a = azimuth.labels(chi_degrees(geometry, dx, dy))
        lab: np.ndarray = lab_a * n_r + lab_r
        lab[(lab_r < 0) | (lab_a < 0)] = -1
        return lab

    parts = _label_subpixels(geometry, valid_mask, ov, labels)
    correction = None
    if polarization is not None:
        correction = 1.0 / polarization_factor(geometry, *polarization).ravel()
    meta = _radial_meta(geometry, axis, {"cake": [int(azimuth_bins), n_r],
                               "azimuth": [float(c) for c in azimuth.centres],
                               "azimuth_edges": [float(e) for e in azimuth.edges]})
    meta["edges"] = [float(e) for e in axis.edges]
    meta["unit"] = unit
    meta["nx_unit"] = UNITS[unit].nx_unit
    return _assemble(geometry.shape, total, parts, ov * ov, axis.centres, "Cake",
                     UNITS[unit].label, correction, meta)


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


def slice_q_scale(geometry: Geometry, direction: str, plane: str, incident_angle_deg: float,
                  reference: str = "direct", band_centre: float | None = None) -> np.ndarray:
    """q scale of a GISAXS slice along its direction (one value per column or row).

    The standard grazing-incidence convention, without Ewald-sphere (q_x) correction.
    For every pixel on the slice's centre line the scattered direction is taken in the
    laboratory frame (tilt included).  With δ its exit angle, along the slice, out of the
    plane that holds the beam and the detector axis across the slice:

    * ``Vertical`` (the slice runs normal to the sample surface):
      ``q_z = k [sin(δ − α_i) + sin α_i]`` with δ measured from the direct beam
      (``reference="direct"``: BeamCenter is the direct beam, the usual case, so the exit
      angle from the surface is α_f = δ − α_i), or ``q_z = k [sin δ + sin α_i]`` with
      ``reference="horizon"`` (BeamCenter is the sample horizon, α_f = δ);
    * ``InPlane`` (the slice runs in the surface plane): ``q_h = 2k sin(2θ_f/2)``, signed,
      with 2θ_f the in-plane exit angle from the direct beam, ``atan2(p_along, p_beam)``.

    ``k = 2π/λ``; positive upwards (``y`` slices) and to the right (``x`` slices).

    Parameters
    ----------
    geometry
        Detector geometry.
    direction
        ``"x"`` (along columns) or ``"y"`` (along rows).
    plane
        ``"InPlane"`` or ``"Vertical"``.
    incident_angle_deg
        Angle of incidence α_i in degrees.
    reference
        ``"direct"`` or ``"horizon"`` (see above; only the vertical scale depends on it).
    band_centre
        Continuous coordinate of the slice's centre line across the slice (row from the
        top for ``x``, column from the left for ``y``); default: through the beam centre.
    """
    nrows, ncols = geometry.shape
    y_c, x_c = geometry.beam_center
    if reference not in ("direct", "horizon"):
        raise ValueError(f"unknown slice Reference {reference!r} (expected 'direct' or 'horizon')")
    if direction == "x":  # one value per column, on the row band_centre
        cols = np.arange(ncols) + 0.5
        rows = np.full(ncols, nrows - y_c if band_centre is None else band_centre)
    elif direction == "y":  # one value per row, on the column band_centre
        rows = np.arange(nrows) + 0.5
        cols = np.full(nrows, x_c if band_centre is None else band_centre)
    else:
        raise ValueError(f"unknown slice direction {direction!r} (expected 'x' or 'y')")
    dx, dy = geometry._offsets_mm(rows, cols)
    h, v = _lab_perpendicular(geometry, dx, dy)
    beam = geometry.distance_mm + geometry._along_beam(dx, dy)
    along, across = (h, v) if direction == "x" else (v, h)
    k = 2.0 * np.pi / (geometry.wavelength_A * 0.1)
    q: np.ndarray
    if plane == "InPlane":
        q = 2.0 * k * np.sin(np.arctan2(along, beam) / 2.0)
        return q
    if plane == "Vertical":
        delta = np.arctan2(along, np.hypot(across, beam))
        alpha_i = np.radians(incident_angle_deg)
        alpha_f = delta - alpha_i if reference == "direct" else delta
        q = k * (np.sin(alpha_f) + np.sin(alpha_i))
        return q
    raise ValueError(f"unknown slice plane {plane!r} (expected 'InPlane' or 'Vertical')")


def build_slice_operator(geometry: Geometry, valid_mask: np.ndarray | None, direction: str,
                         plane: str, position: int, margin: int,
                         incident_angle_deg: float = 0.0, reference: str = "direct") -> BinningOperator:
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
    reference
        ``"direct"`` (BeamCenter is the direct beam) or ``"horizon"`` (it is the sample
        horizon), see :func:`slice_q_scale`.
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
    parts = [_compact_part(_aggregate_block(labels, 1, 0, ncols, valid), 0, nrows * ncols)]
    # the centre line of the band as CutPosition gives it (before clipping to the detector)
    centre = nrows - position + 0.5 if direction == "x" else position - 0.5
    x = slice_q_scale(geometry, direction, plane, incident_angle_deg, reference, centre)
    label = ("vertical scattering vector $q_{v}$ [$nm^{-1}$]" if plane == "Vertical"
             else "horizontal scattering vector $q_{h}$ [$nm^{-1}$]")
    return _assemble(geometry.shape, n_bins, parts, 1, x, "Slice", label, None,
                     {"band": [lo, hi], "direction": direction, "plane": plane,
                      "reference": reference})
