"""The benchmark harness: JSON reports, the README table regenerated from them, quick mode."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402
import readme_table  # noqa: E402


def test_report_json_has_machine_commit_and_rows(tmp_path):
    args = argparse.Namespace(quick=False, json=tmp_path / "r.json")
    rep = _harness.Report("title", args)
    rep.add("frames per second", 123.456, "frames/s", ">= 100", key="fps")
    rep.section("a heading")
    rep.finish()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert data["commit"] and data["date"].startswith("20")
    assert data["rows"] == [{"key": "fps", "name": "frames per second", "value": 123.456, "unit": "frames/s",
                             "target": ">= 100", "note": ""}]


def test_check_fails_on_a_wrong_result():
    rep = _harness.Report("t")
    rep.check(True, "fine")
    with pytest.raises(_harness.BenchmarkFailure, match="t: 3 files for 4 images"):
        rep.check(False, "3 files for 4 images")


def test_readme_table_is_regenerated_between_the_markers(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    rep = _harness.Report("End to end", argparse.Namespace(quick=False, json=results / "a.json"))
    rep.add("the saxsdog command", 912.3, "frames/s", ">= 900", key="fps")
    rep.finish()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_table.START}\nold typed figures\n{readme_table.END}\noutro\n")
    argv = [sys.executable, str(BENCH / "readme_table.py"), "--results", str(results), "--readme", str(readme)]
    assert subprocess.run(argv + ["--check"]).returncode == 1
    assert subprocess.run(argv).returncode == 0
    text = readme.read_text()
    assert "old typed figures" not in text and "| the saxsdog command | 912 frames/s | >= 900 |" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert subprocess.run(argv + ["--check"]).returncode == 0


def test_quick_lists_the_scripts_built_on_the_harness():
    import quick

    names = [p.name for p in quick.quick_scripts()]
    assert "bench_pipeline.py" in names
    # every benchmark script is on the harness, so CI's quick run exercises and checks all of them
    every = sorted(p.name for p in BENCH.glob("bench_*.py"))
    assert names == every
    for name in ("bench_calibrate.py", "bench_classifiers.py", "bench_modes.py", "bench_sigma_clip.py",
                 "bench_server.py", "bench_integrate.py", "bench_large.py", "bench_stream.py", "bench_dask.py",
                 "bench_soak.py"):
        assert name in names


@pytest.mark.parametrize("name", ["bench_calibrate.py", "bench_classifiers.py", "bench_modes.py",
                                  "bench_sigma_clip.py", "bench_server.py"])
def test_converted_scripts_offer_quick_and_json(name):
    run = subprocess.run([sys.executable, str(BENCH / name), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "--quick" in run.stdout and "--json" in run.stdout and "--data" in run.stdout


def test_values_keep_their_significant_digits():
    assert _harness.format_value(4.56e-4) == "4.56e-04"
    assert _harness.format_value(0.0) == "0" and _harness.format_value(12000.0) == "12,000"
    assert _harness.format_value(0.599) == "0.599" and _harness.format_value(912.3) == "912"
