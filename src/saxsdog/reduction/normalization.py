"""Normalization of a curve: divided by t·M·T·d, multiplied by an absolute scale.

A calibration's ``Normalization`` block (format version 2) names, for each frame,

* ``ExposureTime`` t (s): ``"header"`` (the frame's own exposure time: Pilatus
  ``Exposure_time``, Eiger/NeXus ``count_time``, EDF ``count_time``/``ExposureTime``, a
  stream's ``count_time``), ``{"Header": "KEY"}`` (a named header field), a number, or
  ``null`` (not applied);
* ``Monitor`` M and ``Transmission`` T: a number, ``{"Header": "KEY"}`` or ``null``;
* ``ThicknessMM``: the sample thickness, used as d in **cm** (so absolute curves come out
  in 1/cm/sr), or ``null``;
* ``AbsoluteScale`` k: the factor to absolute units from a measured standard, or
  ``null``.

The curve (intensity, error, standard deviation) is multiplied by
``factor = k / (t·M·T·d)`` (a ``null`` field counts as 1).  The unit written with it
follows from the fields that are set, not from the frame (:func:`unit`):

=====================================  =======================================
fields set                             unit
=====================================  =======================================
none                                   ``counts/pixel``
ExposureTime                           ``counts/pixel/s``
ExposureTime, Monitor                  ``counts/pixel/s/monitor``
Monitor, ThicknessMM                   ``counts/pixel/monitor/cm``
AbsoluteScale and ThicknessMM          ``1/cm/sr`` (dΣ/dΩ; canSAS writes it ``1/cm``)
AbsoluteScale without ThicknessMM      ``1/sr`` (dΣ/dΩ times the thickness)
=====================================  =======================================

Transmission never changes the unit.  A header field is read from ``Frame.metadata["header"]`` (raw text fields, see
:class:`saxsdog.io.images.Frame`), exact key first, then case-insensitively; its value is
the first number of the text (``"10.0000000 s"`` → 10; an exposure time given in ms or
µs is converted).  A missing key, a value that is not a number, or a value ≤ 0 is a
:class:`FrameNormalizationError`: that frame fails, with a message naming the field of
the calibration, the key and the header fields the frame has; the other frames go on.

Pure functions of a block and a frame's metadata; nothing here reads files.

>>> block = {"ExposureTime": "header", "Transmission": 0.5}
>>> divisor(block, {"header": {"Exposure_time": "10.0000000 s"}})
5.0
>>> factor(block, {"exposure_time": 10.0}), unit(block)
(0.2, 'counts/pixel/s')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CalibrationError, ImageError

__all__ = ["EXPOSURE_HEADER_KEYS", "FrameNormalizationError", "Normalization", "divisor", "factor",
           "unit", "needs_metadata", "header_number", "check_block"]

#: Header fields ``"ExposureTime": "header"`` looks for, in this order, when the image
#: reader did not already give ``metadata["exposure_time"]``.
EXPOSURE_HEADER_KEYS = ("Exposure_time", "count_time", "exposure_time", "ExposureTime", "Exposure",
                        "acq_expo_time", "exposure")

#: The fields of a Normalization block that may be read per frame, in the divisor's order.
FIELDS = ("ExposureTime", "Monitor", "Transmission")

_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµ]*)")
_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6,
               "µs": 1e-6, "ns": 1e-9, "min": 60.0}


class FrameNormalizationError(ImageError):
    """A frame cannot be normalized as the calibration asks (a header field missing,
    not a number, or not positive).  Only that frame fails.

    Attributes
    ----------
    field
        JSON path of the calibration field, e.g. ``$.Normalization.Monitor``.
    key
        The header key looked for (``None`` for a numeric problem of a known value).
    """

    def __init__(self, reason: str, field: str, key: str | None = None, path: str = ""):
        self.field = field
        self.key = key
        super().__init__(path, reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


def _spec_text(spec: Any) -> str:
    if isinstance(spec, Mapping):
        return f'{{"Header": "{spec.get("Header")}"}}'
    return repr(spec) if isinstance(spec, str) else str(spec)


def _header(metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not metadata:
        return {}
    fields = metadata.get("header")
    return fields if isinstance(fields, Mapping) else {}


def _lookup(fields: Mapping[str, Any], key: str) -> Any:
    if key in fields:
        return fields[key]
    lowered = key.lower()
    for k, v in fields.items():
        if str(k).lower() == lowered:
            return v
    raise KeyError(key)


def _available(fields: Mapping[str, Any], limit: int = 12) -> str:
    keys = [str(k) for k in fields if "/" not in str(k) and "@" not in str(k)] or [str(k) for k in fields]
    if not keys:
        return "the frame's header has no fields"
    shown = ", ".join(keys[:limit]) + (f", … ({len(keys)} in all)" if len(keys) > limit else "")
    return f"the frame's header has {shown}"


def header_number(text: Any, field: str, key: str, *, time: bool = False) -> float:
    """The number a header field's text starts with (``"10.0 s"`` → 10.0).

    ``time``: the value is a duration; ``ms``/``us``/``ns``/``min`` after the number are
    converted to seconds.

    Raises
    ------
    FrameNormalizationError
        The text does not start with a finite number (or names an unknown time unit).
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, suffix = float(text), ""
    else:
        m = _NUMBER.match(str(text))
        if not m:
            raise FrameNormalizationError(
                f"header field {key!r} = {str(text)[:60]!r} is not a number ({field})", field, key)
        value, suffix = float(m.group(1)), m.group(2)
    if time:
        scale = _TIME_UNITS.get(suffix.lower() if suffix != "µs" else suffix)
        if scale is None:
            raise FrameNormalizationError(
                f"header field {key!r} = {str(text)[:60]!r}: unknown time unit {suffix!r} ({field})", field, key)
        value *= scale
    if not math.isfinite(value):
        raise FrameNormalizationError(f"header field {key!r} = {str(text)[:60]!r} is not finite ({field})",
                                      field, key)
    return value


def _value(spec: Any, metadata: Mapping[str, Any] | None, field: str, *, time: bool = False) -> float | None:
    """One field's value for a frame (``None``: not applied)."""
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise CalibrationError("not a number", field, spec, "a number, {\"Header\": KEY} or null")
    if isinstance(spec, (int, float)):
        value = float(spec)
    elif spec == "header":
        if metadata and isinstance(metadata.get("exposure_time"), (int, float)):
            value = float(metadata["exposure_time"])
        else:
            fields = _header(metadata)
            for key in EXPOSURE_HEADER_KEYS:
                try:
                    value = header_number(_lookup(fields, key), field, key, time=True)
                    break
                except KeyError:
                    continue
            else:
                raise FrameNormalizationError(
                    f"the frame's header gives no exposure time ({field} = \"header\" looks for "
                    f"{', '.join(EXPOSURE_HEADER_KEYS[:3])}, ...); {_available(fields)}", field)
    elif isinstance(spec, Mapping) and isinstance(spec.get("Header"), str):
        key = spec["Header"]
        fields = _header(metadata)
        try:
            text = _lookup(fields, key)
        except KeyError:
            raise FrameNormalizationError(
                f"the frame's header has no field {key!r} ({field} = {_spec_text(spec)}); "
                f"{_available(fields)}", field, key) from None
        value = header_number(text, field, key, time=time)
    else:
        raise CalibrationError("not a valid setting", field, spec,
                               "a number, {\"Header\": KEY}" + (", \"header\"" if time else "") + " or null")
    where = "" if isinstance(spec, (int, float)) else f" (from the frame's header, {_spec_text(spec)})"
    header_key = spec.get("Header") if isinstance(spec, Mapping) else None
    if not value > 0:
        raise FrameNormalizationError(f"{field.rsplit('.', 1)[-1]} is {value:g}{where}: it must be > 0 "
                                      f"({field})", field, header_key)
    if field.endswith(".Transmission") and value > 1:  # e.g. a header giving it in per cent
        raise FrameNormalizationError(f"Transmission is {value:g}{where}: a transmission is at most 1 "
                                      f"({field})", field, header_key)
    return value


@dataclass(frozen=True)
class Normalization:
    """The normalization of one frame.

    Attributes
    ----------
    exposure_time, monitor, transmission
        t (s), M and T for the frame, ``None`` when not applied.
    thickness_cm
        d in cm, ``None`` when not applied.
    absolute_scale
        The absolute scale, ``None`` when not applied.
    """

    exposure_time: float | None = None
    monitor: float | None = None
    transmission: float | None = None
    thickness_cm: float | None = None
    absolute_scale: float | None = None

    @property
    def divisor(self) -> float:
        """t·M·T·d (each field not applied counts as 1)."""
        out = 1.0
        for v in (self.exposure_time, self.monitor, self.transmission, self.thickness_cm):
            if v is not None:
                out *= v
        return out

    @property
    def factor(self) -> float:
        """AbsoluteScale / (t·M·T·d): what the curve is multiplied by."""
        scale = 1.0 if self.absolute_scale is None else self.absolute_scale
        return scale / self.divisor


def normalization(block: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None = None, *,
                  path: str = "$.Normalization", overrides: Mapping[str, Any] | None = None) -> Normalization:
    """The normalization of one frame.

    Parameters
    ----------
    block
        The ``Normalization`` block (``None`` or ``{}``: nothing applied).
    metadata
        The frame's metadata (``Frame.metadata``; ``header`` holds its raw fields).
    path
        JSON path of the block, for messages.
    overrides
        Settings replacing the block's ExposureTime/Monitor/Transmission (a background's
        own), each with the JSON path messages name:
        ``{"ExposureTime": (10.0, "$.Background.ExposureTime")}``.

    Raises
    ------
    FrameNormalizationError
        A header field is missing, not a number or not positive.
    """
    block = block or {}
    values: dict[str, float | None] = {}
    for name in FIELDS:
        spec, where = block.get(name), f"{path}.{name}"
        if overrides and name in overrides:
            spec, where = overrides[name]
        values[name] = _value(spec, metadata, where, time=(name == "ExposureTime"))
    thickness = block.get("ThicknessMM")
    scale = block.get("AbsoluteScale")
    return Normalization(values["ExposureTime"], values["Monitor"], values["Transmission"],
                         None if thickness is None else float(thickness) / 10.0,
                         None if scale is None else float(scale))


def divisor(block: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None = None) -> float:
    """t·M·T·d of a frame (d in cm; fields not applied count as 1)."""
    return normalization(block, metadata).divisor


def factor(block: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None = None) -> float:
    """AbsoluteScale / (t·M·T·d) of a frame: what its curve is multiplied by."""
    return normalization(block, metadata).factor


def unit(block: Mapping[str, Any] | None) -> str:
    """The unit of curves normalized by ``block`` (see the module's table)."""
    block = block or {}
    if block.get("AbsoluteScale") is not None:
        return "1/cm/sr" if block.get("ThicknessMM") is not None else "1/sr"
    out = "counts/pixel"
    if block.get("ExposureTime") is not None:
        out += "/s"
    if block.get("Monitor") is not None:
        out += "/monitor"
    if block.get("ThicknessMM") is not None:
        out += "/cm"
    return out


def is_identity(block: Mapping[str, Any] | None) -> bool:
    """Whether ``block`` applies nothing (every field null or absent)."""
    return not block or all(block.get(k) is None for k in (*FIELDS, "ThicknessMM", "AbsoluteScale"))


def needs_metadata(block: Mapping[str, Any] | None) -> bool:
    """Whether ``block`` reads any field from the frames' headers."""
    block = block or {}
    return any(isinstance(block.get(k), (str, Mapping)) for k in FIELDS)


def check_block(block: Mapping[str, Any] | None, path: str = "$.Normalization") -> None:
    """Check the constant fields of a block beyond the schema (numbers > 0).

    Raises
    ------
    CalibrationError
        Naming the field and its value.
    """
    block = block or {}
    for name in (*FIELDS, "ThicknessMM", "AbsoluteScale"):
        v = block.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (math.isfinite(v) and v > 0):
            raise CalibrationError(f"{name} must be a finite number > 0", f"{path}.{name}", v, "a number > 0")
    t = block.get("Transmission")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 1:
        raise CalibrationError("a transmission is at most 1", f"{path}.Transmission", t, "0 < T <= 1")
