"""bench_soak's memory verdict: "flat" only when the RSS slope is within its noise and small."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_soak  # noqa: E402

FRAMES = list(range(0, 100_001, 5000))


def _verdict(mib):
    slope = bench_soak._robust_slope_per_10k(FRAMES, list(mib))
    interval = bench_soak._theil_sen_interval(FRAMES, list(mib))
    return slope, interval, bench_soak.memory_verdict(slope, interval)


def test_a_steady_growth_is_not_called_flat():
    """3.7 MiB per 10k frames (the coordinator before this round) grows; so does 1 MiB/10k
    (the old threshold called that flat)."""
    rng = np.random.default_rng(0)
    x = np.asarray(FRAMES, float)
    for per_10k in (3.7, 1.0):
        slope, (lo, hi), verdict = _verdict(200 + per_10k * x / 1e4 + rng.normal(0, 0.3, x.size))
        assert verdict == "grows" and lo <= slope <= hi and lo > 0


def test_noise_around_a_flat_line_is_flat_and_its_interval_includes_0():
    rng = np.random.default_rng(1)
    slope, (lo, hi), verdict = _verdict(220 + rng.normal(0, 0.8, len(FRAMES)))
    assert verdict == "flat" and lo <= 0 <= hi


def test_a_small_but_certain_growth_below_the_threshold_is_flat():
    x = np.asarray(FRAMES, float)
    assert _verdict(200 + 0.2 * x / 1e4)[2] == "flat"


def test_a_small_slope_with_an_interval_reaching_above_the_threshold_is_undecided():
    assert bench_soak.memory_verdict(0.4, (0.1, 0.9)) == "undecided"
    assert bench_soak.memory_verdict(float("nan"), (float("nan"), float("nan"))).startswith("undecided")


def test_the_interval_matches_sens_rank_interval():
    """Checked against scipy.stats.theilslopes where scipy is installed."""
    import pytest

    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    x = np.asarray(FRAMES, float)
    y = 200 + 0.5 * x / 1e4 + rng.normal(0, 0.5, x.size)
    keep = x >= bench_soak.WARM_UP_FRAMES
    ref = stats.theilslopes(y[keep], x[keep], 0.95)
    lo, hi = bench_soak._theil_sen_interval(FRAMES, list(y))
    assert np.isclose(lo, ref.low_slope * 1e4) and np.isclose(hi, ref.high_slope * 1e4)


def test_a_run_shorter_than_the_warm_up_is_undecided():
    """--quick's 400 frames measure the bounded records filling up, not a growth."""
    sys.path.insert(0, str(BENCH))
    from _harness import Report

    rep = Report("t")
    frames = list(range(0, 401, 100))
    verdict = bench_soak._add_slope_rows(rep, frames, [200 + f / 100 for f in frames], "coordinator", "mem_coord")
    assert verdict.startswith("undecided") and rep.value("mem_coord_flat") == 0.0
    assert rep.value("mem_coord_robust_slope_mib_per_10k") > 0
