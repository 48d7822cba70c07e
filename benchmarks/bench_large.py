"""Benchmark: a large detector (Eiger 16M, 4362 × 4148 pixels) — build time, peak memory, speed.

Usage::

    python benchmarks/bench_large.py [--oversampling 3] [--repeat 10] [--no-pyfai]

SPEC §9 asks that an Eiger 16M calibration builds within 24 GB.  The geometry is synthetic
(75 µm pixels, 3 m, beam near the centre, tilted, module gaps masked; no Eiger 16M data
ship with the project), the frame a Poisson image.  Each side runs in its own process so
that its peak resident memory (``ru_maxrss``) is its own: saxsdog builds its operator
(Oversampling 3, no cache) and integrates; pyFAI (same geometry through saxsdog's PONI
mapping) builds its CSR engine on the first ``integrate1d`` and integrates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS, COLS = 4362, 4148  # Eiger 16M (NumPy order)


def make_setup(folder: Path, oversampling: int) -> Path:
    """Calibration JSON and mask of a synthetic Eiger 16M."""
    import numpy as np
    import tifffile

    mask = np.zeros((ROWS, COLS), np.uint8)
    for r in range(514, ROWS, 551):  # horizontal module gaps (37 rows)
        mask[r:r + 37] = 1
    for c in range(1030, COLS, 1040):  # vertical gaps (10 columns)
        mask[:, c:c + 10] = 1
    tifffile.imwrite(folder / "eiger16m_mask.tif", mask)
    cal = {
        "Title": "synthetic Eiger 16M",
        "Geometry": {"Tilt": {"TiltAngleDeg": 0.3, "TiltRotDeg": 40.0}, "DedectorDistanceMM": 3000.0,
                     "BeamCenter": [2075.4, 2190.8], "Imagesize": [ROWS, COLS],
                     "PixelSizeMicroM": [75.0, 75.0]},
        "Masks": [{"PixelPerRadialElement": 1, "MaskFile": "eiger16m_mask.tif",
                   "Oversampling": oversampling, "Name": "", "Phi-mode": False}],
        "Wavelength": 1.0,
    }
    path = folder / "eiger16m.json"
    path.write_text(json.dumps(cal, indent=1))
    return path


def frame():
    import numpy as np

    return np.random.default_rng(0).poisson(10.0, size=(ROWS, COLS)).astype(np.uint32)


def child_saxsdog(cal_path: Path, repeat: int) -> dict:
    os.environ["SAXSDOG_NO_CACHE"] = "1"
    from saxsdog import Calibration

    t = time.perf_counter()
    cal = Calibration(cal_path)
    build = time.perf_counter() - t
    img = frame()
    cal.curves(img, stddev=False)
    t = time.perf_counter()
    for _ in range(repeat):
        cal.curves(img, stddev=False)
    per = (time.perf_counter() - t) / repeat
    op = cal.radial.operator
    return {"build_s": build, "integrate_ms": per * 1e3, "bins": int(op.n_bins),
            "operator_mb": op.nbytes / 1e6}


def child_pyfai(cal_path: Path, repeat: int) -> dict:
    import fabio

    from saxsdog.io.poni import calibration_to_integrator

    ai = calibration_to_integrator(json.loads(cal_path.read_text()))  # geometry only, no operator
    mask = fabio.open(str(cal_path.parent / "eiger16m_mask.tif")).data
    img = frame()
    npt = 2000
    method = ("bbox", "csr", "cython")
    t = time.perf_counter()
    ai.integrate1d(img, npt, mask=mask, unit="q_nm^-1", method=method)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeat):
        ai.integrate1d(img, npt, mask=mask, unit="q_nm^-1", method=method)
    per = (time.perf_counter() - t) / repeat
    return {"build_s": first - per, "integrate_ms": per * 1e3}


def run_child(kind: str, cal_path: Path, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--cal", str(cal_path),
                          "--repeat", str(repeat)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oversampling", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=10, help="frames per integration timing")
    ap.add_argument("--no-pyfai", action="store_true", help="skip the pyFAI comparison")
    ap.add_argument("--child", choices=["saxsdog", "pyfai"], help=argparse.SUPPRESS)
    ap.add_argument("--cal", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = (child_saxsdog if args.child == "saxsdog" else child_pyfai)(args.cal, args.repeat)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        cal_path = make_setup(Path(tmp), args.oversampling)
        print(f"bench_large: Eiger 16M {ROWS}x{COLS} ({ROWS * COLS / 1e6:.1f} Mpixel), Oversampling "
              f"{args.oversampling}, {os.cpu_count()} cores", flush=True)
        rows = [("saxsdog", run_child("saxsdog", cal_path, args.repeat))]
        if not args.no_pyfai:
            rows.append(("pyFAI integrate1d CSR (bbox)", run_child("pyfai", cal_path, args.repeat)))
    print()
    print(f"{'engine':<30} {'build s':>8} {'peak RSS GB':>12} {'integrate ms':>13}")
    for name, r in rows:
        if "error" in r:
            print(f"{name:<30} error: {r['error']}")
            continue
        print(f"{name:<30} {r['build_s']:>8.1f} {r['peak_rss_gb']:>12.2f} {r['integrate_ms']:>13.1f}")
    s = rows[0][1]
    if "error" not in s:
        print(f"\nsaxsdog operator: {s['bins']} bins, {s['operator_mb']:.0f} MB")
        print(f"target (SPEC §9): an Eiger 16M calibration builds within 24 GB -> "
              f"{'met' if s['peak_rss_gb'] <= 24 else 'NOT met'} ({s['peak_rss_gb']:.1f} GB peak)")
        if len(rows) > 1 and "error" not in rows[1][1]:
            print(f"integration speed-up versus pyFAI: {rows[1][1]['integrate_ms'] / s['integrate_ms']:.1f}x")
    if "error" in s:
        sys.exit(1)


if __name__ == "__main__":
    main()
