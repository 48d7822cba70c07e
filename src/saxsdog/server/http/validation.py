"""Calibration checks for the page: every schema problem with its JSON path."""

from __future__ import annotations

import json
from typing import Any

from .jsonutil import jsonable

__all__ = ["calibration_problems"]


def calibration_problems(calibration: Any) -> list[dict[str, Any]]:
    """Every schema violation of a calibration, each with its JSON path and a message.

    Returns
    -------
    list of dict
        ``{"path": "$.Geometry.DedectorDistanceMM", "message": ..., "value": ..., "expected": ...}``
        sorted by path; empty when the calibration is valid.
    """
    import jsonschema

    from ...calibration import _expected, _json_path, load_schema

    if not isinstance(calibration, dict):
        return [{"path": "$", "message": "a calibration must be a JSON object", "value": None,
                 "expected": "a JSON object"}]
    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for error in validator.iter_errors(calibration):
        parts = list(error.absolute_path)
        value: Any = error.instance
        if error.validator == "required":
            missing = [f for f in error.validator_value if f not in error.instance]
            path, message, value = _json_path(parts + missing[:1]), f"missing required field {missing[0]!r}", None
        elif error.validator in ("oneOf", "anyOf"):
            path, message, value = _json_path(parts), error.schema.get("description", error.message), None
        else:
            path = _json_path(parts)
            message = f"bad value {json.dumps(jsonable(value))[:80]}: expected {_expected(error)}"
        if (path, message) in seen:
            continue
        seen.add((path, message))
        out.append({"path": path, "message": message, "value": jsonable(value) if _small(value) else None,
                    "expected": _expected(error)})
    out.sort(key=lambda e: e["path"])
    return out


def _small(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None
