"""Scan maps: classifier values of raster frames as NXdata images."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.classifiers.scan import ScanMap
from saxsdog.errors import CalibrationError
from saxsdog.testing import run_queue, small_calibration


def test_positions_snake_and_start():
    m = ScanMap({"Shape": [2, 3], "Keys": ["a"], "Snake": True}, ["a"])
    assert [m.position(i) for i in range(7)] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0), None]
    for n in (12, 10, 11):  # out of order; numbering starts at 10
        m.add(f"scan_{n:05d}.tif", {"a": float(n)})
    np.testing.assert_array_equal(m.maps()["a"][0], [10.0, 11.0, 12.0])
    assert np.isnan(m.maps()["a"][1]).all()
    f = h5py.File(io.BytesIO(m.nexus_bytes()), "r")
    assert f["entry/a"].attrs["signal"] == "data" and f["entry/a/data"].shape == (2, 3)


@pytest.mark.parametrize("spec,field", [({"Shape": [0, 3], "Keys": ["a"]}, "Shape"),
                                        ({"Shape": [2, 3], "Keys": ["b"]}, "Keys[0]"),
                                        ({"Shape": [2, 3], "Keys": []}, "Keys")])
def test_bad_scan_blocks_name_the_field(spec, field):
    with pytest.raises(CalibrationError) as info:
        ScanMap(spec, ["a"])
    assert info.value.path == f"$.Scan.{field}"


@pytest.mark.slow
def test_a_raster_of_frames_gives_a_roi_map(tmp_path):
    from saxsdog.testing import write_pilatus_tiff
    from datetime import datetime, timedelta

    data = tmp_path / "data"
    start = datetime(2026, 1, 1)
    for i in range(6):
        write_pilatus_tiff(data / f"pt_{i:05d}.tif", np.full((64, 48), i + 1, dtype=np.int32),
                           start + timedelta(seconds=i))
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "ROI", "Rectangle": [0, 9, 0, 9]}],
                                        Scan={"Shape": [2, 3], "Keys": ["ROI.sum"]}), cache=False)
    queue = run_queue(cal, data, workers=2, out_dir=tmp_path / "out")
    with h5py.File(tmp_path / "out" / "results" / "scan_maps.h5", "r") as f:
        np.testing.assert_array_equal(f["entry/ROI.sum/data"][()], 100.0 * np.array([[1, 2, 3], [4, 5, 6]]))
    # each frame's place in the map travels with its values (history, plotdata: the page's map)
    placed = sorted((r["path"], r["parameters"]["R0"]["Scan.row"], r["parameters"]["R0"]["Scan.column"])
                    for r in queue.history.snapshot())
    assert [(row, col) for _, row, col in placed] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_a_bad_scan_block_is_refused_when_the_calibration_loads():
    with pytest.raises(CalibrationError, match=r"\$\.Scan\.Keys\[0\]"):
        Calibration(small_calibration(Scan={"Shape": [2, 2], "Keys": ["Guinier.Rg"]}), cache=False)
    with pytest.raises(CalibrationError, match="exactly one of Every"):
        Calibration(small_calibration(Average={"Alpha": 0.1}), cache=False)


def _tiff_with_header(path, data, lines):
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Detector: PILATUS 1M, S/N 10-0120\r\n# 2026-01-01T12:00:00.000\r\n" + "".join(
        f"# {line}\r\n" for line in lines)
    tifffile.imwrite(path, data, description=header, metadata=None)


@pytest.mark.slow
def test_scan_indices_from_the_image_header_place_the_frames(tmp_path):
    """Row and column from header fields (names carry no scan order; no Shape given)."""
    data = tmp_path / "data"
    points = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    rng = np.random.default_rng(0)
    for k, j in enumerate(rng.permutation(len(points))):
        r, c = points[j]
        _tiff_with_header(data / f"pt_{k:05d}.tif", np.full((64, 48), 10 * r + c + 1, dtype=np.int32),
                          [f"Scan_row {r}", f"Scan_col = {c}"])
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "ROI", "Rectangle": [0, 9, 0, 9]}],
                                        Scan={"RowKey": "Scan_row", "ColumnKey": "Scan_col", "Keys": ["ROI.sum"]}),
                      cache=False)
    assert "ScanPosition.row" in cal.classifiers.keys()
    queue = run_queue(cal, data, workers=2, out_dir=tmp_path / "out")
    rows = [r["parameters"]["R0"] for r in queue.history.snapshot()]
    assert sorted((p["ScanPosition.row"], p["ScanPosition.column"]) for p in rows) == points
    assert all((p["Scan.row"], p["Scan.column"]) == (p["ScanPosition.row"], p["ScanPosition.column"]) for p in rows)
    with h5py.File(tmp_path / "out" / "results" / "scan_maps.h5", "r") as f:
        np.testing.assert_array_equal(f["entry/ROI.sum/data"][()], 100.0 * np.array([[1, 2, 3], [11, 12, 13]]))


def test_a_point_number_from_the_header_and_bad_header_keys():
    m = ScanMap({"Shape": [2, 2], "Keys": ["a"], "IndexKey": "Point"}, ["a"])
    m.add("x_00009.tif", {"a": 5.0, "ScanPosition.index": 3.0})  # the header's number wins over the name's
    m.add("x_00010.tif", {"a": 6.0, "ScanPosition.index": 0.0})
    np.testing.assert_array_equal(m.maps()["a"], [[6.0, np.nan], [np.nan, 5.0]])
    with pytest.raises(CalibrationError) as info:
        ScanMap({"Keys": ["a"], "RowKey": "r"}, ["a"])
    assert info.value.path == "$.Scan.ColumnKey"
    with pytest.raises(CalibrationError) as info:
        ScanMap({"Keys": ["a"], "IndexKey": "p"}, ["a"])  # a point number needs the shape
    assert info.value.path == "$.Scan.Shape"
