"""Dectris stream v2 (CBOR): parsing, the HDF5-framed LZ4 of hdf5plugin, and end to end.

The detector side is built on the published message format (``saxsdog.streams.stream2``
encoders on a :class:`DectrisSender` socket); compressed payloads come from ``hdf5plugin``'s
filters, the same bytes a detector puts into its HDF5 chunks.
"""

from __future__ import annotations

import datetime

import h5py
import numpy as np
import pytest

pytest.importorskip("cbor2", reason="cbor2 is not installed (stream v2 needs it)")
import cbor2  # noqa: E402
from cbor2 import CBORTag  # noqa: E402

from saxsdog.pipeline import QueueOptions  # noqa: E402
from saxsdog.pipeline.queue import ImageQueue  # noqa: E402
from saxsdog.io.codecs import (FrameDecodeError, decode_frame, encode_frame,  # noqa: E402
                                    hdf5plugin_h5lz4)
from saxsdog.streams.dectris import (DectrisSender, DectrisStreamSource, SeriesEnd, SeriesHeader,  # noqa: E402
                                     StreamFormatError, StreamFrame, parse_message)
from saxsdog.streams.stream2 import encode_end, encode_image, encode_start  # noqa: E402


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.float32])
def test_hdf5_framed_lz4_of_hdf5plugin_decodes_exactly(dtype):
    rng = np.random.default_rng(3)
    a = (rng.poisson(30.0, size=(257, 301))).astype(dtype)
    blob = hdf5plugin_h5lz4(a)
    out = decode_frame(blob, np.dtype(dtype).name, a.shape, "h5lz4<")
    np.testing.assert_array_equal(out, a)
    assert out.dtype == a.dtype and out.flags.writeable


def test_malformed_hdf5_framed_lz4_raises():
    a = np.arange(300 * 301, dtype=np.uint32).reshape(300, 301)
    blob = hdf5plugin_h5lz4(a)
    for bad in (blob[:-5], blob + b"x", blob[:12], b"", blob[:12] + b"\xff\xff\xff\xff" + blob[16:],
                bytes(8) + blob[8:]):
        with pytest.raises(FrameDecodeError):
            decode_frame(bad, "uint32", a.shape, "h5lz4<")


def test_parse_start_image_end():
    start = parse_message([encode_start(9, {"count_time": 0.1, "frame_time": 0.2, "incident_wavelength": 1.54,
                                            "arm_date": datetime.datetime(2026, 1, 2, 3, 4, 5,
                                                                          tzinfo=datetime.UTC),
                                            "pixel_mask": {"threshold_1": "big table left out"}})])
    assert isinstance(start, SeriesHeader) and start.series == 9
    assert start.config["count_time"] == 0.1 and start.config["wavelength"] == 1.54
    assert start.config["data_collection_date"] == "2026-01-02T03:04:05+00:00"
    assert start.config["channels"] == "threshold_1" and "pixel_mask" not in start.config

    a = np.arange(12 * 7, dtype=np.uint16).reshape(12, 7)
    for encoding in ("bs16-lz4<", "h5lz4<", "<"):
        blob = encode_frame(a, encoding)
        msg = parse_message([encode_image(9, 4, blob, a.shape, "uint16", encoding, start_ns=1_500_000_000)])
        assert isinstance(msg, StreamFrame)
        assert (msg.series, msg.frame, msg.shape, msg.dtype, msg.encoding) == (9, 4, (12, 7), "uint16", encoding)
        assert msg.times["start_time"] == 1_500_000_000
        np.testing.assert_array_equal(decode_frame(msg.data, msg.dtype, msg.shape, msg.encoding), a)

    end = parse_message([encode_end(9)])
    assert isinstance(end, SeriesEnd) and end.series == 9


def test_parse_rejects_what_is_not_stream_v2():
    bad = {
        "not CBOR": b"\xa1\xff\xff",
        "unknown type": cbor2.dumps({"type": "dance", "series_id": 1}),
        "image without data": cbor2.dumps({"type": "image", "series_id": 1, "image_id": 0}),
        "1-D array": cbor2.dumps({"type": "image", "series_id": 1, "image_id": 0,
                                  "data": {"t": CBORTag(40, [[5], CBORTag(70, bytes(20))])}}),
        "unknown compression": cbor2.dumps({"type": "image", "series_id": 1, "image_id": 0,
                                            "data": {"t": CBORTag(40, [[1, 1], CBORTag(70, CBORTag(
                                                56500, ["zstd", 0, b"...."]))])}}),
        "negative series": cbor2.dumps({"type": "end", "series_id": -1}),
    }
    for what, raw in bad.items():
        with pytest.raises(StreamFormatError):
            parse_message([raw])
            pytest.fail(what)


@pytest.mark.parametrize("encoding", ["bs32-lz4<", "h5lz4<"])
@pytest.mark.slow
def test_stream_v2_frames_give_the_files_results(cal, frames, tmp_path, encoding):
    """Frames sent as stream v2 are integrated exactly as the same frames read from a file."""
    root = tmp_path / "files"
    root.mkdir()
    with h5py.File(root / "scan_master.h5", "w") as f:
        f.create_dataset("entry/data/data_000001", data=np.stack(frames), chunks=(1, *frames[0].shape))
    q = ImageQueue(cal, root, QueueOptions(out_dir=tmp_path / "from_files")).start()
    q.fill_from_directory()
    assert q.wait_until_idle(120)
    q.stop()

    out = tmp_path / "out"
    q = ImageQueue(cal, out, QueueOptions(out_dir=out)).start()
    try:
        with DectrisSender() as snd:
            src = DectrisStreamSource(snd.endpoint, q, keep_raw=tmp_path / "raw").start()
            try:
                snd.send_parts([encode_start(21, {"count_time": 0.05, "incident_wavelength": 1.54})])
                for k, a in enumerate(frames):
                    snd.send_parts([encode_image(21, k, encode_frame(a, encoding), a.shape, "uint32", encoding)])
                snd.send_parts([b"\xa1\x64type"])  # truncated CBOR: reported, skipped
                snd.send_parts([encode_end(21)])
                assert src.ended.wait(60) and q.wait_until_idle(120)
            finally:
                src.stop()
    finally:
        q.stop()
    assert src.frames == len(frames) and src.malformed == 1 and src.completed == [21]
    assert not q.history.failures
    for k in range(len(frames)):
        expected = (tmp_path / "from_files" / f"scan_master_{k:05d}.chi").read_bytes()
        assert (out / f"21_{k:06d}.chi").read_bytes() == expected
    assert q.history.records[0]["image_time"] is not None
    # --keep-raw: the frames as sent, readable as an Eiger-style data set
    from saxsdog.io.images import iter_frames

    kept = [f.data for f in iter_frames(tmp_path / "raw" / "series_21_master.h5")]
    assert len(kept) == len(frames)
    for got, a in zip(kept, frames):
        np.testing.assert_array_equal(got, a)
