"""The image queue: outputs identical to the library, retries, failures, dead workers."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.io.chi import read_chi
from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.naming import output_base, in_directories
from saxsdog.pipeline.queue import ImageQueue
from saxsdog.testing import link_images, run_queue

from pipeline_fakes import slot_backend_factory


def test_outputs_identical_to_library(cal, data_dir, tmp_path):
    images = link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 12)
    q = run_queue(cal, tmp_path / "run", workers=2)
    assert q.history.processed == 12 and not q.history.failures
    expected = tmp_path / "expected.chi"
    import fabio

    cal.write_chi(fabio.open(str(images[0])).data, expected)
    for img in images:
        out = tmp_path / "work" / (img.stem + ".chi")
        assert out.read_bytes() == expected.read_bytes()
    lines = (tmp_path / "work" / "results" / "filelist.txt").read_text().splitlines()
    assert lines[0].startswith("file\toutput\tI0") and len(lines) == 13
    i0 = float(lines[1].split("\t")[2])
    assert np.isclose(i0, read_chi(expected).parameters["I0"])


@pytest.mark.slow
def test_bad_files_are_reported_and_the_rest_succeed(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 5)
    raw = (data_dir / "buf1_00000.tif").read_bytes()
    (root / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    import tifffile

    tifffile.imwrite(root / "small.tif", np.zeros((100, 100), np.int32))
    (root / "fake.tif").write_text("this is not an image")
    (root / "notes.txt").write_text("ignored")
    q = run_queue(cal, root, retry_timeout=0.5)
    f = q.history.failures
    assert q.history.processed == 5
    assert set(map(lambda p: Path(p).name, f)) == {"truncated.tif", "small.tif", "fake.tif"}
    assert "incomplete" in f[str(root / "truncated.tif")]
    assert "100" in f[str(root / "small.tif")] and "1043" in f[str(root / "small.tif")]
    assert q.ignored_files == 1


@pytest.mark.slow
def test_killed_worker_loses_nothing(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    images = link_images(data_dir / "buf1_00000.tif", root, 150)
    q = ImageQueue(cal, root, QueueOptions(workers=2)).start()
    q.fill_from_directory()
    deadline = time.monotonic() + 30
    while q.history.processed < 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    victim = q.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert q.wait_until_idle(120)
    q.stop()
    assert q.worker_restarts >= 1
    assert not q.history.failures
    paths = [r["path"] for r in q.history.records if not r["error"]]
    assert sorted(paths) == sorted(map(str, images))  # every image exactly once
    outs = sorted((tmp_path / "work").glob("*.chi"))
    assert len(outs) == 150 and all(read_chi(o).q.size == 1003 for o in outs)


def test_image_completed_late_is_retried(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    raw = (data_dir / "buf1_00000.tif").read_bytes()
    target = root / "late.tif"
    target.write_bytes(raw[:1000])
    q = ImageQueue(cal, root, QueueOptions(retry_timeout=20, retry_initial=0.02)).start()
    q.push(target)
    time.sleep(0.3)
    with open(target, "ab") as fh:
        fh.write(raw[1000:])
    assert q.wait_until_idle(30)
    q.stop()
    assert q.history.processed == 1 and not q.history.failures
    assert len([r for r in q.history.records if not r["error"]]) == 1


def test_push_duplicates_are_merged(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    (img,) = link_images(data_dir / "buf1_00000.tif", root, 1)
    q = ImageQueue(cal, root, QueueOptions()).start()
    for _ in range(20):
        q.push(img)
    assert q.wait_until_idle(30)
    for _ in range(5):  # unchanged file: not processed again
        q.push(img)
    assert q.wait_until_idle(30)
    q.stop()
    assert q.history.processed == 1


def test_out_dir_joins_subdirectories(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root / "a" / "b", 1, "x")
    link_images(data_dir / "buf1_00000.tif", root / "c", 1, "x")
    link_images(data_dir / "buf1_00000.tif", root, 1, "x")
    run_queue(cal, root, out_dir=tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").glob("*.chi"))
    assert names == ["a_b_x_00000.chi", "c_x_00000.chi", "x_00000.chi"]


def test_directory_filter_and_naming_helpers(tmp_path):
    root = tmp_path
    assert in_directories(root / "a" / "x.tif", root, ["a"])
    assert in_directories(root / "a" / "b" / "x.tif", root, ["a"])
    assert not in_directories(root / "c" / "x.tif", root, ["a"])
    assert in_directories(root / "c" / "x.tif", root, ["."])
    opts = QueueOptions()
    assert output_base(root / "s" / "x.tif", root, opts) == root / "work" / "x"
    assert output_base(root / "m.h5", root, opts, frame=3) == root.parent / "work" / "m_00003"


def test_resume_skips_existing_outputs(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 6)
    run_queue(cal, root)
    victim = tmp_path / "work" / "img_00003.chi"
    victim.unlink()
    q = run_queue(cal, root, resume=True)
    assert q.history.processed == 1 and q.history.skipped == 5
    assert victim.is_file()


def test_overwrite_false_keeps_existing(data_dir, tmp_path):
    import json

    conf = json.loads((data_dir / "cal.json").read_text())
    conf["OverwriteFiles"] = False
    cal = Calibration(conf, base_dir=data_dir)
    root = tmp_path / "run"
    link_images(data_dir / "buf1_00000.tif", root, 2)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "img_00000.chi").write_text("keep me")
    q = run_queue(cal, root, overwrite=False)
    assert (tmp_path / "work" / "img_00000.chi").read_text() == "keep me"
    assert q.history.processed == 1


def test_multiframe_hdf5_gives_one_result_per_frame(cal, real_image, tmp_path):
    import h5py

    root = tmp_path / "run"
    root.mkdir()
    stack = np.stack([real_image, real_image * 2, real_image * 3])
    with h5py.File(root / "scan_master.h5", "w") as f:
        f.create_dataset("entry/data/data_000001", data=stack, chunks=(1, *real_image.shape))
    q = run_queue(cal, root)
    assert q.history.processed == 3
    outs = sorted((tmp_path / "work").glob("*.chi"))
    assert [o.name for o in outs] == [f"scan_master_{i:05d}.chi" for i in range(3)]
    i = [read_chi(o).intensity for o in outs]
    assert np.allclose(i[1], 2 * i[0]) and np.allclose(i[2], 3 * i[0])


def test_watch_picks_up_new_images_in_subdirectories(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    q = ImageQueue(cal, root, QueueOptions()).start()
    q.watch()
    time.sleep(0.3)
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(data_dir / "buf1_00000.tif", root / "sub" / "deeper" / "new.tif")
    shutil.copy(data_dir / "buf1_00000.tif", root / "top.tif")
    deadline = time.monotonic() + 20
    while q.history.processed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    q.stop()
    assert q.history.processed == 2
    assert (root / "sub" / "work" / "new.chi").is_file() and (tmp_path / "work" / "top.chi").is_file()


def test_stats_report_rates_and_stages(cal, data_dir, tmp_path):
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 10)
    q = run_queue(cal, tmp_path / "run")
    st = q.stats()
    assert st["images_processed"] == 10 and st["queue_length"] == 0
    assert st["overall_frames_per_second"] > 0
    assert set(st["stage_seconds"]) == {"read", "integrate", "write"}
    assert all(v > 0 for v in st["stage_seconds"].values())
    rec = q.history.records[0]
    assert rec["image_time"] is not None and rec["parameters"]["R0"]["I0"] > 0


@pytest.mark.slow
def test_stats_can_be_read_from_another_thread_while_images_arrive(cal, data_dir, tmp_path):
    """The progress line reads stats() from its own thread while the dispatcher records
    new images; that must never fail, and the queue length must stay within bounds."""
    n = 1500
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", n)
    q = ImageQueue(cal, tmp_path / "run", QueueOptions()).start()
    errors: list[BaseException] = []
    lengths: list[int] = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            try:
                lengths.append(q.stats()["queue_length"])
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    reader = threading.Thread(target=poll)
    # switch threads often, so reads overlap the dispatcher's updates (and it is not starved)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    reader.start()
    try:
        q.fill_from_directory()
        assert q.wait_until_idle(300)
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
        q.stop()
    assert not errors, errors
    assert q.history.processed == n and q.queue_length == 0
    assert max(lengths) > 0 and all(0 <= k <= n for k in lengths)


def test_finished_run_is_in_place_when_wait_until_idle_returns(cal, data_dir, tmp_path):
    """finish_run() is work for the dispatcher: an idle queue is not idle again until the
    run file has been renamed into place."""
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 3)
    q = ImageQueue(cal, tmp_path / "run", QueueOptions(output_format="nxcansas-run", run_name="scan")).start()
    try:
        q.fill_from_directory()
        assert q.wait_until_idle(60)
        (path,) = q.run_files
        assert not path.exists()  # still being written under a temporary name
        q.finish_run("scan")
        assert q.wait_until_idle(60)
        assert path.is_file() and q.run_files == [path]
    finally:
        q.stop()


def test_abort_kills_workers_even_with_a_parent_sigterm_handler(cal, data_dir, tmp_path):
    """Workers forked from a process with its own SIGTERM handler still die on abort."""
    previous = signal.signal(signal.SIGTERM, lambda *a: None)
    try:
        link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 2)
        q = ImageQueue(cal, tmp_path / "run", QueueOptions(workers=2)).start()
        pids = q.worker_pids()
        q.stop(abort=True)
        time.sleep(0.2)
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_push_many_queues_each_image_once(cal, data_dir, tmp_path):
    """push_many (one inbox message for a folder) merges duplicates like push, in order."""
    root = tmp_path / "run"
    imgs = link_images(data_dir / "buf1_00000.tif", root, 4)
    q = ImageQueue(cal, root, QueueOptions(out_dir=tmp_path / "out")).start()
    q.push_many([*imgs, imgs[0], imgs[2]])
    assert q.wait_until_idle(60)
    q.push_many(imgs)  # unchanged files: not processed again
    assert q.wait_until_idle(60)
    q.stop()
    assert q.history.processed == 4
    assert len(list((tmp_path / "out").glob("*.chi"))) == 4


def test_output_folder_removed_during_a_run_is_made_again(cal, data_dir, tmp_path):
    """The worker makes each output folder once; one removed between frames is made again
    (the write is repeated), never a failed frame."""
    from saxsdog.pipeline.tasks import ImageTask
    from saxsdog.pipeline.worker import ImageProcessor

    root = tmp_path / "run"
    a, b = link_images(data_dir / "buf1_00000.tif", root, 2)
    out = tmp_path / "out"
    proc = ImageProcessor(cal, QueueOptions(out_dir=out))
    (first,) = proc.process(ImageTask(str(a), str(root)))
    assert first.error is None and Path(first.outputs[0]).is_file()
    shutil.rmtree(out)
    (second,) = proc.process(ImageTask(str(b), str(root)))
    assert second.error is None and Path(second.outputs[0]).is_file()


def test_worker_frame_names_are_the_run_file_names(cal, tmp_path):
    """The worker's frame name (root resolved once) is naming.frame_name's, also through links
    and for images outside the root."""
    from saxsdog.pipeline.naming import frame_name
    from saxsdog.pipeline.worker import ImageProcessor

    root = tmp_path / "run"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "sub" / "x.tif").write_bytes(b"")
    (tmp_path / "elsewhere" / "y.tif").write_bytes(b"")
    os.symlink(root, tmp_path / "link")
    os.symlink(tmp_path / "elsewhere" / "y.tif", root / "to_outside.tif")
    proc = ImageProcessor(cal, QueueOptions())
    cases = [(root / "sub" / "x.tif", root), (tmp_path / "link" / "sub" / "x.tif", tmp_path / "link"),
             (tmp_path / "link" / "sub" / "x.tif", root), (tmp_path / "elsewhere" / "y.tif", root),
             (root / "to_outside.tif", root), (root, root)]
    for image, top in cases:
        for index, n in ((0, 1), (3, 10)):
            assert proc._frame_name(str(image), str(top), index, n) == frame_name(image, top, index, n)


def test_the_parent_warms_up_only_for_workers_it_forks(cal, tmp_path, monkeypatch):
    """The kernels and the .chi formatter are loaded before forking (the workers inherit them);
    a backend whose workers are not forked from the queue's process (a Dask cluster) skips it."""
    from saxsdog.io import fastfloat
    from saxsdog.pipeline.backends import InlineBackend
    from saxsdog.pipeline.dask_pool import dask_pool_factory

    assert dask_pool_factory("tcp://127.0.0.1:1").forks_workers is False
    q = ImageQueue(cal, tmp_path, QueueOptions(), pool_factory=InlineBackend.factory()).start()
    q.stop()
    assert fastfloat._table_into.signatures  # the formatter's compiled code is loaded in the parent
    calls = []
    monkeypatch.setattr(ImageQueue, "_warm_up", lambda self: calls.append(1))
    not_forked = InlineBackend.factory()
    not_forked.forks_workers = False
    ImageQueue(cal, tmp_path, QueueOptions(), pool_factory=not_forked).start().stop()
    assert calls == []
    ImageQueue(cal, tmp_path, QueueOptions(), pool_factory=InlineBackend.factory()).start().stop()
    assert calls == [1]


def test_slots_freed_by_results_get_new_tasks_before_the_results_are_recorded(cal, tmp_path):
    """The dispatcher hands the next task to a worker before it records a result (a run file's
    group of frames takes milliseconds: the workers must not wait for it); every image is still
    processed and recorded once."""

    log: list[tuple[str, str]] = []

    factory = slot_backend_factory(2, log)
    paths = []
    for k in range(5):
        p = tmp_path / f"img_{k}.tif"
        p.write_bytes(b"x")
        paths.append(p)
    q = ImageQueue(cal, tmp_path, QueueOptions(), pool_factory=factory,
                   on_result=lambda r: log.append(("record", Path(r.path).name)))
    q.start()
    try:
        q.push_many(paths)
        deadline = time.monotonic() + 30
        while sum(1 for e in log if e[0] == "record") < 5 and time.monotonic() < deadline:
            q.wait_until_idle(0.05)
    finally:
        q.stop()
    assert sorted(n for e, n in log if e == "record") == [p.name for p in paths]
    assert sorted(n for e, n in log if e == "submit") == [p.name for p in paths]
    for k in range(3):  # img_{k+2} went out when img_k's result came in, before it was recorded
        assert log.index(("submit", f"img_{k + 2}.tif")) < log.index(("record", f"img_{k}.tif"))


def test_the_dispatcher_releases_free_memory_every_so_many_results(cal, data_dir, tmp_path, monkeypatch):
    import saxsdog.pipeline.queue as queue_module

    calls: list[float] = []
    monkeypatch.setattr(queue_module, "TRIM_EVERY", 4)
    monkeypatch.setattr(queue_module, "release_free_memory", lambda: calls.append(time.monotonic()) or True)
    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 12)
    q = run_queue(cal, tmp_path / "run", workers=2)
    assert q.history.processed == 12
    assert 2 <= len(calls) <= 3  # 12 results, every 4th (results come in groups)


def test_release_free_memory_trims_glibc_s_heap():
    import platform

    from saxsdog.pipeline.queue import release_free_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert release_free_memory() is True
