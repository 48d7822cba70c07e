"""The public API gives the curve the pipeline writes: Calibration.integrate,
integrate_with_errors, curve and write_chi with corrections, normalization and background."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from saxsdog import Calibration, read_image
from saxsdog.io.chi import read_chi
from saxsdog.reduction.normalization import FrameNormalizationError
from saxsdog.testing import small_calibration, write_pilatus_tiff

SHAPE = (64, 48)
WHEN = datetime(2026, 1, 1, 12, 0, 0)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(50.0, SHAPE).astype(np.int32)


def _v2(**blocks) -> dict:
    return small_calibration(Version=2, **blocks)


def test_integrate_of_the_real_image_equals_the_chi_file_saxsdog_writes(data_dir, tmp_path):
    """The reviewer's check: `saxsdog -c` and `cal.integrate(frame)` give the same columns."""
    raw = json.loads((data_dir / "cal.json").read_text())
    raw.update(Version=2, Corrections={"SolidAngle": True, "ErrorModel": "poisson"},
               Normalization={"ExposureTime": "header", "Transmission": 0.5, "ThicknessMM": 1.0,
                              "AbsoluteScale": 2.0})
    raw["Masks"][0]["MaskFile"] = str(data_dir / "AAA_integ.msk")
    cal_path = tmp_path / "cal2.json"
    cal_path.write_text(json.dumps(raw))
    image = tmp_path / "in" / "buf1_00000.tif"
    image.parent.mkdir()
    image.symlink_to(data_dir / "buf1_00000.tif")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(cal_path), "-o", str(out), "-S",
                    str(image)], check=True, capture_output=True, timeout=300)
    written = read_chi(out / "buf1_00000.chi")
    cal = Calibration(cal_path, cache=False)
    frame = read_image(image)
    q, intensity = cal.integrate(frame)
    np.testing.assert_array_equal(q, written.x)
    np.testing.assert_array_equal(intensity, written.intensity)
    rows = cal.integrate_with_errors(frame.data, frame.metadata)
    np.testing.assert_array_equal(rows[0], written.intensity)
    np.testing.assert_array_equal(rows[2], written.error)
    # normalize=False: the corrected curve before t·T·d and the scale (10 s, 0.5, 0.1 cm, ×2)
    _, unnormalized = cal.integrate(frame, normalize=False)
    np.testing.assert_allclose(unnormalized * 2.0 / (10.0 * 0.5 * 0.1), intensity, rtol=1e-12)
    assert cal.curve(frame).unit == "1/cm/sr" and cal.curve(frame, normalize=False).unit == "counts/pixel"


def test_a_bare_array_is_refused_when_the_normalization_reads_the_header(tmp_path):
    cal = Calibration(_v2(Normalization={"ExposureTime": "header", "Monitor": {"Header": "Flux"}}), cache=False)
    img = _image()
    with pytest.raises(ValueError, match=r"\$\.Normalization\.ExposureTime = \"header\".*metadata"):
        cal.integrate(img)
    with pytest.raises(ValueError, match="ExposureTime"):
        cal.write_chi(img, tmp_path / "a.chi")
    assert not (tmp_path / "a.chi").exists()
    # metadata {}: a frame whose header has nothing, the frame's own error
    with pytest.raises(FrameNormalizationError, match="exposure time"):
        cal.integrate(img, {})
    meta = {"exposure_time": 4.0, "header": {"Flux": "2.5"}}
    _, raw = cal.integrate(img, normalize=False)
    _, normalized = cal.integrate(img, meta)
    np.testing.assert_allclose(normalized, raw / 10.0, rtol=1e-13)
    np.testing.assert_array_equal(normalized, cal.curves(img, metadata=meta)[0].intensity)


def test_integrate_takes_the_frame_and_its_header_from_read_image(tmp_path):
    cal = Calibration(_v2(Normalization={"ExposureTime": "header", "Monitor": 4.0}), cache=False)
    img = _image(1)
    frame = read_image(write_pilatus_tiff(tmp_path / "f.tif", img, WHEN, exposure=2.5))
    assert frame.metadata["exposure_time"] == 2.5
    _, got = cal.integrate(frame)
    _, raw = cal.integrate(frame, normalize=False)
    np.testing.assert_allclose(got, raw / (2.5 * 4.0), rtol=1e-13)
    written = cal.write_chi(frame, tmp_path / "f.chi")
    np.testing.assert_array_equal(read_chi(written[0]).intensity, got)
    # an explicit metadata argument wins over the frame's
    _, other = cal.integrate(frame, {"exposure_time": 5.0})
    np.testing.assert_allclose(other, got / 2.0, rtol=1e-13)


def test_a_dark_with_its_own_exposure_needs_the_frames(tmp_path):
    """The dark is scaled by t_frame/t_dark: a bare array cannot say its exposure time."""
    dark = np.full(SHAPE, 5, dtype=np.int32)
    write_pilatus_tiff(tmp_path / "dark.tif", dark, WHEN, exposure=1.0)
    cal = Calibration(_v2(Corrections={"DarkFile": "dark.tif", "SolidAngle": False}), base_dir=tmp_path,
                      cache=False)
    assert cal.dark_exposure == 1.0
    img = _image(2) + 20
    with pytest.raises(ValueError, match=r"\$\.Corrections\.DarkFile.*1 s"):
        cal.integrate(img)
    _, taken_like_the_dark = cal.integrate(img, {})
    _, ten_seconds = cal.integrate(img, {"exposure_time": 10.0})
    _, plain = Calibration(_v2(Corrections={"SolidAngle": False}), cache=False).integrate(img)
    has = plain != 0
    np.testing.assert_allclose(taken_like_the_dark[has], plain[has] - 5.0, rtol=1e-12)
    np.testing.assert_allclose(ten_seconds[has], plain[has] - 50.0, rtol=1e-12)


def test_integrate_applies_sigma_clipping_as_the_pipeline():
    cal = Calibration(_v2(Corrections={"SolidAngle": False, "SigmaClip": {"Sigma": 3, "Cycles": 3}}), cache=False)
    img = _image(3)
    img[10, 10] = 10 ** 6  # a zinger
    _, clipped = cal.integrate(img)
    pipeline = cal.curves(img, metadata={})[0]
    np.testing.assert_array_equal(clipped, pipeline.intensity)
    assert pipeline.rejected_pixels and cal.curve(img).rejected_pixels == pipeline.rejected_pixels
    _, unclipped = Calibration(_v2(Corrections={"SolidAngle": False}), cache=False).integrate(img)
    assert np.max(unclipped) > 10 * np.max(clipped)
    rows = cal.integrate_with_errors(img)
    np.testing.assert_array_equal(rows[0], pipeline.intensity)
    np.testing.assert_array_equal(rows[2], pipeline.poisson)


def test_curve_carries_the_background_subtracted_curve(tmp_path):
    background = np.full(SHAPE, 10, dtype=np.int32)
    np.save(tmp_path / "bg.npy", background)
    cal = Calibration(_v2(Corrections={"SolidAngle": False}, Background={"File": "bg.npy", "Scale": 0.5}),
                      base_dir=tmp_path, cache=False)
    img = _image(4)
    c = cal.curve(img)
    assert c.subtracted is not None
    has = c.has_data
    np.testing.assert_allclose(c.subtracted.intensity[has], c.intensity[has] - 5.0, rtol=1e-12)
    pipeline = cal.curves(img, metadata={})[0]
    assert pipeline.subtracted is not None
    np.testing.assert_array_equal(c.subtracted.intensity, pipeline.subtracted.intensity)
    assert cal.curve(img, normalize=False).subtracted is None


def test_version_one_files_integrate_as_before(real_calibration, real_image, data_dir):
    """Version 1 (no Normalization, dark or background): the old path, byte for byte."""
    q, intensity = real_calibration.integrate(real_image)
    np.testing.assert_array_equal(intensity, real_calibration.radial.integrate(real_image))
    np.testing.assert_array_equal(intensity, real_calibration.integrate(read_image(data_dir / "buf1_00000.tif"))[1])
    np.testing.assert_array_equal(real_calibration.integrate_with_errors(real_image),
                                  np.array(real_calibration.radial.integrate_with_errors(real_image)))
    assert isinstance(Path(data_dir), Path) and q is real_calibration.q
