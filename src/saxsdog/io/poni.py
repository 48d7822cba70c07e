"""pyFAI PONI files <-> saxsdog calibration, through pyFAI's own geometry code.

Export builds a pyFAI ``AzimuthalIntegrator`` whose detector is a plain
``pyFAI.detectors.Detector`` with the calibration's pixel sizes and ``max_shape =
ImageSize``, sets the geometry with ``setFit2D`` and writes it with pyFAI's
``PoniFile``.  Import reads the file with ``PoniFile`` and converts its geometry with
:func:`poni_to_fit2d` (the formulas of pyFAI's ``getFit2D``, kept precise for small tilts).

The mapping between the calibration (FIT2D conventions, Y counted from the bottom edge)
and pyFAI (the image as read, row 0 at the top) is::

    setFit2D(directDist=DetectorDistanceMM, centerX=X, centerY=rows - Y,
             tilt=TiltAngleDeg, tiltPlanRotation=-TiltRotDeg,
             pixelX=horizontal µm, pixelY=vertical µm)
    wavelength = Wavelength * 1e-10  (m)

with ``BeamCenter = [Y, X]`` and ``ImageSize = [rows, cols]`` (field names in saxsdog's
spelling; :mod:`saxsdog.config` maps the original's).

Polarization is not part of a PONI file, but the two conventions differ: the
calibration's ``PolarizationCorrection`` ``Fraction`` F (of the beam polarized in the
plane at ``Angle`` A, degrees) is pyFAI's ``polarization_factor = 2F − 1``, and its Angle
is pyFAI's ``axis_offset = −A`` (in radians), so
``ai.polarization(factor=2 * F - 1, axis_offset=-math.radians(A))`` equals
:func:`saxsdog.core.operator.polarization_factor` (tested to 1e-6, pyFAI's float32).

Two things a PONI can say and a FIT2D geometry cannot: a rotation ``rot3`` other than the
one FIT2D's tilt implies (it turns the azimuth origin; 2θ and q are unaffected) and a
spline distortion file.  Both are reported with a warning on import and otherwise ignored.

Precision: a round trip calibration -> PONI -> calibration reproduces every field to about
1e-10 for tilts of 0.1° and more; imported values are rounded to ten significant digits, so
the round trip gives back the numbers as written (-0.56, not -0.5600000000003951).  For smaller tilts ``setFit2D`` derives ``rot1`` through
``acos`` of a number close to 1, so the tilt plane rotation read back can differ by some
1e-6° at a 0.001° tilt; the 2θ map is unaffected (differences below 1e-12 rad).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from saxsdog.config import calibration_field_path, calibration_image_size
from saxsdog.errors import CalibrationError
from saxsdog.io.atomic import atomic_write_bytes
from saxsdog.io.fit2d import CalibrationGeometry, default_calibration

__all__ = [
    "PoniError",
    "calibration_to_integrator",
    "calibration_to_poni",
    "calibration_to_poni_text",
    "poni_to_fit2d",
    "poni_to_calibration",
]

logger = logging.getLogger(__name__)

#: pyFAI detector orientations meaning "the image as read" (0 = unset, 3 = default).
_PLAIN_ORIENTATIONS = (0, 3)


class PoniError(ValueError):
    """A PONI file cannot be read or cannot be expressed as a calibration."""


def calibration_to_integrator(cal: Mapping[str, Any]):
    """Build the pyFAI ``AzimuthalIntegrator`` equivalent to a calibration.

    Parameters
    ----------
    cal
        A calibration dictionary (either spelling); it needs ``Geometry.ImageSize``.

    Returns
    -------
    pyFAI.integrator.azimuthal.AzimuthalIntegrator
        Geometry set with ``setFit2D`` for the image as read (row 0 at the top).

    Raises
    ------
    CalibrationError
        If the geometry is incomplete or malformed.
    """
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    geom = CalibrationGeometry.from_calibration(cal)
    kwargs = geom.pyfai_fit2d()
    # Divide (not multiply by 1e-6) so that round numbers such as 172 µm survive the trip.
    detector = Detector(pixel1=geom.pixel_v_um / 1e6, pixel2=geom.pixel_h_um / 1e6,
                        max_shape=(geom.rows, geom.cols))
    ai = AzimuthalIntegrator(detector=detector)
    ai.setFit2D(**kwargs)
    wavelength = cal.get("Wavelength")
    if isinstance(wavelength, (int, float)) and wavelength > 0:
        ai.wavelength = float(wavelength) * 1e-10  # Å -> m
    return ai


def calibration_to_poni_text(cal: Mapping[str, Any]) -> str:
    """Render a calibration as PONI text with pyFAI's ``PoniFile`` writer.

    See :func:`calibration_to_integrator` for the requirements on ``cal``.
    """
    import io

    from pyFAI.io.ponifile import PoniFile

    buffer = io.StringIO()
    PoniFile(calibration_to_integrator(cal)).write(buffer)
    return buffer.getvalue()


def calibration_to_poni(cal: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a calibration's geometry as a pyFAI PONI file.

    Parameters
    ----------
    cal
        A calibration dictionary with ``Geometry.ImageSize`` (either spelling).
    path
        Destination; replaced atomically if it exists (pyFAI's own ``Geometry.save``
        would append to it).

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    atomic_write_bytes(path, calibration_to_poni_text(cal).encode("utf-8"))
    return path


def _read_poni(path: str | os.PathLike[str]):
    """Read a PONI file with pyFAI's reader, rejecting files that are not one."""
    from pyFAI.io.ponifile import PoniFile

    path = Path(path)
    if not path.is_file():
        raise PoniError(f"{path}: no such file")
    try:
        poni = PoniFile(str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise PoniError(f"{path}: cannot read ({exc})") from None
    except Exception as exc:  # pyFAI raises assorted errors on bad content
        raise PoniError(f"{path}: not a valid PONI file ({type(exc).__name__}: {exc})") from None
    missing = [name for name, value in (("Distance", poni.dist), ("Poni1", poni.poni1),
                                        ("Poni2", poni.poni2), ("Rot1", poni.rot1),
                                        ("Rot2", poni.rot2))
               if value is None]
    if missing:
        raise PoniError(f"{path}: not a PONI file: missing {', '.join(missing)}")
    detector = poni.detector
    if detector is None or detector.pixel1 is None or detector.pixel2 is None:
        raise PoniError(f"{path}: the PONI file does not give the pixel size")
    orientation = int(getattr(detector, "orientation", 0) or 0)
    if orientation not in _PLAIN_ORIENTATIONS:
        raise PoniError(f"{path}: detector orientation {orientation} is not supported; "
                        "only the default orientation 3 (image as read) is")
    return poni


def poni_to_fit2d(poni) -> dict[str, float]:
    """FIT2D parameters of a pyFAI geometry (image as read, pyFAI's pixel coordinates).

    The formulas are those of pyFAI's ``convert_to_Fit2d`` (``Geometry.getFit2D``),
    written with ``atan2`` and ``hypot`` instead of ``acos`` and ``sqrt(1 - cos²)``: pyFAI's
    form loses about half the digits of a small tilt and ignores the tilt in ``centerY``
    below 1e-5° (up to 1e-3 pixels off at SAXS distances).  The tests check that both
    agree for ordinary tilts.

    Parameters
    ----------
    poni
        A ``pyFAI.io.ponifile.PoniFile`` or a pyFAI geometry (anything with ``dist``,
        ``poni1``, ``poni2``, ``rot1``, ``rot2`` and ``detector``).

    Returns
    -------
    dict
        ``directDist`` (mm), ``centerX``, ``centerY`` (pixels), ``tilt`` and
        ``tiltPlanRotation`` (degrees), as ``setFit2D`` takes them.
    """
    rot1, rot2 = poni.rot1, poni.rot2
    sin_cos_tpr = -math.sin(rot1) * math.cos(rot2)   # sin(tilt) cos(tilt plane rotation)
    sin_sin_tpr = math.sin(rot2)                      # sin(tilt) sin(tilt plane rotation)
    cos_tilt = math.cos(rot1) * math.cos(rot2)
    tilt = math.atan2(math.hypot(sin_cos_tpr, sin_sin_tpr), cos_tilt)
    tpr = math.atan2(sin_sin_tpr, sin_cos_tpr) if tilt else 0.0
    return {
        "directDist": 1e3 * poni.dist / cos_tilt,
        "centerX": (poni.poni2 + poni.dist * sin_cos_tpr / cos_tilt) / poni.detector.pixel2,
        "centerY": (poni.poni1 + poni.dist * sin_sin_tpr / cos_tilt) / poni.detector.pixel1,
        "tilt": math.degrees(tilt),
        "tiltPlanRotation": math.degrees(tpr),
    }


def _pick_tilt(tilt: float, rot: float, template_tilt: float, template_rot: float | None) -> tuple[float, float]:
    """Choose between the two equivalent tilt descriptions (t, r) and (-t, r + 180°).

    The sign of the tilt follows the template's (positive if the template has none) and
    the rotation is taken in the 360° branch nearest the template's rotation, or in
    (-180°, 180°] without one.  A zero tilt keeps the template's rotation, which is then
    meaningless but harmless.
    """
    if tilt == 0.0:
        return 0.0, template_rot if template_rot is not None else 0.0
    if template_tilt < 0:
        tilt, rot = -tilt, rot + 180.0
    if template_rot is None:
        rot = rot - 360.0 * math.ceil((rot - 180.0) / 360.0)
    else:
        rot = rot + 360.0 * round((template_rot - rot) / 360.0)
    return tilt, rot


#: Relative rounding noise of the PONI -> FIT2D conversion (trigonometry in doubles, about
#: 1e-12 measured on cal.json); imported values keep the digits above it.
_CONVERSION_PRECISION = 1e-10


def _round_to(value: float, step: float) -> float:
    """``value`` rounded to the decimal place of ``step`` (the digit at or just below it)."""
    if step <= 0.0 or not math.isfinite(step) or not math.isfinite(value):
        return value
    return round(value, -math.floor(math.log10(step))) + 0.0  # + 0.0: never -0.0


def _precise(value: float, reference: float | None = None) -> float:
    """``value`` without the conversion's noise: ten significant digits (of ``reference``).

    A PONI file holds doubles (pyFAI writes up to 17 digits; a short number such as 0.2
    is exact), so the precision of the input is that of a double, of which the conversion
    keeps about ten digits: ``-0.5600000000003951`` degrees becomes ``-0.56``, and the 2θ
    map moves by less than 1e-11 rad.  ``reference`` is the quantity whose digits count
    when ``value`` is derived from it by adding an integer (``rows - Y``).
    """
    base = value if reference is None else reference
    return _round_to(value, abs(base) * _CONVERSION_PRECISION)


def poni_to_calibration(path: str | os.PathLike[str], template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a pyFAI PONI file into a calibration.

    Parameters
    ----------
    path
        The PONI file.
    template
        Calibration providing everything the PONI file does not (masks, options, the
        wavelength and image size if the file lacks them); :func:`default_calibration`
        if ``None``.  It is not modified.  It also decides between the two equivalent
        descriptions of a tilt, see :func:`_pick_tilt`.

    Returns
    -------
    dict
        The template with the PONI geometry.

    Raises
    ------
    PoniError
        If the file is not a PONI file or uses a detector orientation other than the
        default.
    CalibrationError
        If neither the file nor the template gives the image size.
    """
    from pyFAI.geometry.fit2d import convert_from_Fit2d

    poni = _read_poni(path)
    template = default_calibration() if template is None else template
    try:
        old = CalibrationGeometry.from_calibration(template)
    except CalibrationError:
        old = None  # an incomplete template only lacks a tilt preference

    detector = poni.detector
    shape = detector.shape or detector.max_shape or calibration_image_size(template)
    if shape is None:
        raise CalibrationError("the PONI file gives no detector shape and the template no image size",
                               calibration_field_path(template, "Geometry", "ImageSize"), None,
                               "[rows, columns]")
    rows, cols = int(shape[0]), int(shape[1])

    f2d = poni_to_fit2d(poni)
    rot3, expected_rot3 = poni.rot3 or 0.0, convert_from_Fit2d(dict(f2d, detector=detector)).rot3
    if abs(math.remainder(rot3 - expected_rot3, 2 * math.pi)) > 1e-9:
        logger.warning("%s: rot3 = %.9g rad differs from the FIT2D geometry's %.9g rad; the azimuth origin "
                       "(Phi-mode, polarization) will differ by %.6g degrees, 2theta and q are unaffected",
                       path, rot3, expected_rot3, math.degrees(rot3 - expected_rot3))
    if detector.splinefile:
        logger.warning("%s: the spline distortion file %s is ignored", path, detector.splinefile)

    f2d = {key: _precise(value) for key, value in f2d.items()}
    tilt_angle, tilt_rot = _pick_tilt(
        f2d["tilt"], -f2d["tiltPlanRotation"],
        old.tilt_angle_deg if old is not None else 0.0,
        old.tilt_rot_deg if old is not None else None,
    )
    geometry = CalibrationGeometry(
        beam_x=f2d["centerX"],
        beam_y=_precise(rows - f2d["centerY"], f2d["centerY"]),
        distance_mm=f2d["directDist"],
        pixel_v_um=_precise(detector.pixel1 * 1e6),  # 171.99999999999997 -> 172.0
        pixel_h_um=_precise(detector.pixel2 * 1e6),
        tilt_angle_deg=_precise(tilt_angle),
        tilt_rot_deg=_precise(tilt_rot),
        rows=rows,
        cols=cols,
        wavelength_A=_precise(poni.wavelength * 1e10) if poni.wavelength else None,
    )
    return geometry.apply_to(template)
