"""The saxsdog command as a user runs it: a real subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saxsdog.testing import link_images

SAXSDOG = [sys.executable, "-m", "saxsdog.cli.saxsdog"]


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(SAXSDOG + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture
def warm_cache(data_dir):
    """Build the operator once so every subprocess starts from the cache."""
    from saxsdog import Calibration

    Calibration(data_dir / "cal.json")


def test_help_lists_the_original_options():
    r = run(["--help"])
    assert r.returncode == 0
    for opt in ["-c", "-t", "-m", "-w", "-r", "-o", "-R", "-s", "-p", "-P", "-S", "-n", "-D", "-V", "--demo"]:
        assert re.search(rf"(^|\s){re.escape(opt)}[ ,]", r.stdout), opt


def test_usage_errors_are_clear(tmp_path, data_dir):
    r = run(["-c", data_dir / "cal.json", tmp_path / "absent"])
    assert r.returncode == 2 and "not a directory" in r.stderr
    (tmp_path / "bad.json").write_text('{"Geometry": {}}')
    r = run(["-c", tmp_path / "bad.json", tmp_path])
    assert r.returncode == 2 and "$.Masks" in r.stderr and "missing" in r.stderr and "Traceback" not in r.stderr


def test_two_hundred_images_then_kill_and_resume(data_dir, tmp_path, warm_cache):
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 200)
    work = tmp_path / "work"
    proc = subprocess.Popen(SAXSDOG + ["-c", str(data_dir / "cal.json"), "-S", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if work.is_dir() and len(list(work.glob("*.chi"))) >= 60:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run, workers included
    proc.wait()
    done_before = {p.name for p in work.glob("*.chi")}
    assert 0 < len(done_before) < 200, "the kill must land half-way"
    r = run(["-c", data_dir / "cal.json", "-r", "-S", tmp_path / "run"])
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"(\d+) processed, (\d+) skipped", r.stdout)
    assert int(m.group(1)) == 200 - len(done_before) and int(m.group(2)) == len(done_before)
    outs = sorted(work.glob("*.chi"))
    assert len(outs) == 200
    assert not list(work.glob(".*.part"))
    from saxsdog import Calibration
    import fabio

    expected = tmp_path / "expected.chi"
    Calibration(data_dir / "cal.json").write_chi(fabio.open(str(data_dir / "buf1_00000.tif")).data, expected)
    ref = expected.read_bytes()
    assert all(o.read_bytes() == ref for o in outs)


def test_failures_give_exit_code_and_summary(data_dir, tmp_path, warm_cache):
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 3)
    raw = (data_dir / "buf1_00000.tif").read_bytes()
    (root / "truncated.tif").write_bytes(raw[:100_000])
    (root / "fake.tif").write_text("no image")
    r = run(["-c", data_dir / "cal.json", "-S", "--retry-timeout", "0.3", root])
    assert r.returncode == 1
    assert "3 processed" in r.stdout and "2 failed" in r.stdout
    assert re.search(r"FAILED .*truncated.tif: still incomplete", r.stdout)
    assert re.search(r"FAILED .*fake.tif: ", r.stdout)


def test_plain_progress_lines_when_not_a_terminal(data_dir, tmp_path, warm_cache):
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 400)
    r = run(["-c", data_dir / "cal.json", "-P", tmp_path / "run"])
    assert r.returncode == 0
    assert re.search(r"saxsdog: \d+/400 images, \d+ frames/s, 0 failed", r.stderr)
    assert re.search(r"mean per frame: read [\d.]+ ms, integrate [\d.]+ ms, write [\d.]+ ms", r.stdout)


def test_slow_writer_while_watching_is_processed_once(data_dir, tmp_path, warm_cache):
    root = tmp_path / "run"
    root.mkdir()
    proc = subprocess.Popen(SAXSDOG + ["-c", str(data_dir / "cal.json"), "-w", "-S", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # let it start watching
        raw = (data_dir / "buf1_00000.tif").read_bytes()
        with open(root / "slow.tif", "wb") as fh:
            for i in range(0, len(raw), 400_000):
                fh.write(raw[i:i + 400_000])
                fh.flush()
                time.sleep(0.15)
        (root / "sub").mkdir()
        shutil.copy(data_dir / "buf1_00000.tif", root / "sub" / "later.tif")
        filelist = tmp_path / "work" / "results" / "filelist.txt"
        deadline = time.monotonic() + 30
        seen = ""
        while time.monotonic() < deadline:
            seen = filelist.read_text() if filelist.exists() else ""
            if len(seen.splitlines()) >= 3:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # give late duplicate events a chance to show up
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    lines = filelist.read_text().splitlines()[1:]
    assert sorted(Path(l.split("\t")[0]).name for l in lines) == ["later.tif", "slow.tif"], \
        f"file list while running:\n{seen}\nstdout:\n{out}\nstderr:\n{err}"
    assert "2 processed" in out and "0 failed" in out
    assert proc.returncode == 130 and "interrupted" in out


def test_plots_and_monitor(data_dir, tmp_path, warm_cache):
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 2)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = run(["-c", data_dir / "cal.json", "-s", "-p", "-m", "-S", "-o", tmp_path / "out", tmp_path / "run"], env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert (out / "img_00000.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert (out / "img_00001.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results" / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_runs_end_to_end_with_known_answer(tmp_path):
    r = run(["--demo", "6", "-S"], env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 processed" in r.stdout and "-> OK" in r.stdout
    assert re.search(r"[\d.]+ frames/s", r.stdout)
    (demo,) = list(tmp_path.glob("saxsdog-demo-*"))
    assert len(list((demo / "work").glob("demo_*.chi"))) == 6 and not (demo / "images").exists()


def test_servermode_runs_the_server(tmp_path):
    r = run(["-V", tmp_path, "--network", tmp_path / "missing.json"])
    assert r.returncode == 2 and "saxsdogserver" in r.stderr and "saxsnetconf" in r.stderr
