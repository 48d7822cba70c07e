"""``saxsconverter``: FIT2D, Nika or PONI geometry -> saxsdog calibration (and back to PONI).

Examples::

    saxsconverter calibration.txt cal.json             # FIT2D output into a new calibration
    saxsconverter -t template.json calibration.txt -o cal.json
    saxsconverter old.saxsconf cal.json                # fields of an older calibration
    saxsconverter --nika BeamCenterX=412.3 BeamCenterY=250.7 SampleToCCDDistance=300 \\
                  PixelSize=0.172 Wavelength=1.0 -t template.json -o cal.json
    saxsconverter --from-poni pyfai.poni -t template.json -o cal.json
    saxsconverter -t cal.json --to-poni cal.poni       # export for pyFAI

If the output calibration already exists and no template is given, it serves as the
template: the converted values are added to it or updated in place.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from saxsdog.calibration import calibration_for_file, validate_calibration
from saxsdog.cli import report_error
from saxsdog.config import calibration_field_path, calibration_in_saxsdog_spellings
from saxsdog.io.atomic import atomic_write_bytes
from saxsdog.io.fit2d import (
    CalibrationGeometry,
    default_calibration,
    fit2d_to_calibration,
    merge_calibration,
    parse_fit2d,
)

PROG = "saxsconverter"
EXIT_USAGE = 2


class UserError(Exception):
    """An error in the user's input: reported in one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``saxsconverter``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Convert a detector calibration into a saxsdog calibration file (JSON). The input is "
            "the text FIT2D prints after a calibration (the 'INFO: Refined ...' or 'INFO: Best fit "
            "...' lines) or a FIT2D integration macro, an older calibration JSON, Nika values (--nika) or a pyFAI PONI "
            "file (--from-poni). The result can also be exported as a PONI file (--to-poni)."),
        epilog=(
            "Values the input does not give (masks, image size, options, ...) come from the\n"
            "template: -t FILE, else the existing OUTPUT file, else a minimal calibration for\n"
            "the Pilatus 1M (1043 x 981 pixels of 172 um) without masks. Without an output file\n"
            "and without --to-poni the calibration is printed; without a template, the fields\n"
            "taken from that minimal calibration are named.\n\n"
            "Examples:\n"
            "  saxsconverter calibration.txt cal.json        FIT2D 'Refined'/'Best fit' lines into a new file\n"
            "  saxsconverter -t template.json calibration.txt -o cal.json\n"
            "  saxsconverter old.saxsconf cal.json           fields of an older calibration\n"
            "  saxsconverter --nika BeamCenterX=412.3 BeamCenterY=250.7 SampleToCCDDistance=300 \\\n"
            "                PixelSize=0.172 Wavelength=1.0 -t template.json -o cal.json\n"
            "  saxsconverter --from-poni pyfai.poni -t template.json -o cal.json\n"
            "  saxsconverter -t cal.json --to-poni cal.poni  export for pyFAI"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", metavar="INPUT",
                        help="FIT2D calibration text or macro, or an older calibration JSON")
    parser.add_argument("output", nargs="?", metavar="OUTPUT",
                        help="calibration JSON to write (same as -o)")
    parser.add_argument("-t", "--template", metavar="FILE",
                        help="calibration file which serves as template")
    parser.add_argument("-o", "--output", dest="output_option", metavar="FILE",
                        help="calibration JSON to write")
    parser.add_argument("--nika", nargs="+", metavar="KEY=VALUE|FILE",
                        help="Nika geometry as KEY=VALUE pairs (BeamCenterX, BeamCenterY [pixels, Y from "
                             "the top], SampleToCCDDistance [mm], Wavelength [A] or XrayEnergy [keV], "
                             "PixelSizeX, PixelSizeY or PixelSize [mm], HorizontalTilt, VerticalTilt "
                             "[deg]) and/or files holding such pairs")
    parser.add_argument("--from-poni", metavar="FILE", help="read the geometry from a pyFAI PONI file")
    parser.add_argument("--to-poni", metavar="FILE", help="also write the geometry as a pyFAI PONI file")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not report what was written")
    return parser


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None


def _read_calibration(path: str, what: str) -> dict[str, Any]:
    text = _read_text(path, what)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{what} {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: a calibration must be a JSON object, got {type(data).__name__}")
    return data


#: A field of a calibration: the keys leading to it, in saxsdog's spelling.
Field = tuple[str, ...]

_DISTANCE: Field = ("Geometry", "DetectorDistanceMM")
_IMAGE_SIZE: Field = ("Geometry", "ImageSize")
_PIXEL_SIZE: Field = ("Geometry", "PixelSizeMicroM")
_WAVELENGTH: Field = ("Wavelength",)

#: Fields of the default calibration worth telling the user about when they are used.
_DEFAULTED: tuple[Field, ...] = (_DISTANCE, _IMAGE_SIZE, _PIXEL_SIZE, _WAVELENGTH, ("Masks",))


def _json_has(data: dict[str, Any], field: Field) -> bool:
    """Whether a calibration as written (either spelling) has ``field``."""
    node: Any = calibration_in_saxsdog_spellings(data)
    for part in field:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _field_name(calibration: dict[str, Any], field: Field) -> str:
    """``Geometry.ImageSize`` spelled as in ``calibration`` (the original's if absent)."""
    return calibration_field_path(calibration, *field).removeprefix("$.")


def _convert(args: argparse.Namespace, template: dict[str, Any],
             from_default: bool) -> tuple[dict[str, Any], set[Field]]:
    """The converted calibration and which of :data:`_DEFAULTED` the input itself gave."""
    if args.input is not None:
        text = _read_text(args.input, "input")
        try:
            data = json.loads(text)
        except ValueError:
            found = parse_fit2d(text)
            given = {_PIXEL_SIZE} if {"pixel_h_um", "pixel_v_um"} <= found.keys() else set()
            given |= {_WAVELENGTH} if "wavelength_A" in found else set()
            given |= {_DISTANCE} if "distance_mm" in found else set()
            return fit2d_to_calibration(text, template), given
        if not isinstance(data, dict):
            raise UserError(f"input {args.input}: JSON but not a calibration object")
        return merge_calibration(template, data), {f for f in _DEFAULTED if _json_has(data, f)}
    if args.nika:
        from saxsdog.io.nika import nika_to_calibration, parse_nika, read_nika_file

        values: dict[str, float] = {}
        for item in args.nika:
            values.update(parse_nika([item]) if "=" in item else read_nika_file(item))
        keys = {k.lower() for k in values}
        given = {_WAVELENGTH} if keys & {"wavelength", "xrayenergy"} else set()
        given |= {_DISTANCE} if "sampletoccddistance" in keys else set()
        if "pixelsize" in keys or {"pixelsizex", "pixelsizey"} <= keys:
            given.add(_PIXEL_SIZE)
        return nika_to_calibration(values, template), given
    if args.from_poni:
        from saxsdog.io.poni import poni_to_calibration

        text = _read_text(args.from_poni, "PONI file")
        given = {_PIXEL_SIZE, _DISTANCE}
        given |= {_WAVELENGTH} if re.search(r"^\s*wavelength\s*:", text, re.IGNORECASE | re.MULTILINE) else set()
        given |= {_IMAGE_SIZE} if re.search(r"max_shape|^\s*(?:detector_)?shape", text, re.IGNORECASE | re.MULTILINE) else set()
        return poni_to_calibration(args.from_poni, template), given
    if from_default:
        raise UserError("nothing to convert: give INPUT, --nika or --from-poni "
                        "(or -t CALIBRATION with --to-poni to export it)")
    return template, set(_DEFAULTED)


def _summary(cal: dict[str, Any]) -> str:
    g = CalibrationGeometry.from_calibration(cal)
    return (f"BeamCenter [Y={g.beam_y:.6g}, X={g.beam_x:.6g}] px, distance {g.distance_mm:.7g} mm, "
            f"tilt {g.tilt_angle_deg:.6g} deg at {g.tilt_rot_deg:.6g} deg, "
            f"pixels {g.pixel_v_um:.6g} x {g.pixel_h_um:.6g} um, wavelength {g.wavelength_A} A")


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed command line; raises :class:`UserError` or ``ValueError`` on bad input."""
    if args.input is not None and args.output is None and (args.nika or args.from_poni):
        args.input, args.output = None, args.input  # "--from-poni X.poni OUT.json"
    sources = [name for name, given in (("INPUT", args.input is not None), ("--nika", bool(args.nika)),
                                        ("--from-poni", bool(args.from_poni))) if given]
    if len(sources) > 1:
        raise UserError(f"give only one input, not {' and '.join(sources)}")
    if args.output and args.output_option and args.output != args.output_option:
        raise UserError(f"two different outputs given: {args.output} and -o {args.output_option}")
    output = args.output_option or args.output

    from_default = False
    if args.template:
        template = _read_calibration(args.template, "template")
    elif output and Path(output).is_file():
        template = _read_calibration(output, "existing output")
    else:
        template, from_default = default_calibration(), True

    cal, given = _convert(args, template, from_default)
    validate_calibration(cal)  # CalibrationError naming the JSON path
    cal = calibration_for_file(cal)  # the original's spellings, so the original reads the file

    if output:
        atomic_write_bytes(output, (json.dumps(cal, indent=4) + "\n").encode("utf-8"))
    if args.to_poni:
        from saxsdog.io.poni import calibration_to_poni

        calibration_to_poni(cal, args.to_poni)
    if not output and not args.to_poni:
        print(json.dumps(cal, indent=4))
    defaulted = [_field_name(template, f) for f in _DEFAULTED if f not in given]
    if from_default and not args.quiet and defaulted:
        # A complete calibration as INPUT needs no template: nothing came from the default.
        print(f"{PROG}: no template given: {', '.join(defaulted)} taken from the default calibration "
              "(a Pilatus 1M of 1043 x 981 pixels of 172 um, no masks); use -t to choose",
              file=sys.stderr)
    if not args.quiet:
        written = " and ".join(str(p) for p in (output, args.to_poni) if p)
        if written:
            print(f"{PROG}: wrote {written}: {_summary(cal)}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saxsconverter``; returns the exit code (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return int(exc.code or 0)
    try:
        return run(args)
    except (UserError, ValueError, OSError) as exc:
        # CalibrationError, Fit2DParseError, NikaError and PoniError are ValueErrors.
        report_error(PROG, exc)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
