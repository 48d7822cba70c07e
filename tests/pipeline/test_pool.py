"""The local worker pool on real forked processes: stalls, deaths, inherited descriptors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from saxsdog.pipeline.pool import WorkerPool, heartbeat
from saxsdog.pipeline.tasks import ImageResult, ImageTask


class _Echo:
    """Processes a task instantly; a path containing 'stop' makes the worker SIGSTOP itself."""

    def process(self, task: ImageTask) -> list[ImageResult]:
        if "stop" in os.path.basename(task.path):
            os.kill(os.getpid(), signal.SIGSTOP)
        if "slow" in os.path.basename(task.path):
            time.sleep(0.3)
        if "frames" in os.path.basename(task.path):  # a long file of many frames
            for _ in range(15):
                time.sleep(0.2)
                heartbeat()
        return [ImageResult(task.path, 0, outputs=[task.path + ".out"], worker=os.getpid())]


def _collect(pool: WorkerPool, n: int, timeout: float = 30.0):
    done, orphaned = [], []
    deadline = time.monotonic() + timeout
    while len(done) < n and time.monotonic() < deadline:
        d, o = pool.poll(0.05)
        done += d
        orphaned += o
        for t in o:  # re-queue as the queue does
            assert pool.submit(t) or True
    return done, orphaned


def _task(name: str) -> ImageTask:
    return ImageTask(f"/nowhere/{name}", "/nowhere", 0, time.monotonic())


@pytest.mark.slow
def test_a_stopped_worker_is_killed_replaced_and_its_task_requeued():
    pool = WorkerPool(_Echo, 1, task_timeout=1.0)
    try:
        victim = pool.pids()[0]
        assert pool.submit(_task("slow_a"))
        assert pool.submit(_task("b"))
        time.sleep(0.05)
        os.kill(victim, signal.SIGSTOP)  # a real SIGSTOP, from outside
        t0 = time.monotonic()
        done, orphaned = [], []
        while not orphaned and time.monotonic() - t0 < 10:
            d, orphaned = pool.poll(0.05)
            done += d
        noticed = time.monotonic() - t0
        assert orphaned, "the stalled worker was never noticed"
        assert 0.9 < noticed < 3.0
        assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
        assert pool.stalls == 1 and pool.restarts == 1 and pool.pids()[0] != victim
        assert pool.losses[0].stalled and pool.losses[0].pid == victim
        for t in orphaned:
            assert pool.submit(t)
        more, _ = _collect(pool, len(orphaned))
        assert sorted(t.path for t, _ in done + more) == ["/nowhere/b", "/nowhere/slow_a"]
    finally:
        pool.close()


@pytest.mark.slow
def test_an_image_that_stalls_its_worker_three_times_fails_with_the_reason():
    pool = WorkerPool(_Echo, 2, task_timeout=0.5)
    try:
        for name in ("a", "stop_me", "c"):
            assert pool.submit(_task(name))
        done, _ = _collect(pool, 3, timeout=30)
        by_path = {t.path: r for t, r in done}
        assert set(by_path) == {"/nowhere/a", "/nowhere/stop_me", "/nowhere/c"}
        bad = by_path["/nowhere/stop_me"][0]
        assert "stalled" in bad.error and "3 times" in bad.error and "0.5 s" in bad.error
        assert by_path["/nowhere/a"][0].error is None and by_path["/nowhere/c"][0].error is None
        assert pool.stalls == 3
    finally:
        pool.close()


@pytest.mark.slow
def test_a_long_task_that_reports_progress_is_not_a_stall():
    pool = WorkerPool(_Echo, 1, task_timeout=1.0)
    try:
        assert pool.submit(_task("frames_3s"))
        done, orphaned = _collect(pool, 1, timeout=20)
        assert not orphaned and pool.stalls == 0
        assert done[0][1][0].error is None
    finally:
        pool.close()


@pytest.mark.slow
def test_close_does_not_hang_on_a_stopped_worker():
    pool = WorkerPool(_Echo, 2, task_timeout=0)  # no deadline: close alone must cope
    pids = pool.pids()
    os.kill(pids[0], signal.SIGSTOP)
    t0 = time.monotonic()
    pool.close(timeout=1.0)
    assert time.monotonic() - t0 < 4.0
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_workers_do_not_inherit_listening_sockets_or_other_pipes(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    db = open(tmp_path / "ledger.sqlite", "wb")  # noqa: SIM115 - held open while the workers fork
    pool = WorkerPool(_Echo, 2)
    try:
        for pid in pool.pids():
            kinds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert not any("ledger.sqlite" in k for k in kinds), kinds
            conns = psutil.Process(pid).net_connections(kind="inet")
            assert not any(c.status == psutil.CONN_LISTEN for c in conns), conns
            # own task pipe + own sentinel + own liveness pipe; nothing of the other worker
            sockets = [k for k in kinds if k.startswith("socket:")]
            assert len(sockets) == 1, kinds
    finally:
        pool.close()
        listener.close()
        db.close()


_ORPHAN_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from saxsdog.pipeline.pool import WorkerPool, heartbeat

    class Busy:
        def process(self, task):
            time.sleep(60)

    import threading
    pool = None
    def start():
        global pool
        pool = WorkerPool(Busy, 2)
    t = threading.Thread(target=start)  # forked from a thread that ends: workers must stay
    t.start(); t.join()
    time.sleep(0.3)
    if {mode!r} == "busy":
        from saxsdog.pipeline.tasks import ImageTask
        pool.submit(ImageTask("/x/a", "/x", 0, 0.0))
        pool.submit(ImageTask("/x/b", "/x", 0, 0.0))
    print(" ".join(map(str, pool.pids())), flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("mode", ["idle", "busy", "stopped"])
@pytest.mark.slow
def test_workers_die_with_their_parent_killed_alone(tmp_path, mode):
    """SIGKILL of the parent pid only (as the OOM killer does): no worker survives it."""
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT.format(mode=mode)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.3)
        assert all(psutil.Process(p).ppid() == proc.pid for p in pids)  # survived the forking thread
        if mode == "stopped":
            for p in pids:
                os.kill(p, signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
            time.sleep(0.02)
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphaned workers: {alive}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stdout.close()


class _HalfSent:
    """Sends the header of a large result and then SIGSTOPs itself (the first time: a marker
    file), as a worker stopped between the two writes of a result over 16 kB would."""

    def process(self, task: ImageTask) -> list[ImageResult]:
        marker = task.path + ".stopped"
        if "half" in os.path.basename(task.path) and not os.path.exists(marker):
            open(marker, "w").close()
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:"):  # its one pipe to the pool
                    os.write(int(fd), (100_000).to_bytes(4, "big") + b"\0" * 1000)
                    break
            os.kill(os.getpid(), signal.SIGSTOP)
        return [ImageResult(task.path, 0, outputs=[task.path + ".out"], worker=os.getpid())]


def test_a_worker_stopped_in_the_middle_of_a_result_does_not_block_the_pool(tmp_path):
    """The coordinator reads only what has arrived: half a message from a stopped worker
    neither blocks it (the other worker's results still come in) nor is taken for a result;
    the stalled worker is replaced and its tasks are done by the others, each once."""
    import threading

    pool = WorkerPool(_HalfSent, 2, task_timeout=1.0)
    tasks = [ImageTask(str(tmp_path / name), str(tmp_path), 0, time.monotonic())
             for name in ("half_a", "b", "c", "d", "e", "f")]
    box: dict = {}

    def run():
        pending = list(tasks)
        done = []
        deadline = time.monotonic() + 20
        while len(done) < len(tasks) and time.monotonic() < deadline:
            while pending and pool.capacity > 0:
                if not pool.submit(pending[0]):
                    break
                pending.pop(0)
            d, orphaned = pool.poll(0.05)
            done += d
            pending = list(orphaned) + pending
        box["done"] = done

    try:
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "the pool blocked reading half a message"
        done = box["done"]
        assert sorted(task.path for task, _ in done) == sorted(task.path for task in tasks)
        assert all(r.error is None and r.outputs == [r.path + ".out"] for _, rs in done for r in rs)
        assert pool.stalls == 1
    finally:
        pool.close()
