"""FIT2D calibration results -> saxsdog calibration.

FIT2D reports a refined powder calibration as ``INFO:`` lines, e.g.::

    INFO: Refined Beam centre =      387.772     808.370 (pixels)
    INFO: Refined sample to detector distance =     1031.657 mm
    INFO: Refined wavelength =      1.54000 Angstroms
    INFO: Refined tilt plane rotation angle =       73.569 degrees
    INFO: Refined tilt angle =       -0.560 degrees

and its integration macros (``.mac``) carry the same numbers as keyword/value line
pairs (``X-BEAM CENTRE`` / ``387.772``, ``X-PIXEL SIZE`` / ``172.0000``, ...).  Both
layouts are understood; the word "Refined" is optional.  When a quantity appears several
times (a log of successive refinements) the last occurrence wins.

The saxsdog calibration uses FIT2D's conventions unchanged, so the numbers are copied,
not transformed: ``BeamCenter = [Y, X]`` (Y counted from the bottom edge, X from the
left edge, pixels), ``Tilt.TiltRotDeg`` / ``Tilt.TiltAngleDeg`` in degrees,
``DetectorDistanceMM`` in mm, ``PixelSizeMicroM = [vertical (Y), horizontal (X)]`` in µm
and ``Wavelength`` in Å.

This module also holds :class:`CalibrationGeometry`, the geometry part of a calibration
dictionary; the PONI and Nika converters build on it.

Field names here are saxsdog's (``DetectorDistanceMM``, ``ImageSize``).  Calibrations are
read and written in whichever spelling they use: :mod:`saxsdog.config` maps the original
SAXSDOG's spellings, and a template keeps its own (``CALIBRATION.file_key``).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from saxsdog.config import (
    CALIBRATION,
    calibration_field_path,
    calibration_image_size,
    calibration_in_saxsdog_spellings,
)
from saxsdog.errors import CalibrationError

__all__ = [
    "CalibrationGeometry",
    "Fit2DParseError",
    "default_calibration",
    "fit2d_to_calibration",
    "merge_calibration",
    "parse_fit2d",
    "read_image_size",
    "update_geometry",
]

#: Keys of the values :func:`parse_fit2d` returns, with what each one is.
FIELD_DESCRIPTIONS: dict[str, str] = {
    "beam_x": "beam centre X (pixels from the left edge)",
    "beam_y": "beam centre Y (pixels from the bottom edge)",
    "distance_mm": "sample to detector distance (mm)",
    "wavelength_A": "wavelength (Å)",
    "tilt_rot_deg": "tilt plane rotation (degrees)",
    "tilt_angle_deg": "tilt angle (degrees)",
    "pixel_h_um": "horizontal (X) pixel size (µm)",
    "pixel_v_um": "vertical (Y) pixel size (µm)",
}

#: The object holding the geometry fields, as :data:`saxsdog.config.CALIBRATION_SPELLINGS`
#: names it.
_GEOMETRY = ("Geometry",)

#: The template used without one, in saxsdog's spellings (:func:`default_calibration` gives
#: it in the file's, the original's).
_DEFAULT_CALIBRATION: dict[str, Any] = {
    "Title": "Converted calibration",
    "Geometry": {
        "Tilt": {"TiltAngleDeg": 0.0, "TiltRotDeg": 0.0},
        "DetectorDistanceMM": 1000.0,
        "BeamCenter": [800.0, 400.0],
        # The detector of the original beamline (Pilatus 1M); a template given by
        # the user replaces it.
        "ImageSize": [1043, 981],
        "PixelSizeMicroM": [172.0, 172.0],
    },
    "Directory": [],
    "Masks": [],
    "Slices": [],
    "GISAXSmode": False,
    "Wavelength": 1.54,
    "Live-Filelisting": True,
    "OverwriteFiles": True,
    "Threads": 2,
}


class Fit2DParseError(ValueError):
    """The text holds no usable FIT2D calibration values."""


def default_calibration() -> dict[str, Any]:
    """Return a fresh copy of the minimal valid calibration used when no template is given.

    Its geometry is that of the original beamline's Pilatus 1M (1043 × 981 pixels of
    172 µm); it has no masks.  Its fields are spelled as the original SAXSDOG writes them
    (:meth:`saxsdog.config.Normalizer.for_file`), so a converted file keeps that spelling.
    """
    return CALIBRATION.for_file(_DEFAULT_CALIBRATION)


# --------------------------------------------------------------------------------------
# The geometry part of a calibration dictionary
# --------------------------------------------------------------------------------------


def _number(value: Any, path: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CalibrationError("not a finite number", path, value, "a number")
    if positive and value <= 0:
        raise CalibrationError("must be positive", path, value, "a number > 0")
    return float(value)


def read_image_size(cal: Mapping[str, Any]) -> tuple[int, int] | None:
    """Return ``Geometry.ImageSize`` (in any spelling) as ``(rows, cols)``, ``None`` if absent.

    The same as :func:`saxsdog.config.calibration_image_size`.

    Raises
    ------
    CalibrationError
        If the field is present but not two positive integers (the path spelled as in
        ``cal``).
    """
    return calibration_image_size(cal)


@dataclass(frozen=True)
class CalibrationGeometry:
    """Geometry of a saxsdog calibration, in FIT2D conventions.

    Parameters
    ----------
    beam_x
        Beam centre X in pixels from the left image edge (``BeamCenter[1]``).
    beam_y
        Beam centre Y in pixels from the bottom image edge (``BeamCenter[0]``).
    distance_mm
        Sample to beam-centre distance along the beam (``DetectorDistanceMM``).
    pixel_v_um, pixel_h_um
        Vertical and horizontal pixel size in µm (``PixelSizeMicroM``).
    tilt_angle_deg, tilt_rot_deg
        ``Tilt.TiltAngleDeg`` and ``Tilt.TiltRotDeg``.
    rows, cols
        Image size (``ImageSize``), or ``None`` if the calibration has none.
    wavelength_A
        ``Wavelength`` in Å, or ``None`` if the calibration has none.
    """

    beam_x: float
    beam_y: float
    distance_mm: float
    pixel_v_um: float
    pixel_h_um: float
    tilt_angle_deg: float = 0.0
    tilt_rot_deg: float = 0.0
    rows: int | None = None
    cols: int | None = None
    wavelength_A: float | None = None

    @classmethod
    def from_calibration(cls, cal: Mapping[str, Any]) -> "CalibrationGeometry":
        """Read the geometry of a calibration dictionary.

        Accepts either spelling of the distance and the image size (see
        :mod:`saxsdog.config`), a single pixel size (square pixels) and a missing ``Tilt``
        (no tilt).

        Raises
        ------
        CalibrationError
            Naming the JSON path of a missing or invalid field, spelled as in ``cal``.
        """
        if not isinstance(cal, Mapping):
            raise CalibrationError("a calibration must be a JSON object", "$", type(cal).__name__, "an object")
        geo = calibration_in_saxsdog_spellings(cal).get("Geometry")
        if not isinstance(geo, Mapping):
            raise CalibrationError("missing or not an object", "$.Geometry", geo, "an object")

        centre = geo.get("BeamCenter")
        if not isinstance(centre, (list, tuple)) or len(centre) != 2:
            raise CalibrationError("missing or malformed", "$.Geometry.BeamCenter", centre, "[Y, X] in pixels")
        beam_y = _number(centre[0], "$.Geometry.BeamCenter[0]")
        beam_x = _number(centre[1], "$.Geometry.BeamCenter[1]")

        distance_path = calibration_field_path(cal, "Geometry", "DetectorDistanceMM")
        if "DetectorDistanceMM" not in geo:
            raise CalibrationError("missing", distance_path, None, "the distance in mm")
        distance = _number(geo["DetectorDistanceMM"], distance_path, positive=True)

        pixel = geo.get("PixelSizeMicroM")
        if isinstance(pixel, (int, float)) and not isinstance(pixel, bool):
            pixel = [pixel]
        if not isinstance(pixel, (list, tuple)) or len(pixel) not in (1, 2):
            raise CalibrationError("missing or malformed", "$.Geometry.PixelSizeMicroM", pixel,
                                   "[size] or [vertical, horizontal] in µm")
        pixel_v = _number(pixel[0], "$.Geometry.PixelSizeMicroM[0]", positive=True)
        pixel_h = _number(pixel[-1], f"$.Geometry.PixelSizeMicroM[{len(pixel) - 1}]", positive=True)

        tilt = geo.get("Tilt", {})
        if not isinstance(tilt, Mapping):
            raise CalibrationError("not an object", "$.Geometry.Tilt", tilt, "{TiltRotDeg, TiltAngleDeg}")
        tilt_angle = _number(tilt.get("TiltAngleDeg", 0.0), "$.Geometry.Tilt.TiltAngleDeg")
        tilt_rot = _number(tilt.get("TiltRotDeg", 0.0), "$.Geometry.Tilt.TiltRotDeg")

        size = read_image_size(cal)
        rows, cols = size if size is not None else (None, None)

        wavelength = None
        if "Wavelength" in cal:
            wavelength = _number(cal["Wavelength"], "$.Wavelength", positive=True)

        return cls(beam_x=beam_x, beam_y=beam_y, distance_mm=distance, pixel_v_um=pixel_v,
                   pixel_h_um=pixel_h, tilt_angle_deg=tilt_angle, tilt_rot_deg=tilt_rot,
                   rows=rows, cols=cols, wavelength_A=wavelength)

    def apply_to(self, cal: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of ``cal`` carrying this geometry (see :func:`update_geometry`)."""
        return update_geometry(cal, asdict(self))

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dictionary."""
        return asdict(self)

    def pyfai_fit2d(self) -> dict[str, float]:
        """Keyword arguments for pyFAI's ``Geometry.setFit2D`` for the image as read.

        pyFAI indexes the image as read (row 0 at the top), so the vertical centre is
        counted from the top edge and the tilt plane rotation changes sign::

            setFit2D(directDist=d, centerX=X, centerY=rows - Y, tilt=TiltAngleDeg,
                     tiltPlanRotation=-TiltRotDeg, pixelX=horizontal, pixelY=vertical,
                     wavelength=Å)

        Raises
        ------
        CalibrationError
            If the image size (needed to flip Y) is unknown.
        """
        if self.rows is None:  # the path as the original's manual spells it
            raise CalibrationError("missing", calibration_field_path({}, "Geometry", "ImageSize"), None,
                                   "[rows, columns]: needed to convert the beam centre")
        kwargs = {
            "directDist": self.distance_mm,
            "centerX": self.beam_x,
            "centerY": self.rows - self.beam_y,
            "tilt": self.tilt_angle_deg,
            "tiltPlanRotation": -self.tilt_rot_deg,
            "pixelX": self.pixel_h_um,
            "pixelY": self.pixel_v_um,
        }
        if self.wavelength_A is not None:
            kwargs["wavelength"] = self.wavelength_A
        return kwargs


def update_geometry(cal: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``cal`` with geometry values written into it.

    Parameters
    ----------
    cal
        The calibration (template) to update; it is not modified.
    values
        Any of the :class:`CalibrationGeometry` field names (``beam_x``, ``beam_y``,
        ``distance_mm``, ``pixel_v_um``, ``pixel_h_um``, ``tilt_angle_deg``,
        ``tilt_rot_deg``, ``rows``, ``cols``, ``wavelength_A``); ``None`` values and
        missing keys leave the template's value alone.

    Notes
    -----
    A distance or image size is written under the spelling the template already uses,
    otherwise under the original's (``CALIBRATION.file_key``).  A single-valued
    ``PixelSizeMicroM`` stays single-valued while the pixels stay square.
    """
    unknown = set(values) - {f.name for f in fields(CalibrationGeometry)}
    if unknown:
        raise TypeError(f"update_geometry: unknown geometry field(s) {sorted(unknown)}")
    out = copy.deepcopy(dict(cal))
    geo = out.get("Geometry")
    geo = dict(geo) if isinstance(geo, Mapping) else {}
    out["Geometry"] = geo
    v = {k: val for k, val in values.items() if val is not None}

    if "beam_x" in v or "beam_y" in v:
        old = geo.get("BeamCenter")
        old_y, old_x = old if isinstance(old, (list, tuple)) and len(old) == 2 else (None, None)
        y, x = v.get("beam_y", old_y), v.get("beam_x", old_x)
        if x is None or y is None:
            raise CalibrationError(f"only the {'X' if y is None else 'Y'} beam centre coordinate is given "
                                   "and the template has no BeamCenter to complete it",
                                   "$.Geometry.BeamCenter", old, "[Y, X] in pixels")
        geo["BeamCenter"] = [float(y), float(x)]
    if "distance_mm" in v:
        geo[CALIBRATION.file_key(out, _GEOMETRY, "DetectorDistanceMM")] = float(v["distance_mm"])
    if "tilt_angle_deg" in v or "tilt_rot_deg" in v:
        tilt = dict(geo.get("Tilt") or {})
        if "tilt_angle_deg" in v:
            tilt["TiltAngleDeg"] = float(v["tilt_angle_deg"])
        if "tilt_rot_deg" in v:
            tilt["TiltRotDeg"] = float(v["tilt_rot_deg"])
        tilt.setdefault("TiltAngleDeg", 0.0)
        tilt.setdefault("TiltRotDeg", 0.0)
        geo["Tilt"] = tilt
    if "pixel_v_um" in v or "pixel_h_um" in v:
        old = geo.get("PixelSizeMicroM")
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            old = [old]
        old = list(old) if isinstance(old, (list, tuple)) and old else []
        pv = v.get("pixel_v_um", old[0] if old else v.get("pixel_h_um"))
        ph = v.get("pixel_h_um", old[-1] if old else v.get("pixel_v_um"))
        assert pv is not None and ph is not None  # one of the two is in v
        geo["PixelSizeMicroM"] = [float(pv)] if (len(old) == 1 and pv == ph) else [float(pv), float(ph)]
    if "rows" in v or "cols" in v:
        key = CALIBRATION.file_key(out, _GEOMETRY, "ImageSize")
        old = geo.get(key)
        old = list(old) if isinstance(old, (list, tuple)) and len(old) == 2 else [None, None]
        size = [v.get("rows", old[0]), v.get("cols", old[1])]
        if None in size:
            raise CalibrationError("image size incomplete", calibration_field_path(out, "Geometry", "ImageSize"),
                                   old, "[rows, columns]")
        geo[key] = [int(size[0]), int(size[1])]
    if "wavelength_A" in v:
        out["Wavelength"] = float(v["wavelength_A"])
    return out


def merge_calibration(template: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the fields of an (older) calibration into a template.

    Objects are merged key by key, everything else (numbers, strings, lists such as
    ``Masks``) replaces the template's value.  A field spelled differently in ``data``
    and the template (the original's or saxsdog's spelling of the distance or image size,
    see :mod:`saxsdog.config`) replaces the template's field under the template's
    spelling, so the result never holds both.

    Parameters
    ----------
    template, data
        Calibration dictionaries; neither is modified.

    Returns
    -------
    dict
        The merged calibration.
    """
    data = _spelled_like(data, template)

    def merge(base: Any, new: Any) -> Any:
        if isinstance(base, Mapping) and isinstance(new, Mapping):
            out = dict(base)
            for key, value in new.items():
                out[key] = merge(base.get(key), value)
            return out
        return new

    return merge(copy.deepcopy(dict(template)), data)


def _object_at(doc: Any, parts: tuple[str, ...]) -> Any:
    """The value at the keys ``parts`` of ``doc``, ``None`` where one is missing."""
    for part in parts:
        doc = doc.get(part) if isinstance(doc, Mapping) else None
    return doc


def _spelled_like(data: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` whose fields the template also has use the template's spelling."""
    out = copy.deepcopy(dict(data))
    template_fields = calibration_in_saxsdog_spellings(template)
    for parts, names in CALIBRATION.spellings.items():
        node_in = _object_at(out, parts)
        node_t = _object_at(template_fields, parts)
        if not isinstance(node_in, dict) or not isinstance(node_t, Mapping):
            continue
        for name in names.values():
            key_in = CALIBRATION.file_key(out, parts, name)
            key_t = CALIBRATION.file_key(template, parts, name)
            if name in node_t and key_in in node_in and key_in != key_t:
                node_in[key_t] = node_in.pop(key_in)
    return out


# --------------------------------------------------------------------------------------
# Parsing FIT2D text
# --------------------------------------------------------------------------------------

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?)"

#: ``INFO:``-style lines: regular expression -> field names of its numbers.
_INFO_PATTERNS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"beam\s+cent(?:re|er)\s*=\s*" + _NUM + r"\s+" + _NUM + r"\s*\(\s*pixels?\s*\)", re.I),
     ("beam_x", "beam_y")),
    (re.compile(r"sample\s+to\s+detector\s+distance\s*=\s*" + _NUM + r"\s*mm", re.I), ("distance_mm",)),
    (re.compile(r"wavelength\s*=\s*" + _NUM + r"\s*(?:angstroms?|Å)", re.I), ("wavelength_A",)),
    (re.compile(r"tilt\s+plane\s+rotation(?:\s+angle)?\s*=\s*" + _NUM, re.I), ("tilt_rot_deg",)),
    (re.compile(r"\btilt\s+angle\s*=\s*" + _NUM, re.I), ("tilt_angle_deg",)),
    (re.compile(r"\bx[-\s]*pixel\s+size\s*(?:\(\s*microns?\s*\))?\s*=\s*" + _NUM, re.I), ("pixel_h_um",)),
    (re.compile(r"\by[-\s]*pixel\s+size\s*(?:\(\s*microns?\s*\))?\s*=\s*" + _NUM, re.I), ("pixel_v_um",)),
    # The "Best fit ..." lines of FIT2D's calibrant fit, as the original manual shows them:
    #   INFO: Best fit beam centre (X/Y pixels) = 388.2765 807.8745
    #   INFO: Best fit angle of tilt plane rotation (degrees) = 73.59509
    #   INFO: Best fit angle of tilt (degrees) = -10.00601
    # (the "(X/Y mm)" beam centre line is not in pixels and is left alone).
    (re.compile(r"beam\s+cent(?:re|er)\s*\(\s*X\s*/\s*Y\s+pixels?\s*\)\s*=\s*" + _NUM + r"\s+" + _NUM, re.IGNORECASE),
     ("beam_x", "beam_y")),
    (re.compile(r"angle\s+of\s+tilt\s+plane\s+rotation\s*(?:\(\s*degrees?\s*\))?\s*=\s*" + _NUM, re.IGNORECASE),
     ("tilt_rot_deg",)),
    (re.compile(r"angle\s+of\s+tilt\s*(?:\(\s*degrees?\s*\))?\s*=\s*" + _NUM, re.IGNORECASE), ("tilt_angle_deg",)),
    (re.compile(r"sample\s+to\s+detector\s+distance\s*\(\s*mm\s*\)\s*=\s*" + _NUM, re.IGNORECASE), ("distance_mm",)),
    (re.compile(r"wavelength\s*\(\s*(?:angstroms?|Å)\s*\)\s*=\s*" + _NUM, re.IGNORECASE), ("wavelength_A",)),
]

#: FIT2D macro keywords whose value follows on the next line.
_MACRO_KEYWORDS: dict[str, str] = {
    "X-BEAM CENTRE": "beam_x",
    "Y-BEAM CENTRE": "beam_y",
    "DISTANCE": "distance_mm",
    "WAVELENGTH": "wavelength_A",
    "TILT ROTATION": "tilt_rot_deg",
    "ANGLE OF TILT": "tilt_angle_deg",
    "X-PIXEL SIZE": "pixel_h_um",
    "Y-PIXEL SIZE": "pixel_v_um",
}

_POSITIVE = {"distance_mm", "wavelength_A", "pixel_h_um", "pixel_v_um"}
_FULL_NUMBER = re.compile(r"^\s*" + _NUM + r"\s*$")


def _to_float(text: str) -> float:
    return float(text.replace("d", "e").replace("D", "e"))


def parse_fit2d(text: str) -> dict[str, float]:
    """Extract calibration values from FIT2D output or a FIT2D integration macro.

    Parameters
    ----------
    text
        The ``INFO:`` lines FIT2D prints after a calibration (the ``calibration.txt``
        the original converter read: ``Refined ...`` values, or the ``Best fit ...``
        lines of a calibrant fit as in the original SAXSDOG manual), or a FIT2D macro
        with keyword/value line pairs.  When a value appears more than once (several
        ``SOLUTION`` blocks), the last one is taken.

    Returns
    -------
    dict
        The values found, keyed by the names of :data:`FIELD_DESCRIPTIONS`.  Quantities
        absent from the text are absent from the dictionary.

    Raises
    ------
    Fit2DParseError
        If no value is found, a value is not finite, or a distance, wavelength or pixel
        size is not positive.
    """
    found: dict[str, tuple[float, int]] = {}
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        for pattern, names in _INFO_PATTERNS:
            match = pattern.search(line)
            if match:
                for field, number in zip(names, match.groups()):
                    found[field] = (_to_float(number), lineno)
        keyword = line.strip().upper()
        if keyword in _MACRO_KEYWORDS and lineno < len(lines):
            number = _FULL_NUMBER.match(lines[lineno])
            if number:
                found[_MACRO_KEYWORDS[keyword]] = (_to_float(number.group(1)), lineno + 1)
    if not found:
        raise Fit2DParseError(
            "no FIT2D calibration values found; expected lines such as "
            "'INFO: Refined Beam centre = 387.772 808.370 (pixels)', "
            "'INFO: Refined sample to detector distance = 1031.657 mm', "
            "'INFO: Best fit beam centre (X/Y pixels) = 388.2765 807.8745' "
            "or FIT2D macro keywords such as 'X-BEAM CENTRE' followed by a number")
    values: dict[str, float] = {}
    for field, (value, lineno) in found.items():
        if not math.isfinite(value):
            raise Fit2DParseError(f"line {lineno}: {FIELD_DESCRIPTIONS[field]} is not finite ({value})")
        if field in _POSITIVE and value <= 0:
            raise Fit2DParseError(f"line {lineno}: {FIELD_DESCRIPTIONS[field]} must be positive, got {value}")
        values[field] = value
    return values


def fit2d_to_calibration(text: str, template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Convert FIT2D calibration text into a saxsdog calibration.

    Parameters
    ----------
    text
        FIT2D output or macro, see :func:`parse_fit2d`.
    template
        Calibration whose other fields (masks, image size, options, and any geometry
        value the text lacks) are kept; :func:`default_calibration` if ``None``.  It is
        not modified.

    Returns
    -------
    dict
        The template updated with every value found in the text.

    Raises
    ------
    Fit2DParseError
        If the text holds no usable values.
    CalibrationError
        If the result lacks a geometry field that neither the text nor the template
        provides, or a template field is malformed.
    """
    values = parse_fit2d(text)
    base = default_calibration() if template is None else template
    result = update_geometry(base, values)
    CalibrationGeometry.from_calibration(result)  # complete and well-formed?
    return result
