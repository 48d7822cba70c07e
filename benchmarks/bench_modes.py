"""Benchmark: integration modes per Pilatus 1M frame, with pyFAI in the same run.

Usage::

    python benchmarks/bench_modes.py [--data ../shared/data] [--repeat 100] [--oversampling 3]

Real image ``buf1_00000.tif``, ``cal.json``'s geometry and mask.  Times, per frame, the
intensity only (``Integrator.integrate``) and the curve with errors (``Integrator.curve``,
no standard deviation, as the pipeline writes files) of: today's linear bins, log bins with
about as many bins, a sector, and a 1000 × 360 cake; and pyFAI ``integrate2d`` of the same
cake with its CSR engine (bbox and full pixel splitting, one OpenMP thread unless
``--threads``).  saxsdog's kernels are single-threaded.  Prints one table (best of five
batches per timing).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


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


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=here.parent / ".." / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=100, help="frames per timing")
    ap.add_argument("--oversampling", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads of pyFAI")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import fabio
    import numpy as np

    from saxsdog import Calibration
    from saxsdog.core.integrators import CakeIntegrator, RadialIntegrator
    from saxsdog.core.operator import build_cake_operator, build_radial_operator
    from saxsdog.io.poni import calibration_to_integrator

    img = fabio.open(str(args.data / "buf1_00000.tif")).data
    cal = Calibration(args.data / "cal.json", cache=False)
    g, mask, ov = cal.geometry, cal.mask(0), args.oversampling
    rows: list[tuple[str, float, float, str]] = []

    def build(label, fn):
        t = time.perf_counter()
        op = fn()
        rows.append((f"build: {label}", (time.perf_counter() - t) * 1e3, float("nan"), f"{op.n_bins} bins"))
        return op

    lin = build("linear (PixelPerRadialElement 1)", lambda: build_radial_operator(g, mask, ov, 1.0))
    ppd = round(lin.n_bins / np.log10(lin.x[-1] / lin.x[0]))
    log = build(f"log ({ppd} per decade)", lambda: build_radial_operator(
        g, mask, ov, binning="log", points_per_decade=ppd, radial_range=(lin.x[0], lin.x[-1])))
    sector = build("sector [60, 120]", lambda: build_radial_operator(g, mask, ov, 1.0, azimuth_range=(60, 120)))
    cake = build("cake 1000 x 360", lambda: build_cake_operator(g, mask, ov, 1000, 360))

    for label, it in (("linear", RadialIntegrator(lin)), ("log", RadialIntegrator(log)),
                      ("sector", RadialIntegrator(sector)), ("cake 1000 x 360", CakeIntegrator(cake))):
        t_int = per_call(lambda it=it: it.integrate(img), args.repeat)
        t_curve = per_call(lambda it=it: it.curve(img, stddev=False), args.repeat)
        entries = it.operator.bins.size
        rows.append((f"saxsdog {label}", t_int * 1e3, t_curve * 1e3, f"{entries / 1e6:.2f} M entries, 1 thread"))

    ai = calibration_to_integrator(cal.raw)
    q_max = float(cake.meta["edges"][-1])
    for split in ("bbox", "full"):
        method = (split, "csr", "cython")

        def pyfai_cake(method=method):
            ai.integrate2d(img, 1000, 360, unit="q_nm^-1", radial_range=(0.0, q_max), azimuth_range=(-180, 180),
                           method=method, correctSolidAngle=False, mask=~mask, polarization_factor=None)

        t = time.perf_counter()
        pyfai_cake()  # builds its CSR matrix
        first = time.perf_counter() - t
        rows.append((f"pyFAI integrate2d {split}/csr: first call (engine build)", first * 1e3, float("nan"),
                     f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"))
        rows.append((f"pyFAI integrate2d {split}/csr 1000 x 360", per_call(pyfai_cake, max(10, args.repeat // 5)) * 1e3,
                     float("nan"), "I with errors (pyFAI always computes them)"))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'I [ms]':>9}  {'I+err [ms]':>10}  note")
    for name, a, b, note in rows:
        bs = "" if b != b else f"{b:10.2f}"
        print(f"{name:<{width}}  {a:9.2f}  {bs:>10}  {note}")


if __name__ == "__main__":
    main()
