"""The server's ``mergedata`` / ``getmergedata``: attached and server-side log tables, outputs,
and refusals (paths outside the base, missing attachments, bad configurations).

In-process against the command handler, and once end to end: ``saxsleash mergedata`` (which
attaches the client's ``LocalPath`` files) against a real ``saxsdogserver`` whose queue has
integrated the images, so the merged rows carry the integral parameters too.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="pandas is needed for the data merge")

from saxsdog.merge import read_merged, unix_to_mac  # noqa: E402
from saxsdog.pipeline import QueueOptions  # noqa: E402
from saxsdog.server.handler import CommandHandler  # noqa: E402
from saxsdog.testing import write_pilatus_tiff  # noqa: E402
from server_helpers import Server, start_queue, wait_done  # noqa: E402

START = datetime(2014, 1, 31, 12, 26, 52)  # naive: local time, as Pilatus headers
T0 = START.timestamp()
N_IMAGES = 6
LOG_ROWS = 80


def write_images(folder: Path, data: np.ndarray) -> None:
    """Image k taken 10 s after image k-1, 0.3 s after a logger tick."""
    for k in range(N_IMAGES):
        write_pilatus_tiff(folder / f"img_{k:05d}.tif", data, START + timedelta(seconds=10 * k + 0.3))


def logger_text() -> str:
    """A 1-s data logger (Mac epoch) starting 5 s before the first image: Ioni = 1000 + row."""
    rows = [f"{unix_to_mac(T0 - 5 + i):.3f}\t{1000 + i}" for i in range(LOG_ROWS)]
    return "Time\tIoni\n" + "\n".join(rows) + "\n"


def shutter_text() -> str:
    """One row per image, 0.05 s before it (Unix epoch): Diode = 5 + k."""
    rows = [f"{T0 + 10 * k + 0.25:.3f}\t{5 + k}" for k in range(N_IMAGES)]
    return "Time\tDiode\n" + "\n".join(rows) + "\n"


def expected_ioni(k: int) -> int:
    # image k at T0 + 10k + 0.3; the last logger row at or before it is row 10k + 5
    return 1000 + 10 * k + 5


def merge_conf(**extra) -> dict:
    conf = {
        "TimeOffset": 0,
        "LogDataTables": [
            {"Name": "Dlog", "TimeEpoch": "Mac", "Files": [{"RemotePath": ["logs", "datalogger.log"]}]},
            {"Name": "Peak", "TimeEpoch": "Unix", "Files": [{"LocalPath": "client/peakinteg.log"}]},
        ],
        "Images": {"Directory": "run"},
        "OutputFormats": {"csv": True, "json": True, "hdf": False, "exel": False},
        "OutputFileName": "results/merged",
    }
    conf.update(extra)
    return conf


@pytest.fixture
def base(tmp_path) -> Path:
    b = tmp_path / "base"
    write_images(b / "run", np.zeros((6, 5), np.int32))
    (b / "logs").mkdir()
    (b / "logs" / "datalogger.log").write_text(logger_text())
    return b


@pytest.fixture
def handler(base):
    h = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    yield h
    h.shutdown()


def mergedata(handler, conf, files: dict[str, str]) -> dict:
    return handler.execute("mergedata", {"mergeconf": conf, "filenames": list(files)},
                           [t.encode() for t in files.values()])


def check_rows(columns: list[str], rows: list[list]) -> None:
    table = [dict(zip(columns, r)) for r in rows]
    assert [Path(r["file"]).name for r in table] == [f"img_{k:05d}.tif" for k in range(N_IMAGES)]
    assert [r["Ioni (Dlog)"] for r in table] == [expected_ioni(k) for k in range(N_IMAGES)]
    assert [r["Diode (Peak)"] for r in table] == [5 + k for k in range(N_IMAGES)]


def test_mergedata_uses_attached_and_server_logs_and_writes_outputs(handler, base):
    r = mergedata(handler, merge_conf(), {"client/peakinteg.log": shutter_text()})
    assert r["result"] == "mergedata", r
    assert r["data"]["rows"] == N_IMAGES
    assert r["data"]["written"] == {"csv": "results/merged.csv", "json": "results/merged.json"}
    got = handler.execute("getmergedata")
    assert got["result"] == "mergedata"
    data = got["data"]["data"]
    json.dumps(got, allow_nan=False)  # what the transports send: plain JSON, no NaN
    check_rows(data["columns"], data["rows"])
    paths = [dict(zip(data["columns"], r))["path"] for r in data["rows"]]
    assert paths == [f"run/img_{k:05d}.tif" for k in range(N_IMAGES)]  # relative: no server layout shown
    for name in ("merged.csv", "merged.json"):
        df = read_merged(base / "results" / name)
        check_rows(list(df.columns), df.astype(object).where(df.notna(), None).values.tolist())
    # the attachment was a temporary copy: nothing of the client's path appears on the server
    assert not (base / "client").exists()


def test_mergedata_without_outputs_only_keeps_the_table(handler, base):
    conf = merge_conf(OutputFormats={"csv": False, "json": False, "hdf": False, "exel": False})
    r = mergedata(handler, conf, {"client/peakinteg.log": shutter_text()})
    assert r["result"] == "mergedata" and r["data"]["written"] == {}
    assert not (base / "results").exists()


@pytest.mark.parametrize("change, files, message", [
    # a LocalPath the client did not send
    (lambda c: None, {}, r"'client/peakinteg.log' .*LocalPath.* was not attached"),
    # server-side paths must stay inside the base directory
    (lambda c: c["LogDataTables"][0]["Files"][0].update(RemotePath="../../../etc/passwd"),
     {"client/peakinteg.log": "x"}, r"\$\.LogDataTables\[0\]\.Files\[0\] .*outside the base directory"),
    (lambda c: c["Images"].update(Directory="/"), {"client/peakinteg.log": "x"}, "outside the base directory"),
    (lambda c: c.update(OutputFileName="../escaped"), {"client/peakinteg.log": shutter_text()},
     "outside the server's base directory"),
    # the configuration is validated first and the error names the field
    (lambda c: c["LogDataTables"][0].update(TimeEpoch="Julian"), {"client/peakinteg.log": "x"},
     r"\$\.LogDataTables\[0\]\.TimeEpoch"),
])
def test_mergedata_refusals_name_the_problem(handler, base, change, files, message):
    import re

    conf = merge_conf()
    change(conf)
    r = mergedata(handler, conf, files)
    assert r["result"] == "Error" and re.search(message, r["data"]["Error"]), r
    assert str(base) not in r["data"]["Error"]  # the server's own layout is not disclosed
    assert not (base.parent / "escaped.csv").exists()
    assert handler.execute("stat")["result"] == "stat"  # still serving


def test_mergedata_attachment_count_must_match_the_names(handler):
    r = handler.execute("mergedata", {"mergeconf": merge_conf(), "filenames": ["a.log", "b.log"]}, [b"x"])
    assert r["result"] == "Error" and "1 attachment(s) for 2 name(s)" in r["data"]["Error"]
    r = handler.execute("mergedata", {"mergeconf": merge_conf(), "filenames": "a.log"}, [])
    assert r["result"] == "Error" and "filenames" in r["data"]["Error"]


def test_getmergedata_before_any_merge(handler):
    r = handler.execute("getmergedata")
    assert r["result"] == "Error" and "mergedata" in r["data"]["Error"]


# -- end to end: saxsleash -> saxsdogserver over ZeroMQ --------------------------------------
@pytest.mark.slow
def test_saxsleash_mergedata_against_a_real_server(tmp_path, data_dir):
    import tifffile

    base = tmp_path / "base"
    (base / "logs").mkdir(parents=True)
    (base / "run").mkdir()
    (base / "logs" / "datalogger.log").write_text(logger_text())
    server = Server(tmp_path, base).start()
    try:
        start_queue(server, data_dir)
        write_images(base / "run", tifffile.imread(data_dir / "buf1_00000.tif"))
        with server.client() as c:
            assert c.request("readdir")["result"] != "Error"
        wait_done(server, N_IMAGES)
        client = tmp_path / "client"
        client.mkdir()
        (client / "peakinteg.log").write_text(shutter_text())
        conf = merge_conf(Images={"Directory": ".", "FileList": "../work/results/filelist.txt"},
                          OutputFileName="../results/merged")
        conf["LogDataTables"][0]["Files"] = [{"RemotePath": ["..", "logs", "datalogger.log"]}]
        conf["LogDataTables"][1]["Files"] = [{"LocalPath": "peakinteg.log"}]  # next to the config file
        (client / "mergeconf.json").write_text(json.dumps(conf))
        leash = [sys.executable, "-m", "saxsdog.cli.leash", "--network", str(server.network)]
        r = subprocess.run(leash + ["mergedata", str(client / "mergeconf.json")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "rows: 6" in r.stdout and "results/merged.csv" in r.stdout and "results/merged.json" in r.stdout
        r = subprocess.run(leash + ["getmergedata"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[1].startswith("merged table: 6 row(s)")
        header = lines[2].split("\t")
        assert [line.split("\t")[header.index("Ioni (Dlog)")] for line in lines[3:]] == \
            [str(expected_ioni(k)) for k in range(N_IMAGES)]
        r = subprocess.run(leash + ["--json", "getmergedata"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        data = json.loads(r.stdout)["data"]["data"]
        check_rows(data["columns"], data["rows"])
        table = [dict(zip(data["columns"], row)) for row in data["rows"]]
        # the integral parameters of the queue's own results (one real image, so all equal)
        assert all(isinstance(t["I0"], float) and math.isfinite(t["I0"]) and t["I0"] > 0 for t in table)
        assert len({t["I0"] for t in table}) == 1
        assert read_merged(base / "results" / "merged.csv").shape[0] == N_IMAGES
    finally:
        server.stop()
