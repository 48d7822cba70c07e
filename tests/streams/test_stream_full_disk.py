"""A detector stream on a full disk (a real, small tmpfs) loses no frame.

Frames of a stream exist nowhere else: while the output disk is full they are held (the
queue pauses and says why), and once space is freed every frame is written, exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from saxsdog.io.chi import read_chi
from saxsdog.io.codecs import encode_frame
from saxsdog.io.nxcansas import read_nxcansas
from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.queue import ImageQueue
from saxsdog.streams.dectris import DectrisSender, DectrisStreamSource
from saxsdog.testing import fill_disk, wait_for

pytestmark = pytest.mark.slow  # real processes, servers or seconds-long waits

SERIES = 9
CONFIG = {"count_time": 0.05, "frame_time": 0.05, "wavelength": 1.54, "description": "full disk",
          "x_pixel_size": 0.000172, "y_pixel_size": 0.000172, "data_collection_date": "2024-05-01T10:00:00"}


def send_series(snd: DectrisSender, frames: list[np.ndarray], header_timeout: float = 30.0) -> None:
    snd.send_header(SERIES, CONFIG, timeout=header_timeout)
    for k, f in enumerate(frames):
        snd.send_frame(SERIES, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
    snd.send_end(SERIES)


@pytest.mark.parametrize("fmt", ["chi", "nxcansas-run"])
def test_stream_on_a_full_disk_pauses_and_writes_every_frame_once_space_is_freed(cal, frames, small_tmpfs, fmt):
    out = small_tmpfs / "out"
    q = ImageQueue(cal, out, QueueOptions(out_dir=out, output_format=fmt)).start()
    try:
        with DectrisSender() as snd:
            src = DectrisStreamSource(snd.endpoint, q).start()
            try:
                filler = fill_disk(small_tmpfs)
                send_series(snd, frames)
                assert src.ended.wait(60), "the series end was not seen"
                assert wait_for(lambda: q.stats()["paused"] is not None), q.stats()
                st = q.stats()
                assert st["images_failed"] == 0 and "No space left on device" in st["paused"]
                assert not q.wait_until_idle(0.5)  # held, not done
                filler.unlink()
                assert q.wait_until_idle(120), q.stats()
            finally:
                src.stop()
        st = q.stats()
        assert st["paused"] is None and st["images_failed"] == 0 and st["images_processed"] == len(frames)
    finally:
        q.stop()
    names = [f"{SERIES}_{k:06d}" for k in range(len(frames))]
    if fmt == "chi":
        for k, name in enumerate(names):
            np.testing.assert_allclose(read_chi(out / f"{name}.chi").intensity, cal.curves(frames[k])[0].intensity, rtol=1e-6)
    else:
        got = read_nxcansas(out / f"series_{SERIES}.h5")
        assert sorted(f["name"] for f in got) == names  # every frame, once
        for f in got:
            k = int(f["name"].split("_")[1])
            curve = cal.curves(frames[k])[0]
            np.testing.assert_allclose(f["I"], curve.intensity[curve.has_data], rtol=1e-12)  # bins with data
    assert not list(out.glob(".*.part"))


def test_saxsdog_stream_command_on_a_full_disk_waits_for_space(cal, frames, small_tmpfs):
    """``saxsdog --stream`` into a run file on a full disk: it keeps running (paused) instead
    of failing the frames, and completes the run file once space is freed."""
    out = small_tmpfs / "out"
    with DectrisSender() as snd:
        proc = subprocess.Popen([sys.executable, "-m", "saxsdog.cli.saxsdog", "--stream", snd.endpoint,
                                 "-c", str(cal.path), "-o", str(out), "-S", "--format", "nxcansas-run",
                                 "--series", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            snd.send_header(SERIES, CONFIG, timeout=120)  # the command is connected and set up
            filler = fill_disk(small_tmpfs)
            for k, f in enumerate(frames):
                snd.send_frame(SERIES, k, encode_frame(f, "bs32-lz4<"), f.shape, "uint32", "bs32-lz4<")
            snd.send_end(SERIES)
            # its run file waits under its temporary name; the command waits with it
            assert wait_for(lambda: list(out.glob(".series_*.h5.*.part")), 60)
            time.sleep(1.0)  # the frames reach the full disk by now (nothing to poll for)
            assert proc.poll() is None
            assert not (out / f"series_{SERIES}.h5").exists()
            filler.unlink()
            stdout, stderr = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, stdout + stderr
    assert f"{len(frames)} processed, 0 skipped (outputs existed), 0 failed" in stdout
    assert "queue paused" in stderr and "No space left on device" in stderr
    got = read_nxcansas(out / f"series_{SERIES}.h5")
    assert sorted(f["name"] for f in got) == [f"{SERIES}_{k:06d}" for k in range(len(frames))]
    assert not list(out.glob(".*.part"))
