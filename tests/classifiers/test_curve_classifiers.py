"""Guinier, Porod and the extrapolated invariant on synthetic curves with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from classifier_helpers import classifier, curve, debye_bueche, debye_chain, sphere

Q = np.linspace(0.02, 3.0, 1003)


def _sphere_cases(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    g = classifier({"Kind": "Guinier"}, Q)
    hits_rg = hits_i0 = 0
    for _ in range(n):
        radius = rng.uniform(2.0, 10.0)
        expected = 1e4 * sphere(Q, radius) + 1.0  # I(0) = 1e4 counts over a flat background of 1
        counts = rng.poisson(expected).astype(np.float64)
        out = g(curve(Q, counts))
        assert out["Guinier.status"] == "ok", out
        hits_rg += abs(out["Guinier.Rg"] - np.sqrt(3 / 5) * radius) <= out["Guinier.Rg_error"]
        hits_i0 += abs(out["Guinier.I0"] - (1e4 + 1.0)) <= out["Guinier.I0_error"]
    return hits_rg / n, hits_i0 / n


def test_guinier_spheres_rg_and_i0_within_their_errors_in_95_percent():
    rg, i0 = _sphere_cases(1000, seed=7)  # the 1000 cases (a quarter of a second)
    assert rg >= 0.95 and i0 >= 0.95


def test_guinier_reports_the_fit_range_and_quality():
    out = classifier({"Kind": "Guinier"}, Q)(curve(Q, 1e5 * sphere(Q, 5.0) + 1.0))
    assert 0 < out["Guinier.q_min"] < out["Guinier.q_max"] and out["Guinier.q_max"] * out["Guinier.Rg"] <= 1.4
    assert 0 < out["Guinier.quality"] <= 1 and out["Guinier.points"] > 3


@pytest.mark.parametrize("intensity,why", [
    (np.full(1003, 5.0), "no Guinier region"),      # flat: no decay
    (None, "too few points"),
])
def test_guinier_failures_are_failures(intensity, why):
    g = classifier({"Kind": "Guinier"}, Q)
    c = curve(Q[:4], np.array([4.0, 3.0, 2.0, 1.0])) if intensity is None else curve(Q, intensity)
    out = g(c)
    assert out["Guinier.Rg"] is None and out["Guinier.I0"] is None
    assert out["Guinier.status"].startswith("failed")


def test_rambo_tainer_after_guinier():
    from saxsdog.classifiers import ClassifierContext, build_classifiers

    cs = build_classifiers([{"Kind": "Guinier"}, {"Kind": "RamboTainer"}], ClassifierContext((10, 10), q=Q))
    c = curve(Q, 1e5 * sphere(Q, 3.0) + 1.0)
    import types

    cs.apply([c], [types.SimpleNamespace(kind="Radial")], None)
    p = c.parameters
    assert p["RamboTainer.status"] == "ok" and p["RamboTainer.Vc"] > 0 and p["RamboTainer.mass"] > 0
    flat = curve(Q, np.full(1003, 5.0))
    cs.apply([flat], [types.SimpleNamespace(kind="Radial")], None)
    assert flat.parameters["RamboTainer.mass"] is None


def test_porod_sharp_interface_gives_minus_four():
    q = np.linspace(0.05, 5.0, 1003)
    model = debye_bueche(q, 1e6, 10.0)
    rng = np.random.default_rng(3)
    c = curve(q, rng.poisson(model * 100).astype(np.float64) / 100, np.sqrt(model * 100) / 100)
    out = classifier({"Kind": "Porod", "QRange": [2.0, 5.0]}, q)(c)
    assert out["Porod.exponent"] == pytest.approx(-4.0, abs=0.05)
    assert out["Porod.constant"] == pytest.approx(1e6 / 10.0**4, rel=0.05)


def test_porod_gaussian_chain_gives_minus_two():
    q = np.linspace(0.05, 5.0, 1003)
    model = 1e6 * debye_chain(q, 5.0)
    out = classifier({"Kind": "Porod", "QRange": [3.0, 5.0]}, q)(curve(q, model))
    assert out["Porod.exponent"] == pytest.approx(-2.0, abs=0.05)
    assert out["Porod.invariant"] is None and "diverges" in out["Porod.status"]


def test_extrapolated_invariant_of_debye_bueche_within_one_percent():
    q = np.linspace(0.02, 3.0, 1003)
    amplitude, xi = 1e4, 8.0
    out = classifier({"Kind": "Porod", "QRange": [1.5, 3.0]}, q)(curve(q, debye_bueche(q, amplitude, xi)))
    analytic = amplitude * np.pi / (4.0 * xi**3)
    assert out["Porod.invariant"] == pytest.approx(analytic, rel=0.01)
    assert out["Porod.invariant_measured"] < out["Porod.invariant"]  # the truncated one is short


def test_auto_gpa_option():
    out = classifier({"Kind": "Guinier", "AutoGPA": True}, Q)(curve(Q, 1e5 * sphere(Q, 5.0) + 1.0))
    assert out["Guinier.status"] == "ok" and out["Guinier.Rg"] == pytest.approx(np.sqrt(3 / 5) * 5.0, rel=0.05)
    from saxsdog.errors import CalibrationError

    with pytest.raises(CalibrationError, match=r"\$\.Classifiers\[0\]\.AutoGPA"):
        classifier({"Kind": "Guinier", "AutoGPA": "yes"}, Q)


def test_a_zero_error_from_freesas_is_replaced_by_the_weighted_fit_error():
    # freesas' autoRg sometimes reports sigma_Rg = sigma_I0 = 0 for a valid Rg (short
    # regions); an error bar of 0 claims certainty, so the weighted fit's error is reported
    from types import SimpleNamespace

    g = classifier({"Kind": "Guinier"}, Q)
    rng = np.random.default_rng(11)
    radius = 5.0
    expected = 1e4 * sphere(Q, radius) + 1.0
    fits, regions = [], []
    for _ in range(300):
        counts = rng.poisson(expected).astype(np.float64)
        c = curve(Q, counts)
        real = g(c)
        assert real["Guinier.Rg_error"] > 0
        fits.append(real["Guinier.Rg"])
        regions.append(real["Guinier.points"])
    # the same curves with freesas' errors zeroed: the errors come from the region's fit
    from saxsdog.classifiers import builtin

    data = builtin.curve_data(curve(Q, rng.poisson(expected).astype(np.float64)))
    first = int(np.searchsorted(data[:, 0], 0.0))
    result = SimpleNamespace(Rg=np.sqrt(3 / 5) * radius, I0=1e4 + 1.0, start_point=first,
                             end_point=first + int(np.median(regions)))
    rg_error, i0_error = builtin._guinier_errors(data, result.start_point, result.end_point, result.Rg, result.I0)
    assert rg_error is not None and rg_error > 0 and i0_error > 0
    # of the order of the scatter of Rg over realizations (freesas' regions start elsewhere)
    assert 0.3 < rg_error / np.std(fits) < 3
    assert builtin._guinier_errors(data, 2, 3, 1.0, 1.0) == (None, None)  # too short a region


def test_guinier_zero_errors_are_never_reported(monkeypatch):
    from types import SimpleNamespace

    from saxsdog.classifiers import builtin

    g = classifier({"Kind": "Guinier"}, Q)
    counts = 1e4 * sphere(Q, 5.0) + 1.0
    real = g(curve(Q, counts))
    fake = SimpleNamespace(Rg=real["Guinier.Rg"], I0=real["Guinier.I0"], sigma_Rg=0.0, sigma_I0=0.0,
                           start_point=2, end_point=40, quality=0.9, aggregated=0)
    monkeypatch.setattr(builtin.Guinier, "fit", lambda self, data: (fake, "ok"))
    out = classifier({"Kind": "Guinier"}, Q)(curve(Q, counts))
    assert out["Guinier.Rg_error"] > 0 and out["Guinier.I0_error"] > 0
