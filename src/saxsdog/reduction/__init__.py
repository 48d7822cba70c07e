"""The reduction steps after integration: normalization (exposure time, monitor,
transmission, thickness, absolute scale) and background subtraction.

:mod:`.normalization` turns a calibration's ``Normalization`` block and a frame's metadata
into the factor its curve is multiplied by and the unit that follows; :mod:`.background`
reads or integrates the ``Background`` and subtracts it with propagated errors.  The
per-pixel corrections (dark, flat, solid angle, polarization, dummy pixels, error model)
are the integrators' (:mod:`saxsdog.core.corrections`).
"""
