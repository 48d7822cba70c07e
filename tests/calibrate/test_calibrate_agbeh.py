"""The real silver-behenate image: no guess but the wavelength from its header."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pyFAI")

from saxsdog.calibrate import calibrate_image, calibration_from_fit  # noqa: E402

AGBH_PERIOD_NM = 5.8380  # silver behenate's long period, nm


def _peak_q(q: np.ndarray, intensity: np.ndarray, q0: float) -> float:
    """Centroid, above half maximum over a straight baseline, of the peak nearest ``q0``."""
    sel = np.abs(q - q0) < 0.03 * q0 + 0.02
    qs, ys = q[sel], intensity[sel]
    ys = ys - np.interp(qs, [qs[0], qs[-1]], [ys[:3].mean(), ys[-3:].mean()])
    k = int(np.argmax(ys))
    half = 0.5 * ys[k]
    lo = k
    while lo > 0 and ys[lo - 1] > half:
        lo -= 1
    hi = k
    while hi < ys.size - 1 and ys[hi + 1] > half:
        hi += 1
    w = ys[lo:hi + 1] - half
    return float(np.sum(w * qs[lo:hi + 1]) / w.sum())


@pytest.mark.slow
def test_agbeh_orders_1_to_7_at_their_q(agbeh_image, tmp_path, capsys):
    """The fitted calibration, integrated with saxsdog, puts the AgBh orders 1–7 at
    q = 2πn/5.8380 nm⁻¹ within 2e-3 relative; the run time is reported."""
    from saxsdog.calibration import Calibration

    image = agbeh_image.data
    t0 = time.perf_counter()
    fit = calibrate_image(image, "AgBh", agbeh_image.metadata["wavelength"], (172.0, 172.0))
    elapsed = time.perf_counter() - t0
    assert fit.rings_used >= 7
    calibration = calibration_from_fit(fit)
    np.save(tmp_path / "gaps.npy", (image < 0).astype(np.uint8))  # non-zero = masked
    calibration["Masks"][0].update(MaskFile=str(tmp_path / "gaps.npy"), Oversampling=2)
    q, intensity = Calibration(calibration, cache=False).integrate(image.astype(np.float64))[:2]
    errors = []
    for n in range(1, 8):
        q0 = 2 * np.pi * n / AGBH_PERIOD_NM
        errors.append(_peak_q(q, intensity, q0) / q0 - 1)
    with capsys.disabled():
        print(f"\nagbeh2_1M.tif: fit {elapsed:.2f} s, {fit.geometry.distance_mm:.2f} mm, tilt "
              f"{fit.geometry.tilt_deg:.3f}°, RMS {fit.rms_px:.3f} px; order errors "
              + " ".join(f"{e:+.1e}" for e in errors))
    assert max(abs(e) for e in errors) < 2e-3
    assert elapsed < 10.0


@pytest.mark.slow
def test_command_on_agbeh_with_template_report_and_picture(shared_data, tmp_path):
    """``saxsdog calibrate`` with cal.json as template, as a user passes last week's calibration:
    its mask, drawn for the old beamstop, hides about half of the rings, so the fit does not
    use it (and warns); its other fields are kept, the mask under a name that resolves from
    the output's folder; the report and the picture are written.  Integrated through the
    ``saxsdog`` command, the AgBh orders 1–7 land within 2e-3 of 2πn/5.8380 nm⁻¹."""
    out = tmp_path / "cal.json"
    report = tmp_path / "report.txt"
    picture = tmp_path / "rings.png"
    run = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "calibrate", str(shared_data / "agbeh2_1M.tif"),
                          "--calibrant", "AgBh", "-t", str(shared_data / "cal.json"), "-o", str(out),
                          "--report", str(report), "--picture", str(picture)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    written = json.loads(out.read_text())
    template = json.loads((shared_data / "cal.json").read_text())
    assert written["Title"] == template["Title"]
    for entry, old_entry in zip(written["Masks"], template["Masks"], strict=True):
        assert (out.parent / entry.pop("MaskFile")).resolve() == (shared_data / old_entry.pop("MaskFile")).resolve()
        assert entry == old_entry
    assert "the template's mask AAA_integ.msk hides" in run.stderr
    assert written["Wavelength"] == pytest.approx(1.54987)  # from the header, not the template's 1.54
    assert 800 < written["Geometry"]["DedectorDistanceMM"] < 860
    assert written["Geometry"]["BeamCenter"] != template["Geometry"]["BeamCenter"]
    text = report.read_text()
    assert "Residuals per ring" in text and "Run time" in text
    assert picture.read_bytes()[:4] == b"\x89PNG"
    assert "AgBh, 7 rings" in run.stderr
    integrated = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(out), "-o",
                                 str(tmp_path / "out"), str(shared_data / "agbeh2_1M.tif")],
                                capture_output=True, text=True, timeout=300)
    assert integrated.returncode == 0, integrated.stderr
    lines = (tmp_path / "out" / "agbeh2_1M.chi").read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip().isdigit()) + 1
    q, intensity = np.loadtxt(lines[start:]).T[:2]
    for n in range(1, 8):
        q0 = 2 * np.pi * n / AGBH_PERIOD_NM
        assert abs(_peak_q(q, intensity, q0) / q0 - 1) < 2e-3, n


@pytest.mark.slow
def test_command_warns_when_the_wavelength_differs_from_the_header(shared_data, tmp_path):
    """At small angles a too short wavelength fits with a longer distance: the command says
    that the given wavelength is not the header's (and the report repeats it)."""
    report = tmp_path / "r.txt"
    run = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "calibrate", str(shared_data / "agbeh2_1M.tif"),
                          "--calibrant", "AgBh", "--wavelength", "0.77", "-o", str(tmp_path / "c.json"),
                          "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert "differs from the image header's 1.54987 Å by 50%" in run.stderr
    if run.returncode == 0:
        assert "differs from the image header" in report.read_text()


def _calibrate(shared_data, tmp_path, *options):
    return subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "calibrate", str(shared_data / "agbeh2_1M.tif"),
                           "--calibrant", "AgBh", "-o", str(tmp_path / "c.json"), *options],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_command_warns_when_the_pixel_size_is_not_the_detectors(shared_data, tmp_path):
    """The distance scales with the pixel size exactly: a --pixel that is not the Pilatus' 172 µm
    the header names is fitted (it may be a binned detector) but said."""
    run = _calibrate(shared_data, tmp_path, "--pixel", "75", "--report", "-")
    assert run.returncode == 0, run.stderr
    assert "pixel size 75 x 75 µm is not that of the Pilatus the image header names (172 µm)" in run.stderr
    assert "is not that of the Pilatus" in run.stdout  # in the report too
    assert "pixel size" not in _calibrate(shared_data, tmp_path, "--pixel", "172").stderr


@pytest.mark.slow
def test_a_distance_guess_that_ruled_out_the_right_orders_is_named(shared_data, tmp_path):
    run = _calibrate(shared_data, tmp_path, "--distance-mm", "500")
    assert run.returncode == 1
    assert "with --distance-mm 500, only distances between 312 and 800 mm were tried" in run.stderr
    assert not (tmp_path / "c.json").exists()
    assert _calibrate(shared_data, tmp_path, "--distance-mm", "800").returncode == 0


@pytest.mark.slow
def test_a_wavelength_that_cannot_be_refined_says_where_it_ran(shared_data, tmp_path):
    run = _calibrate(shared_data, tmp_path, "--refine-wavelength")
    assert run.returncode == 1
    assert "the wavelength cannot be refined from these rings (it ran to" in run.stderr
    assert "from 1.5499 Å" in run.stderr


@pytest.mark.slow
def test_command_says_the_wavelength_looks_wrong_when_the_distance_disagrees(shared_data, tmp_path):
    """0.77 of the right wavelength, no header to compare with (a TIFF without one is what
    --wavelength overrides), and the rough distance the user knows: the calibration is
    written (the rings alone cannot tell), and the warning, on stderr and first in the
    report, says the wavelength looks wrong and names the one that fits 830 mm."""
    run = _calibrate(shared_data, tmp_path, "--wavelength", "1.1934", "--distance-mm", "830", "--report", "-")
    assert run.returncode == 0, run.stderr
    assert "warning: the wavelength looks wrong: the fitted distance" in run.stderr
    assert "from --distance-mm's 830 mm" in run.stderr and "need about 1.55" in run.stderr
    report = run.stdout
    assert report.index("the wavelength looks wrong") < report.index("Residuals per ring")
    right = _calibrate(shared_data, tmp_path, "--distance-mm", "830")
    assert right.returncode == 0 and "looks wrong" not in right.stderr
