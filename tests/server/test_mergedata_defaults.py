"""The server's ``mergedata`` includes the queue's integral parameters without being told where."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="pandas is needed for the data merge")

from server_helpers import Server, start_queue, wait_done  # noqa: E402
from test_mergedata import (  # noqa: E402
    N_IMAGES,
    START,
    logger_text,
    merge_conf,
    mergedata,
    shutter_text,
    write_images,
)

from saxsdog.pipeline import QueueOptions  # noqa: E402
from saxsdog.server.handler import CommandHandler  # noqa: E402
from saxsdog.testing import write_pilatus_tiff  # noqa: E402


def _write_filelist(folder: Path, images: Path) -> list[float]:
    """A file list as the queue writes it, I0 = 100 + k."""
    folder.mkdir(parents=True)
    lines = ["file\toutput\tI0\tI1\tI2\timage_time"]
    for k in range(N_IMAGES):
        lines.append(f"{images / f'img_{k:05d}.tif'}\t{folder.parent / f'img_{k:05d}.chi'}\t{100 + k}\t1\t2\t")
    (folder / "filelist.txt").write_text("\n".join(lines) + "\n")
    return [100.0 + k for k in range(N_IMAGES)]


def _column(result: dict, handler: CommandHandler, name: str) -> list:
    assert result["result"] == "mergedata", result
    data = handler.execute("getmergedata")["data"]["data"]
    return [dict(zip(data["columns"], row)).get(name) for row in data["rows"]]


def test_default_saxsdog_outputs_inside_the_base_are_read(tmp_path):
    base = tmp_path / "base"
    write_images(base / "run", np.zeros((6, 5), np.int32))
    (base / "logs").mkdir()
    (base / "logs" / "datalogger.log").write_text(logger_text())
    expected = _write_filelist(base / "work" / "results", base / "run")  # run/../work: saxsdog's default
    handler = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    try:
        conf = merge_conf(OutputFormats={"csv": False, "json": False, "hdf": False, "exel": False})
        r = mergedata(handler, conf, {"client/peakinteg.log": shutter_text()})
        assert _column(r, handler, "I0") == expected
    finally:
        handler.shutdown()


def test_default_outputs_outside_the_base_are_not_read(tmp_path):
    base = tmp_path / "base"
    for k in range(N_IMAGES):
        write_pilatus_tiff(base / f"img_{k:05d}.tif", np.zeros((6, 5), np.int32), START)
    (base / "logs").mkdir()
    (base / "logs" / "datalogger.log").write_text(logger_text())
    _write_filelist(tmp_path / "work" / "results", base)  # base/../work: outside the base directory
    handler = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    try:
        conf = merge_conf(Images={"Directory": "."},
                          OutputFormats={"csv": False, "json": False, "hdf": False, "exel": False})
        r = mergedata(handler, conf, {"client/peakinteg.log": shutter_text()})
        assert _column(r, handler, "I0") == [None] * N_IMAGES
    finally:
        handler.shutdown()


@pytest.mark.slow
def test_server_with_an_output_folder_merges_its_queues_i0(tmp_path, data_dir):
    """saxsdogserver -o OUT: mergedata without FileList still carries the queue's I0/I1/I2."""
    import tifffile

    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    (base / "logs").mkdir()
    (base / "logs" / "datalogger.log").write_text(logger_text())
    server = Server(tmp_path, base, ["-o", str(base / "out")]).start()
    try:
        start_queue(server, data_dir)
        write_images(base / "run", tifffile.imread(data_dir / "buf1_00000.tif"))
        with server.client() as c:
            assert c.request("readdir")["result"] != "Error"
        wait_done(server, N_IMAGES)
        assert (base / "out" / "results" / "filelist.txt").is_file()
        conf = merge_conf(Images={"Directory": "."},
                          OutputFormats={"csv": False, "json": False, "hdf": False, "exel": False})
        conf["LogDataTables"][0]["Files"] = [{"RemotePath": ["..", "logs", "datalogger.log"]}]
        conf["LogDataTables"][1]["Files"] = [{"LocalPath": "peakinteg.log"}]
        with server.client() as c:
            r = c.request("mergedata", {"mergeconf": conf, "filenames": ["peakinteg.log"]},
                          [shutter_text().encode()])
            assert r["result"] == "mergedata", r
            data = c.request("getmergedata")["data"]["data"]
        i0 = [dict(zip(data["columns"], row))["I0"] for row in data["rows"]]
        assert len(i0) == N_IMAGES and all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in i0)
    finally:
        server.stop()
