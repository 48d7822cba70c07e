"""The coordinator's threads share one glibc heap (``limit_malloc_arenas``).

Freed blocks stranded in per-thread arenas made a long run's RSS creep up (bench_soak: 1.04
MiB per 10,000 frames with glibc's default arenas, 0.31 with one).  glibc's
``malloc_stats()`` lists each arena on stderr, so a child process that makes its threads
allocate at the same time shows how many heaps there are.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import ctypes, sys, threading
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "limit":
        from saxsdog.pipeline.queue import limit_malloc_arenas
        assert limit_malloc_arenas()
    def churn():
        for _ in range(20000):  # ctypes drops the GIL: the threads meet in malloc
            libc.free(libc.malloc(4096))
    threads = [threading.Thread(target=churn) for _ in range(6)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc.malloc_stats()
    """
)


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.count("Arena ")


def test_with_the_limit_every_thread_allocates_from_one_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_stats  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc: no arenas to limit")
    default = _arenas("default")
    if default < 2:
        pytest.skip("glibc made one arena even without the limit (the threads never met in malloc)")
    assert _arenas("limit") == 1


def test_the_queue_limits_the_arenas_before_its_threads_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from saxsdog.pipeline import queue as queue_module

    calls: list[int] = []
    monkeypatch.setattr(queue_module, "limit_malloc_arenas", lambda arenas=1: calls.append(arenas) or True)

    class Stop(Exception):
        pass

    def no_pool(*args: object, **kwargs: object) -> None:
        assert calls == [1], "the arenas are limited before the pool's threads and workers start"
        raise Stop

    q = queue_module.ImageQueue.__new__(queue_module.ImageQueue)
    q._thread = None
    q._pool_factory = no_pool  # type: ignore[assignment]
    q._warm_up = lambda: None  # type: ignore[method-assign]
    q.calibration = None  # type: ignore[assignment]
    q.options = None  # type: ignore[assignment]
    with pytest.raises(Stop):
        q.start()
