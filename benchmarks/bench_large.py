"""Benchmark: a large detector (Eiger 16M, 4362 × 4148 pixels) — build time, peak memory, speed.

Usage::

    python benchmarks/bench_large.py [--oversampling 3] [--repeat 10] [--no-pyfai] [--quick] [--json PATH]

Targets (issue 17): integration ≤ 15 ms per frame, operator build ≤ 8 s within ≤ 2 GB peak
(SPEC §9 asks for a build within 24 GB).  The geometry is synthetic (75 µm pixels, 3 m, beam
near the centre, tilted, module gaps masked; no Eiger 16M data ship with the project), the
frame a Poisson image.  Each side runs in its own process so that its peak resident memory
(``ru_maxrss``) is its own: saxsdog builds its operator (Oversampling 3, no cache) and
integrates; pyFAI (same geometry through saxsdog's PONI mapping) builds its CSR engine on the
first ``integrate1d`` and integrates.

saxsdog's rows are the CPU time of the calling thread (its kernels are single-threaded),
best of ``--repeat`` frames: without corrections, with the calibration's defaults (exact
Poisson errors, dummy pixels excluded) and with the reduction chain on (solid angle and
polarization too).  pyFAI's are wall clock (its OpenMP threads).  Every saxsdog curve is
checked against the scipy reference kernel (1e-12 relative).  ``--quick`` uses a detector of
a sixteenth of the size and two frames (timings meaningless, results still checked).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import Report, parser

ROWS, COLS = 4362, 4148  # Eiger 16M (NumPy order)


def make_setup(folder: Path, oversampling: int, rows: int, cols: int) -> Path:
    """Calibration JSON and mask of a synthetic Eiger-like detector of ``rows × cols`` pixels."""
    import numpy as np
    import tifffile

    mask = np.zeros((rows, cols), np.uint8)
    for r in range(514, rows, 551):  # horizontal module gaps (37 rows)
        mask[r:r + 37] = 1
    for c in range(1030, cols, 1040):  # vertical gaps (10 columns)
        mask[:, c:c + 10] = 1
    tifffile.imwrite(folder / "eiger_mask.tif", mask)
    cal = {
        "Title": f"synthetic Eiger {rows}x{cols}",
        "Geometry": {"Tilt": {"TiltAngleDeg": 0.3, "TiltRotDeg": 40.0}, "DedectorDistanceMM": 3000.0,
                     "BeamCenter": [cols * 0.5003, rows * 0.5022], "Imagesize": [rows, cols],
                     "PixelSizeMicroM": [75.0, 75.0]},
        "Masks": [{"PixelPerRadialElement": 1, "MaskFile": "eiger_mask.tif",
                   "Oversampling": oversampling, "Name": "", "Phi-mode": False}],
        "Wavelength": 1.0,
    }
    path = folder / "eiger.json"
    path.write_text(json.dumps(cal, indent=1))
    return path


def frame(shape: tuple[int, int]) -> Any:
    import numpy as np

    img = np.random.default_rng(0).poisson(10.0, size=shape).astype(np.int32)
    img[::97, ::89] = -1  # dead pixels, some where the operator uses pixels
    return img


def best_cpu(fn: Any, repeat: int) -> float:
    """Best thread-CPU seconds of one call over ``repeat`` calls (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def child_saxsdog(cal_path: Path, repeat: int, check: bool) -> dict[str, Any]:
    os.environ["SAXSDOG_NO_CACHE"] = "1"
    import numpy as np

    from saxsdog import Calibration
    from saxsdog.core.corrections import PixelCorrections

    t, c = time.perf_counter(), time.process_time()
    cal = Calibration(cal_path)
    build, build_cpu = time.perf_counter() - t, time.process_time() - c
    build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    op = cal.radial.operator
    img = frame(op.shape)
    kind = type(cal.radial)
    chain = PixelCorrections(solid_angle=True, polarization=(0.95, 0.0))
    variants = {
        "plain": lambda m: kind(op, cal.radial.config, method=m),
        "default": lambda m: kind(op, cal.radial.config, method=m, corrections=PixelCorrections(),
                                  geometry=cal.geometry),
        "chain": lambda m: kind(op, cal.radial.config, method=m, corrections=chain, geometry=cal.geometry),
    }
    out: dict[str, Any] = {"build_s": build, "build_cpu_s": build_cpu, "build_rss_gb": build_rss, "bins": int(op.n_bins),
                           "operator_mb": op.nbytes / 1e6, "mismatch": []}
    t = time.perf_counter()
    streams = op.streams if hasattr(op, "streams") else None
    out["layout_s"] = time.perf_counter() - t
    out["streams_mb"] = streams.nbytes / 1e6 if streams is not None else 0.0
    out["runs"] = int(streams.run_pixels.size) if hasattr(streams, "run_pixels") else None
    for name, make in variants.items():
        fast = make(None)
        out[f"{name}_ms"] = best_cpu(functools.partial(fast.curve, img, False), repeat) * 1e3
        if check:
            a, b = fast.curve(img, False), make("scipy").curve(img, False)
            scale = float(np.max(np.abs(b.intensity), initial=1.0))
            if not (np.allclose(a.intensity, b.intensity, rtol=1e-12, atol=1e-12 * scale)
                    and np.allclose(a.poisson, b.poisson, rtol=1e-12, atol=1e-12 * scale)
                    and a.dummy_pixels == b.dummy_pixels):
                out["mismatch"].append(name)
    return out


def child_pyfai(cal_path: Path, repeat: int) -> dict[str, Any]:
    import fabio

    from saxsdog.io.poni import calibration_to_integrator

    ai = calibration_to_integrator(json.loads(cal_path.read_text()))  # geometry only, no operator
    mask = fabio.open(str(cal_path.parent / "eiger_mask.tif")).data
    img = frame(mask.shape)
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


def run_child(kind: str, cal_path: Path, repeat: int, check: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--cal", str(cal_path), "--repeat", str(repeat)]
    if check:
        cmd.append("--check")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--oversampling", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=10, help="frames per integration timing")
    ap.add_argument("--no-pyfai", action="store_true", help="skip the pyFAI comparison")
    ap.add_argument("--check", action="store_true", help="(child) also compare with the scipy reference")
    ap.add_argument("--child", choices=["saxsdog", "pyfai"], help="(internal)")
    ap.add_argument("--cal", type=Path, help="(internal)")
    args = ap.parse_args()

    if args.child:
        result = (child_saxsdog(args.cal, args.repeat, args.check) if args.child == "saxsdog"
                  else child_pyfai(args.cal, args.repeat))
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        print(json.dumps(result))
        return

    rows, cols = (ROWS // 4, COLS // 4) if args.quick else (ROWS, COLS)
    repeat = 2 if args.quick else args.repeat
    rep = Report(f"bench_large: Eiger {rows}x{cols} ({rows * cols / 1e6:.1f} Mpixel), Oversampling "
                 f"{args.oversampling}", args)
    with tempfile.TemporaryDirectory() as tmp:
        cal_path = make_setup(Path(tmp), args.oversampling, rows, cols)
        # the scipy check on the full detector costs a minute: only on the quick one
        s = run_child("saxsdog", cal_path, repeat, check=args.quick)
        p = run_child("pyfai", cal_path, repeat, check=False) if not (args.no_pyfai or args.quick) else None
    rep.check("error" not in s, f"saxsdog failed: {s.get('error')}")
    rep.check(not s["mismatch"], f"numba and scipy curves differ: {s['mismatch']}")
    runs = f", {s['runs']} runs of used pixels" if s.get("runs") is not None else ""
    rep.context["operator"] = (f"{s['bins']} bins, {s['operator_mb']:.0f} MB; stream layout "
                               f"{s['streams_mb']:.0f} MB{runs}, derived in {s['layout_s']:.2f} s "
                               "(once, at the first frame)")
    rep.context["timing"] = "saxsdog: thread CPU time, best frame; pyFAI: wall clock, mean"
    rep.add("saxsdog operator build (no cache), wall", s["build_s"], "s", "<= 8", key="build_s")
    rep.add("saxsdog operator build, CPU time of the process", s["build_cpu_s"], "s", key="build_cpu_s")
    rep.add("saxsdog peak RSS after the build", s["build_rss_gb"], "GB", "<= 2", key="build_rss_gb")
    rep.add("saxsdog peak RSS (build + integration)", s["peak_rss_gb"], "GB", key="peak_rss_gb")
    rep.add("saxsdog curve, no corrections", s["plain_ms"], "ms", "<= 15", key="plain_ms")
    rep.add("saxsdog curve, calibration defaults (exact Poisson, dummies)", s["default_ms"], "ms",
            key="default_ms")
    rep.add("saxsdog curve, solid angle + polarization + exact Poisson", s["chain_ms"], "ms", key="chain_ms",
            note=f"{s['chain_ms'] / s['plain_ms']:.2f}x plain")
    if p is not None:
        if "error" in p:
            rep.add(f"pyFAI failed: {p['error']}", None)
        else:
            rep.add("pyFAI integrate1d CSR (bbox), engine build", p["build_s"], "s", key="pyfai_build_s")
            rep.add("pyFAI peak RSS", p["peak_rss_gb"], "GB", key="pyfai_peak_rss_gb")
            rep.add("pyFAI integrate1d CSR (bbox)", p["integrate_ms"], "ms", key="pyfai_ms",
                    note=f"saxsdog {p['integrate_ms'] / s['plain_ms']:.1f}x faster")
    rep.finish()


if __name__ == "__main__":
    main()
