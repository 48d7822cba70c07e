"""CorMap frame similarity (Bonferroni-corrected) and averaging with rejection."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.classifiers.average import Averager, average_frames

from classifier_helpers import classifier, curve, sphere

Q = np.linspace(0.02, 3.0, 1003)
MODEL = 1e5 * sphere(Q, 4.0) + 50.0


def _frame(rng, scale=1.0, low_q_change=0.0):
    model = MODEL * scale
    if low_q_change:
        model = model * np.where(Q < 0.5, 1.0 + low_q_change, 1.0)
    counts = rng.poisson(model).astype(np.float64)
    return curve(Q, counts, np.sqrt(np.maximum(counts, 1.0)))


def test_identical_poisson_realizations_give_uniform_p():
    """CorMap's P is discrete (it depends on the longest run only): uniform means that P ≤ p
    happens with probability p at each value p it takes, within binomial errors."""
    from scipy import stats

    rng = np.random.default_rng(11)
    c = classifier({"Kind": "CorMap", "Reference": "previous"}, Q)
    p = np.array([c(_frame(rng), {"previous": _frame(rng)})["CorMap.P"] for _ in range(600)])  # independent pairs
    values = np.unique(p)
    assert values.size >= 4
    for v in values[values < 0.9]:
        observed = np.mean(p <= v)
        assert abs(observed - v) <= 4 * np.sqrt(v * (1 - v) / p.size) + 1e-3, (v, observed)
    # and the randomized P (uniform within each step) passes a Kolmogorov-Smirnov test
    lower = np.array([values[values < x].max() if (values < x).any() else 0.0 for x in p])
    randomized = lower + rng.uniform(size=p.size) * (p - lower)
    assert stats.kstest(randomized, "uniform").pvalue > 0.01


def test_a_one_percent_low_q_change_is_flagged_and_bonferroni_is_applied():
    rng = np.random.default_rng(5)
    c = classifier({"Kind": "CorMap", "Reference": "previous"}, Q)
    first = _frame(rng)
    assert c(first)["CorMap.status"] == "reference: no previous frame"  # no previous frame
    same = c(_frame(rng), {"previous": first})
    assert same["CorMap.similar"] is True
    changed = c(_frame(rng, low_q_change=0.01), {"previous": first})
    assert changed["CorMap.similar"] is False and changed["CorMap.P_adjusted"] < 0.01
    # the second comparison of the run: P is multiplied by 2
    assert changed["CorMap.P_adjusted"] == pytest.approx(min(1.0, 2 * changed["CorMap.P"]))
    fixed = classifier({"Kind": "CorMap", "Comparisons": 100}, Q)
    out = fixed(_frame(rng), {"previous": first})
    assert out["CorMap.P_adjusted"] == pytest.approx(min(1.0, 100 * out["CorMap.P"]))


def test_background_reference_reads_a_chi_file(tmp_path):
    from saxsdog.io.chi import write_chi

    rng = np.random.default_rng(2)
    bg = _frame(rng)
    write_chi(tmp_path / "buffer.chi", [Q, bg.intensity, bg.poisson])
    c = classifier({"Kind": "CorMap", "Reference": "background", "File": "buffer.chi"}, Q, base_dir=tmp_path)
    assert c(_frame(rng))["CorMap.similar"] is True
    assert c(_frame(rng, scale=1.05))["CorMap.similar"] is False
    from saxsdog.errors import CalibrationError

    with pytest.raises(CalibrationError, match=r"\$\.Classifiers\[0\]\.File"):
        classifier({"Kind": "CorMap", "Reference": "background"}, Q)


def test_averaging_rejects_the_three_scaled_frames():
    rng = np.random.default_rng(9)
    scaled = {4, 11, 17}
    frames = [_frame(rng, 1.05 if i in scaled else 1.0) for i in range(20)]
    avg = Averager({"Every": 20})
    result = None
    for i, f in enumerate(frames):
        result = avg.add(f"img_{i:05d}.tif", f.x, f.intensity, f.poisson)
    assert result is not None and result.complete
    assert sorted(result.rejected) == [f"img_{i:05d}.tif" for i in sorted(scaled)]
    assert len(result.kept) == 17
    good = np.array([f.intensity for i, f in enumerate(frames) if i not in scaled])
    np.testing.assert_allclose(result.intensity, good.mean(axis=0))
    expected_error = np.sqrt((np.array([f.poisson for i, f in enumerate(frames) if i not in scaled]) ** 2).sum(0)) / 17
    np.testing.assert_allclose(result.error, expected_error)
    # the merged curve equals the model within its errors (the 17 are unbiased)
    pull = (result.intensity - MODEL) / result.error
    assert abs(pull.mean()) < 0.2 and 0.8 < pull.std() < 1.2


def test_average_groups_by_pattern_and_folder():
    rng = np.random.default_rng(1)
    f = _frame(rng)
    by_name = Averager({"Pattern": r"^(\w+?)_\d+"})
    by_name.add("lysozyme_001.tif", f.x, f.intensity, f.poisson)
    r = by_name.add("lysozyme_002.tif", f.x, f.intensity, f.poisson)
    assert r.group == "lysozyme" and len(r.kept) == 2
    assert by_name.add("other.tif", f.x, f.intensity, f.poisson) is None
    by_folder = Averager({"Folder": True})
    assert by_folder.add("s1/a.tif", f.x, f.intensity, f.poisson).group == "s1"
    from saxsdog.errors import CalibrationError

    with pytest.raises(CalibrationError, match="exactly one of Every, Pattern or Folder"):
        Averager({"Every": 3, "Folder": True})
    with pytest.raises(CalibrationError, match="regular expression"):
        Averager({"Pattern": "("})


def test_average_frames_keeps_identical_frames():
    i = np.tile(MODEL, (3, 1))
    mean, err, kept, probs = average_frames(i, np.sqrt(i))
    assert kept == [0, 1, 2]


def test_every_n_groups_by_frame_number_even_when_the_first_frame_arrives_second():
    rng = np.random.default_rng(8)
    avg = Averager({"Every": 2})
    f = [_frame(rng) for _ in range(4)]
    first = avg.add("img_00002.tif", f[0].x, f[0].intensity, f[0].poisson)  # overtook img_00001
    assert first.group == "frames_000002"
    r = avg.add("img_00001.tif", f[1].x, f[1].intensity, f[1].poisson)
    assert avg.dropped == ["frames_000002"]  # renamed: its output is removed
    assert r.group == "frames_000001" and r.complete and sorted(r.kept) == ["img_00001.tif", "img_00002.tif"]
    assert avg.add("img_00003.tif", f[2].x, f[2].intensity, f[2].poisson).group == "frames_000003"
