"""Benchmark: the coordinator's cost of an NXcanSAS run file, per appended frame.

Usage::

    python benchmarks/bench_runfile.py [--frames 2000] [--rounds 5] [--images 2000] [--sink-only]
                                       [--write-every N] [--json out.json] [--quick]

1. The run-file sink alone (``RunSink.record``, as the dispatcher calls it, then ``close``):
   thread CPU per frame, best of ``--rounds`` rounds of ``--frames`` frames, for frames as
   the queue's workers send them for the real Pilatus 1M image (1003 q bins, some left out)
   - all with the header values and parameters of one image (hard links of one file, as in
   ``bench_pipeline``), and each with its own (distinct images: the entry's ``image`` and
   ``parameters`` groups are its own).  The file is read back and checked.
2. The in-process queue with a run file (``bench_pipeline``'s run-file rows): frames/s,
   the coordinator's CPU per frame and the dispatcher's, split by stage and sink.

Interleave runs of two checkouts (``PYTHONPATH=old/src`` and ``new/src``) to compare them:
each round here is one fresh run file.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, parser  # noqa: E402


def worker_result(cal, image: Path):
    """One frame's :class:`ImageResult` as a worker sends it for a run file (pickled)."""
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.tasks import ImageTask
    from saxsdog.pipeline.worker import ImageProcessor

    with tempfile.TemporaryDirectory() as out:
        proc = ImageProcessor(cal, QueueOptions(workers=1, out_dir=Path(out), output_format="nxcansas-run"))
        (result,) = proc.process(ImageTask(path=str(image), root=str(image.parent)))
    return pickle.dumps(result, pickle.HIGHEST_PROTOCOL)


def sink_round(cal, blob: bytes, frames: int, distinct: bool, folder: Path) -> tuple[float, Path]:
    """Thread CPU seconds per frame of ``RunSink.record`` (+ ``close``) for ``frames`` frames."""
    from saxsdog.pipeline.sinks import RunSink
    from saxsdog.pipeline.state import Record

    sink = RunSink(cal, folder, lambda: "run")
    records = []
    for k in range(frames):
        r = pickle.loads(blob)  # each its own objects, as unpickled from a worker's pipe
        r.name, r.path = f"img_{k:05d}.tif", f"/data/img_{k:05d}.tif"
        if distinct:  # what changes from image to image: the header's times, the integrals
            r.metadata["date"] = f"2014-01-31T12:{k // 60 % 60:02d}:{k % 60:02d}"
            r.metadata["timestamp"] = 1391171212.0 + k
            for params in r.parameters.values():
                params["I0"] = params["I0"] * (1 + k * 1e-6)
                params["I1"] = params["I1"] * (1 + k * 1e-6)
        records.append(Record(r.path, "done", (r,)))
    gc.collect()
    t0 = time.thread_time()
    for rec in records:
        sink.record(rec)
    sink.close()
    return (time.thread_time() - t0) / frames, sink.closed[0]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--frames", type=int, default=2000, help="frames per round of the sink alone")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=2000, help="images of the in-process queue")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sink-only", action="store_true", help="only the sink alone (1.), not the queue")
    ap.add_argument("--write-every", type=int, default=None,
                    help="the writers' write_every (frames written to HDF5 at once; default: the writer's)")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.rounds, args.images = 40, 1, 20

    import numpy as np

    from bench_pipeline import bench_calibration, coordinator_rows, in_process
    from saxsdog import Calibration
    from saxsdog.io.nxcansas import read_nxcansas
    from saxsdog.testing import link_images

    if args.write_every is not None:  # for measuring other group sizes on a quiet machine
        import functools

        from saxsdog.io import nxcansas

        nxcansas.NXcanSASRunWriter.__init__ = functools.partialmethod(  # type: ignore[method-assign]
            nxcansas.NXcanSASRunWriter.__init__, write_every=args.write_every)
    report = Report(f"NXcanSAS run file: the coordinator's CPU per frame ({args.frames} frames a round)", args)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SAXSDOG_CACHE_DIR"] = str(tmp / "cache")
        cal_path, _ = bench_calibration(args.data, tmp / "bench_cal.json")
        cal = Calibration(cal_path)
        blob = worker_result(cal, args.data / "buf1_00000.tif")
        sent = pickle.loads(blob)
        graph = sent.curves[0]
        keep = np.asarray(graph.get("valid", [True] * len(graph["array"][0])), dtype=bool)
        report.context["frame"] = (f"{len(keep)} q bins ({int(keep.sum())} with data), "
                                   f"{len(sent.metadata)} header values, "
                                   f"{sum(len(p) for p in sent.parameters.values())} parameters")

        report.section("the run-file sink alone (RunSink.record + close), thread CPU")
        for distinct, label, key in ((False, "frames of one image (hard links)", "sink_same_ms"),
                                     (True, "frames with their own header values and parameters",
                                      "sink_distinct_ms")):
            best = None
            for k in range(args.rounds):
                per_frame, path = sink_round(cal, blob, args.frames, distinct, tmp / f"sink_{key}_{k}")
                best = per_frame if best is None else min(best, per_frame)
                if k == 0:
                    frames = read_nxcansas(path)
                    report.check(len(frames) == args.frames, f"{len(frames)} frames read for {args.frames}")
                    report.check(np.array_equal(frames[-1]["I"], np.asarray(graph["array"][1])[keep]),
                                 "the run file's I differs from the worker's curve")
                    report.check(frames[-1]["name"] == f"img_{args.frames - 1:05d}.tif", "wrong frame name")
                    if distinct:
                        report.check(frames[-1]["metadata"]["timestamp"] == 1391171212.0 + args.frames - 1,
                                     "wrong header value")
                    size = path.stat().st_size
                    os.unlink(path)
            assert best is not None
            report.add(f"  {label}", best * 1e3, "ms/frame", key=key,
                       note=f"best of {args.rounds}; file {size / args.frames / 1024:.1f} kB/frame")

        if args.sink_only:
            report.finish()
            return
        report.section(f"in-process queue, run file, {args.workers} workers, {args.images} images")
        link_images(args.data / "buf1_00000.tif", tmp / "run", args.images)
        r = in_process(cal, tmp, args, "nxcansas-run")
        report.check(r["stats"]["images_processed"] == args.images, f"processed {r['stats']['images_processed']}")
        report.add("queue in process, run file", r["fps"], "frames/s", key="run_queue_fps")
        report.add("  worker: CPU", r["worker_cpu"] * 1e3, "ms/frame", key="run_worker_cpu_ms")
        report.add("  coordinator: CPU", r["coordinator_cpu"] * 1e3, "ms/frame", "<= 0.4",
                   key="run_coordinator_cpu_ms")
        coordinator_rows(report, r, args.images, "run_")
    report.finish()


if __name__ == "__main__":
    main()
