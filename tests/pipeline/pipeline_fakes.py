"""A fake execution backend for queue tests that need to see the order of submits and records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from saxsdog.pipeline.tasks import ImageResult


def slot_backend_factory(slots: int, log: list[tuple[str, str]]) -> Any:
    """A pool factory whose backend holds ``slots`` tasks and finishes its oldest at every poll.

    Each accepted task is logged as ``("submit", file name)``; no worker is forked.
    """

    class SlotBackend:
        restarts = 0

        def __init__(self) -> None:
            self.tasks: list = []

        @property
        def capacity(self) -> int:
            return slots - len(self.tasks)

        @property
        def inflight(self) -> int:
            return len(self.tasks)

        def submit(self, task) -> bool:
            if len(self.tasks) >= slots:
                return False
            self.tasks.append(task)
            log.append(("submit", Path(task.path).name))
            return True

        def poll(self, timeout, wakeup=None):
            if not self.tasks:
                time.sleep(min(timeout, 0.005))
                return [], []
            task = self.tasks.pop(0)
            return [(task, [ImageResult(task.path, outputs=[task.path + ".chi"], processed_at=time.time())])], []

        def pids(self) -> list[int]:
            return []

        def close(self) -> None:
            pass

        def terminate(self) -> None:
            pass

    def factory(calibration, options):
        return SlotBackend()

    factory.forks_workers = False  # type: ignore[attr-defined]
    return factory
