"""Benchmark: operator build and per-frame integration versus pyFAI, in one run.

Usage::

    python benchmarks/bench_integrate.py [--data ../shared/data] [--repeat 200]

Uses the real Pilatus 1M image ``buf1_00000.tif`` and ``cal.json`` (Oversampling 3) and
prints one table.  saxsdog's kernels are single-threaded; pyFAI's Cython CSR engine runs
with its default OpenMP threads (both cores here), which favours pyFAI.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path



def per_call(fn, repeat: int) -> float:
    """Median seconds per call over ``repeat`` calls in 5 batches (after one warm-up)."""
    fn()
    batches = []
    n = max(1, repeat // 5)
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter() - t) / n)
    return statistics.median(batches)


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=here.parent / ".." / "shared" / "data",
                    help="folder with buf1_00000.tif and cal.json")
    ap.add_argument("--repeat", type=int, default=200, help="frames per timing")
    args = ap.parse_args()

    import fabio

    from saxsdog import Calibration
    from saxsdog.core.kernels import available_methods

    img = fabio.open(str(args.data / "buf1_00000.tif")).data
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        cal = Calibration(args.data / "cal.json", cache=cache)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        Calibration(args.data / "cal.json", cache=cache)
        warm = time.perf_counter() - t
    op = cal.radial.operator
    rows.append(("operator build, cold (Oversampling 3)", cold * 1e3, "<= 3000"))
    rows.append(("operator load from cache", warm * 1e3, "<= 200"))

    ours = {}
    for m in available_methods():
        it = type(cal.radial)(op, cal.radial.config, method=m)
        ours[m] = per_call(functools.partial(it.integrate, img), args.repeat)
        rows.append((f"integrate, saxsdog {m} (1 thread)", ours[m] * 1e3, "<= 2" if m == "numba" else ""))
        err = per_call(functools.partial(it.integrate_with_errors, img), args.repeat)
        rows.append((f"integrate with errors, saxsdog {m}", err * 1e3, "<= 4" if m == "numba" else ""))

    best = min(ours.values())
    pyfai = {}
    try:
        import pyFAI

        from saxsdog.io.poni import calibration_to_integrator

        ai = calibration_to_integrator(cal.raw)
        n = op.n_bins
        dq = op.x[1] - op.x[0]
        mask = ~cal.mask(0)
        for split in ("bbox", "full"):
            def run(split=split):
                return ai.integrate1d(img, n, unit="q_nm^-1", radial_range=(0, n * dq),
                                      method=(split, "csr", "cython"), correctSolidAngle=False,
                                      mask=mask)
            pyfai[split] = per_call(run, max(20, args.repeat // 4))
            rows.append((f"pyFAI {pyFAI.version} integrate1d CSR, {split} split", pyfai[split] * 1e3, ""))
    except ImportError:
        rows.append(("pyFAI not installed", float("nan"), ""))

    width = max(len(r[0]) for r in rows)
    print(f"\nPilatus 1M {img.shape[0]}x{img.shape[1]}, {op.n_bins} bins, {op.bins.size} operator entries,"
          f" {os.cpu_count()} cores")
    print(f"{'measurement':<{width}}  {'ms':>9}  target")
    print("-" * (width + 22))
    for name, ms, target in rows:
        print(f"{name:<{width}}  {ms:9.3f}  {target}")
    if pyfai:
        print("-" * (width + 22))
        for split, t in pyfai.items():
            print(f"{'speed-up vs pyFAI CSR ' + split + ' split':<{width}}  {t / best:8.1f}x  >= 3x")


if __name__ == "__main__":
    main()
