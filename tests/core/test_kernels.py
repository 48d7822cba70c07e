"""The numba kernels' stream layout and their agreement with the scipy reference."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.core.geometry import Geometry
from saxsdog.core.kernels import accumulate, accumulate_corrected, available_methods
from saxsdog.core.operator import (StreamLayout, build_cake_operator, build_phi_operator, build_radial_operator,
                                   build_slice_operator)

SHAPE = (90, 77)
GEOMETRY = Geometry(SHAPE, (50.3, 30.8), 150.0, (172.0, 172.0), 1.54, -3.0, 40.0)
LARGE = Geometry((310, 270), (150.3, 130.8), 400.0, (172.0, 172.0), 1.54, -3.0, 40.0)


def _mask() -> np.ndarray:
    valid = np.random.default_rng(3).random(SHAPE) > 0.1
    valid[:, 10:14] = False
    return valid


OPERATORS = {
    # one pixel per bin: whole pixels and adjacent pairs
    "radial": lambda: build_radial_operator(GEOMETRY, _mask(), 3, 1.0),
    # narrow bins: most pixels over three or more bins (the "rest" stream)
    "radial_narrow": lambda: build_radial_operator(GEOMETRY, _mask(), 3, 0.3),
    # no oversampling: whole pixels only
    "radial_ov1": lambda: build_radial_operator(GEOMETRY, _mask(), 1, 1.0),
    # azimuth bins: pairs across the ±180° seam are not adjacent
    "phi": lambda: build_phi_operator(GEOMETRY, _mask(), 3, (0.0, np.inf), 36),
    # a cake: neighbours in azimuth are R bins apart (rest), more bins than one lane's limit
    "cake": lambda: build_cake_operator(GEOMETRY, _mask(), 3, 400, 120),
    "slice": lambda: build_slice_operator(GEOMETRY, _mask(), "x", "InPlane", 40, 3),
    # more pixels than one block of the 16-bit pixel indices (2**16)
    "radial_blocks": lambda: build_radial_operator(LARGE, np.random.default_rng(5).random(LARGE.shape) > 0.05,
                                                   2, 0.7),
}


def _entries(op) -> np.ndarray:
    pix = op.entry_pixels.astype(np.int64)
    return np.stack([pix, op.bins.astype(np.int64), op.counts.astype(np.int64)], axis=1)


def _from_streams(s: StreamLayout) -> np.ndarray:
    """The (pixel, bin, count) entries the streams describe: a main-stream pixel's one or
    two entries (none for the trash bin), then the rest stream's."""
    pix, bins, first = s.main_pixels, s.main_bins, s.main_first
    kept = bins != s.trash
    pix, bins, first = pix[kept], bins[kept], first[kept]
    entries = [np.stack([pix, bins, first], axis=1)]
    two = first < s.subpixels
    entries.append(np.stack([pix[two], bins[two] + 1, s.subpixels - first[two]], axis=1))
    entries.append(np.stack([s.rest_pixels, s.rest_bins, s.rest_counts], axis=1).astype(np.int64))
    return np.concatenate(entries).astype(np.int64)


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_streams_hold_every_entry_once(name):
    op = OPERATORS[name]()
    s = op.streams
    np.testing.assert_array_equal(_sorted(_from_streams(s)), _sorted(_entries(op)))
    for pixels in (s.main_pixels, s.rest_pixels):
        assert np.all(np.diff(pixels.astype(np.int64)) >= 0)  # each stream reads the image forward
    assert s.rest_bins.dtype == op.bins.dtype
    # the main stream: every used pixel once, in order
    np.testing.assert_array_equal(s.main_pixels, np.flatnonzero(op.entries_per_pixel))


def test_the_kernel_knows_the_block_size():
    import inspect

    import saxsdog.core.kernels as kernels
    from saxsdog.core.operator import STREAM_BLOCK_BITS

    assert f"bits = np.uint64({STREAM_BLOCK_BITS})" in inspect.getsource(kernels)
    s = OPERATORS["radial_blocks"]().streams
    assert s.rest_blocks.size > 2 and np.unique(s.rest_pixels >> STREAM_BLOCK_BITS).size > 1  # several in use


def test_the_test_operators_use_every_stream():
    radial, narrow = OPERATORS["radial"]().streams, OPERATORS["radial_narrow"]().streams
    assert radial.whole_pixels.size > 0 and radial.pair_pixels.size > 0
    assert narrow.rest_pixels.size > 0


def test_empty_operator_has_empty_streams():
    op = build_radial_operator(GEOMETRY, np.zeros(SHAPE, bool), 3, 1.0)
    s = op.streams
    assert s.whole_pixels.size == s.pair_pixels.size == s.rest_pixels.size == 0
    for m in available_methods():
        s1, s2 = accumulate(op, np.ones(SHAPE), squares=True, method=m)
        assert not s1.any() and s2 is not None and not s2.any()


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("variant", ["plain", "factor", "inline_dark", "removed_dark", "dummy_value"])
@pytest.mark.parametrize("prescan", [True, False])
def test_numba_agrees_with_scipy(name, variant, prescan, monkeypatch):
    """Both ways of finding dummies: a scan first (frames that fit in the cache) or in the pass."""
    import saxsdog.core.kernels as kernels

    monkeypatch.setattr(kernels, "_PRESCAN_PIXELS", 10 ** 9 if prescan else 0)
    op = OPERATORS[name]()
    rng = np.random.default_rng(11)
    shape = op.shape
    img = rng.poisson(50.0, shape).astype(np.int32)
    img[rng.random(shape) < 0.02] = -1  # dead pixels, some where the operator uses pixels
    img[5, 5:9] = 7  # a dummy value
    factor = 1.0 + 0.2 * rng.random(img.size)
    dark = rng.random(img.size)
    kw: dict = {"squares": True, "poisson": True, "mask_negative": variant != "plain"}
    if variant != "plain":
        kw["factor"] = factor
    if variant == "inline_dark":
        kw.update(dark_inline=dark, dark_scale=0.7)
    if variant == "removed_dark":
        kw.update(dark_removed=dark)
    if variant == "dummy_value":
        kw.update(dummy_value=7.0, dark_removed=dark)
    ref = accumulate_corrected(op, img, method="scipy", **kw)
    got = accumulate_corrected(op, img, method="numba", **kw)
    for field in ("signal", "squares", "variance", "removed", "removed_dark"):
        a, b = getattr(ref, field), getattr(got, field)
        assert (a is None) == (b is None), field
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-9, err_msg=field)
    assert got.dummy_pixels == ref.dummy_pixels
    if variant != "plain":
        assert ref.dummy_pixels > 0


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_plain_sums_equal_the_corrected_kernel_without_corrections(name):
    """accumulate (the operator's own correction) and accumulate_corrected with that
    correction as its factor run the same arithmetic in the same order: the same bytes."""
    op = OPERATORS[name]()
    img = np.random.default_rng(2).poisson(30.0, op.shape).astype(np.float32)
    op.correction = 1.0 + 0.1 * np.random.default_rng(4).random(img.size)
    s1, s2 = accumulate(op, img, squares=True, method="numba")
    c = accumulate_corrected(op, img, factor=op.correction, squares=True, method="numba")
    assert s1.tobytes() == c.signal.tobytes()
    assert s2 is not None and c.squares is not None and s2.tobytes() == c.squares.tobytes()


def test_pickled_operator_leaves_the_derived_streams_behind():
    import pickle

    op = OPERATORS["radial"]()
    img = np.random.default_rng(8).poisson(20.0, op.shape).astype(np.int32)
    before = accumulate(op, img)[0]
    assert "streams" in op.__dict__ or "numba" not in available_methods()
    copy = pickle.loads(pickle.dumps(op))
    assert "streams" not in copy.__dict__ and "entry_pixels" not in copy.__dict__
    np.testing.assert_array_equal(accumulate(copy, img)[0], before)
    assert copy.n_bins == op.n_bins and copy.kind == op.kind


def test_pairs_that_lost_subpixels_go_to_the_rest_stream():
    """A pair stores one count (the other is ov² minus it): a pixel over two adjacent bins
    whose counts do not add up to ov² (cut by the edge of a sector) must be in the rest
    stream, and the kernels still agree with the reference."""
    op = build_radial_operator(GEOMETRY, _mask(), 3, 1.0, azimuth_range=(10.0, 100.0))
    pix = op.entry_pixels.astype(np.int64)
    first = np.flatnonzero(np.r_[True, pix[1:] != pix[:-1]])
    epp = op.entries_per_pixel[pix[first]]
    two = first[epp == 2]
    adjacent = op.bins[two + 1].astype(np.int64) == op.bins[two].astype(np.int64) + 1
    short = two[adjacent & (op.counts[two].astype(np.int64) + op.counts[two + 1] < op.subpixels)]
    assert short.size > 0  # the test operator has such pixels
    s = op.streams
    assert not np.isin(pix[short], s.pair_pixels).any()
    assert np.isin(pix[short], s.rest_pixels).all()
    np.testing.assert_array_equal(_sorted(_from_streams(s)), _sorted(_entries(op)))
    assert np.all(s.pair_counts.sum(axis=1) == op.subpixels)
    img = np.random.default_rng(9).poisson(40.0, op.shape).astype(np.int32)
    factor = 1.0 + 0.1 * np.random.default_rng(10).random(img.size)
    for kw in ({}, {"squares": True, "poisson": True, "factor": factor}):
        ref = accumulate_corrected(op, img, method="scipy", **kw)
        for m in available_methods():
            got = accumulate_corrected(op, img, method=m, **kw)
            for field in ("signal", "squares", "variance"):
                a, b = getattr(ref, field), getattr(got, field)
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-9, err_msg=f"{m} {field}")


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_dummies_found_by_the_unchecked_pass_are_integrated_again():
    """With MaskNegative a frame is first integrated without the per-pixel test (only its
    smallest value kept); a frame with dummies where the operator uses pixels is integrated
    again, testing them, and the operator remembers it for the next frame.  The sums never
    depend on that: every frame agrees with the reference, whatever came before."""
    op = OPERATORS["radial"]()
    rng = np.random.default_rng(21)
    clean = rng.poisson(50.0, op.shape).astype(np.int32)
    outside = clean.copy()
    outside[~(op.entries_per_pixel > 0).reshape(op.shape)] = -1  # dummies only where nothing is used
    dirty = clean.copy()
    dirty[rng.random(op.shape) < 0.02] = -2
    factor = 1.0 + 0.2 * rng.random(clean.size)
    dark = rng.random(clean.size)
    kw = {"factor": factor, "dark_removed": dark, "poisson": True, "mask_negative": True}
    hints = []
    for img in (clean, outside, dirty, dirty, clean, outside, dirty):
        ref = accumulate_corrected(op, img, method="scipy", **kw)
        got = accumulate_corrected(op, img, method="numba", **kw)
        hints.append(op.__dict__.get("_dummy_hint"))
        for field in ("signal", "variance", "removed", "removed_dark"):
            np.testing.assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-12, atol=1e-9,
                                       err_msg=field)
        assert got.dummy_pixels == ref.dummy_pixels
        assert (got.dummy_pixels > 0) == (img is dirty)
    assert hints == [False, False, True, True, False, False, True]


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_a_dummy_value_that_is_not_negative_is_tested_in_the_pass():
    """The unchecked pass only sees negative values: a DummyValue >= 0 is always tested."""
    op = OPERATORS["radial"]()
    img = np.random.default_rng(22).poisson(50.0, op.shape).astype(np.int32)
    used = np.flatnonzero(op.entries_per_pixel > 0)
    img.reshape(-1)[used[:5]] = 7
    op.__dict__.pop("_dummy_hint", None)
    for m in available_methods():
        got = accumulate_corrected(op, img, method=m, mask_negative=True, dummy_value=7.0)
        assert got.dummy_pixels == np.count_nonzero(img.reshape(-1)[used] == 7)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_a_packed_factor_gives_the_sums_of_the_factor_per_pixel(name):
    """pack_factor: the factor of the used pixels in stream order, read by the numba kernel in
    order; the sums equal those with the factor read at each pixel (the same numbers, the
    same order) and the reference's."""
    from saxsdog.core.kernels import pack_factor

    op = OPERATORS[name]()
    rng = np.random.default_rng(23)
    img = rng.poisson(50.0, op.shape).astype(np.int32)
    img[rng.random(op.shape) < 0.02] = -1
    factor = 1.0 + 0.2 * rng.random(img.size)
    dark = rng.random(img.size)
    packed = pack_factor(op, factor)
    # one value per used pixel (the main stream) and per rest entry
    assert packed is not None and packed.size == np.count_nonzero(op.entries_per_pixel) + op.streams.rest_low.size
    for kw in ({"poisson": True}, {"squares": True, "poisson": True, "mask_negative": True, "dark_removed": dark},
               {"squares": True, "dark_inline": dark, "dark_scale": 0.5, "mask_negative": True}):
        ref = accumulate_corrected(op, img, factor=factor, method="scipy", **kw)
        per_pixel = accumulate_corrected(op, img, factor=factor, method="numba", **kw)
        got = accumulate_corrected(op, img, factor=factor, packed_factor=packed, method="numba", **kw)
        for field in ("signal", "squares", "variance", "removed", "removed_dark"):
            a, b, c = getattr(ref, field), getattr(per_pixel, field), getattr(got, field)
            assert (a is None) == (c is None), field
            if a is not None:
                assert c.tobytes() == b.tobytes(), field
                np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-9, err_msg=field)
        assert got.dummy_pixels == ref.dummy_pixels
    with pytest.raises(ValueError, match="packed"):
        accumulate_corrected(op, img, factor=factor, packed_factor=packed[:-1], method="numba")


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_the_compiled_layout_equals_the_numpy_layout(name):
    """StreamLayout.of derives the layout in one compiled pass; the NumPy steps are its reference."""
    op = OPERATORS[name]()
    fast, slow = StreamLayout.of(op), StreamLayout.of(op, fast=False)
    for f in fast.__dataclass_fields__:
        a, b = getattr(fast, f), getattr(slow, f)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype, f
            np.testing.assert_array_equal(a, b, err_msg=f)
        else:
            assert a == b, f


def _handmade(n_bins: int = 5, bin_shift: int = 0):
    """A 2 × 8 operator (Oversampling 3) with one pixel of every kind, gaps and a run at the end:

    0 whole · 1 pair · 2 unused · 3 three bins · 4 whole that lost sub-pixels · 5 pair whose
    counts do not add up to 9 · 6 two bins that are not adjacent · 7 pair at the last two
    bins · 8 whole in the last bin · 9-14 unused · 15 whole (the last pixel)."""
    from saxsdog.core.operator import BinningOperator

    last = n_bins - 1
    per_pixel = {0: [(0, 9)], 1: [(1, 4), (2, 5)], 3: [(0, 3), (1, 3), (2, 3)], 4: [(3, 5)], 5: [(2, 4), (3, 4)],
                 6: [(0, 4), (2, 5)], 7: [(last - 1, 2), (last, 7)], 8: [(last, 9)], 15: [(2, 9)]}
    epp = np.zeros(16, np.uint8)
    bins, counts = [], []
    for pixel, entries in sorted(per_pixel.items()):
        epp[pixel] = len(entries)
        for b, c in entries:
            bins.append(b if b >= last - 1 else b + bin_shift)
            counts.append(c)
    dtype = np.uint16 if n_bins <= 65536 else np.int32
    return BinningOperator((2, 8), n_bins, epp, np.array(bins, dtype), np.array(counts, np.uint8), 9,
                           np.arange(n_bins, dtype=np.float64))


def test_the_main_stream_codes_whole_pixels_and_pairs_and_sends_the_others_to_the_rest_stream():
    op = _handmade()
    s = op.streams
    assert (s.code_bits, s.trash, s.codes.dtype) == (4, 5, np.uint16)
    # runs of used pixels: 0-1, 3-8, 15 (the gaps and the last pixel end them)
    np.testing.assert_array_equal(s.run_pixels, [0, 3, 15])
    np.testing.assert_array_equal(s.run_starts, [0, 2, 8, 9])
    np.testing.assert_array_equal(s.main_pixels, [0, 1, 3, 4, 5, 6, 7, 8, 15])
    trash = 5 << 4
    np.testing.assert_array_equal(s.codes, [0 << 4 | 0, 1 << 4 | 4, trash, trash, trash, trash, 3 << 4 | 2,
                                            4 << 4 | 0, 2 << 4 | 0])
    np.testing.assert_array_equal(s.rest_pixels, [3, 3, 3, 4, 5, 5, 6, 6])
    np.testing.assert_array_equal(s.rest_bins, [0, 1, 2, 3, 2, 3, 0, 2])
    np.testing.assert_array_equal(s.rest_counts, [3, 3, 3, 5, 4, 4, 4, 5])
    np.testing.assert_array_equal(s.whole_pixels, [0, 8, 15])
    np.testing.assert_array_equal(s.pair_pixels, [1, 7])
    np.testing.assert_array_equal(s.pair_counts, [[4, 5], [2, 7]])
    np.testing.assert_array_equal(_sorted(_from_streams(s)), _sorted(_entries(op)))


@pytest.mark.parametrize(("n_bins", "dtype"), [(4095, np.uint16), (4096, np.uint32), (70000, np.uint32)])
def test_codes_are_16_bit_while_the_bins_fit_beside_the_count(n_bins, dtype):
    """12 bits of bin (the trash bin n_bins included) and 4 of count at Oversampling 3."""
    op = _handmade(n_bins, bin_shift=n_bins - 10)
    s = op.streams
    assert s.codes.dtype == dtype and s.trash == n_bins
    np.testing.assert_array_equal(_sorted(_from_streams(s)), _sorted(_entries(op)))
    assert s.main_bins.max() == n_bins  # the trash bin is representable
    np.testing.assert_array_equal(s.main_bins[s.main_bins < n_bins], [n_bins - 10, n_bins - 9, n_bins - 2,
                                                                      n_bins - 1, n_bins - 8])


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("n_bins", [5, 4096])
@pytest.mark.parametrize("dummies", [(), (0,), (3,), (15,), (8, 7), (0, 1, 3, 4, 5, 6, 7, 8, 15)])
def test_the_kernel_agrees_with_the_reference_at_run_boundaries_and_on_every_pixel_kind(n_bins, dummies):
    """Dummies at a run's first pixel, on a pixel of the rest stream (its trash code in the
    main stream must not count), at the last pixel, in the last bins; every sum."""
    op = _handmade(n_bins, bin_shift=0 if n_bins == 5 else n_bins - 10)
    rng = np.random.default_rng(31)
    img = rng.poisson(40.0, op.shape).astype(np.int32)
    img.reshape(-1)[[2, 9, 10]] = -1  # dummies where nothing is used
    img.reshape(-1)[list(dummies)] = -3
    factor = 1.0 + 0.3 * rng.random(img.size)
    dark = rng.random(img.size)
    for kw in ({}, {"squares": True}, {"squares": True, "poisson": True, "factor": factor},
               {"poisson": True, "mask_negative": True, "factor": factor, "dark_removed": dark},
               {"squares": True, "mask_negative": True, "dark_inline": dark, "dark_scale": 0.5}):
        op.__dict__.pop("_dummy_hint", None)
        ref = accumulate_corrected(op, img, method="scipy", **kw)
        got = accumulate_corrected(op, img, method="numba", **kw)
        for field in ("signal", "squares", "variance", "removed", "removed_dark"):
            a, b = getattr(ref, field), getattr(got, field)
            assert (a is None) == (b is None), field
            if a is not None:
                assert b.shape == (n_bins,), field
                np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-9, err_msg=f"{field} {kw}")
        assert got.dummy_pixels == ref.dummy_pixels == (len(dummies) if kw.get("mask_negative") else 0)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("name", sorted(OPERATORS) + ["handmade"])
@pytest.mark.parametrize("variant", ["plain", "factor", "packed", "clean_mask_negative", "dummies"])
@pytest.mark.parametrize("poisson", [False, True])
def test_the_pass_by_code_agrees_with_the_reference(name, variant, poisson):
    """No squares and no dummy test asked for: the main stream is summed per code (the
    signal and the variance terms, weights applied once per code, _nb_code_sums) unless
    the slots are too many (the cake); a frame with dummies is found by that pass and
    integrated again with the test."""
    import saxsdog.core.kernels as kernels
    from saxsdog.core.kernels import pack_factor

    op = _handmade(2000, bin_shift=1990) if name == "handmade" else OPERATORS[name]()
    s = op.streams
    assert kernels._by_code(s) == (name != "cake") == (s.codes.dtype == np.uint16)
    rng = np.random.default_rng(41)
    img = rng.poisson(50.0, op.shape).astype(np.int32)
    factor = 1.0 + 0.2 * rng.random(img.size)
    kw: dict = {"poisson": poisson}
    if variant in ("factor", "packed", "dummies"):
        kw["factor"] = factor
    if variant == "packed":
        kw["packed_factor"] = pack_factor(op, factor)
    if variant in ("clean_mask_negative", "dummies"):
        kw["mask_negative"] = True
    if variant == "dummies":
        img.reshape(-1)[np.flatnonzero(op.entries_per_pixel)[::7]] = -1
    op.__dict__.pop("_dummy_hint", None)
    ref = accumulate_corrected(op, img, method="scipy", **{k: v for k, v in kw.items() if k != "packed_factor"})
    got = accumulate_corrected(op, img, method="numba", **kw)
    np.testing.assert_allclose(got.signal, ref.signal, rtol=1e-12, atol=1e-9)
    assert got.squares is None and (got.variance is None) == (not poisson)
    if poisson:
        np.testing.assert_allclose(got.variance, ref.variance, rtol=1e-12, atol=1e-9)
    assert got.dummy_pixels == ref.dummy_pixels
    if variant == "dummies":
        assert ref.dummy_pixels > 0
        np.testing.assert_allclose(got.removed, ref.removed, rtol=1e-12, atol=1e-9)
    if variant == "plain" and not poisson:
        np.testing.assert_allclose(accumulate(op, img, method="numba")[0], ref.signal, rtol=1e-12, atol=1e-9)


def _without_rest(op_name: str = "radial"):
    """A test operator rebuilt without the pixels of its rest stream (as the example Pilatus
    calibration, whose used pixels are all whole pixels or adjacent pairs)."""
    op = OPERATORS[op_name]()
    valid = _mask().reshape(-1).copy()
    valid[op.streams.rest_pixels] = False
    out = build_radial_operator(GEOMETRY, valid.reshape(SHAPE), 3, 1.0)
    assert out.streams.rest_low.size == 0 and out.streams.codes.size > 100
    return out


def _model_by_code(op, img, g_stream, poisson):
    """The pass by code of a rest-free operator in NumPy, pixel after pixel in stream order
    (np.add.at adds repeated indices one after the other), then each code's weights as the
    kernels apply them: the bits the compiled pass must give, whatever its steps."""
    s = op.streams
    p = img.reshape(-1)[s.main_pixels].astype(np.float64)
    v = p if g_stream is None else p * g_stream
    u = v if g_stream is None else v * g_stream
    u = np.where(u < 0.0, 0.0, u)  # max(u, 0.0) as numba computes it
    n_codes = (s.trash + 1) << s.code_bits
    sig_slots, var_slots = np.zeros(n_codes), np.zeros(n_codes)
    np.add.at(sig_slots, s.codes.astype(np.int64), v)
    np.add.at(var_slots, s.codes.astype(np.int64), u)
    signal, variance = np.zeros(op.n_bins + 1), np.zeros(op.n_bins + 1)
    per_bin = 1 << s.code_bits
    for b in range(op.n_bins):
        s1 = s2 = u1 = u2 = 0.0
        for c in range(per_bin):
            n1 = float(s.subpixels) if c == 0 else float(c)
            n2 = 0.0 if c == 0 else float(s.subpixels - c)
            x, xu = sig_slots[b * per_bin + c], var_slots[b * per_bin + c]
            s1 += n1 * x
            s2 += n2 * x
            u1 += n1 * n1 * xu
            u2 += n2 * n2 * xu
        signal[b] += s1
        signal[b + 1] += s2
        variance[b] += u1
        variance[b + 1] += u2
    return signal[:op.n_bins], (variance[:op.n_bins] if poisson else None)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint32, np.int64, np.int16, np.uint8,
                                   np.float32, np.float64])
@pytest.mark.parametrize("factor", [None, "pixel", "packed", "packed32"])
@pytest.mark.parametrize("poisson", [False, True])
@pytest.mark.parametrize("stepped", [True, False])
def test_the_pass_by_code_in_steps_of_pixels_adds_in_pixel_order(dtype, factor, poisson, stepped, monkeypatch):
    """The clean pass of a frame that fits in the cache loads the image, codes and factor a
    few pixels at a time (_chunk_sums) and finishes each run pixel by pixel; a larger frame
    goes pixel by pixel: both the same bits as adding every pixel in order, for every image
    dtype and factor kind, with and without the variance."""
    import saxsdog.core.kernels as kernels
    from saxsdog.core.kernels import pack_factor

    monkeypatch.setattr(kernels, "_STEPPED_BYTES", 1 << 40 if stepped else 0)

    op = _without_rest()
    rng = np.random.default_rng(51)
    img = rng.poisson(60.0, op.shape).astype(dtype)
    if np.dtype(dtype).kind == "f":
        img = img + rng.random(op.shape).astype(dtype)  # not integers
    g = 1.0 + 0.25 * rng.random(img.size)
    kw: dict = {"poisson": poisson, "mask_negative": True}
    g_stream = None
    if factor is not None:
        kw["factor"] = g
        g_stream = g[op.streams.main_pixels]
    if factor in ("packed", "packed32"):
        packed = pack_factor(op, g)
        if factor == "packed32":  # a factor stored in float32: every product still in float64
            packed = packed.astype(np.float32)
            g_stream = packed.astype(np.float64)
        kw["packed_factor"] = packed
    op.__dict__.pop("_dummy_hint", None)
    got = accumulate_corrected(op, img, method="numba", **kw)
    signal, variance = _model_by_code(op, img, g_stream, poisson)
    assert got.signal.tobytes() == signal.tobytes()
    if poisson:
        assert got.variance is not None and got.variance.tobytes() == variance.tobytes()
    ref = accumulate_corrected(op, img, method="scipy", **{k: v for k, v in kw.items() if k != "packed_factor"})
    rtol = 1e-7 if factor == "packed32" else 1e-12
    np.testing.assert_allclose(got.signal, ref.signal, rtol=rtol, atol=1e-9)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("where", ["first", "second step", "last step", "tail", "last"])
def test_one_dummy_anywhere_in_a_run_is_found_by_the_clean_pass(where):
    """A single negative pixel in a step of the clean pass (or in a run's tail) sends the
    frame to the checked pass: it is excluded and counted."""
    op = _without_rest()
    s = op.streams
    lengths = np.diff(s.run_starts)
    r = int(np.argmax(lengths))
    start, n = int(s.run_starts[r]), int(lengths[r])
    assert n > 20
    position = {"first": 0, "second step": 5, "last step": (n // 8) * 8 - 1, "tail": n - 1 - (n % 8) // 2,
                "last": n - 1}[where]
    if where == "tail" and n % 8 == 0:
        position = n - 1
    img = np.random.default_rng(52).poisson(40.0, op.shape).astype(np.int32)
    img.reshape(-1)[s.main_pixels[start + position]] = -1
    op.__dict__.pop("_dummy_hint", None)
    kw = {"poisson": True, "mask_negative": True}
    ref = accumulate_corrected(op, img, method="scipy", **kw)
    got = accumulate_corrected(op, img, method="numba", **kw)
    assert got.dummy_pixels == ref.dummy_pixels == 1
    np.testing.assert_allclose(got.signal, ref.signal, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got.variance, ref.variance, rtol=1e-12, atol=1e-9)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_a_strided_flat_image_and_factor_are_integrated_as_contiguous_ones():
    """The clean pass loads contiguous vectors: a 1-D image or factor that is a strided view
    is read as its values, not as the memory after its first element."""
    op = _without_rest()
    rng = np.random.default_rng(53)
    img = rng.poisson(40.0, op.shape).astype(np.int32).reshape(-1)
    g = 1.0 + 0.2 * rng.random(img.size)
    wide_img, wide_g = np.zeros(2 * img.size, np.int32), np.zeros(2 * img.size)
    wide_img[::2], wide_g[::2] = img, g
    for kw in ({}, {"poisson": True, "factor": g}):
        want = accumulate_corrected(op, img, method="numba", **kw)
        strided_kw = dict(kw, factor=wide_g[::2]) if "factor" in kw else kw
        got = accumulate_corrected(op, wide_img[::2], method="numba", **strided_kw)
        assert got.signal.tobytes() == want.signal.tobytes()
        if kw:
            assert got.variance.tobytes() == want.variance.tobytes()


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_not_a_number_and_negative_zero_pass_as_in_the_reference():
    """NaN pixels (not dummies: NaN < 0 is false) make their bins NaN in every sum, as in the
    reference; −0.0 is no dummy either."""
    op = _without_rest()
    img = np.random.default_rng(54).poisson(40.0, op.shape).astype(np.float32)
    used = op.streams.main_pixels
    img.reshape(-1)[used[[3, 40, 41]]] = np.nan
    img.reshape(-1)[used[[7, 90]]] = -0.0
    kw = {"poisson": True, "mask_negative": True, "factor": 1.0 + 0.1 * np.arange(img.size) / img.size}
    ref = accumulate_corrected(op, img, method="scipy", **kw)
    got = accumulate_corrected(op, img, method="numba", **kw)
    for field in ("signal", "variance"):
        a, b = getattr(ref, field), getattr(got, field)
        np.testing.assert_array_equal(np.isnan(b), np.isnan(a), err_msg=field)
        assert np.isnan(a).any()
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-9, err_msg=field)
    assert got.dummy_pixels == ref.dummy_pixels == 0


@pytest.mark.parametrize("size", [1, 7, 8, 33, 20000])
def test_root_of_positive_gives_the_bytes_of_the_numpy_expression(size):
    """A cake map's legacy error in one pass: the bytes of sqrt(maximum(v, 0) * scale) for
    negative, −0.0, NaN, infinite and subnormal values and zero or infinite scales."""
    from saxsdog.core.kernels import root_of_positive

    rng = np.random.default_rng(size)
    v = rng.normal(size=size) * 10.0 ** rng.integers(-300, 300, size)
    scale = rng.random(size) * 10.0 ** rng.integers(-10, 300, size)
    for step, value in ((7, -0.0), (11, 0.0), (13, np.nan), (17, np.inf), (19, -np.inf), (23, 5e-324),
                        (29, -5e-324)):
        v[::step] = value
    scale[::5] = 0.0
    scale[::31] = np.inf
    with np.errstate(all="ignore"):
        want = np.maximum(v, 0.0)
        want *= scale
        np.sqrt(want, out=want)
        got = root_of_positive(v, scale)
    assert got.dtype == np.float64 and got.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="shape"):
        root_of_positive(v, scale[:-1] if size > 1 else np.ones(2))
