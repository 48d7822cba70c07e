"""NXcanSAS files: SasView's loader (sasdata) reads every file we write, exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from saxsdog.io.nxcansas import (NXCANSAS_VERSION, NXcanSASRunWriter, geometry_fields,
                                 read_nxcansas, write_nxcansas)
from saxsdog.testing import fill_disk

CAL = {
    "Title": "test",
    "Geometry": {
        "Tilt": {"TiltAngleDeg": -0.56, "TiltRotDeg": 73.569},
        "DedectorDistanceMM": 1031.657,
        "BeamCenter": [808.37, 387.772],
        "Imagesize": [1043, 981],
        "PixelSizeMicroM": [172.0, 172.0],
    },
    "Masks": [{"MaskFile": "AAA_integ.msk", "Oversampling": 3, "PixelPerRadialElement": 1,
               "qStart": 0.0, "qStop": 5.0}],
    "Wavelength": 1.54,
}


def make_frames(n: int, nq: int = 200, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    q = np.linspace(0.05, 5.0, nq)
    frames = []
    for k in range(n):
        intensity = rng.random(nq) * 1e4 + 1.0 + 1000.0 * k  # every frame distinct
        frames.append({
            "name": f"img_{k:05d}.tif",
            "q": q,
            "I": intensity,
            "Idev": np.sqrt(intensity) / 7.0 + rng.random(nq) * 1e-3,
            "metadata": {"date": f"2014-01-31T12:26:{k % 60:02d}.000",
                         "timestamp": 1391171212.0 + k, "exposure_time": 0.5,
                         "detector": "PILATUS 1M", "frame": k},
            "parameters": {"I0": 10.0 + k, "I1": 20.5, "I2": 30.25, "invariant": 30.25,
                           "correlation_length": None if k == 0 else 2.125},
        })
    return frames


# --------------------------------------------------------------------------- #
# sasdata (SasView's loader)
# --------------------------------------------------------------------------- #


def sasdata_load(path: Path) -> list:
    """Load with sasdata's NXcanSAS reader, both through the Loader and the reader class."""
    pytest.importorskip("sasdata", reason="sasdata (SasView's loader) is not installed: "
                                          "pip install sasdata")
    from sasdata.dataloader.loader import Loader
    from sasdata.dataloader.readers.cansas_reader_HDF5 import Reader

    via_loader = Loader().load(str(path))
    via_reader = Reader().read(str(path))
    assert len(via_loader) == len(via_reader)
    for a, b in zip(via_loader, via_reader):
        np.testing.assert_array_equal(a.y, b.y)
    return via_loader


def to_per_nm(data) -> np.ndarray:
    """sasdata converts Q to 1/Å on load; convert back with its own unit converter."""
    from sasdata.data_util.nxsunit import Converter

    unit = data.x_unit  # sasdata formats "1/A" as "A^{-1}"
    if unit.endswith("^{-1}"):
        unit = "1/" + unit[: -len("^{-1}")]
    return np.asarray(Converter(unit)(data.x, units="1/nm"))


def assert_same_curve(data, frame: dict) -> None:
    q = to_per_nm(data)
    np.testing.assert_allclose(q, frame["q"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(data.y, frame["I"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(data.dy, frame["Idev"], rtol=1e-12, atol=0)


def test_sasdata_reads_single_image_file(tmp_path):
    frame = make_frames(1)[0]
    path = write_nxcansas(tmp_path / "img_00000.h5", [frame], CAL, title="one image")
    (data,) = sasdata_load(path)
    assert_same_curve(data, frame)
    assert data.title == "img_00000.tif"
    assert data.errors == []
    assert data.y_unit == "arbitrary"
    assert data.source.wavelength == pytest.approx(1.54)
    assert data.detector[0].distance == pytest.approx(1031.657)
    assert data.detector[0].distance_unit == "mm"
    assert data.detector[0].beam_center.x == pytest.approx(387.772 * 0.172)
    assert data.detector[0].pixel_size.y == pytest.approx(0.172)
    assert data.meta_data["I0"] == pytest.approx(10.0)
    assert data.meta_data["exposure_time"] == pytest.approx(0.5)


def test_sasdata_reads_every_frame_of_a_run_file(tmp_path):
    frames = make_frames(7)
    path = write_nxcansas(tmp_path / "run.h5", frames, CAL, title="run 1")
    loaded = sasdata_load(path)
    assert [d.title for d in loaded] == [f["name"] for f in frames]
    for data, frame in zip(loaded, frames):
        assert_same_curve(data, frame)
        assert data.run == ["run 1"]
        assert data.meta_data["I0"] == pytest.approx(frame["parameters"]["I0"])


@pytest.mark.slow
def test_streaming_writer_is_atomic_and_sasdata_reads_it(tmp_path):
    frames = make_frames(150, nq=120, seed=3)
    final = tmp_path / "stream.h5"
    with NXcanSASRunWriter(final, frames[0]["q"], CAL, "stream", flush_every=16) as w:
        for fr in frames:
            w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"])
            # Never visible under its final name before close().
            assert not final.exists()
        assert w.count >= 144  # written in blocks of 16
        parts = list(tmp_path.glob(".stream.h5.*.part"))
        assert len(parts) == 1
    assert final.exists()
    assert list(tmp_path.glob("*.part")) == []
    loaded = sasdata_load(final)
    assert len(loaded) == 150
    for data, frame in zip(loaded, frames):
        assert data.title == frame["name"]
        assert_same_curve(data, frame)


def test_frames_with_other_q_grids(tmp_path):
    frames = make_frames(3, nq=80)
    frames[1] = dict(frames[1], q=np.linspace(0.1, 3.0, 50), I=np.arange(1.0, 51.0),
                     Idev=np.full(50, 0.25))
    frames[2] = dict(frames[2], q=frames[2]["q"] * 1.5)
    path = write_nxcansas(tmp_path / "mixed.h5", frames, CAL)
    loaded = sasdata_load(path)
    assert len(loaded) == 3
    for data, frame in zip(loaded, frames):
        assert_same_curve(data, frame)
    back = read_nxcansas(path)
    for got, frame in zip(back, frames):
        np.testing.assert_array_equal(got["q"], frame["q"])


@pytest.mark.slow
def test_real_curve_of_the_example_calibration(tmp_path, real_calibration, real_image, data_dir):
    """buf1_00000.tif integrated with cal.json, written and loaded by SasView's loader."""
    curve = real_calibration.curves(real_image)[0]
    frame = {"name": "buf1_00000.tif", "q": curve.x, "I": curve.intensity,
             "Idev": curve.poisson, "parameters": curve.parameters}
    path = write_nxcansas(tmp_path / "buf1_00000.h5", [frame], real_calibration.raw)
    (data,) = sasdata_load(path)
    assert_same_curve(data, frame)


# --------------------------------------------------------------------------- #
# The NXcanSAS structure itself
# --------------------------------------------------------------------------- #


def test_required_nxcansas_attributes(tmp_path):
    frames = make_frames(3)
    path = write_nxcansas(tmp_path / "run.h5", frames, CAL, title="attrs")
    with h5py.File(path, "r") as f:
        assert f.attrs["NX_class"] == "NXroot"
        assert f.attrs["default"] == "sasentry01"
        assert int(f.attrs["frames"]) == 3
        names = list(f.keys())
        assert names == ["sasentry01", "sasentry02", "sasentry03"]
        addresses = set()
        for name, frame in zip(names, frames):
            e = f[name]
            assert e.attrs["NX_class"] == "NXentry"
            assert e.attrs["canSAS_class"] == "SASentry"
            assert e.attrs["version"] == NXCANSAS_VERSION == "1.1"
            assert e.attrs["default"] == "sasdata01"
            assert e["definition"][()].decode() == "NXcanSAS"
            assert e["title"][()].decode() == frame["name"]
            assert e["run"][()].decode() == "attrs"
            d = e["sasdata01"]
            assert d.attrs["NX_class"] == "NXdata"
            assert d.attrs["canSAS_class"] == "SASdata"
            assert d.attrs["signal"] == "I"
            assert d.attrs["I_axes"] == "Q"
            assert list(d.attrs["Q_indices"]) == [0]
            assert d.attrs["timestamp"] == frame["metadata"]["date"]
            assert d["Q"].attrs["units"] == "1/nm"
            assert d["I"].attrs["units"] == "arbitrary"
            assert d["I"].attrs["uncertainties"] == "Idev"
            assert d["Idev"].attrs["units"] == "arbitrary"
            assert d["I"].shape == d["Idev"].shape == d["Q"].shape == (200,)
            np.testing.assert_array_equal(d["I"][()], frame["I"])
            addresses.add(h5py.h5o.get_info(d["Q"].id).addr)
            inst = e["sasinstrument"]
            assert inst.attrs["canSAS_class"] == "SASinstrument"
            assert inst.attrs["NX_class"] == "NXinstrument"
            det = inst["sasdetector"]
            assert det.attrs["canSAS_class"] == "SASdetector"
            assert det["SDD"][()] == pytest.approx(1031.657) and det["SDD"].attrs["units"] == "mm"
            assert det["distance"][()] == pytest.approx(1031.657)
            assert det["beam_center_y"][()] == pytest.approx(808.37 * 0.172)
            assert det["x_pixel_size"][()] == pytest.approx(0.172)
            assert det["x_pixel_size"].attrs["units"] == "mm"
            src = inst["sassource"]
            assert src.attrs["canSAS_class"] == "SASsource"
            assert src["incident_wavelength"][()] == pytest.approx(1.54)
            assert src["incident_wavelength"].attrs["units"] == "angstrom"
            assert inst["monochromator"].attrs["NX_class"] == "NXmonochromator"
            proc = e["sasprocess"]
            assert proc.attrs["canSAS_class"] == "SASprocess"
            assert json.loads(proc["calibration"][()]) == CAL
            assert e["parameters"]["I0"][()] == frame["parameters"]["I0"]
            assert e["image"]["exposure_time"].attrs["units"] == "s"
        # The q grid is stored once and hard-linked into every entry.
        assert len(addresses) == 1


def test_read_back_metadata_and_parameters(tmp_path):
    frames = make_frames(2)
    path = write_nxcansas(tmp_path / "meta.h5", frames, CAL)
    back = read_nxcansas(path)
    assert len(back) == 2
    first = back[0]
    assert first["name"] == "img_00000.tif"
    assert first["q_units"] == "1/nm" and first["I_units"] == "arbitrary"
    assert first["metadata"] == frames[0]["metadata"]
    assert isinstance(first["metadata"]["frame"], int)
    assert first["parameters"]["I0"] == 10.0
    assert math.isnan(first["parameters"]["correlation_length"])  # None is stored as NaN
    assert back[1]["parameters"]["correlation_length"] == 2.125
    assert first["calibration"] == CAL
    assert first["timestamp"] == "2014-01-31T12:26:00.000"
    np.testing.assert_array_equal(back[1]["Idev"], frames[1]["Idev"])


def test_exception_in_context_leaves_no_file(tmp_path):
    final = tmp_path / "broken.h5"
    frames = make_frames(3)
    with pytest.raises(RuntimeError):
        with NXcanSASRunWriter(final, frames[0]["q"], CAL) as w:
            w.append(frames[0]["name"], frames[0]["I"], frames[0]["Idev"])
            w.flush()
            raise RuntimeError("worker died")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_append_checks_lengths_and_closed_state(tmp_path):
    q = np.linspace(0.1, 1.0, 10)
    w = NXcanSASRunWriter(tmp_path / "x.h5", q)
    with pytest.raises(ValueError, match="same length"):
        w.append("a", np.ones(9), np.ones(10))
    w.append("a", np.ones(10), np.ones(10))
    assert w.close() == tmp_path / "x.h5"
    with pytest.raises(ValueError, match="closed"):
        w.append("b", np.ones(10), np.ones(10))
    assert len(read_nxcansas(tmp_path / "x.h5")) == 1


def test_write_nxcansas_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        write_nxcansas(tmp_path / "x.h5", [])
    with pytest.raises(ValueError, match="'Idev'"):
        write_nxcansas(tmp_path / "x.h5", [{"name": "a", "q": [1.0, 2.0], "I": [1.0, 2.0]}])
    assert not (tmp_path / "x.h5").exists()


def test_read_generic_multiframe_nxcansas(tmp_path):
    """Files from elsewhere with I(Time, Q) are split into frames."""
    path = tmp_path / "other.h5"
    q = np.linspace(0.1, 1, 20)
    stack = np.arange(60.0).reshape(3, 20)
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs.update({"NX_class": "NXentry", "canSAS_class": "SASentry", "version": "1.1"})
        e["title"] = "series"
        d = e.create_group("data")
        d.attrs.update({"NX_class": "NXdata", "canSAS_class": "SASdata", "signal": "I",
                        "I_axes": "Time,Q", "Q_indices": [1]})
        d["I"] = stack
        d["I"].attrs["uncertainties"] = "Idev"
        d["Idev"] = stack / 10
        d["Q"] = q
        d["Time"] = [0.0, 1.0, 2.0]
    back = read_nxcansas(path)
    assert [b["name"] for b in back] == ["series#0", "series#1", "series#2"]
    np.testing.assert_array_equal(back[2]["I"], stack[2])
    np.testing.assert_array_equal(back[1]["Idev"], stack[1] / 10)


def test_geometry_fields_units():
    geo = geometry_fields({"Geometry": {"PixelSizeMicroM": [100.0, 172.0], "BeamCenter": [10.0, 20.0],
                                        "DetectorDistanceMM": 500.0}, "Wavelength": 1.0})
    det = geo["detector"]
    assert det["y_pixel_size"] == (0.1, "mm") and det["x_pixel_size"] == (0.172, "mm")
    assert det["beam_center_y"][0] == pytest.approx(1.0)
    assert det["beam_center_x"][0] == pytest.approx(3.44)
    assert det["SDD"] == (500.0, "mm")
    assert geo["source"]["incident_wavelength"] == (1.0, "angstrom")
    assert geometry_fields(None) == {"detector": {}, "source": {}}


def test_geometry_fields_read_either_spelling_and_the_loaded_form():
    # geometry_fields reads through saxsdog.config: the file form in the original's spellings,
    # in saxsdog's, and the loaded form (Calibration.config) all give the same instrument fields
    from saxsdog.config import CALIBRATION

    modern = json.loads(json.dumps(CAL))
    g = modern["Geometry"]
    g["DetectorDistanceMM"], g["ImageSize"] = g.pop("DedectorDistanceMM"), g.pop("Imagesize")
    loaded = CALIBRATION.load(CAL)
    expected = geometry_fields(CAL)
    assert expected["detector"]["SDD"] == (1031.657, "mm")
    assert (expected["detector"]["y_pixels"], expected["detector"]["x_pixels"]) == ((1043, None), (981, None))
    assert geometry_fields(modern) == expected == geometry_fields(loaded)
    assert "DedectorDistanceMM" in CAL["Geometry"]  # the argument is not changed


# --------------------------------------------------------------------------- #
# A full disk (a real, small tmpfs)
# --------------------------------------------------------------------------- #


@pytest.mark.slow
@pytest.mark.parametrize("room", [0, 40_000, 300_000])
def test_run_file_on_a_full_disk_keeps_every_frame_and_completes_once_space_is_freed(small_tmpfs, room):
    """The disk fills before the file starts (room 0) or while its frames are written (a
    failure in the middle of a batch, even of one write): nothing is lost or written twice,
    the file appears only once complete, and sasdata reads every frame."""
    import errno

    frames = make_frames(120, nq=300, seed=5)
    final = small_tmpfs / "out" / "run.h5"
    final.parent.mkdir()
    filler = fill_disk(small_tmpfs, leave=room)
    w = NXcanSASRunWriter(final, frames[0]["q"], CAL, "full disk", flush_every=16)
    for fr in frames:  # never raises for space: what the disk refuses is held
        w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"])
    assert w.waiting_for_space is not None and w.waiting_for_space.errno == errno.ENOSPC
    assert w.waiting_bytes > 0
    with pytest.raises(OSError) as err:
        w.flush()
    assert err.value.errno == errno.ENOSPC and "wait for space" in str(err.value)
    with pytest.raises(OSError):
        w.close()  # still full: nothing renamed, nothing lost
    with pytest.raises(OSError):
        w.close()
    assert not final.exists() and len(list(final.parent.glob(".run.h5.*.part"))) == 1
    filler.unlink()
    assert w.close() == final
    assert w.waiting_for_space is None
    assert list(final.parent.iterdir()) == [final]
    loaded = sasdata_load(final)
    assert [d.title for d in loaded] == [f["name"] for f in frames]
    for data, frame in zip(loaded, frames):
        assert_same_curve(data, frame)
    assert [f["name"] for f in read_nxcansas(final)] == [f["name"] for f in frames]


def test_run_file_flush_resumes_writing_after_the_disk_was_full(small_tmpfs):
    """Freed space lets flush() write through; later frames go straight to disk again."""
    frames = make_frames(60, nq=300, seed=6)
    final = small_tmpfs / "run.h5"
    w = NXcanSASRunWriter(final, frames[0]["q"], CAL, flush_every=8)
    for fr in frames[:20]:
        w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"])
    filler = fill_disk(small_tmpfs, leave=20_000)
    for fr in frames[20:40]:
        w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"])
    assert w.waiting_for_space is not None
    filler.unlink()
    w.flush()
    assert w.waiting_for_space is None and w.waiting_bytes == 0
    for fr in frames[40:]:
        w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"])
    assert w.waiting_bytes == 0
    w.close()
    got = read_nxcansas(final)
    assert [f["name"] for f in got] == [f["name"] for f in frames]
    for g, fr in zip(got, frames):
        np.testing.assert_array_equal(g["I"], fr["I"])


# --------------------------------------------------------------------------- #
# Empty bins, units, provenance (issue 13's outputs)
# --------------------------------------------------------------------------- #


def test_bins_without_data_are_left_out_and_sasdata_reads_each_frame(tmp_path):
    """Empty bins are omitted (not written as I = 0, Idev = 0); Q stays increasing per frame,
    a frame's own Q is shared with the next frame of the same bins, and SasView reads them all."""
    frames = make_frames(4, nq=60)
    valid = np.ones(60, dtype=bool)
    valid[:7] = False  # behind the beam stop
    valid[30:33] = False  # a detector gap
    other = valid.copy()
    other[50] = False  # this frame's dummy pixels emptied one more bin
    masks = [valid, valid, other, None]
    for fr, keep in zip(frames, masks):
        if keep is not None:
            fr["I"] = np.where(keep, fr["I"], 0.0)
            fr["Idev"] = np.where(keep, fr["Idev"], 0.0)
            fr["valid"] = keep
    path = write_nxcansas(tmp_path / "run.h5", frames, CAL, title="gaps")
    loaded = sasdata_load(path)
    assert len(loaded) == 4
    for data, fr, keep in zip(loaded, frames, masks):
        k = np.ones(60, dtype=bool) if keep is None else keep
        assert_same_curve(data, {"q": fr["q"][k], "I": fr["I"][k], "Idev": fr["Idev"][k]})
        assert np.all(np.diff(to_per_nm(data)) > 0)
        assert np.all(data.dy > 0)  # no zero uncertainty reaches a fit
    with h5py.File(path, "r") as f:
        addr = [h5py.h5o.get_info(f[f"sasentry0{i}/sasdata01/Q"].id).addr for i in range(1, 5)]
        assert f["sasentry01/sasdata01/Q"].shape == (60 - 10,)
        assert f["sasentry03/sasdata01/Q"].shape == (60 - 11,)
    assert addr[0] == addr[1]  # the same bins: one Q, hard-linked
    assert len(set(addr)) == 3
    back = read_nxcansas(path)
    np.testing.assert_array_equal(back[0]["q"], frames[0]["q"][valid])
    np.testing.assert_array_equal(back[3]["q"], frames[3]["q"])


def test_a_frame_without_any_bin_with_data_is_written_whole_and_the_file_stays_readable(tmp_path):
    """sasdata refuses a whole file if one SASdata is empty (seen with sasdata 0.11)."""
    frames = make_frames(3, nq=20)
    frames[1]["valid"] = np.zeros(20, dtype=bool)  # every pixel of this frame was a dummy
    frames[2]["valid"] = np.arange(20) >= 5
    path = write_nxcansas(tmp_path / "run.h5", frames, CAL)
    loaded = sasdata_load(path)
    assert [d.title for d in loaded] == [f["name"] for f in frames]
    assert_same_curve(loaded[1], frames[1])
    assert loaded[2].x.size == 15


def test_valid_of_the_wrong_length_is_refused(tmp_path):
    with NXcanSASRunWriter(tmp_path / "x.h5", np.linspace(0.1, 1, 10)) as w:
        with pytest.raises(ValueError, match="valid"):
            w.append("a", np.ones(10), np.ones(10), valid=np.ones(9, dtype=bool))
        w.append("b", np.ones(10), np.ones(10))


@pytest.mark.parametrize("unit, nx", [("counts/pixel", "arbitrary"), ("counts/pixel/s", "arbitrary"),
                                      ("1/cm", "1/cm"), ("1/cm/sr", "1/cm"), ("1/(cm sr)", "1/cm"),
                                      ("cm^-1 sr^-1", "1/cm"), ("1/m", "1/m"), ("cm2/g", "cm2/g"),
                                      ("1/sr", "arbitrary"), ("counts/pixel/s/monitor/cm", "arbitrary"),
                                      (None, "arbitrary"), ("weird", "arbitrary")])
def test_nxcansas_units_of_saxsdog_units(unit, nx):
    from saxsdog.io.nxcansas import nx_intensity_units

    assert nx_intensity_units(unit) == nx


def test_intensity_in_the_curves_unit_absolute_is_1_per_cm(tmp_path):
    frames = make_frames(2, nq=30)
    frames[0]["unit"] = "1/cm/sr"
    frames[1]["unit"] = "counts/pixel/s"
    path = write_nxcansas(tmp_path / "abs.h5", frames, CAL)
    with h5py.File(path, "r") as f:
        for entry, nx, own in (("sasentry01", "1/cm", "1/cm/sr"), ("sasentry02", "arbitrary", "counts/pixel/s")):
            for col in ("I", "Idev"):
                ds = f[entry]["sasdata01"][col]
                assert ds.attrs["units"] == nx
                assert ds.attrs["saxsdog_unit"] == own
    loaded = sasdata_load(path)
    assert loaded[0].y_unit in ("1/cm", "cm^{-1}")
    assert [fr["unit"] for fr in read_nxcansas(path)] == ["1/cm/sr", "counts/pixel/s"]
    with NXcanSASRunWriter(tmp_path / "run.h5", frames[0]["q"], CAL, unit="1/cm") as w:
        w.append("a", frames[0]["I"], frames[0]["Idev"])
    assert read_nxcansas(tmp_path / "run.h5")[0]["I_units"] == "1/cm"


V2_CAL = dict(
    CAL, Version=2, PolarizationCorrection={"Fraction": 0.95, "Angle": 0.0},
    Corrections={"SolidAngle": True, "DarkFile": "dark.tif", "FlatFile": "flat.edf", "MaskNegative": True,
                 "DummyValue": -2, "ErrorModel": "azimuthal", "SigmaClip": {"Sigma": 4, "Cycles": 3}},
    Normalization={"ExposureTime": "header", "Monitor": {"Header": "Flux"}, "Transmission": 0.8,
                   "ThicknessMM": 1.5, "AbsoluteScale": 12.5},
    Background={"File": "buffer.chi", "Scale": 0.98},
)


def test_process_notes_of_a_version_1_calibration():
    """What a version-1 file does: its mask, polarization and error model, and the dummy-pixel
    exclusion when its migration to the current schema turns that on (it keeps SolidAngle off)."""
    from saxsdog.config import CALIBRATION
    from saxsdog.io.nxcansas import process_notes

    migrated = CALIBRATION.load(CAL).get("Corrections") or {}
    dummies = ["dummy_pixels"] if migrated.get("MaskNegative") else []
    notes = {n["name"]: n for n in process_notes(dict(CAL, PolarizationCorrection={"Fraction": 0.9, "Angle": 10.0}))}
    assert list(notes) == ["mask", *dummies, "polarization", "error_model"]
    assert notes["mask"]["files"] == ["AAA_integ.msk"]
    assert notes["polarization"]["parameters"] == {"Fraction": 0.9, "Angle": 10.0}
    assert notes["error_model"]["parameters"] == {"ErrorModel": "poisson"}
    assert [n["name"] for n in process_notes(CAL)] == ["mask", *dummies, "error_model"]
    assert process_notes(None) == []


def test_process_notes_of_a_version_2_calibration_list_every_correction_with_its_files():
    from saxsdog.io.nxcansas import process_notes

    notes = {n["name"]: n for n in process_notes(V2_CAL)}
    assert list(notes) == ["dark", "flat_field", "mask", "dummy_pixels", "solid_angle", "polarization",
                           "sigma_clip", "error_model", "normalization", "absolute_scale", "background"]
    assert notes["dark"]["files"] == ["dark.tif"]
    assert notes["flat_field"]["files"] == ["flat.edf"]
    assert notes["background"]["files"] == ["buffer.chi"]
    assert notes["background"]["parameters"]["Scale"] == 0.98
    assert notes["sigma_clip"]["parameters"] == {"Sigma": 4, "Cycles": 3}
    assert notes["error_model"]["parameters"] == {"ErrorModel": "azimuthal"}
    assert notes["normalization"]["parameters"] == {"ExposureTime": "header", "Monitor": {"Header": "Flux"},
                                                    "Transmission": 0.8, "ThicknessMM": 1.5}
    assert notes["absolute_scale"]["parameters"] == {"AbsoluteScale": 12.5}
    # the divisor takes the thickness in cm (ThicknessMM / 10): the note said "in mm"
    assert "thickness in cm" in notes["normalization"]["description"]
    assert "-2" in notes["dummy_pixels"]["description"]
    off = dict(V2_CAL, Corrections={"MaskNegative": False, "ErrorModel": "legacy"}, Normalization={},
               Background={"File": None})
    assert [n["name"] for n in process_notes(off)] == ["mask", "polarization", "error_model"]


def test_nxprocess_holds_one_note_per_correction_and_sasdata_still_reads_the_file(tmp_path):
    frames = make_frames(2, nq=40)
    path = write_nxcansas(tmp_path / "v2.h5", frames, V2_CAL)
    with h5py.File(path, "r") as f:
        proc = f["sasentry01/sasprocess"]
        assert proc.attrs["NX_class"] == "NXprocess"
        assert proc["program"][()].decode() == "saxsdog"
        assert proc["version"][()] and proc["date"][()]
        dark = proc["dark"]
        assert dark.attrs["NX_class"] == "NXnote"
        assert dark["file_name"][()].decode() == "dark.tif"
        assert dark["sequence_index"][()] == 1
        assert json.loads(proc["background"]["data"][()]) == {"File": "buffer.chi", "Scale": 0.98}
        assert proc["background"]["sequence_index"][()] == 11
        assert proc["term01"][()].decode().startswith("dark: ")
        assert proc["term01"].attrs["name"] == "dark"
        # stored once, hard-linked into the next entry
        assert (h5py.h5o.get_info(f["sasentry02/sasprocess"].id).addr
                == h5py.h5o.get_info(proc.id).addr)
    loaded = sasdata_load(path)
    assert len(loaded) == 2
    for data, fr in zip(loaded, frames):
        assert_same_curve(data, fr)
    terms = loaded[0].process[0].term
    assert len(terms) == 11 and terms[7].startswith("error_model: ")


def test_q_in_inverse_angstrom_has_its_units(tmp_path):
    """A frame of an entry in q_A^-1 stores Q@units 1/angstrom (beside a 1/nm frame in the same
    file); SasView's loader reads both as the same Q."""
    nm, ang = make_frames(2)
    ang = {**ang, "q": np.asarray(nm["q"]) / 10.0, "q_units": "1/angstrom"}
    path = write_nxcansas(tmp_path / "two_units.h5", [nm, ang], CAL, title="units")
    back = read_nxcansas(path)
    assert [f["q_units"] for f in back] == ["1/nm", "1/angstrom"]
    np.testing.assert_allclose(back[1]["q"], ang["q"], rtol=1e-15)
    loaded = sasdata_load(path)
    np.testing.assert_allclose(to_per_nm(loaded[1]), nm["q"], rtol=1e-12)
    np.testing.assert_allclose(to_per_nm(loaded[0]), nm["q"], rtol=1e-12)


def test_values_repeated_changed_and_signed_zero_read_back_per_frame(tmp_path):
    """The writer skips rewriting a value its template holds from the frame before: every
    frame must still read back its own values (a change after repeats, 0.0 after -0.0, NaN,
    strings, ints, bools), also when the frames' value types change the template."""
    seq = [("PILATUS 1M", 0.5, 3, True, -0.0), ("PILATUS 1M", 0.5, 3, True, 0.0),
           ("PILATUS 1M", 0.5, 3, True, 0.0), ("EIGER", 0.5, 4, False, float("nan")),
           ("EIGER", 1.5, 4, False, -0.0), ("PILATUS 1M", 0.5, 3, True, -0.0)]
    frames = make_frames(len(seq), nq=20)
    for fr, (det, exp, n, flag, zero) in zip(frames, seq):
        fr["metadata"] = {"detector": det, "exposure_time": exp, "frame": n, "flag": flag}
        fr["parameters"] = {"I0": zero, "I1": 1.0}
    frames.append(dict(frames[0], name="other_types", metadata={"detector": 7, "exposure_time": "long",
                                                                 "frame": 3, "flag": True}))
    path = write_nxcansas(tmp_path / "repeat.h5", frames, CAL)
    back = read_nxcansas(path)
    assert len(back) == len(frames)
    for fr, b in zip(frames, back):
        assert b["name"] == fr["name"]
        assert b["metadata"] == fr["metadata"]
        got, want = b["parameters"]["I0"], fr["parameters"]["I0"]
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
        np.testing.assert_array_equal(b["I"], fr["I"])


def test_valid_lists_of_frames_with_the_same_or_other_bins(tmp_path):
    """``valid`` as the workers send it (a list of bools): a frame with the bins of the frame
    before reuses its Q (one dataset, hard-linked), any other pattern gets its own, and every
    frame reads back with exactly its own bins."""
    frames = make_frames(6, nq=40)
    a = [k % 7 != 0 for k in range(40)]
    b = [k % 5 != 0 for k in range(40)]
    patterns = [a, list(a), b, a, None, a]
    final = tmp_path / "lists.h5"
    with NXcanSASRunWriter(final, frames[0]["q"], CAL, "lists") as w:
        for fr, valid in zip(frames, patterns):
            w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"], valid=valid)
    back = read_nxcansas(final)
    for fr, valid, got in zip(frames, patterns, back):
        keep = np.ones(40, dtype=bool) if valid is None else np.array(valid)
        np.testing.assert_array_equal(got["q"], fr["q"][keep])
        np.testing.assert_array_equal(got["I"], fr["I"][keep])
        np.testing.assert_array_equal(got["Idev"], fr["Idev"][keep])
    with h5py.File(final, "r") as f:
        addr = [h5py.h5o.get_info(f[f"sasentry0{i}/sasdata01/Q"].id).addr for i in range(1, 7)]
    assert addr[0] == addr[1]  # the same bins: one Q
    assert len({addr[0], addr[2], addr[3], addr[4]}) == 4 and addr[5] == addr[3]


def test_frames_with_the_values_of_the_frame_before_link_its_groups(tmp_path):
    """A frame whose header values (or parameters) are exactly those of the group stored last
    links that group (one object, cheaper for the coordinator); any change, also 0.0 after
    -0.0 or another type, gets its own group.  Every frame reads back its own values, and
    SasView's loader reads every entry."""
    frames = make_frames(6, nq=30)
    same = {"exposure_time": 0.5, "detector": "PILATUS 1M"}
    metas = [same, dict(same), {**same, "exposure_time": 1.0}, {**same, "exposure_time": 1.0}, dict(same),
             {**same, "exposure_time": 1}]
    params = [{"I0": -0.0}, {"I0": -0.0}, {"I0": 0.0}, {"I0": 0.0}, {"I0": 0.0}, {"I0": 0.0}]
    for fr, meta, par in zip(frames, metas, params):
        fr["metadata"], fr["parameters"] = meta, par
    path = write_nxcansas(tmp_path / "linked.h5", frames, CAL)
    back = read_nxcansas(path)
    for fr, b in zip(frames, back):
        assert b["metadata"] == fr["metadata"]
        assert type(b["metadata"]["exposure_time"]) is type(fr["metadata"]["exposure_time"])
        assert math.copysign(1.0, b["parameters"]["I0"]) == math.copysign(1.0, fr["parameters"]["I0"])
        np.testing.assert_array_equal(b["I"], fr["I"])
    with h5py.File(path, "r") as f:
        image = [h5py.h5o.get_info(f[f"sasentry0{i}/image"].id).addr for i in range(1, 7)]
        par = [h5py.h5o.get_info(f[f"sasentry0{i}/parameters"].id).addr for i in range(1, 7)]
        titles = [f[f"sasentry0{i}/title"][()].decode() for i in range(1, 7)]
    assert titles == [fr["name"] for fr in frames]
    assert image[0] == image[1] and image[2] == image[3]
    assert len({image[0], image[2], image[4], image[5]}) == 4  # only the group stored last is linked
    assert par[0] == par[1] and par[2] == par[3] == par[4] == par[5] and par[0] != par[2]
    loaded = sasdata_load(path)
    assert len(loaded) == len(frames)
    for data, fr in zip(loaded, frames):
        assert_same_curve(data, fr)


def test_a_frame_with_its_own_copy_of_the_run_grid_reuses_the_bins_of_the_frame_before(tmp_path):
    """The queue's frames bring their q (a copy of the run's grid, unpickled) and ``valid`` as
    a list: the writer must still see the run's grid and reuse the mask of the frame before
    (building a mask from a list of 1000 bools costs the coordinator ~30 µs a frame), and
    link one Q."""
    frames = make_frames(4, nq=40)
    valid = [k % 7 != 0 for k in range(40)]
    final = tmp_path / "own_q.h5"
    with NXcanSASRunWriter(final, frames[0]["q"], CAL, "own q") as w:
        for fr in frames:
            w.append(fr["name"], fr["I"], fr["Idev"], fr["metadata"], fr["parameters"],
                     q=np.array(fr["q"]), valid=list(valid))
            assert w._last_valid is not None and w._last_valid[0] == valid
    back = read_nxcansas(final)
    keep = np.array(valid)
    for fr, got in zip(frames, back):
        np.testing.assert_array_equal(got["q"], fr["q"][keep])
        np.testing.assert_array_equal(got["I"], fr["I"][keep])
    with h5py.File(final, "r") as f:
        addr = {h5py.h5o.get_info(f[f"sasentry0{i}/sasdata01/Q"].id).addr for i in range(1, 5)}
    assert len(addr) == 1


def test_inlined_value_forms_match_the_reference_functions(tmp_path):
    """The writer classifies and converts each frame's values inline (the coordinator's hot
    path): it must give what _signature, _scalar_value and _exact give."""
    from saxsdog.io import nxcansas as nx

    values = {"f": 1.5, "nf": np.float64(-0.0), "f32": np.float32(0.1), "none": None, "i": 3, "ni": np.int32(-7),
              "b": True, "nb": np.bool_(False), "s": "text", "d": {"a": 1}, "by": b"raw", 7: "non-str key"}
    with NXcanSASRunWriter(tmp_path / "forms.h5", np.arange(3.0), CAL) as w:
        sig, exact, link, kept = w._collection("image", values)
    assert link is None
    assert sig == nx._signature(values)
    for (key, kind), v, (value, e) in zip(sig, values.values(), kept):
        want = nx._scalar_value(v, kind)
        assert type(np.asarray(value).item()) is type(np.asarray(want).item()), key
        assert e == nx._exact(want, kind), key
    assert exact == tuple(e for _, e in kept)
