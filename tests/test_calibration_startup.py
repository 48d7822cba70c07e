"""A calibration's start-up from the cache: the per-pixel correction factor and the loaded
document kept beside the operators."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.core import integrators

POLARIZATION = {"Fraction": 0.99, "Angle": 0.0}


@pytest.fixture
def corrected_cal(data_dir, tmp_path):
    """cal.json with solid angle and polarization (the factor the store keeps)."""
    from saxsdog.config import CALIBRATION

    raw = json.loads((data_dir / "cal.json").read_text())
    raw["Masks"][0]["MaskFile"] = str((data_dir / raw["Masks"][0]["MaskFile"]).resolve())
    raw["PolarizationCorrection"] = dict(POLARIZATION)
    raw["Version"] = CALIBRATION.current_version
    raw["Corrections"] = {"SolidAngle": True, "ErrorModel": "poisson"}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(raw))
    return path


def _factor_files(cache):
    return sorted(cache.glob("*-factor-*.npz"))


def test_a_second_load_reads_the_stored_factor_and_gives_the_same_bytes(corrected_cal, tmp_path, real_image,
                                                                         monkeypatch):
    """The first load stores the factor beside the operator; the next one reads it instead of
    computing the solid angle and polarization of every pixel, and its .chi bytes are those of
    a calibration built without any cache."""
    cache = tmp_path / "cache"
    reference = Calibration(corrected_cal, cache=False)
    Calibration(corrected_cal, cache=cache)
    assert len(_factor_files(cache)) == 1

    def not_again(*args, **kwargs):
        raise AssertionError("the factor was computed again")

    monkeypatch.setattr(integrators, "pixel_factor", not_again)
    monkeypatch.setattr(integrators, "pack_factor", not_again)
    loaded = Calibration(corrected_cal, cache=cache)
    np.testing.assert_array_equal(loaded.integrators[0]._factor, reference.integrators[0]._factor)
    assert loaded.chi_bytes(loaded.curves(real_image)) == reference.chi_bytes(reference.curves(real_image))


def test_another_polarization_is_another_entry(corrected_cal, tmp_path, real_image):
    cache = tmp_path / "cache"
    Calibration(corrected_cal, cache=cache)
    raw = json.loads(corrected_cal.read_text())
    raw["PolarizationCorrection"]["Fraction"] = 0.5
    other = tmp_path / "other.json"
    other.write_text(json.dumps(raw))
    second = Calibration(other, cache=cache)
    assert len(_factor_files(cache)) == 2
    reference = Calibration(other, cache=False)
    assert second.chi_bytes(second.curves(real_image)) == reference.chi_bytes(reference.curves(real_image))


def test_a_corrupt_stored_factor_is_recomputed(corrected_cal, tmp_path, real_image, caplog):
    cache = tmp_path / "cache"
    Calibration(corrected_cal, cache=cache)
    (stored,) = _factor_files(cache)
    stored.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="saxsdog.calibration"):
        again = Calibration(corrected_cal, cache=cache)
    assert "ignoring unreadable cached factor" in caplog.text
    reference = Calibration(corrected_cal, cache=False)
    assert again.chi_bytes(again.curves(real_image)) == reference.chi_bytes(reference.curves(real_image))


def test_no_factor_is_stored_without_geometric_corrections(data_dir, tmp_path):
    """cal.json as it is (no solid angle, polarization in the operator): nothing to store."""
    cache = tmp_path / "cache"
    Calibration(data_dir / "cal.json", cache=cache)
    assert _factor_files(cache) == []


# -- the loaded document, remembered ---------------------------------------------------

def test_a_document_loaded_before_is_not_checked_again(corrected_cal, tmp_path, monkeypatch):
    """The second load of the same document takes its loaded form from the cache: equal to a
    fresh load, without the schema check (the jsonschema package is not needed)."""
    from saxsdog.config import CALIBRATION

    cache = tmp_path / "cache"
    first = Calibration(corrected_cal, cache=cache)
    assert len(list(cache.glob("config-*.json"))) == 1

    def not_again(doc):
        raise AssertionError("checked again")

    monkeypatch.setattr(CALIBRATION.doc, "check", not_again)
    second = Calibration(corrected_cal, cache=cache)
    monkeypatch.undo()
    assert second.config == first.config == Calibration(corrected_cal, cache=False).config


def test_an_invalid_document_fails_every_time_and_is_not_remembered(corrected_cal, tmp_path):
    from saxsdog.errors import CalibrationError

    cache = tmp_path / "cache"
    raw = json.loads(corrected_cal.read_text())
    raw["Wavelength"] = "short"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    for _ in range(2):
        with pytest.raises(CalibrationError, match="Wavelength"):
            Calibration(bad, cache=cache)
    assert list(cache.glob("config-*.json")) == []


def test_a_changed_document_or_a_corrupt_entry_is_loaded_again(corrected_cal, tmp_path):
    cache = tmp_path / "cache"
    Calibration(corrected_cal, cache=cache)
    (entry,) = cache.glob("config-*.json")
    entry.write_text("{not json")
    again = Calibration(corrected_cal, cache=cache)
    assert again.config == Calibration(corrected_cal, cache=False).config
    raw = json.loads(corrected_cal.read_text())
    raw["Wavelength"] = 1.5
    corrected_cal.write_text(json.dumps(raw))
    changed = Calibration(corrected_cal, cache=cache)
    assert changed.config["Wavelength"] == 1.5
    assert len(list(cache.glob("config-*.json"))) == 2
