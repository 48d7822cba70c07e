"""Nika geometry -> calibration, checked against Nika's own tilt model through pyFAI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from saxsdog.errors import CalibrationError
from saxsdog.io.fit2d import default_calibration
from saxsdog.io.nika import (
    NikaError,
    nika_tilts_to_fit2d,
    nika_to_calibration,
    parse_nika,
    read_nika_file,
)

pytest.importorskip("pyFAI")
from saxsdog.io.poni import calibration_to_integrator  # noqa: E402

BCX, BCY, SDD, PIXEL_MM = 412.3, 250.7, 300.0, 0.172


def _values(horizontal: float = 0.0, vertical: float = 0.0) -> dict[str, float]:
    return {"BeamCenterX": BCX, "BeamCenterY": BCY, "SampleToCCDDistance": SDD, "Wavelength": 1.0,
            "PixelSizeX": PIXEL_MM, "PixelSizeY": PIXEL_MM, "HorizontalTilt": horizontal,
            "VerticalTilt": vertical}


def _template(rows: int = 600, cols: int = 800) -> dict:
    cal = default_calibration()
    cal["Geometry"]["Imagesize"] = [rows, cols]
    return cal


def _nika_rotation(horizontal_deg: float, vertical_deg: float) -> np.ndarray:
    """Nika's detector rotation: Rodrigues, rotation vector (VerticalTilt, HorizontalTilt, 0)."""
    vector = np.radians([vertical_deg, horizontal_deg, 0.0])
    angle = np.linalg.norm(vector)
    if angle == 0:
        return np.eye(3)
    k = vector / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _nika_ring_pixel(two_theta: float, direction: float, horizontal: float, vertical: float) -> tuple[float, float]:
    """Where Nika puts a ring (NI2T_CalculatePxPyWithTilts): (column, row) in pixels."""
    xyz = _nika_rotation(horizontal, vertical) @ np.array([math.cos(direction), math.sin(direction), 0.0])
    gamma = math.pi - math.acos(xyz[2] / np.linalg.norm(xyz))
    radius = SDD / PIXEL_MM * math.sin(two_theta) / math.sin(math.pi - two_theta - gamma)
    return BCX + radius * math.cos(direction), BCY + radius * math.sin(direction)


def _nika_two_theta_map(shape: tuple[int, int], horizontal: float, vertical: float) -> np.ndarray:
    """2θ of every pixel centre (integer indices) in Nika's model, from the sample-to-pixel vector."""
    rows, cols = np.indices(shape, dtype=float)
    in_plane = np.stack([(cols - BCX) * PIXEL_MM, (rows - BCY) * PIXEL_MM, np.zeros(shape)], axis=-1)
    lab = in_plane @ _nika_rotation(horizontal, vertical).T
    lab[..., 2] += SDD  # sample at (0, 0, -SDD), beam along +z
    return np.arctan2(np.hypot(lab[..., 0], lab[..., 1]), lab[..., 2])


def test_zero_tilts_map_exactly() -> None:
    cal = nika_to_calibration(_values(), _template(rows=600))
    geo = cal["Geometry"]
    assert geo["Tilt"] == {"TiltAngleDeg": 0.0, "TiltRotDeg": 0.0}
    assert geo["BeamCenter"] == [600 - (BCY + 0.5), BCX + 0.5]
    assert geo["DedectorDistanceMM"] == SDD
    assert geo["PixelSizeMicroM"] == [172.0, 172.0]
    assert cal["Wavelength"] == 1.0
    assert nika_tilts_to_fit2d(0.0, 0.0) == (0.0, 0.0)


def test_zero_tilt_two_theta_map_matches_flat_detector() -> None:
    shape = (600, 800)
    ai = calibration_to_integrator(nika_to_calibration(_values(), _template(*shape)))
    diff = ai.center_array(unit="2th_rad") - _nika_two_theta_map(shape, 0.0, 0.0)
    assert np.abs(diff).max() <= 1e-12


@pytest.mark.parametrize(("horizontal", "vertical"), [(3.0, 0.0), (0.0, 3.0), (2.5, -4.0), (-8.97, 8.974),
                                                      (0.037, 0.088), (-1.0, -0.5)])
def test_tilted_rings_land_where_nika_puts_them(horizontal: float, vertical: float) -> None:
    ai = calibration_to_integrator(nika_to_calibration(_values(horizontal, vertical), _template()))
    worst = 0.0
    for two_theta in np.radians([1.0, 5.0, 12.0, 25.0]):
        for direction in np.linspace(0.0, 2 * np.pi, 16, endpoint=False):
            col, row = _nika_ring_pixel(two_theta, direction, horizontal, vertical)
            # pyFAI's tth() takes pixel indices, like Nika's integer pixel centres.
            worst = max(worst, abs(ai.tth(np.array([row]), np.array([col]))[0] - two_theta))
    assert worst <= 1e-9


def test_tilted_two_theta_map_matches_nika_model() -> None:
    shape = (300, 500)
    horizontal, vertical = 4.0, -2.5
    ai = calibration_to_integrator(nika_to_calibration(_values(horizontal, vertical), _template(*shape)))
    diff = ai.center_array(unit="2th_rad") - _nika_two_theta_map(shape, horizontal, vertical)
    assert np.abs(diff).max() <= 1e-9


def test_tilt_conversion_values() -> None:
    assert nika_tilts_to_fit2d(3.0, 0.0) == (3.0, 180.0)
    angle, rotation = nika_tilts_to_fit2d(0.0, 3.0)
    assert (angle, rotation) == (3.0, pytest.approx(-90.0, abs=1e-12))
    angle, rotation = nika_tilts_to_fit2d(3.0, 4.0)
    assert angle == pytest.approx(5.0) and -180.0 < rotation <= 180.0


def test_parse_wave_note_text_ignores_other_keys() -> None:
    note = ("BeamCenterX=512.5;BeamCenterY=20;SampleToCCDDistance=1000;XrayEnergy=8.0;PixelSize=0.1;"
            "HorizontalTilt=0.1;VerticalTilt=-0.2;UserSampleName=buffer;\n# a comment\n")
    values = parse_nika(note)
    assert values == {"BeamCenterX": 512.5, "BeamCenterY": 20.0, "SampleToCCDDistance": 1000.0,
                      "XrayEnergy": 8.0, "PixelSizeX": 0.1, "PixelSizeY": 0.1,
                      "HorizontalTilt": 0.1, "VerticalTilt": -0.2}
    cal = nika_to_calibration(note)
    assert cal["Wavelength"] == pytest.approx(12.398419843320026 / 8.0)
    assert cal["Geometry"]["PixelSizeMicroM"] == [100.0, 100.0]


def test_short_keys_and_file(tmp_path: Path) -> None:
    path = tmp_path / "nika.txt"
    path.write_text("bcx: 10\nbcy: 20\nsdd: 500\nhor_tilt = 1\n")
    assert read_nika_file(path) == {"BeamCenterX": 10.0, "BeamCenterY": 20.0, "SampleToCCDDistance": 500.0,
                                    "HorizontalTilt": 1.0}
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    with pytest.raises(NikaError, match="no Nika parameters"):
        read_nika_file(empty)
    with pytest.raises(NikaError, match="cannot read"):
        read_nika_file(tmp_path / "absent.txt")


@pytest.mark.parametrize(("values", "message"), [
    (["BeamCenterX=1", "BeamCenterY=2"], "missing Nika parameter.*SampleToCCDDistance"),
    (["BeamCenterX=1", "BeamCenterY=2", "SDD=abc"], "SDD: not a number"),
    (["BeamCenterX=1", "BeamCenterY=2", "SDD=5", "Colour=3"], "unknown Nika parameter 'Colour'"),
    (["BeamCenterX=1", "BeamCenterY=2", "SDD=5", "justtext"], "expected KEY=VALUE"),
    (["BeamCenterX=1", "BeamCenterY=2", "SDD=0"], "SampleToCCDDistance must be positive"),
])
def test_bad_values_are_named(values: list[str], message: str) -> None:
    with pytest.raises(NikaError, match=message):
        nika_to_calibration(values)


def test_template_without_image_size_is_refused() -> None:
    template = default_calibration()
    del template["Geometry"]["Imagesize"]
    with pytest.raises(CalibrationError, match="Imagesize"):
        nika_to_calibration(_values(), template)


def test_template_in_either_spelling_gives_the_same_geometry() -> None:
    # the image size is read through saxsdog.config, whichever spelling the template uses
    original = _template(rows=600)
    modern = _template(rows=600)
    g = modern["Geometry"]
    g["DetectorDistanceMM"], g["ImageSize"] = g.pop("DedectorDistanceMM"), g.pop("Imagesize")
    a = nika_to_calibration(_values(1.0, 2.0), original)["Geometry"]
    b = nika_to_calibration(_values(1.0, 2.0), modern)["Geometry"]
    assert b["BeamCenter"] == a["BeamCenter"] == [600 - (BCY + 0.5), BCX + 0.5]
    assert b["DetectorDistanceMM"] == a["DedectorDistanceMM"] == SDD and b["Tilt"] == a["Tilt"]


def test_malformed_template_image_size_is_named_as_written() -> None:
    modern = _template()
    modern["Geometry"]["ImageSize"] = modern["Geometry"].pop("Imagesize")
    modern["Geometry"]["ImageSize"] = [600, -1]
    with pytest.raises(CalibrationError) as info:
        nika_to_calibration(_values(), modern)
    assert info.value.path == "$.Geometry.ImageSize"
    del modern["Geometry"]["ImageSize"]
    with pytest.raises(CalibrationError) as info:
        nika_to_calibration(_values(), modern)
    assert info.value.path == "$.Geometry.Imagesize"  # missing: named as the original's manual does
