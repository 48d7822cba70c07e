"""Output formats of the pipeline: .chi (default), NXcanSAS per image, NXcanSAS per run.

Every NXcanSAS file is read back with SasView's loader (sasdata) and compared with
``Calibration.curves()`` of the same image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from saxsdog import Calibration
from saxsdog.io.nxcansas import read_nxcansas
from saxsdog.pipeline import QueueOptions
from saxsdog import testing
from saxsdog.pipeline.queue import ImageQueue
from saxsdog.testing import link_images


@pytest.fixture(scope="module")
def cal(require_data_dir):
    return Calibration(require_data_dir / "cal.json")


@pytest.fixture(scope="module")
def require_data_dir(shared_data):
    return shared_data


@pytest.fixture(scope="module")
def cal3(require_data_dir):
    """Three integrators: the FIT2D mask, a second radial one (no mask), and a Phi-mode one."""
    raw = json.loads((require_data_dir / "cal.json").read_text())
    raw["Masks"].append({"MaskFile": "", "Oversampling": 1, "PixelPerRadialElement": 2, "Name": "coarse",
                         "Phi-mode": False, "qStart": 0.0, "qStop": 5.0})
    raw["Masks"].append({"MaskFile": "", "Oversampling": 1, "PixelPerRadialElement": 1, "Name": "ring",
                         "Phi-mode": True, "qStart": 0.5, "qStop": 1.5})
    return Calibration(raw, base_dir=require_data_dir)


@pytest.fixture(scope="module")
def base_image(require_data_dir) -> np.ndarray:
    return tifffile.imread(require_data_dir / "buf1_00000.tif")


def distinct_images(base: np.ndarray, folder: Path, n: int, start: int = 0) -> dict[str, np.ndarray]:
    """``n`` different TIFFs (each frame its own curve, so mixed-up frames are caught)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k in range(start, start + n):
        img = np.where(base >= 0, base * (k + 1) + k, base).astype(np.int32)
        name = f"img_{k:05d}.tif"
        tifffile.imwrite(folder / name, img)
        out[name] = img
    return out


def run_queue(cal, root, **opts) -> ImageQueue:
    q = testing.run_queue(cal, root, **opts)
    assert not q.history.failures, q.history.failures
    return q


def sasdata_load(path: Path) -> list:
    pytest.importorskip("sasdata", reason="sasdata (SasView's loader) is not installed")
    from sasdata.dataloader.loader import Loader

    return Loader().load(str(path))


def q_per_nm(data) -> np.ndarray:
    from sasdata.data_util.nxsunit import Converter

    unit = data.x_unit
    if unit.endswith("^{-1}"):
        unit = "1/" + unit[: -len("^{-1}")]
    return np.asarray(Converter(unit)(data.x, units="1/nm"))


def assert_curve(data, curve) -> None:
    """sasdata's Q, I, Idev equal the curve's q, intensity, error column (1e-12 relative) on the
    bins with data: NXcanSAS leaves the empty ones out (issue 13), Q stays increasing."""
    keep = curve.has_data
    assert 0 < keep.sum() <= keep.size
    np.testing.assert_allclose(q_per_nm(data), curve.x[keep], rtol=1e-12, atol=0)
    np.testing.assert_allclose(data.y, curve.intensity[keep], rtol=1e-12, atol=0)
    np.testing.assert_allclose(data.dy, curve.poisson[keep], rtol=1e-12, atol=0)
    assert np.all(np.diff(q_per_nm(data)) > 0)


# --------------------------------------------------------------------------- #
# .chi stays the default
# --------------------------------------------------------------------------- #


def test_chi_is_the_default_and_byte_identical(cal, base_image, tmp_path):
    assert QueueOptions().output_format == "chi"
    images = distinct_images(base_image, tmp_path / "run", 3)
    run_queue(cal, tmp_path / "run")
    for name, img in images.items():
        expected = tmp_path / "expected.chi"
        cal.write_chi(img, expected)
        assert (tmp_path / "work" / name.replace(".tif", ".chi")).read_bytes() == expected.read_bytes()
    assert not list((tmp_path / "work").glob("*.h5"))


def test_unknown_format_is_refused(cal, tmp_path):
    with pytest.raises(ValueError, match="nxcansas-run"):
        ImageQueue(cal, tmp_path, QueueOptions(output_format="hdf5"))


# --------------------------------------------------------------------------- #
# One NXcanSAS file per image
# --------------------------------------------------------------------------- #


def test_nxcansas_per_image_is_read_by_sasdata(cal3, base_image, tmp_path):
    images = distinct_images(base_image, tmp_path / "run", 3)
    q = run_queue(cal3, tmp_path / "run", output_format="nxcansas")
    work = tmp_path / "work"
    for name, img in images.items():
        stem = name[:-4]
        curves = cal3.curves(img)
        loaded = sasdata_load(work / f"{stem}.h5")
        # the two I(q) integrators are entries; the Phi-mode curve stays a .chi file
        assert [d.title for d in loaded] == [name, f"{name} [cR1]"]
        assert_curve(loaded[0], curves[0])
        assert_curve(loaded[1], curves[1])
        assert (work / f"{stem}_cP2.chi").is_file()
        assert not (work / f"{stem}.chi").exists()
    rec = q.history.records[0]
    assert rec["outputs"][0].endswith(".h5") and rec["outputs"][1].endswith("_cP2.chi")
    assert not list(work.glob(".*.part"))


def test_nxcansas_per_image_resume_skips_existing_files(cal, base_image, tmp_path):
    distinct_images(base_image, tmp_path / "run", 4)
    run_queue(cal, tmp_path / "run", output_format="nxcansas")
    (tmp_path / "work" / "img_00002.h5").unlink()
    q = run_queue(cal, tmp_path / "run", output_format="nxcansas", resume=True)
    assert q.history.processed == 1 and q.history.skipped == 3
    assert (tmp_path / "work" / "img_00002.h5").is_file()


# --------------------------------------------------------------------------- #
# One NXcanSAS file per run
# --------------------------------------------------------------------------- #


def test_run_file_holds_every_frame_read_by_sasdata(cal3, base_image, tmp_path):
    images = distinct_images(base_image, tmp_path / "run", 5)
    q = run_queue(cal3, tmp_path / "run", output_format="nxcansas-run")
    work = tmp_path / "work"
    main, second = work / "run.h5", work / "run_cR1.h5"
    assert q.run_files == [main, second]
    loaded = sasdata_load(main)
    loaded2 = sasdata_load(second)
    assert sorted(d.title for d in loaded) == sorted(images)
    for data, data2 in zip(loaded, loaded2):
        assert data2.title == data.title
        curves = cal3.curves(images[data.title])
        assert_curve(data, curves[0])
        assert_curve(data2, curves[1])
        assert data.meta_data["I0"] == pytest.approx(curves[0].parameters["I0"], rel=1e-12)
    # outputs in the history and the live file list name the run files
    assert all(r["outputs"][:2] == [str(main), str(second)] for r in q.history.records)
    lines = (work / "results" / "filelist.txt").read_text().splitlines()[1:]
    assert len(lines) == 5 and all(line.split("\t")[1] == str(main) for line in lines)
    # the Phi-mode curves are still .chi files, and nothing else was written per image
    assert sorted(p.name for p in work.glob("*.chi")) == sorted(n[:-4] + "_cP2.chi" for n in images)
    assert not list(work.glob("img_*.h5")) and not list(work.glob(".*"))


def test_run_file_name_and_output_folder(cal, base_image, tmp_path):
    distinct_images(base_image, tmp_path / "run", 2)
    q = run_queue(cal, tmp_path / "run", output_format="nxcansas-run", out_dir=tmp_path / "out",
                  run_name="beamtime7")
    assert q.run_files == [tmp_path / "out" / "beamtime7.h5"]
    assert len(read_nxcansas(tmp_path / "out" / "beamtime7.h5")) == 2


@pytest.mark.slow
def test_run_file_of_multiframe_hdf5(cal, base_image, tmp_path):
    import h5py

    root = tmp_path / "run"
    root.mkdir()
    stack = np.stack([np.maximum(base_image, 0) * (k + 1) for k in range(3)]).astype(np.uint32)
    with h5py.File(root / "scan_master.h5", "w") as f:
        f.create_dataset("entry/data/data_000001", data=stack, chunks=(1, *base_image.shape))
    q = run_queue(cal, root, output_format="nxcansas-run")
    loaded = sasdata_load(q.run_files[0])
    assert [d.title for d in loaded] == [f"scan_master.h5#{k}" for k in range(3)]
    for k, data in enumerate(loaded):
        assert_curve(data, cal.curves(stack[k])[0])


def test_run_resume_skips_frames_of_earlier_run_files(cal, base_image, tmp_path):
    root = tmp_path / "run"
    distinct_images(base_image, root, 3)
    run_queue(cal, root, output_format="nxcansas-run", replace_run_file=True)
    first = tmp_path / "work" / "run.h5"
    before = first.read_bytes()
    distinct_images(base_image, root, 2, start=3)
    q = run_queue(cal, root, output_format="nxcansas-run", resume=True, replace_run_file=True)
    assert q.history.processed == 2 and q.history.skipped == 3
    assert q.run_files == [tmp_path / "work" / "run_001.h5"]
    # frames are appended as they finish (two workers): compare as sets
    assert sorted(f["name"] for f in read_nxcansas(q.run_files[0])) == ["img_00003.tif", "img_00004.tif"]
    assert first.read_bytes() == before  # the earlier run file is untouched
    # a third resume finds every frame in one of the two files
    q = run_queue(cal, root, output_format="nxcansas-run", resume=True)
    assert q.history.processed == 0 and q.history.skipped == 5 and q.run_files == []
    assert not (tmp_path / "work" / "run_002.h5").exists()


def test_run_file_is_replaced_or_continued(cal, base_image, tmp_path):
    root = tmp_path / "run"
    distinct_images(base_image, root, 2)
    run_queue(cal, root, output_format="nxcansas-run")
    # the saxsdog command without -r: the run file is replaced
    q = run_queue(cal, root, output_format="nxcansas-run", replace_run_file=True)
    assert q.run_files == [tmp_path / "work" / "run.h5"]
    # the default (the server: a restarted or new queue): a new file next to it, all frames
    q = run_queue(cal, root, output_format="nxcansas-run")
    assert q.run_files == [tmp_path / "work" / "run_001.h5"]
    assert len(read_nxcansas(q.run_files[0])) == 2
    assert len(read_nxcansas(tmp_path / "work" / "run.h5")) == 2


def test_run_file_takes_a_frame_once(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 2)
    q = ImageQueue(cal, root, QueueOptions(output_format="nxcansas-run")).start()
    q.fill_from_directory()
    assert q.wait_until_idle(60)
    q.push(images[0], force=True)  # readdir: processed again ...
    assert q.wait_until_idle(60)
    q.stop()
    assert q.history.processed == 3
    names = [f["name"] for f in read_nxcansas(q.run_files[0])]
    assert sorted(names) == ["img_00000.tif", "img_00001.tif"]  # ... but one entry per frame


@pytest.mark.slow
def test_saxsdog_command_writes_a_run_file(cal, base_image, tmp_path):
    images = distinct_images(base_image, tmp_path / "run", 3)
    r = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(Path(cal.path)), "-S",
                        "--format", "nxcansas-run", "--run-name", "b7", "-o", str(tmp_path / "out"),
                        str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    run_file = tmp_path / "out" / "b7.h5"
    assert f"run file {run_file}" in r.stdout
    loaded = sasdata_load(run_file)
    assert sorted(d.title for d in loaded) == sorted(images)
    for data in loaded:
        assert_curve(data, cal.curves(images[data.title])[0])


# --------------------------------------------------------------------------- #
# Issue 13's outputs: units, empty bins, subtracted curves, dummy-pixel counts
# --------------------------------------------------------------------------- #

#: Bin of the first integrator emptied by the fake reduction's "dummy pixels".
DUMMY_BIN = 500


def fake_reduced(curves: list) -> list:
    """Curves as the reduction hands them over with normalization and a Background.

    The other helpers' code fills these fields (the unit, the dummy-pixel count, the valid
    bins, the subtracted curve); here they are set by hand so that the outputs are tested on
    their own: unit ``1/cm/sr``, ``1234 + k`` dummy pixels, bin ``DUMMY_BIN`` of the first
    curve emptied by dummies, and a subtracted curve ``I - 0.5·I(q0)`` with its own errors.
    """
    from dataclasses import replace

    for k, c in enumerate(curves):
        valid = np.array(c.has_data, dtype=bool)
        if k == 0:
            valid[DUMMY_BIN] = False
        level = 0.5 * float(np.max(c.intensity))
        sub = replace(c, intensity=np.where(valid, c.intensity - level, 0.0),
                      poisson=np.where(valid, np.hypot(c.poisson, 0.01 * level), 0.0),
                      stddev=None, parameters={"I0": 1.5 + k} if c.parameters else {}, valid=valid,
                      subtracted=None)
        c.valid, c.unit, c.dummy_pixels, c.subtracted = valid, "1/cm/sr", 1234 + k, sub
        sub.unit, sub.dummy_pixels = c.unit, c.dummy_pixels
    return curves


class ReducedCalibration(Calibration):
    """A calibration whose curves carry what the corrections and the background set."""

    def curves(self, image, stddev=True, metadata=None):
        extra = {} if metadata is None else {"metadata": metadata}
        return fake_reduced(super().curves(image, stddev, **extra))


@pytest.fixture(scope="module")
def reduced3(require_data_dir):
    """cal3's three integrators (two radial, one Phi-mode) with reduced curves."""
    raw = json.loads((require_data_dir / "cal.json").read_text())
    raw["Masks"].append({"MaskFile": "", "Oversampling": 1, "PixelPerRadialElement": 2, "Name": "coarse",
                         "Phi-mode": False, "qStart": 0.0, "qStop": 5.0})
    raw["Masks"].append({"MaskFile": "", "Oversampling": 1, "PixelPerRadialElement": 1, "Name": "ring",
                         "Phi-mode": True, "qStart": 0.5, "qStop": 1.5})
    return ReducedCalibration(raw, base_dir=require_data_dir)


def test_chi_keeps_empty_bins_as_zero_rows_unless_chi_drop_empty(cal, base_image, tmp_path):
    from saxsdog.io.chi import read_chi

    images = distinct_images(base_image, tmp_path / "run", 2)
    run_queue(cal, tmp_path / "run", out_dir=tmp_path / "all")
    run_queue(cal, tmp_path / "run", out_dir=tmp_path / "dropped", chi_drop_empty=True)
    for name, img in images.items():
        curve = cal.curves(img)[0]
        keep = curve.has_data
        assert not keep.all()  # the real mask empties bins near the beam
        every = read_chi(tmp_path / "all" / name.replace(".tif", ".chi"))
        assert every.q.size == curve.x.size and np.all(every.intensity[~keep] == 0)
        dropped = read_chi(tmp_path / "dropped" / name.replace(".tif", ".chi"))
        np.testing.assert_array_equal(dropped.q, every.q[keep])
        np.testing.assert_array_equal(dropped.intensity, every.intensity[keep])
        np.testing.assert_array_equal(dropped.error, every.error[keep])
        assert dropped.calibration == every.calibration and dropped.parameters == every.parameters
        assert int(dropped.header[3]) == keep.sum()


def test_saxsdog_flag_chi_drop_empty():
    from saxsdog.cli.saxsdog import _queue_options, build_parser

    args = build_parser().parse_args(["-c", "cal.json", "--chi-drop-empty", "run"])
    assert _queue_options(args, {}).chi_drop_empty is True
    assert _queue_options(build_parser().parse_args(["-c", "cal.json", "run"]), {}).chi_drop_empty is False


def test_server_flag_chi_drop_empty():
    from saxsdog.cli.server import build_parser

    assert build_parser().parse_args(["--chi-drop-empty", "base"]).chi_drop_empty is True
    assert build_parser().parse_args(["base"]).chi_drop_empty is False


def test_subtracted_curves_are_written_beside_the_chi_files(reduced3, base_image, tmp_path):
    from saxsdog.io.chi import read_chi

    images = distinct_images(base_image, tmp_path / "run", 2)
    q = run_queue(reduced3, tmp_path / "run")
    work = tmp_path / "work"
    for name, img in images.items():
        stem = name[:-4]
        curves = reduced3.curves(img)
        for sfx, c in zip(["", "_cR1", "_cP2"], curves):
            main = read_chi(work / f"{stem}{sfx}.chi")
            sub = read_chi(work / f"{stem}{sfx}_sub.chi")
            np.testing.assert_array_equal(main.intensity, np.nan_to_num(c.intensity))
            np.testing.assert_allclose(sub.intensity, c.subtracted.intensity, rtol=1e-15, atol=0)
            np.testing.assert_allclose(sub.error, c.subtracted.poisson, rtol=1e-15, atol=0)
            np.testing.assert_array_equal(sub.q, main.q)
        assert read_chi(work / f"{stem}_sub.chi").parameters == {"I0": 1.5}
    rec = q.history.records[0]
    assert [Path(o).name for o in rec["outputs"]][-3:] == [f"{Path(rec['path']).stem}{s}_sub.chi"
                                                          for s in ("", "_cR1", "_cP2")]
    assert rec["dummy_pixels"] == 1234
    assert rec["parameters"]["R0"]["dummy_pixels"] == 1234 and rec["parameters"]["R1"]["dummy_pixels"] == 1235
    # the subtracted curves' integral parameters follow the integrators' (the first stays R0)
    assert list(rec["parameters"]) == ["R0", "R1", "R0_sub", "R1_sub"]
    assert rec["parameters"]["R0_sub"]["I0"] == 1.5 and rec["parameters"]["R1_sub"]["I0"] == 2.5


def test_nxcansas_per_image_has_the_unit_the_valid_bins_and_the_subtracted_entries(reduced3, base_image, tmp_path):
    import h5py

    images = distinct_images(base_image, tmp_path / "run", 1)
    run_queue(reduced3, tmp_path / "run", output_format="nxcansas")
    (name, img), = images.items()
    path = tmp_path / "work" / "img_00000.h5"
    curves = reduced3.curves(img)
    loaded = sasdata_load(path)
    assert [d.title for d in loaded] == [name, f"{name} [cR1]", f"{name} [sub]", f"{name} [cR1_sub]"]
    for data, c in zip(loaded, [curves[0], curves[1], curves[0].subtracted, curves[1].subtracted]):
        assert_curve(data, c)
    assert DUMMY_BIN not in np.flatnonzero(curves[0].valid)
    assert curves[0].x[DUMMY_BIN] not in q_per_nm(loaded[0])  # the bin emptied by dummies is left out
    with h5py.File(path, "r") as f:
        assert f["sasentry01/sasdata01/I"].attrs["units"] == "1/cm"
        assert f["sasentry03/sasdata01/I"].attrs["saxsdog_unit"] == "1/cm/sr"
        assert f["sasentry01/parameters/dummy_pixels"][()] == 1234
        assert f["sasentry03/parameters/I0"][()] == 1.5
        assert "mask" in f["sasentry01/sasprocess"] and "error_model" in f["sasentry01/sasprocess"]
    assert (tmp_path / "work" / "img_00000_cP2_sub.chi").is_file()


def test_run_files_of_the_subtracted_curves(reduced3, base_image, tmp_path):
    images = distinct_images(base_image, tmp_path / "run", 3)
    q = run_queue(reduced3, tmp_path / "run", output_format="nxcansas-run")
    work = tmp_path / "work"
    names = ["run.h5", "run_cR1.h5", "run_sub.h5", "run_cR1_sub.h5"]
    assert sorted(p.name for p in q.run_files) == sorted(names)
    loaded = [sasdata_load(work / n) for n in names]
    for k, data in enumerate(loaded[0]):
        curves = reduced3.curves(images[data.title])
        assert [d[k].title for d in loaded] == [data.title] * 4
        assert_curve(loaded[0][k], curves[0])
        assert_curve(loaded[1][k], curves[1])
        assert_curve(loaded[2][k], curves[0].subtracted)
        assert_curve(loaded[3][k], curves[1].subtracted)
        assert data.y_unit in ("1/cm", "cm^{-1}")
        assert data.meta_data["dummy_pixels"] == 1234
        assert loaded[2][k].meta_data["I0"] == 1.5
    rec = q.history.records[0]
    assert sorted(Path(o).name for o in rec["outputs"] if o.endswith(".h5")) == sorted(names)
    assert Path(rec["outputs"][0]).name == "run.h5"
    assert not list(work.glob(".*"))


def test_live_curves_carry_the_unit_the_dummy_count_and_the_subtracted_trace(reduced3, base_image, tmp_path):
    distinct_images(base_image, tmp_path / "run", 1)
    q = run_queue(reduced3, tmp_path / "run", keep_curves=True)
    graphs = q.history.latest_curves.curves
    assert [g["conf"]["suffix"] for g in graphs] == ["", "_cR1", "_cP2", "_sub", "_cR1_sub", "_cP2_sub"]
    assert [g["conf"].get("of") for g in graphs] == [None, None, None, 0, 1, 2]
    assert all(g["columnLabels"][1] == "Intensity (1/cm/sr)" and g["unit"] == "1/cm/sr" for g in graphs)
    assert graphs[0]["dummy_pixels"] == 1234 and graphs[3]["dummy_pixels"] == 1234
    assert graphs[0]["valid"][DUMMY_BIN] is False
    json.dumps(graphs[0]["valid"])  # plain JSON for the server's plot command


def test_plain_curves_keep_the_original_graph_labels(cal, base_image, tmp_path):
    distinct_images(base_image, tmp_path / "run", 1)
    q = run_queue(cal, tmp_path / "run", keep_curves=True)
    (graph,) = q.history.latest_curves.curves
    assert graph["columnLabels"][1:] == ["Intensity (Count/Pixel)", "Error Margin", "Standard Deviation"]
    assert graph["unit"] == "counts/pixel" and graph["dummy_pixels"] == 0
    assert q.history.records[0]["dummy_pixels"] == 0


def test_curve_plots_show_the_unit_and_the_subtracted_curve(tmp_path):
    from saxsdog.core.integrators import Curve
    from saxsdog.pipeline.plots import curve_figure, write_curve_plot

    x = np.linspace(0.1, 2, 50)
    sub = Curve(x, 0.5 * np.exp(-x), None, 0.01 * np.ones(50), {}, unit="1/cm/sr")
    curve = Curve(x, np.exp(-x), None, 0.01 * np.ones(50), {}, unit="1/cm/sr", subtracted=sub)
    fig = curve_figure(x, curve.intensity, curve.poisson, "t", unit="1/cm/sr",
                       subtracted=(sub.x, sub.intensity, sub.poisson))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Intensity [1/cm/sr]"
    assert [line.get_label() for line in ax.get_lines()] == ["I", "I - background"]
    assert curve_figure(x, curve.intensity).axes[0].get_ylabel() == "Intensity [counts/pixel]"
    write_curve_plot(curve, tmp_path / "c.svg", title="t")
    assert "background" in (tmp_path / "c.svg").read_text()


def test_live_monitor_of_the_saxsdog_command_gets_unit_subtracted_curve_and_dummy_count():
    from types import SimpleNamespace

    from saxsdog.cli.saxsdog import _show_latest

    calls = []

    class Monitor:
        def update(self, *args, **kw):
            calls.append((args, kw))

    x = [0.1, 0.2]
    graphs = [{"conf": {}, "array": [x, [2.0, 1.0], [0.1, 0.1]], "unit": "1/cm", "dummy_pixels": 73671},
              {"conf": {"subtracted": True, "of": 0}, "array": [x, [1.0, 0.5], [0.2, 0.2]], "unit": "1/cm"}]
    _show_latest(Monitor(), SimpleNamespace(path="/d/img.tif", curves=graphs))
    (args, kw), = calls
    assert args[3] == "img.tif (73,671 dummy pixels)"
    assert kw["unit"] == "1/cm" and kw["subtracted"] == (x, [1.0, 0.5], [0.2, 0.2])
    calls.clear()
    _show_latest(Monitor(), SimpleNamespace(path="/d/img.tif", curves=[{"array": [x, [1, 1], [0, 0]]}]))
    (args, kw), = calls
    assert args[3] == "img.tif" and kw["unit"] is None and kw["subtracted"] is None
    # with sigma clipping the live plot's title gives its rejected count too
    calls.clear()
    graphs[0]["rejected_pixels"] = 1768
    _show_latest(Monitor(), SimpleNamespace(path="/d/img.tif", curves=graphs))
    assert calls[0][0][3] == "img.tif (73,671 dummy pixels, 1,768 rejected by sigma clipping)"


class NaNBinCalibration(Calibration):
    """Curves with one bin that has pixels but no finite value (valid says it holds data)."""

    def curves(self, image, stddev=True, metadata=None):
        extra = {} if metadata is None else {"metadata": metadata}
        curves = super().curves(image, stddev, **extra)
        c = curves[0]
        c.valid = np.array(c.has_data, dtype=bool)
        k = int(np.flatnonzero(c.valid)[10])
        c.intensity = c.intensity.copy()
        c.intensity[k] = np.nan
        return curves


def test_nxcansas_leaves_out_bins_without_a_finite_value(require_data_dir, base_image, tmp_path):
    cal = NaNBinCalibration(require_data_dir / "cal.json")
    distinct_images(base_image, tmp_path / "run", 1)
    run_queue(cal, tmp_path / "run", output_format="nxcansas")
    (frame,) = read_nxcansas(tmp_path / "work" / "img_00000.h5")
    c = cal.curves(distinct_images(base_image, tmp_path / "again", 1)["img_00000.tif"])[0]
    keep = c.valid & np.isfinite(c.intensity)
    assert keep.sum() == c.valid.sum() - 1
    np.testing.assert_array_equal(frame["q"], c.x[keep])
    assert np.all(np.isfinite(frame["I"]))


@pytest.mark.slow
def test_subtracted_run_files_on_a_full_disk_keep_every_frame(reduced3, data_dir, tmp_path, small_tmpfs):
    """A full disk under the run files of the subtracted curves too: the queue pauses, nothing
    fails, and once space is freed all four run files hold every frame exactly once."""
    from saxsdog.testing import run_queue_through_full_disk

    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 4)
    out = small_tmpfs / "out"
    q = run_queue_through_full_disk(reduced3, root, images, small_tmpfs, out_dir=out,
                                    output_format="nxcansas-run")
    st = q.stats()
    assert st["images_failed"] == 0 and st["images_processed"] == 4
    names = ["run.h5", "run_cR1.h5", "run_sub.h5", "run_cR1_sub.h5"]
    assert sorted(p.name for p in q.run_files) == sorted(names)
    for n in names:
        assert sorted(f["name"] for f in read_nxcansas(out / n)) == sorted(p.name for p in images)
    assert not list(out.glob(".*.part"))
