"""Dectris stream v2 (CBOR): parsing, the HDF5-framed LZ4 of hdf5plugin, and end to end.

The detector side is built on the published message format (``saxsdog.streams.stream2``
encoders on a :class:`DectrisSender` socket); compressed payloads come from ``hdf5plugin``'s
filters, the same bytes a detector puts into its HDF5 chunks.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping

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


def _random_item(rng, depth=0):
    kinds = ["int", "neg", "big", "float", "half", "text", "bytes", "bool", "none"] + (["list", "map"] if depth < 3 else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "int":
        return int(rng.integers(0, 2**16)) if rng.random() < 0.5 else int(rng.integers(0, 2**63))
    if kind == "neg":
        return -int(rng.integers(1, 2**62))
    if kind == "big":
        return 2**64 - 1
    if kind == "float":
        return float(rng.normal() * 10 ** int(rng.integers(-30, 30)))
    if kind == "half":
        return float(rng.choice([0.5, 1.0, -2.0, 65504.0, float("inf")]))
    if kind == "text":
        return "".join(chr(int(c)) for c in rng.integers(32, 0x3000, size=int(rng.integers(0, 30))))
    if kind == "bytes":
        return rng.bytes(int(rng.choice([0, 5, 23, 24, 255, 256, 70000])))
    if kind == "bool":
        return bool(rng.random() < 0.5)
    if kind == "none":
        return None
    if kind == "list":
        return [_random_item(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))]
    return {f"k{i}": _random_item(rng, depth + 1) for i in range(int(rng.integers(0, 6)))}


def test_the_fast_reader_gives_what_cbor2_gives():
    """Our CBOR reader against cbor2 on random messages (all of CBOR that stream v2 uses)."""
    from saxsdog.streams import stream2

    rng = np.random.default_rng(11)
    for _ in range(300):
        item = {"type": "image", "payload": _random_item(rng)}
        raw = cbor2.dumps(CBORTag(55799, item), canonical=bool(rng.random() < 0.5))
        buf = memoryview(raw)
        value, pos = stream2._read(buf, 0)
        assert pos == len(raw)
        assert stream2._plain(value) == _mutable(cbor2.loads(raw))


def _mutable(value):
    """cbor2 gives the items under the self-describe tag as frozendicts and tuples."""
    if isinstance(value, (list, tuple)):
        return [_mutable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _mutable(v) for k, v in value.items()}
    return value


def test_the_fast_reader_leaves_what_it_does_not_know_to_cbor2():
    from saxsdog.streams import stream2

    indefinite = b"\xa1\x64type\x7f\x63ima\x62ge\xff"  # {"type": "image"} with an indefinite text string
    with pytest.raises(stream2._NotOurs):
        stream2._read(memoryview(indefinite), 0)
    assert stream2._loads(indefinite) == {"type": "image"}
    dated = cbor2.dumps({"arm_date": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)})
    assert stream2._loads(dated)["arm_date"].year == 2026  # tag 0, parsed by cbor2


def test_truncated_or_broken_v2_messages_are_reported_not_crashing():
    a = np.arange(40 * 30, dtype=np.uint32).reshape(40, 30)
    raw = encode_image(1, 0, encode_frame(a, "bs32-lz4<"), a.shape, "uint32", "bs32-lz4<")
    for cut in (5, 40, len(raw) // 2, len(raw) - 1):
        with pytest.raises(StreamFormatError):
            parse_message([raw[:cut]])
    broken_text = cbor2.dumps({"type": "image", "x": "é"}).replace("é".encode(), b"\xff\xfe")
    with pytest.raises(StreamFormatError, match="not a stream v2 message"):
        parse_message([broken_text])


def test_a_v2_frame_is_a_view_of_the_received_message_not_a_copy():
    """cbor2 copied the frame's bytes (a megabyte per Pilatus frame) in the receiving thread."""
    a = np.arange(100 * 90, dtype=np.uint32).reshape(100, 90)
    blob = encode_frame(a, "bs32-lz4<")
    raw = bytearray(encode_image(3, 7, blob, a.shape, "uint32", "bs32-lz4<"))
    msg = parse_message([memoryview(raw)])
    assert isinstance(msg.data, memoryview) and msg.data.obj is raw
    assert bytes(msg.data) == blob
    np.testing.assert_array_equal(decode_frame(msg.data, msg.dtype, msg.shape, msg.encoding), a)



def test_a_v2_user_data_map_becomes_json_header_fields():
    a = np.arange(10 * 9, dtype=np.uint32).reshape(10, 9)
    msg = {"type": "image", "series_id": 1, "image_id": 0, "user_data": {"monitor": 1234.5, "raw": b"ab"},
           "data": {"t": CBORTag(40, [[10, 9], CBORTag(70, a.tobytes())])}}
    frame = parse_message([cbor2.dumps(CBORTag(55799, msg))])
    assert frame.appendix is not None and json.loads(frame.appendix)["monitor"] == 1234.5
    assert DectrisStreamSource._appendix_fields(frame.appendix)["monitor"] == "1234.5"
    msg["user_data"] = "free text"
    assert parse_message([cbor2.dumps(msg)]).appendix == "free text"


def test_an_image_template_is_the_encoded_message_under_any_image_number():
    from saxsdog.streams.stream2 import ImageTemplate

    a = np.arange(30 * 20, dtype=np.uint32).reshape(30, 20)
    blob = encode_frame(a, "bs32-lz4<")
    template = ImageTemplate(4, blob, a.shape, "uint32", "bs32-lz4<")
    for image in (0, 1, 23, 24, 65535, 70000, 2**32 - 1):
        raw = bytes(template.message(image))
        msg = parse_message([raw])
        assert (msg.series, msg.frame, msg.shape, msg.encoding) == (4, image, a.shape, "bs32-lz4<")
        assert bytes(msg.data) == blob
        assert cbor2.loads(raw)["image_id"] == image  # valid CBOR for any reader
    assert template.message(5) is template.message(6)  # one buffer, changed in place
