"""Calibrating the detector geometry from a calibrant image (``saxsdog calibrate``).

The fit works on an image array, so the command and the web page run the same code::

    from saxsdog.calibrate import calibrate_image
    fit = calibrate_image(image, "AgBh", wavelength_A=1.54987, pixel_size_um=(172, 172))
    fit.geometry            # saxsdog.core.geometry.Geometry, FIT2D convention
    calibration_from_fit(fit, template)   # a calibration dict, as written to a file

pyFAI (the ``calibrate`` extra) provides the calibrants' d-spacings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .calibrants import DETECTOR_PIXELS_UM, CalibrantError, calibrant_names, d_spacings
from .fit import (CalibrationFit, CalibrationFitError, NoRingsError, PoorFitError, RingStats, distance_mismatch,
                  fit_calibrant, hidden_ring_fraction, valid_pixels, wavelength_mismatch)
from .report import calibration_from_fit, report_text, save_picture

__all__ = ["DETECTOR_PIXELS_UM", "CalibrantError", "CalibrationFit", "CalibrationFitError", "NoRingsError", "PoorFitError", "RingStats",
           "calibrant_names", "calibrate_image", "calibration_from_fit", "d_spacings", "distance_mismatch", "fit_calibrant",
           "hidden_ring_fraction", "report_text", "save_picture", "valid_pixels",
           "wavelength_mismatch"]


def calibrate_image(image: np.ndarray, calibrant: str, wavelength_A: float, pixel_size_um: tuple[float, float],
                    **options: Any) -> CalibrationFit:
    """Fit the geometry to the rings of ``calibrant`` (a pyFAI calibrant name) on ``image``.

    ``options`` are those of :func:`saxsdog.calibrate.fit.fit_calibrant` (``mask``,
    ``dummy_value``, ``distance_guess_mm``, ``refine_wavelength``, ``max_rms_px``).
    """
    name, d = d_spacings(calibrant)
    return fit_calibrant(image, d, wavelength_A, pixel_size_um, calibrant=name, **options)
