"""The queue's start-up: what the parent loads before it forks the workers, and what the workers load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from pipeline_fakes import slot_backend_factory


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_numba_starts_without_importing_scipy_linalg_and_keeps_its_blas():
    """numba's one-time start checks SciPy's BLAS; loaded alone, scipy.linalg (0.2 s of
    imports) is not imported, numba still finds BLAS (np.dot compiles), and a later
    scipy.linalg import works with the same extension module."""
    out = run_python("""
        import sys
        import numpy as np
        from saxsdog.pipeline.queue import _load_blas_for_numba
        _load_blas_for_numba()
        from saxsdog.io import fastfloat
        fastfloat.table_bytes(np.ones((2, 2)))  # numba's first cache load: its start
        import numba, numba.np.arraymath as arraymath
        print("scipy.linalg" in sys.modules, arraymath._HAVE_BLAS)
        print(numba.njit(lambda a, b: np.dot(a, b))(np.ones(3), np.arange(3.0)))
        import scipy.linalg
        from scipy.linalg import cython_blas
        print(cython_blas is sys.modules["scipy.linalg.cython_blas"], scipy.linalg.solve(np.eye(2), [1.0, 2.0]).tolist())
    """)
    assert out.splitlines() == ["False True", "3.0", "True [1.0, 2.0]"]


def test_the_blas_module_is_left_alone_once_scipy_linalg_or_numba_has_started():
    out = run_python("""
        import sys
        import scipy.linalg
        from saxsdog.pipeline.queue import _load_blas_for_numba
        before = sys.modules.get("scipy.linalg.cython_blas")
        _load_blas_for_numba()
        print(sys.modules.get("scipy.linalg.cython_blas") is before)
    """)
    assert out == "True"


def test_the_coordinator_does_not_start_numba_and_each_worker_loads_the_kernels():
    """With the default pool the coordinator neither starts numba nor loads the kernels (it
    runs no compiled code): each worker loads them from numba's cache before its first task,
    without numba's one-time start, while the coordinator goes on (scanning, checking); the
    curves are right.  (Before, the coordinator started numba before forking.)"""
    out = run_python("""
        import sys, tempfile
        from pathlib import Path
        sys.path.insert(0, "tests")
        from conftest import require_data
        import numpy as np
        from saxsdog import Calibration
        from saxsdog.io import fastfloat
        from saxsdog.pipeline import QueueOptions
        from saxsdog.pipeline.queue import ImageQueue
        from saxsdog.testing import link_images
        data = require_data()
        tmp = Path(tempfile.mkdtemp())
        link_images(data / "buf1_00000.tif", tmp / "run", 3)
        cal = Calibration(data / "cal.json", cache=tmp / "cache")
        q = ImageQueue(cal, tmp / "run", QueueOptions(workers=2)).start()
        from numba.core.registry import cpu_target
        started = bool(cpu_target.target_context._registries)
        print(started, bool(fastfloat._table_into.signatures))
        q.fill_from_directory()
        q.wait_until_idle(120)
        q.stop()
        import fabio
        expected = cal.chi_bytes(cal.curves(fabio.open(str(data / "buf1_00000.tif")).data))[0]
        chis = sorted((tmp / "work").glob("*.chi"))
        print(q.history.processed, all(c.read_bytes() == expected for c in chis), len(chis))
    """)
    assert out.splitlines() == ["False False", "3 True 3"]


def test_a_kernel_warm_up_that_fails_in_the_workers_loses_no_image(cal, tmp_path, monkeypatch, data_dir):
    """The workers' warm-up is only a warm-up: when it fails (here: integrating its frame of
    zeros raises) the worker starts all the same and every image is processed."""
    from saxsdog.calibration import Calibration
    from saxsdog.testing import link_images, run_queue

    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 4)
    real_curves = Calibration.curves

    def curves(self, image, *args, **kwargs):
        if not np.asarray(image).any():  # the warm-up's frame
            raise RuntimeError("no kernels today")
        return real_curves(self, image, *args, **kwargs)

    monkeypatch.setattr(Calibration, "curves", curves)
    q = run_queue(cal, tmp_path / "run", workers=2)
    assert q.history.processed == 4 and not q.history.failures and q.worker_restarts == 0


def test_a_large_batch_of_pushes_is_taken_in_by_chunks_the_first_tasks_going_out_first(cal, tmp_path):
    """push_many of a folder's thousands of images: the first tasks are handed to the workers
    after the first chunk of pushes, not after the last; every image is processed once, and a
    close posted after the batch still comes after all of its pushes (none is ignored)."""
    from pathlib import Path

    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.queue import PUSH_CHUNK, ImageQueue

    log: list[tuple[str, str]] = []

    factory = slot_backend_factory(1, log)
    n = 4 * PUSH_CHUNK
    paths = []
    for k in range(n):
        p = tmp_path / f"img_{k:04d}.tif"
        p.write_bytes(b"x")
        paths.append(p)
    q = ImageQueue(cal, tmp_path, QueueOptions(live_filelist=False), pool_factory=factory,
                   on_result=lambda r: log.append(("record", Path(r.path).name)))
    real_handle = q.state.handle

    def handle(*events):
        log.extend(("push", Path(ev.path).name) for ev in events if type(ev).__name__ == "Push")
        return real_handle(*events)

    q.state.handle = handle
    q.start()
    try:
        q.push_many(paths)
        q.close()
        assert q.wait_closed(60)
    finally:
        q.stop()
    assert sorted(name for what, name in log if what == "record") == [p.name for p in paths]
    assert q.state.ignored_after_close == 0
    first_submit = log.index(("submit", paths[0].name))
    assert log.index(("push", paths[-1].name)) > first_submit  # the last pushes came after it
    assert sum(1 for what, _ in log[:first_submit] if what == "push") <= PUSH_CHUNK
