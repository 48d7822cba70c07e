"""The function a Dask task runs, in a module that imports nothing heavy.

A Dask scheduler unpickles every task it is given (to read its dependencies).  A task that
named :func:`saxsdog.pipeline.dask_pool.process_batch` with its image tasks as arguments
made the scheduler import saxsdog's whole integration stack (NumPy kernels, numba: about
0.3 s of CPU and 60 MB in the scheduler) and unpickle and re-pickle every batch.  Here the
batch travels as one opaque byte string and the function's module imports only the
standard library, so the scheduler handles bytes; the worker unpickles the batch.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["run_batch"]


def run_batch(token: str, batch: bytes) -> list[list[Any]]:
    """Process a pickled list of :class:`~saxsdog.pipeline.tasks.ImageTask` on this worker.

    Returns the results per image, as :func:`saxsdog.pipeline.dask_pool.process_batch`.
    """
    from .dask_pool import process_batch  # the worker's heavy imports, not the scheduler's

    return process_batch(token, pickle.loads(batch))
