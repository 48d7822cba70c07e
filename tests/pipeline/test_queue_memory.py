"""The coordinator's containers stay bounded however many results pass through the queue
(issue 17: its RSS flat over 100,000 frames): queue state, history (records, failures, rate
window), arena bookkeeping; a fake backend answers at once, no worker is forked."""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path

from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.queue import ImageQueue
from saxsdog.pipeline.tasks import ImageResult


def _instant_backend(fail_every: int):
    """A backend that answers every task at once; every ``fail_every``-th image fails."""

    class Instant:
        restarts = 0

        def __init__(self) -> None:
            self.tasks: list = []

        @property
        def capacity(self) -> int:
            return 8 - len(self.tasks)

        @property
        def inflight(self) -> int:
            return len(self.tasks)

        def submit(self, task) -> bool:
            self.tasks.append(task)
            return True

        def poll(self, timeout, wakeup=None):
            if not self.tasks:
                time.sleep(min(timeout, 0.002))
                return [], []
            done, self.tasks = self.tasks, []
            out = []
            for t in done:
                k = int(Path(t.path).stem.rsplit("_", 1)[1])
                r = (ImageResult(t.path, error=f"cannot read {t.path}", processed_at=time.time())
                     if k % fail_every == 0 else
                     ImageResult(t.path, outputs=[t.path + ".chi"], parameters={"R0": {"I0": float(k)}},
                                 timings={"read": 1e-4}, processed_at=time.time()))
                out.append((t, [r]))
            return out, []

        def pids(self) -> list[int]:
            return []

        def close(self) -> None:
            pass

        def terminate(self) -> None:
            pass

    def factory(calibration, options):
        return Instant()

    factory.forks_workers = False  # type: ignore[attr-defined]
    return factory


def _feed(q: ImageQueue, root: Path, start: int, stop: int) -> None:
    q.push_many([root / f"img_{k:06d}.tif" for k in range(start, stop)])  # no files needed: instant results
    deadline = time.monotonic() + 120
    h = q.history
    while h.processed + h.failed < stop and time.monotonic() < deadline:
        q.wait_until_idle(0.05)
    assert h.processed + h.failed == stop


def _traced() -> int:
    """Traced bytes, but for the interpreter's table of interned strings (pathlib interns every
    path part): it is reallocated whole now and then at the same size, not grown."""
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, "*pathlib.py")])
    return sum(s.size for s in snap.statistics("filename"))


def test_the_queue_state_and_history_stay_bounded_over_many_results(cal, tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    q = ImageQueue(cal, root, QueueOptions(), pool_factory=_instant_backend(fail_every=7))
    q.state.finished_remembered = 300
    q.history.max_records = 200
    q.history.max_failures = 50
    q.history.window = 0.05
    q.start()
    # traced from the start: what the bounded records hold after the warm-up was allocated
    # under tracing, so what replaces it later balances out and the difference is growth
    tracemalloc.start()
    try:
        _feed(q, root, 0, 1500)
        gc.collect()
        before = _traced()
        _feed(q, root, 1500, 4500)
        gc.collect()
        grown = _traced() - before
        tracemalloc.stop()
        st, h = q.state, q.history
        n_failed = len(range(0, 4500, 7))
        assert h.processed == 4500 - n_failed and h.failed == n_failed
        assert len(st.images) <= 300 and len(st._finished) <= 300 and len(st.owners) <= 300
        assert len(st.owner_archive) >= 4500 - 300  # who owns each output: kept, as 16-byte hashes
        assert not st.pending and not st.inflight and not q._shipped and not q._batch_rest
        assert len(h.records) == 200
        assert len(h.failures) == 50 and len(h._failed_frame) == 50 and h.failures_not_listed == n_failed - 50
        assert len(h._recent) < 4500  # the rate window, not every frame
        assert q.stats()["images_failed"] == n_failed
        # what 3000 frames left allocated (Python objects; the hashed tables are mapped, not traced)
        assert grown / 3000 < 100, f"{grown / 3000:.0f} bytes a frame"
    finally:
        tracemalloc.stop()
        q.stop()
