"""``saxsdog absolute``, in-process: report, calibration written, plot, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saxsdog.cli import absolute
from saxsdog.cli.saxsdog import main as saxsdog_main
from saxsdog.io.chi import write_chi
from saxsdog.reduction.absolute import WATER_20C_PER_CM, water_cross_section
from saxsdog.testing import small_calibration


@pytest.fixture
def cal_file(tmp_path: Path) -> Path:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(small_calibration()))
    return path


def _water_chi(path: Path, level: float, calibration: dict | None = None) -> Path:
    q = np.linspace(0.1, 2.0, 200)
    rng = np.random.default_rng(1)
    intensity = level * (1.0 + 0.002 * rng.standard_normal(q.size))
    write_chi(path, [q, intensity, np.full(q.size, 0.002 * level)], calibration)
    return path


def _load(path: Path):
    from saxsdog.calibration import Calibration

    return Calibration(path, cache=False)


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        saxsdog_main(["absolute", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: saxsdog absolute" in text and "Examples:" in text
    assert "--standard water" in text and "--reference SRM3600.csv" in text


def test_water_curve_writes_a_calibration_that_loads(tmp_path: Path, cal_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    curve = _water_chi(tmp_path / "water.chi", 4.0)
    out = tmp_path / "out" / "cal_abs.json"
    out.parent.mkdir()
    assert saxsdog_main(["absolute", str(curve), "--standard", "water", "-c", str(cal_file),
                         "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "factor: 0.00408" in text and "200 points" in text and "χ²/ν" in text
    cal = _load(out)
    assert cal.config["Normalization"]["AbsoluteScale"] == pytest.approx(WATER_20C_PER_CM / 4.0, rel=1e-3)
    assert json.loads(out.read_text())["Version"] == 2
    assert cal.config["Geometry"] == _load(cal_file).config["Geometry"]


def test_factor_multiplies_the_scale_already_applied(tmp_path: Path, cal_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A curve reduced with AbsoluteScale 2 and at 2 % too low: the new scale is 2 / 0.98."""
    header = {**small_calibration(), "Normalization": {"AbsoluteScale": 2.0}}
    curve = _water_chi(tmp_path / "water.chi", 0.98 * WATER_20C_PER_CM, header)
    out = tmp_path / "cal_abs.json"
    assert absolute.main([str(curve), "--standard", "water", "-o", str(out)]) == 0  # header's calibration
    assert "already applied" in capsys.readouterr().out
    assert _load(out).config["Normalization"]["AbsoluteScale"] == pytest.approx(2.0 / 0.98, rel=1e-3)


def test_thickness_rescales_a_curve(tmp_path: Path, cal_file: Path) -> None:
    """A curve normalized without thickness, of 1.5 mm water: divided by 0.15 cm before the fit."""
    curve = _water_chi(tmp_path / "water.chi", 3.0)
    out = tmp_path / "cal_abs.json"
    assert absolute.main([str(curve), "--standard", "water", "--thickness-mm", "1.5", "-c", str(cal_file),
                          "-o", str(out)]) == 0
    assert _load(out).config["Normalization"]["AbsoluteScale"] == pytest.approx(
        WATER_20C_PER_CM * 0.15 / 3.0, rel=1e-3)


def test_water_image_through_the_calibration(tmp_path: Path, cal_file: Path) -> None:
    import tifffile

    level = 5000.0
    image = np.random.default_rng(2).poisson(level, size=(64, 48)).astype(np.int32)
    tif = tmp_path / "water.tif"
    tifffile.imwrite(tif, image)
    out = tmp_path / "cal_abs.json"
    assert absolute.main([str(tif), "--standard", "water", "--temperature", "25", "-c", str(cal_file),
                          "-o", str(out)]) == 0
    scale = _load(out).config["Normalization"]["AbsoluteScale"]
    assert scale == pytest.approx(water_cross_section(25.0) / level, rel=0.005)


def test_reference_fit_and_plot(tmp_path: Path, cal_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    q_ref = np.geomspace(0.05, 3.0, 30)
    table = tmp_path / "gc.dat"
    table.write_text("q[1/nm] I[1/cm]\n" + "".join(f"{a:.6g} {b:.6g}\n" for a, b in zip(q_ref, 5.0 * q_ref ** -3)))
    q = np.linspace(0.1, 2.0, 100)
    curve = tmp_path / "gc.chi"
    write_chi(curve, [q, q ** -3, 0.01 * q ** -3])
    plot = tmp_path / "fit.svg"
    assert absolute.main([str(curve), "--reference", str(table), "-c", str(cal_file), "--plot", str(plot)]) == 0
    assert "factor: 5 ±" in capsys.readouterr().out
    assert plot.read_text().lstrip().startswith("<?xml") and "<svg" in plot.read_text()


def test_plot_without_matplotlib_is_skipped_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import saxsdog.extras

    def missing(module, extra=None, needed_for=None):
        raise saxsdog.extras.MissingExtraError(saxsdog.extras.missing_extra_message(module, extra, needed_for))

    monkeypatch.setattr(saxsdog.extras, "import_optional", missing)
    curve = _water_chi(tmp_path / "water.chi", 4.0)
    assert absolute.main([str(curve), "--standard", "water", "--plot", str(tmp_path / "fit.svg")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'saxsdog[plot]'" in err[0] and "plot is skipped" in err[0]
    assert not (tmp_path / "fit.svg").exists()


@pytest.mark.parametrize("case, code, message", [
    ("no_overlap", 1, "the q ranges do not overlap"),
    ("empty", 1, "empty.chi: the file is empty"),
    ("missing_column", 1, "ref.csv, line 1: missing column"),
    ("image_without_cal", 2, "is an image: give the calibration"),
    ("out_without_cal", 2, "-o needs a calibration"),
    ("bad_temperature", 1, "outside 0–100 °C"),
    ("no_file", 2, "nothere.chi: no such file"),
])
def test_bad_input_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, code: int,
                                message: str) -> None:
    curve = _water_chi(tmp_path / "water.chi", 4.0)
    ref = tmp_path / "ref.csv"
    argv = [str(curve), "--standard", "water"]
    if case == "no_overlap":
        ref.write_text("10,1\n20,1\n")
        argv = [str(curve), "--reference", str(ref)]
    elif case == "empty":
        (tmp_path / "empty.chi").write_text("")
        argv = [str(tmp_path / "empty.chi"), "--standard", "water"]
    elif case == "missing_column":
        ref.write_text("0.1\n0.2\n")
        argv = [str(curve), "--reference", str(ref)]
    elif case == "image_without_cal":
        (tmp_path / "img.tif").write_bytes(b"II*\0")
        argv = [str(tmp_path / "img.tif"), "--standard", "water"]
    elif case == "out_without_cal":
        argv += ["-o", str(tmp_path / "x.json")]
    elif case == "bad_temperature":
        argv += ["--temperature", "120"]
    elif case == "no_file":
        argv = [str(tmp_path / "nothere.chi"), "--standard", "water"]
    assert absolute.main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("saxsdog absolute: error: ") and message in err
    assert not (tmp_path / "x.json").exists()


def test_console_command(tmp_path: Path) -> None:
    """``saxsdog absolute`` through the console script's entry (a subprocess)."""
    curve = _water_chi(tmp_path / "water.chi", 2.0)
    code = "import sys; from saxsdog.cli.entry import saxsdog; sys.exit(saxsdog())"
    r = subprocess.run([sys.executable, "-c", code, "absolute", str(curve), "--standard", "water"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "factor: 0.00816" in r.stdout


def test_relative_mask_path_still_found_from_another_folder(tmp_path: Path) -> None:
    import tifffile

    (tmp_path / "cal").mkdir()
    tifffile.imwrite(tmp_path / "cal" / "mask.tif", np.full((64, 48), 255, dtype=np.uint8))
    masks = [{"MaskFile": "mask.tif", "Oversampling": 2, "PixelPerRadialElement": 1, "qStart": 0.1, "qStop": 1.0}]
    cal_file = tmp_path / "cal" / "cal.json"
    cal_file.write_text(json.dumps(small_calibration(Masks=masks)))
    curve = _water_chi(tmp_path / "water.chi", 4.0)
    out = tmp_path / "elsewhere" / "cal_abs.json"
    out.parent.mkdir()
    assert absolute.main([str(curve), "--standard", "water", "-c", str(cal_file), "-o", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["Masks"][0]["MaskFile"] == str((tmp_path / "cal" / "mask.tif").resolve())
    assert _load(out).mask(0) is not None


def test_thickness_of_an_imaged_standard(tmp_path: Path, cal_file: Path) -> None:
    import tifffile

    level = 5000.0
    tif = tmp_path / "water.tif"
    tifffile.imwrite(tif, np.random.default_rng(4).poisson(level, size=(64, 48)).astype(np.int32))
    out = tmp_path / "cal_abs.json"
    assert absolute.main([str(tif), "--standard", "water", "--thickness-mm", "1.5", "-c", str(cal_file),
                          "-o", str(out)]) == 0
    assert _load(out).config["Normalization"]["AbsoluteScale"] == pytest.approx(
        WATER_20C_PER_CM * 0.15 / level, rel=0.005)


def test_imaged_water_with_a_normalizing_calibration_then_samples_in_1_per_cm(tmp_path: Path) -> None:
    """A version-2 calibration with solid angle, header exposure time, transmission and
    thickness: the factor from the imaged water puts the water's own curve, reduced with
    the calibration written, at 0.01632 1/cm (in 1/cm/sr in the .chi label)."""
    from datetime import datetime

    from saxsdog.calibration import Calibration
    from saxsdog.io.chi import read_chi
    from saxsdog.testing import write_pilatus_tiff

    raw = small_calibration(Version=2, Corrections={"SolidAngle": True},
                            Normalization={"ExposureTime": "header", "Transmission": 0.5, "ThicknessMM": 1.0})
    cal_path = tmp_path / "cal.json"
    cal_path.write_text(json.dumps(raw))
    omega = Calibration(raw, cache=False).geometry.solid_angle()
    level = 4000.0  # counts per pixel at normal incidence in 10 s
    image = np.random.default_rng(4).poisson(level * omega).astype(np.int32)
    tif = write_pilatus_tiff(tmp_path / "img" / "water.tif", image, datetime(2026, 1, 1), exposure=10.0)
    out = tmp_path / "cal_abs.json"
    assert absolute.main([str(tif), "--standard", "water", "-c", str(cal_path), "-o", str(out)]) == 0
    scale = _load(out).config["Normalization"]["AbsoluteScale"]
    assert scale == pytest.approx(WATER_20C_PER_CM / (level / (10.0 * 0.5 * 0.1)), rel=0.005)
    assert saxsdog_main(["-c", str(out), "-S", "-o", str(tmp_path / "work"), str(tif)]) == 0
    curve = read_chi(tmp_path / "work" / "water.chi")
    assert curve.labels is not None and curve.labels[1] == "Intensity (1/cm/sr)"
    keep = curve.intensity > 0
    assert np.median(curve.intensity[keep]) == pytest.approx(WATER_20C_PER_CM, rel=0.005)
