"""saxsdog.reduction.background and the calibration's Background block."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from saxsdog import Calibration, CalibrationError
from saxsdog.core.integrators import Curve
from saxsdog.io.chi import format_chi
from saxsdog.reduction.background import BackgroundCurve, on_grid, read_background_curve, subtract
from saxsdog.testing import small_calibration

SHAPE = (64, 48)


def _cal(**fields) -> dict:
    cal = small_calibration(Version=2, Corrections={"SolidAngle": False}, **fields)
    cal["Masks"][0]["Oversampling"] = 1  # one bin per pixel: today's error √(I·A)/A is exact
    return cal


def _smooth(cal: Calibration, level: float, slope: float) -> np.ndarray:
    """A smooth expected image (counts per pixel) falling with the distance from the beam."""
    rows, cols = np.indices(SHAPE)
    r = np.hypot(rows - 30.0, cols - 20.0)
    return level * np.exp(-r / slope)


def _write_chi(path, x, intensity, error):
    path.write_bytes(format_chi([x, intensity, error]))
    return path


# --------------------------------------------------------------------------- the subtraction itself

def test_subtract_is_the_analytic_difference_with_errors_in_quadrature():
    x = np.linspace(0.1, 1.0, 10)
    curve = Curve(x, np.full(10, 5.0), None, np.full(10, 0.3), {}, valid=np.array([True] * 9 + [False]),
                  unit="counts/pixel/s", dummy_pixels=4, rejected_pixels=7)
    sub = subtract(curve, np.full(10, 2.0), np.full(10, 0.4), valid=np.array([False] + [True] * 9))
    np.testing.assert_allclose(sub.intensity[1:9], 3.0)
    np.testing.assert_allclose(sub.poisson[1:9], 0.5)
    assert sub.intensity[0] == sub.intensity[9] == 0 and list(sub.valid) == [False] + [True] * 8 + [False]
    assert sub.unit == "counts/pixel/s" and sub.dummy_pixels == 4
    assert sub.rejected_pixels == 7  # the same frame's pixels: the subtracted curve reports its counts too


def test_curve_background_from_chi_subtracts_the_normalized_scaled_background(tmp_path):
    plain = Calibration(_cal(), cache=False)
    radial = plain.integrators[0]
    x = radial.x
    b = 1.0 + 0.5 * x
    sb = 0.01 + 0.0 * x
    _write_chi(tmp_path / "bg.chi", x, b, sb)
    raw = _cal(Normalization={"ExposureTime": 2.0, "Transmission": 0.8},
               Background={"File": "bg.chi", "Scale": 0.9, "ExposureTime": 4.0, "Transmission": 0.5})
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    image = np.random.default_rng(0).poisson(_smooth(plain, 400.0, 30.0)).astype(np.int32)
    c = cal.curves(image, metadata={})[0]
    today = plain.curves(image)[0]
    np.testing.assert_allclose(c.intensity, today.intensity / (2.0 * 0.8), rtol=1e-12)
    k = 0.9 / (4.0 * 0.5)
    ok = c.subtracted.valid
    assert ok.sum() >= radial.operator.n_bins - 2
    np.testing.assert_allclose(c.subtracted.intensity[ok], (c.intensity - k * b)[ok], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.subtracted.poisson[ok], np.hypot(c.poisson, k * sb)[ok], rtol=1e-12)
    assert c.subtracted.unit == c.unit == "counts/pixel/s"
    assert c.subtracted.parameters["I0"] == pytest.approx(
        radial.parameters(c.subtracted.intensity)["I0"])


def test_curve_background_from_nxcansas_in_inverse_angstrom(tmp_path):
    import h5py

    plain = Calibration(_cal(), cache=False)
    x = plain.integrators[0].x
    with h5py.File(tmp_path / "bg.h5", "w") as f:
        entry = f.create_group("sasentry01")
        entry.attrs["canSAS_class"] = "SASentry"
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("sasdata01")
        data.attrs.update({"canSAS_class": "SASdata", "NX_class": "NXdata", "signal": "I", "I_axes": "Q"})
        data["Q"] = x / 10.0
        data["Q"].attrs["units"] = "1/angstrom"
        data["I"] = np.full(x.size, 3.0)
        data["I"].attrs["uncertainties"] = "Idev"
        data["Idev"] = np.full(x.size, 0.2)
    bg = read_background_curve(tmp_path / "bg.h5")
    np.testing.assert_allclose(bg.x, x, rtol=1e-12)
    cal = Calibration(_cal(Background={"File": "bg.h5"}), base_dir=tmp_path, cache=False)
    image = np.full(SHAPE, 10, dtype=np.int32)
    c = cal.curves(image, metadata={})[0]
    ok = c.subtracted.valid
    np.testing.assert_allclose(c.subtracted.intensity[ok], c.intensity[ok] - 3.0, rtol=1e-12)


def test_image_background_is_integrated_with_the_same_calibration(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    plain = Calibration(_cal(), cache=False)
    expected_bg = _smooth(plain, 50.0, 60.0)
    bg_image = rng.poisson(expected_bg).astype(np.int32)
    tifffile.imwrite(tmp_path / "empty.tif", bg_image, description="# Exposure_time 5.0 s\r\n# T 0.9\r\n",
                     metadata=None)
    raw = _cal(Normalization={"ExposureTime": "header", "Transmission": {"Header": "T"}},
               Background={"File": "empty.tif"})  # inherits both settings, read from its own header
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    sample = rng.poisson(2 * expected_bg).astype(np.int32)
    meta = {"header": {"Exposure_time": "2 s", "T": "0.5"}}
    c = cal.curves(sample, metadata=meta)[0]
    b = plain.curves(bg_image)[0]
    s = plain.curves(sample)[0]
    ok = c.subtracted.valid
    np.testing.assert_allclose(c.subtracted.intensity[ok], (s.intensity / 1.0 - b.intensity / 4.5)[ok],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.subtracted.poisson[ok], np.hypot(s.poisson, b.poisson / 4.5)[ok], rtol=1e-12)


@pytest.mark.slow
def test_propagated_errors_match_monte_carlo(tmp_path):
    """Sample and background both Poisson-noisy: the reported error of the subtracted curve
    is the scatter of the subtracted intensity over many realizations (within 2 %)."""
    plain = Calibration(_cal(), cache=False)
    radial = plain.integrators[0]
    rng = np.random.default_rng(7)
    mu_s, mu_b = _smooth(plain, 300.0, 25.0), _smooth(plain, 120.0, 40.0)
    k = 0.7
    n = 2000
    subs, errors = [], []
    for _ in range(n):
        s = radial.curve(rng.poisson(mu_s).astype(np.int32), stddev=False)
        b = radial.curve(rng.poisson(mu_b).astype(np.int32), stddev=False)
        sub = subtract(s, k * b.intensity, k * b.poisson)
        subs.append(sub.intensity)
        errors.append(sub.poisson)
    subs, errors = np.array(subs), np.array(errors)
    ok = radial.operator.area >= 5
    ratio = errors.mean(axis=0)[ok] / subs.std(axis=0, ddof=1)[ok]
    assert abs(np.median(ratio) - 1) < 0.02, np.median(ratio)
    assert np.percentile(np.abs(ratio - 1), 90) < 0.1  # per bin: ~1.6 % scatter of the estimate at n = 2000


# --------------------------------------------------------------------------- another q grid, bad input

def test_a_background_on_another_grid_is_interpolated_within_its_range(caplog):
    x = np.linspace(0.0, 2.0, 21)
    bg = BackgroundCurve(np.linspace(0.25, 1.25, 6), np.linspace(1.0, 2.0, 6), np.full(6, 0.1),
                         np.ones(6, dtype=bool), "bg.chi")
    with caplog.at_level(logging.WARNING, logger="saxsdog.reduction.background"):
        intensity, error, valid = on_grid(bg, x, "integrator Radial")
    assert "another q grid" in caplog.text and "bg.chi" in caplog.text
    inside = (x >= 0.25) & (x <= 1.25)
    assert list(valid) == list(inside)
    np.testing.assert_allclose(intensity[inside], 1.0 + (x[inside] - 0.25), rtol=1e-12)
    # a quarter of the way between two points: σ = √(0.75² + 0.25²)·0.1
    assert error[np.isclose(x, 0.3)][0] == pytest.approx(np.hypot(0.25 * 0.1, 0.75 * 0.1))
    assert np.all(error[~inside] == 0) and np.all(intensity[~inside] == 0)
    with pytest.raises(CalibrationError) as info:
        on_grid(bg, np.linspace(3.0, 4.0, 5))
    assert info.value.path == "$.Background.File" and "does not overlap" in str(info.value)


@pytest.mark.parametrize("background,normalization,path,fragment", [
    ({"File": "missing.chi"}, {}, "$.Background.File", "not found"),
    ({"File": "bg.chi", "ExposureTime": "header"}, {}, "$.Background.ExposureTime", "no image header"),
    ({"File": "bg.chi"}, {"Monitor": {"Header": "Flux"}}, "$.Background.Monitor", "no image header"),
    ({"File": "bg.chi", "Transmission": 0}, {}, "$.Background.Transmission", "> 0"),
    ({"File": "bad.chi"}, {}, "$.Background.File", "not a .chi"),
    ({"File": "empty.chi"}, {}, "$.Background.File", "no data"),
    ({"File": "small.tif"}, {}, "$.Background.File", "64×48"),
    ({"File": "far.chi"}, {}, "$.Background.File", "does not overlap"),
])
def test_bad_backgrounds_are_refused_naming_the_field(tmp_path, background, normalization, path, fragment):
    import tifffile

    x = Calibration(_cal(), cache=False).integrators[0].x
    _write_chi(tmp_path / "bg.chi", x, np.ones_like(x), np.full_like(x, 0.1))
    _write_chi(tmp_path / "empty.chi", x, np.zeros_like(x), np.zeros_like(x))
    _write_chi(tmp_path / "far.chi", x + 100, np.ones_like(x), np.full_like(x, 0.1))
    (tmp_path / "bad.chi").write_text("not a curve\n")
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((10, 10), np.int32))
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Background=background, Normalization=normalization), base_dir=tmp_path, cache=False)
    assert info.value.path == path, str(info.value)
    assert fragment in str(info.value)


def test_a_background_image_lacking_a_header_field_is_refused_at_load(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "empty.tif", np.ones(SHAPE, np.int32), description="# Flux 3\r\n", metadata=None)
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Normalization={"ExposureTime": "header"}, Background={"File": "empty.tif"}),
                    base_dir=tmp_path, cache=False)
    assert info.value.path == "$.Normalization.ExposureTime" and "empty.tif" in str(info.value)
    # its own number instead: fine
    Calibration(_cal(Normalization={"ExposureTime": "header"}, Background={"File": "empty.tif", "ExposureTime": 1}),
                base_dir=tmp_path, cache=False)


def test_a_background_off_the_q_range_names_the_mask_entry(tmp_path, caplog):
    """The message names the calibration entry, not a Python repr of an empty name
    (it said "the integrator Radial '''s 0.1..1 nm^-1")."""
    x = Calibration(_cal(), cache=False).integrators[0].x
    _write_chi(tmp_path / "far.chi", x + 100, np.ones_like(x), np.full_like(x, 0.1))
    _write_chi(tmp_path / "half.chi", x[: x.size // 2] * 1.001, np.ones(x.size // 2), np.full(x.size // 2, 0.1))
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Background={"File": "far.chi"}), base_dir=tmp_path, cache=False)
    assert "the $.Masks[0] integrator's" in str(info.value) and "''" not in str(info.value)
    with caplog.at_level(logging.WARNING, logger="saxsdog.reduction.background"):
        Calibration(_cal(Background={"File": "half.chi"}), base_dir=tmp_path, cache=False)
    assert "another q grid than the $.Masks[0] integrator (" in caplog.text and "''" not in caplog.text


# --------------------------------------------------------------------------- a background already normalized

_ABSOLUTE = {"ExposureTime": "header", "ThicknessMM": 1.5, "AbsoluteScale": 2.0e-3}


def test_a_background_reduced_with_the_same_calibration_is_subtracted_as_it_is(tmp_path):
    """The empty cell reduced with the samples' calibration (its .chi and NXcanSAS files in
    1/cm/sr) is subtracted as it is.  Before, it was multiplied by AbsoluteScale/d a second
    time (here ×2e-3/0.15): the subtracted curve was the sample's almost unchanged."""
    from datetime import datetime

    from saxsdog import read_image
    from saxsdog.testing import run_queue, write_pilatus_tiff

    cal = Calibration(_cal(Normalization=_ABSOLUTE), cache=False)
    empty = (np.random.default_rng(5).poisson(20.0, SHAPE)).astype(np.int32)
    sample = (np.random.default_rng(6).poisson(60.0, SHAPE)).astype(np.int32)
    when = datetime(2026, 1, 1)
    write_pilatus_tiff(tmp_path / "empty" / "empty.tif", empty, when, exposure=4.0)
    write_pilatus_tiff(tmp_path / "sample.tif", sample, when, exposure=2.0)
    for fmt in ("chi", "nxcansas"):  # the empty cell reduced as a user does, with the samples' calibration
        run_queue(cal, tmp_path / "empty", out_dir=tmp_path / fmt, output_format=fmt)
    expected_bg = cal.curve(read_image(tmp_path / "empty" / "empty.tif"))
    sample_curve = cal.curve(read_image(tmp_path / "sample.tif"))
    assert expected_bg.unit == "1/cm/sr"
    for name in ("chi/empty.chi", "nxcansas/empty.h5"):
        bg = read_background_curve(tmp_path / name)
        assert bg.unit == "1/cm/sr", name
        with_bg = Calibration(_cal(Normalization=_ABSOLUTE, Background={"File": name, "Scale": 0.5}),
                              base_dir=tmp_path, cache=False)
        got = with_bg.curve(read_image(tmp_path / "sample.tif")).subtracted
        assert got is not None and got.unit == "1/cm/sr"
        has = expected_bg.has_data & sample_curve.has_data
        np.testing.assert_allclose(got.intensity[has], sample_curve.intensity[has] - 0.5 * expected_bg.intensity[has],
                                   rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(got.poisson[has], np.hypot(sample_curve.poisson[has], 0.5 * expected_bg.poisson[has]),
                                   rtol=1e-9, err_msg=name)


def test_an_nxcansas_background_without_its_empty_bins_is_on_the_same_grid(caplog):
    x = np.linspace(0.1, 1.0, 10)
    keep = np.array([False, True, True, False, True, True, True, True, True, False])
    bg = BackgroundCurve(x[keep] * (1 + 1e-12), np.arange(keep.sum()) + 1.0, np.full(keep.sum(), 0.1),
                         np.ones(keep.sum(), dtype=bool), "bg.h5")
    with caplog.at_level(logging.WARNING, logger="saxsdog.reduction.background"):
        intensity, error, valid = on_grid(bg, x)
    assert "another q grid" not in caplog.text
    assert list(valid) == list(keep)
    np.testing.assert_array_equal(intensity[keep], np.arange(keep.sum()) + 1.0)
    assert np.all(intensity[~keep] == 0) and np.all(error[~keep] == 0)


def test_a_normalized_background_in_another_unit_or_with_its_own_exposure_is_refused(tmp_path):
    x = Calibration(_cal(), cache=False).integrators[0].x
    (tmp_path / "per_s.chi").write_bytes(format_chi([x, np.ones_like(x), np.full_like(x, 0.1)],
                                                    labels=["q", "Intensity (counts/pixel/s)", "Error Margin"]))
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Normalization=_ABSOLUTE, Background={"File": "per_s.chi"}), base_dir=tmp_path, cache=False)
    assert info.value.path == "$.Background.File"
    assert "counts/pixel/s" in str(info.value) and "1/cm/sr" in str(info.value)
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Normalization={"ExposureTime": 2.0}, Background={"File": "per_s.chi", "ExposureTime": 3.0}),
                    base_dir=tmp_path, cache=False)
    assert info.value.path == "$.Background.ExposureTime" and "second time" in str(info.value)
    # the same unit as the curves: as it is (the inherited exposure time is not applied again)
    cal = Calibration(_cal(Normalization={"ExposureTime": 2.0}, Background={"File": "per_s.chi"}),
                      base_dir=tmp_path, cache=False)
    c = cal.curve(np.full(SHAPE, 8.0))
    has = c.subtracted.has_data
    np.testing.assert_allclose(c.subtracted.intensity[has], 4.0 - 1.0, rtol=1e-12)


def test_chi_and_nxcansas_units():
    from saxsdog.reduction.background import chi_unit, nxcansas_unit

    assert chi_unit(["q", "Intensity (1/cm/sr)", "Error Margin"]) == "1/cm/sr"
    assert chi_unit(["q", "Intensity (Count/Pixel)", "Error Margin"]) == "counts/pixel"
    assert chi_unit(["q [nm^-1]", "Intensity"]) is None and chi_unit(None) is None
    assert nxcansas_unit("counts/pixel/s", "arbitrary") == "counts/pixel/s"
    assert nxcansas_unit(None, "1/cm") == "1/cm/sr" and nxcansas_unit(None, "arbitrary") is None


def test_a_background_image_without_a_header_takes_its_own_exposure_for_the_dark(tmp_path):
    """Normalization.ExposureTime "header", a dark with its own exposure time (10 s), and a
    background image without a header whose exposure is given as Background.ExposureTime
    (30 s): the dark is scaled by 30/10 for it.  Before, the calibration failed to load with
    an uncaught FrameNormalizationError traceback (the frames' "header" was looked for in the
    background image)."""
    import tifffile
    from datetime import datetime

    from saxsdog.testing import write_pilatus_tiff

    write_pilatus_tiff(tmp_path / "dark.tif", np.full(SHAPE, 2, np.int32), datetime(2026, 1, 1), exposure=10.0)
    tifffile.imwrite(tmp_path / "bg.tif", np.full(SHAPE, 9, np.int32), metadata=None)
    raw = _cal(Normalization={"ExposureTime": "header"}, Background={"File": "bg.tif", "ExposureTime": 30.0})
    raw["Corrections"]["DarkFile"] = "dark.tif"
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    c = cal.curve(np.full(SHAPE, 14.0), {"exposure_time": 5.0})
    has = c.subtracted.has_data
    # sample (14 − 2·5/10)/5 = 2.6; background (9 − 2·30/10)/30 = 0.1
    np.testing.assert_allclose(c.intensity[has], 2.6, rtol=1e-12)
    np.testing.assert_allclose(c.subtracted.intensity[has], 2.6 - 0.1, rtol=1e-12)
