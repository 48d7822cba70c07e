"""The function a Dask task runs, in a module that imports nothing heavy.

A Dask scheduler unpickles every task it is given (to read its dependencies).  A task that
named :func:`saxsdog.pipeline.dask_pool.process_batch` with its image tasks as arguments
made the scheduler import saxsdog's whole integration stack (NumPy kernels, numba: about
0.3 s of CPU and 60 MB in the scheduler) and unpickle and re-pickle every batch.  Here the
batch travels as one opaque byte string and the function's module imports only the
standard library, so the scheduler handles bytes; the worker unpickles the batch.

The processors installed on a worker (by :class:`saxsdog.pipeline.dask_pool.SaxsdogPlugin`)
are registered here, so this module needs nothing from the pool's.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

__all__ = ["run_batch", "PROCESSORS", "INSTALL_LOCK"]

#: The processors installed on this worker process, by pool token.
PROCESSORS: dict[str, Any] = {}
INSTALL_LOCK = threading.Lock()


def processor(token: str) -> Any:
    """The processor of pool ``token`` on this worker (installed by its plugin)."""
    proc = PROCESSORS.get(token)
    if proc is not None:
        return proc
    # The plugin's setup normally ran when the worker registered; should a task win that
    # race, run the setup of the plugin the worker already holds (not a new copy).
    from distributed import get_worker

    plugin = get_worker().plugins.get(f"saxsdog-{token}")
    setup = getattr(plugin, "setup", None)
    if setup is not None:
        setup()
    proc = PROCESSORS.get(token)
    if proc is None:
        raise RuntimeError(f"saxsdog calibration {token} is not installed on this worker")
    return proc


def run_batch(token: str, batch: bytes) -> list[list[Any]]:
    """Process a pickled list of :class:`~saxsdog.pipeline.tasks.ImageTask` on this worker.

    Returns
    -------
    list
        Per image, its list of :class:`~saxsdog.pipeline.tasks.ImageResult`.
    """
    proc = processor(token)
    return [proc.process(t) for t in pickle.loads(batch)]
