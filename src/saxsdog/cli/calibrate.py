"""``saxsdog calibrate``: fit the detector geometry to the rings of a calibrant image.

No clicking and no starting geometry: the rings are found, their orders assigned and the
distance, beam centre, tilt and tilt rotation (FIT2D convention, as the calibration stores
them) refined; the result is written as a calibration, with a report and a picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from saxsdog.calibrate.calibrants import DETECTOR_PIXELS_UM
from saxsdog.calibrate.fit import MAX_HIDDEN_RING_FRACTION
from saxsdog.cli import report_error
from saxsdog.errors import SaxsdogError

PROG = "saxsdog calibrate"
EXIT_OK, EXIT_FIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Picture formats matplotlib writes, by file name ending.
PICTURE_FORMATS = frozenset({"png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Find the rings of a calibrant (silver behenate, LaB6, CeO2, ...) on IMAGE, assign "
                    "their orders and refine the detector distance, beam centre, tilt and tilt rotation "
                    "(optionally the wavelength); write the calibration, a report with residuals per "
                    "ring and parameter uncertainties, and a picture of the fitted rings. No starting "
                    "geometry is needed: dead/gap pixels (negative values) are excluded, and the "
                    "template's mask is used when one is given.",
        epilog="Examples:\n"
               "  saxsdog calibrate agbeh.tif --calibrant AgBh -o cal.json\n"
               "        wavelength from the image header, 172 µm pixels of a Pilatus\n"
               "  saxsdog calibrate agbeh.tif --calibrant AgBh -t old_cal.json -o cal.json \\\n"
               "        --report cal.txt --picture rings.png\n"
               "        keep old_cal.json's masks and other fields, use its mask for the fit\n"
               "  saxsdog calibrate lab6.cbf --calibrant LaB6 --wavelength 0.9537 --pixel 75 \\\n"
               "        --distance-mm 300 --refine-wavelength -o cal.json\n"
               "\nCalibrants are pyFAI's (AgBh, LaB6, CeO2, Si, alpha_Al2O3, Cr2O3, ...; "
               "--calibrant list shows them all).\n"
               "Wavelength: --wavelength, else the image header's, else the template's.\n"
               "Pixel size: --pixel, else the template's, else from the detector named in the header.\n"
               "Wavelength far off: too long, the rings cannot share one geometry (poor fit, exit 1);\n"
               "too short, at small angles it fits as well at a longer distance (distance times\n"
               "wavelength is what the rings fix): the result is written, with a warning when the\n"
               "wavelength is not the header's, or the distance is over 20% from --distance-mm.\n"
               "Exit codes: 0 calibration written; 1 no rings found or poor fit (nothing written);\n"
               "2 usage or input error.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", nargs="?", help="the calibrant image (TIFF, CBF, EDF, HDF5)")
    p.add_argument("--calibrant", required=True, metavar="NAME",
                   help="calibrant name as pyFAI spells it (AgBh, LaB6, CeO2, Si, ...); 'list' to list them")
    p.add_argument("--wavelength", type=float, metavar="Å", help="X-ray wavelength in Å")
    p.add_argument("--distance-mm", type=float, metavar="MM",
                   help="rough sample–detector distance, to rule out order assignments more than 1.6 times "
                        "from it; a fitted distance more than 20%% from it is warned about with the "
                        "wavelength that would fit it (a wrong wavelength shows as a wrong distance)")
    p.add_argument("--pixel", type=float, nargs="+", metavar="µm",
                   help="pixel size in µm (one value, or vertical and horizontal)")
    p.add_argument("-t", "--template", metavar="FILE",
                   help="calibration whose other fields (masks, slices, ...) the result keeps (relative "
                        "file names rewritten to resolve from the output's folder); its first mask is used "
                        "for the fit unless it hides more than a quarter of the rings (a mask drawn for an "
                        "old beamstop position): then the fit uses the image's own dead and gap pixels "
                        "only, with a warning")
    p.add_argument("--mask", metavar="FILE", help="mask for the fit instead of the template's (non-zero = masked); "
                                                  "always used")
    p.add_argument("-o", "--output", metavar="FILE", help="the calibration to write (JSON)")
    p.add_argument("--report", metavar="FILE", help="write the text report (residuals per ring, uncertainties) to FILE instead of "
                        "standard output")
    p.add_argument("--picture", metavar="FILE", help="also draw the image with the fitted rings and control "
                                                     "points (PNG, SVG, PDF; needs matplotlib)")
    p.add_argument("--refine-wavelength", action="store_true",
                   help="refine the wavelength too (needs rings at wide angles)")
    p.add_argument("--frame", type=int, default=0, metavar="N", help="frame of a multi-frame file (default 0)")
    p.add_argument("--max-rms", type=float, default=1.0, metavar="PX",
                   help="largest accepted RMS residual in pixels (default 1)")
    return p


def _pixel_size(args: argparse.Namespace, template: dict[str, Any] | None,
                metadata: dict[str, Any]) -> tuple[float, float]:
    if args.pixel:
        if len(args.pixel) > 2 or min(args.pixel) <= 0:
            raise ValueError(f"--pixel takes one or two positive sizes in µm, got {args.pixel}")
        return float(args.pixel[0]), float(args.pixel[-1])
    if template is not None:
        px = template["Geometry"]["PixelSizeMicroM"]
        return float(px[0]), float(px[-1])
    detector = str(metadata.get("detector", "")).upper()
    for family, size in DETECTOR_PIXELS_UM.items():
        if family in detector:
            return size, size
    raise ValueError("the pixel size is unknown (the image header names no known detector): give --pixel µm")


def _pixel_mismatch(pixel: tuple[float, float], metadata: dict[str, Any]) -> str:
    """A warning when the pixel size used is not that of the detector the header names: the
    distance scales with the pixel size exactly, so the rings cannot tell."""
    detector = str(metadata.get("detector", "")).upper()
    for family, size in DETECTOR_PIXELS_UM.items():
        if family in detector and any(abs(p / size - 1) > 0.01 for p in pixel):
            return (f"the pixel size {pixel[0]:g} x {pixel[1]:g} µm is not that of the {family.title()} the image "
                    f"header names ({size:g} µm): the distance scales with it (check which is right)")
    return ""


def _wavelength(args: argparse.Namespace, template: dict[str, Any] | None, metadata: dict[str, Any]) -> float:
    if args.wavelength is not None:
        if not args.wavelength > 0:
            raise ValueError(f"--wavelength must be positive, got {args.wavelength}")
        return float(args.wavelength)
    if metadata.get("wavelength"):
        return float(metadata["wavelength"])
    if template is not None:
        return float(template["Wavelength"])
    raise ValueError("the wavelength is unknown (not in the image header): give --wavelength Å")


def _header_distance(metadata: dict[str, Any]) -> float | None:
    """The sample–detector distance (mm) an image header gives, if any."""
    for key in ("distance_mm", "detector_distance_mm"):
        value = metadata.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _rebase_file_names(calibration: dict[str, Any], template_dir: Path, output_dir: Path) -> None:
    """Rewrite the relative file names the template took from its folder (masks, dark, flat,
    background) so that they name the same files from the output's folder."""
    def rebase(name: str) -> str:
        if not name or Path(name).is_absolute() or template_dir == output_dir:
            return name
        target = os.path.normpath(template_dir / name)
        if os.path.commonpath([target, str(output_dir)]) == os.path.sep:
            return target  # no folder in common: a relative name would climb to the root
        return os.path.relpath(target, output_dir)

    for entry in calibration.get("Masks", []):
        if isinstance(entry.get("MaskFile"), str):
            entry["MaskFile"] = rebase(entry["MaskFile"])
    for block, key in (("Corrections", "DarkFile"), ("Corrections", "FlatFile"), ("Background", "File")):
        section = calibration.get(block)
        if isinstance(section, dict) and isinstance(section.get(key), str):
            section[key] = rebase(section[key])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from saxsdog import calibrate as cal_fit

    try:
        if args.calibrant.lower() == "list":
            print("\n".join(cal_fit.calibrant_names()))
            return EXIT_OK
        name, d = cal_fit.d_spacings(args.calibrant)
    except cal_fit.CalibrantError as exc:
        report_error(PROG, exc)
        return EXIT_USAGE
    if not args.image or not args.output:
        print(f"{PROG}: error: IMAGE and -o FILE are needed; see saxsdog calibrate --help", file=sys.stderr)
        return EXIT_USAGE
    t0 = time.perf_counter()
    try:
        from saxsdog.config import CALIBRATION
        from saxsdog.io.images import read_image
        from saxsdog.io.masks import read_mask

        frame = read_image(args.image, args.frame)
        image = np.asarray(frame.data)
        metadata = dict(frame.metadata)
        template = raw_template = None
        mask = None
        template_mask_note = ""
        if args.template:
            raw_template = json.loads(Path(args.template).read_text())
            template = CALIBRATION.load(raw_template)
            size = template["Geometry"].get("ImageSize")
            if size and tuple(size) != image.shape:
                raise ValueError(f"{args.image} is {image.shape[0]}x{image.shape[1]} pixels, the template "
                                 f"{args.template} describes {size[0]}x{size[1]}")
            mask_file = template["Masks"][0]["MaskFile"] if template["Masks"] else ""
            if mask_file and not args.mask:
                path = Path(mask_file)
                if not path.is_absolute():
                    path = Path(args.template).resolve().parent / path
                mask = read_mask(path, image.shape)
                hidden = cal_fit.hidden_ring_fraction(image, mask)
                if hidden > MAX_HIDDEN_RING_FRACTION:
                    # the mask serves integration and was drawn for another beamstop or sector:
                    # fitted on what it leaves, centre, distance and tilt trade off and come out wrong
                    template_mask_note = (f"the template's mask {mask_file} hides {hidden:.0%} of the rings on "
                                          f"{Path(args.image).name} (drawn for another beamstop position?): the "
                                          "fit used the image's own dead and gap pixels instead; the calibration "
                                          "written keeps that mask: check it (or give --mask)")
                    mask = None
        if args.mask:
            mask = read_mask(args.mask, image.shape, "--mask")
        pixel = _pixel_size(args, template, metadata)
        wavelength = _wavelength(args, template, metadata)
        for option, target in (("-o", args.output), ("--report", args.report), ("--picture", args.picture)):
            # checked before the fit, and named: the atomic writer would only name its temporary file
            if target and target != "-" and not Path(target).resolve().parent.is_dir():
                raise ValueError(f"{option} {target}: the folder {Path(target).resolve().parent} does not exist")
        if args.picture and Path(args.picture).suffix.lower().lstrip(".") not in PICTURE_FORMATS:
            raise ValueError(f"--picture {args.picture}: give a file ending in "
                             f"{', '.join('.' + f for f in sorted(PICTURE_FORMATS))}")
        if args.distance_mm is not None and not args.distance_mm > 0:
            raise ValueError(f"--distance-mm must be positive, got {args.distance_mm}")
    except (OSError, ValueError, SaxsdogError) as exc:
        report_error(PROG, exc)
        return EXIT_USAGE
    if template_mask_note:
        print(f"{PROG}: warning: {template_mask_note}", file=sys.stderr)
    mismatch = cal_fit.wavelength_mismatch(wavelength, metadata.get("wavelength"))
    if mismatch:
        print(f"{PROG}: warning: {mismatch}", file=sys.stderr)
    pixel_note = _pixel_mismatch(pixel, metadata)
    if pixel_note:
        print(f"{PROG}: warning: {pixel_note}", file=sys.stderr)
    try:
        fit = cal_fit.fit_calibrant(image, d, wavelength, pixel, calibrant=name, mask=mask,
                                    distance_guess_mm=args.distance_mm, refine_wavelength=args.refine_wavelength,
                                    max_rms_px=args.max_rms)
    except cal_fit.CalibrationFitError as exc:
        if args.distance_mm is not None:
            # the guess rules out order assignments: it may be what ruled out the right one
            exc = cal_fit.CalibrationFitError(f"{exc} (with --distance-mm {args.distance_mm:g}, only distances "
                                              f"between {args.distance_mm / 1.6:.0f} and {args.distance_mm * 1.6:.0f} "
                                              "mm were tried: check it, or leave it out)")
        report_error(PROG, exc)
        return EXIT_FIT_FAILED
    if mismatch:
        fit.warnings.append(mismatch)
    # the rings fix distance times wavelength: a distance known otherwise tells a wrong wavelength
    distance_notes = [note for note in (
        cal_fit.distance_mismatch(fit.geometry.distance_mm, args.distance_mm, "--distance-mm", wavelength),
        cal_fit.distance_mismatch(fit.geometry.distance_mm, _header_distance(metadata), "the image header",
                                  wavelength)) if note]
    fit.warnings.extend(distance_notes[:1])
    if template_mask_note:
        fit.warnings.append(template_mask_note)
    if pixel_note:
        fit.warnings.append(pixel_note)
    title = f"{name} calibration from {Path(args.image).name}"
    calibration = cal_fit.calibration_from_fit(fit, raw_template, title=title)
    if args.template:
        _rebase_file_names(calibration, Path(args.template).resolve().parent, Path(args.output).resolve().parent)
    fit.elapsed_s = time.perf_counter() - t0
    report = cal_fit.report_text(fit, Path(args.image).name)
    try:
        from saxsdog.io.atomic import atomic_write_bytes, atomic_write_text

        atomic_write_bytes(args.output, (json.dumps(calibration, indent=4) + "\n").encode("utf-8"))
        if not args.report or args.report == "-":
            sys.stdout.write(report)
        elif args.report:
            atomic_write_text(args.report, report)
        if args.picture:
            cal_fit.save_picture(fit, image, args.picture, cal_fit.valid_pixels(image, mask))
    except (OSError, SaxsdogError, ImportError) as exc:
        report_error(PROG, exc)
        return EXIT_USAGE
    g = fit.geometry
    u = fit.uncertainties
    print(f"{PROG}: {name}, {fit.rings_used} rings, RMS {fit.rms_px:.3f} px: distance {g.distance_mm:.3f} ± "
          f"{u['DetectorDistanceMM']:.3f} mm, BeamCenter [{g.beam_center[0]:.3f}, {g.beam_center[1]:.3f}], "
          f"tilt {g.tilt_deg:.4f}° at {g.tilt_rotation_deg:.2f}°; wrote {args.output} "
          f"({fit.elapsed_s:.1f} s)", file=sys.stderr)
    for warning in fit.warnings:
        if warning not in (mismatch, template_mask_note, pixel_note):
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
