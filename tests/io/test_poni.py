"""PONI import/export through pyFAI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.detectors import Detector  # noqa: E402
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402
from pyFAI.io.ponifile import PoniFile  # noqa: E402

from saxsdog.errors import CalibrationError  # noqa: E402
from saxsdog.io.fit2d import CalibrationGeometry, default_calibration, fit2d_to_calibration  # noqa: E402
from saxsdog.io.poni import (  # noqa: E402
    PoniError,
    calibration_to_integrator,
    calibration_to_poni,
    poni_to_calibration,
    poni_to_fit2d,
)

def _fit2d_text(tilt: float, rotation: float) -> str:
    return (
        "INFO: Refined Beam centre =      387.772     808.370 (pixels)\n"
        "INFO: Refined sample to detector distance =     1031.657 mm\n"
        "INFO: Refined wavelength =      1.54000 Angstroms\n"
        f"INFO: Refined tilt plane rotation angle =       {rotation} degrees\n"
        f"INFO: Refined tilt angle =       {tilt} degrees\n"
    )


def _tth(ai) -> np.ndarray:
    return ai.center_array(unit="2th_rad")


def _assert_same_geometry(a: dict, b: dict, tol: float = 1e-9) -> None:
    ga, gb = CalibrationGeometry.from_calibration(a).as_dict(), CalibrationGeometry.from_calibration(b).as_dict()
    assert ga.keys() == gb.keys()
    for key in ga:
        assert ga[key] == pytest.approx(gb[key], abs=tol, rel=0), key


@pytest.fixture
def cal_json(data_dir: Path) -> dict:
    return json.loads((data_dir / "cal.json").read_text())


@pytest.mark.parametrize(("tilt", "rotation"), [(0.0, 0.0), (-10.0, 73.569), (-0.56, 73.569), (10.0, -120.0),
                                                (25.0, 200.0)])
@pytest.mark.slow
def test_round_trip_fit2d_json_poni_json(tmp_path: Path, tilt: float, rotation: float) -> None:
    cal = fit2d_to_calibration(_fit2d_text(tilt, rotation))
    json_file = tmp_path / "cal.json"
    json_file.write_text(json.dumps(cal))
    cal = json.loads(json_file.read_text())
    poni = calibration_to_poni(cal, tmp_path / "cal.poni")
    back = poni_to_calibration(poni, cal)
    _assert_same_geometry(back, cal)
    assert back["Geometry"]["Imagesize"] == cal["Geometry"]["Imagesize"]
    assert back["Masks"] == cal["Masks"]
    # The written file reads back through pyFAI to the same 2θ map.
    assert np.abs(_tth(pyFAI.load(str(poni))) - _tth(calibration_to_integrator(back))).max() <= 1e-9


@pytest.mark.slow
def test_without_template_the_equivalent_positive_tilt_is_returned(tmp_path: Path) -> None:
    cal = fit2d_to_calibration(_fit2d_text(-10.0, 73.569))
    back = poni_to_calibration(calibration_to_poni(cal, tmp_path / "a.poni"))
    tilt = back["Geometry"]["Tilt"]
    assert tilt["TiltAngleDeg"] == pytest.approx(10.0, abs=1e-9)
    assert tilt["TiltRotDeg"] == pytest.approx(73.569 - 180.0, abs=1e-9)
    # (t, r) and (-t, r + 180°) are one geometry.
    diff = _tth(calibration_to_integrator(back)) - _tth(calibration_to_integrator(cal))
    assert np.abs(diff).max() <= 1e-9


@pytest.mark.slow
def test_poni_of_cal_json_matches_setfit2d_mapping(tmp_path: Path, cal_json: dict) -> None:
    poni_path = calibration_to_poni(cal_json, tmp_path / "cal.poni")
    loaded = pyFAI.load(str(poni_path))
    assert tuple(loaded.detector.max_shape) == (1043, 981)
    assert loaded.wavelength == pytest.approx(1.54e-10, rel=1e-15)

    expected = AzimuthalIntegrator(detector=Detector(pixel1=172e-6, pixel2=172e-6, max_shape=(1043, 981)))
    expected.setFit2D(directDist=1031.657, centerX=387.772, centerY=1043 - 808.37, tilt=-0.56,
                      tiltPlanRotation=-73.569, pixelX=172, pixelY=172, wavelength=1.54)
    tth = _tth(loaded)
    assert tth.shape == (1043, 981)
    assert np.abs(tth - _tth(expected)).max() <= 1e-9

    # data/README.md's equivalent description: the vertically flipped image with FIT2D's
    # own numbers.
    flipped = AzimuthalIntegrator(detector=Detector(pixel1=172e-6, pixel2=172e-6, max_shape=(1043, 981)))
    flipped.setFit2D(directDist=1031.657, centerX=387.772, centerY=808.37, tilt=-0.56,
                     tiltPlanRotation=73.569, pixelX=172, pixelY=172, wavelength=1.54)
    assert np.abs(tth - np.flipud(_tth(flipped))).max() <= 1e-9


@pytest.mark.slow
def test_written_file_is_a_pyfai_poni_and_is_replaced_not_appended(tmp_path: Path, cal_json: dict) -> None:
    path = tmp_path / "cal.poni"
    calibration_to_poni(cal_json, path)
    calibration_to_poni(cal_json, path)
    text = path.read_text()
    assert text.count("Distance:") == 1
    assert "poni_version:" in text and '"max_shape": [1043, 981]' in text
    poni = PoniFile(str(path))
    assert poni.dist == pytest.approx(1.031657 * np.cos(np.radians(0.56)), rel=1e-12)


@pytest.mark.parametrize("tilt", [0.0, 0.3, 2.0, 15.0])
@pytest.mark.parametrize("rotation", [-170.0, -45.0, 0.0, 73.569, 120.0])
def test_poni_to_fit2d_inverts_setfit2d_and_agrees_with_getfit2d(tilt: float, rotation: float) -> None:
    ai = AzimuthalIntegrator(detector=Detector(pixel1=100e-6, pixel2=75e-6, max_shape=(500, 600)))
    given = dict(directDist=250.0, centerX=310.25, centerY=180.5, tilt=tilt, tiltPlanRotation=rotation)
    ai.setFit2D(pixelX=75, pixelY=100, **given)
    ours, theirs = poni_to_fit2d(ai), ai.getFit2D()
    for key in ("directDist", "centerX", "centerY", "tilt"):
        assert ours[key] == pytest.approx(given[key], abs=1e-9), key
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key
    if tilt:
        assert ours["tiltPlanRotation"] == pytest.approx(rotation, abs=1e-9)
        # pyFAI takes this angle through acos and loses digits near 0° and 180°.
        assert ours["tiltPlanRotation"] == pytest.approx(theirs["tiltPlanRotation"], abs=1e-4)


@pytest.mark.slow
def test_tiny_tilt_keeps_the_2theta_map(tmp_path: Path) -> None:
    cal = fit2d_to_calibration(_fit2d_text(5e-6, 30.0))
    back = poni_to_calibration(calibration_to_poni(cal, tmp_path / "t.poni"), cal)
    diff = _tth(calibration_to_integrator(back)) - _tth(calibration_to_integrator(cal))
    assert np.abs(diff).max() <= 1e-12
    assert back["Geometry"]["BeamCenter"][0] == pytest.approx(808.37, abs=1e-9)


def test_general_pyfai_geometry_keeps_2theta_and_warns_about_rot3(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    ai = AzimuthalIntegrator(detector=Detector(pixel1=75e-6, pixel2=75e-6, max_shape=(300, 400)),
                             dist=0.2, poni1=0.011, poni2=0.014, rot1=0.05, rot2=-0.03, rot3=0.3,
                             wavelength=1e-10)
    path = tmp_path / "general.poni"
    with open(path, "w") as fh:
        PoniFile(ai).write(fh)
    with caplog.at_level(logging.WARNING, logger="saxsdog.io.poni"):
        cal = poni_to_calibration(path)
    assert "rot3" in caplog.text
    assert cal["Geometry"]["Imagesize"] == [300, 400]
    assert cal["Wavelength"] == pytest.approx(1.0, rel=1e-12)
    assert np.abs(_tth(calibration_to_integrator(cal)) - _tth(ai)).max() <= 1e-9


def test_missing_shape_and_wavelength_come_from_template(tmp_path: Path) -> None:
    path = tmp_path / "noshape.poni"
    path.write_text("poni_version: 1\nPixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: 0.5\n"
                    "Poni1: 0.01\nPoni2: 0.02\nRot1: 0\nRot2: 0\nRot3: 0\n")
    template = default_calibration()
    template["Geometry"]["Imagesize"] = [200, 300]
    template["Wavelength"] = 0.8
    cal = poni_to_calibration(path, template)
    assert cal["Geometry"]["Imagesize"] == [200, 300]
    assert cal["Wavelength"] == 0.8
    assert cal["Geometry"]["BeamCenter"] == pytest.approx([200 - 100.0, 200.0], abs=1e-9)
    assert cal["Geometry"]["PixelSizeMicroM"] == pytest.approx([100.0, 100.0])
    del template["Geometry"]["Imagesize"]
    with pytest.raises(CalibrationError, match="Imagesize") as info:
        poni_to_calibration(path, template)
    assert info.value.path == "$.Geometry.Imagesize"
    # A template in saxsdog's spellings gives its image size just as well.
    modern = {"Geometry": {"BeamCenter": [1.0, 2.0], "DetectorDistanceMM": 5.0, "PixelSizeMicroM": [100.0],
                           "ImageSize": [200, 300]}, "Masks": [], "Wavelength": 0.8}
    cal = poni_to_calibration(path, modern)
    assert cal["Geometry"]["ImageSize"] == [200, 300] and "Imagesize" not in cal["Geometry"]
    assert cal["Geometry"]["DetectorDistanceMM"] == pytest.approx(500.0) and "DedectorDistanceMM" not in cal["Geometry"]


def test_not_a_poni_file(tmp_path: Path) -> None:
    path = tmp_path / "x.poni"
    path.write_text("this is not: a poni file\n")
    with pytest.raises(PoniError, match="missing Distance"):
        poni_to_calibration(path)
    with pytest.raises(PoniError, match="no such file"):
        poni_to_calibration(tmp_path / "absent.poni")


def test_flipped_detector_orientation_is_refused(tmp_path: Path) -> None:
    ai = AzimuthalIntegrator(detector=Detector(pixel1=1e-4, pixel2=1e-4, max_shape=(10, 10), orientation=1),
                             dist=0.1)
    path = tmp_path / "o1.poni"
    with open(path, "w") as fh:
        PoniFile(ai).write(fh)
    with pytest.raises(PoniError, match="orientation 1"):
        poni_to_calibration(path)


def test_export_needs_image_size() -> None:
    cal = default_calibration()
    del cal["Geometry"]["Imagesize"]
    with pytest.raises(CalibrationError, match="Imagesize"):
        calibration_to_integrator(cal)


def test_poni_export_carries_the_wavelength(data_dir, tmp_path):
    import json

    from saxsdog.io.poni import calibration_to_poni, poni_to_calibration

    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Wavelength"] = 1.2345
    path = calibration_to_poni(cal, tmp_path / "cal.poni")
    assert "Wavelength" in path.read_text()
    back = poni_to_calibration(path)  # no template: the wavelength must come from the file
    assert abs(back["Wavelength"] - 1.2345) < 1e-12


@pytest.mark.slow
def test_import_rounds_away_the_conversion_noise(tmp_path: Path, cal_json: dict) -> None:
    """cal.json -> PONI -> calibration gives cal.json's numbers as written (no -0.5600000000003951)."""
    back = poni_to_calibration(calibration_to_poni(cal_json, tmp_path / "cal.poni"), cal_json)
    assert back["Geometry"]["Tilt"] == {"TiltAngleDeg": -0.56, "TiltRotDeg": 73.569}
    assert back["Geometry"]["BeamCenter"] == [808.37, 387.772]
    assert back["Geometry"]["DedectorDistanceMM"] == 1031.657
    assert back["Geometry"]["PixelSizeMicroM"] == [172.0, 172.0]
    assert back["Wavelength"] == 1.54
    # Ten significant digits move the 2θ map by far less than any real uncertainty.
    ai = pyFAI.load(str(tmp_path / "cal.poni"))
    assert np.abs(_tth(ai) - _tth(calibration_to_integrator(back))).max() <= 1e-11
