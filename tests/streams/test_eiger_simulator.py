"""Frames streamed by ALBA's ``eiger-simulator`` (PyPI) are all integrated, as from files.

The simulator serves the Eiger HTTP API (SIMPLON 1.6.0) and a ZeroMQ stream v1 of the frames
of an HDF5 data set (made here from the real Pilatus image, as uint16: the simulator
announces every frame as ``uint16``).  Its ``bslz4`` frames are ``bs16-lz4<`` blobs without
the 12-byte header (it calls ``bitshuffle.compress_lz4``), its ``lz4`` frames plain LZ4
blocks.  Everything listens on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.slow  # a simulator subprocess: the slow layer

pytest.importorskip("eigersim", reason="eiger-simulator is not installed (pip install eiger-simulator)")

from saxsdog import Calibration  # noqa: E402
from saxsdog.pipeline import QueueOptions  # noqa: E402
from saxsdog.pipeline.queue import ImageQueue  # noqa: E402
from saxsdog.streams.dectris import DectrisStreamSource  # noqa: E402
from saxsdog.testing import free_port  # noqa: E402

API = "/detector/api/1.6.0"
NFRAMES = 4


class Simulator:
    def __init__(self, dataset: Path, log: Path):
        self.http, self.zmq = free_port(), free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.zmq}"
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eigersim.server", "--host", "127.0.0.1", "--port", str(self.http),
             "--zmq", self.endpoint, "--dataset", str(dataset), "--log-level", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=dataset.parent)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/detector/api/version/", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    pytest.fail(f"eiger-simulator did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)

    def put(self, path: str, value=None, timeout: float = 60.0):
        body = json.dumps({"value": value}).encode() if value is not None else b""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=timeout).read() or b"null")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data):
    data = shared_data
    tmp = tmp_path_factory.mktemp("eigersim")
    base = tifffile.imread(data / "buf1_00000.tif").astype(np.int64)
    frames = np.stack([np.clip(base * (k + 1) + k, 0, 65535) for k in range(NFRAMES)]).astype(np.uint16)
    (tmp / "dataset").mkdir()
    (tmp / "files").mkdir()
    for folder in ("dataset", "files"):
        with h5py.File(tmp / folder / "scan_master.h5", "w") as f:
            f.create_dataset("entry/data/data_000001", data=frames, chunks=(1, *frames.shape[1:]))
    cal = Calibration(data / "cal.json")
    q = ImageQueue(cal, tmp / "files", QueueOptions(out_dir=tmp / "files_out")).start()
    q.fill_from_directory()
    assert q.wait_until_idle(120)
    q.stop()
    expected = [(tmp / "files_out" / f"scan_master_{k:05d}.chi").read_bytes() for k in range(NFRAMES)]
    sim = Simulator(tmp / "dataset" / "scan_master.h5", tmp / "simulator.log")
    try:
        sim.put(f"{API}/config/x_pixels_in_detector", 981)
        sim.put(f"{API}/config/y_pixels_in_detector", 1043)
        sim.put(f"{API}/config/nimages", NFRAMES)
        sim.put(f"{API}/config/count_time", 0.02)
        yield sim, cal, expected, tmp
    finally:
        sim.close()


@pytest.mark.parametrize("compression", ["bslz4", "lz4"])
def test_every_simulated_frame_is_integrated_as_from_files(setup, compression):
    sim, cal, expected, tmp = setup
    out = tmp / f"out_{compression}"
    sim.put(f"{API}/config/compression", compression)
    sim.put(f"{API}/command/initialize")
    q = ImageQueue(cal, out, QueueOptions(out_dir=out)).start()
    src = DectrisStreamSource(sim.endpoint, q).start()
    try:
        series = sim.put(f"{API}/command/arm")["sequence id"]
        sim.put(f"{API}/command/trigger")  # returns when the simulator has sent every frame
        assert src.ended.wait(60), "no series end from the simulator"
        assert q.wait_until_idle(120)
    finally:
        src.stop()
        q.stop()
    assert src.series == series and src.frames == NFRAMES and src.malformed == 0
    assert q.history.processed == NFRAMES and not q.history.failures
    assert src.header is not None and src.header.config["description"] == "Dectris Eiger 9M"
    for k in range(NFRAMES):
        assert (out / f"{series}_{k:06d}.chi").read_bytes() == expected[k]
