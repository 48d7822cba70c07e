"""The one image walker: hidden folders, FIFOs and devices, symbolic links and the base."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from saxsdog.errors import ImageError
from saxsdog.io.images import (
    count_frames,
    is_image_file,
    iter_images,
    read_header,
    read_image,
)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def _tiff(path: Path, value: int = 1) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((4, 3), value, dtype=np.int32))
    return path


def _no_block(fn, timeout: float = 5.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it blocks."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked (a FIFO was opened)"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _rel(paths, top: Path) -> list[str]:
    return [os.path.relpath(p, top) for p in paths]


def test_walker_order_and_hidden_rules(tmp_path):
    for rel in ("b.tif", "a.cbf.bz2", "sub/c.tif", "sub/.hidden/d.tif", ".e.tif", "sub/x.txt",
                "s_data_000001.h5", "z.tif.part"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    skipped: list[tuple[str, str]] = []
    found = list(iter_images(tmp_path, on_skip=lambda p, r: skipped.append((p, r))))
    assert _rel(found, tmp_path) == ["a.cbf.bz2", "b.tif", "sub/c.tif"]
    assert sorted(_rel([p for p, _ in skipped], tmp_path)) == [
        "s_data_000001.h5", "sub/x.txt", "z.tif.part"]
    assert _rel(iter_images(tmp_path, recursive=False), tmp_path) == ["a.cbf.bz2", "b.tif"]
    assert _rel(iter_images(tmp_path, pattern="b*"), tmp_path) == ["b.tif"]


def test_feeder_merge_and_queue_walks_share_the_rules(tmp_path):
    from saxsdog.feeder import list_images
    from saxsdog.merge import _find_images
    from saxsdog.pipeline.sources import walk_images

    for rel in ("a.tif", "sub/b.edf.bz2", ".h/c.tif", "sub/n.txt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    want = [str(tmp_path / "a.tif"), str(tmp_path / "sub" / "b.edf.bz2")]
    assert [str(p) for p in list_images(tmp_path)] == want
    assert [str(p) for p in _find_images(tmp_path, "*", True)] == want
    assert walk_images(tmp_path) == (want, 1)
    assert walk_images(tmp_path, in_threads=True) == (want, 1)


# --------------------------------------------------------------------------- #
# FIFOs and devices are never opened
# --------------------------------------------------------------------------- #


@needs_fifo
def test_reading_a_fifo_named_like_an_image_fails_at_once(tmp_path):
    fifo = tmp_path / "x.tif"
    os.mkfifo(fifo)
    for fn in (read_image, read_header, count_frames):
        with pytest.raises(ImageError) as info:
            _no_block(lambda fn=fn: fn(fifo))
        assert "FIFO" in info.value.reason and not info.value.retryable
        assert str(fifo) in str(info.value)


def test_reading_a_device_fails_at_once(tmp_path):
    link = tmp_path / "zero.tif"
    os.symlink("/dev/zero", link)
    with pytest.raises(ImageError) as info:
        _no_block(lambda: read_image(link))
    assert "character device" in info.value.reason


@needs_fifo
def test_fifo_swapped_in_after_the_check_does_not_block(tmp_path, monkeypatch):
    """The type is checked again on the opened descriptor (O_NONBLOCK + fstat)."""
    from saxsdog.io.images import _base

    target = _tiff(tmp_path / "x.tif")
    real_stat = os.stat
    swapped = {}

    def stat_then_swap(path, *a, **k):
        st = real_stat(path, *a, **k)
        if str(path) == str(target) and not swapped:
            swapped["done"] = True
            os.unlink(target)
            os.mkfifo(target)
        return st

    monkeypatch.setattr(_base.os, "stat", stat_then_swap)
    with pytest.raises(ImageError) as info:
        _no_block(lambda: read_image(target))
    assert swapped and "FIFO" in info.value.reason


@needs_fifo
def test_walker_skips_a_fifo_with_a_warning(tmp_path, caplog):
    _tiff(tmp_path / "a.tif")
    os.mkfifo(tmp_path / "x.tif")
    skipped = []
    with caplog.at_level(logging.WARNING):
        found = _no_block(lambda: list(iter_images(tmp_path, on_skip=lambda p, r: skipped.append(r))))
    assert _rel(found, tmp_path) == ["a.tif"]
    assert skipped == ["not a regular file"]
    assert any("x.tif" in r.getMessage() and "FIFO" in r.getMessage() for r in caplog.records)
    assert is_image_file(tmp_path / "x.tif")  # by name
    assert not is_image_file(tmp_path / "x.tif", check_file=True)


@needs_fifo
def test_queue_walk_and_watcher_skip_a_fifo(tmp_path):
    from saxsdog.pipeline.sources import DirectoryWatcher, walk_images

    os.mkfifo(tmp_path / "x.tif")
    assert _no_block(lambda: walk_images(tmp_path)) == ([], 1)
    watcher = DirectoryWatcher(tmp_path, lambda p: None)
    assert not watcher.accepts(str(tmp_path / "x.tif"))


@needs_fifo
@pytest.mark.slow
def test_a_batch_run_with_a_fifo_in_the_folder_finishes(tmp_path, data_dir):
    """End to end: ``saxsdog`` over a folder with a FIFO named x.tif does not hang."""
    import subprocess
    import sys

    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(data_dir / "buf1_00000.tif", folder / "a.tif")
    os.mkfifo(folder / "x.tif")
    import saxsdog

    env = dict(os.environ, PYTHONPATH=str(Path(saxsdog.__file__).resolve().parents[1]))
    run = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c",
                          str(data_dir / "cal.json"), str(folder)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "x.tif" in run.stderr and "FIFO" in run.stderr
    assert (tmp_path / "work" / "a.chi").is_file()


# --------------------------------------------------------------------------- #
# Confinement to a base directory
# --------------------------------------------------------------------------- #


@pytest.fixture
def base_and_outside(tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    _tiff(base / "q" / "in.tif")
    _tiff(outside / "secret.tif", 7)
    _tiff(outside / "dir" / "deep.tif", 8)
    return base, outside


def test_symlink_to_an_outside_file_is_skipped_with_a_warning(base_and_outside, caplog):
    base, outside = base_and_outside
    os.symlink(outside / "secret.tif", base / "q" / "link.tif")
    _tiff(base / "other.tif")
    os.symlink(base / "other.tif", base / "q" / "inside_link.tif")  # inside: kept
    with caplog.at_level(logging.WARNING):
        found = list(iter_images(base / "q", confine_to=base))
    assert _rel(found, base / "q") == ["in.tif", "inside_link.tif"]
    assert any("link.tif" in r.getMessage() and "outside" in r.getMessage()
               for r in caplog.records)
    # without confinement the link is followed, as before
    assert "link.tif" in _rel(iter_images(base / "q"), base / "q")


def test_folder_replaced_by_a_symlink_to_an_outside_folder(base_and_outside):
    base, outside = base_and_outside
    shutil.rmtree(base / "q")
    os.symlink(outside, base / "q")
    assert list(iter_images(base / "q", confine_to=base)) == []
    # a linked sub-folder is never descended into
    os.symlink(outside / "dir", base / "sub")
    assert list(iter_images(base, confine_to=base)) == []


def test_queue_walk_and_watcher_are_confined(base_and_outside):
    from saxsdog.pipeline.sources import DirectoryWatcher, walk_images

    base, outside = base_and_outside
    os.symlink(outside / "secret.tif", base / "q" / "link.tif")
    q = base / "q"
    images, _ = walk_images(q, confine_to=base)
    assert _rel(images, q) == ["in.tif"]
    images, _ = walk_images(q, in_threads=True, confine_to=base)
    assert _rel(images, q) == ["in.tif"]
    watcher = DirectoryWatcher(q, lambda p: None, confine_to=base)
    assert watcher.accepts(str(q / "in.tif"))
    assert not watcher.accepts(str(q / "link.tif"))
    # the link is resolved at use: pointing it inside makes it acceptable
    os.unlink(q / "link.tif")
    os.symlink(q / "in.tif", q / "link.tif")
    assert watcher.accepts(str(q / "link.tif"))


def test_watcher_reports_an_inside_file_but_not_an_outside_link(base_and_outside):
    from saxsdog.pipeline.sources import DirectoryWatcher

    base, outside = base_and_outside
    q = base / "q"
    seen: list[str] = []
    watcher = DirectoryWatcher(q, seen.append, confine_to=base)
    watcher.start()
    try:
        time.sleep(0.2)
        os.symlink(outside / "secret.tif", q / "evil.tif")
        _tiff(q / "new.tif")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(p.endswith("new.tif") for p in seen):
            time.sleep(0.05)
    finally:
        watcher.stop()
    assert any(p.endswith("new.tif") for p in seen)
    assert not any(p.endswith("evil.tif") for p in seen)


@needs_fifo
def test_merge_image_table_over_a_folder_with_a_fifo_does_not_block(tmp_path):
    pytest.importorskip("pandas")
    from saxsdog.merge import image_table

    _tiff(tmp_path / "a.tif")
    os.mkfifo(tmp_path / "x.tif")
    df = _no_block(lambda: image_table(directory=tmp_path))
    assert list(df["file"]) == ["a.tif"]


@needs_fifo
def test_worker_given_a_fifo_reports_a_final_error_at_once(tmp_path, real_calibration):
    from saxsdog.pipeline.options import QueueOptions
    from saxsdog.pipeline.tasks import ImageTask
    from saxsdog.pipeline.worker import ImageProcessor

    fifo = tmp_path / "x.tif"
    os.mkfifo(fifo)
    proc = ImageProcessor(real_calibration, QueueOptions())
    (result,) = _no_block(lambda: proc.process(ImageTask(path=str(fifo), root=str(tmp_path))))
    assert "FIFO" in result.error and result.retryable is False
