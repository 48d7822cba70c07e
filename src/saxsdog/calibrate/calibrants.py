"""Calibrant d-spacings, taken from pyFAI's calibrant library.

pyFAI ships the reflections of the usual calibrants (silver behenate, LaB6, CeO2, Si,
Al2O3, Cr2O3, ...) with their literature d-spacings; saxsdog reads them from there instead
of keeping a table of its own.  ``AgBh`` is silver behenate (d₀₀₁ = 58.380 Å, orders are
integer fractions of it).
"""

from __future__ import annotations

import numpy as np

from saxsdog.extras import import_optional

__all__ = ["CalibrantError", "calibrant_names", "d_spacings"]

# Common spellings users type, mapped to pyFAI's names.
_ALIASES = {"agbe": "AgBh", "agbeh": "AgBh", "silverbehenate": "AgBh", "al2o3": "alpha_Al2O3",
            "corundum": "alpha_Al2O3"}


class CalibrantError(ValueError):
    """An unknown calibrant name (the message lists the known ones)."""


def _library():  # type: ignore[no-untyped-def]
    return import_optional("pyFAI.calibrant", "calibrate", "saxsdog calibrate (calibrant d-spacings)")


def calibrant_names() -> list[str]:
    """The calibrant names pyFAI knows, sorted."""
    return sorted(_library().CALIBRANT_FACTORY.keys())


def _resolve(name: str) -> str:
    names = calibrant_names()
    if name in names:
        return name
    folded = {n.lower(): n for n in names}
    key = name.strip().lower().replace(" ", "").replace("_", "")
    if name.lower() in folded:
        return folded[name.lower()]
    if key in _ALIASES:
        return _ALIASES[key]
    raise CalibrantError(f"unknown calibrant {name!r}; known: {', '.join(names)}")


def d_spacings(name: str) -> tuple[str, np.ndarray]:
    """pyFAI's name and the d-spacings (Å, descending, unique) of calibrant ``name``.

    Raises
    ------
    CalibrantError
        ``name`` is not a calibrant pyFAI knows.
    """
    resolved = _resolve(name)
    calibrant = _library().get_calibrant(resolved)
    values = getattr(calibrant, "dspacing", None)
    if values is None:  # pyFAI before 2025.07
        values = calibrant.dSpacing
    d = np.unique(np.asarray(values, dtype=np.float64))[::-1]
    d = d[d > 0]
    if d.size == 0:
        raise CalibrantError(f"calibrant {resolved!r} has no d-spacings in pyFAI's library")
    return resolved, d


#: Pixel sizes (µm) of detector families, recognised in an image header's detector name
#: (for ``saxsdog calibrate`` and the page's calibration when no pixel size is given).
DETECTOR_PIXELS_UM = {"PILATUS": 172.0, "EIGER": 75.0}
