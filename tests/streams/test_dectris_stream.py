"""Frames from a Dectris stream (v1) are integrated exactly as the same frames from files.

The detector side is :class:`saxsdog.streams.dectris.DectrisSender` (the published stream v1
format, on 127.0.0.1) and, in ``test_eiger_simulator.py``, ALBA's ``eiger-simulator``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from saxsdog.io.images import iter_frames
from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.pool import WorkerPool
from saxsdog.pipeline.queue import ImageQueue
from saxsdog.pipeline.tasks import FramePayload, ImageResult, ImageTask
from saxsdog.io.codecs import encode_frame
from saxsdog.streams.dectris import DectrisSender, DectrisStreamSource, StreamFormatError, parse_message

SERIES = 7
CONFIG = {"count_time": 0.05, "frame_time": 0.05, "wavelength": 1.54, "description": "test sender",
          "x_pixel_size": 0.000172, "y_pixel_size": 0.000172, "data_collection_date": "2024-05-01T10:00:00"}


@pytest.fixture(scope="module")
def from_files(cal, frames, tmp_path_factory) -> list[bytes]:
    """.chi bytes of the same frames integrated from an HDF5 file by the pipeline."""
    tmp = tmp_path_factory.mktemp("files")
    root = tmp / "run"
    root.mkdir()
    with h5py.File(root / "scan_master.h5", "w") as f:
        f.create_dataset("entry/data/data_000001", data=np.stack(frames), chunks=(1, *frames[0].shape))
    q = ImageQueue(cal, root, QueueOptions()).start()
    q.fill_from_directory()
    assert q.wait_until_idle(120)
    q.stop()
    return [(tmp / "work" / f"scan_master_{k:05d}.chi").read_bytes() for k in range(len(frames))]


def stream(cal, frames, out: Path, encoding: str = "bs32-lz4<", fmt: str = "chi", keep_raw=None,
           frames_per_file: int = 1000, between=None) -> tuple[ImageQueue, DectrisStreamSource]:
    """Send a series through a sender on loopback into a queue; returns both when done."""
    q = ImageQueue(cal, out, QueueOptions(out_dir=out, output_format=fmt)).start()
    try:
        with DectrisSender() as snd:
            src = DectrisStreamSource(snd.endpoint, q, keep_raw=keep_raw, frames_per_file=frames_per_file).start()
            try:
                snd.send_header(SERIES, CONFIG)
                for k, f in enumerate(frames):
                    snd.send_frame(SERIES, k, encode_frame(f, encoding), f.shape, "uint32", encoding,
                                   with_hash=True)
                if between is not None:
                    between(snd)
                snd.send_end(SERIES)
                assert src.ended.wait(60), "the series end was not seen"
                assert q.wait_until_idle(120)
            finally:
                src.stop()
    finally:
        q.stop()
    return q, src


@pytest.mark.parametrize("encoding", ["bs32-lz4<", "lz4<"])
@pytest.mark.slow
def test_streamed_frames_give_the_files_results(cal, frames, from_files, tmp_path, encoding):
    q, src = stream(cal, frames, tmp_path / "out", encoding)
    assert src.frames == len(frames) and src.malformed == 0 and src.series == SERIES
    assert q.history.processed == len(frames) and not q.history.failures
    for k, expected in enumerate(from_files):
        assert (tmp_path / "out" / f"{SERIES}_{k:06d}.chi").read_bytes() == expected
    rec = q.history.records[0]
    assert rec["image_time"] is not None and rec["parameters"]["R0"]["I0"] > 0


def test_stream_into_a_run_file_read_by_sasdata(cal, frames, tmp_path):
    pytest.importorskip("sasdata")
    from sasdata.data_util.nxsunit import Converter
    from sasdata.dataloader.loader import Loader

    def assert_curve(data, curve) -> None:
        unit = data.x_unit[: -len("^{-1}")] if data.x_unit.endswith("^{-1}") else data.x_unit
        q = np.asarray(Converter("1/" + unit if data.x_unit.endswith("^{-1}") else unit)(data.x, units="1/nm"))
        keep = curve.has_data  # NXcanSAS leaves the bins without data out
        np.testing.assert_allclose(q, curve.x[keep], rtol=1e-12, atol=0)
        np.testing.assert_allclose(data.y, curve.intensity[keep], rtol=1e-12, atol=0)
        np.testing.assert_allclose(data.dy, curve.poisson[keep], rtol=1e-12, atol=0)

    q, _ = stream(cal, frames, tmp_path / "out", fmt="nxcansas-run")
    run_file = tmp_path / "out" / f"series_{SERIES}.h5"
    assert q.run_files == [run_file]
    loaded = Loader().load(str(run_file))
    assert sorted(d.title for d in loaded) == [f"{SERIES}_{k:06d}" for k in range(len(frames))]
    for data in loaded:
        assert_curve(data, cal.curves(frames[int(data.title.split("_")[1])])[0])
        assert data.meta_data["exposure_time"] == pytest.approx(0.05)
        assert data.meta_data["series"] == SERIES


def test_malformed_messages_are_reported_and_skipped(cal, frames, from_files, tmp_path):
    good = frames[:2]
    blob = encode_frame(frames[0], "bs32-lz4<")

    def damage(snd: DectrisSender) -> None:
        p2 = {"htype": "dimage_d-1.0", "shape": [981, 1043], "type": "uint32", "encoding": "bs32-lz4<"}
        p4 = json.dumps({"htype": "dconfig-1.0"}).encode()
        snd.send_parts([b"not json at all"])
        snd.send_parts([json.dumps({"series": SERIES}).encode()])  # no htype
        snd.send_parts([json.dumps({"htype": "dimage-1.0", "series": SERIES, "frame": 9}).encode(),
                        json.dumps(p2).encode()])  # parts missing
        snd.send_parts([json.dumps({"htype": "dimage-1.0", "series": SERIES, "frame": 9}).encode(),
                        json.dumps(dict(p2, size=len(blob) + 1)).encode(), blob, p4])  # size mismatch
        snd.send_parts([json.dumps({"htype": "dimage-1.0", "series": SERIES, "frame": 9}).encode(),
                        json.dumps(dict(p2, encoding="gzip")).encode(), blob, p4])  # unknown encoding
        snd.send_parts([json.dumps({"htype": "dmystery-1.0"}).encode()])
        # well-formed, but the blob is damaged: the worker reports the frame as failed
        bad = bytearray(blob)
        bad[100:400] = bytes(300)
        snd.send_frame(SERIES, 2, bytes(bad), frames[0].shape, "uint32", "bs32-lz4<")
        # a frame sent twice is integrated once
        snd.send_frame(SERIES, 1, encode_frame(good[1], "bs32-lz4<"), frames[0].shape, "uint32", "bs32-lz4<")
        # and the stream goes on
        for k in (3, 4):
            snd.send_frame(SERIES, k, encode_frame(frames[k], "bs32-lz4<"), frames[0].shape, "uint32",
                           "bs32-lz4<")

    q, src = stream(cal, good, tmp_path / "out", between=damage)
    assert src.malformed == 6
    assert any("not JSON" in e for e in src.errors) and any("4 or 5" in e for e in src.errors)
    assert any("says" in e for e in src.errors) and any("gzip" in e for e in src.errors)
    assert q.history.processed == 4
    (failed, reason), = q.history.failures.items()
    assert failed.endswith(f"{SERIES}_000002") and "bitshuffle-LZ4" in reason
    for k in (0, 1, 3, 4):
        assert (tmp_path / "out" / f"{SERIES}_{k:06d}.chi").read_bytes() == from_files[k]


def test_parse_message_checks_the_format():
    with pytest.raises(StreamFormatError, match="empty"):
        parse_message([])
    with pytest.raises(StreamFormatError, match="shape"):
        parse_message([b'{"htype": "dimage-1.0", "series": 1, "frame": 0}',
                       b'{"htype": "dimage_d-1.0", "shape": [0, 5], "type": "uint32", "encoding": "<"}',
                       b"", b"{}"])
    with pytest.raises(StreamFormatError, match="pixel type"):
        parse_message([b'{"htype": "dimage-1.0", "series": 1, "frame": 0}',
                       b'{"htype": "dimage_d-1.0", "shape": [2, 2], "type": "complex", "encoding": "<"}',
                       b"", b"{}"])
    with pytest.raises(StreamFormatError, match="configuration"):
        parse_message([b'{"htype": "dheader-1.0", "series": 1, "header_detail": "basic"}'])
    msg = parse_message([b'{"htype": "dimage-1.0", "series": 3, "frame": 12, "hash": ""}',
                         b'{"htype": "dimage_d-1.0", "shape": [4, 2], "type": "uint16", "encoding": "<",'
                         b' "size": 16}', bytes(16), b'{"htype": "dconfig-1.0", "start_time": 5}', b"note"])
    assert (msg.series, msg.frame, msg.shape, msg.name, msg.times, msg.appendix) == \
        (3, 12, (2, 4), "3_000012", {"start_time": 5}, "note")


def test_the_frame_description_is_parsed_once_per_kind_of_frame(monkeypatch):
    """A series sends the same ``dimage_d`` part with every frame: it is parsed and checked once,
    yet a part that changes (another shape, a broken one) is parsed and checked anew."""
    from saxsdog.streams import dectris

    parsed: list[bytes] = []
    real_json = dectris._json
    monkeypatch.setattr(dectris, "_json", lambda part, what: (parsed.append(what) or real_json(part, what)))
    info = b'{"htype": "dimage_d-1.0", "shape": [4, 2], "type": "uint16", "encoding": "<", "size": 16, "x": 1}'
    tail = b'{"htype": "dconfig-1.0", "start_time": 5}'
    for k in range(5):
        msg = parse_message([b'{"htype": "dimage-1.0", "series": 3, "frame": %d}' % k, info, bytes(16), tail])
        assert (msg.frame, msg.shape, msg.dtype, msg.encoding) == (k, (2, 4), "uint16", "<")
    assert sum(what.startswith("dimage_d") for what in parsed) == 1
    wide = info.replace(b"[4, 2]", b"[2, 4]")
    assert parse_message([b'{"htype": "dimage-1.0", "series": 3, "frame": 5}', wide, bytes(16), tail]).shape == (4, 2)
    with pytest.raises(StreamFormatError, match="pixel type"):
        parse_message([b'{"htype": "dimage-1.0", "series": 3, "frame": 6}', info.replace(b"uint16", b"complex"),
                       bytes(16), tail])
    with pytest.raises(StreamFormatError, match="the blob has 15 bytes"):  # the size is checked every frame
        parse_message([b'{"htype": "dimage-1.0", "series": 3, "frame": 7}', info, bytes(15), tail])


@pytest.mark.slow
def test_raw_frames_are_kept_as_nexus(cal, frames, from_files, tmp_path):
    q, src = stream(cal, frames, tmp_path / "out", keep_raw=tmp_path / "raw", frames_per_file=2)
    master = tmp_path / "raw" / f"series_{SERIES}_master.h5"
    assert src.raw_files[0] == master
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        f"series_{SERIES}_data_00000{k}.h5" for k in (1, 2, 3)] + [master.name]
    kept = list(iter_frames(master))
    assert len(kept) == len(frames)
    for got, sent in zip(kept, frames):
        np.testing.assert_array_equal(got.data, sent)
    assert kept[0].metadata["exposure_time"] == pytest.approx(0.05)
    with h5py.File(master) as f:
        assert list(f["entry/data/frame_numbers"][()]) == list(range(len(frames)))
        assert f["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(1.54)
    with h5py.File(tmp_path / "raw" / f"series_{SERIES}_data_000001.h5") as f:
        ds = f["entry/data/data"]
        assert ds.shape == (2, 1043, 981) and ds.chunks == (1, 1043, 981)
        assert 32008 in ds._filters or "32008" in ds._filters  # bitshuffle
        # stored as received: the chunk is the stream blob
        assert ds.id.read_direct_chunk((1, 0, 0))[1] == encode_frame(frames[1], "bs32-lz4<")
    # and the kept frames integrate to the same results again
    q2 = ImageQueue(cal, tmp_path / "raw", QueueOptions(out_dir=tmp_path / "again")).start()
    q2.fill_from_directory()
    assert q2.wait_until_idle(120)
    q2.stop()
    for k, expected in enumerate(from_files):
        assert (tmp_path / "again" / f"series_{SERIES}_master_{k:05d}.chi").read_bytes() == expected


@pytest.mark.slow
def test_saxsdog_stream_command(cal, frames, from_files, tmp_path):
    with DectrisSender() as snd, _stream_command(snd, tmp_path / "out", cal,
                                                 "--keep-raw", str(tmp_path / "raw")) as proc:
        snd.send_header(SERIES, CONFIG, timeout=120)  # waits (bounded) for the command to connect
        for k, f in enumerate(frames[:3]):
            snd.send_frame(SERIES, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
        snd.send_parts([b"{broken"])
        snd.send_end(SERIES)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout + stderr
    assert "3 frame(s) received of series 7, 1 malformed message(s) skipped" in stdout
    assert "3 processed, 0 skipped" in stdout
    run_file = tmp_path / "out" / f"series_{SERIES}.h5"
    assert f"run file {run_file}" in stdout
    from saxsdog.io.nxcansas import read_nxcansas

    assert sorted(f["name"] for f in read_nxcansas(run_file)) == [f"{SERIES}_{k:06d}" for k in range(3)]
    assert len(list(iter_frames(tmp_path / "raw" / f"series_{SERIES}_master.h5"))) == 3


class _Poison:
    """A processor that dies on one frame (like a decoder crashing on bad data)."""

    def process(self, task: ImageTask) -> list[ImageResult]:
        if task.path.endswith("poison"):
            os._exit(3)
        return [ImageResult(task.path, name=os.path.basename(task.path))]


def test_a_frame_that_kills_its_worker_fails_instead_of_looping(cal, tmp_path):
    q = ImageQueue(cal, tmp_path, QueueOptions(out_dir=tmp_path, live_filelist=False),
                   pool_factory=lambda c, o: WorkerPool(_Poison, 2)).start()
    payload = FramePayload(b"", "uint32", (1, 1), "<")
    for name in ("a", "poison", "b"):
        q.push_task(ImageTask(str(tmp_path / name), str(tmp_path), payload=payload))
    assert q.wait_until_idle(60)
    q.stop()
    assert q.history.processed == 2
    assert q.history.failures == {str(tmp_path / "poison"): "the worker processing it died 3 times"}
    assert q.worker_restarts == 3


@pytest.mark.slow
def test_each_series_is_a_run_file_closed_when_the_series_ends(cal, frames, tmp_path):
    """Series after series into one queue: one run file each, in place as soon as its series is done."""
    from saxsdog.io.nxcansas import read_nxcansas

    out = tmp_path / "out"
    q = ImageQueue(cal, out, QueueOptions(out_dir=out, output_format="nxcansas-run")).start()
    try:
        with DectrisSender() as snd:
            src = DectrisStreamSource(snd.endpoint, q).start()
            try:
                for series, part in ((11, frames[:2]), (12, frames[2:5])):
                    snd.send_header(series, CONFIG)
                    for k, f in enumerate(part):
                        snd.send_frame(series, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
                    snd.send_end(series)
                    assert src.ended.wait(60) and q.wait_until_idle(120)
                    # closed (renamed into place) while the queue keeps running
                    assert (out / f"series_{series}.h5").is_file()
                    assert sorted(f["name"] for f in read_nxcansas(out / f"series_{series}.h5")) == \
                        [f"{series}_{k:06d}" for k in range(len(part))]
                    src.ended.clear()
            finally:
                src.stop()
    finally:
        q.stop()
    assert src.completed == [11, 12]
    assert q.run_files == [out / "series_11.h5", out / "series_12.h5"]
    assert not list(out.glob(".*"))  # no temporary run file left behind
    # the curves of the second series are those of its own frames
    got = read_nxcansas(out / "series_12.h5")
    for entry in got:
        k = int(entry["name"].split("_")[1])
        curve = cal.curves(frames[2 + k])[0]
        np.testing.assert_allclose(entry["I"], curve.intensity[curve.has_data], rtol=1e-12)  # bins with data


@contextlib.contextmanager
def _stream_command(snd: DectrisSender, out: Path, cal, *extra: str) -> Iterator[subprocess.Popen]:
    """``saxsdog --stream`` on the sender's address, writing NXcanSAS run files; killed if left running."""
    proc = subprocess.Popen([sys.executable, "-m", "saxsdog.cli.saxsdog", "--stream", snd.endpoint,
                             "-c", str(cal.path), "-o", str(out), "-S", "--format", "nxcansas-run", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()  # (communicate() of the test may have closed them already)
        proc.stderr.close()


@pytest.mark.slow
def test_saxsdog_stream_command_takes_several_series(cal, frames, tmp_path):
    with DectrisSender() as snd, _stream_command(snd, tmp_path / "out", cal, "--series", "2",
                                                 "--run-name", "scan") as proc:
        for series in (3, 4):
            snd.send_header(series, CONFIG, timeout=120)
            for k, f in enumerate(frames[:2]):
                snd.send_frame(series, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
            snd.send_end(series)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout + stderr
    assert "4 frame(s) received of series 3, 4" in stdout
    assert "4 processed, 0 skipped" in stdout
    for series in (3, 4):
        assert f"run file {tmp_path / 'out' / f'scan_{series}.h5'}" in stdout


@pytest.mark.slow
def test_saxsdog_stream_until_stopped_integrates_what_it_received(cal, frames, tmp_path):
    """--series 0 runs until SIGTERM (a service stop); frames already received are not dropped."""
    import signal
    import time

    from saxsdog.io.nxcansas import read_nxcansas

    out = tmp_path / "out"
    with DectrisSender() as snd, _stream_command(snd, out, cal, "--series", "0") as proc:
        snd.send_header(5, CONFIG, timeout=120)
        for k, f in enumerate(frames):
            snd.send_frame(5, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
        snd.send_end(5)
        snd.send_header(6, CONFIG)
        for k, f in enumerate(frames):  # series 6 never ends: the command is stopped
            snd.send_frame(6, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
        deadline = time.monotonic() + 120
        while not (out / "series_5.h5").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)  # series 5 is closed while the command keeps receiving
        assert (out / "series_5.h5").is_file() and proc.poll() is None
        time.sleep(1.0)  # the frames of series 6 are in the receiver's socket by now
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout + stderr
    received = int(stdout.split(" frame(s) received")[0].rsplit(" ", 1)[1])
    assert received >= len(frames) + 1
    assert f"{received} processed, 0 skipped (outputs existed), 0 failed" in stdout
    assert len(read_nxcansas(out / "series_5.h5")) == len(frames)
    assert len(read_nxcansas(out / "series_6.h5")) == received - len(frames)


def test_series_needs_stream():
    from saxsdog.cli.saxsdog import main

    assert main(["--series", "3", "-c", "x.json", "somewhere"]) == 2


def test_the_sender_encodes_the_constant_parts_once_and_sends_the_published_format():
    """Parts 2 and 4 are cached per shape, type, encoding and size; the bytes are the format's."""
    with DectrisSender() as snd:
        sent: list = []
        snd.send_parts = lambda parts, timeout=30.0: sent.append(parts)  # type: ignore[method-assign]
        snd.send_frame(3, 0, b"x" * 10, (4, 5), "uint32", "bs32-lz4<")
        snd.send_frame(3, 1, b"y" * 10, (4, 5), "uint32", "bs32-lz4<")
        snd.send_frame(3, 2, b"z" * 12, (4, 5), "uint32", "bs32-lz4<", times={"start_time": 7})
    assert sent[0][1] is sent[1][1]  # encoded once
    for parts, (frame, blob) in zip(sent, ((0, b"x" * 10), (1, b"y" * 10), (2, b"z" * 12))):
        assert json.loads(parts[0]) == {"htype": "dimage-1.0", "series": 3, "frame": frame, "hash": ""}
        assert json.loads(parts[1]) == {"htype": "dimage_d-1.0", "shape": [5, 4], "type": "uint32",
                                        "encoding": "bs32-lz4<", "size": len(blob)}
        assert parts[2] == blob
    assert json.loads(sent[0][3]) == {"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0, "real_time": 0}
    assert json.loads(sent[2][3]) == {"htype": "dconfig-1.0", "start_time": 7}
    msg = parse_message(sent[2])
    assert (msg.frame, msg.shape, msg.times) == (2, (4, 5), {"start_time": 7})
