"""The classifier registry and the calibration's Classifiers block."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.classifiers import Classifier, ClassifierContext, build_classifiers, known_kinds, register
from saxsdog.errors import CalibrationError
from saxsdog.extras import MissingExtraError

from classifier_helpers import curve


def _cal(shared_data, classifiers=None, **more):
    raw = json.loads((shared_data / "cal.json").read_text())
    if classifiers is not None:
        raw["Classifiers"] = classifiers
    raw.update(more)
    return Calibration(raw, base_dir=shared_data, cache=False)


def test_builtins_are_registered():
    assert {"IntegralParameters", "Guinier", "Porod", "RamboTainer", "CorMap", "ImageStats", "Zingers",
            "ROI"} <= set(known_kinds())


def test_unknown_kind_names_the_field_and_lists_the_known_ones():
    with pytest.raises(CalibrationError) as info:
        build_classifiers([{"Kind": "Guinier"}, {"Kind": "Ginier"}], ClassifierContext((10, 10)))
    assert info.value.path == "$.Classifiers[1].Kind"
    assert "Ginier" in str(info.value) and "Guinier" in info.value.expected and "CorMap" in info.value.expected


def test_unknown_option_is_refused_with_the_allowed_ones():
    with pytest.raises(CalibrationError) as info:
        build_classifiers([{"Kind": "Porod", "Qrange": [1, 2]}], ClassifierContext((10, 10)))
    assert info.value.path == "$.Classifiers[0].Qrange" and "QRange" in info.value.expected


def test_duplicate_names_are_refused():
    with pytest.raises(CalibrationError, match="two classifiers are named 'Porod'"):
        build_classifiers([{"Kind": "Porod"}, {"Kind": "Porod"}], ClassifierContext((10, 10)))


class Mean(Classifier):
    kind = "Mean"
    description = "mean intensity"
    units = {"value": "I"}
    primary = "value"

    def compute(self, data, metadata=None, integrator=None):
        return {"value": float(np.mean(data.intensity))}


def test_a_users_class_by_module_path_runs_without_touching_the_pipeline(monkeypatch):
    mod = types.ModuleType("my_saxs_plugins")
    mod.Mean = Mean
    monkeypatch.setitem(sys.modules, "my_saxs_plugins", mod)
    cs = build_classifiers([{"Kind": "my_saxs_plugins:Mean", "Name": "avg"}], ClassifierContext((10, 10)))
    c = curve(np.linspace(0.1, 1, 10), np.arange(10.0))
    cs.apply([c], [types.SimpleNamespace(kind="Radial", parameters=lambda i: {"I0": 1.0})], None)
    assert c.parameters["avg.value"] == 4.5 and c.parameters["I0"] == 1.0


def test_a_registered_class_and_a_bad_path():
    register(Mean)
    assert "Mean" in known_kinds()
    with pytest.raises(CalibrationError, match="cannot load the classifier"):
        build_classifiers([{"Kind": "no_such_module_xyz:Thing"}], ClassifierContext((10, 10)))
    with pytest.raises(CalibrationError, match="not a saxsdog.classifiers.Classifier"):
        build_classifiers([{"Kind": "json:dumps"}], ClassifierContext((10, 10)))


def test_entry_points_are_loaded(monkeypatch):
    from saxsdog.classifiers import base

    class EP:
        name = "FromEntryPoint"
        value = "x:y"

        def load(self):
            return Mean

    monkeypatch.setattr(base, "_entry_points_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EP()] if group == base.ENTRY_POINT_GROUP else [])
    assert "FromEntryPoint" in known_kinds()


def test_failures_are_none_with_a_status_never_numbers():
    cs = build_classifiers([{"Kind": "Guinier"}], ClassifierContext((10, 10)))
    c = curve(np.linspace(0.1, 1, 2), np.ones(2))
    out = cs.all[1](c)
    assert out["Guinier.Rg"] is None and out["Guinier.status"].startswith("failed")


def test_missing_freesas_names_the_extra(monkeypatch):
    import saxsdog.extras as extras

    real = extras.importlib.import_module

    def fake(name, *a):
        if name.startswith("freesas"):
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(extras.importlib, "import_module", fake)
    with pytest.raises(MissingExtraError, match=r"pip install 'saxsdog\[classify\]'"):
        build_classifiers([{"Kind": "Guinier"}], ClassifierContext((10, 10)))


def test_without_classifiers_the_outputs_keep_their_bytes(shared_data, real_image):
    plain = _cal(shared_data)
    empty = _cal(shared_data, [])
    explicit = _cal(shared_data, [{"Kind": "IntegralParameters"}])
    def body(cal):  # all but the first header line, the calibration itself
        return [b.split(b"\n", 1)[1] for b in cal.chi_bytes(cal.curves(real_image, stddev=False))]

    assert body(empty) == body(plain)
    assert body(explicit) == body(plain)


def test_classifier_values_join_the_integral_parameters(shared_data, real_image, tmp_path):
    plain = _cal(shared_data)
    cal = _cal(shared_data, [{"Kind": "Guinier"}, {"Kind": "Porod"}, {"Kind": "ImageStats"}])
    base = plain.curves(real_image, stddev=False)[0].parameters
    params = cal.curves(real_image, stddev=False)[0].parameters
    assert list(params)[:5] == ["I0", "I1", "I2", "invariant", "correlation_length"]
    assert {k: params[k] for k in base} == base
    assert "Guinier.Rg" in params and "Porod.exponent" in params and params["ImageStats.max"] == float(real_image.max())
    # the .chi header's parameters line carries them (and the merge reads them from there)
    from saxsdog.io.chi import read_chi

    path = tmp_path / "x.chi"
    path.write_bytes(cal.chi_bytes(cal.curves(real_image, stddev=False))[0])
    header = read_chi(path).parameters
    assert header["Guinier.status"] == params["Guinier.status"] and header["I0"] == base["I0"]


def test_q_range_outside_the_curve_and_roi_outside_the_detector(shared_data):
    with pytest.raises(CalibrationError) as info:
        _cal(shared_data, [{"Kind": "Porod", "QRange": [50.0, 60.0]}])
    assert info.value.path == "$.Classifiers[0].QRange" and "outside the curve" in str(info.value)
    with pytest.raises(CalibrationError) as info:
        _cal(shared_data, [{"Kind": "ROI", "Rectangle": [1000, 1100, 0, 10]}])
    assert info.value.path == "$.Classifiers[0].Rectangle" and "1043×981" in str(info.value)
    with pytest.raises(CalibrationError) as info:
        _cal(shared_data, [{"Kind": "Guinier", "Alarm": {"Above": "big"}}])
    assert info.value.path == "$.Classifiers[0].Alarm.Above"


def test_every_builtin_pickles(shared_data):
    """Calibrations travel to Dask workers by pickle: the classifiers must too."""
    import pickle

    cal = _cal(shared_data, [{"Kind": "Guinier"}, {"Kind": "Porod"}, {"Kind": "RamboTainer"}, {"Kind": "CorMap"},
                             {"Kind": "ImageStats"}, {"Kind": "Zingers"}, {"Kind": "ROI", "QRange": [0.5, 1.0]}])
    for c in cal.classifiers.all:
        assert type(pickle.loads(pickle.dumps(c))) is type(c)


def test_an_alarm_on_rg():
    from classifier_helpers import sphere

    q = np.linspace(0.02, 3.0, 1003)
    cs = build_classifiers([{"Kind": "Guinier", "Alarm": {"Above": 5.0}}], ClassifierContext((10, 10), q=q))
    assert cs.alarms[0].key == "Guinier.Rg"  # the primary field
    small, large = curve(q, 1e5 * sphere(q, 3.0) + 1), curve(q, 1e5 * sphere(q, 8.0) + 1)
    it = types.SimpleNamespace(kind="Radial")
    cs.apply([small, large], [it, it], None)
    assert cs.check_alarms(small.parameters) == []
    assert cs.check_alarms(large.parameters)[0].startswith("Guinier.Rg=6.")  # √(3/5)·8 = 6.2 nm
    with pytest.raises(CalibrationError, match="Guinier has no field 'Radius'"):
        build_classifiers([{"Kind": "Guinier", "Alarm": {"Above": 1, "Key": "Radius"}}], ClassifierContext((10, 10)))


def test_curve_classifiers_use_the_background_subtracted_curve():
    from classifier_helpers import sphere

    q = np.linspace(0.02, 3.0, 1003)
    cs = build_classifiers([{"Kind": "Guinier"}], ClassifierContext((10, 10), q=q))
    sample = curve(q, 1e5 * sphere(q, 5.0) + 1e4)  # a large flat background hides the particles' Rg
    sample.subtracted = curve(q, 1e5 * sphere(q, 5.0), np.sqrt(1e5 * sphere(q, 5.0) + 2e4))
    it = types.SimpleNamespace(kind="Radial", parameters=lambda i: {"I0": float(i.sum())})
    cs.apply([sample], [it], None)
    assert sample.parameters["Guinier.Rg"] == pytest.approx(np.sqrt(3 / 5) * 5.0, rel=0.03)
    assert sample.parameters["I0"] == float(sample.intensity.sum())  # the original's curve
    assert not hasattr(sample, "_classifier_scratch") and not hasattr(sample.subtracted, "_classifier_scratch")


def test_values_are_json_scalars_whatever_a_classifier_returns():
    class Odd(Classifier):
        kind = "Odd"
        units = {"a": "", "b": "", "c": "", "d": ""}

        def compute(self, data, metadata=None, integrator=None):
            return {"a": np.float32(np.nan), "b": np.int64(3), "c": np.arange(2), "d": np.bool_(True)}

    out = Odd({"Kind": "Odd"}, ClassifierContext((1, 1)))(None)
    assert out == {"Odd.a": None, "Odd.b": 3, "Odd.c": "[0 1]", "Odd.d": True}
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_a_classifier_must_implement_compute():
    from saxsdog.classifiers.base import Classifier

    class Incomplete(Classifier):
        kind = "Incomplete"
        units = {"x": ""}

    with pytest.raises(TypeError, match="compute"):
        Incomplete({"Kind": "Incomplete"}, None)  # type: ignore[abstract]
