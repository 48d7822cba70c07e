"""Execution backends: where the queue's tasks run, behind one :class:`Backend` protocol.

* :func:`local_pool`: forked local worker processes (:class:`~saxsdog.pipeline.pool.WorkerPool`),
  the default;
* :func:`~saxsdog.pipeline.dask_pool.dask_pool_factory`: a ``dask.distributed`` cluster;
* :class:`InlineBackend`: in the dispatcher's own process and thread (tests, debugging).

A backend factory is called as ``factory(calibration, options)``.
"""

from __future__ import annotations

import functools
import mmap
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..calibration import Calibration
from .options import QueueOptions
from .pool import WorkerPool
from .tasks import ArenaRef, ImageResult, ImageTask
from .worker import ImageProcessor

Done = list[tuple[ImageTask, list[ImageResult]]]


@runtime_checkable
class Backend(Protocol):
    """What the queue needs of an execution backend.

    ``submit`` hands one task over (``False``: not now, it is full); ``poll`` waits up to
    ``timeout`` s (or until the file descriptor ``wakeup`` is readable) and returns the
    finished tasks with their results and the tasks whose worker was lost (died or
    stalled and replaced: the queue re-queues them).
    """

    @property
    def capacity(self) -> int: ...

    @property
    def inflight(self) -> int: ...

    restarts: int

    def submit(self, task: ImageTask) -> bool: ...

    def poll(self, timeout: float, wakeup: int | None = None) -> tuple[Done, list[ImageTask]]: ...

    def pids(self) -> list[int]: ...

    def close(self) -> None: ...

    def terminate(self) -> None: ...


class PayloadArena:
    """Shared memory through which in-memory frames reach forked workers.

    An anonymous shared mapping made before the workers are forked (they inherit it): the
    coordinator copies a frame's blob into a free slot and sends the worker only the slot
    number, instead of pushing megabytes through the worker's pipe (which blocks the
    dispatcher while the worker is still busy with its previous frame).  A slot is freed
    when the task's result is back (or its worker died).  Blobs larger than a slot travel
    in the task as before.

    Parameters
    ----------
    slots
        Number of slots (frames in flight at once).
    slot_bytes
        Size of a slot (pages are only touched when used).
    """

    def __init__(self, slots: int, slot_bytes: int = 16 << 20):
        self.slot_bytes = int(slot_bytes)
        self.mem = mmap.mmap(-1, slots * self.slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS
        self._view = memoryview(self.mem)
        self._free = list(range(slots - 1, -1, -1))

    def put(self, data: Any) -> ArenaRef | None:
        """Copy ``data`` into a free slot; ``None`` when it does not fit or none is free."""
        view = memoryview(data).cast("B")
        n = view.nbytes
        if n > self.slot_bytes or not self._free:
            return None
        slot = self._free.pop()
        start = slot * self.slot_bytes
        self._view[start:start + n] = view
        return ArenaRef(slot, n)

    def view(self, ref: ArenaRef) -> memoryview:
        start = ref.slot * self.slot_bytes
        return self._view[start:start + ref.length]

    def release(self, ref: ArenaRef) -> None:
        self._free.append(ref.slot)


def _worker_processor(calibration: Calibration, options: QueueOptions,
                      arena: PayloadArena | None = None,
                      warm_up: Callable[[Calibration], None] | None = None) -> ImageProcessor:
    """Runs first in a new worker, after it restored SIGTERM's default action; then ``warm_up``."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a pending one kills it now
    processor = ImageProcessor(calibration, options, arena, map_images=True)  # a lost worker is replaced
    if warm_up is not None:
        warm_up(calibration)
    if "saxsdog.io.codecs" in sys.modules:  # a stream source: ready for its frames before the first one
        from .stream_warmup import warm_up_worker

        warm_up_worker(processor)
    return processor


def local_pool(calibration: Calibration, options: QueueOptions, arena: PayloadArena | None = None,
               warm_up: Callable[[Calibration], None] | None = None) -> WorkerPool:
    """The default execution backend: forked local worker processes.

    SIGTERM is blocked while the workers are forked: a worker inherits the parent's Python
    signal handlers (the server ignores SIGTERM there to stop gracefully) until it resets
    them, and an abort right after the start would otherwise be lost in that window.  The
    worker unblocks it once its default action is back (:func:`_worker_processor`).
    ``warm_up(calibration)`` runs in each new worker before its first task (loading the
    compiled kernels: :func:`saxsdog.pipeline.queue.warm_up_kernels`).
    """
    factory = functools.partial(_worker_processor, calibration, options, arena, warm_up)
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        return WorkerPool(factory, options.workers, task_timeout=options.task_timeout)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        return WorkerPool(factory, options.workers, task_timeout=options.task_timeout)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class InlineBackend:
    """Runs each task in the dispatcher thread itself, in ``poll`` (no processes).

    Parameters
    ----------
    processor
        An object with ``process(task) -> list[ImageResult]`` (an :class:`ImageProcessor`).
    slots
        Tasks accepted before ``poll`` runs them.
    """

    def __init__(self, processor: Any, slots: int = 2):
        self.processor = processor
        self.slots = slots
        self._tasks: list[ImageTask] = []
        self.restarts = 0

    @classmethod
    def factory(cls, processor_factory: Callable[[Calibration, QueueOptions], Any] | None = None
                ) -> Callable[[Calibration, QueueOptions], InlineBackend]:
        """A backend factory; the processor defaults to an :class:`ImageProcessor`."""
        make = processor_factory or ImageProcessor
        return lambda calibration, options: cls(make(calibration, options))

    @property
    def capacity(self) -> int:
        return self.slots - len(self._tasks)

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def submit(self, task: ImageTask) -> bool:
        if len(self._tasks) >= self.slots:
            return False
        self._tasks.append(task)
        return True

    def poll(self, timeout: float, wakeup: int | None = None) -> tuple[Done, list[ImageTask]]:
        if not self._tasks:
            if wakeup is not None:
                select.select([wakeup], [], [], timeout)
            else:
                time.sleep(timeout)
            return [], []
        tasks, self._tasks = self._tasks, []
        return [(t, self.processor.process(t)) for t in tasks], []

    def pids(self) -> list[int]:
        return []

    def close(self) -> None:
        self._tasks.clear()

    def terminate(self) -> None:
        self._tasks.clear()
