"""``saxsdog absolute``: the calibration's ``Normalization.AbsoluteScale`` from a measured standard.

Examples::

    saxsdog absolute water_minus_cell.chi --standard water -c cal.json -o cal_abs.json
    saxsdog absolute water_00001.tif --standard water --temperature 25 -c cal.json -o cal_abs.json
    saxsdog absolute gc.chi --reference SRM3600.csv --q-unit 1/A -c cal.json -o cal_abs.json --plot fit.svg

See :mod:`saxsdog.reduction.absolute` for the standards and the fit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROG = "saxsdog absolute"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``saxsdog absolute``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Derive the absolute-intensity factor (the calibration's Normalization.AbsoluteScale)\n"
                    "from a measured standard: water (flat dΣ/dΩ, 0.01632 1/cm at 20 °C) or a reference\n"
                    "table (q, dΣ/dΩ[, σ]) such as the NIST SRM 3600 glassy-carbon certificate, fitted as\n"
                    "one scale factor over the q range the measurement and the reference share. Prints\n"
                    "the fit report; with -o writes the calibration with the factor.",
        epilog="The standard must be measured and reduced like the samples: the same calibration\n"
               "(exposure time, monitor, transmission), its own thickness (--thickness-mm), and the\n"
               "background (empty cell) subtracted, either by the calibration's Background or in the\n"
               "curve given. The factor written is the fitted one times any AbsoluteScale already\n"
               "applied to the standard's curve.\n\n"
               "Examples:\n"
               "  saxsdog absolute water.chi --standard water -c cal.json -o cal_abs.json\n"
               "      water (minus the empty capillary) as a curve, at 20 °C\n"
               "  saxsdog absolute water_00001.tif --standard water --temperature 25 --thickness-mm 1.5 \\\n"
               "          -c cal.json -o cal_abs.json\n"
               "      an image of water, integrated with cal.json (its Background subtracted)\n"
               "  saxsdog absolute gc.h5 --reference SRM3600.csv --q-unit 1/A --q-range 0.1 2 \\\n"
               "          -c cal.json -o cal_abs.json --plot fit.svg\n"
               "      glassy carbon against its certificate (q in 1/Å), between 0.1 and 2 nm⁻¹\n\n"
               "Exit codes: 0 factor found; 1 the fit is impossible (no overlap, bad values, ...);\n"
               "2 usage or calibration error.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("measurement", metavar="CURVE_OR_IMAGE",
                   help="the standard's curve (.chi, NXcanSAS .h5, or plain q I [σ] columns in .dat/.txt/.csv "
                        "with q in nm⁻¹) or image (integrated with -c)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--standard", choices=["water"], help="a standard of known flat dΣ/dΩ: water")
    which.add_argument("--reference", metavar="TABLE",
                       help="reference table (CSV or .dat): q, dΣ/dΩ in 1/cm, optionally σ")
    p.add_argument("--temperature", type=float, default=20.0, metavar="C",
                   help="the water's temperature in °C (default 20; 0–100)")
    p.add_argument("--q-unit", choices=["auto", "1/nm", "1/A"], default="auto",
                   help="q unit of the reference table (default auto: from its header, else 1/nm)")
    p.add_argument("-c", "--calibration", metavar="CAL",
                   help="calibration to integrate an image with, and to write with the factor (-o); "
                        "default for -o: the calibration in the curve file's header")
    p.add_argument("--thickness-mm", type=float, metavar="D",
                   help="the standard's thickness in mm (its curve is put on it, whatever ThicknessMM it "
                        "was reduced with)")
    p.add_argument("--q-range", type=float, nargs=2, metavar=("A", "B"),
                   help="fit only between A and B nm⁻¹")
    p.add_argument("--frame", type=int, default=0, metavar="N",
                   help="frame of a multi-frame file (default 0, the first)")
    p.add_argument("-o", "--out", metavar="CAL_OUT",
                   help="write the calibration with Normalization.AbsoluteScale set (format version 2)")
    p.add_argument("--plot", metavar="FILE", help="write a plot of the fit (e.g. fit.svg; needs saxsdog[plot])")
    return p


def _is_curve_file(path: Path) -> bool:
    """A .chi file, or an HDF5 file that holds NXcanSAS curves (else: an image)."""
    from saxsdog.reduction.absolute import _CURVE_SUFFIXES, _HDF5_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in _CURVE_SUFFIXES:
        return True
    if suffix in _HDF5_SUFFIXES and path.is_file() and path.stat().st_size > 0:
        try:
            import h5py

            with h5py.File(path, "r") as f:
                return any(isinstance(g, h5py.Group) and g.attrs.get("canSAS_class") in ("SASentry", b"SASentry")
                           for g in f.values())
        except OSError:
            return False
    return False


def _curve_from_image(path: Path, cal_path: str, frame: int):
    """Integrate the standard's image with the calibration: its first curve (background-subtracted
    when the calibration has a Background) as a MeasuredCurve, and whether the calibration's
    Normalization was applied to it."""
    import inspect

    from saxsdog.calibration import Calibration
    from saxsdog.io.images import read_image
    from saxsdog.reduction.absolute import AbsoluteScaleError, MeasuredCurve

    raw = json.loads(Path(cal_path).read_text())
    cal = Calibration(raw, base_dir=Path(cal_path).resolve().parent)
    image = read_image(path, frame, expected_shape=cal.shape)
    # Calibrations that normalize take the frame's metadata (exposure time, monitor ... from
    # the header); without that parameter the curve is in counts/pixel, not normalized.
    curves: Any = cal.curves
    normalized = "metadata" in inspect.signature(curves).parameters
    if normalized:
        curve = curves(image.data, stddev=False, metadata=image.metadata)[0]
    else:
        curve = curves(image.data, stddev=False)[0]
    if curve.subtracted is not None:
        curve = curve.subtracted
    keep = np.asarray(curve.has_data) & (np.asarray(curve.x) > 0)
    if not keep.any():
        raise AbsoluteScaleError(f"{path}: no bin of the integrated curve holds data (all masked?)")
    measured = MeasuredCurve(np.asarray(curve.x)[keep], np.asarray(curve.intensity)[keep],
                             np.asarray(curve.poisson)[keep], str(path), raw, curve.unit)
    return measured, normalized


def _rescale_thickness(curve, thickness_mm: float, applied_from) -> str:
    """Put a curve on the standard's thickness (it was divided by the thickness of the
    calibration ``applied_from``, if any); a note for the report."""
    from saxsdog.reduction.absolute import applied_normalization, thickness_divisor

    _, applied = applied_normalization(applied_from)
    ratio = thickness_divisor(applied) / thickness_divisor(thickness_mm)
    curve.intensity = curve.intensity * ratio
    if curve.error is not None:
        curve.error = curve.error * ratio
    was = f"{applied:g} mm" if applied is not None else "none"
    return f"curve rescaled from the thickness it was normalized by ({was}) to {thickness_mm:g} mm"


_FILE_FIELDS = (("Masks", "*", "MaskFile"), ("Corrections", "DarkFile"), ("Corrections", "FlatFile"),
                ("Background", "File"))


def _rebase_paths(doc: dict[str, Any], source_dir: Path, out_dir: Path) -> None:
    """Relative file fields resolve against the calibration's folder: keep them pointing at the
    same files when the new calibration is written elsewhere."""
    if source_dir.resolve() == out_dir.resolve():
        return

    def visit(node: Any, parts: tuple[str, ...]) -> None:
        if not parts or node is None:
            return
        head, rest = parts[0], parts[1:]
        if head == "*":
            for item in node if isinstance(node, list) else []:
                visit(item, rest)
        elif isinstance(node, dict) and head in node:
            if not rest:
                value = node[head]
                if isinstance(value, str) and value and not os.path.isabs(value):
                    node[head] = str((source_dir / value).resolve())
            else:
                visit(node[head], rest)

    for fields in _FILE_FIELDS:
        visit(doc, fields)


def _write_calibration(base: Mapping[str, Any], source_dir: Path, scale: float, out: Path) -> Path:
    from saxsdog.config import CALIBRATION
    from saxsdog.io.atomic import atomic_write_bytes
    from saxsdog.reduction.absolute import with_absolute_scale

    loaded = CALIBRATION.load(with_absolute_scale(CALIBRATION.migrate(base), scale))
    doc = CALIBRATION.for_file(loaded)
    _rebase_paths(doc, source_dir, out.parent)
    atomic_write_bytes(out, (json.dumps(doc, indent=2) + "\n").encode())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``saxsdog absolute``; returns the exit code."""
    from saxsdog.errors import CalibrationError, SaxsdogError
    from saxsdog.reduction import absolute as ab

    args = build_parser().parse_args(argv)
    out = sys.stdout

    def fail(message: str, code: int = EXIT_FAILED) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return code

    if args.standard is None and args.temperature != 20.0:
        return fail("--temperature is for --standard water", EXIT_USAGE)
    if args.thickness_mm is not None and not args.thickness_mm > 0:
        return fail(f"--thickness-mm {args.thickness_mm:g}: a thickness must be positive", EXIT_USAGE)
    measurement = Path(args.measurement)
    if not measurement.exists():
        return fail(f"{measurement}: no such file", EXIT_USAGE)
    cal_raw: dict[str, Any] | None = None
    if args.calibration:
        try:
            cal_raw = json.loads(Path(args.calibration).read_text())
        except (OSError, ValueError) as exc:
            return fail(f"{args.calibration}: cannot read the calibration ({exc})", EXIT_USAGE)
    notes: list[str] = []
    try:
        if _is_curve_file(measurement):
            curve = ab.read_curve(measurement, args.frame)
            applied_from = curve.calibration  # what the curve's header says it was reduced with
        else:
            if not args.calibration:
                return fail(f"{measurement} is an image: give the calibration to integrate it with (-c CAL)",
                            EXIT_USAGE)
            curve, normalized = _curve_from_image(measurement, args.calibration, args.frame)
            applied_from = curve.calibration if normalized else None
        if args.thickness_mm is not None:
            notes.append(_rescale_thickness(curve, args.thickness_mm, applied_from))
        if args.standard == "water":
            fit = ab.fit_water(curve, args.temperature, tuple(args.q_range) if args.q_range else None)
        else:
            reference = ab.read_reference_table(args.reference, args.q_unit)
            fit = ab.fit_scale(curve, reference, tuple(args.q_range) if args.q_range else None)
    except SaxsdogError as exc:
        return fail(str(exc), EXIT_USAGE if isinstance(exc, CalibrationError) else EXIT_FAILED)
    fit.notes.extend(notes)
    already, _ = ab.applied_normalization(applied_from)
    scale = fit.factor * already
    print(fit.report(), file=out)
    print(f"AbsoluteScale: {scale:.6g} ± {fit.uncertainty * already:.2g}"
          + (f" (the factor × the AbsoluteScale {already:g} already applied to the curve)" if already != 1.0 else ""),
          file=out)
    if args.plot:
        from saxsdog.extras import MissingExtraError

        try:
            print(f"plot: {ab.plot_fit(fit, args.plot)}", file=out)
        except MissingExtraError as exc:
            print(f"{PROG}: the plot is skipped: {exc}", file=sys.stderr)
        except OSError as exc:
            return fail(f"{args.plot}: cannot write the plot ({exc.strerror or exc})")
    if args.out:
        base = cal_raw if cal_raw is not None else curve.calibration
        if not base:
            return fail(f"-o needs a calibration: {measurement} carries none in its header; give -c CAL",
                        EXIT_USAGE)
        source_dir = Path(args.calibration).resolve().parent if args.calibration else measurement.resolve().parent
        try:
            written = _write_calibration(base, source_dir, scale, Path(args.out))
        except SaxsdogError as exc:
            return fail(f"cannot write the calibration {args.out}: {exc}", EXIT_USAGE)
        except OSError as exc:
            return fail(f"{args.out}: {exc.strerror or exc}")
        print(f"calibration: {written} (Normalization.AbsoluteScale = {scale:.6g})", file=out)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
