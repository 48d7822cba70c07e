"""Nika (Igor Pro) geometry -> saxsdog calibration.

Nika describes a calibration by the beam centre ``BeamCenterX`` / ``BeamCenterY`` in
pixels, the sample to detector distance ``SampleToCCDDistance`` in mm, the
``Wavelength`` in Å (or ``XrayEnergy`` in keV), the pixel sizes ``PixelSizeX`` /
``PixelSizeY`` in mm and two tilts, ``HorizontalTilt`` and ``VerticalTilt``, in degrees.

Conventions assumed here
------------------------
* Pixel coordinates are those of the image as read (row 0 at the top): X is the column,
  Y the row counted from the top edge, and a pixel's centre sits at its integer index
  (Igor point scaling).  FIT2D and pyFAI put the centre of pixel ``i`` at ``i + 0.5``,
  hence ``X_fit2d = BeamCenterX + 0.5`` and ``Y_fit2d = rows - (BeamCenterY + 0.5)``
  (FIT2D counts Y from the bottom edge).
* The tilt model is Nika's (``NI2T_DetectorUpdateCalc`` and
  ``NI2T_CalculatePxPyWithTilts`` in ``NI1_ConvProc.ipf``, as ported to Python in
  ``pynika/geometry.py`` of github.com/jilavsky/pynika): a detector-plane vector
  ``u = (x, y, 0)`` (x along columns, y along rows, beam along +z) is rotated by the
  Rodrigues rotation with rotation vector ``(VerticalTilt, HorizontalTilt, 0)`` (radians):
  angle ``|R|`` about the in-plane axis ``R/|R|``.  The distance
  ``SampleToCCDDistance`` runs along the beam to the beam centre.

Conversion to FIT2D
-------------------
A rotation about an axis lying in the detector plane is exactly FIT2D's tilt, so the
conversion is exact, not a small-angle approximation.  With ``Ht``, ``Vt`` the tilts and
``θ = hypot(Ht, Vt)``, Rodrigues' formula moves the in-plane unit vector ``u`` by
``-sin θ (Ht u_col - Vt u_row) / θ`` along the beam.  Written with the azimuth ``ψ``
counted counter-clockwise from +X with Y pointing up (FIT2D's frame, ``u_row = -sin ψ``)
this is ``sin θ cos(ψ - (atan2(Vt, Ht) + 180°))``, which is FIT2D's
``sin(tilt) cos(ψ - rotation)`` (the convention of :mod:`saxsdog.core.geometry`) with::

    TiltAngleDeg = hypot(HorizontalTilt, VerticalTilt)
    TiltRotDeg   = atan2(VerticalTilt, HorizontalTilt) + 180°  (brought into (-180°, 180°])

The tests check this against a direct evaluation of Nika's ring-position formula
(``NI2T_CalculatePxPyWithTilts``) through pyFAI's geometry.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saxsdog.config import calibration_field_path, calibration_image_size
from saxsdog.errors import CalibrationError
from saxsdog.io.fit2d import default_calibration, update_geometry

__all__ = ["NikaError", "nika_to_calibration", "parse_nika", "read_nika_file", "nika_tilts_to_fit2d"]

#: h·c in keV·Å, to convert an X-ray energy to a wavelength.
HC_KEV_ANGSTROM = 12.398419843320026

#: Accepted spellings (lower case, without ``_``, ``-`` or spaces) -> canonical Nika name.
_ALIASES: dict[str, str] = {
    "beamcenterx": "BeamCenterX", "bcx": "BeamCenterX",
    "beamcentery": "BeamCenterY", "bcy": "BeamCenterY",
    "sampletoccddistance": "SampleToCCDDistance", "sdd": "SampleToCCDDistance",
    "distance": "SampleToCCDDistance",
    "wavelength": "Wavelength",
    "xrayenergy": "XrayEnergy", "energy": "XrayEnergy",
    "pixelsizex": "PixelSizeX", "pixelsizey": "PixelSizeY", "pixelsize": "PixelSize",
    "horizontaltilt": "HorizontalTilt", "hortilt": "HorizontalTilt",
    "verticaltilt": "VerticalTilt", "verttilt": "VerticalTilt",
}

_REQUIRED = ("BeamCenterX", "BeamCenterY", "SampleToCCDDistance")


class NikaError(ValueError):
    """Nika values are missing, unknown or invalid."""


def _canonical(key: str) -> str | None:
    return _ALIASES.get(re.sub(r"[\s_\-]", "", key).lower())


def parse_nika(items: Mapping[str, Any] | list[str] | str) -> dict[str, float]:
    """Collect Nika values from ``KEY=VALUE`` pairs.

    Parameters
    ----------
    items
        A mapping, a list of ``"KEY=VALUE"`` strings, or a text with pairs separated by
        ``;``, commas or line breaks (Igor's wave-note style ``BeamCenterX=512.3;...``;
        ``KEY: VALUE`` lines are accepted as well).  Keys are case-insensitive; short
        forms such as ``bcx``, ``sdd``, ``hortilt`` and ``PixelSize`` (both axes) work.
        Unknown keys in a text are ignored (a Nika wave note holds much more); unknown
        keys given explicitly as a mapping or list are an error.

    Returns
    -------
    dict
        Canonical Nika names -> values.

    Raises
    ------
    NikaError
        On a malformed pair, an unknown explicit key or a non-numeric value.
    """
    strict = not isinstance(items, str)
    if isinstance(items, str):
        pairs = [p for p in re.split(r"[;,\n\r]+", items) if p.strip() and not p.lstrip().startswith("#")]
    elif isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        pairs = list(items)
    values: dict[str, float] = {}
    for pair in pairs:
        if isinstance(pair, tuple):
            key, raw = pair
        else:
            match = re.match(r"^\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$", pair)
            if not match:
                if strict:
                    raise NikaError(f"expected KEY=VALUE, got {pair!r}")
                continue
            key, raw = match.groups()
        name = _canonical(key)
        if name is None:
            if strict:
                known = sorted(set(_ALIASES.values()))
                raise NikaError(f"unknown Nika parameter {key!r}; known: {', '.join(known)}")
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise NikaError(f"{key}: not a number: {raw!r}") from None
        if not math.isfinite(value):
            raise NikaError(f"{key}: not a finite number: {raw!r}")
        values[name] = value
    if "PixelSize" in values:
        size = values.pop("PixelSize")
        values.setdefault("PixelSizeX", size)
        values.setdefault("PixelSizeY", size)
    return values


def read_nika_file(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read ``KEY=VALUE`` pairs from a text file (see :func:`parse_nika`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise NikaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    values = parse_nika(text)
    if not values:
        raise NikaError(f"{path}: no Nika parameters found (expected lines such as BeamCenterX=512.3)")
    return values


def nika_tilts_to_fit2d(horizontal_deg: float, vertical_deg: float) -> tuple[float, float]:
    """Convert Nika's two tilts to the calibration's ``(TiltAngleDeg, TiltRotDeg)``.

    Exact for Nika's model (a single rotation about an in-plane axis, see the module
    docstring); zero tilts give ``(0.0, 0.0)``.
    """
    angle = math.hypot(horizontal_deg, vertical_deg)
    if angle == 0.0:
        return 0.0, 0.0
    rotation = math.degrees(math.atan2(vertical_deg, horizontal_deg)) + 180.0
    return angle, rotation - 360.0 if rotation > 180.0 else rotation


def nika_to_calibration(values: Mapping[str, Any] | list[str] | str,
                        template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Convert Nika geometry values into a calibration.

    Parameters
    ----------
    values
        Nika values, in any form :func:`parse_nika` accepts.  ``BeamCenterX``,
        ``BeamCenterY`` and ``SampleToCCDDistance`` are required; the wavelength (or
        energy), pixel sizes and tilts default to the template's (tilts to zero).
    template
        Calibration to update (masks, options, image size); :func:`default_calibration`
        if ``None``.  Its image size (``Geometry.ImageSize``, in either spelling) is needed
        to count Y from the bottom edge.

    Returns
    -------
    dict
        The updated calibration.

    Raises
    ------
    NikaError
        On missing or invalid values.
    CalibrationError
        If the template has no usable image size.
    """
    nika = parse_nika(values)
    missing = [k for k in _REQUIRED if k not in nika]
    if missing:
        raise NikaError(f"missing Nika parameter(s): {', '.join(missing)}")
    for key in ("SampleToCCDDistance", "Wavelength", "XrayEnergy", "PixelSizeX", "PixelSizeY"):
        if key in nika and nika[key] <= 0:
            raise NikaError(f"{key} must be positive, got {nika[key]}")

    template = default_calibration() if template is None else template
    size = calibration_image_size(template)
    if size is None:
        raise CalibrationError("missing", calibration_field_path(template, "Geometry", "ImageSize"), None,
                               "[rows, columns]: needed to count Nika's Y from the bottom edge")
    rows = size[0]

    tilt_angle, tilt_rot = nika_tilts_to_fit2d(nika.get("HorizontalTilt", 0.0), nika.get("VerticalTilt", 0.0))
    wavelength = nika.get("Wavelength")
    if wavelength is None and "XrayEnergy" in nika:
        wavelength = HC_KEV_ANGSTROM / nika["XrayEnergy"]
    update = {
        "beam_x": nika["BeamCenterX"] + 0.5,
        "beam_y": rows - (nika["BeamCenterY"] + 0.5),
        "distance_mm": nika["SampleToCCDDistance"],
        "tilt_angle_deg": tilt_angle,
        "tilt_rot_deg": tilt_rot,
        "pixel_h_um": nika["PixelSizeX"] * 1000.0 if "PixelSizeX" in nika else None,
        "pixel_v_um": nika["PixelSizeY"] * 1000.0 if "PixelSizeY" in nika else None,
        "wavelength_A": wavelength,
    }
    return update_geometry(template, update)
