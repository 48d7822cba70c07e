"""Loading, validation, defaults, masks, cache and the integration API of Calibration."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from saxsdog import Calibration, CalibrationError
from saxsdog.errors import ImageError
from saxsdog.calibration import validate_calibration
from saxsdog.io.chi import read_chi
from saxsdog.testing import small_calibration as small_cal




@pytest.mark.slow
def test_cal_json_loads_unchanged(data_dir):
    raw = json.loads((data_dir / "cal.json").read_text())
    cal = Calibration(data_dir / "cal.json", cache=False)
    assert cal.raw == raw
    assert cal.shape == (1043, 981)
    assert cal.geometry.distance_mm == 1031.657
    assert cal.geometry.beam_center == (808.37, 387.772)
    assert cal.mask(0).sum() == 666_395  # data/README


def test_relative_maskfile_resolves_against_calibration_folder(data_dir, tmp_path, monkeypatch):
    shutil.copy(data_dir / "cal.json", tmp_path / "cal.json")
    shutil.copy(data_dir / "AAA_integ.msk", tmp_path / "AAA_integ.msk")
    monkeypatch.chdir(data_dir.parent)  # somewhere else: must not matter
    cal = Calibration(tmp_path / "cal.json", cache=False)
    assert cal.mask(0).sum() == 666_395


def test_defaults_are_applied():
    cal = Calibration(small_cal(), cache=False)
    c = cal.config
    assert c["Title"] == "" and c["Threads"] == 2 and c["GISAXSmode"] is False
    assert c["Live-Filelisting"] is True and c["OverwriteFiles"] is True and c["Slices"] == []
    assert c["Masks"][0]["Phi-mode"] is False and c["Masks"][0]["Name"] == ""
    # one spelling only: the original's DedectorDistanceMM is mapped to DetectorDistanceMM on
    # load, and no default is added under the other spelling
    assert c["Geometry"]["DetectorDistanceMM"] == 300.0 and "DedectorDistanceMM" not in c["Geometry"]
    assert c["Geometry"]["ImageSize"] == [64, 48] and "Imagesize" not in c["Geometry"]
    assert c["Version"] == 2  # a file without Version is the original's format, migrated on load
    assert c["Corrections"] == {"SolidAngle": False, "DarkFile": "", "FlatFile": "", "MaskNegative": True,
                                "DummyValue": None, "ErrorModel": "poisson"}
    assert all(v is None for v in c["Normalization"].values()) and "Background" not in c
    assert cal.raw == small_cal()  # the user's dict is untouched


def test_schema_defaults_are_valid_values():
    """Every default in the schema passes the schema's own constraints."""
    cal = small_cal()
    validate_calibration(cal)
    full = Calibration(cal, cache=False).config
    validate_calibration(full)


def test_alternative_spellings_and_single_pixel_size():
    cal = small_cal()
    g = cal["Geometry"]
    g["DetectorDistanceMM"] = g.pop("DedectorDistanceMM")
    g["ImageSize"] = g.pop("Imagesize")
    g["PixelSizeMicroM"] = [100.0, 172.0]
    c = Calibration(cal, cache=False)
    assert c.geometry.distance_mm == 300.0 and c.shape == (64, 48)
    assert c.geometry.pixel_size_um == (100.0, 172.0)


@pytest.mark.parametrize("mutate,path,fragment", [
    (lambda c: c.pop("Wavelength"), "$.Wavelength", "missing"),
    (lambda c: c["Geometry"].pop("BeamCenter"), "$.Geometry.BeamCenter", "missing"),
    (lambda c: c["Geometry"].__setitem__("BeamCenter", "middle"), "$.Geometry.BeamCenter", "type"),
    (lambda c: c.__setitem__("Wavelength", "1.54"), "$.Wavelength", "type"),
    (lambda c: c["Geometry"].__setitem__("DedectorDistanceMM", -5.0), "$.Geometry.DedectorDistanceMM", "> 0"),
    (lambda c: c["Geometry"].__setitem__("DetectorDistanceMM", 5.0), "$.Geometry", "exactly one"),
    (lambda c: c["Geometry"].__setitem__("PixelSizeMicroM", [1, 2, 3]), "$.Geometry.PixelSizeMicroM", "at most"),
    (lambda c: c["Masks"][0].__setitem__("Oversampling", 0), "$.Masks[0].Oversampling", ">= 1"),
    (lambda c: c.__setitem__("Slices", [{"Direction": "z", "Plane": "InPlane", "CutPosition": 3}]),
     "$.Slices[0].Direction", "one of"),
])
def test_bad_calibrations_name_the_json_path(mutate, path, fragment):
    cal = small_cal()
    mutate(cal)
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, cache=False)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_missing_mask_file(tmp_path):
    cal = small_cal()
    cal["Masks"].append({"MaskFile": "nowhere.msk"})
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, base_dir=tmp_path, cache=False)
    assert info.value.path == "$.Masks[1].MaskFile"
    assert "not found" in str(info.value) and "nowhere.msk" in str(info.value.value)


def test_mask_of_wrong_size(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((10, 10)))
    cal = small_cal()
    cal["Masks"][0]["MaskFile"] = "m.npy"
    with pytest.raises(CalibrationError, match="differs from the image size"):
        Calibration(cal, base_dir=tmp_path, cache=False)


def test_unreadable_calibration_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        Calibration(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="not found"):
        Calibration(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CalibrationError, match="JSON object"):
        Calibration(tmp_path / "list.json")


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".edf"])
def test_mask_formats_nonzero_means_masked(tmp_path, suffix):
    import fabio.edfimage
    import fabio.tifimage

    masked = np.zeros((64, 48), np.uint8)
    masked[:10] = 1
    if suffix == ".npy":
        np.save(tmp_path / "m.npy", masked)
    elif suffix == ".tif":
        fabio.tifimage.TifImage(data=masked).write(str(tmp_path / "m.tif"))
    else:
        fabio.edfimage.EdfImage(data=masked).write(str(tmp_path / "m.edf"))
    cal = small_cal()
    cal["Masks"][0]["MaskFile"] = "m" + suffix
    c = Calibration(cal, base_dir=tmp_path, cache=False)
    assert np.array_equal(c.mask(0), masked == 0)
    img = np.ones((64, 48))
    img[:10] = 1e6  # masked rows must not leak into the curve
    _, I = c.integrate(img)
    assert np.allclose(I[I > 0], 1.0)


@pytest.mark.slow
def test_mask_attachment_instead_of_file(data_dir):
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Masks"][0]["MaskFile"] = "sent-over-the-wire.msk"
    c = Calibration(cal, attachments={0: (data_dir / "AAA_integ.msk").read_bytes()}, cache=False)
    assert c.mask(0).sum() == 666_395


def test_operator_cache_roundtrip(tmp_path):
    c1 = Calibration(small_cal(), cache=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    c2 = Calibration(small_cal(), cache=tmp_path / "cache")
    a, b = c1.radial.operator, c2.radial.operator
    assert np.array_equal(a.bins, b.bins) and np.array_equal(a.counts, b.counts) and np.array_equal(a.x, b.x)
    # anything affecting the operator gives a new entry
    other = small_cal()
    other["Wavelength"] = 1.0
    Calibration(other, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    # a corrupt entry is ignored and rebuilt
    files[0].write_bytes(b"garbage")
    c3 = Calibration(small_cal(), cache=tmp_path / "cache")
    assert np.array_equal(c3.radial.operator.bins, a.bins)


def test_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("SAXSDOG_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("SAXSDOG_NO_CACHE", "1")
    Calibration(small_cal())
    assert not (tmp_path / "c").exists()
    monkeypatch.delenv("SAXSDOG_NO_CACHE")
    Calibration(small_cal())
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1


def test_integrate_api_shapes_and_errors():
    c = Calibration(small_cal(), cache=False)
    img = np.random.default_rng(0).poisson(20, (64, 48))
    q, I = c.integrate(img)
    out = c.integrate_with_errors(img)
    assert out.shape == (3, q.size) and np.allclose(out[0], I)
    p = c.integral_parameters(I)
    assert set(p) == {"I0", "I1", "I2", "invariant", "correlation_length"}
    sel = (q >= 0.1) & (q <= 1.0)
    assert np.isclose(p["I0"], I[sel].sum() * (q[1] - q[0]))


def test_several_masks_phi_mode_and_slices_give_several_integrators(tmp_path):
    cal = small_cal()
    cal["Masks"].append({"MaskFile": "", "Oversampling": 1, "Phi-mode": True, "qStart": 0.2, "qStop": 0.8})
    cal["Slices"] = [{"Direction": "x", "Plane": "InPlane", "CutPosition": 20, "CutMargin": 2, "MaskRef": -1},
                     {"Direction": "y", "Plane": "Vertical", "CutPosition": 10, "CutMargin": 1,
                      "IncidentAngle": 0.3, "MaskRef": 0}]
    c = Calibration(cal, cache=False)
    assert [it.kind for it in c.integrators] == ["Radial", "Phi", "Slice", "Slice"]
    assert c.output_suffixes() == ["", "_cP1", "_cS2", "_cS3"]
    img = np.random.default_rng(0).poisson(20, (64, 48)).astype(np.int32)
    written = c.write_chi(img, tmp_path / "frame_00001.chi")
    assert [p.name for p in written] == ["frame_00001.chi", "frame_00001_cP1.chi",
                                         "frame_00001_cS2.chi", "frame_00001_cS3.chi"]
    phi = read_chi(written[1])
    assert phi.x.size == 360 and phi.labels[0] == "Azimuth [deg]"
    gisaxs = copy.deepcopy(cal)
    gisaxs["GISAXSmode"] = True
    assert [it.kind for it in Calibration(gisaxs, cache=False).integrators] == ["Slice", "Slice"]


def test_slice_maskref_out_of_range():
    cal = small_cal(Slices=[{"Direction": "x", "Plane": "InPlane", "CutPosition": 20, "MaskRef": 3}])
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, cache=False)
    assert info.value.path == "$.Slices[0].MaskRef"


def test_write_chi_roundtrip_and_header(tmp_path):
    c = Calibration(small_cal(), cache=False)
    img = np.random.default_rng(1).poisson(20, (64, 48))
    (path,) = c.write_chi(img, tmp_path / "a.chi")
    back = read_chi(path)
    I, _, poisson = c.integrate_with_errors(img)
    assert np.allclose(back.q, c.q, rtol=1e-15) and np.allclose(back.intensity, I, rtol=1e-15)
    assert np.allclose(back.error, poisson, rtol=1e-15)
    assert back.calibration == small_cal()
    assert back.parameters == pytest.approx(c.integral_parameters(I))
    assert back.labels == ["Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]
    assert not list(tmp_path.glob("*.part"))


def test_not_found_messages_name_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(CalibrationError) as info:
        Calibration("sub/../absent.json")
    assert f"calibration file not found: {tmp_path / 'absent.json'}" in str(info.value)
    cal = small_cal()
    cal["Masks"][0]["MaskFile"] = "masks/AAA_integ.msk"
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, base_dir="sub", cache=False)
    assert f"mask file not found: {tmp_path / 'sub' / 'masks' / 'AAA_integ.msk'}" in str(info.value)
    assert info.value.path == "$.Masks[0].MaskFile"


# --------------------------------------------------------------------------- Corrections (format version 2)

SMALL = (64, 48)


def _v2(tmp_path, **corrections):
    cal = small_cal(Version=2, Corrections={"SolidAngle": False, **corrections})
    return cal


def _has_corrections() -> bool:
    import importlib.util

    return importlib.util.find_spec("saxsdog.core.corrections") is not None


def _write(tmp_path, name, data, description=None):
    import tifffile

    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, data)
    else:
        tifffile.imwrite(path, data, description=description, metadata=None)
    return path


@pytest.mark.parametrize("field", ["DarkFile", "FlatFile"])
def test_dark_or_flat_of_the_wrong_size_is_refused(tmp_path, field):
    _write(tmp_path, "wrong.tif", np.ones((10, 20), np.float32))
    _write(tmp_path, "wrong.npy", np.ones((48, 64)))
    for name in ("wrong.tif", "wrong.npy"):
        with pytest.raises(CalibrationError) as info:
            Calibration(_v2(tmp_path, **{field: name}), base_dir=tmp_path, cache=False)
        assert info.value.path == f"$.Corrections.{field}" and info.value.value == name
        assert "64×48" in str(info.value)
        assert name in str(info.value)  # the message names the file, not only the field


@pytest.mark.parametrize("field", ["DarkFile", "FlatFile"])
def test_missing_dark_or_flat_is_refused(tmp_path, field):
    with pytest.raises(CalibrationError) as info:
        Calibration(_v2(tmp_path, **{field: "nowhere.tif"}), base_dir=tmp_path, cache=False)
    assert info.value.path == f"$.Corrections.{field}" and "not found" in str(info.value)
    assert str(tmp_path / "nowhere.tif") in str(info.value)  # relative to the calibration's folder


@pytest.mark.parametrize("bad", [0.0, -0.5, np.nan])
def test_flat_with_zeros_negatives_or_nan_inside_the_mask_is_refused(tmp_path, bad):
    flat = np.ones(SMALL)
    flat[10, 7] = bad
    _write(tmp_path, "flat.npy", flat)
    with pytest.raises(CalibrationError) as info:
        Calibration(_v2(tmp_path, FlatFile="flat.npy"), base_dir=tmp_path, cache=False)
    assert info.value.path == "$.Corrections.FlatFile" or (np.isnan(bad) and "finite" in str(info.value))
    assert "row 10, column 7" in str(info.value) or "not finite" in str(info.value)


def test_flat_zeros_under_the_mask_are_accepted(tmp_path):
    pytest.importorskip("saxsdog.core.corrections")
    flat = np.full(SMALL, 2.0)
    flat[10, 7] = 0.0
    mask = np.zeros(SMALL, np.uint8)
    mask[10, 7] = 1  # masked
    _write(tmp_path, "flat.npy", flat)
    np.save(tmp_path / "mask.npy", mask)
    raw = _v2(tmp_path, FlatFile="flat.npy")
    raw["Masks"][0]["MaskFile"] = "mask.npy"
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    assert cal.pixel_corrections.flat is not None and cal.pixel_corrections.flat[10, 7] == 0


def test_without_the_corrections_module_asking_for_them_is_a_clear_error(tmp_path):
    if _has_corrections():
        pytest.skip("saxsdog.core.corrections is there")
    _write(tmp_path, "dark.tif", np.zeros(SMALL, np.int32))
    with pytest.raises(CalibrationError) as info:
        Calibration(_v2(tmp_path, DarkFile="dark.tif"), base_dir=tmp_path, cache=False)
    assert info.value.path == "$.Corrections.DarkFile" and "corrections" in str(info.value)
    with pytest.raises(CalibrationError) as info:
        Calibration(small_cal(Version=2), cache=False)  # SolidAngle defaults to true in version 2
    assert info.value.path == "$.Corrections.SolidAngle"
    assert Calibration(small_cal(), cache=False).pixel_corrections is None  # version 1: as before


def test_corrections_block_becomes_pixel_corrections(tmp_path):
    pytest.importorskip("saxsdog.core.corrections")
    _write(tmp_path, "dark.tif", np.full(SMALL, 3, np.int32), "# Exposure_time 1.0 s\r\n")
    _write(tmp_path, "flat.npy", np.full(SMALL, 1.5))
    raw = small_cal(Version=2, PolarizationCorrection={"Fraction": 0.9, "Angle": 10.0},
                    Corrections={"SolidAngle": True, "DarkFile": "dark.tif", "FlatFile": "flat.npy",
                                 "MaskNegative": True, "DummyValue": 65535, "ErrorModel": "azimuthal",
                                 "SigmaClip": {"Sigma": 3.5, "Cycles": 2}})
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    pc = cal.pixel_corrections
    assert (pc.solid_angle, pc.polarization, pc.mask_negative, pc.dummy_value, pc.error_model,
            pc.sigma_clip) == (True, (0.9, 10.0), True, 65535, "azimuthal", (3.5, 2))
    assert pc.dark.shape == SMALL and pc.flat.shape == SMALL and cal.dark_exposure == 1.0
    assert cal.integrators[0].corrections is pc  # the polarization is the corrections', not the operator's
    assert getattr(cal.integrators[0].operator, "correction", None) is None
    v1 = Calibration(small_cal(), cache=False).pixel_corrections
    assert (v1.solid_angle, v1.error_model, v1.mask_negative, v1.dark, v1.flat) == (False, "poisson", True,
                                                                                    None, None)


def test_dark_is_scaled_by_the_frames_exposure_over_the_darks(tmp_path):
    pytest.importorskip("saxsdog.core.corrections")
    rng = np.random.default_rng(3)
    dark = rng.integers(0, 5, SMALL).astype(np.int32)
    _write(tmp_path, "dark.tif", dark, "# Exposure_time 0.5 s\r\n")
    image = rng.poisson(200.0, SMALL).astype(np.int32)
    with_dark = Calibration(_v2(tmp_path, DarkFile="dark.tif"), base_dir=tmp_path, cache=False)
    without = Calibration(_v2(tmp_path), cache=False)
    got = with_dark.curves(image, metadata={"exposure_time": 2.0})[0]  # 4 × the dark's exposure
    expected = without.curves(image - 4.0 * dark, metadata={})[0]
    np.testing.assert_allclose(got.intensity, expected.intensity, rtol=1e-12, atol=1e-12)
    # a frame without an exposure time: the dark as it is
    same = with_dark.curves(image, metadata={})[0]
    np.testing.assert_allclose(same.intensity, without.curves(image - 1.0 * dark, metadata={})[0].intensity,
                               rtol=1e-12, atol=1e-12)


def test_a_dark_with_header_exposures_and_no_frame_metadata_uses_the_dark_as_it_is(tmp_path):
    # the queue warms its kernels up with curves(zeros) and no metadata: that must not fail
    pytest.importorskip("saxsdog.core.corrections")
    dark = np.full(SMALL, 2, np.int32)
    _write(tmp_path, "dark.tif", dark, "# Exposure_time 0.5 s\r\n")
    raw = _v2(tmp_path, DarkFile="dark.tif")
    raw["Normalization"] = {"ExposureTime": "header"}
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    image = np.full(SMALL, 10, np.int32)
    curve = cal.curves(image)[0]
    assert curve.unit == "counts/pixel"  # the header's exposure time was not applied
    ok = curve.has_data
    np.testing.assert_allclose(curve.intensity[ok], 8.0, rtol=1e-12)
    with pytest.raises(ImageError):
        cal.curves(image, metadata={})  # a frame whose header has no exposure time


@pytest.mark.parametrize("field,fill", [("FlatFile", 2.0), ("DarkFile", 0.5)])
def test_nan_in_a_dark_or_flat_is_accepted_under_the_mask_and_refused_inside_it(tmp_path, field, fill):
    """Flats and darks often hold NaN in the detector gaps, which the mask covers: accepted
    there (they were refused wherever they were), refused on a used pixel naming it."""
    pytest.importorskip("saxsdog.core.corrections")
    image = np.full(SMALL, fill)
    image[10, 7] = np.nan
    _write(tmp_path, "corr.npy", image)
    mask = np.zeros(SMALL, np.uint8)
    mask[10, 7] = 1  # masked
    np.save(tmp_path / "mask.npy", mask)
    raw = _v2(tmp_path, **{field: "corr.npy"})
    raw["Masks"][0]["MaskFile"] = "mask.npy"
    cal = Calibration(raw, base_dir=tmp_path, cache=False)
    frame = np.full(SMALL, 10.0)
    curve = cal.curve(frame, {})
    assert np.isfinite(curve.intensity).all() and np.isfinite(curve.poisson).all()
    has = curve.has_data
    expected = 10.0 / 2.0 if field == "FlatFile" else 10.0 - 0.5
    without_solid_angle = Calibration(_v2(tmp_path), base_dir=tmp_path, cache=False).curve(np.full(SMALL, 1.0), {})
    np.testing.assert_allclose(curve.intensity[has], expected * without_solid_angle.intensity[has], rtol=1e-9)
    raw["Masks"][0]["MaskFile"] = ""
    with pytest.raises(CalibrationError) as info:
        Calibration(raw, base_dir=tmp_path, cache=False)
    assert info.value.path == f"$.Corrections.{field}" and "row 10, column 7" in str(info.value), str(info.value)


def test_a_dummy_value_with_mask_negative_off_is_refused_not_ignored(tmp_path):
    """MaskNegative false keeps every pixel, DummyValue too: refused naming the field (it was
    silently ignored, the dummy value averaged into the curve)."""
    with pytest.raises(CalibrationError) as info:
        Calibration(_v2(tmp_path, MaskNegative=False, DummyValue=77), cache=False)
    assert info.value.path == "$.Corrections.DummyValue" and "MaskNegative" in str(info.value)
    Calibration(_v2(tmp_path, MaskNegative=False, DummyValue=None), cache=False)
    Calibration(_v2(tmp_path, MaskNegative=True, DummyValue=77), cache=False)
