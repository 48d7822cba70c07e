"""Benchmark: the local worker pool versus the Dask backend on the same images, in one run.

Usage::

    python benchmarks/bench_dask.py [--data ../shared/data] [-n 1000] [--workers 2]
                                    [--batch-size 8] [--repeat 2]

Processes N hard links of the real Pilatus 1M image ``buf1_00000.tif`` (one copy, so it is
read from the page cache) with ``cal.json``, writing .chi files to a temporary folder, once
with the local pool and once on a ``LocalCluster`` of single-threaded worker processes.
Startup (forking workers, starting the cluster, shipping the operator) is timed apart; the
rates cover queueing the directory until the last result is in the history.  Prints one
table: frames/s of both, their ratio (target >= 85 %), and the Dask per-task overhead,
measured two ways: the round trip of an empty batch, and the extra wall time per dask task
compared with the local pool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> tuple[float, dict[int, float]]:
    """CPU seconds of this process (coordinator, and the in-process Dask scheduler), and of
    each live descendant process (workers, nannies) by pid."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    children = {}
    for p in me.children(recursive=True):
        try:
            c = p.cpu_times()
            children[p.pid] = c.user + c.system
        except psutil.Error:
            pass
    return t.user + t.system, children


def timed_run(cal, root: Path, out: Path, workers: int, pool_factory=None) -> dict[str, float]:
    """Startup and processing seconds, frames, and CPU seconds of one queue run."""
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.queue import ImageQueue

    t0 = time.perf_counter()
    q = ImageQueue(cal, root, QueueOptions(workers=workers, out_dir=out), pool_factory=pool_factory).start()
    t1 = time.perf_counter()
    cpu0, kids0 = cpu_seconds()
    q.fill_from_directory()
    if not q.wait_until_idle(600):
        raise RuntimeError("the run did not finish within 10 minutes")
    t2 = time.perf_counter()
    cpu1, kids1 = cpu_seconds()  # before stop(): local workers still alive
    q.stop()
    if q.history.failures:
        raise RuntimeError(f"{len(q.history.failures)} image(s) failed, e.g. {next(iter(q.history.failures.items()))}")
    return {"startup": t1 - t0, "time": t2 - t1, "frames": q.history.processed, "coordinator_cpu": cpu1 - cpu0,
            "worker_cpu": sum(v - kids0.get(pid, 0.0) for pid, v in kids1.items())}


def empty_batch_round_trip(cal, address: str, repeat: int = 200) -> float:
    """Median seconds to submit an empty batch and gather its (empty) result."""
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.dask_pool import DaskPool, process_batch

    pool = DaskPool(cal, QueueOptions(), address)
    try:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            pool.client.submit(process_batch, pool.token, [], pure=False).result()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        pool.close()


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=here.parent / ".." / "shared" / "data",
                    help="folder with buf1_00000.tif and cal.json")
    ap.add_argument("-n", "--images", type=int, default=1000, help="images per run (default 1000)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of both backends")
    ap.add_argument("--batch-size", type=int, default=None, help="images per dask task (default: the pool's)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per backend, alternating; best is kept")
    args = ap.parse_args()

    from distributed import LocalCluster

    from saxsdog import Calibration
    from saxsdog.pipeline.dask_pool import DEFAULT_BATCH_SIZE, dask_pool_factory

    batch = args.batch_size or DEFAULT_BATCH_SIZE
    n = args.images
    with tempfile.TemporaryDirectory(prefix="saxsdog-bench-") as tmp:
        tmp = Path(tmp)
        cal = Calibration(args.data / "cal.json", cache=tmp / "cache")
        from saxsdog.testing import link_images

        link_images(args.data / "buf1_00000.tif", tmp / "run", n)
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        try:
            factory = dask_pool_factory(cluster.scheduler_address, batch_size=batch)
            local, dask = [], []
            for r in range(args.repeat):
                local.append(timed_run(cal, tmp / "run", tmp / f"local{r}", args.workers))
                dask.append(timed_run(cal, tmp / "run", tmp / f"dask{r}", args.workers, factory))
                for d in (tmp / f"local{r}", tmp / f"dask{r}"):
                    shutil.rmtree(d)
            rtt = empty_batch_round_trip(cal, cluster.scheduler_address)
        finally:
            cluster.close()

    lb = min(local, key=lambda r: r["time"])
    db = min(dask, key=lambda r: r["time"])
    assert lb["frames"] == db["frames"] == n, (lb["frames"], db["frames"], n)
    l_fps, d_fps = n / lb["time"], n / db["time"]
    tasks = -(-n // batch)
    extra = db["time"] - lb["time"]
    l_cpu = lb["coordinator_cpu"] + lb["worker_cpu"]
    d_cpu = db["coordinator_cpu"] + db["worker_cpu"]
    extra_cpu = d_cpu - l_cpu

    def cpu_note(r: dict[str, float]) -> str:
        return (f"startup {r['startup']:5.2f} s; CPU/image: coordinator {r['coordinator_cpu'] / n * 1e3:.2f} ms,"
                f" workers {r['worker_cpu'] / n * 1e3:.2f} ms")

    rows = [
        ("local pool (forked workers)", f"{l_fps:8.1f} frames/s", cpu_note(lb)),
        (f"Dask LocalCluster ({args.workers}x1 thread, batch {batch})", f"{d_fps:8.1f} frames/s", cpu_note(db)),
        ("ratio Dask / local", f"{100 * d_fps / l_fps:8.1f} %", "target >= 85 % (wall time: sensitive to other load)"),
        ("CPU efficiency local / Dask", f"{100 * l_cpu / d_cpu:8.1f} %", "CPU per image of all processes"),
        ("empty batch round trip (submit + gather)", f"{rtt * 1e3:8.2f} ms", "latency per dask task, unloaded"),
        ("(Dask - local) wall time per dask task", f"{extra / tasks * 1e3:8.2f} ms",
         f"{tasks} tasks; per image {extra / n * 1e3:.2f} ms"),
        ("(Dask - local) CPU time per dask task", f"{extra_cpu / tasks * 1e3:8.2f} ms",
         f"all processes; per image {extra_cpu / n * 1e3:.2f} ms"),
    ]
    print(f"\n{n} Pilatus 1M images (hard links, page cache), {args.workers} workers, "
          f"{os.cpu_count()} cores; best of {args.repeat} runs each (load average {os.getloadavg()[0]:.1f})")
    w = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{w}}  {'value':>17}  note")
    print("-" * (w + 90))
    for name, value, note in rows:
        print(f"{name:<{w}}  {value:>17}  {note}")


if __name__ == "__main__":
    main()
