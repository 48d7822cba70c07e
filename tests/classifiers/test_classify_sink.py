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
    groups = queue.stats()["averages"]
    assert sorted(groups) == ["frames_000000", "frames_000004", "frames_000008"]
    assert all(g["kept"] == 4 and g["rejected"] == 0 for g in groups.values())
    # three groups of four: the third (frames 8-11) all changed, the second has none changed
    averages = sorted((tmp_path / "out" / "results" / "averages").glob("*.chi"))
    assert [p.name for p in averages] == ["frames_000000.chi", "frames_000004.chi", "frames_000008.chi"]
    for path in averages:
        head = read_chi(path).parameters
        assert head["kept"] == 4 and head["rejected"] == 0 and head["complete"] is True
    # results/filelist.txt: a column per classifier value, after the original's
    lines = (tmp_path / "out" / "results" / "filelist.txt").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:6] == ["file", "output", "I0", "I1", "I2", "image_time"]
    assert "CorMap.P_adjusted" in header and "ImageStats.total" in header and header[-1] == "alarms"
    rows = {r.split("\t")[0].rsplit("/", 1)[-1]: dict(zip(header, r.split("\t"))) for r in lines[1:]}
    assert rows["img_00008.tif"]["CorMap.similar"] == "False" and rows["img_00008.tif"]["alarms"]
    assert rows["img_00000.tif"]["CorMap.P"] == "" and rows["img_00009.tif"]["alarms"] == ""
    from saxsdog.merge import read_filelist

    table = read_filelist(tmp_path / "out" / "results" / "filelist.txt")
    assert len(table) == 12 and table["ImageStats.total"].min() > 0


def _result(name, t, intensity):
    q = np.linspace(0.1, 1.0, intensity.size)
    return ImageResult(path=f"/x/{name}", name=name, image_time=t, outputs=["o"],
                       parameters={"R0": {"I0": 1.0}},
                       curves=[{"kind": "Radial", "array": [q, intensity, np.sqrt(intensity)]}])


def test_a_frame_overtaken_by_its_successor_is_compared_with_its_own_predecessor():
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap"}]), cache=False)
    updated = []
    sink = ClassifySink(cal, on_update=lambda result, signature: updated.append(result))
    rng = np.random.default_rng(3)
    base = np.full(200, 1e4)
    first, second, third = (_result(f"f{i}", float(i), rng.poisson(base * s).astype(float))
                            for i, s in ((0, 1.0), (1, 1.0), (2, 1.2)))
    for r in (first, third, second):  # the third arrives before the second
        sink.record(Record(r.path, "done", (r,)))
    assert second.parameters["R0"]["CorMap.similar"] is True  # compared with the first, not the third
    assert third.parameters["R0"]["CorMap.similar"] is False
    assert updated == [third]  # compared again with the second once it came: the file list's row is replaced


def test_failed_and_skipped_results_are_left_alone():
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap", "Alarm": {"Below": 0.5}}]), cache=False)
    sink = ClassifySink(cal)
    bad = ImageResult(path="/x/a", error="unreadable")
    sink.record(Record(bad.path, "failed", (bad,)))
    assert bad.alarms == [] and sink.alarms == 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["nxcansas", "nxcansas-run"])
def test_classifier_values_reach_nxcansas_files(tmp_path, fmt):
    from saxsdog.io.nxcansas import read_nxcansas

    data = tmp_path / "data"
    _images(data, n=4, changed_from=3)
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "Guinier"}, {"Kind": "CorMap"}, {"Kind": "ImageStats"}]),
                      cache=False)
    run_queue(cal, data, workers=1, out_dir=tmp_path / "out", output_format=fmt)
    files = sorted((tmp_path / "out").rglob("*.h5"))
    frames = sorted((fr for path in files for fr in read_nxcansas(path)), key=lambda fr: fr["name"])
    assert len(frames) == 4
    for fr in frames:
        p = fr["parameters"]
        assert p["I0"] > 0 and isinstance(p["Guinier.status"], str) and p["ImageStats.max"] > 0
        if fmt == "nxcansas":  # written by the workers: the stateful values are not known there
            assert "CorMap.P" not in p
    if fmt == "nxcansas-run":  # the coordinator's run file has CorMap too (NaN when not compared)
        assert np.isnan(frames[0]["parameters"]["CorMap.P"])
        assert [bool(fr["parameters"]["CorMap.similar"]) for fr in frames[1:]] == [True, True, False]


@pytest.mark.slow
def test_alarms_of_stateless_classifiers_need_no_curves_from_the_workers(tmp_path):
    from saxsdog.pipeline.classify_sink import needs_classify_sink, needs_curves

    data = tmp_path / "data"
    _images(data, n=3)
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "ImageStats", "Alarm": {"Above": 0.0}}]), cache=False)
    assert needs_classify_sink(cal) and not needs_curves(cal)
    queue = run_queue(cal, data, workers=1, out_dir=tmp_path / "out")
    records = queue.history.snapshot()
    assert all(r["alarms"] and r["alarms"][0].startswith("ImageStats.max=") for r in records)
    assert queue.stats()["alarms"] == 3


def test_the_first_frame_is_per_run():
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap", "Reference": "first"}]), cache=False)
    sink = ClassifySink(cal)
    rng = np.random.default_rng(1)
    base = np.full(200, 1e4)
    a0, a1 = (_result(f"a{i}", float(i), rng.poisson(base).astype(float)) for i in range(2))
    b0, b1 = (_result(f"b{i}", float(10 + i), rng.poisson(base * 1.2).astype(float)) for i in range(2))
    sink.record(Record(a0.path, "done", (a0,), run="series_1"))
    sink.record(Record(b0.path, "done", (b0,), run="series_2"))
    sink.record(Record(a1.path, "done", (a1,), run="series_1"))
    sink.record(Record(b1.path, "done", (b1,), run="series_2"))
    assert b0.parameters["R0"]["CorMap.status"] == "reference: first frame"  # series 2 starts afresh
    assert a1.parameters["R0"]["CorMap.similar"] is True and b1.parameters["R0"]["CorMap.similar"] is True


@pytest.mark.slow
def test_classifier_values_reach_the_merge_table(tmp_path):
    from saxsdog.merge import image_table

    data = tmp_path / "data"
    _images(data, n=3)
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "Porod"}, {"Kind": "ImageStats"}]), cache=False)
    run_queue(cal, data, workers=1, out_dir=tmp_path / "out")
    table = image_table(directory=data, chi_directory=tmp_path / "out",
                        filelist=tmp_path / "out" / "results" / "filelist.txt")
    assert len(table) == 3 and (table["ImageStats.total"] > 0).all() and table["Porod.exponent"].notna().all()
    assert (table["I0"] > 0).all()


def test_a_frame_processed_again_replaces_itself():
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap"}], Average={"Every": 3}), cache=False)
    sink = ClassifySink(cal)
    rng = np.random.default_rng(4)
    base = np.full(200, 1e4)
    f0, f1 = (_result(f"f_{i}", float(i), rng.poisson(base).astype(float)) for i in range(2))
    again = _result("f_1", 1.0, rng.poisson(base * 1.3).astype(float))  # a rerun, the sample changed
    for r in (f0, f1, again):
        sink.record(Record(r.path, "done", (r,)))
    assert again.parameters["R0"]["CorMap.similar"] is False  # against f_0, not against its old self
    assert len(sink._state(None)[1][0]) == 2
    merged = sink.averages["frames_000000"]
    assert sorted(merged.kept + merged.rejected) == ["f_0", "f_1"]


def test_a_failing_stateful_plugin_does_not_stop_the_frames(monkeypatch, caplog):
    cal = Calibration(small_calibration(Classifiers=[{"Kind": "CorMap"}]), cache=False)
    sink = ClassifySink(cal)
    monkeypatch.setattr(sink, "_add", lambda *a: 1 / 0)
    r = _result("x_0", 0.0, np.full(200, 10.0))
    sink.record(Record(r.path, "done", (r,)))  # no exception
    assert "failed on x_0" in caplog.text
