"""A pool of forked worker processes fed through one pipe each.

The coordinator knows exactly which tasks each worker holds, so when a worker dies
(killed, crashed) its tasks are handed to the others and a replacement is started:
nothing is lost.  Workers are forked after the calibration is built, so they share
one read-only copy of the operator with the parent (copy-on-write pages that are never
written).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
from multiprocessing.connection import Connection, wait
from typing import Callable

from .tasks import ImageResult, ImageTask

log = logging.getLogger(__name__)

#: Tasks handed to a worker before it reports back (keeps it busy while results travel).
PREFETCH = 2


def _worker_main(conn: Connection, processor_factory: Callable[[], object]) -> None:
    # Ctrl-C is handled by the coordinator, which stops workers in order; SIGTERM must
    # kill (a forked worker would otherwise inherit the parent's Python handler, e.g. the
    # server's graceful-stop handler, and ignore terminate()).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    processor = processor_factory()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, task = msg
        results = processor.process(task)
        try:
            conn.send((task_id, results))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx, processor_factory, number: int):
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.number = number
        self.process = ctx.Process(target=_worker_main, args=(child, processor_factory),
                                   name=f"saxsdog-worker-{number}", daemon=True)
        self.process.start()
        child.close()
        self.inflight: dict[int, ImageTask] = {}


class WorkerPool:
    """Forked workers, each with its own pipe.

    Parameters
    ----------
    processor_factory
        Called once in each worker to make the object whose ``process(task)`` returns a
        list of :class:`ImageResult`.  With the ``fork`` start method it may close over
        large read-only state (the calibration).
    n_workers
        Number of processes.
    """

    def __init__(self, processor_factory: Callable[[], object], n_workers: int):
        self._ctx = mp.get_context("fork")
        self._factory = processor_factory
        self._next_number = 0
        self.workers: list[_Worker] = []
        self._next_id = 0
        self.restarts = 0
        for _ in range(max(1, n_workers)):
            self._spawn()

    def _spawn(self) -> _Worker:
        w = _Worker(self._ctx, self._factory, self._next_number)
        self._next_number += 1
        self.workers.append(w)
        return w

    @property
    def capacity(self) -> int:
        """How many more tasks can be handed out now."""
        return sum(PREFETCH - len(w.inflight) for w in self.workers)

    @property
    def inflight(self) -> int:
        return sum(len(w.inflight) for w in self.workers)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def submit(self, task: ImageTask) -> bool:
        """Hand a task to the least busy worker; ``False`` if all are full."""
        w = min(self.workers, key=lambda w: len(w.inflight))
        if len(w.inflight) >= PREFETCH:
            return False
        task_id = self._next_id
        self._next_id += 1
        try:
            w.conn.send((task_id, task))
        except (BrokenPipeError, OSError):
            return False  # the dead worker is noticed in poll()
        w.inflight[task_id] = task
        return True

    def poll(self, timeout: float, wakeup: int | None = None
             ) -> tuple[list[tuple[ImageTask, list[ImageResult]]], list[ImageTask]]:
        """Wait up to ``timeout`` for results (or until ``wakeup``, a file descriptor, is readable).

        Returns
        -------
        (done, orphaned)
            Finished tasks with their results, and tasks whose worker died (to requeue).
        """
        done: list[tuple[ImageTask, list[ImageResult]]] = []
        orphaned: list[ImageTask] = []
        conns = {w.conn: w for w in self.workers}
        sentinels = {w.process.sentinel: w for w in self.workers}
        ready = wait(list(conns) + list(sentinels) + ([wakeup] if wakeup is not None else []), timeout)
        dead: set[_Worker] = set()
        for obj in ready:
            if obj == wakeup:
                continue
            if obj in conns:
                w = conns[obj]
                try:
                    while w.conn.poll():
                        task_id, results = w.conn.recv()
                        task = w.inflight.pop(task_id, None)
                        if task is not None:
                            done.append((task, results))
                except (EOFError, OSError):
                    dead.add(w)
            else:
                dead.add(sentinels[obj])
        for w in dead:
            if w.process.is_alive():
                continue
            log.warning("worker %d (pid %s) died with exit code %s; re-queueing %d task(s)",
                        w.number, w.process.pid, w.process.exitcode, len(w.inflight))
            orphaned.extend(w.inflight.values())
            w.inflight.clear()
            w.conn.close()
            self.workers.remove(w)
            self._spawn()
            self.restarts += 1
        return done, orphaned

    def close(self, timeout: float = 5.0) -> None:
        """Stop all workers (they finish their current task first)."""
        for w in self.workers:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for w in self.workers:
            w.process.join(timeout)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(1.0)
            w.conn.close()
        self.workers.clear()

    def terminate(self) -> None:
        """Stop all workers now (abort)."""
        for w in self.workers:
            if w.process.is_alive():
                w.process.terminate()
        for w in self.workers:
            w.process.join(2.0)
            w.conn.close()
        self.workers.clear()
