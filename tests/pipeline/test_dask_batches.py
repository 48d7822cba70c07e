"""The Dask pool's batching, without a cluster: guided batch sizes and the backlog's limits.

The pool's own logic (``submit``, ``capacity``, ``_dispatch``, ``_batch_size_now``) runs for
real; only sending a batch is replaced by a model of two single-threaded workers that take
one time unit per image, to which the scheduler gives each batch in turn (the worker that
frees first).  Issue 17: a batch costs a few ms of CPU in the scheduler, the worker's event
loop and the client, so a run wants few, large batches; the end of a run wants small ones,
or one worker idles while the other works through a large last batch.
"""

from __future__ import annotations

import collections
import heapq

import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'dask[distributed]')")

from saxsdog.pipeline.dask_pool import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    MIN_BATCH_SIZE,
    PAYLOAD_IMAGES_PER_THREAD,
    PREFETCH,
    DaskPool,
)
from saxsdog.pipeline.tasks import FramePayload, ImageTask  # noqa: E402


def _pool(threads: int = 2, batch_size: int = DEFAULT_BATCH_SIZE, min_batch_size: int = MIN_BATCH_SIZE) -> DaskPool:
    """A pool without a cluster: its batching state only (``_send`` is the test's to replace)."""
    pool = DaskPool.__new__(DaskPool)
    pool._pending = collections.deque()
    pool._futures = {}
    pool._sent = pool._payloads = pool._n = 0
    pool._threads = threads
    pool.batch_size = batch_size
    pool.min_batch_size = min(min_batch_size, batch_size)
    pool._installer = None
    pool.batch_sizes = collections.deque(maxlen=100_000)
    return pool


def _simulate(n: int, threads: int = 2, task_cost: float = 0.0, **kwargs
              ) -> tuple[float, list[float], list[list[ImageTask]]]:
    """Run ``n`` images through the pool as the queue does (fill up to ``capacity``, poll);
    a batch takes a time unit per image plus ``task_cost`` (Dask's CPU for a task, on the
    same cores); returns (when the last image finished, when each worker finished, the
    batches in order)."""
    pool = _pool(threads, **kwargs)
    todo = collections.deque(ImageTask(f"/data/img_{i:05d}.tif", "/data") for i in range(n))
    free_at = [0.0] * threads
    finishing: list[tuple[float, int, int]] = []  # (time, batch key, worker)
    batches: list[list[ImageTask]] = []
    now = 0.0

    def send(tasks: list[ImageTask]) -> None:
        pool._n += 1
        pool._sent += len(tasks)
        pool.batch_sizes.append(len(tasks))
        pool._futures[pool._n] = (None, tasks)
        batches.append(tasks)
        worker = min(range(threads), key=lambda w: (max(free_at[w], now), w))
        free_at[worker] = max(free_at[worker], now) + len(tasks) + task_cost
        heapq.heappush(finishing, (free_at[worker], pool._n, worker))

    pool._send = send  # type: ignore[method-assign]

    def fill() -> None:
        while todo and pool.capacity > 0:
            assert pool.submit(todo[0])
            todo.popleft()

    fill()
    pool._dispatch()  # the dispatcher's poll
    ends = [0.0] * threads
    while finishing:
        now, key, worker = heapq.heappop(finishing)
        ends[worker] = now
        _, tasks = pool._futures.pop(key)
        pool._forget(tasks)
        pool._dispatch()  # poll sends the freed slot's next batch at once
        fill()  # the queue hands out more
        pool._dispatch()  # its next poll
    assert not todo and pool.inflight == 0
    return max(ends), ends, batches


@pytest.mark.parametrize("n", [1000, 2000, 301])
def test_guided_batches_are_few_and_both_workers_finish_together(n):
    """1000 images went out as 63 batches of 16 (the last one alone on a worker: up to 16
    images' time idle on the other); now 13 batches of up to 128 that shrink at the end."""
    makespan, ends, batches = _simulate(n)
    sizes = [len(b) for b in batches]
    paths = [t.path for b in batches for t in b]
    assert sorted(paths) == sorted(set(paths)) and len(paths) == n  # each image sent once
    assert max(sizes) == DEFAULT_BATCH_SIZE and min(sizes) >= 1
    assert len(sizes) <= n / DEFAULT_BATCH_SIZE + 7  # 1000 images: 13 tasks (63 at 16 an image)
    assert abs(ends[0] - ends[1]) <= 2 * MIN_BATCH_SIZE  # neither worker idles at the end
    assert makespan <= n / 2 * 1.01
    assert sizes[-4:] == sorted(sizes[-4:], reverse=True) and max(sizes[-2:]) <= 2 * MIN_BATCH_SIZE


def test_with_a_cost_per_task_guided_batches_beat_fixed_ones():
    """A task costs about two images' time of CPU (scheduler, event loops, client): 63 fixed
    batches of 16 made 1000 images take 14 % longer than the images alone; now <= 3 %."""
    fixed, _, _ = _simulate(1000, task_cost=2.0, batch_size=16, min_batch_size=16)
    guided, ends, _ = _simulate(1000, task_cost=2.0)
    assert fixed > 1.12 * 500
    assert guided <= 1.03 * 500 and abs(ends[0] - ends[1]) <= 2 * MIN_BATCH_SIZE + 2


def test_a_small_run_is_split_over_both_workers():
    """16 images were one batch of 16 for one worker while the other idled; now 8 + 4 + 4."""
    makespan, ends, batches = _simulate(16)
    assert [len(b) for b in batches] == [8, 4, 4]
    assert makespan == 8 and ends == [8, 8]


def test_batch_size_one_sends_single_images():
    makespan, _, batches = _simulate(10, batch_size=1)
    assert [len(b) for b in batches] == [1] * 10 and makespan == 5


def test_batch_size_follows_the_backlog_within_bounds():
    pool = _pool(threads=2, batch_size=128, min_batch_size=4)
    for backlog, expected in [(0, 0), (1, 1), (3, 3), (5, 4), (8, 4), (9, 5), (40, 20), (256, 128), (1000, 128)]:
        pool._pending = collections.deque(range(backlog))
        assert pool._batch_size_now() == expected, backlog
    pool._threads = 4
    pool._pending = collections.deque(range(100))
    assert pool._batch_size_now() == 25


def test_backlog_is_bounded_and_stream_frames_more_so():
    """The pool takes images for its own backlog up to a full batch per worker thread beyond
    those in flight (a graceful stop finishes them too); frames held in memory (a stream's,
    megabytes each, sent inside the batch) far fewer."""
    pool = _pool(threads=2, batch_size=64)
    limit = 2 * 64 * (PREFETCH + 1)
    assert pool.capacity == limit
    accepted = sum(pool.submit(ImageTask(f"/d/{i}.tif", "/d")) for i in range(limit + 10))
    assert accepted == limit and pool.capacity == 0 and pool.inflight == limit
    pool = _pool(threads=2, batch_size=64)
    frame = FramePayload(b"\0" * 16, "uint32", (2, 2), "")
    taken = [pool.submit(ImageTask(f"/d/{i}.h5", "/d", payload=frame)) for i in range(100)]
    assert sum(taken) == 2 * PAYLOAD_IMAGES_PER_THREAD and not any(taken[2 * PAYLOAD_IMAGES_PER_THREAD:])
    assert pool.submit(ImageTask("/d/file.tif", "/d"))  # files still go in
    pool._pending.clear()
    pool._forget([ImageTask("/d/0.h5", "/d", payload=frame)] * 3)
    assert pool._payloads == 2 * PAYLOAD_IMAGES_PER_THREAD - 3


def test_making_the_factory_prepares_the_first_connection_in_the_background():
    """Issue 17: a first ``Client`` ran ``uname -p`` (the processor name it reports to the
    scheduler) while connecting, on the command's critical path; now a thread does it as
    soon as the factory exists (before the folder is scanned).  A fresh interpreter: this
    one may have connected a client already."""
    import subprocess
    import sys

    code = ("import platform\n"
            "from saxsdog.pipeline.dask_pool import _PREPARED, dask_pool_factory\n"
            "assert 'processor' not in platform.uname().__dict__\n"
            "dask_pool_factory('tcp://127.0.0.1:9')\n"  # nothing is contacted yet
            "_PREPARED[0].join(60)\n"
            "print('processor' in platform.uname().__dict__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]
