"""The Dask backend: same outputs as the local pool, no image lost, operator shipped once.

Each test uses a ``LocalCluster`` of single-threaded worker processes (the scale-out path
without a real cluster).  Skipped only when ``dask.distributed`` is not installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Dask clusters: the slow layer

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'dask[distributed]')")

import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from saxsdog.errors import SaxsdogError  # noqa: E402
from saxsdog.io.chi import read_chi  # noqa: E402
from saxsdog.pipeline import QueueOptions  # noqa: E402
from saxsdog.pipeline.dask_pool import DaskPool, SchedulerUnreachable, dask_pool_factory  # noqa: E402
from saxsdog.pipeline.queue import ImageQueue  # noqa: E402
from saxsdog.pipeline.tasks import ImageTask  # noqa: E402
from saxsdog.testing import free_port, link_images  # noqa: E402

N_IMAGES = 300
DATA_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def _cluster(**config) -> LocalCluster:
    # the scheduler runs in this process, so config set here reaches it
    with dask.config.set(config):
        return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")


@pytest.fixture(scope="module")
def cluster():
    c = _cluster()
    yield c
    c.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, list[Path]]:
    """300 hard links of one real Pilatus 1M image (one copy in the page cache)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real test data not available (expected at {DATA_DIR})")
    root = tmp_path_factory.mktemp("dask") / "run"
    return root, link_images(DATA_DIR / "buf1_00000.tif", root, N_IMAGES)


def _wait_for_workers(address: str, n: int = 2) -> None:
    """Let a cluster whose worker was killed get its replacement back."""
    with Client(address, set_as_default=False) as c:
        c.wait_for_workers(n, timeout=60)


def run(cal, root: Path, out: Path, pool_factory=None, **opts) -> ImageQueue:
    q = ImageQueue(cal, root, QueueOptions(out_dir=out, **opts), pool_factory=pool_factory).start()
    q.fill_from_directory()
    assert q.wait_until_idle(120)
    q.stop()
    return q


def assert_each_image_once(q: ImageQueue, images: list[Path], out: Path, reference: bytes) -> None:
    assert not q.history.failures
    paths = Counter(r["path"] for r in q.history.records if not r["error"])
    assert sorted(paths) == sorted(map(str, images)) and set(paths.values()) == {1}
    outs = sorted(out.glob("*.chi"))
    assert len(outs) == len(images)
    assert all(o.read_bytes() == reference for o in outs)  # complete, never half-written


def test_outputs_byte_identical_to_local_pool(real_calibration, images, tmp_path):
    root, paths = images
    local = run(real_calibration, root, tmp_path / "local", workers=2)
    pools = []

    def factory(cal, options):
        pools.append(dask_pool_factory("local")(cal, options))  # owns its LocalCluster
        return pools[0]

    dsk = run(real_calibration, root, tmp_path / "dask", pool_factory=factory, workers=2)
    assert local.history.processed == dsk.history.processed == N_IMAGES
    assert not local.history.failures and not dsk.history.failures
    a = sorted(p.name for p in (tmp_path / "local").glob("*.chi"))
    b = sorted(p.name for p in (tmp_path / "dask").glob("*.chi"))
    assert a == b and len(a) == N_IMAGES
    for name in a:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()
    # the same results reach the history and the live file list
    la = (tmp_path / "local" / "results" / "filelist.txt").read_text().splitlines()
    lb = (tmp_path / "dask" / "results" / "filelist.txt").read_text().splitlines()

    def strip(lines: list[str]) -> list[str]:  # file, output, I0, I1, I2; output folder unified
        return sorted("\t".join(line.split("\t")[:5]).replace("/dask/", "/X/").replace("/local/", "/X/")
                      for line in lines)

    assert strip(la) == strip(lb)
    assert dsk.history.latest.worker not in (0, os.getpid())  # it ran in a worker process
    assert pools[0]._cluster is None  # the owned cluster was closed with the pool


def test_operator_is_shipped_once_per_worker(real_calibration, cluster, images, tmp_path):
    root, paths = images
    subset = paths[:40]
    pool = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "out"), cluster.scheduler_address,
                    batch_size=2)
    try:
        assert pool.capacity > 0
        pending = [ImageTask(str(p), str(root)) for p in subset]
        done = []
        while pending or pool.inflight:
            while pending and pool.submit(pending[0]):
                pending.pop(0)
            d, orphaned = pool.poll(0.1)
            assert not orphaned
            done.extend(d)
        assert sorted(t.path for t, _ in done) == sorted(map(str, subset))
        by_worker = Counter(rs[0].worker for _, rs in done)
        state = pool.worker_state()
        assert len(state) == 2 and set(by_worker) <= {s["pid"] for s in state.values()}
        # 20 dask tasks ran, yet each worker process unpickled the calibration exactly once
        assert all(s["installed"] and s["calibration_loads"] == 1 for s in state.values())
        assert all(s["maps_images"] for s in state.values())  # as the local pool's workers
        assert max(by_worker.values()) > 2  # so a per-task shipment would have shown
        if sys.platform.startswith("linux"):  # the nanny's malloc trim setting was undone
            assert all(s["malloc_tuned"] for s in state.values())
    finally:
        pool.close()
    # closing the pool frees the operator on a cluster that lives on
    with Client(cluster.scheduler_address, set_as_default=False) as c:
        from saxsdog.pipeline.dask_pool import _worker_state

        assert not any(s["installed"] for s in c.run(_worker_state, pool.token).values())


def test_workers_diagnostics_are_quieted_while_a_pool_is_installed(real_calibration, cluster, tmp_path):
    """Issue 17: Dask's 10 ms stack sampler is stopped and its loop check and system monitor slowed
    on each worker while saxsdog runs there, and restored when the last pool sharing the cluster closes."""
    from saxsdog.pipeline.dask_pool import _diagnostics

    with Client(cluster.scheduler_address, set_as_default=False) as c:
        def state() -> list[dict]:
            return list(c.run(_diagnostics).values())

        default = state()
        assert all(d["profile"][0] and d["tick"][1] < 200 for d in default)  # dask's defaults
        first = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "a"), cluster.scheduler_address)
        second = None
        try:
            quiet = state()
            assert all(not d["profile"][0] and not d["profile-cycle"][0] and d["tick"][1] >= 200
                       and d["monitor"][1] >= 2000 for d in quiet)
            assert all(s["quieted"] for s in first.worker_state().values())
            second = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "b"), cluster.scheduler_address)
            first.close()
            assert state() == quiet  # the second pool still runs there
        finally:
            first.close()
            if second is not None:
                second.close()
        assert state() == default
        loud = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "c"), cluster.scheduler_address,
                        quiet_workers=False)
        try:
            assert state() == default
        finally:
            loud.close()


def test_killed_worker_loses_nothing(real_calibration, cluster, images, tmp_path):
    root, paths = images
    _wait_for_workers(cluster.scheduler_address)
    out = tmp_path / "out"
    q = ImageQueue(real_calibration, root, QueueOptions(out_dir=out),
                   pool_factory=dask_pool_factory(cluster.scheduler_address)).start()
    q.fill_from_directory()
    deadline = time.monotonic() + 60
    while q.history.processed < 40 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert q.history.processed < N_IMAGES  # the kill happens mid-run
    os.kill(q.worker_pids()[0], signal.SIGKILL)
    assert q.wait_until_idle(120)
    q.stop()
    assert q.worker_restarts >= 1
    reference = (out / paths[0].with_suffix(".chi").name).read_bytes()
    assert read_chi(out / paths[0].with_suffix(".chi").name).q.size == 1003
    assert_each_image_once(q, paths, out, reference)


def test_batch_given_up_by_dask_is_requeued(real_calibration, images, tmp_path, caplog):
    """With ``allowed-failures`` 0 dask does not retry: the pool re-queues the batch itself."""
    root, paths = images
    c = _cluster(**{"distributed.scheduler.allowed-failures": 0})
    try:
        out = tmp_path / "out"
        q = ImageQueue(real_calibration, root, QueueOptions(out_dir=out),
                       pool_factory=dask_pool_factory(c.scheduler_address)).start()
        with caplog.at_level(logging.WARNING, logger="saxsdog.pipeline.dask_pool"), \
                Client(c.scheduler_address, set_as_default=False) as client:
            pids = client.run(os.getpid)  # worker address -> pid
            q.fill_from_directory()
            deadline = time.monotonic() + 60
            while q.history.processed < 40 and time.monotonic() < deadline:
                time.sleep(0.002)
            # kill a worker that is running a batch now (an idle one would lose nothing)
            busy: list[str] = []
            while not busy and time.monotonic() < deadline:
                busy = [addr for addr, keys in client.processing().items() if keys]
            assert busy, "no batch was running"
            os.kill(pids[busy[0]], signal.SIGKILL)
            assert q.wait_until_idle(120)
            q.stop()
        assert any("lost with its worker" in r.getMessage() for r in caplog.records)
        # a whole batch of several images went back to the queue (and each image is reported once)
        assert max(r.args[1] for r in caplog.records if "lost with its worker" in r.getMessage()) > 1
        reference = (out / paths[0].with_suffix(".chi").name).read_bytes()
        assert_each_image_once(q, paths, out, reference)
        assert len(q.history.records) == N_IMAGES  # no image recorded twice
    finally:
        c.close()


def test_unreachable_scheduler_is_a_clear_error(real_calibration):
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    with pytest.raises(SchedulerUnreachable) as err:
        DaskPool(real_calibration, QueueOptions(), address, connect_timeout=1.0)
    assert isinstance(err.value, SaxsdogError)
    assert address in str(err.value)


def test_scheduler_lost_mid_run_raises(real_calibration, images, tmp_path):
    root, paths = images
    # a thread worker is enough here and starts fast
    c = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    address = c.scheduler_address
    pool = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "out"), address, connect_timeout=1.0)
    try:
        for p in paths[:8]:
            assert pool.submit(ImageTask(str(p), str(root)))
        pool.poll(0)
        c.close()
        with pytest.raises(SchedulerUnreachable) as err:
            for _ in range(600):  # bounded: fails rather than hangs if it never notices
                pool.poll(0.05)
        assert address in str(err.value) and "-r" in str(err.value)
    finally:
        pool.close()  # what ImageQueue.stop() does after the error: must not hang
        c.close()


def _wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout:g} s")


@contextlib.contextmanager
def _scheduler_with_one_worker() -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``dask scheduler`` and one ``dask worker --no-nanny`` as real processes: yields the
    scheduler's address and process (to stop it), and kills both afterwards."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        _wait_for_port(port)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                   "--no-dashboard", "--no-nanny"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_workers(address, 1)
        yield address, scheduler
    finally:
        os.kill(scheduler.pid, signal.SIGCONT)  # a test may have stopped it
        for proc in (worker, scheduler):
            if proc is not None:
                proc.kill()
                proc.wait(30)


def test_hung_scheduler_is_detected_and_stop_does_not_hang(real_calibration, images, tmp_path):
    """A scheduler that keeps its connection but stops answering (SIGSTOP) ends the run with
    a clear error instead of an endless wait; what was written is complete."""
    root, paths = images
    with _scheduler_with_one_worker() as (address, scheduler):
        out = tmp_path / "out"
        q = ImageQueue(real_calibration, root, QueueOptions(out_dir=out),
                       pool_factory=dask_pool_factory(address, unresponsive_timeout=3.0)).start()
        q.fill_from_directory()
        deadline = time.monotonic() + 60
        while q.history.processed < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 0 < q.history.processed < N_IMAGES
        os.kill(scheduler.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        assert q.wait_until_idle(60)
        noticed = time.monotonic() - stopped
        t0 = time.monotonic()
        q.stop()
        assert time.monotonic() - t0 < 20
        assert isinstance(q.error, SchedulerUnreachable), q.error
        assert address in str(q.error) and "no answer" in str(q.error) and "-r" in str(q.error)
        assert 3.0 <= noticed < 20
        done = [r for r in q.history.records if not r["error"]]
        assert len(done) < N_IMAGES and not q.history.failures
        reference = (out / Path(done[0]["path"]).with_suffix(".chi").name).read_bytes()
        assert len(reference) > 0
        # every output present is complete (written atomically), none half-written
        assert all(o.read_bytes() == reference for o in out.glob("*.chi"))


#: Run on the scheduler (as text: a function of this test module cannot be unpickled there):
#: the heavy modules it has loaded.
HEAVY_LOADED = ("sorted(m for m in __import__('sys').modules if m in ('numba', 'numpy', 'saxsdog.calibration', "
                "'saxsdog.pipeline.dask_pool', 'saxsdog.pipeline.worker'))")


def test_the_scheduler_handles_batches_as_bytes_without_importing_the_pipeline(real_calibration, images, tmp_path):
    """A batch was pickled image tasks for ``dask_pool.process_batch``: the scheduler, which
    unpickles every task, imported saxsdog's integration stack (numba, ~60 MB) and unpickled
    and re-pickled each batch.  Now the batch is bytes for a function of a module that imports
    only the standard library."""
    root, paths = images
    with _scheduler_with_one_worker() as (address, _):
        pool = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "out"), address, batch_size=3)
        try:
            pending = [ImageTask(str(p), str(root)) for p in paths[:12]]
            done: list = []
            deadline = time.monotonic() + 120
            while (pending or pool.inflight) and time.monotonic() < deadline:
                while pending and pool.submit(pending[0]):
                    pending.pop(0)
                done.extend(pool.poll(0.1)[0])
            assert sorted(t.path for t, _ in done) == sorted(map(str, paths[:12]))
            assert all(rs[0].ok for _, rs in done)
            with Client(address, set_as_default=False) as c:
                # numpy: the scheduler's own (distributed imports it), not saxsdog's
                assert set(c.run_on_scheduler(eval, HEAVY_LOADED)) <= {"numpy"}
        finally:
            pool.close()


def test_poll_wakes_at_once_on_the_queue_wakeup(real_calibration, cluster, images, tmp_path):
    """With nothing in flight ``poll`` slept its whole timeout, deaf to new images; now the
    queue's wake-up fd (and a finished batch) end its wait."""
    root, paths = images
    pool = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "out"), cluster.scheduler_address,
                    batch_size=1)
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        os.write(w, b"\0")  # the queue has news (an image was pushed)
        t0 = time.monotonic()
        assert pool.poll(5.0, wakeup=r) == ([], [])
        assert time.monotonic() - t0 < 2.0
        os.read(r, 16)
        assert pool.submit(ImageTask(str(paths[0]), str(root)))
        done: list = []
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            d, orphaned = pool.poll(5.0, wakeup=r)
            assert not orphaned
            done.extend(d)
        assert [t.path for t, _ in done] == [str(paths[0])] and done[0][1][0].ok
    finally:
        pool.close()
        os.close(r)
        os.close(w)


@pytest.fixture
def thread_cluster():
    """One in-process worker (a thread): what the test patches in this process runs there."""
    c = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    yield c
    c.close()


def test_no_batch_is_sent_before_the_calibration_is_installed(real_calibration, thread_cluster, images,
                                                               tmp_path, monkeypatch):
    """Issue 17: the calibration travels to the workers in the background while the queue takes
    in its first images; no batch may reach a worker before it is installed there."""
    import threading

    from saxsdog.pipeline import dask_pool

    root, paths = images
    release = threading.Event()
    real_install = dask_pool._install

    def slow_install(token, payload):
        assert release.wait(30)
        return real_install(token, payload)

    monkeypatch.setattr(dask_pool, "_install", slow_install)
    pool = DaskPool(real_calibration, QueueOptions(out_dir=tmp_path / "out"), thread_cluster.scheduler_address,
                    background_install=True)
    try:
        for p in paths[:10]:
            assert pool.submit(ImageTask(str(p), str(root)))
        for _ in range(3):
            assert pool.poll(0.1) == ([], [])
        assert not pool.batch_sizes and pool.inflight == 10  # held back, none lost
        release.set()
        done: list = []
        deadline = time.monotonic() + 60
        while pool.inflight and time.monotonic() < deadline:
            d, orphaned = pool.poll(0.5)
            assert not orphaned
            done.extend(d)
        assert sorted(t.path for t, _ in done) == sorted(map(str, paths[:10]))
        assert all(rs[0].ok for _, rs in done)
    finally:
        release.set()
        pool.close()


def test_calibration_that_cannot_be_installed_is_a_clear_error(real_calibration, thread_cluster, images,
                                                               tmp_path, monkeypatch):
    """An error installing the calibration on the workers (in the background) ends the run with
    an error naming the cluster, instead of tasks failing on workers that lack it."""
    from saxsdog.pipeline import dask_pool
    from saxsdog.pipeline.dask_pool import DaskSetupError

    def broken_install(token, payload):
        raise ValueError("calibration format 9 is newer than this saxsdog")

    monkeypatch.setattr(dask_pool, "_install", broken_install)
    root, paths = images
    address = thread_cluster.scheduler_address
    q = ImageQueue(real_calibration, root, QueueOptions(out_dir=tmp_path / "out"),
                   pool_factory=dask_pool_factory(address)).start()
    for p in paths[:5]:
        q.push(p)
    assert q.wait_until_idle(60)
    t0 = time.monotonic()
    q.stop()
    assert time.monotonic() - t0 < 20
    assert isinstance(q.error, DaskSetupError), q.error
    assert address in str(q.error) and "calibration format 9" in str(q.error)
    assert q.history.processed == 0 and not list((tmp_path / "out").glob("*.chi"))
