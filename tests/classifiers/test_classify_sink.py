"""The coordinator's classifiers in a real queue: CorMap in frame order, alarms, averaging."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.io.chi import read_chi
from saxsdog.pipeline.classify_sink import ClassifySink
from saxsdog.pipeline.state import Record
from saxsdog.pipeline.tasks import ImageResult
from saxsdog.testing import run_queue, small_calibration, write_pilatus_tiff

CLASSIFIERS = [
    {"Kind": "CorMap", "Reference": "previous", "Alarm": {"Below": 0.01}},
    {"Kind": "ImageStats", "Alarm": {"Above": 1e9, "Key": "total"}},
]


def _images(folder, n=12, changed_from=8):
    cal = Calibration(small_calibration(), cache=False)
    q = cal.geometry.q()
    model = 4000.0 * np.exp(-(q * 4.0) ** 2 / 3.0) + 200.0
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, 12, 0, 0)
    for i in range(n):
        scale = 1.3 if i >= changed_from else 1.0
        write_pilatus_tiff(folder / f"img_{i:05d}.tif", rng.poisson(model * scale).astype(np.int32),
                           start + timedelta(seconds=i))


@pytest.mark.slow
def test_cormap_alarms_and_averages_in_a_queue(tmp_path):
    data = tmp_path / "data"
    _images(data)
    cal = Calibration(small_calibration(Classifiers=CLASSIFIERS, Average={"Every": 4}), cache=False)
    queue = run_queue(cal, data, workers=2, out_dir=tmp_path / "out")
    records = sorted(queue.history.snapshot(), key=lambda r: r["path"])
    assert len(records) == 12 and not any(r["error"] for r in records)
    params = [r["parameters"]["R0"] for r in records]
    assert params[0]["CorMap.status"] == "reference: no previous frame"
    # every frame is compared with the one taken just before it, whichever worker finished first
    assert [p["CorMap.similar"] for p in params[1:]] == [True] * 7 + [False] + [True] * 3
    assert records[8]["alarms"] and "CorMap.P_adjusted" in records[8]["alarms"][0]
    assert params[8]["alarms"].startswith("CorMap.P_adjusted=")
    assert queue.stats()["alarms"] == 1 and queue.stats()["latest_alarm"]["name"] == "img_00008.tif"
    # three groups of four: the third (frames 8-11) all changed, the second has none changed
    averages = sorted((tmp_path / "out" / "results" / "averages").glob("*.chi"))
    assert [p.name for p in averages] == ["frames_000000.chi", "frames_000004.chi", "frames_000008.chi"]
    for path in averages:
        head = read_chi(path).parameters
        assert head["kept"] == 4 and head["rejected"] == 0 and head["complete"] is True


def _result(name, t, intensity):
    q = np.linspace(0.1, 1.0, intensity.size)
    return ImageResult(path=f"/x/{name}", name=name, image_time=t, outputs=["o"],
                       parameters={"R0": {"I0": 1.0}},
                       curves=[{"kind": "Radial", "array": [q, intensity, np.sqrt(intensity)]}])


def test_a_frame_overtaken_by_its_successor_is_compared_with_its_own_predecessor():
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap"}]), cache=False)
    sink = ClassifySink(cal)
    rng = np.random.default_rng(3)
    base = np.full(200, 1e4)
    first, second, third = (_result(f"f{i}", float(i), rng.poisson(base * s).astype(float))
                            for i, s in ((0, 1.0), (1, 1.0), (2, 1.2)))
    for r in (first, third, second):  # the third arrives before the second
        sink.record(Record(r.path, "done", (r,)))
    assert second.parameters["R0"]["CorMap.similar"] is True  # compared with the first, not the third
    assert third.parameters["R0"]["CorMap.similar"] is False


def test_failed_and_skipped_results_are_left_alone():
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap", "Alarm": {"Below": 0.5}}]), cache=False)
    sink = ClassifySink(cal)
    bad = ImageResult(path="/x/a", error="unreadable")
    sink.record(Record(bad.path, "failed", (bad,)))
    assert bad.alarms == [] and sink.alarms == 0
