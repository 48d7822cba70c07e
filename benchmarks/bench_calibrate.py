"""Benchmark: ``saxsdog calibrate``'s fit on Pilatus 1M images (target: under 10 s each).

Usage::

    python benchmarks/bench_calibrate.py [--data ../shared/data] [--repeat 3] [--synthetic 6]
                                         [--quick] [--json PATH]

Times :func:`saxsdog.calibrate.calibrate_image` on the real silver-behenate image
``agbeh2_1M.tif`` (wavelength from its header, no other guess) and on synthetic AgBh, LaB6 and
CeO2 images of random geometry with the real detector's gaps and a beamstop, and checks each
against the geometry it was made with.  Prints one line per image: best and median wall time,
rings and control points used, RMS residual, and (synthetic) the errors of centre, distance
and tilt.  Reading the image and importing pyFAI are not timed.

Every result is checked whatever the mode: the real image's fit uses at least 7 rings with
an RMS residual under 1 px, and each synthetic fit recovers its geometry (centre within
0.1 px, distance within 1e-3 relative, tilt within 0.05°, as the test suite asks).
``--quick`` fits the real image and two synthetic images once (timings meaningless).
"""

from __future__ import annotations

import statistics
import time

from _harness import Report, parser


def _time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), result


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=6, help="synthetic images (of the 20 test geometries)")
    args = ap.parse_args()
    repeat, synthetic = (1, 2) if args.quick else (args.repeat, args.synthetic)

    from saxsdog.calibrate import calibrate_image, d_spacings
    from saxsdog.calibrate.synthetic import fake_calibrant_image, random_scenarios
    from saxsdog.io.images import read_image

    data = args.data
    rep = Report("bench_calibrate: saxsdog calibrate's fit, Pilatus 1M", args)
    rep.context["timing"] = f"median wall time of {repeat} fit(s) per image; reading and importing pyFAI not timed"
    frame = read_image(data / "agbeh2_1M.tif")
    d_spacings("AgBh")  # import pyFAI outside the timing
    worst = 0.0
    best, median, fit = _time(lambda: calibrate_image(frame.data, "AgBh", frame.metadata["wavelength"],
                                                      (172.0, 172.0)), repeat)
    worst = max(worst, median)
    g = fit.geometry
    rep.check(fit.rings_used >= 7 and fit.rms_px < 1.0,
              f"agbeh2_1M.tif: {fit.rings_used} rings, RMS {fit.rms_px:.3f} px (want >= 7 rings, < 1 px)")
    rep.add("agbeh2_1M.tif, AgBh (real image)", median, "s", "< 10", key="agbeh2_s",
            note=f"best {best:.2f} s, rings {fit.rings_used}, points {fit.points_row.size}, RMS {fit.rms_px:.3f} px "
                 f"-> {g.distance_mm:.2f} mm, centre [{g.beam_center[0]:.2f}, {g.beam_center[1]:.2f}], "
                 f"tilt {g.tilt_deg:.3f}° at {g.tilt_rotation_deg:.1f}°")
    gaps = read_image(data / "buf1_00000.tif").data < 0
    for i, scenario in enumerate(random_scenarios(20)[:synthetic]):
        truth = scenario.geometry
        image = fake_calibrant_image(truth, d_spacings(scenario.calibrant)[1], gaps=gaps, seed=i)
        best, median, fit = _time(lambda image=image, name=scenario.calibrant, truth=truth: calibrate_image(
            image, name, truth.wavelength_A, truth.pixel_size_um), repeat)
        worst = max(worst, median)
        f = fit.geometry
        centre = max(abs(f.beam_center[0] - truth.beam_center[0]), abs(f.beam_center[1] - truth.beam_center[1]))
        distance = abs(f.distance_mm / truth.distance_mm - 1)
        tilt = abs(f.tilt_deg - truth.tilt_deg)
        rep.check(centre < 0.1 and distance < 1e-3 and tilt < 0.05,
                  f"synthetic {i} ({scenario.calibrant}): centre off by {centre:.3f} px, distance by {distance:.1e}, "
                  f"tilt by {tilt:.3f}°")
        rep.add(f"synthetic {i}, {scenario.calibrant} ({truth.distance_mm:.0f} mm, tilt {truth.tilt_deg:.1f}°)",
                median, "s", "< 10", key=f"synthetic_{i}_s",
                note=f"best {best:.2f} s, rings {fit.rings_used}, RMS {fit.rms_px:.3f} px; errors: centre "
                     f"{centre:.3f} px, distance {distance:.1e}, tilt {tilt:.3f}°")
    rep.add("slowest median", worst, "s", "< 10", key="slowest_s")
    rep.finish()


if __name__ == "__main__":
    main()
