"""kill -9 of the server pid alone (as the OOM killer does) and stops of ``saxsdog``: no worker survives.

The tests kill the pid, never the process group, then look for any process whose parent
was the killed one or that was one of its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from saxsdog.feeder import Feeder
from saxsdog.testing import free_port, link_images

from server_helpers import Server, start_queue, wait_done
from test_server_e2e import assert_each_image_once

pytestmark = pytest.mark.slow  # real saxsdogserver and saxsdog subprocesses: the slow layer


@pytest.fixture
def base(tmp_path):
    b = tmp_path / "base"
    (b / "run").mkdir(parents=True)
    return b


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _children(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children()]


def assert_no_survivor(parent: int, workers: list[int], timeout: float = 5.0) -> float:
    """Wait until no worker and no child of ``parent`` is left; returns how long it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = [w for w in workers if _alive(w)]
        left += [p.pid for p in psutil.process_iter(["ppid"]) if p.info["ppid"] == parent and _alive(p.pid)]
        if not left:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"workers survived their parent {parent}: "
                         + ", ".join(f"{p} (ppid {psutil.Process(p).ppid()})" for p in set(left) if _alive(p)))


def test_kill_9_of_the_server_pid_alone_frees_both_ports_and_resumes_exactly_once(tmp_path, base, data_dir):
    http_port = free_port()
    server = Server(tmp_path, base, ["--rescan", "1"])
    server.args = [a for a in server.args if a != "--no-http"] + ["--http-port", str(http_port)]
    server.start()
    start_queue(server, data_dir)
    images = link_images(data_dir / "buf1_00000.tif", base / "run", 300)
    work = base / "work"
    with Feeder(f"tcp://127.0.0.1:{server.fport}") as f:
        assert f.wait_for_subscriber(10)
        time.sleep(0.2)
        for p in images:
            f.announce(p)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(work.glob("*.chi"))) < 60:
            time.sleep(0.01)
        workers = _children(server.proc.pid)
        assert len(workers) >= 2, "the server has its worker processes"
        old = server.proc.pid
        os.kill(old, signal.SIGKILL)  # the pid only, not the group
        t_kill = time.monotonic()
        server.proc.wait()
    done_before = len(list(work.glob("*.chi")))
    assert done_before < 300, "the kill must land mid-run"
    try:
        assert_no_survivor(old, workers)
    finally:  # never leave orphans behind a failed test
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
    server.log.close()
    server.start()  # same ZeroMQ and HTTP ports: must not fail with "Address already in use"
    restart = time.monotonic() - t_kill
    try:
        assert restart < 5.0, f"restart took {restart:.1f} s"
        print(f"restart after kill -9: {restart:.2f} s")
        wait_done(server, 300)
        assert_each_image_once(base, 300)
    finally:
        server.stop()


def _start_saxsdog(args: list[str], work: Path, n: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "saxsdog.cli.saxsdog", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(work.glob("*.chi"))) < n:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("watch", [False, True], ids=["batch", "watch"])
def test_saxsdog_stopped_leaves_no_worker(tmp_path, data_dir, signum, watch):
    run = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", run, 400)
    proc = _start_saxsdog(["-c", str(data_dir / "cal.json"), "-S", "-t", "2", *(["-w"] if watch else []),
                           str(run)], tmp_path / "work", 20)
    try:
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signum)
        proc.wait(60)
        assert_no_survivor(proc.pid, workers)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()


def test_a_sigstopped_worker_is_replaced_and_every_image_done_once(tmp_path, base, data_dir):
    server = Server(tmp_path, base, ["--rescan", "0", "--task-timeout", "2"]).start()
    try:
        start_queue(server, data_dir)
        images = link_images(data_dir / "buf1_00000.tif", base / "run", 200)
        with Feeder(f"tcp://127.0.0.1:{server.fport}") as f:
            assert f.wait_for_subscriber(10)
            time.sleep(0.2)
            for p in images[:100]:
                f.announce(p)
            time.sleep(0.3)
            victim = _children(server.proc.pid)[0]
            os.kill(victim, signal.SIGSTOP)  # a real SIGSTOP: never answers, never dies by itself
            for p in images[100:]:
                f.announce(p)
        t0 = time.monotonic()
        st = wait_done(server, 200, timeout=60)
        print(f"200 images with one stopped worker done {time.monotonic() - t0:.1f} s after the stop")
        assert st["worker restarts"] >= 1 and st["images failed"] == 0
        assert not _alive(victim)
        assert_each_image_once(base, 200)
        t0 = time.monotonic()
        with server.client() as c:
            assert c.request("stat")["result"] == "stat"
        assert time.monotonic() - t0 < 1.0
    finally:
        server.stop()
