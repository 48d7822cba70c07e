"""Where the pieces of the reduction (issue 13) meet: calibration, integrators, outputs, queue."""

from __future__ import annotations

import json

import numpy as np

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
