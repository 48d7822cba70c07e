"""ROI sums on a cake map (issue 14's Cake entry as the input of the ROI classifier)."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.errors import CalibrationError
from saxsdog.testing import small_calibration


def _calibration(**roi):
    cal = small_calibration(Classifiers=[{"Kind": "CakeROI", **roi}])
    radial = cal["Masks"][0]
    cal["Masks"] = [radial, {**radial, "Cake": {"RadialBins": 20, "AzimuthBins": 12}}]
    return Calibration(cal, cache=False)


def test_a_cake_roi_equals_a_numpy_sum_over_the_map():
    cal = _calibration(RadialRange=[0.3, 0.8], ChiRange=[150.0, -150.0])  # a sector through 180 degrees
    rng = np.random.default_rng(0)
    image = rng.poisson(100.0, cal.shape).astype(np.int32)
    curves = cal.curves(image)
    cake = cal.integrators[1]
    intensity = cake.as_map(curves[1].intensity)
    area = cake.as_map(cake.operator.area)
    chi = cake.azimuth
    radial = np.asarray(cake.x)
    in_chi = (chi >= 150.0) | (chi <= -150.0)
    sel = in_chi[:, None] & ((radial >= 0.3) & (radial <= 0.8))[None, :] & (area > 0)
    weight = np.where(sel, intensity * area, 0.0)
    p = curves[0].parameters
    assert p["CakeROI.sum"] == pytest.approx(weight.sum(), rel=1e-12)
    assert p["CakeROI.pixels"] == pytest.approx(area[sel].sum(), rel=1e-12)
    assert p["CakeROI.bins"] == int(sel.sum())
    assert p["CakeROI.centroid_radial"] == pytest.approx((weight * radial[None, :]).sum() / weight.sum())
    assert p["CakeROI.centroid_chi"] == pytest.approx((weight * chi[:, None]).sum() / weight.sum())
    assert p["CakeROI.mean"] == pytest.approx(100.0, rel=0.05)  # counts per pixel of the flat image
    assert p["I0"] > 0  # the integral parameters stay


@pytest.mark.parametrize("roi,field", [({"RadialRange": [50.0, 60.0]}, "RadialRange"),
                                       ({"Mask": 0}, "Mask"),
                                       ({"RadialRange": [0.8, 0.3]}, "RadialRange")])
def test_bad_cake_rois_name_the_field(roi, field):
    with pytest.raises(CalibrationError) as info:
        _calibration(**roi)
    assert info.value.path == f"$.Classifiers[0].{field}"


def test_a_cake_roi_needs_a_cake():
    with pytest.raises(CalibrationError, match="needs a Masks entry with a Cake"):
        Calibration(small_calibration(Classifiers=[{"Kind": "CakeROI"}]), cache=False)


@pytest.mark.slow
def test_cake_roi_values_reach_history_and_the_file_list(tmp_path):
    from datetime import datetime

    from saxsdog.testing import run_queue, write_pilatus_tiff

    cal = _calibration(ChiRange=[-90.0, 90.0])
    write_pilatus_tiff(tmp_path / "data" / "a_00000.tif", np.full(cal.shape, 7, dtype=np.int32), datetime(2026, 1, 1))
    queue = run_queue(cal, tmp_path / "data", workers=1, out_dir=tmp_path / "out")
    (rec,) = queue.history.snapshot()
    assert rec["parameters"]["R0"]["CakeROI.mean"] == pytest.approx(7.0)
    header, row = (tmp_path / "out" / "results" / "filelist.txt").read_text().splitlines()
    assert float(dict(zip(header.split("\t"), row.split("\t")))["CakeROI.mean"]) == pytest.approx(7.0)
