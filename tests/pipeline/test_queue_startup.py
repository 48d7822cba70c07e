"""The queue's start-up: what the parent loads before it forks the workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
