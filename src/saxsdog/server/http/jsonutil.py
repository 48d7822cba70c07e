"""JSON for the web leash: NumPy values made plain, NaN and infinities sent as ``null``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["jsonable", "dumps"]


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy values turned into Python ones and NaN/±inf into ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            a = obj.astype(np.float64)
            out = a.tolist()
            if not np.isfinite(a).all():
                return jsonable(out)
            return out
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: Any) -> bytes:
    """Compact, strict JSON of :func:`jsonable` ``(obj)`` as UTF-8."""
    return json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":")).encode("utf-8")
