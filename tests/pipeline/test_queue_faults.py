"""Faults the image queue must survive end to end: output collisions, the file list after
reruns and kills, old truncated files, a full disk (a small tmpfs), the inline backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.backends import InlineBackend
from saxsdog.pipeline.naming import output_key
from saxsdog.pipeline.queue import ImageQueue
from saxsdog.testing import fill_disk, link_images, run_queue, wait_for


def filelist_rows(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("file\t")
    return lines[1:]


def test_inline_backend_runs_the_queue_in_process(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 3)
    q = ImageQueue(cal, root, QueueOptions(), pool_factory=InlineBackend.factory()).start()
    assert q.fill_from_directory() == 3
    assert q.wait_until_idle(60)
    assert q.worker_pids() == []
    q.stop()
    assert q.history.processed == 3 and not q.history.failures
    assert len(list((tmp_path / "work").glob("*.chi"))) == 3


def test_output_keys_of_colliding_images_are_equal(tmp_path):
    opts = QueueOptions()
    root = tmp_path / "run"
    assert output_key(root / "a" / "x.tif", root, opts) == output_key(root / "b" / "x.tif", root, opts)
    assert output_key(root / "img.edf", root, opts) == output_key(root / "img.cbf", root, opts)
    assert output_key(root / "x.tif", root, opts) == output_key(root / "x.tiff", root, opts)
    (root / "a_b").mkdir(parents=True)
    (root / "a").mkdir()
    o = QueueOptions(out_dir=tmp_path / "out")
    assert output_key(root / "a_b" / "x.tif", root, o) == output_key(root / "a" / "b_x.tif", root, o)


def test_colliding_images_get_their_own_outputs(cal, data_dir, tmp_path):
    """Part 2 item 7: two images whose outputs have one name both used to be marked done
    with a single output (the second replaced the first's); now the second is renamed."""
    root = tmp_path / "run"
    for sub, name in (("a", "x.tif"), ("b", "x.tif"), ("c", "img.tif"), ("c", "img.tiff")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "buf1_00000.tif", root / sub / name)
    q = run_queue(cal, root)
    assert q.history.processed == 4 and not q.history.failures
    outputs = {Path(r["path"]).relative_to(root).as_posix(): Path(r["outputs"][0]).name for r in q.history.records}
    assert outputs == {"a/x.tif": "x.chi", "b/x.tif": "x~2.chi", "c/img.tif": "img.chi", "c/img.tiff": "img~2.chi"}
    assert sorted(p.name for p in (root / "work").glob("*.chi")) == ["img.chi", "img~2.chi", "x.chi", "x~2.chi"]
    rows = filelist_rows(tmp_path / "work" / "results" / "filelist.txt")
    assert len({r.split("\t")[1] for r in rows}) == 4
    assert q.stats()["outputs_renamed"] == 2


def test_colliding_images_with_one_output_folder(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    for rel in ("a_b/x.tif", "a/b_x.tif"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "buf1_00000.tif", root / rel)
    out = tmp_path / "out"
    q = run_queue(cal, root, out_dir=out)
    assert q.history.processed == 2
    assert sorted(p.name for p in out.glob("*.chi")) == ["a_b_x.chi", "a_b_x~2.chi"]


def test_file_list_has_one_row_per_image_after_reruns_resume_and_a_torn_line(cal, data_dir, tmp_path):
    """Part 2 item 8: reruns and -r appended a row per image each time; a kill left a torn line."""
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 4)
    filelist = tmp_path / "work" / "results" / "filelist.txt"
    run_queue(cal, root)
    first = filelist_rows(filelist)
    assert len(first) == 4
    run_queue(cal, root)  # a rerun processes everything again
    run_queue(cal, root, resume=True)  # -r: every image is skipped
    assert filelist_rows(filelist) == first
    # a SIGKILL in the middle of a line, and the row of an image that is then processed again
    with open(filelist, "a") as fh:
        fh.write(first[0][: len(first[0]) // 2])
    run_queue(cal, root)
    assert filelist_rows(filelist) == first


def test_file_list_row_is_replaced_when_the_values_change(tmp_path):
    from saxsdog.pipeline.sinks import LiveFileList
    from saxsdog.pipeline.tasks import ImageResult

    path = tmp_path / "filelist.txt"
    fl = LiveFileList(path)
    fl.add(ImageResult("/r/a.tif", outputs=["/w/a.chi"], parameters={"R0": {"I0": 1.0}}))
    fl.add(ImageResult("/r/b.tif", outputs=["/w/b.chi"], parameters={"R0": {"I0": 2.0}}))
    fl.add(ImageResult("/r/a.tif", outputs=["/w/a.chi"], parameters={"R0": {"I0": 3.0}}))
    fl.add(ImageResult("/r/b.tif", outputs=["/w/b.chi"], skipped=True))
    fl.close()
    rows = filelist_rows(path)
    assert [r.split("\t")[:3] for r in rows] == [["/r/a.tif", "/w/a.chi", "3.0"], ["/r/b.tif", "/w/b.chi", "2.0"]]


def test_truncated_file_older_than_the_retry_timeout_is_reported_at_once(cal, data_dir, tmp_path):
    """Part 2 item 6: it waited the whole --retry-timeout (here 60 s) before."""
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 2)
    raw = (data_dir / "buf1_00000.tif").read_bytes()
    old = root / "old_truncated.tif"
    old.write_bytes(raw[: len(raw) // 2])
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    q = ImageQueue(cal, root, QueueOptions(retry_timeout=60.0)).start()
    try:
        t0 = time.monotonic()
        q.fill_from_directory()
        assert q.wait_until_idle(30)
        assert time.monotonic() - t0 < 30
    finally:
        q.stop()
    err = q.history.failures[str(old)]
    assert "unchanged for 3600" in err and "longer than the retry timeout (60 s)" in err


@pytest.mark.slow
def test_full_output_disk_pauses_the_queue_and_it_resumes_when_space_is_freed(cal, data_dir, tmp_path, small_tmpfs):
    """Part 2 item 3: outputs and the file list on a full disk.  Images are held (not failed),
    stats say why the queue is paused, and freeing space resumes it without help."""
    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 6)
    out = small_tmpfs / "out"
    q = ImageQueue(cal, root, QueueOptions(out_dir=out)).start()
    try:
        filler = fill_disk(small_tmpfs)
        for p in images:
            q.push(p)
        assert wait_for(lambda: q.stats()["paused"] is not None, 30), q.stats()
        st = q.stats()
        assert "disk is full" in st["paused"] or "No space" in st["paused"]
        assert st["images_failed"] == 0 and st["queue_length"] == 6
        assert not q.wait_until_idle(0.5)  # waiting for space, not done
        filler.unlink()
        assert q.wait_until_idle(60), q.stats()
        st = q.stats()
        assert st["paused"] is None and st["images_processed"] == 6 and st["images_failed"] == 0
    finally:
        q.stop()
    assert len(list(out.glob("*.chi"))) == 6
    assert len(filelist_rows(out / "results" / "filelist.txt")) == 6


@pytest.mark.slow
def test_file_list_after_a_sigkill_of_the_group_and_a_resume(data_dir, tmp_path):
    """Part 2 item 8: after a SIGKILL of the whole group mid-run and `saxsdog -r`, every image
    has exactly one row (images listed before the kill but not known as finished were listed twice)."""
    import signal
    import sys

    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 200)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(data_dir / "cal.json"), "-S", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: len(list(work.glob("*.chi"))) >= 40, 120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(list(work.glob("*.chi"))) < 200, "the kill must land mid-run"
    subprocess.run([*cmd[:-1], "-r", str(root)], check=True, capture_output=True, timeout=300)
    rows = filelist_rows(work / "results" / "filelist.txt")
    names = [r.split("\t")[0] for r in rows]
    assert len(names) == len(set(names)) == 200


def test_close_finishes_the_queued_images_and_ignores_new_ones(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 6)
    q = ImageQueue(cal, root, QueueOptions(), pool_factory=InlineBackend.factory()).start()
    try:
        for p in images[:5]:
            q.push(p)
        q.close()
        q.push(images[5])
        assert q.wait_closed(60)
        assert q.wait_until_idle(10)
    finally:
        q.stop()
    assert q.history.processed == 5 and q.stats()["ignored_after_close"] == 1


def sasdata_titles(path: Path) -> list[str]:
    pytest.importorskip("sasdata")
    from sasdata.dataloader.loader import Loader

    return [d.title for d in Loader().load(str(path))]


@pytest.mark.slow
def test_full_disk_under_the_run_file_pauses_the_queue_and_completes_the_file_once_freed(
        cal, data_dir, tmp_path, small_tmpfs):
    """Part 2 item 3 for ``--format nxcansas-run``: the run file's frames are kept (not failed)
    while its disk is full, stats say why the queue is paused, and once space is freed the
    file is completed and renamed into place holding every frame exactly once."""
    import numpy as np

    from saxsdog.io.images import read_image
    from saxsdog.io.nxcansas import read_nxcansas

    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 8)
    out = small_tmpfs / "out"
    q = ImageQueue(cal, root, QueueOptions(out_dir=out, output_format="nxcansas-run")).start()
    try:
        filler = fill_disk(small_tmpfs)
        for p in images:
            q.push(p)
        assert wait_for(lambda: q.stats()["paused"] is not None, 60), q.stats()
        st = q.stats()
        assert "run file" in st["paused"] and "No space left on device" in st["paused"]
        assert st["sink_errors"] >= 1 and "run file" in st["last_sink_error"]
        assert st["images_failed"] == 0
        assert not q.wait_until_idle(0.5)  # waiting for space, not done
        assert not (out / "run.h5").exists()
        filler.unlink()
        assert q.wait_until_idle(60), q.stats()
        st = q.stats()
        assert st["paused"] is None and st["images_failed"] == 0
    finally:
        q.stop()
    assert st["images_processed"] == 8
    assert q.run_files == [out / "run.h5"]
    names = sorted(p.name for p in images)
    assert sorted(sasdata_titles(out / "run.h5")) == names  # each frame exactly once
    frames = read_nxcansas(out / "run.h5")
    expected = cal.curves(read_image(images[0]).data)[0]
    for f in frames:
        np.testing.assert_allclose(f["I"], expected.intensity[expected.has_data], rtol=1e-12)  # bins with data
    assert not list(out.glob(".*.part"))
    assert len(filelist_rows(out / "results" / "filelist.txt")) == 8


@pytest.mark.slow
def test_run_file_closed_on_a_full_disk_is_completed_when_space_is_freed(cal, data_dir, tmp_path, small_tmpfs):
    """Stopping the queue while the run file's disk is full neither drops the file nor blocks
    (the server stops queues on its command thread): the file is completed and renamed into
    place in the background once the disk takes it."""
    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 3)
    out = small_tmpfs / "out"
    q = ImageQueue(cal, root, QueueOptions(out_dir=out, output_format="nxcansas-run"),
                   pool_factory=InlineBackend.factory()).start()
    for p in images:
        q.push(p)
    assert q.wait_until_idle(60)
    filler = fill_disk(small_tmpfs)
    t0 = time.monotonic()
    q.stop()  # closes the run file: the disk is full, so its last bytes wait
    assert time.monotonic() - t0 < 10
    assert not q.wait_sinks_closed(0.5) and not (out / "run.h5").exists()
    filler.unlink()
    assert q.wait_sinks_closed(60)
    assert sorted(sasdata_titles(out / "run.h5")) == sorted(p.name for p in images)
    assert not list(out.glob(".*.part"))


@pytest.mark.slow
def test_run_file_of_a_killed_saxsdog_is_cleaned_up_and_completed_by_a_resume(data_dir, tmp_path):
    """``saxsdog --format nxcansas-run`` killed (SIGKILL of its pid, as the OOM killer does)
    leaves its run file under the temporary name only; ``saxsdog -r`` removes it and writes
    the run file with every frame exactly once."""
    import signal
    import sys

    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 150)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(data_dir / "cal.json"), "-S",
           "--format", "nxcansas-run"]
    proc = subprocess.Popen([*cmd, str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (work / "results" / "filelist.txt").is_file()
                        and len(filelist_rows(work / "results" / "filelist.txt")) >= 30, 120)
        parts = list(work.glob(".run.h5.*.part"))
        assert len(parts) == 1 and f".{proc.pid}." in parts[0].name
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the pid only: its workers die with it
        proc.wait()
    assert len(filelist_rows(work / "results" / "filelist.txt")) < 150, "the kill must land mid-run"
    assert not (work / "run.h5").exists()  # never a half-written file under the final name
    done = subprocess.run([*cmd, "-r", str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(work.glob(".*.part"))
    assert sorted(sasdata_titles(work / "run.h5")) == sorted(p.name for p in images)
    rows = filelist_rows(work / "results" / "filelist.txt")
    assert len(rows) == len({r.split("\t")[0] for r in rows}) == 150


@pytest.mark.slow
def test_full_disk_under_per_image_nxcansas_files_holds_the_images_until_space_is_freed(
        cal, data_dir, tmp_path, small_tmpfs):
    """``--format nxcansas`` (one file per image, written by the workers) on a full disk:
    held, not failed, no temporary file left behind, every file complete once space is back."""
    from saxsdog.io.nxcansas import read_nxcansas
    from saxsdog.testing import run_queue_through_full_disk

    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 4)
    out = small_tmpfs / "out"
    st = run_queue_through_full_disk(cal, root, images, small_tmpfs, out_dir=out, output_format="nxcansas").stats()
    assert st["images_processed"] == 4 and st["images_failed"] == 0
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(p.stem + ".h5" for p in images)
    for p in images:
        assert [f["name"] for f in read_nxcansas(out / f"{p.stem}.h5")] == [p.name]
    assert not list(out.glob(".*.part"))


def test_run_sink_keeps_a_run_finished_on_a_full_disk_and_a_run_of_that_name_coming_back(
        cal, data_dir, tmp_path, small_tmpfs):
    """The run sink alone: a run finished while the disk is full keeps its name and is renamed
    into place by flush() once there is space; a new run of the same name meanwhile goes to
    ``<name>_001.h5`` (never onto the waiting file)."""
    import dataclasses
    import errno

    from saxsdog.io.nxcansas import read_nxcansas
    from saxsdog.pipeline.sinks import RunSink
    from saxsdog.pipeline.state import Record

    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 4)
    got = []
    q = ImageQueue(cal, root, QueueOptions(live_filelist=False, output_format="nxcansas-run"), on_result=got.append,
                   pool_factory=InlineBackend.factory()).start()
    for p in images:
        q.push(p)
    assert q.wait_until_idle(60)
    q.stop()
    results = sorted(got, key=lambda r: r.path)
    assert len(results) == 4

    def record(r):
        return Record(r.path, "done", (dataclasses.replace(r, outputs=list(r.outputs)),), run="s")

    sink = RunSink(cal, small_tmpfs, lambda: "default")
    sink.record(record(results[0]))
    sink.record(record(results[1]))
    filler = fill_disk(small_tmpfs)
    with pytest.raises(OSError) as err:
        sink.finish("s")
    assert err.value.errno == errno.ENOSPC
    assert not (small_tmpfs / "s.h5").exists()
    with pytest.raises(OSError):  # the disk is still full: kept, and says so
        sink.record(record(results[2]))
    with pytest.raises(OSError):
        sink.record(record(results[2]))  # appended before: not again
    with pytest.raises(OSError):
        sink.flush()
    filler.unlink()
    sink.flush()  # the first run is renamed into place
    assert [f["name"] for f in read_nxcansas(small_tmpfs / "s.h5")] == [images[0].name, images[1].name]
    sink.record(record(results[3]))
    assert sink.close() == [small_tmpfs / "s.h5", small_tmpfs / "s_001.h5"]
    assert sorted(f["name"] for f in read_nxcansas(small_tmpfs / "s_001.h5")) == [images[2].name, images[3].name]
    assert not list(small_tmpfs.glob(".*.part"))


@pytest.mark.slow
def test_saxsdog_run_file_on_a_disk_full_from_the_start_waits_and_completes(data_dir, tmp_path, small_tmpfs):
    """``saxsdog --format nxcansas-run -o FULL`` does not crash on the file list's header nor
    fail the frames: it waits (paused, saying why) and finishes once space is freed."""
    import sys

    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 6)
    out = small_tmpfs / "out"
    filler = fill_disk(small_tmpfs)
    proc = subprocess.Popen([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(data_dir / "cal.json"),
                             "-S", "--format", "nxcansas-run", "-o", str(out), str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: list(out.glob(".run.h5.*.part")) or proc.poll() is not None, 120)
        time.sleep(1.0)  # a crash or a failed frame would show by now (nothing to poll for)
        assert proc.poll() is None, proc.communicate()
        filler.unlink()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stdout + stderr
    assert "6 processed, 0 skipped (outputs existed), 0 failed" in stdout
    assert "queue paused" in stderr and "No space left on device" in stderr
    assert sorted(sasdata_titles(out / "run.h5")) == sorted(p.name for p in images)
    assert len(filelist_rows(out / "results" / "filelist.txt")) == 6
    assert not list(out.glob(".*.part"))


def test_file_list_short_write_is_cut_back_and_written_by_flush(tmp_path, monkeypatch):
    """A write the disk takes only part of (a filling disk) leaves no partial line: the part
    is cut off, the row waits, and flush writes it whole once the disk takes it."""
    import errno

    from saxsdog.pipeline import sinks
    from saxsdog.pipeline.sinks import LiveFileList
    from saxsdog.pipeline.tasks import ImageResult

    path = tmp_path / "filelist.txt"
    fl = LiveFileList(path)
    fl.add(ImageResult("/r/a.tif", outputs=["/w/a.chi"], parameters={"R0": {"I0": 1.0}}))
    real_write = os.write

    def half_write(fd, data):
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(sinks.os, "write", half_write)
    with pytest.raises(OSError) as err:
        fl.add(ImageResult("/r/b.tif", outputs=["/w/b.chi"], parameters={"R0": {"I0": 2.0}}))
    assert err.value.errno == errno.ENOSPC
    assert path.read_text().endswith("\n") and len(filelist_rows(path)) == 1  # no partial row
    with pytest.raises(OSError):
        fl.flush()  # still only half
    assert len(filelist_rows(path)) == 1
    monkeypatch.setattr(sinks.os, "write", real_write)
    fl.flush()
    fl.close()
    assert [r.split("\t")[:3] for r in filelist_rows(path)] == [["/r/a.tif", "/w/a.chi", "1.0"],
                                                                 ["/r/b.tif", "/w/b.chi", "2.0"]]
