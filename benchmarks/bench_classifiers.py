"""Benchmark: the live classifiers' cost per frame, and the pipeline's frames/s with them on.

Usage::

    python benchmarks/bench_classifiers.py [--data ../shared/data] [-n 2000] [--frames 200]
                                           [--workers 2] [--repeat 2] [--no-pipeline]

Part 1 (one core, one process): the real 1003-point curve of ``buf1_00000.tif`` (``cal.json``),
with a fresh Poisson realization per frame, through the integral parameters, Guinier
(freesas autoRg), Porod and CorMap against the previous frame (freesas gof, with the
Bonferroni correction), each timed alone and all together, per frame (target ≤ 1 ms).
The same on a synthetic sphere curve (where Guinier finds a region and does its full work).
Image classifiers (ImageStats, Zingers, ROI) are timed too, on the 1 M-pixel frame.

Part 2: frames/s of the queue (local pool, ``--workers``) on ``--frames`` hard links of the
image, with those classifiers on and off, in the same session (target ≥ 90 %).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

CURVE_CLASSIFIERS = [{"Kind": "Guinier"}, {"Kind": "Porod"}, {"Kind": "CorMap", "Reference": "previous"}]


def per_frame_ms(fn, frames: list, repeat: int = 3) -> float:
    """Best of ``repeat`` of the mean milliseconds of ``fn(frame)`` over the frames."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        for f in frames:
            fn(f)
        best = min(best, (time.perf_counter() - t) / len(frames) * 1e3)
    return float(best)


def measure(label: str, frames: list, cs, it) -> None:
    """Print the per-frame cost of each curve classifier and of all of them on ``frames``."""
    integral = cs.all[0]
    stateless = [c for c in cs.all[1:] if not c.stateful]
    cormap = cs.stateful[0]
    previous = {"previous": None}

    def with_previous(f):
        cormap(f, previous)
        previous["previous"] = f

    timings = {"IntegralParameters": per_frame_ms(lambda f: integral(f, None, it), frames)}
    for c in stateless:
        timings[c.kind] = per_frame_ms(lambda f, c=c: c(f), frames)
    timings["CorMap (previous)"] = per_frame_ms(with_previous, frames)

    def everything(f):
        f.parameters = {}
        cs.apply([f], [it], None)
        with_previous(f)

    timings["all four"] = per_frame_ms(everything, frames)
    for name, ms in timings.items():
        print(f"{label:>8} {name:>22} {ms:10.3f}")
    print(f"{label:>8} {'(Guinier status)':>22} {frames[-1].parameters.get('Guinier.status')}")


def curve_part(data: Path, n: int) -> None:
    from saxsdog import Calibration
    from saxsdog.classifiers import ClassifierContext, build_classifiers
    from saxsdog.core.integrators import Curve
    from saxsdog.io.images import iter_frames

    raw = json.loads((data / "cal.json").read_text())
    cal = Calibration(raw, base_dir=data)
    image = next(iter_frames(data / "buf1_00000.tif")).data
    ref = cal.curves(image, stddev=False)[0]
    it = cal.integrators[0]
    rng = np.random.default_rng(0)
    area = np.maximum(it.area, 1.0)

    def realizations(intensity: np.ndarray) -> list:
        out = []
        for _ in range(n):
            i = rng.poisson(np.maximum(intensity, 0) * area) / area
            # no parameters yet: the IntegralParameters classifier computes them (timed)
            out.append(Curve(ref.x, i, None, it.poisson_error(i), {}))
        return out

    q = np.asarray(ref.x)
    x = q * 4.0
    sphere = 1e3 * (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2 + 5.0
    context = ClassifierContext(cal.shape, q=q)
    print(f"curve: {q.size} points, {n} frames per measurement, one core")
    print(f"{'curve':>8} {'classifier':>22} {'ms/frame':>10}")
    for label, intensity in (("buf1", ref.intensity), ("sphere", sphere)):
        measure(label, realizations(intensity), build_classifiers(CURVE_CLASSIFIERS, context), it)
    cs = build_classifiers([{"Kind": "ImageStats"}, {"Kind": "Zingers"},
                            {"Kind": "ROI", "Rectangle": [100, 399, 250, 520]}], context)
    for c in cs.image:
        ms = per_frame_ms(lambda img, c=c: c(img), [image] * 10, repeat=2)
        print(f"{'image':>8} {c.kind:>22} {ms:10.3f}")


def pipeline_part(data: Path, frames: int, workers: int, repeat: int = 2) -> None:
    from saxsdog import Calibration
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.queue import ImageQueue
    from saxsdog.testing import link_images

    raw = json.loads((data / "cal.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="bench-classifiers-"))
    try:
        root = tmp / "images"
        link_images(data / "buf1_00000.tif", root, frames)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        runs = [(label, extra) for _ in range(repeat)
                for label, extra in (("off", {}), ("on", {"Classifiers": CURVE_CLASSIFIERS}))]
        for n, (label, extra) in enumerate(runs):
            cal = Calibration({**raw, **extra}, base_dir=data)
            out = tmp / f"out-{n}"
            q = ImageQueue(cal, root, QueueOptions(workers=workers, out_dir=out)).start()
            t = time.perf_counter()
            q.fill_from_directory()
            if not q.wait_until_idle(600):
                raise RuntimeError("the run did not finish within 10 minutes")
            dt = time.perf_counter() - t
            stages = q.stats()["stage_seconds"]
            q.stop()
            rates[label].append(frames / dt)
            print(f"pipeline classifiers {label:>3}: {frames / dt:7.1f} frames/s ({workers} workers); per frame "
                  + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in stages.items()))
        # each "on" run against the mean of the "off" runs beside it (the machine's load drifts)
        ratios = []
        for i, on in enumerate(rates["on"]):
            neighbours = rates["off"][i:i + 2]
            ratios.append(on / (sum(neighbours) / len(neighbours)))
        on, off = float(np.mean(rates["on"])), float(np.mean(rates["off"]))
        print(f"pipeline: with classifiers {100 * on / off:.1f} % of the frames/s without (means); "
              f"median of the paired ratios {100 * float(np.median(ratios)):.1f} % (target >= 90 %)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("-n", type=int, default=2000, help="frames per curve measurement")
    ap.add_argument("--frames", type=int, default=200, help="images of the pipeline measurement")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeat", type=int, default=2, help="off/on pairs of the pipeline measurement")
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    curve_part(data, args.n)
    if not args.no_pipeline:
        pipeline_part(data, args.frames, args.workers, args.repeat)


if __name__ == "__main__":
    main()
