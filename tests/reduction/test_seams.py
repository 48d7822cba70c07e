"""Where the pieces of the reduction (issue 13) meet: calibration, integrators, outputs, queue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saxsdog.calibration import Calibration
from saxsdog.testing import small_calibration


def _labels(chi: bytes) -> list[str]:
    return json.loads(chi.decode("latin-1").split("\n")[2])


def test_chi_intensity_label_follows_the_unit() -> None:
    image = np.random.default_rng(1).poisson(50.0, (64, 48)).astype(np.float64)
    plain = Calibration(small_calibration(), cache=False)
    assert _labels(plain.chi_bytes(plain.curves(image))[0])[1] == "Intensity (Count/Pixel)"
    per_second = Calibration(small_calibration(Version=2, Corrections={"SolidAngle": False},
                                                   Normalization={"ExposureTime": 10}), cache=False)
    curves = per_second.curves(image, metadata={})
    assert curves[0].unit == "counts/pixel/s"
    chi = per_second.chi_bytes(curves)[0]
    assert _labels(chi)[1] == "Intensity (counts/pixel/s)"
    # the rows are those of the plain file divided by 10 s (only the label and header differ)
    rows = np.loadtxt(chi.decode("latin-1").split("\n")[4:])
    assert np.allclose(rows[:, 1] * 10.0, plain.curves(image)[0].intensity, rtol=1e-12, atol=0)


def test_a_frame_of_a_multi_frame_file_without_its_monitor_fails_alone(tmp_path) -> None:
    """Frame 1 of three has a zero monitor: frames 0 and 2 are written, the file is failed
    with frame 1's error naming the field."""
    import h5py

    from saxsdog.testing import run_queue

    root = tmp_path / "run"
    root.mkdir()
    rng = np.random.default_rng(3)
    stack = rng.poisson(80.0, (3, 64, 48)).astype(np.int32)
    with h5py.File(root / "series.h5", "w") as f:
        f.create_dataset("entry/data/data", data=stack)
        f["entry/instrument/monitor/flux"] = np.array([1000.0, 0.0, 2000.0])
    cal = Calibration(small_calibration(Version=2, Corrections={"SolidAngle": False},
                                        Normalization={"Monitor": {"Header": "flux"}}), cache=False)
    out = tmp_path / "out"
    queue = run_queue(cal, root, out_dir=out)
    failures = list(queue.history.failures.values())
    assert len(failures) == 1 and "$.Normalization.Monitor" in failures[0], failures
    assert failures[0].startswith("frame 1: ")
    written = sorted(p.name for p in out.rglob("*.chi"))
    assert len(written) == 2, written
    plain = Calibration(small_calibration(), cache=False)
    from saxsdog.io.chi import read_chi

    for path, k, monitor in zip(sorted(out.rglob("*.chi")), (0, 2), (1000.0, 2000.0)):
        np.testing.assert_allclose(read_chi(path).intensity, plain.curves(stack[k].astype(float))[0].intensity
                                   / monitor, rtol=1e-12)


def test_sigma_clipping_reports_the_rejected_pixels_per_frame(tmp_path) -> None:
    """ClipResult.rejected reaches the curve, the frame's results and the live graphs."""
    import tifffile

    from saxsdog.testing import run_queue

    rng = np.random.default_rng(5)
    image = rng.poisson(100.0, (64, 48)).astype(np.int32)
    rows, cols = rng.integers(0, 64, 20), rng.integers(0, 48, 20)
    image[rows, cols] = 1_000_000
    clip = Calibration(small_calibration(Version=2, Corrections={"SigmaClip": {"Sigma": 4, "Cycles": 3}}),
                       cache=False)
    curve = clip.curves(image.astype(np.float64), metadata={})[0]
    assert curve.rejected_pixels is not None and curve.rejected_pixels >= len(set(zip(rows, cols))) // 2
    assert Calibration(small_calibration(), cache=False).curves(image.astype(float))[0].rejected_pixels is None
    root = tmp_path / "run"
    root.mkdir()
    tifffile.imwrite(root / "z_00001.tif", image)
    queue = run_queue(clip, root, out_dir=tmp_path / "out", keep_curves=True, curve_interval=0.0)
    record = queue.history.records[0]
    assert record["error"] is None
    assert record["parameters"]["R0"]["rejected_pixels"] == curve.rejected_pixels
    assert queue.history.latest_curves.curves[0]["rejected_pixels"] == curve.rejected_pixels


def test_the_command_reports_dummy_and_clipped_counts() -> None:
    from saxsdog.cli.saxsdog import reduction_report

    records = [{"error": None, "skipped": False, "dummy_pixels": 73671,
                "parameters": {"R0": {"dummy_pixels": 73671, "rejected_pixels": 12}}},
               {"error": None, "skipped": False, "dummy_pixels": 73675,
                "parameters": {"R0": {"dummy_pixels": 73675, "rejected_pixels": 30}}},
               {"error": "bad", "skipped": False, "dummy_pixels": None, "parameters": {}}]
    assert reduction_report(records) == [
        "saxsdog: 73,671–73,675 dummy pixels (negative or DummyValue) excluded per frame (2 frame(s) had any)",
        "saxsdog: 12–30 pixel entries rejected by SigmaClip per frame"]
    assert reduction_report([{"error": None, "dummy_pixels": 0, "parameters": {"R0": {"dummy_pixels": 0}}}]) == []


@pytest.mark.slow
def test_real_image_without_a_mask_reports_73671_dummy_pixels(data_dir, tmp_path) -> None:
    """As a user runs it: cal.json with an empty MaskFile on the real image; the summary
    names the count, and the curve is the one with the gap pixels masked."""
    import subprocess
    import sys

    from saxsdog.io.chi import read_chi
    from saxsdog.io.images import read_image

    raw = json.loads((data_dir / "cal.json").read_text())
    raw["Masks"][0]["MaskFile"] = ""
    (tmp_path / "cal.json").write_text(json.dumps(raw))
    r = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(tmp_path / "cal.json"), "-S",
                        "-o", str(tmp_path / "out"), str(data_dir / "buf1_00000.tif")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "saxsdog: 73,671 dummy pixels (negative or DummyValue) excluded per frame" in r.stdout, r.stdout
    got = read_chi(tmp_path / "out" / "buf1_00000.chi")
    image = read_image(data_dir / "buf1_00000.tif").data
    gaps = image >= 0
    masked = Calibration({**raw, "Corrections": {"MaskNegative": False}}, cache=False)
    from saxsdog.core.integrators import RadialIntegrator
    from saxsdog.core.operator import build_radial_operator

    op = build_radial_operator(masked.geometry, gaps, 3, 1.0)
    want = RadialIntegrator(op).curve(image.astype(np.float64))
    np.testing.assert_allclose(got.intensity, want.intensity, rtol=1e-12, atol=1e-12)


def test_a_flat_with_a_zero_names_field_pixel_and_value_plainly(tmp_path) -> None:
    from saxsdog.errors import CalibrationError

    flat = np.ones((64, 48))
    flat[10, 7] = 0.0
    np.save(tmp_path / "flat.npy", flat)
    with pytest.raises(CalibrationError) as info:
        Calibration(small_calibration(Version=2, Corrections={"FlatFile": "flat.npy"}), base_dir=tmp_path,
                    cache=False)
    message = str(info.value)
    assert "$.Corrections.FlatFile" in message and "row 10, column 7: 0)" in message, message
    assert "np.float64" not in message


@pytest.mark.slow
def test_the_command_agrees_with_pyfai_with_dark_flat_solid_angle_and_polarization(data_dir, tmp_path) -> None:
    """As a user runs it: a version-2 calibration beside the real image with a dark TIFF (its
    header says 5 s, the image's 10 s: the dark is doubled), a smooth flat as .npy, solid angle
    and polarization; the .chi file agrees with pyFAI integrate1d given the same to 1e-3."""
    import shutil
    import subprocess
    import sys
    from datetime import datetime

    pytest.importorskip("pyFAI")
    from scipy.ndimage import gaussian_filter

    from saxsdog.io.chi import read_chi
    from saxsdog.io.images import read_image
    from saxsdog.io.masks import read_mask
    from saxsdog.io.poni import calibration_to_integrator
    from saxsdog.testing import write_pilatus_tiff

    (tmp_path / "img").mkdir()
    shutil.copy(data_dir / "buf1_00000.tif", tmp_path / "img")
    shutil.copy(data_dir / "AAA_integ.msk", tmp_path)
    frame = read_image(tmp_path / "img" / "buf1_00000.tif")
    shape = frame.data.shape
    rng = np.random.default_rng(21)
    dark = rng.uniform(0, 1.5, shape).astype(np.float32)
    write_pilatus_tiff(tmp_path / "dark.tif", dark, datetime(2026, 1, 1), exposure=5.0)
    field = gaussian_filter(rng.standard_normal(shape), sigma=min(shape) / 12, mode="wrap")
    flat = 1.0 + 0.03 * field / np.abs(field).max()
    np.save(tmp_path / "flat.npy", flat)
    raw = json.loads((data_dir / "cal.json").read_text())
    fraction, angle = 0.95, 20.0
    cal = {**raw, "Version": 2, "PolarizationCorrection": {"Fraction": fraction, "Angle": angle},
           "Corrections": {"SolidAngle": True, "DarkFile": "dark.tif", "FlatFile": "flat.npy"}}
    (tmp_path / "cal2.json").write_text(json.dumps(cal))
    r = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(tmp_path / "cal2.json"), "-S",
                        "-o", str(tmp_path / "out"), str(tmp_path / "img")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    chi = read_chi(tmp_path / "out" / "buf1_00000.chi")
    ai = calibration_to_integrator(raw)
    mask = ~read_mask(tmp_path / "AAA_integ.msk", shape, "mask") | (frame.data < 0)
    n, dq = len(chi.q), chi.q[1] - chi.q[0]
    res = ai.integrate1d(frame.data.astype(np.float64), n, unit="q_nm^-1", radial_range=(0, n * dq),
                         method=("full", "csr", "cython"), mask=mask,
                         dark=2.0 * read_image(tmp_path / "dark.tif").data.astype(np.float64), flat=flat,
                         correctSolidAngle=True, polarization_factor=[2 * fraction - 1, -np.radians(angle)])
    assert np.allclose(res.radial, chi.q, rtol=1e-6)
    sel = (chi.intensity > 0) & (res.intensity > 0)
    assert sel.sum() > 500
    assert np.median(np.abs(chi.intensity[sel] / res.intensity[sel] - 1)) <= 1e-3
