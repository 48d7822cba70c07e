"""Benchmark: one pool worker's CPU per frame, stage by stage (thread CPU, in process).

Usage::

    python benchmarks/bench_worker.py [--frames 400] [--rounds 5] [--json out.json] [--quick]

The object a pool worker runs (``ImageProcessor`` with mapped image files, as forked workers
read them) processes hard links of the real Pilatus 1M image into ``.chi`` files (the
calibration of ``bench_pipeline.py``: solid angle, polarization, exact Poisson errors), in
this thread.  Each stage's thread CPU time (``time.thread_time``, not wall time: a shared
machine's waits are not counted) is summed over the frames:

* read: open the file, parse its header, map its pixels;
* integrate: ``Calibration.curves`` on the mapped frame (the first touch of the mapping's
  pages, i.e. its page faults, happens here);
* format: the ``.chi`` text;
* write: the atomic writes (and the output folder's check);
* the rest: output names, the resume check, the result object, and the unmapping of the
  frame's pages when it is released (plus this benchmark's own clock reads).

For reference, the same integration on a frame held in memory (the bare kernel, no page
faults) and the mapping's extra (integrate minus bare).  The best round of ``--rounds``
(each into a new output folder) is reported; results are checked against
``Calibration.chi_bytes``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, parser  # noqa: E402
from bench_pipeline import bench_calibration  # noqa: E402

#: The stages, in the order of the table: (key, label).
STAGES = (
    ("read", "read: open, header, map"),
    ("integrate", "integrate: Calibration.curves (page faults of the mapping included)"),
    ("format", "format: .chi text"),
    ("write", "write: atomic writes, output folder"),
)


def timed_processor(cal, options, seconds: dict[str, float]):
    """An ``ImageProcessor`` (mapped files, as a pool worker's) whose stages add their thread
    CPU to ``seconds`` (the calibration's ``curves`` timed too: use a calibration of its own).

    The timing itself (two clock reads per stage and frame, a generator around the reader)
    is counted in "the rest"."""
    from saxsdog.pipeline.worker import ImageProcessor

    clock = time.thread_time

    class Timed(ImageProcessor):
        def _frames(self, task):
            frames = super()._frames(task)
            while True:
                t = clock()
                try:
                    frame = next(frames)
                except StopIteration:
                    seconds["read"] += clock() - t
                    return
                seconds["read"] += clock() - t
                yield frame

        def _chi_of(self, i, curve):
            t = clock()
            try:
                return super()._chi_of(i, curve)
            finally:
                seconds["format"] += clock() - t

        def _write(self, path, content, confine):
            t = clock()
            try:
                return super()._write(path, content, confine)
            finally:
                seconds["write"] += clock() - t

        def _output_folder(self, folder, confine):
            t = clock()
            try:
                return super()._output_folder(folder, confine)
            finally:
                seconds["write"] += clock() - t

    processor = Timed(cal, options, map_images=True)
    curves = type(cal).curves

    def timed_curves(image, stddev=True, metadata=None):
        t = clock()
        try:
            return curves(cal, image, stddev=stddev, metadata=metadata)
        finally:
            seconds["integrate"] += clock() - t

    cal.curves = timed_curves  # this calibration's own (an instance attribute: no other is touched)
    return processor


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--frames", type=int, default=400, help="frames per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (each into a new folder); the best is kept")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.rounds = 20, 2

    import numpy as np

    from saxsdog import Calibration
    from saxsdog.io.images import iter_frames
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.tasks import ImageTask
    from saxsdog.testing import link_images

    report = Report(f"One worker's CPU per frame, Pilatus 1M .chi, {args.frames} frames x {args.rounds} rounds", args)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SAXSDOG_CACHE_DIR"] = str(tmp / "cache")
        cal_path, solid = bench_calibration(args.data, tmp / "bench_cal.json")
        report.context["corrections"] = ("solid angle, " if solid else "") + "polarization 0.99, exact Poisson errors"
        paths = link_images(args.data / "buf1_00000.tif", tmp / "run", args.frames + 1)
        cal = Calibration(cal_path)
        tasks = [ImageTask(path=str(p), root=str(tmp / "run")) for p in paths]
        held = np.array(next(iter_frames(paths[0], expected_shape=cal.shape)).data)
        best: dict[str, float] | None = None
        for k in range(args.rounds):
            seconds = dict.fromkeys([s for s, _ in STAGES], 0.0)
            proc = timed_processor(cal, QueueOptions(workers=1, out_dir=tmp / f"out{k}"), seconds)
            proc.process(tasks[0])  # loads the kernels, makes the folder
            for key in seconds:
                seconds[key] = 0.0
            t0 = time.thread_time()
            for task in tasks[1:]:
                (result,) = proc.process(task)
                report.check(result.ok, f"{task.path}: {result.error}")
            seconds["total"] = time.thread_time() - t0
            t0 = time.thread_time()
            for _ in tasks[1:]:
                type(cal).curves(cal, held, stddev=False, metadata={})
            seconds["bare"] = time.thread_time() - t0
            if best is None or seconds["total"] < best["total"]:
                best = seconds
            written = (tmp / f"out{k}" / (Path(tasks[-1].path).stem + ".chi")).read_bytes()
            frame = next(iter_frames(tasks[-1].path, expected_shape=cal.shape))
            expected = cal.chi_bytes(type(cal).curves(cal, frame.data, stddev=False, metadata=frame.metadata))[0]
            report.check(written == expected, "the worker's .chi differs from Calibration.chi_bytes")
        assert best is not None
        n = args.frames
        report.add("worker CPU per frame, total", best["total"] / n * 1e3, "ms/frame", "<= 1.0", key="worker_total_ms",
                   note="best round, thread CPU")
        counted = 0.0
        for key, label in STAGES:
            counted += best[key]
            report.add(f"  {label}", best[key] / n * 1e3, "ms/frame", key=f"worker_{key}_ms")
        report.add("  the rest: names, resume check, result, unmapping", (best["total"] - counted) / n * 1e3, "ms/frame",
                   key="worker_rest_ms")
        report.add("bare integration of a frame held in memory", best["bare"] / n * 1e3, "ms/frame",
                   key="worker_bare_ms", note="same round")
        report.add("  the mapping's extra (integrate - bare)", (best["integrate"] - best["bare"]) / n * 1e3,
                   "ms/frame", key="worker_mapping_extra_ms", note="page faults, pages not in the cache")
    report.finish()


if __name__ == "__main__":
    main()
