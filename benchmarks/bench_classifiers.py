"""Benchmark: the live classifiers' cost per frame, and the pipeline's frames/s with them on.

Usage::

    python benchmarks/bench_classifiers.py [--data ../shared/data] [-n 2000] [--frames 200]
                                           [--workers 2] [--repeat 2] [--no-pipeline]
                                           [--quick] [--json PATH]

Part 1 (one core, one process): the real 1003-point curve of ``buf1_00000.tif`` (``cal.json``),
with a fresh Poisson realization per frame, through the integral parameters, Guinier
(freesas autoRg), Porod and CorMap against the previous frame (freesas gof, with the
Bonferroni correction), each timed alone and all together, per frame (target ≤ 1 ms).
The same on a synthetic sphere curve (where Guinier finds a region and does its full work).
Image classifiers (ImageStats, Zingers, ROI) are timed too, on the 1 M-pixel frame.

Part 2: frames/s of the queue (local pool, ``--workers``) on ``--frames`` hard links of the
image, with those classifiers on and off, in the same session (target ≥ 90 %).

Every result is checked whatever the mode: Guinier on the noise-free sphere curve (radius
4 nm) recovers Rg = √(3/5)·4 nm and I(0) = 1005 within 5 %, and does on the last noisy
frame within 10 %; the buf1 curve has no Guinier region; every pipeline run processes every
image with no failure.  ``--quick`` runs 20 frames per measurement and one off/on pair of
20 images (timings meaningless).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _harness import Report, parser

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


def measure(rep: Report, label: str, frames: list, cs, it) -> None:
    """Add the per-frame cost of each curve classifier and of all of them on ``frames``."""
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
        rep.add(f"{label}: {name}", ms, "ms", "<= 1" if name == "all four" else "",
                key=f"{label}_{name}_ms")
    rep.context[f"{label} Guinier status"] = frames[-1].parameters.get("Guinier.status")


def guinier_check(rep: Report, label: str, parameters: dict, tolerance: float) -> None:
    """Rg and I(0) of the sphere curve (radius 4 nm, I(0) = 1e3 + 5 background)."""
    rg, i0 = parameters.get("Guinier.Rg"), parameters.get("Guinier.I0")
    want_rg, want_i0 = (3 / 5) ** 0.5 * 4.0, 1005.0
    rep.check(rg is not None and i0 is not None and abs(rg / want_rg - 1) <= tolerance
              and abs(i0 / want_i0 - 1) <= tolerance,
              f"{label}: Guinier Rg {rg}, I0 {i0} (want {want_rg:.3f} nm, {want_i0:.0f} within {tolerance:.0%})")


def curve_part(rep: Report, data: Path, n: int) -> None:
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
    rep.context["curve"] = f"{q.size} points, {n} frames per measurement, one core"
    clean = Curve(ref.x, sphere, None, it.poisson_error(sphere), {})
    build_classifiers(CURVE_CLASSIFIERS, context).apply([clean], [it], None)
    guinier_check(rep, "noise-free sphere", clean.parameters, 0.05)
    rep.section("-- curve classifiers, ms per frame, one core --")
    for label, intensity in (("buf1", ref.intensity), ("sphere", sphere)):
        frames = realizations(intensity)
        measure(rep, label, frames, build_classifiers(CURVE_CLASSIFIERS, context), it)
        if label == "sphere":
            guinier_check(rep, "last noisy sphere frame", frames[-1].parameters, 0.10)
        else:
            rep.check(frames[-1].parameters.get("Guinier.Rg") is None,
                      "buf1: a Guinier region was found on a curve that has none")
    rep.section("-- image classifiers, ms per frame --")
    cs = build_classifiers([{"Kind": "ImageStats"}, {"Kind": "Zingers"},
                            {"Kind": "ROI", "Rectangle": [100, 399, 250, 520]}], context)
    for c in cs.image:
        ms = per_frame_ms(lambda img, c=c: c(img), [image] * 10, repeat=2)
        rep.add(f"image: {c.kind}", ms, "ms", key=f"image_{c.kind}_ms")


def pipeline_part(rep: Report, data: Path, frames: int, workers: int, repeat: int = 2) -> None:
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
            stats = q.stats()
            stages = stats["stage_seconds"]
            q.stop()
            rep.check(stats["images_processed"] == frames and stats["images_failed"] == 0,
                      f"classifiers {label}: {stats['images_processed']} of {frames} images processed, "
                      f"{stats['images_failed']} failed")
            rates[label].append(frames / dt)
            rep.add(f"pipeline, classifiers {label}, run {n // 2 + 1}", frames / dt, "frames/s",
                    key=f"pipeline_{label}_{n // 2 + 1}_fps",
                    note=f"{workers} workers; per frame " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in stages.items()))
        # each "on" run against the mean of the "off" runs beside it (the machine's load drifts)
        ratios = []
        for i, on in enumerate(rates["on"]):
            neighbours = rates["off"][i:i + 2]
            ratios.append(on / (sum(neighbours) / len(neighbours)))
        on, off = float(np.mean(rates["on"])), float(np.mean(rates["off"]))
        rep.add("pipeline with classifiers / without (means)", 100 * on / off, "%", key="pipeline_ratio_means")
        rep.add("pipeline with classifiers / without (median of paired ratios)", 100 * float(np.median(ratios)), "%",
                ">= 90", key="pipeline_ratio_paired")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="frames per curve measurement")
    ap.add_argument("--frames", type=int, default=200, help="images of the pipeline measurement")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeat", type=int, default=2, help="off/on pairs of the pipeline measurement")
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()
    n, frames, repeat = (20, 20, 1) if args.quick else (args.n, args.frames, args.repeat)
    data = Path(args.data).resolve()
    rep = Report("bench_classifiers: live classifiers per frame, and the pipeline with them", args)
    curve_part(rep, data, n)
    if not args.no_pipeline:
        rep.section(f"-- the queue, {args.workers} workers, {frames} images, classifiers off/on --")
        pipeline_part(rep, data, frames, args.workers, repeat)
    rep.finish()


if __name__ == "__main__":
    main()
