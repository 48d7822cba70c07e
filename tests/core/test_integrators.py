"""The curve-building Python of the integrators (outside the kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.core.integrators import IntegralParameters, integral_parameters


def reference_parameters(q, intensity, q_start=0.0, q_stop=None, edges=None):
    """The integral parameters as written before they were prepared once per axis (kept here
    to hold the prepared version to the same bits)."""
    q = np.asarray(q, dtype=np.float64)
    intensity = np.asarray(intensity, dtype=np.float64)
    hi = np.inf if (q_stop is None or q_stop <= 0) else q_stop
    sel = (q >= q_start) & (q <= hi)
    iq = np.where(np.isfinite(intensity[sel]), intensity[sel], 0.0)
    if edges is None:
        dq = float(q[1] - q[0]) if q.size > 1 else 0.0
        qs = q[sel]
        i0, i1, i2 = (float(np.sum(iq) * dq), float(np.sum(iq * qs) * dq), float(np.sum(iq * qs * qs) * dq))
    else:
        e = np.asarray(edges, dtype=np.float64)
        e0, e1 = e[:-1][sel], e[1:][sel]
        i0 = float(np.sum(iq * (e1 - e0)))
        i1 = float(np.sum(iq * (e1 * e1 - e0 * e0)) / 2.0)
        i2 = float(np.sum(iq * (e1 ** 3 - e0 ** 3)) / 3.0)
    return {"I0": i0, "I1": i1, "I2": i2, "invariant": i2,
            "correlation_length": (float(np.pi * i1 / i2) if i2 != 0 else None)}


def test_prepared_parameters_are_the_same_bits():
    """Ranges inside, across and outside the axis, uniform and log bins, NaN and inf in the
    curve, an empty range: the prepared axis gives exactly the values of the formula."""
    rng = np.random.default_rng(4)
    q = np.linspace(0.01, 5.0, 1000)
    edges = np.geomspace(0.005, 5.5, 1001)
    log_q = np.sqrt(edges[:-1] * edges[1:])
    for _ in range(20):
        intensity = rng.lognormal(2, 3, q.size)
        intensity[rng.integers(0, q.size, 5)] = [np.nan, np.inf, -np.inf, np.nan, 0.0]
        for start, stop in ((0.0, None), (0.0, 5.0), (0.3, 2.2), (1.0, 0.0), (6.0, 7.0), (2.0, 1.0)):
            assert integral_parameters(q, intensity, start, stop) == reference_parameters(q, intensity, start, stop)
            prepared = IntegralParameters(log_q, start, stop, edges=edges)
            assert prepared(intensity) == reference_parameters(log_q, intensity, start, stop, edges=edges)


def test_a_curve_of_the_wrong_length_is_refused():
    prepared = IntegralParameters(np.linspace(0.1, 1, 10))
    with pytest.raises(ValueError, match="9 bins"):
        prepared(np.ones(9))
