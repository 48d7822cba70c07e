"""FIT2D calibration text -> calibration dictionary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saxsdog.calibration import validate_calibration
from saxsdog.errors import CalibrationError
from saxsdog.io.fit2d import (
    CalibrationGeometry,
    Fit2DParseError,
    default_calibration,
    fit2d_to_calibration,
    merge_calibration,
    parse_fit2d,
    update_geometry,
)

#: What FIT2D printed after calibrating the geometry of data/cal.json (the original's
#: calibration.txt), including lines that must be ignored.
FIT2D_INFO = """\
INFO: Calculating centre of gravity coordinates on powder rings
INFO: Ring  1, Number of coordinates =  74
INFO: Number of function calls =       7
INFO: Sum of squares =    0.77519
INFO: Refined Beam centre =      387.772     808.370 (pixels)
INFO: Refined Beam centre =       66.697     139.040 (mm)
INFO: Refined sample to detector distance =     1031.657 mm
INFO: Refined wavelength =      1.54000 Angstroms
      Energy (keV) =      8.05099
INFO: Refined tilt plane rotation angle =       73.569 degrees
INFO: Refined tilt angle =       -0.560 degrees
INFO: ROT X =       -0.158   ROT Y =       -0.537 degrees
INFO: Stability indicator (proportional to D-spacing; Angstroms) =   15.94336
"""

#: The integration part of a FIT2D macro (keyword line, value line).
FIT2D_MACRO = """\
POWDER DIFFRACTION (2-D)
INTEGRATE
X-PIXEL SIZE
172.0000
Y-PIXEL SIZE
150.0000
DISTANCE
1031.657
WAVELENGTH
1.54
X-BEAM CENTRE
387.772
Y-BEAM CENTRE
 808.370
TILT ROTATION
73.569
ANGLE OF TILT
-0.560
O.K.
"""


def test_parse_info_lines() -> None:
    assert parse_fit2d(FIT2D_INFO) == {
        "beam_x": 387.772,
        "beam_y": 808.37,
        "distance_mm": 1031.657,
        "wavelength_A": 1.54,
        "tilt_rot_deg": 73.569,
        "tilt_angle_deg": -0.56,
    }


def test_parse_macro_with_pixel_sizes() -> None:
    values = parse_fit2d(FIT2D_MACRO)
    assert values == {
        "pixel_h_um": 172.0,
        "pixel_v_um": 150.0,
        "distance_mm": 1031.657,
        "wavelength_A": 1.54,
        "beam_x": 387.772,
        "beam_y": 808.37,
        "tilt_rot_deg": 73.569,
        "tilt_angle_deg": -0.56,
    }


def test_last_refinement_wins_and_refined_is_optional() -> None:
    text = FIT2D_INFO + "INFO: Beam centre = 400.5 800.25 (pixels)\nINFO: Tilt angle = 0.25 degrees\n"
    values = parse_fit2d(text)
    assert (values["beam_x"], values["beam_y"], values["tilt_angle_deg"]) == (400.5, 800.25, 0.25)
    assert values["tilt_rot_deg"] == 73.569


def test_info_text_gives_the_geometry_of_cal_json(data_dir: Path) -> None:
    reference = json.loads((data_dir / "cal.json").read_text())
    result = fit2d_to_calibration(FIT2D_INFO, reference)
    assert result["Geometry"] == reference["Geometry"]
    assert result["Wavelength"] == reference["Wavelength"]
    # Into the default template: same geometry, FIT2D's numbers copied unchanged.
    fresh = fit2d_to_calibration(FIT2D_INFO)
    assert fresh["Geometry"]["BeamCenter"] == [808.37, 387.772]
    assert fresh["Geometry"]["Tilt"] == {"TiltAngleDeg": -0.56, "TiltRotDeg": 73.569}
    assert fresh["Geometry"]["DedectorDistanceMM"] == 1031.657
    assert fresh["Wavelength"] == 1.54
    assert fresh["Masks"] == []


def test_template_is_kept_and_not_modified() -> None:
    template = {
        "Title": "mine",
        "Geometry": {
            "Tilt": {"TiltAngleDeg": 1.0, "TiltRotDeg": 2.0},
            "DetectorDistanceMM": 500.0,
            "BeamCenter": [10.0, 20.0],
            "ImageSize": [100, 200],
            "PixelSizeMicroM": [75.0],
        },
        "Masks": [{"MaskFile": "m.msk", "Oversampling": 2}],
        "Wavelength": 1.0,
    }
    before = json.dumps(template, sort_keys=True)
    result = fit2d_to_calibration(FIT2D_INFO, template)
    assert json.dumps(template, sort_keys=True) == before
    geo = result["Geometry"]
    # The template's spellings are kept, and never doubled.
    assert geo["DetectorDistanceMM"] == 1031.657 and "DedectorDistanceMM" not in geo
    assert geo["ImageSize"] == [100, 200] and "Imagesize" not in geo
    assert geo["PixelSizeMicroM"] == [75.0]  # no pixel size in the text: unchanged
    assert result["Masks"] == template["Masks"] and result["Title"] == "mine"


def test_pixel_sizes_from_macro_replace_single_value() -> None:
    template = default_calibration()
    template["Geometry"]["PixelSizeMicroM"] = [100.0]
    result = fit2d_to_calibration(FIT2D_MACRO, template)
    assert result["Geometry"]["PixelSizeMicroM"] == [150.0, 172.0]  # [vertical, horizontal]


def test_text_without_values_is_rejected() -> None:
    with pytest.raises(Fit2DParseError, match="no FIT2D calibration values found"):
        parse_fit2d("just some text\nwith = numbers 1 2 3\n")


def test_non_positive_distance_is_rejected_with_line_number() -> None:
    text = FIT2D_INFO.replace("1031.657 mm", "-5 mm")
    with pytest.raises(Fit2DParseError, match=r"line 7: sample to detector distance .* must be positive"):
        parse_fit2d(text)


def test_lone_beam_centre_coordinate_needs_template() -> None:
    template = default_calibration()
    del template["Geometry"]["BeamCenter"]
    with pytest.raises(CalibrationError, match="BeamCenter"):
        fit2d_to_calibration("X-BEAM CENTRE\n12.5\n", template)
    completed = fit2d_to_calibration("X-BEAM CENTRE\n12.5\n")
    assert completed["Geometry"]["BeamCenter"] == [800.0, 12.5]


def test_calibration_geometry_reads_aliases_and_single_pixel() -> None:
    cal = {"Geometry": {"BeamCenter": [1, 2], "DetectorDistanceMM": 3, "PixelSizeMicroM": [4],
                        "ImageSize": [5, 6]}, "Wavelength": 7}
    g = CalibrationGeometry.from_calibration(cal)
    assert (g.beam_y, g.beam_x, g.distance_mm, g.pixel_v_um, g.pixel_h_um, g.rows, g.cols, g.wavelength_A) \
        == (1, 2, 3, 4, 4, 5, 6, 7)
    assert (g.tilt_angle_deg, g.tilt_rot_deg) == (0.0, 0.0)


@pytest.mark.parametrize(("geometry", "path"), [
    ({"BeamCenter": [1.0], "DedectorDistanceMM": 1, "PixelSizeMicroM": [1]}, r"\$\.Geometry\.BeamCenter"),
    ({"BeamCenter": [1, "x"], "DedectorDistanceMM": 1, "PixelSizeMicroM": [1]}, r"\$\.Geometry\.BeamCenter\[1\]"),
    ({"BeamCenter": [1, 2], "PixelSizeMicroM": [1]}, r"\$\.Geometry\.DedectorDistanceMM"),
    ({"BeamCenter": [1, 2], "DedectorDistanceMM": 0, "PixelSizeMicroM": [1]}, r"\$\.Geometry\.DedectorDistanceMM"),
    ({"BeamCenter": [1, 2], "DedectorDistanceMM": 1, "PixelSizeMicroM": [1], "Imagesize": [10.5, 3]},
     r"\$\.Geometry\.Imagesize"),
])
def test_calibration_geometry_errors_name_the_path(geometry: dict, path: str) -> None:
    with pytest.raises(CalibrationError, match=path):
        CalibrationGeometry.from_calibration({"Geometry": geometry})


def test_update_geometry_round_trips_through_the_dataclass() -> None:
    g = CalibrationGeometry(beam_x=1.5, beam_y=2.5, distance_mm=3.5, pixel_v_um=4.5, pixel_h_um=5.5,
                            tilt_angle_deg=-6.5, tilt_rot_deg=7.5, rows=8, cols=9, wavelength_A=1.25)
    assert CalibrationGeometry.from_calibration(g.apply_to({})) == g
    assert CalibrationGeometry.from_calibration(update_geometry(default_calibration(), g.as_dict())) == g


def test_merge_calibration_maps_spellings_and_replaces_lists() -> None:
    template = default_calibration()
    template["Masks"] = [{"MaskFile": "a.msk"}]
    old = {"Geometry": {"DetectorDistanceMM": 222.0, "ImageSize": [10, 20]}, "Masks": [{"MaskFile": "b.msk"}]}
    merged = merge_calibration(template, old)
    assert merged["Geometry"]["DedectorDistanceMM"] == 222.0 and "DetectorDistanceMM" not in merged["Geometry"]
    assert merged["Geometry"]["Imagesize"] == [10, 20] and "ImageSize" not in merged["Geometry"]
    assert merged["Geometry"]["BeamCenter"] == template["Geometry"]["BeamCenter"]
    assert merged["Masks"] == [{"MaskFile": "b.msk"}]
    assert template["Masks"] == [{"MaskFile": "a.msk"}]


def test_default_calibration_and_results_are_valid_calibrations() -> None:
    validate_calibration(default_calibration())
    validate_calibration(fit2d_to_calibration(FIT2D_MACRO))
    validate_calibration(fit2d_to_calibration(FIT2D_INFO))


#: FIT2D's calibrant fit as the original SAXSDOG manual shows it (a -10 degree tilt test).
BEST_FIT_LOG = """\
INFO: SOLUTION 2
INFO: Best fit beam centre (X/Y mm) = 66.78356 138.9544
INFO: Best fit beam centre (X/Y pixels) = 388.2765 807.8745
INFO: Cone 1 best fit 2 theta angle (degrees) = 1.392646
INFO: Cone 2 best fit 2 theta angle (degrees) = 2.780810
INFO: Cone 3 best fit 2 theta angle (degrees) = 4.168858
INFO: Cone 4 best fit 2 theta angle (degrees) = 5.556975
INFO: Cone 5 best fit 2 theta angle (degrees) = 6.944765
INFO: Best fit angle of tilt plane rotation (degrees) = 73.59509
INFO: Best fit angle of tilt (degrees) = -10.00601
INFO: Estimated coordinate radial position error (mm) = 0.7136476E-02
INFO: Estimated coordinate radial position error (X pixels) = 0.4149114E-01
"""


def test_best_fit_log_of_the_manual() -> None:
    # The mm beam centre, the cone angles and the error estimates are not geometry values.
    assert parse_fit2d(BEST_FIT_LOG) == {"beam_x": 388.2765, "beam_y": 807.8745,
                                         "tilt_rot_deg": 73.59509, "tilt_angle_deg": -10.00601}


def test_best_fit_log_into_cal_json(data_dir: Path) -> None:
    template = json.loads((data_dir / "cal.json").read_text())
    cal = fit2d_to_calibration(BEST_FIT_LOG, template)
    geometry = cal["Geometry"]
    assert geometry["BeamCenter"] == [807.8745, 388.2765]  # [Y, X]
    assert geometry["Tilt"] == {"TiltAngleDeg": -10.00601, "TiltRotDeg": 73.59509}
    assert geometry["DedectorDistanceMM"] == 1031.657  # not in the log: the template's
    validate_calibration(cal)


def test_best_fit_lines_with_units_in_parentheses_and_later_solutions() -> None:
    text = BEST_FIT_LOG + (
        "INFO: SOLUTION 3\n"
        "INFO: Best fit beam centre (X/Y pixels) = 388.5 807.5\n"
        "INFO: Best fit sample to detector distance (mm) = 1030.25\n"
        "INFO: Best fit wavelength (Angstroms) = 1.54987\n")
    values = parse_fit2d(text)
    assert (values["beam_x"], values["beam_y"]) == (388.5, 807.5)
    assert values["distance_mm"] == 1030.25 and values["wavelength_A"] == 1.54987


def test_mixed_spellings_of_a_template_are_each_kept_in_place() -> None:
    # Each field keeps the template's own spelling and position, whichever spelling the
    # other field of the template and the merged data use (saxsdog.config decides).
    template = {"Geometry": {"DetectorDistanceMM": 500.0, "BeamCenter": [10.0, 20.0], "Imagesize": [100, 200],
                             "PixelSizeMicroM": [75.0]}, "Masks": [], "Wavelength": 1.0}
    updated = update_geometry(template, {"distance_mm": 600.0, "rows": 300, "cols": 400})
    assert list(updated["Geometry"]) == list(template["Geometry"])
    assert updated["Geometry"]["DetectorDistanceMM"] == 600.0 and updated["Geometry"]["Imagesize"] == [300, 400]
    merged = merge_calibration(template, {"Geometry": {"DedectorDistanceMM": 7.0, "ImageSize": [3, 4]}})
    assert list(merged["Geometry"]) == list(template["Geometry"])
    assert merged["Geometry"]["DetectorDistanceMM"] == 7.0 and merged["Geometry"]["Imagesize"] == [3, 4]
    # A field the template lacks keeps the data's spelling.
    bare = {"Geometry": {"BeamCenter": [1.0, 2.0]}}
    assert "ImageSize" in merge_calibration(bare, {"Geometry": {"ImageSize": [3, 4]}})["Geometry"]
    validate_calibration(updated)
    validate_calibration(merged)


def test_error_paths_are_spelled_as_in_the_calibration() -> None:
    modern = {"BeamCenter": [1, 2], "DetectorDistanceMM": -1, "PixelSizeMicroM": [1], "ImageSize": [4, 5]}
    with pytest.raises(CalibrationError) as info:
        CalibrationGeometry.from_calibration({"Geometry": modern})
    assert info.value.path == "$.Geometry.DetectorDistanceMM"
    modern.update(DetectorDistanceMM=1, ImageSize=[4, 0.5])
    with pytest.raises(CalibrationError) as info:
        CalibrationGeometry.from_calibration({"Geometry": modern})
    assert info.value.path == "$.Geometry.ImageSize"
    with pytest.raises(CalibrationError) as info:  # no image size: named as the original's manual does
        CalibrationGeometry(beam_x=1, beam_y=2, distance_mm=3, pixel_v_um=4, pixel_h_um=4).pyfai_fit2d()
    assert info.value.path == "$.Geometry.Imagesize"
    with pytest.raises(CalibrationError) as info:
        update_geometry({"Geometry": {"ImageSize": [1]}}, {"rows": 5})
    assert info.value.path == "$.Geometry.ImageSize"


def test_default_template_is_written_in_the_original_spellings() -> None:
    template = default_calibration()
    assert list(template["Geometry"]) == ["Tilt", "DedectorDistanceMM", "BeamCenter", "Imagesize",
                                          "PixelSizeMicroM"]
    assert "Version" not in template
    assert default_calibration() is not default_calibration()  # a fresh copy each time
    template["Geometry"]["BeamCenter"][0] = -1.0
    assert default_calibration()["Geometry"]["BeamCenter"] == [800.0, 400.0]
