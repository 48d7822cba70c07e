"""Benchmark: sigma-clipped integration versus plain integration and pyFAI, in one run.

Usage::

    python benchmarks/bench_sigma_clip.py [--data ../shared/data] [--repeat 100] [--no-pyfai]
                                          [--quick] [--json PATH]

The real Pilatus 1M image ``buf1_00000.tif`` with ``cal.json`` (Oversampling 3), clean and
with 500 zingers (10⁶ counts) at random pixels; ``SigmaClip`` Sigma 4, Cycles 3.  saxsdog's
kernels are single-threaded; pyFAI's Cython CSR engine uses its default OpenMP threads.
Timings are the best of interleaved rounds, wall clock and CPU time of the calling thread
(the machine may be shared: the best round is the one least disturbed, and CPU time is less
disturbed still), so each ratio compares figures taken side by side.  saxsdog's numba clipping kernel uses each bin's band from the previous frame
to hold that frame's outliers aside (speed only: results do not depend on it); the "first
frame" row forgets it before every call.  The pixel factor (flat, solid angle, polarization
folded into one g_j) and the dark are packed once (``pack_corrections``, as an Integrator
with SigmaClip does); the "not packed" row reads them from the full-frame arrays.

Every result is checked whatever the mode: each kernel's clipped curve against the scipy
reference kernel's (1e-9 relative), and the 500 zingers rejected (the clipped curve of the
image with zingers within 1e-3 median of the clean image's, its rejected entries at least
500).  ``--quick`` runs a few frames and skips pyFAI (timings meaningless).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np

from _harness import Report, parser


#: Issue 13's "today's plain integration" per Pilatus 1M frame (Integrator.integrate at main
#: e665fb8, numba, one core): the clip target is 3x it.
PLAIN_E665FB8 = 0.76e-3


def best_times(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per call: every call is warmed up, then all are run in turn
    ``rounds`` times (``per_round`` calls each) and the best round of each counts.  CPU is
    the calling thread's time (pyFAI's OpenMP threads are not in it: compare pyFAI by wall)."""
    for fn in calls.values():
        fn()
    rounds = 7
    per_round = max(1, repeat // rounds)
    wall = {name: float("inf") for name in calls}
    cpu = dict(wall)
    for _ in range(rounds):
        for name, fn in calls.items():
            t, c = time.perf_counter(), time.thread_time()
            for _ in range(per_round):
                fn()
            wall[name] = min(wall[name], (time.perf_counter() - t) / per_round)
            cpu[name] = min(cpu[name], (time.thread_time() - c) / per_round)
    return {name: (wall[name], cpu[name]) for name in calls}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeat", type=int, default=100, help="frames per timing")
    ap.add_argument("--no-pyfai", action="store_true", help="skip pyFAI")
    args = ap.parse_args()
    repeat = 7 if args.quick else args.repeat

    import fabio

    from saxsdog.calibration import Calibration
    from saxsdog.core.integrators import Integrator
    from saxsdog.core.sigma_clip import ClipResult, _forget_window, available_methods, clip_accumulate, pack_corrections

    img = fabio.open(str(args.data / "buf1_00000.tif")).data
    zingers = img.copy()
    zingers.flat[np.random.default_rng(13).choice(img.size, 500, replace=False)] = 10**6
    cal = Calibration(args.data / "cal.json", cache=False)
    op = cal.integrators[0].operator
    plain = Integrator(op, method="numba" if "numba" in available_methods() else None)

    rng = np.random.default_rng(1)
    factor = 1.0 + 0.05 * rng.random(img.size)  # a flat field and solid angle folded into g_j
    dark = rng.random(img.size)

    # packed once per calibration, as an Integrator with SigmaClip does
    packed = pack_corrections(op, factor, dark)

    def clipped(image: np.ndarray, method: str, cycles: int = 3, model: str = "poisson",
                fresh: bool = False, corrected: bool = False, pack: bool = True) -> Callable[[], ClipResult]:
        flat = image.ravel()
        g, d = (factor, dark) if corrected else (None, None)
        extra = {"packed": packed} if (corrected and pack) else {}

        def run() -> ClipResult:
            if fresh:  # forget the previous frame's bands, as on the first frame of a run
                _forget_window(op)
            return clip_accumulate(op, flat, pixel_factor=g, dark=d, sigma=4.0, cycles=cycles,
                                   error_model=model, method=method, **extra)
        return run

    rep = Report("bench_sigma_clip: sigma-clipped integration, Pilatus 1M", args)
    # results first: every kernel against the scipy reference, and the zingers rejected
    reference = {(name, model): clipped(image, "scipy", model=model)()
                 for name, image in (("clean", img), ("zingers", zingers)) for model in ("poisson", "azimuthal")}
    for m in available_methods():
        for (name, model), ref in reference.items():
            got = clipped(img if name == "clean" else zingers, m, model=model)()
            rep.check(all(np.allclose(getattr(got, f), getattr(ref, f), rtol=1e-9,
                                      atol=1e-9 * float(np.max(np.abs(getattr(ref, f)), initial=1.0)))
                          for f in ("intensity", "error", "stddev", "weight")),
                      f"clip {m} differs from the scipy reference ({name} image, {model})")
    clean, dirty = reference[("clean", "poisson")], reference[("zingers", "poisson")]
    sel = clean.intensity > 0
    dev = float(np.median(np.abs(dirty.intensity[sel] / clean.intensity[sel] - 1)))
    rep.check(dev <= 1e-3, f"with 500 zingers the clipped curve deviates by {dev:.2e} (median) from the clean one")
    rep.check(int(np.sum(dirty.rejected)) >= 500, f"only {int(np.sum(dirty.rejected))} entries rejected")
    rep.context["zingers"] = (f"clipped curve with 500 zingers vs clean: median relative deviation {dev:.1e}, "
                              f"{int(np.sum(dirty.rejected))} entries rejected")

    calls: dict[str, Callable[[], object]] = {
        "plain: I only (Integrator.integrate)": lambda: plain.integrate(img),
        "plain: I, stddev, error (integrate_with_errors)": lambda: plain.integrate_with_errors(img),
    }
    for m in available_methods():
        calls[f"clip {m}: Cycles 0 (one pass, exact poisson error)"] = clipped(img, m, cycles=0)
        calls[f"clip {m}: Sigma 4 Cycles 3, clean image"] = clipped(img, m)
        calls[f"clip {m}: Sigma 4 Cycles 3, 500 zingers"] = clipped(zingers, m)
        calls[f"clip {m}: Sigma 4 Cycles 3, 500 zingers, azimuthal"] = clipped(zingers, m, model="azimuthal")
        if m == "numba":
            calls[f"clip {m}: Sigma 4 Cycles 3, 500 zingers, pixel factor + dark"] = clipped(zingers, m,
                                                                                          corrected=True)
            calls[f"clip {m}: Sigma 4 Cycles 3, 500 zingers, pixel factor + dark, not packed"] = clipped(
                zingers, m, corrected=True, pack=False)
            calls[f"clip {m}: Sigma 4 Cycles 3, 500 zingers, first frame"] = clipped(zingers, m, fresh=True)

    pyfai_version = None
    if not args.no_pyfai and not args.quick:
        try:
            import pyFAI

            from saxsdog.io.poni import calibration_to_integrator

            pyfai_version = pyFAI.version
            logging.getLogger("pyFAI").setLevel(logging.ERROR)  # it warns about splitting when clipping
            ai = calibration_to_integrator(cal.raw)
            n = op.n_bins
            dq = float(op.x[1] - op.x[0])
            mask = (op.entries_per_pixel == 0).reshape(op.shape) | (img < 0)
            for split in ("no", "full"):
                for model in ("poisson", "azimuthal"):
                    def run(split: str = split, model: str = model) -> object:
                        return ai.sigma_clip_ng(zingers, n, unit="q_nm^-1", radial_range=(0, n * dq),
                                                method=(split, "csr", "cython"), correctSolidAngle=False,
                                                mask=mask, thres=4, max_iter=3, error_model=model)
                    calls[f"pyFAI {pyfai_version} sigma_clip_ng {split} split, {model}, 500 zingers"] = run

                def integ(split: str = split) -> object:
                    return ai.integrate1d(zingers, n, unit="q_nm^-1", radial_range=(0, n * dq),
                                          method=(split, "csr", "cython"), correctSolidAngle=False, mask=mask,
                                          error_model="poisson")
                calls[f"pyFAI {pyfai_version} integrate1d {split} split, poisson"] = integ
        except ImportError:
            pass

    times = best_times(calls, repeat)
    errors_wall, errors_cpu = times["plain: I, stddev, error (integrate_with_errors)"]
    plain_cpu = times["plain: I only (Integrator.integrate)"][1]
    rep.context["image"] = (f"Pilatus 1M {img.shape[0]}x{img.shape[1]}, {op.n_bins} bins, {op.bins.size} operator "
                            f"entries (Oversampling {int(round(op.subpixels ** 0.5))}), {os.cpu_count()} cores")
    rep.context["timing"] = ("best of interleaved rounds; value: wall clock ms; note: the calling thread's CPU "
                             "time and its ratios: 'x e665fb8' divides by issue 13's plain time (0.76 ms, "
                             "Integrator.integrate at main e665fb8, fixed figure), 'x integrate' and "
                             "'x with_errors' by this run's CPU time of the two plain rows")
    rep.add("reference: plain Integrator.integrate at e665fb8 (issue 13's 'today')", PLAIN_E665FB8 * 1e3, "ms",
            note="fixed figure from the issue's validation, not measured here; the clip target is 3x it")
    for name, (wall, cpu) in times.items():
        # the target is per frame of a run; the first frame (bands not yet known) is a one-off
        steady = name.startswith("clip numba: Sigma") and not name.endswith(("first frame", "not packed"))
        target = f"<= {3 * PLAIN_E665FB8 * 1e3:.2f} ms (3x e665fb8)" if steady else ""
        rep.add(name, wall * 1e3, "ms", target,
                note=(f"CPU {cpu * 1e3:.3f} ms: {cpu / PLAIN_E665FB8:.2f}x e665fb8, "
                      f"{cpu / plain_cpu:.2f}x integrate, {cpu / errors_cpu:.2f}x with_errors; "
                      f"wall {wall / errors_wall:.2f}x with_errors"))
    rep.finish()


if __name__ == "__main__":
    main()
