"""Analytic properties of the operator and agreement between kernels."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.core.geometry import Geometry
from saxsdog.core.integrators import RadialIntegrator, PhiIntegrator, SliceIntegrator, integral_parameters
from saxsdog.core.kernels import available_methods, accumulate
from saxsdog.core.operator import (build_phi_operator, build_radial_operator, build_slice_operator,
                                   polarization_factor, slice_band)

SHAPE = (120, 97)


@pytest.fixture(scope="module")
def geometry():
    return Geometry(SHAPE, (70.3, 40.8), 200.0, (172.0, 172.0), 1.54, -3.0, 40.0)


@pytest.fixture(scope="module")
def mask():
    rng = np.random.default_rng(1)
    valid = rng.random(SHAPE) > 0.1
    valid[:, 10:14] = False  # a detector gap
    return valid


@pytest.mark.parametrize("ov", [1, 2, 3, 5])
def test_constant_image_gives_constant_curve(geometry, mask, ov):
    op = build_radial_operator(geometry, mask, ov, 1.0)
    for m in available_methods():
        I = RadialIntegrator(op, method=m).integrate(np.full(SHAPE, 7.25))
        nonempty = op.bin_counts > 0
        assert np.allclose(I[nonempty], 7.25, rtol=1e-12)
        assert np.all(I[~nonempty] == 0)


@pytest.mark.parametrize("ppre", [0.5, 1.0, 2.5])
def test_intensity_conservation(geometry, mask, ppre):
    op = build_radial_operator(geometry, mask, 3, ppre)
    img = np.random.default_rng(2).poisson(100.0, SHAPE).astype(np.int32)
    for m in available_methods():
        I = RadialIntegrator(op, method=m).integrate(img)
        assert np.isclose((I * op.area).sum(), img[mask].sum(), rtol=1e-9)


def test_every_valid_subpixel_is_counted_once(geometry, mask):
    op = build_radial_operator(geometry, mask, 3, 1.0)
    per_pixel = np.zeros(SHAPE[0] * SHAPE[1])
    np.add.at(per_pixel, op.entry_pixels, op.counts)
    assert np.all(per_pixel[mask.ravel()] == 9)
    assert np.all(per_pixel[~mask.ravel()] == 0)


def test_bins_uniform_in_q_and_width_in_pixels(geometry):
    op = build_radial_operator(geometry, None, 3, 2.0)
    dq = np.diff(op.x)
    assert np.allclose(dq, dq[0], rtol=1e-12)
    assert op.n_bins == int(geometry.max_radius_px() // 2.0) + 1
    assert op.x[-1] + dq[0] / 2 >= geometry.q(3).max()


def test_poisson_column_formula(geometry, mask):
    op = build_radial_operator(geometry, mask, 3, 1.0)
    img = np.random.default_rng(3).poisson(50.0, SHAPE)
    I, std, poisson = RadialIntegrator(op).integrate_with_errors(img)
    A = op.area
    ok = A > 0
    assert np.allclose(poisson[ok], np.sqrt(I[ok] * A[ok]) / A[ok], rtol=1e-12)
    assert np.all(poisson[~ok] == 0) and np.all(std[~ok] == 0) and np.all(I[~ok] == 0)
    assert np.all(np.isfinite(poisson)) and np.all(np.isfinite(std))


def test_standard_deviation_is_weighted_spread(geometry):
    op = build_radial_operator(geometry, None, 1, 1.0)  # ov=1: each pixel in exactly one bin
    img = np.random.default_rng(4).normal(10, 3, SHAPE)
    I, std, _ = RadialIntegrator(op).integrate_with_errors(img)
    flat = img.ravel()
    for b in np.flatnonzero(op.bin_counts > 3)[:20]:
        vals = flat[op.entry_pixels[op.bins == b]]
        assert np.isclose(I[b], vals.mean(), rtol=1e-12)
        assert np.isclose(std[b], vals.std(), rtol=1e-9)


def test_polarization_inverse_image_integrates_to_one(geometry):
    """An image equal to the polarization factor P is corrected to exactly 1 (the original SAXSDOG manual, §5.4)."""
    tilted = Geometry(SHAPE, (70.3, 40.8), 20.0, (172.0, 172.0), 1.54, -3.0, 40.0)  # wide angles
    P = polarization_factor(tilted, 0.95, 30.0)
    assert P.min() < 0.9  # the test is meaningful: P varies strongly here
    op = build_radial_operator(tilted, None, 3, 1.0, polarization=(0.95, 30.0))
    for m in available_methods():
        I = RadialIntegrator(op, method=m).integrate(P)
        nonempty = op.bin_counts > 0
        assert np.allclose(I[nonempty], 1.0, rtol=1e-12)
    ones = RadialIntegrator(op).integrate(np.ones(SHAPE))
    assert np.ptp(ones[op.bin_counts > 0]) > 1e-3  # while a flat image shows the wiggles


def test_polarization_factor_physics():
    g = Geometry((3, 3), (1.5, 1.5), 1.0, (1000.0, 1000.0), 1.54)
    # Horizontally polarized beam (F=1, angle 0): no scattering suppression vertically,
    # suppression by cos²(2θ) horizontally.
    P = polarization_factor(g, 1.0, 0.0)
    tth = g.two_theta()
    assert np.isclose(P[1, 2], np.cos(tth[1, 2]) ** 2)
    assert np.isclose(P[0, 1], 1.0)


def test_kernels_agree(geometry, mask):
    methods = available_methods()
    assert "scipy" in methods
    op = build_radial_operator(geometry, mask, 3, 1.0, polarization=(0.9, 10.0))
    img = np.random.default_rng(5).poisson(1000.0, SHAPE).astype(np.int32)
    results = {m: accumulate(op, img, squares=True, method=m) for m in methods}
    ref = results["scipy"]
    for m, (s1, s2) in results.items():
        assert np.allclose(s1, ref[0], rtol=1e-12, atol=1e-9), m
        assert np.allclose(s2, ref[1], rtol=1e-12, atol=1e-6), m
    csr = op.to_csr()
    assert np.allclose(csr @ img.ravel().astype(float), ref[0] * op.inverse_counts, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32, np.float64, np.int64])
def test_image_dtypes(geometry, dtype):
    op = build_radial_operator(geometry, None, 2, 1.0)
    img = (np.arange(SHAPE[0] * SHAPE[1]) % 1000).reshape(SHAPE)
    ref = RadialIntegrator(op, method="scipy").integrate(img.astype(np.float64))
    got = RadialIntegrator(op).integrate(img.astype(dtype))
    assert np.allclose(got, ref, rtol=1e-12)


def test_wrong_image_shape_is_a_clear_error(geometry):
    op = build_radial_operator(geometry, None, 1, 1.0)
    with pytest.raises(ValueError, match="shape"):
        RadialIntegrator(op).integrate(np.zeros((10, 10)))


def test_mask_of_wrong_shape_is_rejected(geometry):
    with pytest.raises(ValueError, match="mask shape"):
        build_radial_operator(geometry, np.ones((5, 5), bool), 1, 1.0)


def test_phi_mode_constant_and_conservation(geometry, mask):
    op = build_phi_operator(geometry, mask, 3, (0.5, 1.5), n_bins=72)
    I = PhiIntegrator(op).integrate(np.full(SHAPE, 3.0))
    assert np.allclose(I[op.bin_counts > 0], 3.0, rtol=1e-12)
    # only sub-pixels inside the q ring count
    q = geometry.q(3)
    assert np.isclose(op.bin_counts.sum(), ((q >= 0.5) & (q < 1.5) & np.kron(mask, np.ones((3, 3), bool))).sum())
    assert np.allclose(np.diff(op.x), 5.0) and op.x[0] == -177.5


def test_phi_mode_sees_an_anisotropic_pattern():
    g = Geometry((101, 101), (50.0, 50.0), 100.0, (172.0, 172.0), 1.54)
    img = np.where(g.azimuth() > 0, 10.0, 1.0)  # upper half bright; centre on a pixel edge
    op = build_phi_operator(g, None, 3, (0.1, 3.0), n_bins=8)
    I = PhiIntegrator(op).integrate(img)
    # χ is clockwise on the image as read (pyFAI's χ): the upper half is χ in (−180°, 0°)
    assert np.allclose(I[:4], 10.0) and np.allclose(I[4:], 1.0)


def test_slice_band_and_mean(geometry, mask):
    op = build_slice_operator(geometry, mask, "x", "InPlane", position=50, margin=2)
    lo, hi = slice_band(SHAPE, "x", 50, 2)
    assert (lo, hi) == (SHAPE[0] - 52, SHAPE[0] - 47) and hi - lo == 5
    img = np.random.default_rng(6).random(SHAPE)
    I = SliceIntegrator(op).integrate(img)
    band, m = img[lo:hi], mask[lo:hi]
    expected = np.where(m.sum(0) > 0, (band * m).sum(0) / np.maximum(m.sum(0), 1), 0)
    assert np.allclose(I, expected, rtol=1e-12)
    assert op.n_bins == SHAPE[1]


def test_slice_q_scales(geometry):
    op_h = build_slice_operator(geometry, None, "x", "InPlane", 50, 1)
    col = int(geometry.beam_center[1])  # pixel containing the beam centre column
    assert abs(op_h.x[col]) < abs(op_h.x[0]) and op_h.x[0] < 0 < op_h.x[-1]
    op_v = build_slice_operator(geometry, None, "y", "Vertical", 40, 1, incident_angle_deg=0.5)
    # q_v increases upwards: row 0 (top) has the largest value
    assert op_v.x[0] > op_v.x[-1]
    # bottom row: centre 0.5 px above the bottom edge, i.e. (0.5 - Y) px above the beam; on an
    # untilted detector the exit angle from the direct beam is δ = atan(dy / √(d² + dx²)) on the
    # band's centre column (39.5, CutPosition 40 is 1-based) and q_z = k [sin(δ − αi) + sin αi]
    # (the standard grazing-incidence convention; before, k (sin δ + sin αi) with dx ignored)
    flat = Geometry(SHAPE, (70.3, 40.8), 200.0, (172.0, 172.0), 1.54)
    op_v = build_slice_operator(flat, None, "y", "Vertical", 40, 1, incident_angle_deg=0.5)
    k = 2 * np.pi / 0.154
    dx, dy = (39.5 - 40.8) * 0.172, (0.5 - 70.3) * 0.172
    delta = np.arctan(dy / np.hypot(200.0, dx))
    ai = np.radians(0.5)
    assert np.isclose(op_v.x[-1], k * (np.sin(delta - ai) + np.sin(ai)), rtol=1e-12)


def test_slice_outside_detector_is_an_error(geometry):
    with pytest.raises(ValueError, match="outside"):
        build_slice_operator(geometry, None, "x", "InPlane", position=500, margin=1)
    with pytest.raises(ValueError, match="direction"):
        build_slice_operator(geometry, None, "z", "InPlane", position=5, margin=1)


def test_integral_parameters_analytic():
    q = (np.arange(1000) + 0.5) * 0.01
    I = np.exp(-q)
    p = integral_parameters(q, I, 0.0, 5.0)
    # ∫0^5 e^-q dq, ∫ q e^-q, ∫ q² e^-q  (midpoint rule, error ~ dq²)
    assert np.isclose(p["I0"], 1 - np.exp(-5), rtol=1e-4)
    assert np.isclose(p["I1"], 1 - 6 * np.exp(-5), rtol=1e-4)
    assert np.isclose(p["I2"], 2 - 37 * np.exp(-5), rtol=1e-4)
    assert p["invariant"] == p["I2"]
    assert np.isclose(p["correlation_length"], np.pi * p["I1"] / p["I2"])
    assert integral_parameters(q, np.zeros_like(q))["correlation_length"] is None


@pytest.mark.parametrize("kind", ["radial", "cake"])
def test_the_operator_does_not_depend_on_the_build_blocks(kind, monkeypatch):
    """Blocks of rows are kept compact until assembled (uint8 entries per pixel, 16-bit bins
    where a block's bins fit, else 32-bit: a cake of more than 65,536 bins mixes both);
    the operator is the same whatever the block size."""
    import saxsdog.core.operator as operator_module
    from saxsdog.core.operator import build_cake_operator

    geo = Geometry((120, 110), (60.3, 50.8), 300.0, (172.0, 172.0), 1.54, -3.0, 40.0)
    valid = np.random.default_rng(4).random(geo.shape) > 0.1

    def build():
        if kind == "cake":
            return build_cake_operator(geo, valid, 3, radial_bins=400, azimuth_bins=200)
        return build_radial_operator(geo, valid, 3, 1.0)

    monkeypatch.setattr(operator_module, "_BLOCK_SUBPIXELS", 10 ** 9)
    whole = build()
    monkeypatch.setattr(operator_module, "_BLOCK_SUBPIXELS", 5 * 110 * 9)  # blocks of 5 rows
    blocks = build()
    assert whole.bins.dtype == blocks.bins.dtype == (np.int32 if kind == "cake" else np.uint16)
    for f in ("entries_per_pixel", "bins", "counts"):
        a, b = getattr(whole, f), getattr(blocks, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)
    if kind == "cake":  # some blocks hold only bins below 65,536
        assert whole.bins.min() < 65536 <= whole.bins.max()
