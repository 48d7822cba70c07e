"""The server as users run it: real processes and sockets on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from saxsdog.feeder import Feeder
from saxsdog.io.chi import read_chi
from saxsdog.protocol.messages import decode_response, encode_request
from saxsdog.protocol.signing import sign_request
from saxsdog.testing import free_port, link_images

from server_helpers import Server, start_queue, wait_done

pytestmark = pytest.mark.slow  # real saxsdogserver and saxsdog subprocesses: the slow layer


@pytest.fixture
def base(tmp_path, data_dir):
    b = tmp_path / "base"
    (b / "run").mkdir(parents=True)
    return b


def ledger_rows(base: Path) -> list[tuple]:
    db = sqlite3.connect(str(base / ".saxsdog" / "ledger.sqlite"))
    try:
        return db.execute("SELECT path, state FROM images WHERE state != 'preexisting'").fetchall()
    finally:
        db.close()


def assert_each_image_once(base: Path, n: int) -> None:
    """n distinct ledger rows, all done, and n outputs."""
    rows = ledger_rows(base)
    assert len(rows) == n and {s for _, s in rows} == {"done"}
    assert len({p for p, _ in rows}) == n
    assert len(list((base / "work").glob("*.chi"))) == n


def announce_all(server: Server, paths) -> None:
    with Feeder(f"tcp://127.0.0.1:{server.fport}") as f:
        assert f.wait_for_subscriber(10)
        time.sleep(0.2)
        for p in paths:
            f.announce(p)
            time.sleep(0.002)
        time.sleep(0.5)


def test_end_to_end_300_images(tmp_path, base, data_dir):
    server = Server(tmp_path, base, ["--rescan", "0"]).start()
    try:
        start_queue(server, data_dir)
        images = link_images(data_dir / "buf1_00000.tif", base / "run", 300)
        announce_all(server, images)
        st = wait_done(server, 300)
        assert st["images failed"] == 0
        with server.client() as c:
            files = c.request("fileslist")["data"]["fileslist"]
            hist = c.request("plotdata")["data"]["history"]
            plot = c.request("plot")["data"]
            cal = c.request("get")["data"]["cal"]
        assert len(files) == 300 and all(v["state"] == "done" for v in files.values())
        assert len(hist["I0"]) == 300
        ref = read_chi(base / "work" / "img_00000.chi").parameters
        assert all(abs(i0 - ref["I0"]) < 1e-9 * ref["I0"] for i0 in hist["I0"])
        assert len(plot["graphs"][0]["array"][1]) == 1003 and plot["filename"].startswith("run/")
        assert cal["Geometry"]["BeamCenter"] == [808.37, 387.772]
        assert len(list((base / "work").glob("*.chi"))) == 300
    finally:
        server.stop()


def test_killed_server_resumes_exactly_once(tmp_path, base, data_dir):
    server = Server(tmp_path, base, ["--rescan", "1"]).start()
    start_queue(server, data_dir)
    images = link_images(data_dir / "buf1_00000.tif", base / "run", 300)
    with Feeder(f"tcp://127.0.0.1:{server.fport}") as f:
        assert f.wait_for_subscriber(10)
        time.sleep(0.2)
        for p in images:
            f.announce(p)
        work = base / "work"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(work.glob("*.chi"))) < 80:
            time.sleep(0.01)
        server.kill()
    done_before = len(list(work.glob("*.chi")))
    assert done_before < 300, "the kill must land mid-run"
    server.start()  # same state dir: resumes the saved queue
    try:
        wait_done(server, 300)
        assert_each_image_once(base, 300)
        outs = sorted(work.glob("*.chi"))
        assert len(outs) == 300 and not list(work.glob(".*.part"))
        size = outs[0].stat().st_size
        assert all(o.stat().st_size == size for o in outs)  # every output whole
    finally:
        server.stop()


def test_killed_worker_loses_nothing(tmp_path, base, data_dir):
    server = Server(tmp_path, base, ["--rescan", "0"]).start()
    n = 1000
    try:
        start_queue(server, data_dir)
        images = link_images(data_dir / "buf1_00000.tif", base / "run", n)
        with Feeder(f"tcp://127.0.0.1:{server.fport}") as f:
            assert f.wait_for_subscriber(10)
            time.sleep(0.2)
            for p in images:
                f.announce(p)
            # kill once the run is under way (a fixed sleep was past the end of the run once
            # 300 images took less than 0.3 s)
            work = base / "work"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(list(work.glob("*.chi"))) < 50:
                time.sleep(0.005)
            children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True,
                                      text=True).stdout.split()
            assert children, "the server has worker processes"
            os.kill(int(children[0]), signal.SIGKILL)
            done_before = len(list(work.glob("*.chi")))
        assert done_before < n, "the kill must land mid-run"
        st = wait_done(server, n)
        assert st["worker restarts"] >= 1 and st["images failed"] == 0
        assert_each_image_once(base, n)
    finally:
        server.stop()


def test_lost_events_and_unannounced_files_are_processed(tmp_path, base, data_dir):
    server = Server(tmp_path, base, ["--rescan", "0.5"]).start()
    try:
        start_queue(server, data_dir)
        # announced before anybody listens: PUB drops these events
        early = link_images(data_dir / "buf1_00000.tif", base / "run", 10, prefix="early")
        with Feeder(f"tcp://127.0.0.1:{free_port()}") as lonely:
            for p in early:
                lonely.announce(p)
        # and files that appear with no event at all
        link_images(data_dir / "buf1_00000.tif", base / "run" / "sub", 15, prefix="silent")
        wait_done(server, 25, timeout=60)
        assert len(ledger_rows(base)) == 25
    finally:
        server.stop()


def raw_request(server: Server, frames: list[bytes]) -> dict:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.url)
    try:
        s.send_multipart(frames)
        assert s.poll(20000), "the server did not answer"
        return decode_response(s.recv_multipart())
    finally:
        s.close(0)


def test_refusals_and_the_server_keeps_serving(tmp_path, base, data_dir):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, base / "run" / "link")
    server = Server(tmp_path, base, ["--rescan", "0", "--max-message-bytes", str(1 << 20)]).start()
    try:
        def expect_error(frames, fragment):
            r = raw_request(server, frames)
            assert r["result"] == "Error", r
            assert fragment.lower() in r["data"]["Error"].lower(), r
            assert server.secret not in json.dumps(r)

        good = sign_request("stat", secret=server.secret)
        expect_error(encode_request(sign_request("stat", secret="wrong secret")), "signature")
        expect_error(encode_request(sign_request("stat", secret=server.secret, now=time.time() - 3600)), "time")
        r = raw_request(server, encode_request(good))
        assert r["result"] == "stat"
        expect_error(encode_request(good), "replay")
        expect_error([b"{not json"], "json")
        expect_error([b"[1, 2, 3]"], "object")
        expect_error(encode_request(sign_request("selfdestruct", secret=server.secret)), "selfdestruct")
        bad_cal = json.loads((data_dir / "cal.json").read_text())
        bad_cal["Geometry"]["DedectorDistanceMM"] = -3
        expect_error(encode_request(sign_request("new", {"calibration": bad_cal, "directory": ["run"]},
                                                 secret=server.secret)), "DedectorDistanceMM")
        # refused twice over: by the request schema ('..' is no path component) and by the
        # base-directory check behind it (tests/server/test_handler.py exercises that one)
        expect_error(encode_request(sign_request("listdir", {"directory": ["..", ".."]}, secret=server.secret)),
                     "'..'")
        expect_error(encode_request(sign_request("listdir", {"directory": ["run", "link"]}, secret=server.secret)),
                     "outside")
        big = os.urandom(2 << 20)
        expect_error(encode_request(sign_request("new", {"calibration": bad_cal}, secret=server.secret,
                                                 attachments=[big]), [big]), "large")
        with server.client() as c:  # still serving after all of that
            assert c.request("stat")["result"] == "stat"
            assert c.request("listdir", {"directory": ["run"]})["result"] == "dircontent"
        assert server.proc.poll() is None
        log = (base.parent / "server.log").read_text()
        assert server.secret not in log
    finally:
        server.stop()


def test_server_on_a_dask_cluster(tmp_path, base, data_dir):
    pytest.importorskip("distributed", reason="dask[distributed] is needed for --scheduler")
    server = Server(tmp_path, base, ["--rescan", "0", "--scheduler", "local"]).start()
    try:
        start_queue(server, data_dir)
        images = link_images(data_dir / "buf1_00000.tif", base / "run", 40)
        announce_all(server, images)
        st = wait_done(server, 40)
        assert st["images failed"] == 0 and st["error"] is None
        assert_each_image_once(base, 40)
    finally:
        server.stop()


def test_daemon_mode_detaches_and_logs(tmp_path, base):
    server = Server(tmp_path, base, ["--rescan", "0", "-d"])
    r = subprocess.run(server.args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0  # the foreground process returns at once
    log = base / ".saxsdog" / "server.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (log.exists() and "serving" in log.read_text()):
        time.sleep(0.1)
    assert "serving" in log.read_text()
    assert (log.stat().st_mode & 0o077) == 0  # private log
    with server.client() as c:
        assert c.request("stat")["result"] == "stat"
    pids = subprocess.run(["pgrep", "-f", f"saxsdog.cli.server {base}"], capture_output=True,
                          text=True).stdout.split()
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", f"saxsdog.cli.server {base}"],
                                                         capture_output=True).returncode == 0:
        time.sleep(0.1)
    assert "stopped" in log.read_text()
