"""Benchmark: end-to-end directory processing versus a pyFAI loop, in one run.

Usage::

    python benchmarks/bench_pipeline.py [--images 1000] [--workers 2]

N hard links of the real Pilatus 1M image (page cache) are processed by the saxsdog
pipeline (read TIFF, integrate with errors and integral parameters, write .chi), then by
a plain pyFAI loop doing read (fabio) + integrate1d (CSR) + write (.dat via pyFAI) for the
same files.  Also reports the resident memory of the workers and the start-up time with
a cached operator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB (PSS shares shared pages fairly between processes)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=here.parent / ".." / "shared" / "data")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pyfai-images", type=int, default=200, help="images for the (slower) pyFAI loop")
    args = ap.parse_args()

    from saxsdog import Calibration
    from saxsdog.testing import link_images
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.queue import ImageQueue

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["SAXSDOG_CACHE_DIR"] = str(tmp / "cache")
        paths = link_images(args.data / "buf1_00000.tif", tmp / "run", args.images)

        Calibration(args.data / "cal.json")  # fill the cache
        # start-up of the command with a cached operator, until the calibration is ready
        out = subprocess.run([sys.executable, "-c",
                              "import time,sys;t=time.perf_counter();from saxsdog import Calibration;"
                              f"Calibration({str(args.data / 'cal.json')!r});"
                              "print(time.perf_counter()-t)"], capture_output=True, text=True,
                             env=os.environ.copy())
        startup = float(out.stdout.strip().splitlines()[-1])

        cal = Calibration(args.data / "cal.json")
        opts = QueueOptions(workers=args.workers, out_dir=tmp / "out", live_filelist=True)
        q = ImageQueue(cal, tmp / "run", opts).start()
        t0 = time.perf_counter()
        q.fill_from_directory()
        peak_rss = peak_pss = 0
        while not q.wait_until_idle(0.05):
            rss = [rss_kib(p) for p in q.worker_pids()]
            peak_rss = max(peak_rss, sum(r for r, _ in rss))
            peak_pss = max(peak_pss, sum(p for _, p in rss))
        elapsed = time.perf_counter() - t0
        stats = q.stats()
        q.stop()
        assert stats["images_processed"] == args.images, stats
        saxsdog_fps = args.images / elapsed
        rows.append((f"saxsdog pipeline, {args.workers} workers, {args.images} images", f"{saxsdog_fps:8.1f} frames/s",
                     ">= 250"))
        st = stats["stage_seconds"]
        rows.append(("  per frame in a worker: read / integrate / write",
                     f"{st['read'] * 1e3:.2f} / {st['integrate'] * 1e3:.2f} / {st['write'] * 1e3:.2f} ms", ""))
        rows.append((f"  worker memory, {args.workers} workers: RSS (PSS)",
                     f"{peak_rss / 1024:.0f} ({peak_pss / 1024:.0f}) MiB", "< 1024"))
        rows.append(("start-up with cached operator (import + load)", f"{startup * 1e3:8.0f} ms", "< 1000"))

        try:
            import fabio
            import pyFAI

            from saxsdog.io.poni import calibration_to_integrator

            ai = calibration_to_integrator(cal.raw)
            op = cal.radial.operator
            mask = ~cal.mask(0)
            (tmp / "pyfai").mkdir()
            n = min(args.pyfai_images, args.images)

            def one(p):
                img = fabio.open(str(p)).data
                ai.integrate1d(img, op.n_bins, unit="q_nm^-1", method=("bbox", "csr", "cython"),
                               correctSolidAngle=False, mask=mask, error_model="poisson",
                               filename=str(tmp / "pyfai" / (p.stem + ".dat")))

            one(paths[0])
            t0 = time.perf_counter()
            for p in paths[:n]:
                one(p)
            pyfai_fps = n / (time.perf_counter() - t0)
            rows.append((f"pyFAI {pyFAI.version} loop: fabio read + integrate1d CSR + write, {n} images",
                         f"{pyfai_fps:8.1f} frames/s", ""))
            rows.append(("speed-up of the saxsdog pipeline over the pyFAI loop", f"{saxsdog_fps / pyfai_fps:8.1f}x", ""))
        except ImportError:
            rows.append(("pyFAI not installed", "", ""))

    width = max(len(r[0]) for r in rows)
    print(f"\nEnd to end on {os.cpu_count()} cores, Pilatus 1M from page cache, .chi with errors and "
          f"integral parameters")
    print(f"{'measurement':<{width}}  {'value':>22}  target")
    print("-" * (width + 34))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>22}  {target}")


if __name__ == "__main__":
    main()
