"""saxsdog: turn 2D X-ray scattering images into 1D curves the moment they are written.

Quick start
-----------
>>> import saxsdog
>>> cal = saxsdog.Calibration("cal.json")            # doctest: +SKIP
>>> q, I = cal.integrate(saxsdog.read_image("img.tif"))   # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names are imported lazily so that `import saxsdog` stays cheap for the
# command-line tools (numba/fabio are only loaded when actually used).
_LAZY = {
    "Calibration": "saxsdog.calibration",
    "Slice": "saxsdog.calibration",
    "CalibrationError": "saxsdog.errors",
    "MaskError": "saxsdog.errors",
    "ImageError": "saxsdog.errors",
    "read_chi": "saxsdog.io.chi",
    "write_chi": "saxsdog.io.chi",
    "read_image": "saxsdog.io.images",
    "read_mask": "saxsdog.io.masks",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'saxsdog' has no attribute {name!r}")
    return getattr(import_module(module), name)
