"""saxsdog.reduction.normalization and Calibration.curves(metadata=): t·M·T·d, units, header fields."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from saxsdog import Calibration, CalibrationError
from saxsdog.errors import ImageError
from saxsdog.io.images import read_image
from saxsdog.reduction.normalization import (FrameNormalizationError, divisor, factor, header_number,
                                             needs_metadata, normalization, unit)
from saxsdog.testing import small_calibration, write_pilatus_tiff

SHAPE = (64, 48)


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(50.0, SHAPE).astype(np.int32)


# --------------------------------------------------------------------------- pure functions

def test_divisor_factor_and_unit_of_each_field():
    meta = {"exposure_time": 2.0, "header": {"Flux": "4e5 ph/s", "Trans": "0.5"}}
    assert divisor({}, meta) == 1.0 and factor(None, meta) == 1.0 and unit({}) == "counts/pixel"
    block = {"ExposureTime": "header", "Monitor": {"Header": "Flux"}, "Transmission": {"Header": "Trans"},
             "ThicknessMM": 2.0, "AbsoluteScale": None}
    assert divisor(block, meta) == pytest.approx(2.0 * 4e5 * 0.5 * 0.2)
    assert factor({**block, "AbsoluteScale": 8e4}, meta) == pytest.approx(8e4 / (2.0 * 4e5 * 0.5 * 0.2))
    assert unit({"ExposureTime": 10}) == "counts/pixel/s"
    assert unit({"ExposureTime": "header", "Monitor": 3}) == "counts/pixel/s/monitor"
    assert unit({"Monitor": 3, "ThicknessMM": 1, "Transmission": 0.3}) == "counts/pixel/monitor/cm"
    assert unit({"Transmission": 0.3}) == "counts/pixel"
    assert unit({"ExposureTime": 1, "ThicknessMM": 1, "AbsoluteScale": 2}) == "1/cm/sr"
    assert unit({"AbsoluteScale": 2}) == "1/sr"
    n = normalization({"ThicknessMM": 1.5, "ExposureTime": 4}, {})
    assert n.thickness_cm == pytest.approx(0.15) and n.exposure_time == 4.0 and n.monitor is None
    assert needs_metadata(block) and not needs_metadata({"ExposureTime": 3, "Monitor": None})


def test_exposure_from_header_fields_when_the_reader_gave_none():
    assert normalization({"ExposureTime": "header"}, {"header": {"count_time": "0.5"}}).exposure_time == 0.5
    assert normalization({"ExposureTime": "header"}, {"header": {"Exposure_time": "250 ms"}}).exposure_time == 0.25
    assert normalization({"ExposureTime": {"Header": "acq"}}, {"header": {"acq": "20 us"}}).exposure_time == \
        pytest.approx(2e-5)
    # the reader's parsed exposure time comes first
    assert normalization({"ExposureTime": "header"}, {"exposure_time": 3.0,
                                                      "header": {"count_time": "9"}}).exposure_time == 3.0
    # exact key first, then case-insensitively
    assert normalization({"Monitor": {"Header": "flux"}}, {"header": {"Flux": "7", "flux": "5"}}).monitor == 5
    assert normalization({"Monitor": {"Header": "FLUX"}}, {"header": {"Flux": "7"}}).monitor == 7
    assert header_number("1.5e3 counts", "$.x", "k") == 1500.0


@pytest.mark.parametrize("block,meta,field,fragment", [
    ({"Monitor": {"Header": "Flux"}}, {"header": {"Exposure_time": "1 s"}}, "$.Normalization.Monitor",
     "no field 'Flux'"),
    ({"Monitor": {"Header": "Flux"}}, None, "$.Normalization.Monitor", "no fields"),
    ({"Transmission": {"Header": "T"}}, {"header": {"T": "0"}}, "$.Normalization.Transmission", "must be > 0"),
    ({"Transmission": {"Header": "T"}}, {"header": {"T": "-0.3"}}, "$.Normalization.Transmission",
     "must be > 0"),
    # a header giving the transmission in per cent: refused, not divided by 42
    ({"Transmission": {"Header": "T"}}, {"header": {"T": "42"}}, "$.Normalization.Transmission",
     "at most 1"),
    ({"Monitor": {"Header": "I0"}}, {"header": {"I0": "n/a"}}, "$.Normalization.Monitor", "not a number"),
    ({"ExposureTime": "header"}, {"header": {"Flux": "1"}}, "$.Normalization.ExposureTime",
     "no exposure time"),
    ({"ExposureTime": {"Header": "t"}}, {"header": {"t": "3 fortnights"}}, "$.Normalization.ExposureTime",
     "unknown time unit"),
])
def test_a_frame_that_cannot_be_normalized_is_an_image_error_naming_the_field(block, meta, field, fragment):
    with pytest.raises(FrameNormalizationError) as info:
        normalization(block, meta)
    assert isinstance(info.value, ImageError) and not info.value.retryable
    assert info.value.field == field and field in info.value.reason and fragment in info.value.reason
    if meta and meta.get("header"):
        assert all(k in info.value.reason for k in meta["header"])  # what the frame has


def test_constant_transmission_at_or_below_zero_is_refused_at_load():
    for value in (0, -0.2):
        with pytest.raises(CalibrationError) as info:
            Calibration(small_calibration(Version=2, Normalization={"Transmission": value}), cache=False)
        assert info.value.path == "$.Normalization.Transmission" and str(value) in str(info.value)


# --------------------------------------------------------------------------- through the calibration

def _v2(**normalization_block):
    return small_calibration(Version=2, Corrections={"SolidAngle": False},
                             Normalization=normalization_block)


@pytest.mark.slow
def test_real_image_with_header_exposure_is_todays_curve_over_10_s(data_dir):
    raw = json.loads((data_dir / "cal.json").read_text())
    frame = read_image(data_dir / "buf1_00000.tif")
    assert frame.metadata["header"]["Exposure_time"].startswith("10.")
    today = Calibration(data_dir / "cal.json", cache=True).curves(frame.data, metadata=frame.metadata)
    cal = Calibration({**raw, "Version": 2, "Corrections": {"SolidAngle": False},
                       "Normalization": {"ExposureTime": "header"}}, base_dir=data_dir, cache=True)
    got = cal.curves(frame.data, metadata=frame.metadata)
    assert today[0].unit == "counts/pixel" and got[0].unit == "counts/pixel/s"
    for a, b in zip(today, got):
        np.testing.assert_allclose(b.intensity, a.intensity / 10.0, rtol=1e-12, atol=0)
        np.testing.assert_allclose(b.poisson, a.poisson / 10.0, rtol=1e-12, atol=0)
    assert got[0].parameters["I0"] == pytest.approx(today[0].parameters["I0"] / 10.0, rel=1e-12)
    assert got[0].parameters["correlation_length"] == pytest.approx(today[0].parameters["correlation_length"],
                                                                    rel=1e-12)


def _write_formats(folder: Path, image: np.ndarray) -> dict[str, Path]:
    """The same image as TIFF, CBF, EDF and HDF5, each with Flux 2e5, transmission 0.8, 0.5 s."""
    import fabio.cbfimage
    import fabio.edfimage
    import h5py
    import tifffile

    lines = "# Exposure_time 0.5000000 s\r\n# Flux 2e5\r\n# Transmission 0.8\r\n"
    paths = {"tif": folder / "a.tif", "cbf": folder / "a.cbf", "edf": folder / "a.edf", "h5": folder / "a.h5"}
    tifffile.imwrite(paths["tif"], image, description=lines, metadata=None)
    cbf = fabio.cbfimage.CbfImage(data=image)
    cbf.header["_array_data.header_contents"] = lines
    cbf.write(str(paths["cbf"]))
    fabio.edfimage.EdfImage(data=image, header={"Flux": "2e5", "Transmission": "0.8",
                                                 "count_time": "0.5"}).write(str(paths["edf"]))
    with h5py.File(paths["h5"], "w") as f:
        f["entry/instrument/detector/count_time"] = 0.5
        f["entry/instrument/monitor/Flux"] = 2e5
        f["entry/sample/Transmission"] = 0.8
        f.create_dataset("entry/data/data", data=image[None])
    return paths


def test_monitor_and_transmission_from_the_headers_of_each_format(tmp_path):
    image = _image()
    plain = Calibration(small_calibration(), cache=False)
    expected = plain.curves(image)[0].intensity / (0.5 * 2e5 * 0.8)
    cal = Calibration(_v2(ExposureTime="header", Monitor={"Header": "Flux"},
                          Transmission={"Header": "Transmission"}), cache=False)
    for fmt, path in _write_formats(tmp_path, image).items():
        frame = read_image(path, expected_shape=SHAPE)
        np.testing.assert_array_equal(frame.data, image)
        curve = cal.curves(frame.data, metadata=frame.metadata)[0]
        np.testing.assert_allclose(curve.intensity, expected, rtol=1e-12, err_msg=fmt)
        assert curve.unit == "counts/pixel/s/monitor"


def test_monitor_from_a_dectris_stream_header_and_image_appendix():
    from saxsdog.io.codecs import decode_frame
    from saxsdog.streams.dectris import DectrisStreamSource
    from saxsdog.streams.messages import SeriesHeader, StreamFrame

    class Queue:  # what the stream source needs of the image queue
        root = "/nonexistent"
        backlog = 0

        class options:  # noqa: N801
            run_name = None

        def __init__(self):
            self.tasks = []

        def push_task(self, task):
            self.tasks.append(task)

        def finish_run(self, name):
            pass

    image = _image(3).astype(np.uint32)
    queue = Queue()
    src = DectrisStreamSource("tcp://127.0.0.1:1", queue)
    src._on_message(SeriesHeader(5, "basic", {"count_time": 0.25, "flux": 4000.0, "description": "sim"}))
    for k, appendix in enumerate([None, '{"transmission": 0.5}']):
        src._on_message(StreamFrame(5, k, SHAPE, "uint32", "<", image.tobytes(), appendix=appendix))
    metas = [t.payload.metadata for t in queue.tasks]
    assert metas[0]["header"]["flux"] == "4000.0" and metas[0]["exposure_time"] == 0.25
    assert metas[1]["header"]["transmission"] == "0.5" and "transmission" not in metas[0]["header"]
    data = decode_frame(queue.tasks[0].payload.data, "uint32", SHAPE, "<")
    plain = Calibration(small_calibration(), cache=False).curves(data)[0].intensity
    cal = Calibration(_v2(ExposureTime="header", Monitor={"Header": "flux"}), cache=False)
    got = cal.curves(data, metadata=metas[0])[0]
    np.testing.assert_allclose(got.intensity, plain / (0.25 * 4000.0), rtol=1e-12)
    with pytest.raises(FrameNormalizationError, match="transmission"):
        Calibration(_v2(Transmission={"Header": "transmission"}), cache=False).curves(data, metadata=metas[0])


def test_a_frame_without_the_header_key_fails_alone_and_the_queue_goes_on(tmp_path):
    from saxsdog.testing import run_queue

    root = tmp_path / "run"
    when = datetime(2026, 1, 2, 3, 4, 5)
    write_pilatus_tiff(root / "a_00001.tif", _image(1), when, exposure=2.0)
    write_pilatus_tiff(root / "a_00002.tif", _image(2), when, exposure=2.0)
    import tifffile

    tifffile.imwrite(root / "a_00003.tif", _image(3), description="# Flux 10\r\n", metadata=None)  # no time
    cal = Calibration(_v2(ExposureTime="header"), cache=False)
    queue = run_queue(cal, root, out_dir=tmp_path / "out")
    failures = {Path(p).name: error for p, error in queue.history.failures.items()}
    assert list(failures) == ["a_00003.tif"]
    assert "$.Normalization.ExposureTime" in failures["a_00003.tif"]
    assert "no exposure time" in failures["a_00003.tif"] and "Flux" in failures["a_00003.tif"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.chi")) == ["a_00001.chi", "a_00002.chi"]


def test_a_frame_whose_header_transmission_is_not_in_0_1_fails_alone_and_the_queue_goes_on(tmp_path):
    """Through the queue: T = 0, T < 0 and T in per cent (42) from a header each fail that frame
    with the field named; the frames with a valid T are written."""
    import tifffile

    from saxsdog.testing import run_queue

    root = tmp_path / "run"
    root.mkdir()
    for name, t in (("a_00001.tif", "0.5"), ("a_00002.tif", "0"), ("a_00003.tif", "-0.2"), ("a_00004.tif", "42"),
                    ("a_00005.tif", "1")):
        tifffile.imwrite(root / name, _image(1), description=f"# Exposure_time 1.0 s\r\n# Trans {t}\r\n",
                         metadata=None)
    cal = Calibration(_v2(Transmission={"Header": "Trans"}), cache=False)
    queue = run_queue(cal, root, out_dir=tmp_path / "out")
    failures = {Path(p).name: error for p, error in queue.history.failures.items()}
    assert sorted(failures) == ["a_00002.tif", "a_00003.tif", "a_00004.tif"]
    assert all("$.Normalization.Transmission" in e for e in failures.values()), failures
    assert "must be > 0" in failures["a_00002.tif"] and "-0.2" in failures["a_00003.tif"]
    assert "at most 1" in failures["a_00004.tif"] and "42" in failures["a_00004.tif"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.chi")) == ["a_00001.chi", "a_00005.chi"]
