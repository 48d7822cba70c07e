"""The JSON Schemas shipped with saxsdog, and cached validators for them.

``calibration.schema.json`` (calibration files), ``leash_request.schema.json`` and
``leash_response.schema.json`` (the leash protocol), ``network.schema.json`` (the network
file) and ``datamerge.schema.json`` (data consolidation).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["load_schema", "validator", "json_path", "expected_text"]


@cache
def _schema_text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of a shipped schema, e.g. ``load_schema("calibration.schema.json")``."""
    return json.loads(_schema_text(name))


@cache
def validator(name: str):
    """A cached ``jsonschema`` validator of the schema's own draft."""
    import jsonschema

    schema = load_schema(name)
    return jsonschema.validators.validator_for(schema)(schema)


def json_path(parts) -> str:
    """``$.Masks[0].MaskFile`` style path from jsonschema's path parts."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def expected_text(error) -> str:
    """What a jsonschema ``ValidationError`` says was expected, in plain words."""
    v, val = error.validator, error.validator_value
    if v == "type":
        return f"a value of type {val}"
    if v == "enum":
        return "one of " + ", ".join(repr(x) for x in val)
    if v == "minimum":
        return f"a number >= {val}"
    if v == "exclusiveMinimum":
        return f"a number > {val}"
    if v == "maximum":
        return f"a number <= {val}"
    if v == "exclusiveMaximum":
        return f"a number < {val}"
    if v == "minItems":
        return f"at least {val} item(s)"
    if v == "maxItems":
        return f"at most {val} item(s)"
    if v == "minLength":
        return f"at least {val} character(s)"
    if v in ("oneOf", "anyOf"):
        return error.schema.get("description", "one of the allowed forms")
    if v == "additionalProperties":
        return "only the fields " + ", ".join(sorted(error.schema.get("properties", {})))
    if v == "required":
        return "this field to be present"
    return f"{v} {val!r}"
