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
