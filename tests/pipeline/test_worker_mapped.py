"""Workers map image files instead of reading them; a file truncated under a mapped frame
costs the worker (SIGBUS), never the image."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from saxsdog.io.chi import read_chi
from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.backends import InlineBackend, _worker_processor
from saxsdog.pipeline.pool import WorkerPool
from saxsdog.pipeline.tasks import ImageTask


def test_pool_workers_map_images_and_the_coordinator_s_own_processor_does_not(cal):
    """Only a process the pool replaces when it dies maps files (a SIGBUS there is a lost
    worker; in the coordinator's process it would be the whole server)."""
    assert _worker_processor(cal, QueueOptions())._buffer.map_files
    inline = InlineBackend.factory()(cal, QueueOptions())
    assert not inline.processor._buffer.map_files


class _WriterTruncatesMidFrame:
    """The pool's own worker processor (mapping files), whose image is truncated by its
    writer while the worker integrates the mapped frame, on the first attempt only."""

    def __init__(self, cal, options, marker: str):
        self.inner = _worker_processor(cal, options)
        curves = self.inner.calibration.curves  # this worker's copy of the calibration

        def truncating(image, *args, **kwargs):
            if not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                assert not image.flags.owndata  # a view of the mapped file, not a read copy
                os.truncate(self._path, 0)  # the detector starts the file again
            return curves(image, *args, **kwargs)

        self.inner.calibration.curves = truncating
        self._path = ""

    def process(self, task: ImageTask):
        self._path = task.path
        return self.inner.process(task)


@pytest.mark.slow
def test_an_image_truncated_under_its_mapped_frame_is_processed_by_the_replacement(cal, data_dir, tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    image = root / "img_00001.tif"
    shutil.copyfile(data_dir / "buf1_00000.tif", image)
    marker = str(tmp_path / "truncated-by")
    options = QueueOptions(out_dir=tmp_path / "out")
    pool = WorkerPool(functools.partial(_WriterTruncatesMidFrame, cal, options, marker), 1, task_timeout=30)
    try:
        victim = pool.pids()[0]
        assert pool.submit(ImageTask(str(image), str(root), 0, time.monotonic()))
        done, orphaned = [], []
        deadline = time.monotonic() + 60
        while not orphaned and not done and time.monotonic() < deadline:
            done, orphaned = pool.poll(0.05)
        assert not done, f"the truncated frame was integrated: {done}"
        assert orphaned and pool.restarts == 1 and pool.pids()[0] != victim
        loss = pool.losses[0]
        assert loss.pid == victim and not loss.stalled
        assert loss.reason == f"died with exit code {-signal.SIGBUS}", loss.reason
        assert Path(marker).read_text() == str(victim)
        shutil.copyfile(data_dir / "buf1_00000.tif", image)  # the writer completes the file
        for task in orphaned:
            assert pool.submit(task)
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            done, _ = pool.poll(0.05)
        ((_, results),) = done
        assert [r.error for r in results] == [None]
        written = read_chi(results[0].outputs[0])
        expected = cal.curves(np.asarray(__import__("fabio").open(str(image)).data))[0]
        np.testing.assert_allclose(written.intensity, expected.intensity, rtol=1e-15, atol=0)
    finally:
        pool.close()


def test_a_mapped_frame_writes_the_bytes_of_a_read_one(cal, data_dir, tmp_path):
    """The same image through a mapping processor and a reading one: byte-identical .chi
    files, the same parameters and metadata (the mapping changes where pixels come from,
    never what is written)."""
    from saxsdog.pipeline.worker import ImageProcessor

    root = tmp_path / "run"
    root.mkdir()
    image = root / "img_00001.tif"
    shutil.copyfile(data_dir / "buf1_00000.tif", image)
    results = {}
    for mapped in (True, False):
        proc = ImageProcessor(cal, QueueOptions(out_dir=tmp_path / f"out_{mapped}"), map_images=mapped)
        assert proc._buffer.map_files is mapped
        (results[mapped],) = proc.process(ImageTask(str(image), str(root)))
        assert results[mapped].error is None
    assert results[True].parameters == results[False].parameters
    assert results[True].metadata == results[False].metadata
    (a,), (b,) = results[True].outputs, results[False].outputs
    assert a != b and Path(a).read_bytes() == Path(b).read_bytes()
