"""Sigma-clipped bin means (core/sigma_clip.py): kernels agree, outliers go, clean data stays,
and the real image with zingers against the clean image and against pyFAI's sigma_clip_ng."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from saxsdog.core.geometry import Geometry
from saxsdog.core.integrators import Integrator
from saxsdog.core.kernels import accumulate
from saxsdog.core.operator import build_radial_operator
from saxsdog.core.sigma_clip import ClipResult, available_methods, clip_accumulate

SHAPE = (120, 97)
N_PIX = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def geometry():
    return Geometry(SHAPE, (70.3, 40.8), 200.0, (172.0, 172.0), 1.54, -3.0, 40.0)


@pytest.fixture(scope="module")
def mask():
    valid = np.random.default_rng(1).random(SHAPE) > 0.1
    valid[:, 10:14] = False  # a detector gap
    return valid


@pytest.fixture(scope="module")
def op3(geometry, mask):
    return build_radial_operator(geometry, mask, 3, 1.0)


@pytest.fixture(scope="module")
def op1(geometry, mask):
    return build_radial_operator(geometry, mask, 1, 1.0)


def clip(op, image, **kw) -> ClipResult:
    args = {"pixel_factor": None, "dark": None, "sigma": 4.0, "cycles": 3}
    args.update(kw)
    return clip_accumulate(op, np.asarray(image).ravel(), **args)


def zinger_image(seed: int, n_zingers: int = 15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.poisson(80.0, SHAPE).astype(np.float64)
    img.flat[rng.choice(N_PIX, n_zingers, replace=False)] = 1e6
    img.flat[rng.choice(N_PIX, 10, replace=False)] = 5e3      # hot pixels: moderate outliers
    img.flat[rng.choice(N_PIX, 10, replace=False)] = -1       # dead pixels
    img.flat[rng.choice(N_PIX, 5, replace=False)] = -7.5      # a dummy value
    img.flat[rng.choice(N_PIX, 3, replace=False)] = np.nan
    return img


def assert_same(ref: ClipResult, other: ClipResult) -> None:
    """Agreement to 1e-12.  The spread (and the azimuthal error) are differences of sums,
    Σnc²/W − m², so their rounding scales with the mean: compared relative to max(|m|, σ)."""
    assert other.rejected == ref.rejected
    np.testing.assert_array_equal(other.weight, ref.weight)
    np.testing.assert_allclose(other.intensity, ref.intensity, rtol=1e-12, atol=0)
    scale = np.maximum(np.abs(ref.intensity), ref.stddev)
    assert np.all(np.abs(other.stddev - ref.stddev) <= 1e-12 * scale)
    assert np.all(np.abs(other.error - ref.error) <= 1e-12 * np.maximum(ref.error, scale * 1e-3))


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("error_model", ["poisson", "azimuthal", "legacy"])
@pytest.mark.parametrize("cycles", [1, 2, 3, 10])
@pytest.mark.parametrize("corrected", [False, True])
def test_reference_and_numba_agree(op3, error_model, cycles, corrected):
    rng = np.random.default_rng(7)
    factor = 1.0 + 0.2 * rng.random(N_PIX) if corrected else None
    dark = 3.0 * rng.random(N_PIX) if corrected else None
    img = zinger_image(3)
    results = [clip(op3, img, pixel_factor=factor, dark=dark, cycles=cycles, error_model=error_model,
                    dummy_value=-7.5, mask_negative=False, method=m) for m in ("scipy", "numba")]
    assert results[0].rejected > 15
    assert_same(*results)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_kernels_agree_when_many_bins_change(op1, sigma):
    # A low threshold rejects in most bins for several cycles: both the streaming and the
    # bin-by-bin (gather) visits of the numba kernel are exercised.
    img = np.random.default_rng(4).gamma(2.0, 30.0, SHAPE)
    ref, fast = (clip(op1, img, sigma=sigma, cycles=8, method=m) for m in ("scipy", "numba"))
    assert ref.rejected > 50
    assert_same(ref, fast)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("cycles", [1, 2])
def test_kernels_agree_with_one_zinger(op3, cycles):
    # One zinger: its two bins are re-accumulated through the bin-major index, after the
    # last cycle (cycles=1) or during the next one.
    img = np.random.default_rng(12).poisson(80.0, SHAPE).astype(np.float64)
    img.flat[int(np.flatnonzero(op3.entries_per_pixel == 2)[70])] = 1e6
    for model in ("poisson", "azimuthal"):
        ref, fast = (clip(op3, img, cycles=cycles, error_model=model, method=m) for m in ("scipy", "numba"))
        assert ref.rejected >= 2
        assert_same(ref, fast)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_kernels_agree_with_many_zingers_in_one_bin(op3):
    # More zingers in one bin than the numba kernel holds out of its running sums: the
    # ones it had to add are subtracted again and the bin re-accumulated from scratch.
    img = np.random.default_rng(14).poisson(80.0, SHAPE).astype(np.float64)
    busiest = int(np.argmax(np.bincount(op3.bins, minlength=op3.n_bins)))
    pixels = np.unique(op3.entry_pixels[op3.bins == busiest])
    img.flat[pixels[::max(1, pixels.size // 12)][:12]] = 1e6 + np.arange(12)
    factor = 1.0 + 0.1 * np.random.default_rng(15).random(N_PIX)  # no exact integer sums
    for model in ("poisson", "azimuthal"):
        ref, fast = (clip(op3, img, pixel_factor=factor, error_model=model, method=m) for m in ("scipy", "numba"))
        assert ref.rejected >= 12
        assert_same(ref, fast)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_numba_results_do_not_depend_on_the_previous_frame(geometry, mask):
    # The numba kernel remembers each bin's band for the next call on the operator (to
    # hold that frame's outliers aside); only its speed may depend on it.  A fresh
    # operator and zingers in most bins, another frame twice, frames 10x brighter and dimmer.
    op = build_radial_operator(geometry, mask, 3, 1.0)
    base = zinger_image(21)
    for img in (zinger_image(22, n_zingers=400), base, base, 10 * base, 0.1 * base, base):
        ref, fast = (clip(op, img, method=m) for m in ("scipy", "numba"))
        assert_same(ref, fast)


@pytest.mark.parametrize("method", available_methods())
def test_a_bin_loses_its_one_huge_outlier(op3, method):
    # Bounded noise (uniform: never beyond √3 σ), so the zinger is the only outlier.
    rng = np.random.default_rng(11)
    img = 50.0 + rng.random(SHAPE)
    pixel = int(np.flatnonzero(op3.entries_per_pixel == 2)[40])
    with_zinger = img.copy()
    with_zinger.flat[pixel] = 1e6
    without = img.copy()
    without.flat[pixel] = -1.0  # excluded as negative: the mean of the others
    got = clip(op3, with_zinger, method=method)
    want = clip(op3, without, cycles=0, method=method)
    assert got.rejected == 2  # the pixel's two entries (it straddles two bins)
    np.testing.assert_allclose(got.intensity, want.intensity, rtol=1e-12)
    np.testing.assert_allclose(got.stddev, want.stddev, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got.weight, want.weight)
    plain = clip(op3, with_zinger, cycles=0, method=method)
    touched = op3.bins[op3.entry_pixels == pixel]
    assert np.all(plain.intensity[touched] > 10 * got.intensity[touched])


@pytest.mark.parametrize("method", available_methods())
def test_clean_gaussian_data_loses_nothing_at_large_sigma(op3, method):
    img = np.random.default_rng(5).normal(1000.0, 30.0, SHAPE)
    got = clip(op3, img, sigma=8.0, cycles=5, method=method)
    assert got.rejected == 0
    s1, s2 = accumulate(op3, img, squares=True)
    inv = op3.inverse_counts
    np.testing.assert_allclose(got.intensity, s1 * inv, rtol=1e-12)
    np.testing.assert_allclose(got.stddev, np.sqrt(np.maximum(s2 * inv - (s1 * inv) ** 2, 0)), rtol=1e-7)
    np.testing.assert_array_equal(got.weight, op3.bin_counts)


@pytest.mark.parametrize("method", available_methods())
def test_no_cycles_is_the_plain_integration(op3, method):
    img = np.random.default_rng(6).poisson(40.0, SHAPE)
    got = clip(op3, img, cycles=0, error_model="legacy", method=method)
    intensity, std, poisson = Integrator(op3).integrate_with_errors(img)
    np.testing.assert_allclose(got.intensity, intensity, rtol=1e-12)
    np.testing.assert_allclose(got.stddev, std, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.error, poisson, rtol=1e-12)  # legacy: √(I·A)/A


@pytest.mark.parametrize("method", available_methods())
def test_error_models_at_oversampling_1(op1, method):
    rng = np.random.default_rng(8)
    img = rng.poisson(60.0, SHAPE)
    factor = 0.5 + rng.random(N_PIX)
    got = clip(op1, img, pixel_factor=factor, sigma=50.0, error_model="poisson", method=method)
    pix, bins = op1.entry_pixels, op1.bins
    var = np.bincount(bins, weights=factor[pix] ** 2 * img.ravel()[pix], minlength=op1.n_bins)
    count = op1.bin_counts
    has = count > 0
    np.testing.assert_allclose(got.error[has], np.sqrt(var[has]) / count[has], rtol=1e-12)
    az = clip(op1, img, pixel_factor=factor, sigma=50.0, error_model="azimuthal", method=method)
    # Without splitting pyFAI's sem is σ/√N.
    np.testing.assert_allclose(az.error[has], az.stddev[has] / np.sqrt(count[has]), rtol=1e-9)
    assert np.all(got.error[~has] == 0) and np.all(az.intensity[~has] == 0)


@pytest.mark.parametrize("method", available_methods())
def test_excluded_pixels_are_not_rejections(op3, method):
    img = np.full(SHAPE, 20.0)
    img[5, :] = -2.0
    img[6, :] = 99.0
    img[7, :] = np.nan
    got = clip(op3, img, dummy_value=99.0, method=method)
    assert got.rejected == 0
    np.testing.assert_allclose(got.intensity[got.weight > 0], 20.0, rtol=1e-14)
    gone = np.isin(op3.entry_pixels, np.arange(5 * SHAPE[1], 8 * SHAPE[1]))
    lost = np.bincount(op3.bins[gone], weights=op3.counts[gone], minlength=op3.n_bins)
    np.testing.assert_array_equal(got.weight, op3.bin_counts - lost)
    kept_negative = clip(op3, img, dummy_value=99.0, mask_negative=False, sigma=1e6, method=method)
    assert kept_negative.weight.sum() > got.weight.sum()


def test_the_operator_correction_is_applied(geometry, mask):
    op = build_radial_operator(geometry, mask, 2, 1.0, polarization=(0.9, 10.0))
    img = np.random.default_rng(9).poisson(30.0, SHAPE)
    for method in available_methods():
        got = clip(op, img, cycles=0, method=method)
        np.testing.assert_allclose(got.intensity, Integrator(op, method=method).integrate(img), rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"sigma": 0.0}, "Sigma"),
    ({"sigma": float("nan")}, "Sigma"),
    ({"cycles": -1}, "Cycles"),
    ({"cycles": 2.5}, "Cycles"),
    ({"error_model": "gauss"}, "error model 'gauss'"),
    ({"method": "cuda"}, "kernel 'cuda'"),
    ({"pixel_factor": np.ones(10)}, "pixel_factor has 10 values"),
    ({"dark": np.ones(N_PIX + 1)}, "dark has"),
])
def test_bad_input_is_named(op3, kwargs, message):
    with pytest.raises(ValueError, match=message):
        clip(op3, np.ones(SHAPE), **kwargs)


def test_an_image_of_the_wrong_shape_is_refused(op3):
    with pytest.raises(ValueError, match="does not match the calibration"):
        clip_accumulate(op3, np.ones(N_PIX - 1), pixel_factor=None, dark=None, sigma=4, cycles=3)


# -- the real image (acceptance) -----------------------------------------------------

def with_zingers(image: np.ndarray, seed: int = 13, count: int = 500) -> np.ndarray:
    out = image.copy()
    out.flat[np.random.default_rng(seed).choice(image.size, count, replace=False)] = 10**6
    return out


@pytest.mark.slow
@pytest.mark.parametrize("error_model", ["poisson", "azimuthal"])
def test_real_image_500_zingers_change_no_bin_beyond_3_sigma(real_calibration, real_image, error_model):
    op = real_calibration.integrators[0].operator
    clean = clip(op, real_image, error_model=error_model)
    zingers = with_zingers(real_image)
    got = clip(op, zingers, error_model=error_model)
    has = clean.weight > 0
    deviation = np.abs(got.intensity - clean.intensity)[has] / clean.error[has]
    assert deviation.max() <= 3.0
    unclipped = clip(op, zingers, cycles=0, error_model=error_model)
    assert (np.abs(unclipped.intensity - clean.intensity)[has] / clean.error[has]).max() > 1000  # the test bites


def pyfai_sigma_clip(cal, op, image, split):
    from saxsdog.io.poni import calibration_to_integrator

    ai = calibration_to_integrator(cal.raw)
    n = op.n_bins
    dq = op.x[1] - op.x[0]
    mask = (op.entries_per_pixel == 0).reshape(op.shape) | (image < 0)
    logging.getLogger("pyFAI").setLevel(logging.ERROR)  # it warns about pixel splitting
    return ai.sigma_clip_ng(image, n, unit="q_nm^-1", radial_range=(0, n * dq), method=(split, "csr", "cython"),
                            correctSolidAngle=False, mask=mask, thres=4, max_iter=3, error_model="azimuthal")


@pytest.mark.slow
def test_real_image_agrees_with_pyfai_sigma_clip_ng(real_calibration, real_image):
    pytest.importorskip("pyFAI")
    op = real_calibration.integrators[0].operator  # Oversampling 3: compare with pyFAI's full splitting
    zingers = with_zingers(real_image)
    theirs = pyfai_sigma_clip(real_calibration, op, zingers, "full")
    ours = clip(op, zingers, error_model="azimuthal")
    has = (ours.weight > 0) & np.isfinite(theirs.intensity) & (theirs.intensity > 0)
    assert np.median(np.abs(ours.intensity[has] / theirs.intensity[has] - 1)) <= 1e-3


@pytest.mark.slow
def test_without_splitting_pyfai_keeps_the_same_pixels(real_calibration, real_image):
    # Oversampling 1 is pyFAI's "no splitting": same pixels per bin (up to pixels on a bin
    # edge, which float32 positions put on the other side), so the same means and sem.
    pytest.importorskip("pyFAI")
    op3 = real_calibration.integrators[0].operator
    op = build_radial_operator(real_calibration.geometry, (op3.entries_per_pixel > 0).reshape(op3.shape), 1, 1.0)
    zingers = with_zingers(real_image)
    theirs = pyfai_sigma_clip(real_calibration, op, zingers, "no")
    ours = clip(op, zingers, error_model="azimuthal")
    has = (ours.weight > 0) & np.isfinite(theirs.intensity)
    rel = np.abs(ours.intensity[has] / theirs.intensity[has] - 1)
    assert np.median(rel) <= 1e-6
    assert np.mean(rel <= 1e-6) > 0.85  # the rest trade an edge pixel with a neighbour bin
    sem = np.abs(ours.error[has] / theirs.sem[has] - 1)
    assert np.median(sem) <= 1e-6


@pytest.mark.slow
@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_real_image_reference_and_numba_agree(real_calibration, real_image):
    op = real_calibration.integrators[0].operator
    rng = np.random.default_rng(2)
    factor = 1.0 + 0.05 * rng.random(real_image.size)
    dark = rng.random(real_image.size)
    zingers = with_zingers(real_image)
    for model in ("poisson", "azimuthal"):
        results = [clip(op, zingers, pixel_factor=factor, dark=dark, error_model=model, method=m)
                   for m in ("scipy", "numba")]
        assert_same(*results)


def test_kernel_choice_follows_saxsdog_kernel(monkeypatch):
    from saxsdog.core.sigma_clip import default_method

    monkeypatch.delenv("SAXSDOG_KERNEL", raising=False)
    assert default_method() == available_methods()[0]
    monkeypatch.setenv("SAXSDOG_KERNEL", "scipy")
    assert default_method() == "scipy"
    monkeypatch.setenv("SAXSDOG_KERNEL", "cuda")
    with pytest.raises(ValueError, match="SAXSDOG_KERNEL='cuda'"):
        default_method()


def test_an_operator_polarization_is_applied_once_when_an_integrator_clips(geometry, mask):
    """An integrator's factor already holds the operator's own correction (pixel_factor with
    base=): clipping through the integrator must not multiply it in a second time, so an
    operator built with polarization and one given the polarization as a correction clip alike."""
    from saxsdog.core.corrections import PixelCorrections
    from saxsdog.core.integrators import RadialIntegrator

    pol = (0.9, 10.0)
    img = np.random.default_rng(31).poisson(50.0, SHAPE).astype(np.int32)
    img.flat[np.random.default_rng(32).choice(img.size, 20, replace=False)] = 10 ** 6
    on_operator = build_radial_operator(geometry, mask, 3, 1.0, polarization=pol)
    bare = build_radial_operator(geometry, mask, 3, 1.0)
    for m in available_methods():
        a = RadialIntegrator(on_operator, method=m, corrections=PixelCorrections(sigma_clip=(4.0, 3))).curve(img)
        b = RadialIntegrator(bare, method=m, geometry=geometry,
                             corrections=PixelCorrections(polarization=pol, sigma_clip=(4.0, 3))).curve(img)
        np.testing.assert_allclose(a.intensity, b.intensity, rtol=1e-12, atol=1e-12, err_msg=m)
        np.testing.assert_allclose(a.poisson, b.poisson, rtol=1e-12, atol=1e-12, err_msg=m)
        assert a.rejected_pixels == b.rejected_pixels


# -- corrections packed once per calibration, the frame's dark scale, dummies met late ---

@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
@pytest.mark.parametrize("error_model", ["poisson", "azimuthal", "legacy"])
@pytest.mark.parametrize("dark_scale", [1.0, 0.7])
def test_packed_corrections_and_dark_scale_agree_with_the_reference(geometry, mask, error_model, dark_scale):
    # The numba kernel streams a factor and dark packed once (pack_corrections) and scales
    # the dark per frame: the reference, given the dark already scaled, agrees to 1e-12;
    # also with an operator correction multiplied in, and without packing.
    from saxsdog.core.sigma_clip import pack_corrections

    rng = np.random.default_rng(41)
    factor = (1.0 + 0.2 * rng.random(N_PIX)).astype(np.float32)  # a stored float32 factor
    dark = 3.0 * rng.random(N_PIX)
    img = zinger_image(42)
    for op in (build_radial_operator(geometry, mask, 3, 1.0),
               build_radial_operator(geometry, mask, 2, 1.0, polarization=(0.9, 10.0))):
        packed = pack_corrections(op, factor, dark)
        ref = clip(op, img, pixel_factor=factor, dark=dark * dark_scale, error_model=error_model,
                   dummy_value=-7.5, method="scipy")
        assert ref.rejected > 15
        for _frame in range(3):  # the first call tracks extremes, the next ones hold outliers
            for kw in ({"packed": packed}, {}):
                got = clip(op, img, pixel_factor=factor, dark=dark, dark_scale=dark_scale,
                           error_model=error_model, dummy_value=-7.5, method="numba", **kw)
                assert_same(ref, got)
        got = clip(op, img, pixel_factor=factor, dark=dark, dark_scale=dark_scale, error_model=error_model,
                   dummy_value=-7.5, method="scipy", packed=packed)  # the reference ignores it
        assert_same(ref, got)


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_packed_corrections_for_other_arrays_are_refused(op3, op1):
    from saxsdog.core.sigma_clip import pack_corrections

    factor, dark = np.full(N_PIX, 1.5), np.ones(N_PIX)
    packed = pack_corrections(op3, factor, dark)
    assert pack_corrections(op3, None, None) is None  # nothing to pack
    for kw in ({"pixel_factor": factor.copy(), "dark": dark}, {"pixel_factor": factor, "dark": None}):
        with pytest.raises(ValueError, match="packed corrections were made for another"):
            clip(op3, np.ones(SHAPE), packed=packed, **kw)
    with pytest.raises(ValueError, match="packed corrections were made for another operator"):
        clip(op1, np.ones(SHAPE), pixel_factor=factor, dark=dark, packed=packed)
    with pytest.raises(ValueError, match="dark_scale"):
        clip(op3, np.ones(SHAPE), dark=dark, dark_scale=float("nan"))


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_dummies_and_nan_after_clean_frames_are_excluded(geometry, mask):
    # The numba pass takes every pixel untested while the frames have no unusable pixel
    # (it keeps the frame's smallest value and checks the sums for NaN); a frame with
    # negatives or NaN among the used pixels is passed again with the test.
    op = build_radial_operator(geometry, mask, 3, 1.0)
    clean = np.random.default_rng(51).poisson(80.0, SHAPE).astype(np.float64)
    clean.flat[np.random.default_rng(52).choice(N_PIX, 20, replace=False)] = 1e6
    negative, nan = clean.copy(), clean.copy()
    used = np.flatnonzero(op.entries_per_pixel > 0)
    negative.flat[used[::97]] = -2.0
    nan.flat[used[::89]] = np.nan
    for img, mask_negative in ((clean, True), (clean, True), (negative, True), (clean, True), (nan, True),
                               (nan, False), (negative, False), (clean, False)):
        ref, fast = (clip(op, img, mask_negative=mask_negative, method=m) for m in ("scipy", "numba"))
        assert_same(ref, fast)
        if img is not clean and mask_negative:
            assert ref.weight.sum() < op.bin_counts.sum()


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_an_integrator_clips_with_its_packed_dark_scaled_per_frame(geometry, mask):
    """The integrator packs its factor and dark once for the clip kernel and passes the
    frame's dark scale: the curve is the reference's with the dark scaled beforehand."""
    from saxsdog.core.corrections import PixelCorrections
    from saxsdog.core.integrators import RadialIntegrator

    op = build_radial_operator(geometry, mask, 3, 1.0, polarization=(0.9, 10.0))
    rng = np.random.default_rng(61)
    dark = 5.0 * rng.random(SHAPE)
    flat = 0.8 + 0.4 * rng.random(SHAPE)
    img = zinger_image(62)
    integ = RadialIntegrator(op, method="numba", geometry=geometry,
                             corrections=PixelCorrections(flat=flat, dark=dark, sigma_clip=(4.0, 3)))
    for scale in (1.0, 0.5, 2.0):
        got = integ.curve(img, dark_scale=scale)
        ref = clip_accumulate(op, img.ravel(), pixel_factor=integ._factor, dark=dark.ravel() * scale, sigma=4.0,
                              cycles=3, method="scipy", operator_correction=False)
        np.testing.assert_allclose(got.intensity, ref.intensity, rtol=1e-12, atol=0)
        np.testing.assert_allclose(got.poisson, ref.error, rtol=1e-11, atol=0)
        assert got.rejected_pixels == ref.rejected > 15


@pytest.mark.skipif("numba" not in available_methods(), reason="numba not installed")
def test_a_pickled_integrator_clips_alike(geometry, mask):
    # A worker gets the integrator pickled: its packed corrections travel with it (still
    # matching its operator), the kernel's derived data are rebuilt for the new operator.
    import pickle

    from saxsdog.core.corrections import PixelCorrections
    from saxsdog.core.integrators import RadialIntegrator

    op = build_radial_operator(geometry, mask, 3, 1.0)
    rng = np.random.default_rng(71)
    integ = RadialIntegrator(op, method="numba", geometry=geometry,
                             corrections=PixelCorrections(flat=0.8 + 0.4 * rng.random(SHAPE), dark=rng.random(SHAPE),
                                                          sigma_clip=(4.0, 3)))
    img = zinger_image(72)
    want = integ.curve(img, dark_scale=0.5)
    copy = pickle.loads(pickle.dumps(integ))
    assert copy._packed_clip.operator is copy.operator
    got = copy.curve(img, dark_scale=0.5)
    np.testing.assert_array_equal(got.intensity, want.intensity)
    np.testing.assert_array_equal(got.poisson, want.poisson)
    assert got.rejected_pixels == want.rejected_pixels > 15
