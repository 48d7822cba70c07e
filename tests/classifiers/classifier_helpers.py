"""Synthetic curves for the classifier tests."""

from __future__ import annotations

import numpy as np

from saxsdog.classifiers import ClassifierContext, build_classifiers
from saxsdog.core.integrators import Curve


def sphere(q: np.ndarray, radius: float) -> np.ndarray:
    """Form factor of a homogeneous sphere, 1 at q = 0."""
    x = q * radius
    return (3.0 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2


def debye_bueche(q: np.ndarray, amplitude: float, xi: float) -> np.ndarray:
    """A two-phase random medium with sharp interfaces: A/(1 + ξ²q²)²."""
    return amplitude / (1.0 + (xi * q) ** 2) ** 2


def debye_chain(q: np.ndarray, rg: float) -> np.ndarray:
    """A Gaussian chain (Debye function), 1 at q = 0."""
    x = (q * rg) ** 2
    return 2.0 * (np.expm1(-x) + x) / (x * x)


def curve(q: np.ndarray, intensity: np.ndarray, error: np.ndarray | None = None) -> Curve:
    """A Curve of these values (error √I unless given)."""
    intensity = np.asarray(intensity, dtype=np.float64)
    if error is None:
        error = np.sqrt(np.maximum(intensity, 1.0))
    return Curve(np.asarray(q, dtype=np.float64), intensity, None, np.asarray(error, dtype=np.float64), {})


def classifier(spec: dict, q: np.ndarray | None = None, shape=(100, 100), **extra):
    """The one classifier built from ``spec`` (after the implicit integral parameters)."""
    cs = build_classifiers([spec], ClassifierContext(shape, q=q, **extra))
    return cs.all[1]
