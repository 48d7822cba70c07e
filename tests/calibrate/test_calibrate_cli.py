"""``saxsdog calibrate``: help, usage errors and exit codes (quick: small synthetic inputs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyFAI")

from saxsdog.cli import calibrate as cli  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "calibrate", *args],
                          capture_output=True, text=True, timeout=300)


def test_help_has_examples():
    text = cli.build_parser().format_help()
    assert "Examples:" in text and "saxsdog calibrate agbeh.tif --calibrant AgBh -o cal.json" in text
    assert "Exit codes" in text


def test_saxsdog_help_mentions_calibrate():
    from saxsdog.cli import saxsdog

    assert "saxsdog calibrate" in saxsdog.build_parser().format_help()


@pytest.mark.slow
def test_saxsdog_dispatches_calibrate():
    run = _run("--help")
    assert run.returncode == 0 and run.stdout.startswith("usage: saxsdog calibrate")


def test_unknown_calibrant_is_a_usage_error(capsys):
    assert cli.main(["x.tif", "--calibrant", "Unobtainium", "-o", "cal.json"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown calibrant 'Unobtainium'" in err and "AgBh" in err


def test_calibrant_list(capsys):
    assert cli.main(["--calibrant", "list"]) == cli.EXIT_OK
    names = capsys.readouterr().out.split()
    assert {"AgBh", "LaB6", "CeO2", "Si"} <= set(names)


def test_missing_image_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.tif"
    assert cli.main([str(missing), "--calibrant", "AgBh", "-o", str(tmp_path / "c.json")]) == cli.EXIT_USAGE
    assert "nope.tif" in capsys.readouterr().err


def test_image_without_rings_exits_1_and_writes_nothing(tmp_path, capsys):
    image = np.random.default_rng(0).poisson(100.0, (200, 180)).astype(np.int32)
    tif = tmp_path / "flat.tif"
    import tifffile

    tifffile.imwrite(tif, image)
    out = tmp_path / "cal.json"
    code = cli.main([str(tif), "--calibrant", "AgBh", "--wavelength", "1.0", "--pixel", "172", "-o", str(out)])
    assert code == cli.EXIT_FIT_FAILED
    assert "no rings found" in capsys.readouterr().err
    assert not out.exists()


def test_pixel_size_and_wavelength_must_be_known(tmp_path, capsys):
    import tifffile

    tif = tmp_path / "plain.tif"
    tifffile.imwrite(tif, np.zeros((64, 64), np.int32))
    assert cli.main([str(tif), "--calibrant", "AgBh", "--wavelength", "1", "-o", str(tmp_path / "c.json")]) == 2
    assert "give --pixel" in capsys.readouterr().err
    assert cli.main([str(tif), "--calibrant", "AgBh", "--pixel", "172", "-o", str(tmp_path / "c.json")]) == 2
    assert "give --wavelength" in capsys.readouterr().err


@pytest.mark.slow
def test_synthetic_image_through_the_command(tmp_path, detector_gaps):
    """The command on a synthetic TIFF: exit 0, the calibration has the geometry, the report is on stdout."""
    import tifffile

    from saxsdog.calibrate import d_spacings
    from saxsdog.calibrate.synthetic import fake_calibrant_image, random_scenarios

    scenario = random_scenarios(20)[18]
    g = scenario.geometry
    tif = tmp_path / "agbh.tif"
    tifffile.imwrite(tif, fake_calibrant_image(g, d_spacings("AgBh")[1], gaps=detector_gaps, seed=2))
    out = tmp_path / "cal.json"
    run = _run(str(tif), "--calibrant", "AgBh", "--wavelength", repr(g.wavelength_A), "--pixel", "172",
               "-o", str(out), "--report", "-")
    assert run.returncode == 0, run.stderr
    written = json.loads(out.read_text())
    assert written["Geometry"]["BeamCenter"] == pytest.approx(list(g.beam_center), abs=0.1)
    assert written["Geometry"]["DedectorDistanceMM"] == pytest.approx(g.distance_mm, rel=1e-3)
    assert "Residuals per ring" in run.stdout


@pytest.mark.slow
def test_without_pyfai_the_command_names_the_extra(tmp_path):
    """Where pyFAI is not installed, one line says which extra brings it (exit 2)."""
    blocker = (
        "import sys\n"
        "class _NoPyFAI:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'pyFAI':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoPyFAI())\n"
        "sys.argv[0] = 'saxsdog'\n"
        "from saxsdog.cli.entry import saxsdog\n"
        "sys.exit(saxsdog())\n")
    run = subprocess.run([sys.executable, "-c", blocker, "calibrate", str(tmp_path / "x.tif"), "--calibrant", "AgBh",
                          "-o", str(tmp_path / "c.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "pip install 'saxsdog[calibrate]'" in run.stderr and "Traceback" not in run.stderr


def test_summary_carries_the_control_points_for_a_page(detector_gaps):
    from saxsdog.calibrate import calibrate_image, d_spacings
    from saxsdog.calibrate.synthetic import fake_calibrant_image, random_scenarios

    g = random_scenarios(20)[18].geometry
    fit = calibrate_image(fake_calibrant_image(g, d_spacings("AgBh")[1], gaps=detector_gaps, seed=4), "AgBh",
                          g.wavelength_A, g.pixel_size_um)
    summary = json.loads(json.dumps(fit.summary(points=True)))
    assert len(summary["control_points"]["row"]) == fit.points_row.size > 100
    assert summary["rings"][0]["points"] > 0 and "BeamCenterX" in summary["uncertainties"]


def _synthetic_tif(tmp_path, detector_gaps):
    import tifffile

    from saxsdog.calibrate import d_spacings
    from saxsdog.calibrate.synthetic import fake_calibrant_image, random_scenarios

    g = random_scenarios(20)[18].geometry
    tif = tmp_path / "agbh.tif"
    tifffile.imwrite(tif, fake_calibrant_image(g, d_spacings("AgBh")[1], gaps=detector_gaps, seed=2))
    return tif, g


def _template_with_mask(folder, shared_data, masked: np.ndarray):
    """cal.json with its mask replaced by ``masked`` (True = masked), saved beside it as NPY."""
    folder.mkdir()
    np.save(folder / "old_beamstop.npy", masked.astype(np.uint8))
    template = json.loads((shared_data / "cal.json").read_text())
    template["Masks"][0]["MaskFile"] = "old_beamstop.npy"
    (folder / "old.json").write_text(json.dumps(template))
    return folder / "old.json"


def test_template_mask_hiding_most_rings_is_not_used_for_the_fit(tmp_path, detector_gaps, shared_data):
    """A user passes last week's calibration as template: its mask, drawn for another beamstop
    position, hides the top half of the rings.  The fit uses the image's own gap pixels and
    says so; the calibration written keeps the template's mask, under a name that still
    resolves from the output's folder."""
    from saxsdog.calibration import Calibration

    tif, g = _synthetic_tif(tmp_path, detector_gaps)
    masked = np.zeros(g.shape, bool)
    masked[: g.shape[0] // 2] = True
    template = _template_with_mask(tmp_path / "beamtime1", shared_data, masked)
    (tmp_path / "beamtime2").mkdir()
    out = tmp_path / "beamtime2" / "cal.json"
    run = _run(str(tif), "--calibrant", "AgBh", "--wavelength", repr(g.wavelength_A), "-t", str(template),
               "-o", str(out), "--report", "-")
    assert run.returncode == 0, run.stderr
    assert "the template's mask old_beamstop.npy hides" in run.stderr
    assert "fit used the image's own dead and gap pixels" in run.stdout  # the report repeats it
    written = json.loads(out.read_text())
    assert written["Geometry"]["BeamCenter"] == pytest.approx(list(g.beam_center), abs=0.1)
    assert written["Geometry"]["DedectorDistanceMM"] == pytest.approx(g.distance_mm, rel=1e-3)
    # the mask is kept and found from the new folder
    assert Path(out.parent / written["Masks"][0]["MaskFile"]).resolve() == (template.parent / "old_beamstop.npy")
    assert not Calibration(out, cache=False).mask(0)[: g.shape[0] // 2].any()


def test_template_mask_hiding_little_is_used_for_the_fit(tmp_path, detector_gaps, shared_data):
    """A template mask that hides a corner (a beamstop, a bad module) is honoured by the fit."""
    tif, g = _synthetic_tif(tmp_path, detector_gaps)
    masked = np.zeros(g.shape, bool)
    masked[:250, :250] = True
    template = _template_with_mask(tmp_path / "t", shared_data, masked)
    run = _run(str(tif), "--calibrant", "AgBh", "--wavelength", repr(g.wavelength_A), "-t", str(template),
               "-o", str(tmp_path / "t" / "cal.json"))
    assert run.returncode == 0, run.stderr
    assert "hides" not in run.stderr
    written = json.loads((tmp_path / "t" / "cal.json").read_text())
    assert written["Masks"][0]["MaskFile"] == "old_beamstop.npy"  # same folder: the name unchanged


def test_missing_output_folder_is_named_before_the_fit(tmp_path, detector_gaps):
    tif, g = _synthetic_tif(tmp_path, detector_gaps)
    run = _run(str(tif), "--calibrant", "AgBh", "--wavelength", "1.5", "--pixel", "172",
               "-o", str(tmp_path / "nowhere" / "cal.json"))
    assert run.returncode == 2
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in run.stderr
    assert ".part" not in run.stderr


def test_unknown_picture_format_is_named_before_the_fit(tmp_path, detector_gaps):
    tif, g = _synthetic_tif(tmp_path, detector_gaps)
    run = _run(str(tif), "--calibrant", "AgBh", "--wavelength", "1.5", "--pixel", "172",
               "-o", str(tmp_path / "cal.json"), "--picture", str(tmp_path / "rings.xyz"))
    assert run.returncode == 2
    assert "--picture" in run.stderr and ".png" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "cal.json").exists()


def test_the_report_goes_to_standard_output_unless_a_file_is_named(tmp_path, detector_gaps):
    """Residuals per ring and the uncertainties are shown without asking; --report FILE moves them."""
    tif, g = _synthetic_tif(tmp_path, detector_gaps)
    common = [str(tif), "--calibrant", "AgBh", "--wavelength", repr(g.wavelength_A), "--pixel", "172"]
    plain = _run(*common, "-o", str(tmp_path / "a.json"))
    assert plain.returncode == 0, plain.stderr
    assert "Residuals per ring" in plain.stdout and "± " in plain.stdout
    to_file = _run(*common, "-o", str(tmp_path / "b.json"), "--report", str(tmp_path / "r.txt"))
    assert to_file.returncode == 0 and to_file.stdout == ""
    assert "Residuals per ring" in (tmp_path / "r.txt").read_text()


def test_template_file_names_are_rebased_to_the_output_folder(tmp_path):
    """Mask, dark, flat and background of the template name the same files from the output's
    folder: relative where the folders share a parent, absolute otherwise, unchanged when absolute."""
    cal = {"Masks": [{"MaskFile": "m.msk"}, {"MaskFile": ""}, {"MaskFile": "/abs/m.tif"}],
           "Corrections": {"DarkFile": "darks/d.tif", "FlatFile": ""},
           "Background": {"File": "../bg.chi"}}
    cli._rebase_file_names(cal, tmp_path / "t", tmp_path / "out" / "run1")
    assert cal["Masks"][0]["MaskFile"] == "../../t/m.msk"
    assert cal["Masks"][1]["MaskFile"] == "" and cal["Masks"][2]["MaskFile"] == "/abs/m.tif"
    assert cal["Corrections"] == {"DarkFile": "../../t/darks/d.tif", "FlatFile": ""}
    assert cal["Background"]["File"] == "../../bg.chi"
    same = {"Masks": [{"MaskFile": "m.msk"}]}
    cli._rebase_file_names(same, tmp_path, tmp_path)
    assert same["Masks"][0]["MaskFile"] == "m.msk"
    apart = {"Masks": [{"MaskFile": "m.msk"}]}
    cli._rebase_file_names(apart, Path("/work/shared/data"), tmp_path)
    assert apart["Masks"][0]["MaskFile"] == "/work/shared/data/m.msk"
