"""Soak benchmark: the server under a steady feeder while faults strike, one after another.

Usage::

    python benchmarks/bench_soak.py [--rate 200] [--duration 60] [--workers 2] [--json out.json] [--quick]
    python benchmarks/bench_soak.py --frames 100000 [--sample-every 5000] [--workers 2]
    python benchmarks/bench_soak.py --inprocess 40000 [--trace-frames 20000] [--sample-every 2000]

A ``saxsdogserver`` subprocess (as users run it) gets ``new`` with the real calibration and
mask.  A detector is simulated by making each image appear (a hard link of the real
Pilatus 1M image) right before the feeder announces it, at ``--rate`` events/s for
``--duration`` seconds.  Meanwhile, at fixed fractions of the run:

* 15 %  one worker process is SIGKILLed;
* 30 %  one worker process is SIGSTOPped (and left stopped);
* 50 %  the server process alone is SIGKILLed (its pid, not its group, as the OOM killer
        does) and started again on the same ports; the restart time is measured;
* 70 %  the disk holding the outputs is filled (the base directory is a small tmpfs,
        mounted when this runs as root) and freed 5 s later.

At the end every announced image must have exactly one whole ``.chi`` output and one row in
``results/filelist.txt``.  The table gives images lost, processed twice, the restart time
and the event-to-result latency; a lost image, one processed twice, an incomplete output or
a worker left alive fails the benchmark (also in ``--quick``: 240 events at 40/s, every fault
still struck, timings meaningless).

``--frames N`` runs the memory soak instead: no faults, N images announced as fast as the
server takes them (at most ``--ahead`` images ahead of the results, so the backlog stays
bounded and any growth is the coordinator's own), the server's (coordinator's) RSS and the
workers' RSS sampled every ``--sample-every`` results, and a straight line fitted through
the coordinator's samples after the first 10 % (start-up and caches warming): its slope, in
MiB per 10,000 frames, is the figure (flat means no growth).  The ``.chi`` outputs are
counted and removed as they arrive (a 100,000-frame run would otherwise leave 8 GB); every
image must still have exactly one output and one row in ``filelist.txt``.  ``--quick`` also
runs a short memory soak (400 frames, sampled every 100).  The slope is fitted after
:data:`WARM_UP_FRAMES` (the coordinator's bounded records fill up first), by least squares and
by Theil-Sen (the median of pairwise slopes, robust to a sample delayed by another process),
with the Theil-Sen slope's 95 % confidence interval (Sen's rank interval).  The verdict
(:func:`memory_verdict`) says ``flat`` only when the Theil-Sen slope is below
:data:`FLAT_MIB_PER_10K` MiB per 10,000 frames and the interval either lies below that too or
includes 0 (no growth beyond the noise); ``grows`` when the slope is that or more;
``undecided`` otherwise (a longer run or more samples would tell).  What still grows by
design: who wrote which output and each image's file-list row, 16 bytes an image each
(:class:`saxsdog.pipeline.state.HashedMap`): 0.3 MiB per 10,000 frames for the two.

``--inprocess N`` runs the fast in-process memory soak: the server's coordinator (a
``CommandHandler`` with its queue rules, ledger, file list and history) in this process, with
the workers replaced by instant results of the real shape, fed through the feeder's entry
point (no network).  Its RSS is sampled every ``--sample-every`` frames (2000 by default
here) and its slope fitted as above; then ``--trace-frames`` more frames run under
``tracemalloc`` and what they left allocated is listed by where it was allocated (bytes a
frame): the growth sites, if any.  The images stay in the queue's folder, as in a real run;
``--inprocess-rescan S`` runs the server's reconciliation scan every S seconds (the server's
``--rescan``, 30 s by default): it used to list the folder whole, so
its peak, and the RSS with it, grew with the run (measured: 8 MiB/10k frames with a scan
every 2 s, 4 without) until the scan streamed the folder and compared it with the ledger in
chunks.  Some 1,000-2,500 frames/s: 40,000 + 32,000 traced frames take a minute or two.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import Report, parser  # noqa: E402


def _mount_tmpfs(folder: Path, size_mb: int) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _whole_chi(path: Path) -> bool:
    """A .chi file as saxsdog writes it: its header, then as many rows as it announces."""
    lines = path.read_text(errors="replace").splitlines()
    try:
        n = int(lines[3].split()[0])
    except (IndexError, ValueError):
        return False
    rows = [line for line in lines[4:] if line.strip()]
    return n > 0 and len(rows) == n and all(len(r.split()) >= 2 for r in rows)


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def _orphans(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


class ServerProcess:
    """``saxsdogserver`` as a subprocess; ``kill_pid`` kills the server's pid only."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log_path = args, env, log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Start and wait until it says it serves; the seconds that took."""
        t0 = time.perf_counter()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=self.env, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            raise SystemExit(f"server did not start: {line!r}\n{self.log_path.read_text()[-3000:]}")
        return time.perf_counter() - t0

    def kill_pid(self) -> list[int]:
        """SIGKILL the server process alone; returns the workers it had."""
        assert self.proc is not None
        workers = _children(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return workers

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _start_server(tmp: Path, args, extra: list[str],
                  base: Path | None = None) -> tuple[ServerProcess, str, str, int, Path, Path]:
    """A ``saxsdogserver`` on free ports with a ``new`` queue of the real calibration and mask.

    ``base`` is its base directory (default ``tmp/base``), ``extra`` more server options.
    Returns (server, command url, secret, feeder port, base dir, run dir with ``.source.tif``).
    """
    from saxsdog.protocol.client import LeashClient, build_new_request
    from saxsdog.testing import free_port

    base = base if base is not None else tmp / "base"
    base.mkdir(exist_ok=True)
    run = base / "run"
    run.mkdir()
    shutil.copy(args.data / "buf1_00000.tif", run / ".source.tif")  # hidden: never an image of the run
    port, fport = free_port(), free_port()
    network = tmp / "network.json"
    subprocess.run([sys.executable, "-m", "saxsdog.cli.netconf", "--server", f"tcp://127.0.0.1:{port}",
                    "--feeder", f"tcp://127.0.0.1:{fport}", "--network", str(network),
                    "--non-interactive", "--replace"], check=True, capture_output=True)
    secret = json.loads(network.read_text())[0]["Secret"]
    env = {**os.environ, "SAXSDOG_CACHE_DIR": str(tmp / "cache")}
    server_args = [sys.executable, "-m", "saxsdog.cli.server", str(base), "--network", str(network),
                   "-t", str(args.workers), "--no-http", *extra]
    server = ServerProcess(server_args, env, tmp / "server.log")
    server.start()
    url = f"tcp://127.0.0.1:{port}"
    arg, att = build_new_request(str(args.data / "cal.json"), str(args.data / "AAA_integ.msk"), "run")
    with LeashClient(url, secret, timeout=60) as c:
        r = c.request("new", arg, att)
        assert r["result"] == "new queue", r
    return server, url, secret, fport, base, run


#: Seconds between the memory soak's ``stat`` requests (it announces up to --ahead images after each).
STAT_INTERVAL = 0.25
#: Hard links per copy of the source image (ext4 allows 65,000 links to a file).
LINKS_PER_SOURCE = 50_000


#: Frames before the coordinator's memory may be flat: its bounded records (the history's 10,000,
#: the queue's 10,000 finished images) fill up first; the slope is fitted after this many.
WARM_UP_FRAMES = 12_000
#: The memory target: the coordinator's RSS grows by less than this per 10,000 frames (flat);
#: 0.5 MiB is some 50 bytes a frame.
FLAT_MIB_PER_10K = 0.5


def _fit_window(frames: list[int], warm_up: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The samples after the warm-up (or the second half of a run too short for it)."""
    x = np.asarray(frames, dtype=float)
    start = warm_up if x.size and x[-1] >= 2 * warm_up else (x[-1] / 2 if x.size else 0)
    keep = x >= max(start, 0.1 * x[-1] if x.size else 0)
    return (x, keep) if keep.sum() >= 3 else None


def _slope_per_10k(frames: list[int], mib: list[float], warm_up: int = WARM_UP_FRAMES) -> float:
    """Least-squares slope of RSS over frames after the warm-up, in MiB per 10k frames."""
    window = _fit_window(frames, warm_up)
    if window is None:
        return float("nan")
    x, keep = window
    y = np.asarray(mib, dtype=float)
    return float(np.polyfit(x[keep], y[keep], 1)[0] * 10_000)


def _robust_slope_per_10k(frames: list[int], mib: list[float], warm_up: int = WARM_UP_FRAMES) -> float:
    """Theil-Sen slope (median of the pairwise slopes) after the warm-up, MiB per 10k frames.

    RSS moves in steps (an allocator arena, a table that doubles) and jumps now and then
    (another process's load delays a sample): the median is not pulled by single outliers
    the way the least-squares line is.
    """
    window = _fit_window(frames, warm_up)
    if window is None:
        return float("nan")
    x, keep = window
    x, y = x[keep], np.asarray(mib, dtype=float)[keep]
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    ok = dx > 0
    return float(np.median((y[j] - y[i])[ok] / dx[ok]) * 10_000) if ok.any() else float("nan")


def _theil_sen_interval(frames: list[int], mib: list[float], warm_up: int = WARM_UP_FRAMES,
                        z: float = 1.96) -> tuple[float, float]:
    """The 95 % confidence interval of the Theil-Sen slope after the warm-up, MiB per 10k frames.

    Sen's rank interval (as ``scipy.stats.theilslopes`` computes it): of the N sorted pairwise
    slopes, the ones at (N -+ C) / 2 where
    C = z * sqrt(n (n - 1) (2n + 5) / 18) (the spread of Kendall's statistic without ties).
    Few samples give a wide interval (3 samples: the smallest to the largest slope).
    """
    window = _fit_window(frames, warm_up)
    if window is None:
        return float("nan"), float("nan")
    x, keep = window
    x, y = x[keep], np.asarray(mib, dtype=float)[keep]
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    ok = dx > 0
    slopes = np.sort((y[j] - y[i])[ok] / dx[ok]) * 10_000
    if not slopes.size:
        return float("nan"), float("nan")
    n, big_n = x.size, slopes.size
    c = z * np.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = min(max(int(np.round((big_n - c) / 2)) - 1, 0), big_n - 1)
    hi = min(max(int(np.round((big_n + c) / 2)), 0), big_n - 1)
    return float(slopes[lo]), float(slopes[hi])


def memory_verdict(slope: float, interval: tuple[float, float], flat: float = FLAT_MIB_PER_10K) -> str:
    """``flat``, ``grows`` or ``undecided`` for a Theil-Sen slope and its confidence interval.

    Flat: the slope is below ``flat`` and either the whole interval is (any growth is that
    small) or it includes 0 (no growth beyond the noise).  Grows: the slope is ``flat`` or
    more.  Undecided: a slope below ``flat`` whose interval reaches above it and excludes 0
    (more samples, or a longer run, would tell).
    """
    lo, hi = interval
    if not np.isfinite(slope):
        return "undecided (too few samples after the warm-up)"
    if slope >= flat:
        return "grows"
    if hi < flat or lo <= 0.0:
        return "flat"
    return "undecided"


def _add_slope_rows(report: Report, frames: list[int], mib: list[float], prefix: str, key: str) -> str:
    """The least-squares and Theil-Sen slope rows, the interval and the verdict; returns the verdict."""
    slope = _robust_slope_per_10k(frames, mib)
    interval = _theil_sen_interval(frames, mib)
    verdict = memory_verdict(slope, interval)
    if frames and frames[-1] < 2 * WARM_UP_FRAMES:  # e.g. --quick: the bounded records still fill
        verdict = f"undecided (a run shorter than twice the warm-up of {WARM_UP_FRAMES} frames)"
    target = f"< {FLAT_MIB_PER_10K:g} (flat)"
    report.add(f"{prefix} RSS slope (least squares, after warm-up)", _slope_per_10k(frames, mib),
               "MiB/10k frames", target, key=f"{key}_slope_mib_per_10k")
    report.add(f"{prefix} RSS slope (Theil-Sen, after warm-up)", slope, "MiB/10k frames", target,
               key=f"{key}_robust_slope_mib_per_10k",
               note=f"95 % interval {interval[0]:.2f} to {interval[1]:.2f}: {verdict}")
    report.add(f"{prefix} RSS slope, 95 % interval low (Theil-Sen)", interval[0], "MiB/10k frames",
               key=f"{key}_robust_slope_low_mib_per_10k")
    report.add(f"{prefix} RSS slope, 95 % interval high (Theil-Sen)", interval[1], "MiB/10k frames",
               key=f"{key}_robust_slope_high_mib_per_10k")
    report.add(f"{prefix} RSS flat (1) or not (0): {verdict}", 1.0 if verdict == "flat" else 0.0,
               target="1 (flat)", key=f"{key}_flat")
    report.context[f"{prefix} RSS verdict"] = (
        f"{verdict}: Theil-Sen slope {slope:.2f} MiB/10k frames, 95 % interval {interval[0]:.2f} to "
        f"{interval[1]:.2f}, flat below {FLAT_MIB_PER_10K:g} with the interval below it or including 0")
    return verdict


class _InstantProcessor:
    """A worker stand-in for the in-process soak: a result like a real one, at once (no pixels read).

    The coordinator's share of a frame (rules, ledger, file list, history) is what is measured.
    """

    def __init__(self, calibration, options):
        self.n = 0

    def process(self, task):
        from saxsdog.pipeline.tasks import ImageResult

        self.n += 1
        stem = Path(task.path).name.rsplit(".", 1)[0]
        now = time.time()
        return [ImageResult(str(task.path), 0, outputs=[f"{Path(task.path).parent.parent}/work/{stem}.chi"],
                            parameters={"q": {"I0": 1.0 + self.n, "I1": 2.0, "I2": 3.0}}, image_time=now,
                            timings={"read": 0.0008, "integrate": 0.0036, "write": 0.0005}, processed_at=now,
                            worker=1 + self.n % 2, name=f"run/{stem}.tif")]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def inprocess_soak(args, report: Report | None = None) -> Report:
    """The in-process memory soak (``--inprocess N``): see the module docstring."""
    import gc
    import tracemalloc

    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.backends import InlineBackend
    from saxsdog.server.handler import CommandHandler

    n, traced_n, every = args.inprocess, args.trace_frames, max(1, args.sample_every)
    warm = min(WARM_UP_FRAMES, max(traced_n, n))  # traced frames before the first snapshot
    samples: list[tuple[int, float]] = []
    growth: list[tuple[float, int, str]] = []  # bytes a frame, blocks, where
    traced_mib = float("nan")
    with tempfile.TemporaryDirectory() as tmp_name:
        base = Path(tmp_name) / "base"
        (base / "run").mkdir(parents=True)
        shutil.copy(args.data / "buf1_00000.tif", base / ".source.tif")
        handler = CommandHandler(base, QueueOptions(workers=2), rescan_interval=args.inprocess_rescan,
                                 pool_factory=InlineBackend.factory(_InstantProcessor))
        try:
            cal = json.loads((args.data / "cal.json").read_text())
            r = handler.execute("new", {"calibration": cal, "directory": ["run"]},
                                [(args.data / "AAA_integ.msk").read_bytes()])
            assert r["result"] == "new queue", r
            session = handler.session
            sources: dict[int, Path] = {}

            def feed(start: int, stop: int) -> None:
                for i in range(start, stop):
                    src = sources.get(i // LINKS_PER_SOURCE)
                    if src is None:
                        src = sources[i // LINKS_PER_SOURCE] = base / f".source_{i // LINKS_PER_SOURCE}.tif"
                        shutil.copy(base / ".source.tif", src)
                    image = base / "run" / f"img_{i:06d}.tif"
                    os.link(src, image)
                    assert session.feeder_event(str(image)) is None
                    if i % 200 == 199:  # a bounded backlog: any growth is the coordinator's own
                        _wait(lambda: session.queue.backlog < 400, 60)
                _wait(lambda: session.queue.history.processed >= stop and session.queue.queue_length == 0, 120)

            t0 = time.perf_counter()
            samples.append((0, _rss_mib()))
            for start in range(0, n, every):
                feed(start, min(n, start + every))
                gc.collect()
                samples.append((min(n, start + every), _rss_mib()))
            elapsed = time.perf_counter() - t0
            if traced_n:
                # Traced from a warm-up before the first snapshot: what the bounded records hold
                # then was allocated under tracing, so what replaces it later balances out and
                # the difference is growth only.
                tracemalloc.start(4)
                feed(n, n + warm)
                gc.collect()
                before = tracemalloc.take_snapshot()
                feed(n + warm, n + warm + traced_n)
                gc.collect()
                after = tracemalloc.take_snapshot()
                traced_mib = (sum(s.size for s in after.statistics("filename"))
                              - sum(s.size for s in before.statistics("filename"))) / 2**20
                tracemalloc.stop()
                for st in after.compare_to(before, "traceback")[:8]:
                    frame = st.traceback[-1]  # the allocation's own line (the most recent frame)
                    where = f"{Path(frame.filename).name}:{frame.lineno}"
                    growth.append((st.size_diff / traced_n, st.count_diff, where))
            processed = session.queue.history.processed
        finally:
            handler.shutdown()
    frames, mib = [f for f, _ in samples], [m for _, m in samples]
    if report is None:
        report = Report(f"In-process memory soak: the server's coordinator (queue rules, ledger, file list, "
                        f"history) on {n} frames, workers replaced by instant results", args)
    report.context["in-process RSS samples (frames: MiB)"] = "; ".join(f"{f}: {m:.1f}" for f, m in samples)
    if growth:
        report.context[f"tracemalloc: growth from frame {n + warm} to {n + warm + traced_n} (B/frame, blocks, where)"] = \
            "; ".join(f"{b:.1f} B {c:+d} {w}" for b, c, w in growth)
    report.section(f"in-process memory soak, {n} frames (+{warm} + {traced_n} traced)")
    report.add("in-process rate", n / elapsed if elapsed > 0 else float("nan"), "frames/s", key="inproc_fps")
    _add_slope_rows(report, frames, mib, "in-process coordinator", "inproc")
    if traced_n:
        report.add("Python memory still held, per 10k traced frames", traced_mib * 10_000 / traced_n,
                   "MiB/10k frames", f"< {FLAT_MIB_PER_10K:g}", key="inproc_traced_mib_per_10k")
    expected = n + (warm + traced_n if traced_n else 0)
    report.check(processed == expected, f"in-process soak: {processed} of {expected} frames processed")
    return report


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("in-process soak: the queue did not keep up (timeout)")
        time.sleep(0.005)


def memory_soak(args, report: Report | None = None) -> Report:
    """The memory soak (``--frames``): see the module docstring."""
    import psutil

    from saxsdog.feeder import Feeder
    from saxsdog.protocol.client import LeashClient

    n, every = args.frames, max(1, args.sample_every)
    samples: list[tuple[int, float, float, float]] = []  # results, coordinator MiB, workers MiB, s
    counted: set[str] = set()
    broken: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server, url, secret, fport, base, run = _start_server(tmp, args, [])
        work = base / "work"
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)

        def source_for(i: int) -> Path:  # a file system allows some 65,000 links to one file
            src = run / f".source_{i // LINKS_PER_SOURCE}.tif"
            if not src.exists():
                shutil.copy(run / ".source.tif", src)
            return src

        def collect() -> None:  # count and remove the outputs so far (a sample checked whole)
            if not work.is_dir():
                return
            for p in work.glob("img_*.chi"):
                if p.stem in counted:
                    continue
                if len(counted) % 97 == 0 and not _whole_chi(p):
                    broken.append(p.name)
                counted.add(p.stem)
                p.unlink()

        def sample(done: int) -> None:
            workers = sum(c.memory_info().rss for c in proc.children(recursive=True))
            samples.append((done, proc.memory_info().rss / 2**20, workers / 2**20, time.perf_counter() - t0))
            print(f"memory soak: {done} results, coordinator {samples[-1][1]:.1f} MiB, workers "
                  f"{samples[-1][2]:.0f} MiB, {samples[-1][3]:.0f} s", file=sys.stderr, flush=True)

        st: dict[str, object] = {}
        try:
            with LeashClient(url, secret, timeout=60) as c, Feeder(f"tcp://127.0.0.1:{fport}") as feeder:
                assert feeder.wait_for_subscriber(10)
                time.sleep(0.5)

                def done_now() -> int:
                    nonlocal st
                    st = c.request("stat")["data"]["stat"]
                    return int(st.get("pics") or 0)

                t0 = time.perf_counter()
                sample(0)
                announced, done, next_sample = 0, 0, every
                deadline = time.monotonic() + max(600.0, n * 0.1)
                while done < n and time.monotonic() < deadline:
                    # keep at most --ahead images in flight: the queue's backlog is not the coordinator's growth
                    while announced < n and announced - done < args.ahead:
                        image = run / f"img_{announced:06d}.tif"
                        os.link(source_for(announced), image)
                        feeder.announce(image)
                        announced += 1
                    # a few stat requests a second: every signed request's nonce stays in the
                    # server's replay cache for its 900 s window, which at 20 requests/s grew
                    # the coordinator by ~4 MiB over a 10-minute soak (time, not frames)
                    time.sleep(STAT_INTERVAL)
                    done = done_now()
                    if done >= next_sample:
                        sample(done)
                        collect()
                        next_sample = (done // every + 1) * every
                elapsed = time.perf_counter() - t0
                while time.monotonic() < deadline and st.get("queue length") != 0:
                    time.sleep(0.2)
                    done_now()
        finally:
            server.stop()
        collect()
        listed: Counter[str] = Counter()
        for filelist in (work / "results" / "filelist.txt", base / "results" / "filelist.txt"):
            if filelist.exists():
                for line in filelist.read_text().splitlines():
                    name = line.split("\t", 1)[0].strip()
                    if "img_" in name:
                        listed[Path(name).stem] += 1
                break
    expected = {f"img_{i:06d}" for i in range(n)}
    lost = len(expected - counted)
    twice = sum(1 for v in listed.values() if v > 1)
    frames = [s[0] for s in samples]
    coord = [s[1] for s in samples]
    workers = [s[2] for s in samples]
    if report is None:
        report = Report(f"Memory soak: saxsdogserver, {args.workers} workers, {n} Pilatus 1M images "
                        "(.chi, real calibration and mask), no faults", args)
    report.context["memory samples (results: coordinator MiB / workers MiB / s)"] = "; ".join(
        f"{f}: {c:.1f}/{w:.0f}/{t:.0f}" for f, c, w, t in samples)
    report.section(f"memory soak, {n} frames, RSS sampled every {every} results")
    report.add("frames processed", len(counted), target=str(n), key="mem_frames")
    report.add("rate", n / elapsed if elapsed > 0 else float("nan"), "frames/s", key="mem_fps")
    warm = WARM_UP_FRAMES if n >= 2 * WARM_UP_FRAMES else n // 2
    report.add(f"coordinator RSS at the first sample after {warm} frames (warm-up)",
               next((c for f, c in zip(frames, coord) if f >= warm), coord[-1]), "MiB", key="mem_coord_start_mib")
    report.add("coordinator RSS at the end", coord[-1], "MiB", key="mem_coord_end_mib")
    _add_slope_rows(report, frames, coord, "coordinator", "mem_coord")
    report.add("workers RSS, max over the run", max(workers), "MiB", "< 1024", key="mem_workers_max_mib")
    report.add("images lost (memory soak)", lost, target="0", key="mem_lost")
    report.add("images listed twice (memory soak)", twice, target="0", key="mem_listed_twice")
    report.check(lost == 0, f"memory soak: {lost} image(s) without an output")
    report.check(twice == 0, f"memory soak: {twice} image(s) listed twice")
    report.check(not broken, f"memory soak: incomplete outputs {broken[:5]}")
    return report


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of announcements")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--task-timeout", type=float, default=10.0, help="the server's stalled-task deadline (s)")
    ap.add_argument("--frames", type=int, default=0,
                    help="run the memory soak on this many frames instead of the fault soak (e.g. 100000)")
    ap.add_argument("--sample-every", type=int, default=5000, help="memory soak: results between RSS samples")
    ap.add_argument("--ahead", type=int, default=400, help="memory soak: images announced ahead of the results")
    ap.add_argument("--inprocess", type=int, default=0, metavar="N",
                    help="run the in-process memory soak on N frames (e.g. 40000), then --trace-frames traced")
    ap.add_argument("--inprocess-rescan", type=float, default=0.0, metavar="SECONDS",
                    help="in-process soak: the server's reconciliation scan every SECONDS (0: none)")
    ap.add_argument("--trace-frames", type=int, default=20_000,
                    help="in-process soak: frames after N run under tracemalloc (its growth sites)")
    args = ap.parse_args()
    if args.inprocess:
        if args.sample_every == 5000:
            args.sample_every = 2000
        inprocess_soak(args).finish()
        return
    if args.frames:
        memory_soak(args).finish()
        return
    if args.quick:
        args.rate, args.duration = 40.0, 6.0

    from saxsdog.feeder import Feeder
    from saxsdog.protocol.client import LeashClient

    n = int(args.rate * args.duration)
    faults: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "base"
        base.mkdir()
        # Outputs of n images (~80 kB each), the ledger and room to spare: the disk is full
        # only while the filler is there.
        on_tmpfs = _mount_tmpfs(base, size_mb=n * 100 // 1000 + 256)
        try:
            extra = ["--rescan", "5"]
            helptext = subprocess.run([sys.executable, "-m", "saxsdog.cli.server", "--help"], capture_output=True,
                                      text=True).stdout
            if "--task-timeout" in helptext:
                extra += ["--task-timeout", str(args.task_timeout)]
            server, url, secret, fport, base, run = _start_server(tmp, args, extra, base=base)
            source = run / ".source.tif"  # hidden: never an image of the run itself
            announced: dict[str, float] = {}
            restart_s = float("nan")
            orphans: list[int] = []
            filler = base / "filler.bin"
            schedule = {int(n * 0.15): "kill worker", int(n * 0.30): "stop worker",
                        int(n * 0.50): "kill server", int(n * 0.70): "fill disk",
                        min(n - 1, int(n * 0.70) + int(args.rate * 5)): "free disk"}
            with Feeder(f"tcp://127.0.0.1:{fport}") as feeder:
                assert feeder.wait_for_subscriber(10)
                time.sleep(0.5)
                t0 = time.perf_counter()
                for i in range(n):
                    delay = t0 + i / args.rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    fault = schedule.get(i)
                    if fault == "kill worker":
                        workers = _children(server.proc.pid) if server.proc else []
                        if workers:
                            os.kill(workers[0], signal.SIGKILL)
                            faults.append((fault, f"pid {workers[0]} at event {i}"))
                    elif fault == "stop worker":
                        workers = _children(server.proc.pid) if server.proc else []
                        if workers:
                            os.kill(workers[-1], signal.SIGSTOP)
                            faults.append((fault, f"pid {workers[-1]} at event {i}"))
                    elif fault == "kill server":
                        old_workers = server.kill_pid()
                        restart_s = server.start()
                        time.sleep(0.5)
                        orphans = _orphans(old_workers)
                        faults.append((fault, f"restart {restart_s:.2f} s, {len(orphans)} orphaned workers"))
                    elif fault == "fill disk" and on_tmpfs:
                        free = shutil.disk_usage(base).free
                        with open(filler, "wb") as f:
                            try:
                                f.truncate(0)
                                chunk = b"\0" * (1 << 20)
                                for _ in range(free // len(chunk) + 1):
                                    f.write(chunk)
                            except OSError:
                                pass
                        faults.append((fault, f"{free / 2**20:.0f} MiB filled at event {i}"))
                    elif fault == "free disk" and filler.exists():
                        filler.unlink()
                        faults.append((fault, f"at event {i}"))
                    image = run / f"img_{i:05d}.tif"
                    os.link(source, image)
                    announced[str(image)] = time.time()
                    feeder.announce(image)
                send_time = time.perf_counter() - t0
            if filler.exists():  # never leave the disk full
                filler.unlink()
            deadline = time.monotonic() + 300
            st: dict[str, object] = {}
            with LeashClient(url, secret, timeout=60) as c:
                while time.monotonic() < deadline:
                    st = c.request("stat")["data"]["stat"]
                    outputs = list((base / "work").glob("img_*.chi"))
                    if len(outputs) >= n and st.get("queue length") == 0:
                        break
                    time.sleep(0.5)
            server.stop()
            db = sqlite3.connect(str(base / ".saxsdog" / "ledger.sqlite"))
            rows = db.execute("SELECT path, state, updated FROM images").fetchall()
            db.close()
            outputs = {p.stem: p for p in (base / "work").glob("img_*.chi")}
            whole = sum(1 for p in outputs.values() if _whole_chi(p))
            listed = Counter()
            filelist = base / "work" / "results" / "filelist.txt"
            if not filelist.exists():
                filelist = base / "results" / "filelist.txt"
            if filelist.exists():
                for line in filelist.read_text().splitlines():
                    name = line.split("\t", 1)[0].strip()
                    if "img_" in name:
                        listed[Path(name).stem] += 1
        finally:
            if on_tmpfs:
                subprocess.run(["umount", "-l", str(base)], capture_output=True)

    expected = {Path(p).stem for p in announced}
    done_rows = {Path(p).stem: u for p, s, u in rows if s == "done"}
    lost = len(expected - set(outputs))
    twice = sum(1 for k, v in listed.items() if v > 1)
    lat = np.array([done_rows[Path(p).stem] - t for p, t in announced.items() if Path(p).stem in done_rows]) * 1e3
    report = Report(f"Soak: saxsdogserver, {args.workers} workers, feeder at {args.rate:.0f} events/s for "
                    f"{args.duration:.0f} s ({n} Pilatus 1M images, real calibration and mask)", args)
    for name, what in faults:
        report.context[f"fault: {name}"] = what
    if not on_tmpfs:
        report.context["disk full"] = "phase skipped: not root, or tmpfs could not be mounted"
    report.add("events announced", n, key="events")
    report.add("actual announce rate", n / send_time, "events/s", key="announce_rate")
    report.add("images with a whole .chi output", whole, target=str(n), key="whole_outputs")
    report.add("images lost", lost, target="0", key="lost")
    report.add("images listed twice in filelist.txt", twice, target="0", key="listed_twice")
    report.add("workers left alive after the server kill", len(orphans), target="0", key="orphans")
    report.add("server restart to serving", restart_s, "s", "< 5", key="restart_s")
    if lat.size:
        report.add("latency event -> done, p50", float(np.percentile(lat, 50)), "ms", key="latency_p50_ms")
        report.add("latency event -> done, p99", float(np.percentile(lat, 99)), "ms", key="latency_p99_ms")
    report.context["final stat"] = st
    if args.quick:  # the memory soaks' code paths too, on a few frames
        args.frames, args.sample_every = 400, 100
        memory_soak(args, report)
        args.inprocess, args.trace_frames, args.sample_every = 600, 300, 100
        inprocess_soak(args, report)
    report.finish()  # the table first, then what is wrong with it
    report.check(lost == 0, f"{lost} image(s) lost")
    report.check(twice == 0, f"{twice} image(s) listed twice")
    report.check(whole == n, f"{whole} whole .chi outputs for {n} images")
    report.check(not orphans, f"workers {orphans} outlived the killed server")


if __name__ == "__main__":
    main()
