"""Benchmark: integration modes per Pilatus 1M frame, with pyFAI in the same run.

Usage::

    python benchmarks/bench_modes.py [--data ../shared/data] [--repeat 100] [--oversampling 3]
                                     [--quick] [--json PATH]

Real image ``buf1_00000.tif``, ``cal.json``'s geometry and mask.  Times, per frame, the
intensity only (``Integrator.integrate``) and the curve with errors (``Integrator.curve``,
no standard deviation, as the pipeline writes files) of: today's linear bins, log bins with
about as many bins, a sector, and a 1000 × 360 cake; and pyFAI ``integrate2d`` of the same
cake with its CSR engine (bbox and full pixel splitting, one OpenMP thread unless
``--threads``).  saxsdog's kernels are single-threaded.  Prints one table (best of five
batches per timing).

Every result is checked whatever the mode: each mode's curve (intensity and errors) from
the default kernel against the scipy reference kernel (1e-12 relative), and saxsdog's cake
against pyFAI ``integrate2d`` full split (median relative deviation of the populated cells
<= 1e-2).  ``--quick`` runs a few frames (timings meaningless).
"""

from __future__ import annotations

import os
import time

import numpy as np

from _harness import Report, parser


def per_call(fn, repeat: int) -> float:
    """Seconds per call: the best of 5 batches of ``repeat / 5`` calls (after one warm-up).

    The best batch, as ``timeit`` does: on a machine shared with other jobs the slower
    batches measure the other jobs."""
    fn()
    batches = []
    n = max(1, repeat // 5)
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter() - t) / n)
    return min(batches)


def _agree(a: np.ndarray | None, b: np.ndarray | None, rtol: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.allclose(a, b, rtol=rtol, atol=1e-12 * float(np.nanmax(np.abs(b), initial=1.0)), equal_nan=True))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeat", type=int, default=100, help="frames per timing")
    ap.add_argument("--oversampling", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads of pyFAI")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    repeat = 5 if args.quick else args.repeat

    import fabio

    from saxsdog import Calibration
    from saxsdog.core.integrators import CakeIntegrator, RadialIntegrator
    from saxsdog.core.kernels import available_methods
    from saxsdog.core.operator import build_cake_operator, build_radial_operator
    from saxsdog.io.poni import calibration_to_integrator

    img = fabio.open(str(args.data / "buf1_00000.tif")).data
    cal = Calibration(args.data / "cal.json", cache=False)
    g, mask, ov = cal.geometry, cal.mask(0), args.oversampling
    rep = Report("bench_modes: integration modes per Pilatus 1M frame, one core", args)
    rep.context["timing"] = "best of 5 batches, wall clock; saxsdog single-threaded"
    rep.section("-- operator build --")

    def build(label, key, fn):
        t = time.perf_counter()
        op = fn()
        rep.add(f"build: {label}", (time.perf_counter() - t) * 1e3, "ms", "<= 3000", key=f"build_{key}_ms",
                note=f"{op.n_bins} bins")
        return op

    lin = build("linear (PixelPerRadialElement 1)", "linear", lambda: build_radial_operator(g, mask, ov, 1.0))
    ppd = round(lin.n_bins / np.log10(lin.x[-1] / lin.x[0]))
    log = build(f"log ({ppd} per decade)", "log", lambda: build_radial_operator(
        g, mask, ov, binning="log", points_per_decade=ppd, radial_range=(lin.x[0], lin.x[-1])))
    sector = build("sector [60, 120]", "sector",
                   lambda: build_radial_operator(g, mask, ov, 1.0, azimuth_range=(60, 120)))
    cake = build("cake 1000 x 360", "cake", lambda: build_cake_operator(g, mask, ov, 1000, 360))

    rep.section("-- saxsdog per frame (I only / curve with errors) --")
    cake_curve = None
    for label, key, kind, op in (("linear", "linear", RadialIntegrator, lin), ("log", "log", RadialIntegrator, log),
                                 ("sector", "sector", RadialIntegrator, sector),
                                 ("cake 1000 x 360", "cake", CakeIntegrator, cake)):
        it = kind(op)
        if "scipy" in available_methods():
            a, b = it.curve(img, stddev=False), kind(op, method="scipy").curve(img, stddev=False)
            rep.check(_agree(a.intensity, b.intensity) and _agree(a.poisson, b.poisson),
                      f"{label}: the default kernel's curve differs from the scipy reference")
        if key == "cake":
            cake_curve = it.curve(img, stddev=False)
        t_int = per_call(lambda it=it: it.integrate(img), repeat)
        t_curve = per_call(lambda it=it: it.curve(img, stddev=False), repeat)
        entries = it.operator.bins.size
        target = "<= 3" if key == "cake" else ""
        rep.add(f"saxsdog {label}: I", t_int * 1e3, "ms", target, key=f"{key}_i_ms",
                note=f"{entries / 1e6:.2f} M entries")
        rep.add(f"saxsdog {label}: I + errors", t_curve * 1e3, "ms", key=f"{key}_curve_ms")

    ai = calibration_to_integrator(cal.raw)
    q_max = float(cake.meta["edges"][-1])
    rep.section(f"-- pyFAI integrate2d CSR, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} --")
    for split in ("bbox", "full"):
        method = (split, "csr", "cython")

        def pyfai_cake(method=method):
            return ai.integrate2d(img, 1000, 360, unit="q_nm^-1", radial_range=(0.0, q_max),
                                  azimuth_range=(-180, 180), method=method, correctSolidAngle=False, mask=~mask,
                                  polarization_factor=None)

        t = time.perf_counter()
        res = pyfai_cake()  # builds its CSR matrix
        first = time.perf_counter() - t
        rep.add(f"pyFAI integrate2d {split}/csr: first call (engine build)", first * 1e3, "ms",
                key=f"pyfai_{split}_first_ms")
        if split == "full" and cake_curve is not None:
            ours = np.asarray(cake_curve.intensity, float).reshape(-1)
            theirs = np.asarray(res.intensity, float)
            rep.check(ours.size == theirs.size, f"cake sizes differ: {ours.size} vs pyFAI {theirs.size}")
            cand = ours.reshape(theirs.shape)  # both (azimuth, radial), χ as pyFAI's
            sel = (theirs > 0) & np.isfinite(cand) & (cand > 0)
            dev = float(np.median(np.abs(cand[sel] / theirs[sel] - 1))) if sel.any() else np.inf
            rep.add("cake vs pyFAI full split, median relative deviation", dev, "", "<= 1e-2",
                    key="cake_pyfai_deviation")
            rep.check(dev <= 1e-2, f"the cake deviates from pyFAI's by {dev:.2e} (median)")
        rep.add(f"pyFAI integrate2d {split}/csr 1000 x 360", per_call(pyfai_cake, max(5 if args.quick else 10,
                repeat // 5)) * 1e3, "ms", key=f"pyfai_{split}_ms", note="I with errors (pyFAI always computes them)")
    rep.finish()


if __name__ == "__main__":
    main()
