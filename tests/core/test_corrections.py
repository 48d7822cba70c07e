"""Per-pixel corrections, dummy pixels and error models (issue 13, the numerical core).

Three layers: the numba kernel against the scipy reference for every variant; both
against a brute-force NumPy evaluation of the documented formulas; and the corrected
curve of the real Pilatus image against pyFAI ``integrate1d`` with the same corrections.
"""

from __future__ import annotations

import itertools
import sys
import types

import numpy as np
import pytest

from saxsdog.core.corrections import PixelCorrections, pixel_factor
from saxsdog.core.geometry import Geometry
from saxsdog.core.integrators import Integrator, RadialIntegrator
from saxsdog.core.kernels import available_methods
from saxsdog.core.operator import build_phi_operator, build_radial_operator, polarization_factor

SHAPE = (64, 53)
#: A strongly tilted short-distance geometry: solid angle and polarization vary a lot.
GEOMETRY = Geometry(SHAPE, (40.3, 20.8), 40.0, (172.0, 172.0), 1.54, -12.0, 40.0)


def smooth_field(shape, amplitude, seed):
    """A smooth random positive field around 1 (a plausible flat field)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), sigma=min(shape) / 12, mode="wrap")
    return 1.0 + amplitude * field / np.abs(field).max()


@pytest.fixture(scope="module")
def valid_mask():
    rng = np.random.default_rng(1)
    valid = rng.random(SHAPE) > 0.05
    valid[:, 30:33] = False
    return valid


@pytest.fixture(scope="module")
def frame():
    """A Poisson image with gap (−1) and dead (−2) pixels, some where the mask does not cover them."""
    rng = np.random.default_rng(7)
    img = rng.poisson(50.0, SHAPE).astype(np.int32)
    img[10, :] = -1
    img[rng.random(SHAPE) < 0.01] = -2
    img[5, 5] = 77  # the dummy value of some variants
    return img


def brute_force(op, image, factor, dark, dark_scale, mask_negative, dummy_value):
    """The documented definitions evaluated entry by entry (no kernels)."""
    p = image.ravel().astype(np.float64)
    g = np.ones_like(p) if factor is None else factor
    d = np.zeros_like(p) if dark is None else dark.ravel()
    c = g * (p - dark_scale * d)
    pix, b, n = op.entry_pixels, op.bins.astype(np.int64), op.counts.astype(np.float64)
    keep = np.ones(pix.size, bool)
    if mask_negative:
        keep = p[pix] >= 0
        if dummy_value is not None:
            keep &= p[pix] != dummy_value
    n = np.where(keep, n, 0.0)
    w = np.bincount(b, n, op.n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(w > 0, np.bincount(b, n * c[pix], op.n_bins) / w, 0.0)
        var_p = np.bincount(b, n * n * g[pix] ** 2 * np.maximum(p[pix], 0), op.n_bins)
        poisson = np.where(w > 0, np.sqrt(var_p) / w, 0.0)
        spread = np.bincount(b, n * n * (c[pix] - mean[b]) ** 2, op.n_bins)
        azimuthal = np.where(w > 0, np.sqrt(spread) / w, 0.0)
        sq = np.where(w > 0, np.bincount(b, n * c[pix] ** 2, op.n_bins) / w, 0.0)
    std = np.sqrt(np.maximum(sq - mean ** 2, 0))
    used = np.zeros(p.size, bool)
    used[pix] = True
    bad = np.zeros(p.size, bool)
    if mask_negative:
        bad = p < 0
        if dummy_value is not None:
            bad |= p == dummy_value
    return {"I": mean, "poisson": poisson, "azimuthal": azimuthal, "std": std, "valid": w > 0,
            "dummies": int(np.count_nonzero(bad & used))}


VARIANTS = list(itertools.product(
    [False, True],            # flat
    [False, True],            # solid angle
    [None, (0.93, 25.0)],     # polarization
    [False, True],            # dark
    [(False, None), (True, None), (True, 77.0)],   # mask_negative, dummy_value
))


@pytest.mark.parametrize("error_model", ["poisson", "azimuthal", "legacy"])
@pytest.mark.parametrize("flat,solid,pol,dark,dummies", VARIANTS)
def test_kernels_agree_with_the_reference_and_the_definitions(valid_mask, frame, error_model, flat, solid, pol,
                                                              dark, dummies):
    mask_negative, dummy_value = dummies
    op = build_radial_operator(GEOMETRY, valid_mask, 3, 1.3)
    corr = PixelCorrections(flat=smooth_field(SHAPE, 0.2, 3) if flat else None, solid_angle=solid,
                            polarization=pol,
                            dark=np.random.default_rng(4).uniform(0, 5, SHAPE) if dark else None,
                            mask_negative=mask_negative, dummy_value=dummy_value, error_model=error_model)
    curves = {}
    for m in available_methods():
        it = RadialIntegrator(op, method=m, corrections=corr, geometry=GEOMETRY)
        curves[m] = (it.curve(frame, stddev=True, dark_scale=1.7), it.curve(frame, stddev=False, dark_scale=1.7))
    ref, ref_fast = curves["scipy"]
    factor = pixel_factor(corr, SHAPE, GEOMETRY)
    bf = brute_force(op, frame, factor, corr.dark, 1.7, mask_negative, dummy_value)
    for m, (c, fast) in curves.items():
        for cur in (c, fast):
            np.testing.assert_allclose(cur.intensity, bf["I"], rtol=1e-11, atol=1e-11, err_msg=m)
            np.testing.assert_array_equal(cur.valid, bf["valid"])
            assert cur.dummy_pixels == bf["dummies"]
            if error_model != "legacy":
                np.testing.assert_allclose(cur.poisson, bf[error_model], rtol=1e-9, atol=1e-12, err_msg=m)
        np.testing.assert_allclose(c.stddev, bf["std"], rtol=1e-7, atol=1e-9, err_msg=m)
        np.testing.assert_allclose(c.poisson, ref.poisson, rtol=1e-11, atol=1e-13, err_msg=m)
        assert fast.stddev is None
    if mask_negative:
        assert bf["dummies"] > 0


def test_phi_operator_with_corrections_agrees(valid_mask, frame):
    op = build_phi_operator(GEOMETRY, valid_mask, 2, (0.5, 3.0), 36)
    corr = PixelCorrections(flat=smooth_field(SHAPE, 0.1, 5), solid_angle=True, polarization=(0.9, 0.0),
                            dark=np.full(SHAPE, 2.0))
    factor = pixel_factor(corr, SHAPE, GEOMETRY)
    bf = brute_force(op, frame, factor, corr.dark, 1.0, True, None)
    for m in available_methods():
        c = Integrator(op, method=m, corrections=corr, geometry=GEOMETRY).curve(frame)
        np.testing.assert_allclose(c.intensity, bf["I"], rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(c.poisson, bf["poisson"], rtol=1e-9, atol=1e-12)
        assert c.dummy_pixels == bf["dummies"]


@pytest.mark.parametrize("ov", [1, 3, 6])
def test_constant_signal_through_flat_solid_angle_polarization_and_dark_gives_constant(valid_mask, ov):
    """A detector measuring a constant K: p = K·f·Ω·P + s·d.  Every correction undone gives K."""
    flat = smooth_field(SHAPE, 0.3, 11)
    dark = np.random.default_rng(12).uniform(0, 30, SHAPE)
    pol = (0.8, -30.0)
    raw = 1234.5 * flat * GEOMETRY.solid_angle() * polarization_factor(GEOMETRY, *pol) + 0.5 * dark
    op = build_radial_operator(GEOMETRY, valid_mask, ov, 1.0)
    corr = PixelCorrections(flat=flat, solid_angle=True, polarization=pol, dark=dark)
    for m in available_methods():
        it = RadialIntegrator(op, method=m, corrections=corr, geometry=GEOMETRY)
        for stddev in (True, False):
            c = it.curve(raw, stddev=stddev, dark_scale=0.5)
            assert np.allclose(c.intensity[c.valid], 1234.5, rtol=1e-11)
            assert np.all(c.intensity[~c.valid] == 0) and np.all(c.poisson[~c.valid] == 0)
            if stddev:
                assert np.all(c.stddev[c.valid] < 1e-4)  # one-pass Σc²: √ε·K


def test_dark_subtraction_is_exact(valid_mask, frame):
    dark = np.random.default_rng(13).uniform(0, 20, SHAPE)
    op = build_radial_operator(GEOMETRY, valid_mask, 3, 1.0)
    signal = np.clip(frame, 0, None).astype(np.float64)
    for m in available_methods():
        plain = RadialIntegrator(op, method=m, corrections=PixelCorrections()).curve(signal)
        with_dark = RadialIntegrator(op, method=m, corrections=PixelCorrections(dark=dark))
        for stddev in (True, False):
            c = with_dark.curve(signal + 2.5 * dark, stddev=stddev, dark_scale=2.5)
            np.testing.assert_allclose(c.intensity, plain.intensity, rtol=1e-11, atol=1e-9)
        # the expected dark-subtracted image gives back exactly the dark-free mean
        np.testing.assert_allclose(with_dark.integrate(signal + dark), plain.intensity, rtol=1e-11, atol=1e-9)


def test_scale_multiplies_intensity_error_and_stddev(valid_mask, frame):
    op = build_radial_operator(GEOMETRY, valid_mask, 3, 1.0)
    for corr in (None, PixelCorrections(dark=np.ones(SHAPE), solid_angle=True)):
        it = RadialIntegrator(op, corrections=corr, geometry=GEOMETRY)
        a, b = it.curve(frame), it.curve(frame, scale=0.25)
        np.testing.assert_array_equal(b.intensity, a.intensity * 0.25)
        np.testing.assert_array_equal(b.poisson, a.poisson * 0.25)
        np.testing.assert_array_equal(b.stddev, a.stddev * 0.25)
        assert b.unit == "counts/pixel"


def test_without_corrections_nothing_changes(valid_mask, frame):
    """No corrections: the legacy error √(I·A)/A and the operator's polarization, bytes as before."""
    op = build_radial_operator(GEOMETRY, valid_mask, 3, 1.0, polarization=(0.9, 10.0))
    for m in available_methods():
        it = RadialIntegrator(op, method=m)
        c = it.curve(frame)
        # the frozen old computation
        from saxsdog.core.kernels import accumulate

        s1, s2 = accumulate(op, frame, squares=True, method=m)
        intensity = s1 * op.inverse_counts
        std = np.sqrt(np.maximum(s2 * op.inverse_counts - intensity * intensity, 0.0))
        area = op.area
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.where(area > 0, np.sqrt(np.maximum(intensity * area, 0.0)) / np.where(area > 0, area, 1.0), 0.0)
        assert c.intensity.tobytes() == intensity.tobytes()
        assert c.stddev.tobytes() == std.tobytes()
        assert c.poisson.tobytes() == err.tobytes()
        assert c.dummy_pixels == 0


def test_legacy_model_and_polarization_keep_the_bytes(valid_mask, frame):
    """PixelCorrections(error_model="legacy") with polarization folded by the integrator gives the
    same bytes as the old operator-borne polarization; "poisson" changes only the error column."""
    img = np.clip(frame, 0, None)
    pol = (0.9, 10.0)
    old = RadialIntegrator(build_radial_operator(GEOMETRY, valid_mask, 3, 1.0, polarization=pol))
    op = build_radial_operator(GEOMETRY, valid_mask, 3, 1.0)
    for m in available_methods():
        old.method = m
        ref = old.curve(img)
        legacy = RadialIntegrator(op, method=m, geometry=GEOMETRY,
                                  corrections=PixelCorrections(polarization=pol, error_model="legacy")).curve(img)
        on_op = RadialIntegrator(old.operator, method=m,
                                 corrections=PixelCorrections(error_model="legacy")).curve(img)
        exact = RadialIntegrator(op, method=m, geometry=GEOMETRY,
                                 corrections=PixelCorrections(polarization=pol)).curve(img)
        for c in (legacy, on_op):
            assert c.intensity.tobytes() == ref.intensity.tobytes()
            assert c.poisson.tobytes() == ref.poisson.tobytes()
            assert c.stddev.tobytes() == ref.stddev.tobytes()
        assert exact.intensity.tobytes() == ref.intensity.tobytes()
        assert not np.array_equal(exact.poisson, ref.poisson)


@pytest.mark.slow
def test_solid_angle_matches_pyfai():
    pyFAI = pytest.importorskip("pyFAI")  # noqa: F841
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    for tilt, rot in [(0.0, 0.0), (-0.56, 73.569), (20.0, 30.0), (-15.0, -120.0)]:
        g = Geometry((120, 97), (70.3, 40.8), 150.0, (172.0, 150.0), 1.54, tilt, rot)
        ai = AzimuthalIntegrator(detector=Detector(172e-6, 150e-6, max_shape=(120, 97)))
        ai.setFit2D(directDist=150.0, centerX=40.8, centerY=120 - 70.3, tilt=tilt, tiltPlanRotation=-rot,
                    pixelX=150, pixelY=172)
        np.testing.assert_allclose(g.solid_angle(), ai.solidAngleArray((120, 97)), rtol=2e-7)


@pytest.mark.slow
def test_polarization_convention_against_pyfai():
    """saxsdog's Fraction F and Angle A are pyFAI's factor 2F−1 and axis_offset −A (radians)."""
    pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    for tilt, tol in [(0.0, 1e-7), (-0.56, 1e-6), (-15.0, 2e-4)]:
        g = Geometry((120, 97), (70.3, 40.8), 150.0, (172.0, 172.0), 1.54, tilt, -120.0)
        ai = AzimuthalIntegrator(detector=Detector(172e-6, 172e-6, max_shape=(120, 97)))
        ai.setFit2D(directDist=150.0, centerX=40.8, centerY=120 - 70.3, tilt=tilt, tiltPlanRotation=120.0,
                    pixelX=172, pixelY=172)
        for fraction, angle in [(0.95, 0.0), (0.9, 30.0), (0.7, -65.0)]:
            ours = polarization_factor(g, fraction, angle)
            theirs = ai.polarization((120, 97), factor=2 * fraction - 1, axis_offset=-np.radians(angle))
            np.testing.assert_allclose(ours, theirs, rtol=tol)
            if angle:
                wrong = ai.polarization((120, 97), factor=2 * fraction - 1, axis_offset=np.radians(angle))
                assert np.abs(ours / wrong - 1).max() > 10 * tol


@pytest.mark.parametrize("kwargs,message", [
    ({"flat": np.ones((3, 3))}, "FlatFile: image of shape"),
    ({"flat": np.zeros(SHAPE)}, "FlatFile: .* zero, negative"),
    ({"flat": -np.ones(SHAPE)}, "FlatFile"),
    ({"dark": np.ones((SHAPE[0], SHAPE[1] + 1))}, "DarkFile: image of shape"),
    ({"dark": np.full(SHAPE, np.nan)}, "DarkFile: .*not finite"),
])
def test_bad_dark_or_flat_is_refused_naming_the_field(valid_mask, kwargs, message):
    op = build_radial_operator(GEOMETRY, valid_mask, 1, 1.0)
    with pytest.raises(ValueError, match=message):
        RadialIntegrator(op, corrections=PixelCorrections(**kwargs), geometry=GEOMETRY)


def test_flat_is_checked_only_where_pixels_are_used(valid_mask):
    op = build_radial_operator(GEOMETRY, valid_mask, 1, 1.0)
    flat = np.ones(SHAPE)
    flat[~valid_mask] = 0.0
    it = RadialIntegrator(op, corrections=PixelCorrections(flat=flat))
    assert np.isfinite(it.integrate(np.ones(SHAPE))).all()


def test_other_bad_corrections():
    op = build_radial_operator(GEOMETRY, None, 1, 1.0, polarization=(0.9, 0.0))
    with pytest.raises(ValueError, match="ErrorModel"):
        PixelCorrections(error_model="gauss")
    with pytest.raises(ValueError, match="geometry"):
        RadialIntegrator(op, corrections=PixelCorrections(solid_angle=True))
    with pytest.raises(ValueError, match="polarization given twice"):
        RadialIntegrator(op, corrections=PixelCorrections(polarization=(0.9, 0.0)), geometry=GEOMETRY)
    with pytest.raises(ValueError, match="SigmaClip"):
        PixelCorrections(sigma_clip=(0.0, 3))
    with pytest.raises(ValueError, match="Fraction"):
        PixelCorrections(polarization=(1.5, 0.0))


def test_all_dummy_bin_is_empty_not_nan():
    g = Geometry((20, 20), (10.0, 10.0), 100.0, (172.0, 172.0), 1.54)
    op = build_radial_operator(g, None, 2, 1.0)
    img = np.full((20, 20), 5)
    img[:, :] = -1
    img[0, 0] = 3
    for m in available_methods():
        c = RadialIntegrator(op, method=m, corrections=PixelCorrections()).curve(img)
        assert np.isfinite(c.intensity).all() and np.isfinite(c.poisson).all() and np.isfinite(c.stddev).all()
        assert c.valid.sum() >= 1 and np.all(c.intensity[~c.valid] == 0) and np.all(c.poisson[~c.valid] == 0)
        assert c.dummy_pixels == 399


# -- the real Pilatus image ----------------------------------------------------------

@pytest.fixture(scope="module")
def fit2d_valid(shared_data):
    import fabio

    return fabio.open(str(shared_data / "mask.tif")).data == 255


@pytest.mark.slow
def test_dummy_pixels_on_the_real_image(real_calibration, real_image, fit2d_valid):
    """With an empty mask, excluding dummies per frame equals removing the gap pixels from the
    operator; the count is the image's 73,671 gap and dead pixels."""
    geometry = real_calibration.geometry
    gaps = real_image < 0
    assert int(gaps.sum()) == 73_671
    assert not (gaps & fit2d_valid).any()  # the FIT2D mask covers every gap pixel
    dynamic = build_radial_operator(geometry, None, 3, 1.0)
    static = build_radial_operator(geometry, ~gaps, 3, 1.0)
    for m in available_methods():
        c = RadialIntegrator(dynamic, method=m, corrections=PixelCorrections()).curve(real_image)
        ref = RadialIntegrator(static, method=m, corrections=PixelCorrections()).curve(real_image)
        assert c.dummy_pixels == 73_671
        assert ref.dummy_pixels == 0
        np.testing.assert_array_equal(c.valid, static.bin_counts > 0)
        np.testing.assert_allclose(c.intensity, ref.intensity, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.poisson, ref.poisson, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.stddev, ref.stddev, rtol=1e-8, atol=1e-10)
        # without the exclusion the gaps bias the curve (as before)
        biased = RadialIntegrator(dynamic, method=m).curve(real_image)
        assert np.nanmedian(np.abs(biased.intensity / np.where(ref.intensity, ref.intensity, 1) - 1)) > 1e-3


@pytest.mark.slow
def test_real_calibration_legacy_is_byte_identical(real_calibration, real_image):
    it = real_calibration.radial
    # today's curve: the operator without corrections (the calibration itself now hands its
    # integrators the corrections of its Corrections block, exact Poisson errors by default)
    old = RadialIntegrator(it.operator, it.config, method=it.method).curve(real_image)
    for model in ("legacy", "poisson"):
        new = RadialIntegrator(it.operator, it.config, method=it.method,
                               corrections=PixelCorrections(error_model=model)).curve(real_image)
        assert new.dummy_pixels == 0
        assert new.intensity.tobytes() == old.intensity.tobytes()
        assert new.stddev.tobytes() == old.stddev.tobytes()
        assert (new.poisson.tobytes() == old.poisson.tobytes()) == (model == "legacy")
        assert new.parameters == old.parameters


def _pyfai_setup(calibration, fit2d_valid):
    pytest.importorskip("pyFAI")
    from saxsdog.io.poni import calibration_to_integrator

    return calibration_to_integrator(calibration.raw), ~fit2d_valid


@pytest.mark.slow
def test_corrected_curve_against_pyfai(real_calibration, real_image, fit2d_valid):
    """The real image with a random dark, a smooth random flat, solid angle and polarization:
    saxsdog and pyFAI integrate1d (full pixel splitting) agree to 1e-3 (median relative)."""
    ai, pyfai_mask = _pyfai_setup(real_calibration, fit2d_valid)
    op = real_calibration.radial.operator
    shape = real_image.shape
    dark = np.random.default_rng(21).uniform(0.0, 3.0, shape)
    flat = smooth_field(shape, 0.03, 22)
    fraction, angle = 0.95, 20.0
    corr = PixelCorrections(dark=dark, flat=flat, solid_angle=True, polarization=(fraction, angle))
    c = RadialIntegrator(op, corrections=corr, geometry=real_calibration.geometry).curve(real_image)
    n, dq = op.n_bins, op.meta["dq"]
    res = ai.integrate1d(real_image.astype(np.float64), n, unit="q_nm^-1", radial_range=(0, n * dq),
                         method=("full", "csr", "cython"), mask=pyfai_mask, dark=dark, flat=flat,
                         correctSolidAngle=True, polarization_factor=[2 * fraction - 1, -np.radians(angle)])
    assert np.allclose(res.radial, op.x, rtol=1e-6)
    sel = c.valid & (res.intensity > 0) & (c.intensity > 0)
    assert sel.sum() > 500
    rel = np.abs(c.intensity[sel] / res.intensity[sel] - 1)
    assert np.median(rel) <= 1e-3, np.median(rel)
    # and the corrections matter at this level (the comparison is not vacuous)
    plain = RadialIntegrator(op).curve(real_image)
    assert np.median(np.abs(plain.intensity[sel] / res.intensity[sel] - 1)) > 5e-3


@pytest.mark.slow
def test_azimuthal_error_against_pyfai(real_calibration, real_image, fit2d_valid):
    """error_model="azimuthal": the error of the mean from the azimuthal spread, as pyFAI's sem."""
    ai, pyfai_mask = _pyfai_setup(real_calibration, fit2d_valid)
    op = real_calibration.radial.operator
    n, dq = op.n_bins, op.meta["dq"]
    for corr, kwargs in [(PixelCorrections(error_model="azimuthal"), {"correctSolidAngle": False}),
                         (PixelCorrections(error_model="azimuthal", solid_angle=True, polarization=(0.95, 0.0)),
                          {"correctSolidAngle": True, "polarization_factor": 0.9})]:
        c = RadialIntegrator(op, corrections=corr, geometry=real_calibration.geometry).curve(real_image)
        res = ai.integrate1d(real_image.astype(np.float64), n, unit="q_nm^-1", radial_range=(0, n * dq),
                             method=("full", "csr", "cython"), mask=pyfai_mask, error_model="azimuthal",
                             **kwargs)
        sel = c.valid & (res.sigma > 0) & (c.poisson > 0) & (op.area > 20)
        ratio = c.poisson[sel] / res.sigma[sel]
        assert abs(np.median(ratio) - 1) <= 0.02, np.median(ratio)


# -- the sigma-clipping hook ---------------------------------------------------------

def test_sigma_clip_hook_passes_the_corrections(valid_mask, frame, monkeypatch):
    """Integrator.curve hands g, the scaled dark and the options to clip_accumulate."""
    seen = {}

    class ClipResult:
        def __init__(self, n):
            self.intensity = np.arange(n, dtype=float)
            self.error = np.ones(n)
            self.stddev = np.full(n, 2.0)
            self.weight = np.where(np.arange(n) % 2 == 0, 9.0, 0.0)
            self.rejected = 3

    def clip_accumulate(op, flat_image, *, pixel_factor, dark, sigma, cycles, error_model="poisson",
                        mask_negative=True, dummy_value=None, method=None):
        seen.update(pixel_factor=pixel_factor, dark=dark, sigma=sigma, cycles=cycles, error_model=error_model,
                    mask_negative=mask_negative, dummy_value=dummy_value, shape=flat_image.shape)
        return ClipResult(op.n_bins)

    fake = types.ModuleType("saxsdog.core.sigma_clip")
    fake.clip_accumulate = clip_accumulate
    monkeypatch.setitem(sys.modules, "saxsdog.core.sigma_clip", fake)
    op = build_radial_operator(GEOMETRY, valid_mask, 2, 1.0)
    dark = np.full(SHAPE, 2.0)
    corr = PixelCorrections(dark=dark, solid_angle=True, sigma_clip=(4.0, 3), dummy_value=77.0)
    c = RadialIntegrator(op, corrections=corr, geometry=GEOMETRY).curve(frame, dark_scale=1.5, scale=2.0)
    np.testing.assert_array_equal(seen["pixel_factor"], 1.0 / GEOMETRY.solid_angle().ravel())
    np.testing.assert_array_equal(seen["dark"], 3.0)
    assert (seen["sigma"], seen["cycles"], seen["error_model"], seen["dummy_value"]) == (4.0, 3, "poisson", 77.0)
    assert seen["shape"] == (SHAPE[0] * SHAPE[1],)
    np.testing.assert_array_equal(c.intensity, 2.0 * np.arange(op.n_bins))
    np.testing.assert_array_equal(c.valid, np.arange(op.n_bins) % 2 == 0)
    np.testing.assert_array_equal(c.poisson, 2.0)
    expected = int(np.count_nonzero(((frame < 0) | (frame == 77)).ravel() & (op.entries_per_pixel > 0)))
    assert c.dummy_pixels == expected > 0


def test_sigma_clip_with_the_real_module(valid_mask):
    pytest.importorskip("saxsdog.core.sigma_clip")
    rng = np.random.default_rng(31)
    img = rng.poisson(200.0, SHAPE).astype(np.float64)
    op = build_radial_operator(GEOMETRY, valid_mask, 1, 1.5)
    plain = RadialIntegrator(op, corrections=PixelCorrections()).curve(img)
    zinged = img.copy()
    zinged[rng.integers(0, SHAPE[0], 15), rng.integers(0, SHAPE[1], 15)] = 1e6
    clipped = RadialIntegrator(op, corrections=PixelCorrections(sigma_clip=(4.0, 3))).curve(zinged)
    sel = plain.valid & (op.area > 10)
    assert np.all(np.abs(clipped.intensity[sel] - plain.intensity[sel]) <= 3 * plain.poisson[sel])


def test_integrate_and_integrate_with_errors_apply_the_corrections(valid_mask, frame):
    """The original's API (Calibration.integrate / integrate_with_errors) sees the corrected curve."""
    op = build_radial_operator(GEOMETRY, valid_mask, 3, 1.0)
    corr = PixelCorrections(flat=smooth_field(SHAPE, 0.2, 3), solid_angle=True, dark=np.full(SHAPE, 1.5))
    it = RadialIntegrator(op, corrections=corr, geometry=GEOMETRY)
    c = it.curve(frame)
    np.testing.assert_array_equal(it.integrate(frame), RadialIntegrator(op, corrections=corr, geometry=GEOMETRY)
                                  .curve(frame, stddev=False).intensity)
    intensity, std, err = it.integrate_with_errors(frame)
    np.testing.assert_allclose(intensity, c.intensity, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(std, c.stddev)
    np.testing.assert_array_equal(err, c.poisson)
