"""Stress test: ``saxsdog calibrate``'s fit on random geometries drawn as a reviewer would.

Usage::

    python benchmarks/stress_calibrate.py [--n 100] [--seed 1] [--family issue|realistic|both]
                                          [--distance log|uniform|both] [--jsonl PATH] [--quick]

Each case draws a calibrant (AgBh, LaB6, CeO2), a distance 150–5000 mm (log-uniform or
uniform), a tilt uniform in 0–15° at any rotation and a beam centre uniform over the
detector (half the cases) or over a box reaching half a detector width beyond every edge (the
other half) (:func:`saxsdog.calibrate.synthetic.reviewer_scenarios`), and makes a synthetic
Pilatus 1M image (the real detector's gaps from ``buf1_00000.tif``, a beamstop, Poisson
noise) with :func:`saxsdog.calibrate.synthetic.fake_calibrant_image`.  The wavelength:

* ``issue``: chosen so that the first line falls 60–250 px (AgBh) or 150–350 px (LaB6, CeO2)
  from the beam centre, as the acceptance test's geometries (else LaB6 5 m away shows no ring
  on a 1M detector);
* ``realistic``: uniform 0.5–1.6 Å, whatever that leaves on the detector.

Every case is classified against the geometry the image was made with:

* **recovered**: centre within 0.1 px, distance within 0.1 %, tilt within 0.05° (the issue's
  limits);
* **refused**: a :class:`~saxsdog.calibrate.CalibrationFitError` (no rings, poor fit) —
  correct when fewer than two rings are on the detector ("expected refusal"), a failure
  otherwise;
* **wrong**: a geometry returned outside the limits (the worst outcome: must be 0).

One line per case is printed (and appended to ``--jsonl``), then the counts per outcome and
per failure class.  ``--quick``: 6 cases.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
SHAPE = (1043, 981)


def run_case(scenario, gaps: np.ndarray, seed: int) -> dict:
    """Make the image, fit it and classify the result (see the module's docstring)."""
    from saxsdog.calibrate import CalibrationFitError, calibrate_image, d_spacings
    from saxsdog.calibrate.synthetic import fake_calibrant_image, visible_rings

    truth = scenario.geometry
    _, d = d_spacings(scenario.calibrant)
    image = fake_calibrant_image(truth, d, gaps=gaps, seed=seed)
    out = {"calibrant": scenario.calibrant, "distance_mm": truth.distance_mm, "tilt_deg": truth.tilt_deg,
           "rotation_deg": truth.tilt_rotation_deg, "beam_center": list(truth.beam_center),
           "wavelength_A": truth.wavelength_A, "visible_rings": visible_rings(truth, d, ~gaps)}
    case = scenario
    t0 = time.process_time()
    try:
        fit = calibrate_image(image, case.calibrant, truth.wavelength_A, truth.pixel_size_um)
    except CalibrationFitError as exc:
        out.update(outcome="refused", message=str(exc)[:300])
    except Exception as exc:  # noqa: BLE001 - a crash is an outcome of its own here
        out.update(outcome="crash", message=f"{type(exc).__name__}: {exc}"[:300])
    else:
        f = fit.geometry
        centre = max(abs(f.beam_center[0] - truth.beam_center[0]), abs(f.beam_center[1] - truth.beam_center[1]))
        distance = abs(f.distance_mm / truth.distance_mm - 1)
        tilt = abs(f.tilt_deg - truth.tilt_deg)
        ok = centre < 0.1 and distance < 1e-3 and tilt < 0.05
        out.update(outcome="recovered" if ok else "wrong", centre_err_px=centre, distance_err=distance,
                   tilt_err_deg=tilt, rings=fit.rings_used, rms_px=fit.rms_px, warnings=fit.warnings,
                   found=[f.beam_center[0], f.beam_center[1], f.distance_mm, f.tilt_deg, f.tilt_rotation_deg])
    out["cpu_s"] = time.process_time() - t0
    if out["outcome"] == "refused":
        out["outcome"] = "refused (expected)" if out["visible_rings"] < 2 else "refused"
    return out


def failure_class(case: dict) -> str:
    """A coarse label of what makes a case hard (for the summary)."""
    rows, cols = SHAPE
    y, x = case["beam_center"]
    labels = []
    if not (0 <= x <= cols and 0 <= y <= rows):
        labels.append("centre off detector")
    if case["tilt_deg"] > 10 and case["distance_mm"] < 300:
        labels.append("strong tilt, short distance")
    if case["visible_rings"] < 4:
        labels.append(f"{case['visible_rings']} rings visible")
    return ", ".join(labels) or "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="cases per family and distance law")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--family", choices=["issue", "realistic", "both"], default="issue")
    ap.add_argument("--distance", choices=["log", "uniform", "both"], default="both")
    ap.add_argument("--start", type=int, default=0, help="skip the first START cases of each stream")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--jsonl", type=Path, help="append one JSON line per case")
    ap.add_argument("--quick", action="store_true", help="6 cases")
    args = ap.parse_args()
    from saxsdog.calibrate.synthetic import reviewer_scenarios
    from saxsdog.io.images import read_image

    gaps = read_image(args.data / "buf1_00000.tif").data < 0
    families = ["issue", "realistic"] if args.family == "both" else [args.family]
    laws = ["log", "uniform"] if args.distance == "both" else [args.distance]
    n = 3 if args.quick else args.n
    results = []
    for family in families:
        for law in laws:
            for i, scenario in enumerate(reviewer_scenarios(n, args.seed, family, law)):
                if i < args.start:
                    continue
                result = run_case(scenario, gaps, seed=i)
                result.update(id=f"{family}/{law}/{args.seed}/{i}", family=family, distance_law=law)
                results.append(result)
                print(f"{result['id']:>22} {result['calibrant']:5} {result['distance_mm']:7.1f} mm tilt "
                      f"{result['tilt_deg']:5.2f} rot {result['rotation_deg']:7.1f} centre "
                      f"[{result['beam_center'][0]:7.1f}, {result['beam_center'][1]:7.1f}] λ "
                      f"{result['wavelength_A']:.4f} rings {result['visible_rings']:3d}: {result['outcome']}"
                      + (f" ({result['message'][:120]})" if "message" in result else
                         f" (centre {result['centre_err_px']:.3f} px, distance {result['distance_err']:.1e}, "
                         f"tilt {result['tilt_err_deg']:.3f}°)") + f" {result['cpu_s']:.1f} s", flush=True)
                if args.jsonl:
                    with args.jsonl.open("a") as fh:
                        fh.write(json.dumps(result) + "\n")
    counts: dict[str, int] = {}
    classes: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        if r["outcome"] in ("refused", "wrong", "crash"):
            key = f"{r['outcome']}: {failure_class(r)}"
            classes[key] = classes.get(key, 0) + 1
    print(f"\n{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for k, v in sorted(classes.items()):
        print(f"  {k}: {v}")
    cpu = sorted(r["cpu_s"] for r in results)
    if cpu:
        print(f"fit CPU time: median {cpu[len(cpu) // 2]:.1f} s, max {cpu[-1]:.1f} s")
    return 1 if counts.get("wrong", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
