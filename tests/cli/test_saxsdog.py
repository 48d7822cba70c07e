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


@pytest.mark.slow
def test_help_lists_the_original_options():
    r = run(["--help"])
    assert r.returncode == 0
    for opt in ["-c", "-t", "-m", "-w", "-r", "-o", "-R", "-s", "-p", "-P", "-S", "-n", "-D", "-V", "--demo"]:
        assert re.search(rf"(^|\s){re.escape(opt)}[ ,]", r.stdout), opt


@pytest.mark.slow
def test_usage_errors_are_clear(tmp_path, data_dir):
    # A path that names nothing (it may now be a file or a glob, so not "not a directory").
    r = run(["-c", data_dir / "cal.json", tmp_path / "absent"])
    assert r.returncode == 2 and f"{tmp_path / 'absent'}: no such file or directory" in r.stderr
    (tmp_path / "bad.json").write_text('{"Geometry": {}}')
    r = run(["-c", tmp_path / "bad.json", tmp_path])
    assert r.returncode == 2 and "$.Masks" in r.stderr and "missing" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
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
    proc.stdout.close()
    proc.stderr.close()
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_plain_progress_lines_when_not_a_terminal(data_dir, tmp_path, warm_cache):
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 400)
    r = run(["-c", data_dir / "cal.json", "-P", tmp_path / "run"])
    assert r.returncode == 0
    assert re.search(r"saxsdog: \d+/400 images, \d+ frames/s, 0 failed", r.stderr)
    assert re.search(r"mean per frame: read [\d.]+ ms, integrate [\d.]+ ms, write [\d.]+ ms", r.stdout)


@pytest.mark.slow
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


@pytest.mark.slow
def test_plots_and_monitor(data_dir, tmp_path, warm_cache):
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 2)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = run(["-c", data_dir / "cal.json", "-s", "-p", "-m", "-S", "-o", tmp_path / "out", tmp_path / "run"], env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert (out / "img_00000.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert (out / "img_00001.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results" / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without a display the user is told where the live plot goes.
    assert f"live plot of the last curve: {out / 'results' / 'monitor.png'}" in r.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end_with_known_answer(tmp_path):
    r = run(["--demo", "6", "-S"], env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 processed" in r.stdout and "-> OK" in r.stdout
    assert re.search(r"[\d.]+ frames/s", r.stdout)
    (demo,) = list(tmp_path.glob("saxsdog-demo-*"))
    assert len(list((demo / "work").glob("demo_*.chi"))) == 6 and not (demo / "images").exists()


def test_demo_check_calls_a_curve_without_error_column_a_mismatch(tmp_path):
    """A two-column curve (FIT2D's layout) cannot be judged in sigma: MISMATCH, not a TypeError."""
    import io

    from saxsdog.cli.saxsdog import _check_demo

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "demo_0.chi").write_text("demo\nq\nI\n     3\n 0.2 10.0\n 0.5 5.0\n 0.8 2.0\n")
    out = io.StringIO()
    assert _check_demo(tmp_path, 1, out) is False
    assert "MISMATCH" in out.getvalue()


@pytest.mark.slow
def test_servermode_runs_the_server(tmp_path):
    r = run(["-V", tmp_path, "--network", tmp_path / "missing.json"])
    assert r.returncode == 2 and "saxsdogserver" in r.stderr and "saxsnetconf" in r.stderr


@pytest.mark.slow
def test_files_and_globs_as_well_as_a_directory(data_dir, tmp_path, warm_cache):
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 6)
    (root / "sub").mkdir()
    link_images(data_dir / "buf1_00000.tif", root / "sub", 2, prefix="deep")
    out = tmp_path / "out"
    # What the shell passes for img_0000[01].tif, plus a quoted glob saxsdog expands itself.
    r = run(["-c", data_dir / "cal.json", "-S", "-o", out, root / "img_00000.tif", root / "img_00001.tif",
             str(root / "**" / "deep_*.tif")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 processed" in r.stdout
    assert sorted(p.name for p in out.glob("*.chi")) == [
        "img_00000.chi", "img_00001.chi", "sub_deep_00000.chi", "sub_deep_00001.chi"]
    # Default placement (../work beside the images) is unchanged for files.
    r = run(["-c", data_dir / "cal.json", "-S", root / "img_00005.tif"])
    assert r.returncode == 0 and (tmp_path / "work" / "img_00005.chi").is_file()
    r = run(["-c", data_dir / "cal.json", "-S", str(root / "nothing_*.tif")])
    assert r.returncode == 2 and "no file matches" in r.stderr
    r = run(["-c", data_dir / "cal.json", "-w", root / "img_00000.tif"])
    assert r.returncode == 2 and "-w watches one DIRECTORY" in r.stderr


@pytest.mark.slow
def test_empty_folder_says_so_with_exit_code_1(data_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(["-c", data_dir / "cal.json", "-S", empty])
    assert r.returncode == 1
    assert f"no images found in {empty}" in r.stderr and "processed" not in r.stdout
    (empty / "notes.txt").write_text("not an image")
    r = run(["-c", data_dir / "cal.json", "-S", empty])
    assert r.returncode == 1 and "1 other file(s) ignored" in r.stderr
    assert "no images found" in run(["--help"]).stdout  # the exit code is documented


@pytest.mark.slow
def test_directory_filter_selecting_nothing_is_explained(data_dir, tmp_path):
    import json

    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 2)
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Directory"] = ["elsewhere"]
    cal["Masks"][0]["MaskFile"] = str(data_dir / "AAA_integ.msk")
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    r = run(["-c", tmp_path / "cal.json", "-S", tmp_path / "run"])
    assert r.returncode == 1
    assert "Directory ['elsewhere'] selects none of the 2 image(s)" in r.stderr


@pytest.mark.slow
def test_many_failures_for_one_reason_are_one_summary(data_dir, tmp_path):
    import numpy as np
    import tifffile

    root = tmp_path / "run"
    root.mkdir()
    for i in range(40):
        tifffile.imwrite(root / f"small_{i:03d}.tif", np.zeros((100, 120), np.int32))
    r = run(["-c", data_dir / "cal.json", "-S", root])
    assert r.returncode == 1
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    # the reader refuses the size from the header, before reading the pixels
    assert failed == ["FAILED 40 images: not a 1043×981 image (header declares 100×120, rows×columns)"]
    assert "first: small_000.tif, small_001.tif, small_002.tif, ..." in r.stdout
    assert f"the calibration {data_dir / 'cal.json'} is for images of 1043 x 981 pixels" in r.stdout
    assert len(r.stdout.splitlines()) < 8


def test_failure_report_groups_by_reason():
    from saxsdog.cli.saxsdog import failure_report

    failures = {f"/d/a{i}.tif": f"still incomplete after 10.{i} s: /d/a{i}.tif: {1000 + i} of 4096 bytes"
                for i in range(5)}
    failures["/d/x.tif"] = "cannot read: bad magic"
    lines = failure_report(failures)
    assert lines[0].startswith("FAILED 5 images: still incomplete after 10.0 s") and "(details differ)" in lines[0]
    assert lines[1] == "  first: a0.tif, a1.tif, a2.tif, ... (in /d)"
    assert "--retry-timeout" in lines[2]
    assert lines[3] == "FAILED /d/x.tif: cannot read: bad magic"
    # Two wrong sizes are two problems, each with its own cause.
    shape = "image is {} rows x {} columns but 1043 rows x 981 columns were expected"
    failures = {f"/d/s{i}.tif": shape.format(100, 120) for i in range(4)}
    failures.update({f"/d/t{i}.tif": shape.format(619, 487) for i in range(4)})
    summary = [line for line in failure_report(failures) if line.startswith("FAILED")]
    assert sorted(summary) == [f"FAILED 4 images: {shape.format(100, 120)}", f"FAILED 4 images: {shape.format(619, 487)}"]


@pytest.mark.slow
def test_missing_calibration_and_mask_files_are_named(data_dir, tmp_path):
    import json

    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 1)
    r = run(["-c", os.path.relpath(tmp_path / "nocal.json"), tmp_path / "run"])  # a relative path
    assert r.returncode == 2 and f"calibration file not found: {tmp_path / 'nocal.json'}" in r.stderr
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Masks"][0]["MaskFile"] = "gone.msk"
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    r = run(["-c", tmp_path / "cal.json", tmp_path / "run"])
    assert r.returncode == 2
    # the resolved path and the field that named it
    assert f"at $.Masks[0].MaskFile: mask file not found: {tmp_path / 'gone.msk'}" in r.stderr


@pytest.mark.slow
def test_warns_of_inverted_mask_and_header_wavelength(data_dir, tmp_path):
    import json

    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 1)
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Masks"][0]["MaskFile"] = str(data_dir / "mask.tif")  # 255 = valid: the inverse of a mask
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    r = run(["-c", tmp_path / "cal.json", "-S", "-o", tmp_path / "out", tmp_path / "run"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"warning: Masks\[0\]\.MaskFile .*mask\.tif masks 65 % of the detector's pixels: "
                     r"is it inverted\?", r.stderr)
    # The Pilatus header of the real image says 1.54987 Å, cal.json 1.54 Å.
    assert "gives the wavelength 1.54987 Å, the calibration 1.54 Å" in r.stderr
    # The shipped FIT2D mask (a set bit = masked) gives no mask warning.
    r = run(["-c", data_dir / "cal.json", "-S", "-o", tmp_path / "out2", tmp_path / "run"])
    assert r.returncode == 0 and "masks" not in r.stderr and "1.54987" in r.stderr


def test_the_summary_counts_the_frames_in_alarm(tmp_path):
    import json
    from datetime import datetime

    import numpy as np

    from saxsdog.testing import small_calibration, write_pilatus_tiff

    cal = small_calibration(Classifiers=[{"Kind": "ImageStats", "Alarm": {"Above": 50.0}}])
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    for i, level in enumerate((10, 100)):
        write_pilatus_tiff(tmp_path / "run" / f"a_{i:05d}.tif", np.full((64, 48), level, dtype=np.int32),
                           datetime(2026, 1, 1, 12, 0, i))
    r = run(["-c", str(tmp_path / "cal.json"), "-o", str(tmp_path / "out"), "-S", str(tmp_path / "run")])
    assert r.returncode == 0, r.stderr
    assert "1 frame(s) in alarm; the latest: a_00001.tif: ImageStats.max=100 above 50" in r.stdout + r.stderr
