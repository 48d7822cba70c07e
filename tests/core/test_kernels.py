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
    whole = np.stack([s.whole_pixels, s.whole_bins, s.whole_counts], axis=1).astype(np.int64)
    first = np.stack([s.pair_pixels, s.pair_bins, s.pair_counts[:, 0]], axis=1).astype(np.int64)
    second = np.stack([s.pair_pixels, s.pair_bins.astype(np.int64) + 1, s.pair_counts[:, 1]], axis=1).astype(np.int64)
    rest = np.stack([s.rest_pixels, s.rest_bins, s.rest_counts], axis=1).astype(np.int64)
    return np.concatenate([whole, first, second, rest])


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_streams_hold_every_entry_once(name):
    op = OPERATORS[name]()
    s = op.streams
    np.testing.assert_array_equal(_sorted(_from_streams(s)), _sorted(_entries(op)))
    for pixels in (s.whole_pixels, s.pair_pixels, s.rest_pixels):
        assert np.all(np.diff(pixels.astype(np.int64)) >= 0)  # each stream reads the image forward
    assert s.whole_bins.dtype == op.bins.dtype and s.pair_bins.dtype == op.bins.dtype


def test_the_kernel_knows_the_block_size():
    import inspect

    import saxsdog.core.kernels as kernels
    from saxsdog.core.operator import STREAM_BLOCK_BITS

    assert f"bits = np.uint64({STREAM_BLOCK_BITS})" in inspect.getsource(kernels)
    s = OPERATORS["radial_blocks"]().streams
    assert s.whole_blocks.size > 2 and s.pair_blocks.size > 2  # several blocks in use


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
