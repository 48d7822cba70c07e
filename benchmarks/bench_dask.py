"""Benchmark: the whole ``saxsdog --scheduler ADDRESS`` command on a running Dask cluster
versus the same command with its local pool, on the same images, in one run.

Usage::

    python benchmarks/bench_dask.py [--images 1000] [--workers 2] [--repeat 5] [--json out.json] [--quick]

The benchmark starts a cluster on this machine as a user would (``dask scheduler`` and
``dask worker --nworkers WORKERS --nthreads 1``, separate processes), waits for its workers,
then runs, interleaved (local, Dask, local, Dask, ...: ``--repeat`` of each),
``saxsdog -c CAL -t WORKERS -o OUT -S FOLDER`` (local pool) and
``saxsdog -c CAL --scheduler ADDRESS -o OUT -S FOLDER`` on N hard links of the real Pilatus
1M image (page cache).  Wall time covers the whole command, start-up included (for Dask:
connecting, shipping the calibration to the workers).

The verdict (``dask_ratio``) is the median, over every two neighbouring runs (one of each
backend), of the Dask run's frames/s over the local run's: a shared or drifting machine
(this VM's local pool alone varies 500-670 frames/s from run to run) slows both runs of a
pair alike, so the ratio holds where a best-against-best comparison of two separate series
depends on one lucky run.  Each backend's best run and their ratio are reported too.
Every run's outputs are checked: N ``.chi`` files, the first one byte-identical between
both backends.

Also reported: the CPU time of the cluster's processes per image (from /proc, around each
Dask run), split into the command, the scheduler, the nannies and the workers (their
integrating thread and the rest: Dask's event loop, heartbeats, monitors; the background
work grows with the run's wall time); the command's CPU by thread and the dispatcher's by
stage (one more run of each backend, in a wrapper that reads every thread's CPU when it
ends: the main thread's is mostly start-up), the batches the Dask pool sent, and the round
trip of an empty Dask task (the per-task latency).  The start-up steps the local pool does
not have are timed apart: importing ``distributed`` (CPU, in a fresh interpreter), the
client's connection, and registering the pool's plugin (the calibration sent once to every
worker, unpickled and warmed up there); with the pickled size of one image's results (what
comes back per image).  ``--quick``: a few images, one run of each.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, cpu_seconds, parser  # noqa: E402


def start_cluster(tmp: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    """``dask scheduler`` + ``dask worker`` processes; returns (address, processes) once the workers are up."""
    from distributed import Client

    sched_file = tmp / "scheduler.json"
    bindir = Path(sys.executable).parent
    dask_cmd = [str(bindir / "dask")]  # the dask command of this environment
    env = os.environ.copy()
    log = open(tmp / "cluster.log", "wb")  # noqa: SIM115 - closed with the processes
    procs = [subprocess.Popen([*dask_cmd, "scheduler", "--scheduler-file", str(sched_file), "--port", "0",
                               "--no-dashboard", "--host", "127.0.0.1"], stdout=log, stderr=log, env=env)]
    deadline = time.monotonic() + 120
    while not sched_file.exists():
        if time.monotonic() > deadline or procs[0].poll() is not None:
            raise RuntimeError(f"dask scheduler did not start: {(tmp / 'cluster.log').read_text()[-2000:]}")
        time.sleep(0.1)  # polling for a file another process writes
    procs.append(subprocess.Popen([*dask_cmd, "worker", "--scheduler-file", str(sched_file), "--nworkers",
                                   str(workers), "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                  stdout=log, stderr=log, env=env))
    with Client(scheduler_file=str(sched_file), timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
        address = client.scheduler.address
    return address, procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        p.terminate()
    for p in reversed(procs):
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def thread_cpu(pids: list[int]) -> dict[tuple[int, str], float]:
    """CPU seconds of every thread of some processes, by (pid, thread id)."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[(pid, tid)] = (int(f[11]) + int(f[12])) / tck
    return out


def split_worker_cpu(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float]
                     ) -> tuple[float, float]:
    """(integrating thread, everything else) CPU seconds of the worker processes between two
    :func:`thread_cpu` readings: per process, its busiest thread is the one running tasks."""
    per_pid: dict[int, list[float]] = {}
    for key, v in after.items():
        per_pid.setdefault(key[0], []).append(v - before.get(key, 0.0))
    busiest = sum(max(v) for v in per_pid.values() if v)
    return busiest, sum(sum(v) for v in per_pid.values()) - busiest


def cluster_processes(procs: list[subprocess.Popen]) -> dict[str, list[int]]:
    """The cluster's pids by kind: the scheduler, the ``dask worker`` process (it runs the
    nannies) and the worker processes the nannies started (and anything they started)."""
    workers = [q for q in descendants(procs[1].pid) if q != procs[1].pid]
    return {"scheduler": descendants(procs[0].pid), "nannies": [procs[1].pid], "workers": workers}


def children_cpu() -> float:
    """User + system CPU seconds of the reaped child processes so far (and theirs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


#: Runs the ``saxsdog`` command in this interpreter and, when it exits, writes the CPU seconds
#: of each of its threads (by name; read when a thread ends, and from /proc for those alive at
#: exit), the dispatcher's CPU by stage (``ImageQueue.coordinator_cpu``) and the sizes of the
#: Dask pool's batches to the JSON file named by ``argv[1]``.  No sampling thread: the
#: wrapper itself costs nothing while the command runs.
PROFILE_WRAPPER = r"""
import atexit, json, os, re, sys, threading, time
out_path = sys.argv.pop(1)
threads = {}
run = threading.Thread.run
def timed_run(self):
    try:
        run(self)
    finally:
        name = re.sub(r"([-_][0-9]+)+$", "", self.name) or self.name  # a pool's threads together
        threads[name] = threads.get(name, 0.0) + time.thread_time()
threading.Thread.run = timed_run
import saxsdog.pipeline.queue as q
seen = {}
start = q.ImageQueue.start
def profiled_start(self):
    self.coordinator_cpu = {}
    seen["queue"] = self
    return start(self)
q.ImageQueue.start = profiled_start
stop = q.ImageQueue.stop
def profiled_stop(self, *args, **kwargs):
    seen.setdefault("pool", self._pool)
    return stop(self, *args, **kwargs)
q.ImageQueue.stop = profiled_stop
def report():
    tck = os.sysconf("SC_CLK_TCK")
    live = {str(t.native_id): t for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        t = live.get(tid)
        if t is None:
            continue
        f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        name = "MainThread" if t is threading.main_thread() else t.name
        threads[name] = threads.get(name, 0.0) + (int(f[11]) + int(f[12])) / tck
    queue = seen.get("queue")
    pool = seen.get("pool")
    result = {"threads": threads, "stages": dict(getattr(queue, "coordinator_cpu", None) or {}),
              "batches": list(getattr(pool, "batch_sizes", []) or [])}
    with open(out_path, "w") as fh:
        json.dump(result, fh)
atexit.register(report)
sys.argv = ["saxsdog"] + sys.argv[1:]
import runpy
runpy.run_module("saxsdog.cli.saxsdog", run_name="__main__", alter_sys=True)
"""


def run_command(cal: Path, src: Path, out: Path, extra: list[str],
                profile: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its workers) of one ``saxsdog`` run, start-up included.

    With ``profile``, the command runs in :data:`PROFILE_WRAPPER`, which writes its CPU by
    thread and stage there.
    """
    if out.exists():
        shutil.rmtree(out)
    args = ["-c", str(cal), "-o", str(out), "-S", *extra, str(src)]
    if profile is None:
        cmd = [sys.executable, "-m", "saxsdog.cli.saxsdog", *args]
    else:
        cmd = [sys.executable, "-c", PROFILE_WRAPPER, str(profile), *args]
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"saxsdog {' '.join(extra)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, children_cpu() - cpu0


def empty_task_round_trip(address: str, repeat: int) -> float:
    """Median seconds to submit a task that does nothing and gather its result."""
    from distributed import Client

    with Client(address, timeout=60) as client:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            client.submit(len, [], pure=False).result()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def import_cpu_seconds(repeat: int) -> float:
    """Median CPU seconds of ``import distributed`` in a fresh interpreter that has imported saxsdog's queue.

    The Dask command pays it on top of the local pool's start-up (the local pool never imports it).
    """
    code = ("import time, saxsdog.pipeline.queue; t = time.process_time(); import distributed; "
            "print(time.process_time() - t)")
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def startup_phases(address: str, cal_path: Path, workers: int, repeat: int) -> dict[str, float]:
    """Median seconds of the Dask pool's start-up steps on the running cluster, and what travels.

    ``connect``: the client's connection; ``plugin``: registering the pool's plugin, i.e. the
    calibration pickled once, through the scheduler to every worker, unpickled and its
    kernels warmed up there (the scheduler answers once every worker has run the setup);
    ``plugin_mb``: the plugin's pickled size; ``result_bytes``: one image's pickled results.
    """
    import pickle
    import uuid

    from distributed import Client

    from saxsdog import Calibration
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.dask_pool import SaxsdogPlugin
    from saxsdog.pipeline.tasks import ImageResult

    cal = Calibration(cal_path)
    connect, plugin = [], []
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        client = Client(address, timeout=60, set_as_default=False)
        connect.append(time.perf_counter() - t0)
        try:
            client.wait_for_workers(workers, timeout=60)
            p = SaxsdogPlugin(uuid.uuid4().hex[:12], cal, QueueOptions())
            size = len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL))
            t0 = time.perf_counter()
            client.register_plugin(p)
            plugin.append(time.perf_counter() - t0)
            client.unregister_worker_plugin(p.name)
        finally:
            client.close()
    sample = [ImageResult("/data/run/img_00000.tif", 0, outputs=["/data/work/img_00000.chi"],
                          parameters={"R0": {"I0": 498.5, "I1": 752.1, "I2": 2293.9, "invariant": 2293.9,
                                             "correlation_length": 1.03, "dummy_pixels": 0}},
                          image_time=1.4e9, timings={"read": 0.0008, "integrate": 0.0036, "write": 0.0005},
                          processed_at=1.8e9, worker=1234, metadata={"exposure_time": 10.0, "wavelength": 1.55})]
    return {"connect": statistics.median(connect), "plugin": statistics.median(plugin), "plugin_mb": size / 1e6,
            "result_bytes": float(len(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)))}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--images", "-n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs per backend, interleaved; the verdict is the median ratio of neighbouring runs")
    args = ap.parse_args()
    if args.quick:
        args.images, args.repeat = 12, 1

    from saxsdog import Calibration
    from saxsdog.testing import link_images

    n = args.images
    report = Report(f"saxsdog command: Dask cluster vs local pool, {args.workers} workers, {n} images", args)
    with tempfile.TemporaryDirectory(prefix="saxsdog-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SAXSDOG_CACHE_DIR"] = str(tmp / "cache")
        cal_path = args.data / "cal.json"
        Calibration(cal_path)  # fills the operator cache both backends read
        link_images(args.data / "buf1_00000.tif", tmp / "run", n)
        link_images(args.data / "buf1_00000.tif", tmp / "warm", 16)
        address, procs = start_cluster(tmp, args.workers)
        report.context["cluster"] = f"dask scheduler + dask worker --nworkers {args.workers} --nthreads 1 at {address}"
        try:
            sequence: list[tuple[str, float]] = []  # (backend, wall seconds) in the order run
            local_cpu: list[float] = []
            dask_cpu: list[float] = []  # the command's own and the cluster's processes'
            parts: list[dict[str, float]] = []  # per Dask run: CPU seconds of each kind of process
            local_args = ["-t", str(args.workers)]
            dask_args = ["--scheduler", address]

            def dask_run(profile: Path | None = None) -> float:
                groups = cluster_processes(procs)
                before = {k: sum(cpu_seconds(p) for p in v) for k, v in groups.items()}
                threads0 = thread_cpu(groups["workers"])
                wall, cpu = run_command(cal_path, tmp / "run", tmp / "out_dask", dask_args, profile)
                integrating, rest = split_worker_cpu(threads0, thread_cpu(groups["workers"]))
                parts.append({"command": cpu, **{k: sum(cpu_seconds(p) for p in v) - before[k]
                                                 for k, v in groups.items()},
                              "workers_tasks": integrating, "workers_other": rest})
                dask_cpu.append(sum(v for k, v in parts[-1].items() if not k.startswith("workers_")))
                return wall

            if not args.quick:  # compiled kernels and caches loaded once before anything is timed
                for extra in (local_args, dask_args):
                    run_command(cal_path, tmp / "warm", tmp / "out_warm", extra)
            for _ in range(args.repeat):
                wall, cpu = run_command(cal_path, tmp / "run", tmp / "out_local", local_args)
                sequence.append(("local", wall))
                local_cpu.append(cpu)
                sequence.append(("dask", dask_run()))
                for out in ("out_local", "out_dask"):
                    written = sorted((tmp / out).glob("*.chi"))
                    report.check(len(written) == n, f"{out}: {len(written)} .chi files for {n} images")
                report.check((tmp / "out_local" / written[0].name).read_bytes() == written[0].read_bytes(),
                             "the Dask run's .chi differs from the local pool's")
            # one more run of each in the profiling wrapper (CPU by thread and stage; not timed)
            profiles = {}
            for kind, extra in (("local", local_args), ("dask", dask_args)):
                path = tmp / f"profile_{kind}.json"
                run_command(cal_path, tmp / "run", tmp / f"out_{kind}", extra, profile=path)
                profiles[kind] = json.loads(path.read_text())
                written = sorted((tmp / f"out_{kind}").glob("*.chi"))
                report.check(len(written) == n, f"profiled {kind} run: {len(written)} .chi files for {n} images")
            rtt = empty_task_round_trip(address, 20 if args.quick else 200)
            phases = startup_phases(address, cal_path, args.workers, 1 if args.quick else 3)
            import_s = import_cpu_seconds(1 if args.quick else 3)
        finally:
            stop_cluster(procs)
    local = [w for kind, w in sequence if kind == "local"]
    dask = [w for kind, w in sequence if kind == "dask"]
    # every two neighbouring runs of different backends: (local, dask) and (dask, local)
    pairs = [(a, b) if ka == "local" else (b, a)
             for (ka, a), (kb, b) in zip(sequence, sequence[1:]) if ka != kb]
    ratios = [100 * loc / dsk for loc, dsk in pairs]  # frames/s ratio = inverse wall ratio
    l_fps, d_fps = n / min(local), n / min(dask)
    report.context["runs"] = " ".join(f"{kind[0].upper()}{n / w:.0f}" for kind, w in sequence) + " frames/s"
    report.add("local pool: saxsdog -t WORKERS", l_fps, "frames/s", key="local_fps",
               note=f"best of {len(local)}; median {n / statistics.median(local):.0f}")
    report.add("Dask: saxsdog --scheduler ADDRESS", d_fps, "frames/s", key="dask_fps",
               note=f"best of {len(dask)}; median {n / statistics.median(dask):.0f}")
    report.add("Dask / local, neighbouring runs", statistics.median(ratios), "%", ">= 90", key="dask_ratio",
               note=f"median of {len(ratios)} pairs, {min(ratios):.1f}-{max(ratios):.1f}")
    report.add("Dask / local, best runs", 100 * d_fps / l_fps, "%", key="dask_ratio_best")
    report.add("local pool: CPU per image, all processes", min(local_cpu) / n * 1e3, "ms", key="local_cpu_ms",
               note="the command and its workers, start-up included")
    report.add("Dask: CPU per image, all processes", min(dask_cpu) / n * 1e3, "ms", key="dask_cpu_ms",
               note="the command, the scheduler, nannies and workers")
    best = parts[dask_cpu.index(min(dask_cpu[:len(dask)]))]  # of the timed runs
    for kind, what in (("command", "the saxsdog command (client, dispatcher, run start-up)"),
                       ("scheduler", "dask scheduler"), ("nannies", "dask worker: its nannies' process"),
                       ("workers", "the worker processes"),
                       ("workers_tasks", "  of which their task threads (reading, integrating, writing)"),
                       ("workers_other", "  and the rest: Dask's event loop (tasks, results), heartbeats")):
        report.add(f"  Dask CPU per image: {kind}", best[kind] / n * 1e3, "ms", key=f"dask_cpu_{kind}_ms",
                   note=what)
    report.section("The command's CPU by thread (one more run of each, start-up included), ms per image")
    names = {"MainThread": "main thread: start-up (imports, calibration, scan), progress, summary",
             "saxsdog-dispatcher": "dispatcher: pushes, submit, results, sinks",
             "IO loop": "Dask client's event loop: messages, result transfer and unpickling",
             "Dask-Callback-Thread": "Dask's callback thread: the futures' done callbacks",
             "saxsdog-dask-install": "installing the calibration on the workers (background)"}
    for kind in ("local", "dask"):
        threads = profiles[kind]["threads"]
        shown = 0.0
        for name, what in names.items():
            if name in threads:
                shown += threads[name]
                report.add(f"  {kind}: {name}", threads[name] / n * 1e3, "ms", key=f"{kind}_thread_"
                           + name.lower().replace(" ", "_").replace("-", "_") + "_ms", note=what)
        other = sum(threads.values()) - shown
        report.add(f"  {kind}: other threads", other / n * 1e3, "ms", key=f"{kind}_thread_other_ms",
                   note=", ".join(sorted(k for k in threads if k not in names)) or "none")
        stages = profiles[kind]["stages"]
        for stage in ("pushes", "submit", "results"):
            if stage in stages:
                report.add(f"    {kind} dispatcher: {stage}", stages[stage] / n * 1e3, "ms",
                           key=f"{kind}_stage_{stage}_ms")
        sinks = sum(v for k, v in stages.items() if k.startswith("sink"))
        report.add(f"    {kind} dispatcher: sinks", sinks / n * 1e3, "ms", key=f"{kind}_stage_sinks_ms")
    batches = profiles["dask"]["batches"]
    report.add("Dask: batches (tasks) per run", len(batches), "", key="dask_tasks",
               note=(f"{n} images; sizes {max(batches)} down to {min(batches)}" if batches else "none recorded"))
    report.add("Dask: empty task round trip", rtt * 1e3, "ms", key="dask_rtt_ms")
    report.section("Dask start-up (what the local pool does not pay, or pays by forking)")
    report.add("  import distributed, CPU", import_s * 1e3, "ms", key="dask_import_cpu_ms",
               note="in the command, after saxsdog's own imports")
    report.add("  client connect", phases["connect"] * 1e3, "ms", key="dask_connect_ms")
    report.add("  calibration to every worker (plugin)", phases["plugin"] * 1e3, "ms", key="dask_plugin_ms",
               note=f"{phases['plugin_mb']:.1f} MB once per worker, not per task; includes the workers' warm-up")
    report.add("  results per image, pickled", phases["result_bytes"], "bytes", key="dask_result_bytes",
               note="what a batch sends back per image (the outputs are written by the workers)")
    report.finish()


if __name__ == "__main__":
    main()
