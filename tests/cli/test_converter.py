"""The saxsconverter command, run in-process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from saxsdog.cli.converter import main

FIT2D_INFO = """\
INFO: Refined Beam centre =      387.772     808.370 (pixels)
INFO: Refined Beam centre =       66.697     139.040 (mm)
INFO: Refined sample to detector distance =     1031.657 mm
INFO: Refined wavelength =      1.54000 Angstroms
INFO: Refined tilt plane rotation angle =       73.569 degrees
INFO: Refined tilt angle =       -0.560 degrees
"""


@pytest.fixture
def info_file(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.txt"
    path.write_text(FIT2D_INFO)
    return path


@pytest.fixture
def cal_json_path(data_dir: Path) -> Path:
    return data_dir / "cal.json"


def _geometry(path: Path) -> dict:
    return json.loads(path.read_text())["Geometry"]


def test_fit2d_text_to_json_file(tmp_path: Path, info_file: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.json"
    assert main([str(info_file), "-o", str(out)]) == 0
    cal = json.loads(out.read_text())
    assert cal["Geometry"]["BeamCenter"] == [808.37, 387.772]
    assert cal["Geometry"]["Tilt"] == {"TiltAngleDeg": -0.56, "TiltRotDeg": 73.569}
    assert cal["Geometry"]["DedectorDistanceMM"] == 1031.657
    assert cal["Wavelength"] == 1.54
    err = capsys.readouterr().err
    assert f"wrote {out}" in err and "no template given" in err


def test_positional_output_and_template(tmp_path: Path, info_file: Path, cal_json_path: Path) -> None:
    out = tmp_path / "out.json"
    assert main(["-q", "-t", str(cal_json_path), str(info_file), str(out)]) == 0
    reference = json.loads(cal_json_path.read_text())
    assert json.loads(out.read_text()) == reference  # the text holds exactly cal.json's geometry


def test_existing_output_serves_as_template(tmp_path: Path, info_file: Path) -> None:
    out = tmp_path / "out.json"
    existing = {"Title": "keep me", "Geometry": {"BeamCenter": [1.0, 2.0], "DedectorDistanceMM": 5.0,
                                                  "PixelSizeMicroM": [75.0], "Imagesize": [100, 200]},
                "Masks": [{"MaskFile": "x.msk"}], "Wavelength": 1.0}
    out.write_text(json.dumps(existing))
    assert main(["-q", str(info_file), str(out)]) == 0
    cal = json.loads(out.read_text())
    assert cal["Title"] == "keep me" and cal["Masks"] == [{"MaskFile": "x.msk"}]
    assert cal["Geometry"]["Imagesize"] == [100, 200] and cal["Geometry"]["PixelSizeMicroM"] == [75.0]
    assert cal["Geometry"]["BeamCenter"] == [808.37, 387.772]


def test_older_calibration_json_input(tmp_path: Path, cal_json_path: Path) -> None:
    old = tmp_path / "old.saxsconf"
    old.write_text(json.dumps({"Geometry": {"DetectorDistanceMM": 900.0}, "Wavelength": 1.2, "Threads": 4}))
    out = tmp_path / "new.json"
    assert main(["-q", "-t", str(cal_json_path), str(old), str(out)]) == 0
    cal = json.loads(out.read_text())
    assert cal["Geometry"]["DedectorDistanceMM"] == 900.0 and "DetectorDistanceMM" not in cal["Geometry"]
    assert (cal["Wavelength"], cal["Threads"]) == (1.2, 4)
    assert cal["Masks"] == json.loads(cal_json_path.read_text())["Masks"]


def test_defaulted_fields_are_named_as_the_template_spells_them(tmp_path: Path, info_file: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    # The fields taken from the default are named as the written file spells them.
    assert main([str(info_file), str(tmp_path / "new.json")]) == 0
    err = capsys.readouterr().err
    assert "no template given: Geometry.Imagesize, Geometry.PixelSizeMicroM, Masks taken" in err
    written = json.loads((tmp_path / "new.json").read_text())["Geometry"]
    assert "Imagesize" in written and "DedectorDistanceMM" in written
    # A calibration JSON in saxsdog's spellings counts as giving those fields.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"Geometry": {"DetectorDistanceMM": 900.0, "ImageSize": [10, 20]}}))
    assert main([str(old), str(tmp_path / "from-old.json")]) == 0
    err = capsys.readouterr().err
    assert "no template given: Geometry.PixelSizeMicroM, Wavelength, Masks taken" in err
    written = json.loads((tmp_path / "from-old.json").read_text())["Geometry"]
    assert (written["DedectorDistanceMM"], written["Imagesize"]) == (900.0, [10, 20])


def test_prints_json_without_output(info_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["-q", str(info_file)]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["Geometry"]["BeamCenter"] == [808.37, 387.772]


def test_nika_pairs_and_file(tmp_path: Path) -> None:
    out = tmp_path / "nika.json"
    nika_file = tmp_path / "nika.txt"
    nika_file.write_text("BeamCenterX=100;BeamCenterY=200;SampleToCCDDistance=750\n")
    assert main(["-q", "--nika", str(nika_file), "PixelSize=0.1", "Wavelength=1.3", "-o", str(out)]) == 0
    cal = json.loads(out.read_text())
    rows = cal["Geometry"]["Imagesize"][0]
    assert cal["Geometry"]["BeamCenter"] == [rows - 200.5, 100.5]
    assert cal["Geometry"]["PixelSizeMicroM"] == [100.0, 100.0]
    assert cal["Geometry"]["DedectorDistanceMM"] == 750.0 and cal["Wavelength"] == 1.3


@pytest.mark.slow
def test_poni_export_and_import(tmp_path: Path, cal_json_path: Path) -> None:
    pytest.importorskip("pyFAI")
    poni = tmp_path / "cal.poni"
    assert main(["-q", "-t", str(cal_json_path), "--to-poni", str(poni)]) == 0
    assert "Detector_config" in poni.read_text()
    out = tmp_path / "back.json"
    # "--from-poni FILE OUT" takes the lone positional as the output.
    assert main(["-q", "--from-poni", str(poni), "-t", str(cal_json_path), str(out)]) == 0
    back, reference = _geometry(out), _geometry(cal_json_path)
    assert back["Imagesize"] == reference["Imagesize"]
    for key, expected in (("BeamCenter", reference["BeamCenter"]),
                          ("PixelSizeMicroM", reference["PixelSizeMicroM"])):
        assert back[key] == pytest.approx(expected, abs=1e-9)
    assert back["DedectorDistanceMM"] == pytest.approx(reference["DedectorDistanceMM"], abs=1e-9)
    for key in ("TiltAngleDeg", "TiltRotDeg"):
        assert back["Tilt"][key] == pytest.approx(reference["Tilt"][key], abs=1e-9)


def test_help_lists_options(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--template", "--output", "--nika", "--from-poni", "--to-poni"):
        assert option in text


@pytest.mark.parametrize(("content", "message"), [
    ("this is no calibration\n", "no FIT2D calibration values found"),
    ("INFO: Refined sample to detector distance = -3 mm\n", "must be positive"),
    ("[1, 2, 3]\n", "JSON but not a calibration object"),
    ('{"Geometry": {"BeamCenter": "middle"}}', r"\$\.Geometry\.BeamCenter"),
])
def test_malformed_input_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    content: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    assert main([str(path), "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saxsconverter: error: ")
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.txt"], "input missing.txt: no such file"),
    (["-t", "missing.json", "x.txt"], "template missing.json: no such file"),
    ([], "nothing to convert"),
    (["--from-poni", "missing.poni", "-o", "o.json"], "missing.poni: no such file"),
    (["--nika", "BeamCenterX=1", "--from-poni", "a.poni"], "give only one input"),
    (["a.txt", "b.json", "-o", "c.json"], "two different outputs"),
])
def test_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                             argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_invalid_template_json_exits_2(tmp_path: Path, info_file: Path, capsys: pytest.CaptureFixture) -> None:
    template = tmp_path / "t.json"
    template.write_text("{not json")
    assert main([str(info_file), "-t", str(template)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_invalid_template_calibration_exits_2(tmp_path: Path, info_file: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"Geometry": {"Imagesize": [10, 10], "PixelSizeMicroM": [100.0]},
                                    "Masks": [], "Wavelength": 1.0, "Threads": 0}))
    assert main([str(info_file), "-t", str(template), "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "$.Threads" in err and "Traceback" not in err
    assert not (tmp_path / "o.json").exists()


def test_unknown_option_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["--no-such-option"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


BEST_FIT_LOG = """\
INFO: SOLUTION 2
INFO: Best fit beam centre (X/Y mm) = 66.78356 138.9544
INFO: Best fit beam centre (X/Y pixels) = 388.2765 807.8745
INFO: Cone 1 best fit 2 theta angle (degrees) = 1.392646
INFO: Best fit angle of tilt plane rotation (degrees) = 73.59509
INFO: Best fit angle of tilt (degrees) = -10.00601
INFO: Estimated coordinate radial position error (mm) = 0.7136476E-02
"""


def _converter(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "saxsdog.cli.converter", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_best_fit_log_of_the_manual_as_a_user_runs_it(tmp_path: Path, cal_json_path: Path) -> None:
    log = tmp_path / "fit2d.log"
    log.write_text(BEST_FIT_LOG)
    out = tmp_path / "cal.json"
    r = _converter("-t", cal_json_path, log, out)
    assert r.returncode == 0, r.stderr
    geometry = _geometry(out)
    assert geometry["BeamCenter"] == [807.8745, 388.2765]
    assert geometry["Tilt"] == {"TiltAngleDeg": -10.00601, "TiltRotDeg": 73.59509}
    assert "no template" not in r.stderr


@pytest.mark.slow
def test_no_template_warning_only_for_fields_taken_from_the_default(tmp_path: Path, cal_json_path: Path,
                                                                   info_file: Path) -> None:
    # A full calibration as INPUT needs no template: nothing to warn about.
    r = _converter(cal_json_path, tmp_path / "copy.json")
    assert r.returncode == 0, r.stderr
    assert "no template" not in r.stderr
    assert _geometry(tmp_path / "copy.json") == _geometry(cal_json_path)
    # FIT2D text gives no image size, pixel size or masks: those are named.
    r = _converter(info_file, tmp_path / "new.json")
    assert r.returncode == 0
    assert ("no template given: Geometry.Imagesize, Geometry.PixelSizeMicroM, Masks taken from the default "
            "calibration") in r.stderr
    # The Best fit log has no distance either; a default of 1000 mm must not pass silently.
    log = tmp_path / "fit2d.log"
    log.write_text(BEST_FIT_LOG)
    r = _converter(log, tmp_path / "bf.json")
    assert "Geometry.DedectorDistanceMM" in r.stderr


@pytest.mark.slow
def test_poni_import_keeps_the_digits_of_the_input(tmp_path: Path, cal_json_path: Path) -> None:
    pytest.importorskip("pyFAI")
    poni = tmp_path / "cal.poni"
    assert _converter("-q", "-t", cal_json_path, "--to-poni", poni).returncode == 0
    out = tmp_path / "back.json"
    r = _converter("--from-poni", poni, "-t", cal_json_path, out)
    assert r.returncode == 0, r.stderr
    # Exactly the numbers of cal.json, not -0.5600000000003951 or 387.77199999985385.
    assert _geometry(out) == _geometry(cal_json_path)
    assert "-0.56," in out.read_text() and "0000000" not in out.read_text()
