"""The image queue: the threaded shell around the queue's rules (:mod:`saxsdog.pipeline.state`).

One dispatcher thread owns all bookkeeping.  It turns what happens (pushes from other
threads through a thread-safe inbox, results and lost workers from the backend, time
passing, sink failures) into events for :class:`~saxsdog.pipeline.state.QueueState`, and
carries out the instructions it returns: submitting tasks to the backend
(:mod:`saxsdog.pipeline.backends`), writing records to the sinks
(:mod:`saxsdog.pipeline.sinks`: run files, ledger, file list, history, callbacks).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue as _queue
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..calibration import Calibration
from ..errors import SaxsdogError
from ..io.images import file_signature
from .backends import Backend, InlineBackend, PayloadArena, local_pool
from .history import History
from .naming import in_directories, output_key, output_root, results_dir
from .options import OUTPUT_FORMATS, QueueOptions
from .pool import PREFETCH
from .classify_sink import ClassifySink, needs_classify_sink
from .sinks import CallbackSink, HistorySink, LiveFileList, RunSink, Sink, TrackerSink
from .sources import DirectoryWatcher, walk_images
from .state import (
    MAX_WORKER_DEATHS,
    Abort,
    Claim,
    Close,
    Closed,
    CloseRun,
    FinishRun,
    Flush,
    Push,
    QueueState,
    Record,
    Report,
    RetryAt,
    SinkFailed,
    SinkRecovered,
    Stop,
    Submit,
    SubmitRefused,
    TaskDone,
    Tick,
    WorkerLost,
    WorkerStalled,
    is_disk_full,
)
from .tasks import ArenaRef, ImageResult, ImageTask

log = logging.getLogger(__name__)

ResultCallback = Callable[[ImageResult], None]

__all__ = [
    "MAX_WORKER_DEATHS",
    "Backend",
    "ImageQueue",
    "InlineBackend",
    "LiveFileList",
    "PayloadArena",
    "RunSink",
    "local_pool",
]


def _add_cpu(cpu: dict[str, float], stage: str, since: float) -> None:
    """Add this thread's CPU seconds since ``since`` to ``cpu[stage]`` (:attr:`ImageQueue.coordinator_cpu`)."""
    cpu[stage] = cpu.get(stage, 0.0) + time.thread_time() - since


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


#: How long a sink's close (a run file's last bytes) is retried after :meth:`ImageQueue.stop` on a full disk.
SINK_CLOSE_PATIENCE = 600.0


def _close_when_space(sink: Sink) -> None:
    """Retry ``sink.close()`` with back-off while the disk is full (a thread started by stop)."""
    deadline = time.monotonic() + SINK_CLOSE_PATIENCE
    delay = 0.1
    while True:
        time.sleep(delay)  # waiting for disk space: nothing else to do here
        try:
            sink.close()
        except Exception as exc:
            if not is_disk_full(str(exc)):
                log.exception("cannot close the %s", sink.name)
                return
            if time.monotonic() + delay > deadline:
                log.error("cannot close the %s: %s; given up after %.0f s, what it held is lost",
                          sink.name, exc, SINK_CLOSE_PATIENCE)
                return
            delay = min(5.0, delay * 2)
            continue
        log.info("closed the %s: the disk has space again", sink.name)
        return


#: Pushes of one :meth:`ImageQueue.push_many` batch the dispatcher takes in per round: the
#: first tasks go to the workers after the first of them, not after a folder's thousands
#: (each push is a signature, an output name and a record for every sink).
PUSH_CHUNK = 64

#: Results between two :func:`release_free_memory` calls of the dispatcher.
TRIM_EVERY = 4096


def release_free_memory() -> bool:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim(0)``).

    A coordinator that runs for days allocates and frees a few kilobytes per frame (results,
    records, ledger rows); glibc keeps freed blocks in its arenas and the RSS ratchets up
    with every peak even though the memory is free.  Trimming now and then keeps the RSS
    at what is in use (a few milliseconds per call).  Returns False where there is no glibc.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim is False:
        return False
    _malloc_trim(0)
    return True


_malloc_trim: Any = None

#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX`` (``malloc.h``).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Have glibc serve every later thread of this process from at most ``arenas`` heaps.

    glibc gives a thread that meets a busy heap an arena of its own (up to 8 per core), and
    a coordinator's threads (dispatcher, ZeroMQ's I/O, the stream and scan threads) each
    free what another allocated.  Blocks freed into one arena and wanted in another stay
    put, and over a long run the RSS creeps up by megabytes that :func:`release_free_memory`
    cannot hand back (100,000 frames through ``saxsdogserver``: 1.04 MiB per 10,000 frames
    with glibc's default, 0.31 with one arena, which is the queue's own 16 bytes per image).
    The coordinator's threads mostly wait, so one heap costs them nothing measurable.  Call
    it before the threads start; arenas made before stay.  Returns False where there is no
    glibc.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))


@dataclasses.dataclass(frozen=True)
class _Batch:
    """Inbox message: several ``(path, force)`` pushes (:meth:`ImageQueue.push_many`)."""

    pushes: list[tuple[str, bool]]


@dataclasses.dataclass(frozen=True)
class _Control:
    """Inbox message: an event for the rules (finish a run, close, stop, abort)."""

    event: Any


def _load_blas_for_numba() -> None:
    """Load SciPy's ``cython_blas`` extension alone, before numba's first compile or cache load.

    numba's one-time start (its first compiled function) checks that
    ``scipy.linalg.cython_blas`` imports (for ``np.dot`` in compiled code); imported by name,
    it runs ``scipy.linalg``'s own imports first: about 0.2 s of the command's start-up, for
    a module the kernels never call.  The extension module alone loads in milliseconds and
    is the same module a later ``import scipy.linalg`` uses.  Nothing happens when numba has
    started or ``scipy.linalg`` is imported already; on any failure numba checks as usual.
    """
    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    try:
        import importlib.machinery
        import importlib.util

        scipy_spec = importlib.util.find_spec("scipy")
        if scipy_spec is None or not scipy_spec.submodule_search_locations:
            return
        folder = Path(list(scipy_spec.submodule_search_locations)[0]) / "linalg"
        found = [folder / f"cython_blas{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
                 if (folder / f"cython_blas{suffix}").is_file()]
        if not found:
            return
        spec = importlib.util.spec_from_file_location(name, found[0])
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception:  # numba's own check imports it the usual way
        sys.modules.pop(name, None)
        log.debug("loading %s alone failed", name, exc_info=True)


def start_numba() -> None:
    """numba's one-time start in this process: its typing and target registries.

    What the first compiled function (or first cache load) of a process does before
    anything else, about two thirds of the kernels' warm-up.  Done in the coordinator before
    the workers are forked, every worker (and every replacement of a lost one) inherits it;
    loading the kernels themselves is left to the workers (:func:`warm_up_kernels`).
    SciPy's BLAS is loaded alone first (:func:`_load_blas_for_numba`).  Nothing happens
    when the kernels do not use numba; on any failure numba starts as usual when first used.
    """
    _load_blas_for_numba()
    if "numba" not in sys.modules:  # the kernels run without numba
        return
    try:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
        cpu_target.typing_context.refresh()
    except Exception:  # an internal of numba: it starts itself on first use
        log.debug("starting numba ahead failed", exc_info=True)


def warm_up_kernels(calibration: Calibration, stddev: bool = True) -> None:
    """Load every compiled function a frame needs: the integration kernels, the ``.chi``
    formatter and, when a stream source is loaded, the stream decoder's block scanner.

    Each loads from numba's cache in milliseconds to tens of milliseconds, without numba's
    one-time start (:func:`~saxsdog.pipeline.kernel_cache.install_cache_loader`); run by each
    forked worker before its first task (and by the coordinator for backends that run
    frames in its process).  A warm-up only: a failure here is logged, and the frame that
    needs what failed reports the error itself.

    Parameters
    ----------
    calibration
        The calibration whose integrators are loaded.
    stddev
        Whether the frames' curves have the standard deviation (live curves): the kernels
        differ, and the warm-up loads the ones the frames will use.
    """
    import numpy as np

    from .kernel_cache import install_cache_loader

    try:
        _load_blas_for_numba()  # for a later compile (a function or pixel type not in the cache)
        install_cache_loader()  # cached functions load without numba's full start
        curves = calibration.curves(np.zeros(calibration.shape, dtype=np.int32), stddev=stddev)
        calibration.chi_bytes(curves)
        if "saxsdog.io.codecs" in sys.modules:  # a stream source is in use (files need no decoder)
            from ..io.codecs import _block_scanner

            scan = _block_scanner()
            if scan is not None:
                scan(np.zeros(8, dtype=np.uint8), 0, 8, 0)
    except Exception:
        log.debug("warm-up of the kernels, the formatter or the decoder failed", exc_info=True)


class ImageQueue:
    """Process the images of a directory with a pool of worker processes.

    Parameters
    ----------
    calibration
        The calibration (built before the workers are forked, so they share it).
    root
        The directory processed; output names and the Directory filter are relative to it.
    options
        Queue options.
    on_result
        Called in the dispatcher thread for every frame result.
    pool_factory
        ``factory(calibration, options)`` returning the execution backend (a
        :class:`~saxsdog.pipeline.backends.Backend`).  Default:
        :func:`~saxsdog.pipeline.backends.local_pool`.
    tracker
        Optional persistent record (the server's ledger), called from the dispatcher
        thread: ``should_accept(path, signature, force) -> bool``,
        ``queued(path, signature)``, ``finished(path, results, signature)``, ``tick()``,
        and optionally ``dropped(path)`` and ``flush()`` (see
        :class:`~saxsdog.pipeline.sinks.TrackerSink`).
    """

    def __init__(self, calibration: Calibration, root: str | os.PathLike[str],
                 options: QueueOptions | None = None, on_result: ResultCallback | None = None,
                 pool_factory: Callable[[Calibration, QueueOptions], Any] | None = None,
                 tracker: Any = None):
        self.calibration = calibration
        self.root = os.path.abspath(root)
        self.options = options or QueueOptions()
        self.history = History()
        self._callbacks: list[ResultCallback] = [on_result] if on_result else []
        self._inbox: _queue.SimpleQueue = _queue.SimpleQueue()
        #: The rest of a batch of pushes being taken in (dispatcher thread only): it comes
        #: before anything posted after it, :data:`PUSH_CHUNK` pushes per round.
        self._batch_rest: deque[tuple[str, bool]] = deque()
        # A push writes a byte here so the dispatcher wakes at once instead of at the end
        # of its poll timeout (this is what keeps event-to-result latency low).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)
        self.state = QueueState(retry_timeout=self.options.retry_timeout, retry_initial=self.options.retry_initial)
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: DirectoryWatcher | None = None
        self._pool: Any = None
        self._pool_factory = pool_factory or local_pool
        #: Why dispatching stopped on its own (e.g. the Dask scheduler became unreachable).
        self.error: SaxsdogError | None = None
        self.tracker = tracker
        #: Set it to ``{}`` before :meth:`start` to have the dispatcher add up its own CPU
        #: seconds per stage there (``time.thread_time``; benchmarks): ``total``, ``results``
        #: (waiting for, unpickling and taking in the workers' results), ``submit`` (pickling and sending
        #: tasks), ``rules`` (:class:`~saxsdog.pipeline.state.QueueState`), ``pushes`` (new
        #: images: their signature, ledger look-up, output name), ``ledger tick`` and
        #: ``sink: <name>`` per sink; the stages do not overlap (``total`` minus their sum is
        #: the loop itself).  ``None``: not measured (nothing is spent on it).
        self.coordinator_cpu: dict[str, float] | None = None
        self.ignored_files = 0
        self._restarts_before = 0
        self._wakeup_at: float | None = None
        if self.options.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {self.options.output_format!r} "
                             f"(one of {', '.join(OUTPUT_FORMATS)})")
        self._sink: RunSink | None = None
        self._sink_closers: list[threading.Thread] = []  # closes retried after stop() (a full disk)
        if self.options.output_format == "nxcansas-run":
            self._sink = RunSink(calibration, output_root(self.root, self.options), self._run_name,
                                 replace=self.options.replace_run_file and self.options.overwrite
                                 and not self.options.resume,
                                 skip_known=self.options.resume or not self.options.overwrite,
                                 confine_to=self.options.confine_to)
        self._arena: PayloadArena | None = None
        self._since_trim = 0  # results since the allocator's free pages were last released
        self._shipped: dict[str, ImageTask] = {}  # path -> original task, while its payload is in the arena
        self.filelist: LiveFileList | None = None
        if self.options.live_filelist:
            cs = calibration.classifiers  # their values get a column each (none by default)
            extra = [] if cs.default else [k for k in cs.keys() if k not in ("I0", "I1", "I2", "invariant",
                                                                           "correlation_length")]
            self.filelist = LiveFileList(results_dir(self.root, self.options) / "filelist.txt",
                                         confine_to=self.options.confine_to,
                                         columns=extra + (["alarms"] if cs.alarms else []))
        # the order matters: the run file sets the outputs the others record
        self._tracker_sink = TrackerSink(tracker) if tracker is not None else None
        self.sinks: list[Sink] = [s for s in (self._sink, self._tracker_sink, self.filelist) if s is not None]
        self.classify_sink: ClassifySink | None = None
        if needs_classify_sink(calibration):  # first: the others record the values it adds
            self.classify_sink = ClassifySink(calibration, results_dir(self.root, self.options),
                                              confine_to=self.options.confine_to, on_update=self._classified_again)
            self.sinks.insert(0, self.classify_sink)
        self.sinks += [HistorySink(self.history), CallbackSink(self._callbacks)]

    def _classified_again(self, result: ImageResult, signature: Any) -> None:
        """A frame's classifier values changed after it was recorded: rewrite its file-list and ledger rows."""
        if self.filelist is not None:
            self.filelist.add(result)
        if self.tracker is not None:
            self.tracker.finished(result.path, [result], signature)

    def _run_name(self) -> str:
        return self.options.run_name or Path(self.root).name

    @property
    def run_files(self) -> list[Path]:
        """NXcanSAS run files: where they will be, or, after :meth:`stop`, those written."""
        if self._sink is None:
            return []
        return list(self._sink.closed) + ([] if self._sink.finished else list(self._sink.paths))

    # -- control ---------------------------------------------------------------------
    def add_callback(self, fn: ResultCallback) -> None:
        self._callbacks.append(fn)

    def start(self) -> ImageQueue:
        """Fork the workers and start dispatching.

        With the default pool each new worker loads the compiled kernels itself from numba's
        cache (:func:`warm_up_kernels`), in parallel with what the caller does next (scanning
        the directory, checking the calibration); the parent runs no compiled code and does
        not start numba (its 0.1 s start is not needed to load cached functions).
        """
        if self._thread is not None:
            return self
        limit_malloc_arenas()  # before the dispatcher, the pool's threads and the workers
        if self._pool_factory is local_pool:
            self._arena = PayloadArena(max(1, self.options.workers) * PREFETCH + 2)
            # the workers' curves have the standard deviation only for live curves (worker.py)
            warm_up = functools.partial(warm_up_kernels, stddev=self.options.keep_curves)
            self._pool = local_pool(self.calibration, self.options, self._arena, warm_up=warm_up)
        else:
            if getattr(self._pool_factory, "forks_workers", True):
                self._warm_up()  # forked workers inherit it (a Dask cluster's workers load their own)
            self._pool = self._pool_factory(self.calibration, self.options)
        self._thread = threading.Thread(target=self._run, name="saxsdog-dispatcher", daemon=True)
        self._thread.start()
        return self

    def _warm_up(self) -> None:
        """Load every compiled function a frame needs in this process (see :func:`warm_up_kernels`),
        for a backend that runs frames here or forks its workers from here."""
        start_numba()
        warm_up_kernels(self.calibration, stddev=self.options.keep_curves)

    def push(self, path: str | os.PathLike[str], force: bool = False) -> None:
        """Queue an image file (thread-safe; duplicates are merged).

        ``force`` processes it again even if it was processed already (``readdir``).
        """
        self._post((os.path.abspath(path), force))

    def push_many(self, paths, force: bool = False) -> None:
        """Queue many image files at once (thread-safe): :meth:`push` for each, in order.

        One message and one wake-up for all of them: queueing a folder of thousands of
        images costs the dispatcher one round instead of one per image.
        """
        batch = [(os.path.abspath(p), force) for p in paths]
        if batch:
            self._post(_Batch(batch))

    def push_task(self, task: ImageTask) -> None:
        """Queue an in-memory frame (``task.payload``; thread-safe).

        ``task.path`` names it (``<root>/<series>_<frame:06d>`` for streams): a name seen
        before is dropped.
        """
        self._post(task)

    def finish_run(self, run: str) -> None:
        """Close the NXcanSAS run ``run`` once its queued frames are done (thread-safe).

        Its files are renamed into place then (a detector series that ended), instead of
        when the queue stops.  Without run files this does nothing.
        """
        self._post(_Control(FinishRun(run)))

    def claim_output(self, path: str, output: str) -> None:
        """``path`` wrote ``output`` before (a restart): no other image of the queue may write it (thread-safe).

        ``output`` is the image's first output file (``.chi`` or ``.h5``); run files are ignored.
        """
        if self.options.output_format == "nxcansas-run" or not output.endswith((".chi", ".h5")):
            return
        self._post(_Control(Claim(path, output.rsplit(".", 1)[0])))

    def close(self) -> None:
        """Finish what is queued but accept nothing new (thread-safe; see :meth:`wait_closed`).

        The original SAXSDOG manual: on ``close`` the server processes what is left in the
        queue but ignores all new files.  Watching stops at once.
        """
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._post(_Control(Close()))

    def wait_closed(self, timeout: float | None = None) -> bool:
        """After :meth:`close`: block until everything queued before it is finished."""
        return self._closed.wait(timeout)

    def _post(self, item: Any) -> None:
        """Hand ``item`` to the dispatcher and wake it (thread-safe).

        The queue stops being idle until the dispatcher has handled it.  Cleared after the
        put: the dispatcher only sets idle when its inbox is empty, so wait_until_idle()
        can never return between this call and the item's handling.
        """
        self._inbox.put(item)
        self._idle.clear()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the dispatcher is awake anyway) or closed

    @property
    def backlog(self) -> int:
        """Tasks queued but not finished (cheap; for sources that must not run ahead)."""
        st = self.state
        return (self._inbox.qsize() + len(self._batch_rest) + len(st.pending) + len(st.retry) + len(st.inflight)
                + len(st.space))

    def fill_from_directory(self, in_threads: bool = False, force: bool = False) -> int:
        """Queue every image already in the directory; returns how many."""
        images, ignored = walk_images(self.root, self.options.directories, in_threads,
                                      confine_to=self.options.confine_to)
        self.ignored_files += ignored
        self.push_many(images, force)
        return len(images)

    def watch(self) -> None:
        """Also queue images that appear later (recursively)."""
        if self._watcher is None:
            self._watcher = DirectoryWatcher(self.root, self.push, confine_to=self.options.confine_to)
            self._watcher.start()

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued, retrying or being processed."""
        return self._idle.wait(timeout)

    def stop(self, abort: bool = False, timeout: float = 30.0) -> None:
        """Stop watching and dispatching.

        Without ``abort`` the images in flight are finished and the waiting ones stay
        unfinished (queued in the ledger: a restarted server resumes them); ``abort`` kills
        the workers and records every unfinished image as dropped.
        """
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._inbox.put(_Control(Abort(time.time()) if abort else Stop()))
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            if abort:
                self._pool.terminate()
            else:
                self._pool.close()
            # after closing: a pool may learn of a lost worker only then (a Dask pool's last
            # look at the scheduler's worker list)
            self._restarts_before += self._pool.restarts
            self._pool = None
        for sink in self.sinks:
            # also after an abort: the frames processed so far are real results
            self._close_sink(sink)
        self.filelist = None

    def _close_sink(self, sink: Sink) -> None:
        """Close a sink; on a full disk its close is retried in the background (:meth:`wait_sinks_closed`).

        A run file whose last bytes wait for space is completed as soon as the disk takes
        them; stopping does not wait for that (the server's command thread calls it), but
        the interpreter does before it exits (a non-daemon thread, bounded by
        :data:`SINK_CLOSE_PATIENCE`).
        """
        try:
            sink.close()
            return
        except Exception as exc:
            if not is_disk_full(str(exc)):
                log.exception("cannot close the %s", sink.name)
                return
            log.error("cannot close the %s (%s): retrying for up to %.0f s", sink.name, exc,
                      SINK_CLOSE_PATIENCE)
        closer = threading.Thread(target=_close_when_space, args=(sink,), name=f"saxsdog-close-{sink.name}")
        self._sink_closers.append(closer)
        closer.start()

    def wait_sinks_closed(self, timeout: float | None = None) -> bool:
        """After :meth:`stop`: block until the sinks whose close waited for disk space are closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for closer in self._sink_closers:
            closer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(c.is_alive() for c in self._sink_closers)

    # -- state -----------------------------------------------------------------------
    @property
    def queue_length(self) -> int:
        """Images waiting, retrying (also for disk space) or being processed."""
        return self.state.active

    @property
    def queued_total(self) -> int:
        return self.state.queued_total

    @property
    def paused(self) -> str | None:
        """Why the queue does not submit work now (a full disk, a failing sink), or ``None``."""
        return self.state.paused

    def worker_pids(self) -> list[int]:
        return self._pool.pids() if self._pool else []

    @property
    def worker_restarts(self) -> int:
        return self._restarts_before + (self._pool.restarts if self._pool else 0)

    def stats(self) -> dict[str, Any]:
        """Frames/s, queue length, images processed, failures, per-stage timings, pauses."""
        h = self.history
        st = self.state
        return {
            "frames_per_second": h.frames_per_second(),
            "overall_frames_per_second": h.overall_rate(),
            "queue_length": self.queue_length,
            "images_processed": h.processed,
            "images_skipped": h.skipped,
            "images_failed": h.failed,
            "images_queued": st.queued_total,
            "stage_seconds": h.stage_means(),
            "worker_restarts": self.worker_restarts,
            "paused": st.paused,
            "waiting_for_space": len(st.space),
            "sink_errors": st.sink_errors,
            "last_sink_error": st.last_sink_error,
            "outputs_renamed": st.renamed_outputs,
            "ignored_after_close": st.ignored_after_close,
            "alarms": self.classify_sink.alarms if self.classify_sink is not None else 0,
            "latest_alarm": self.classify_sink.latest_alarms if self.classify_sink is not None else None,
            # the Average block's latest groups: frames, kept, rejected (and which)
            "averages": ({g: a.summary() for g, a in list(self.classify_sink.averages.items())[-10:]}
                         if self.classify_sink is not None else {}),
        }

    # -- the dispatcher: events in, instructions out ---------------------------------
    def _push_event(self, path: str, force: bool) -> Push | None:
        sig = file_signature(path)
        if self.state.is_known(path, sig, force):
            if self.state.closing:
                self.state.ignored_after_close += 1
            return None
        in_scope = in_directories(path, self.root, self.options.directories)
        accepted = True
        if in_scope and self.tracker is not None:
            try:
                accepted = self.tracker.should_accept(path, sig, force)
            except Exception:  # an unreadable ledger must not lose the image
                log.exception("cannot look %s up in the ledger", path)
        skip = self._sink.skip_frames(path, self.root) if self._sink is not None and self._sink.skip_known \
            else frozenset()
        return Push(path, self.root, time.monotonic(), sig, force, in_scope, accepted,
                    output_key(path, self.root, self.options), skip)

    def _task_event(self, task: ImageTask) -> Push | None:
        if task.path in self.state.images:
            return None
        accepted = True
        if self.tracker is not None:
            accepted = self.tracker.should_accept(task.path, None, False)
        return Push(task.path, task.root, time.monotonic(), None, False, True, accepted,
                    output_key(task.path, task.root, self.options), payload=task.payload, run=task.run)

    def _execute(self, instructions: list) -> list:
        """Carry out instructions; returns the events they produced (refusals, sink failures)."""
        events: list = []
        cpu = self.coordinator_cpu
        for ins in instructions:
            if isinstance(ins, Submit):
                t0 = time.thread_time() if cpu is not None else 0.0
                sent = self._ship(ins.task)
                if not self._pool.submit(sent):
                    self._unship(sent)
                    events.append(SubmitRefused(ins.task))
                if cpu is not None:
                    _add_cpu(cpu, "submit", t0)
            elif isinstance(ins, Record):
                for sink in self.sinks:
                    t0 = time.thread_time() if cpu is not None else 0.0
                    try:
                        sink.record(ins)
                    except Exception as exc:  # a full disk: the sink keeps it, the queue pauses
                        (log.debug if self.state.sink_broken else log.error)("cannot write %s of %s to the %s: %s", ins.state, ins.path, sink.name, exc)
                        events.append(SinkFailed(sink.name, str(exc), time.monotonic()))
                    if cpu is not None:
                        _add_cpu(cpu, "sink: " + sink.name, t0)
            elif isinstance(ins, RetryAt):
                self._wakeup_at = ins.when if self._wakeup_at is None else min(self._wakeup_at, ins.when)
            elif isinstance(ins, Flush):
                failed = None
                for sink in self.sinks:
                    try:
                        sink.flush()
                    except Exception as exc:
                        failed = failed or SinkFailed(sink.name, str(exc), time.monotonic())
                events.append(failed or SinkRecovered(time.monotonic()))
            elif isinstance(ins, CloseRun):
                if self._sink is not None:
                    try:
                        self._sink.finish(ins.run)
                    except Exception as exc:  # the frames stay counted as processed; the log says why
                        if is_disk_full(str(exc)):  # kept: the sink's flush completes the run
                            events.append(SinkFailed(self._sink.name, str(exc), time.monotonic()))
                        else:
                            log.exception("cannot close the run %s", ins.run)
            elif isinstance(ins, Report):
                getattr(log, ins.level, log.info)("%s", ins.message)
            elif isinstance(ins, Closed):
                self._closed.set()
        return events

    def _apply(self, *events, submit_first: bool = False) -> None:
        """Hand events to the rules and carry out the result (and what that produces).

        ``submit_first``: the new tasks the events produce are handed to the workers before
        the results are written to the sinks (a run file's group of frames takes a few
        milliseconds: the workers keep working meanwhile instead of waiting for it).
        """
        pending = list(events)
        cpu = self.coordinator_cpu
        while pending:
            t0 = time.thread_time() if cpu is not None else 0.0
            instructions = self.state.handle(*pending)
            if cpu is not None:
                _add_cpu(cpu, "rules", t0)
            if submit_first:
                submits = [ins for ins in instructions if isinstance(ins, Submit)]
                if submits and len(submits) < len(instructions):
                    instructions = submits + [ins for ins in instructions if not isinstance(ins, Submit)]
                submit_first = False
            pending = self._execute(instructions)

    def _ship(self, task: ImageTask) -> ImageTask:
        """The task as sent to a worker: its frame's bytes in the arena, or as bytes."""
        p = task.payload
        if p is None or isinstance(p.data, (bytes, ArenaRef)):
            return task
        ref = self._arena.put(p.data) if self._arena is not None else None
        if ref is None:
            return dataclasses.replace(task, payload=dataclasses.replace(p, data=bytes(p.data)))
        self._shipped[task.path] = task
        return dataclasses.replace(task, payload=dataclasses.replace(p, data=ref))

    def _unship(self, task: ImageTask) -> ImageTask:
        """Free the task's arena slot; returns the original task."""
        if task.payload is not None and isinstance(task.payload.data, ArenaRef) and self._arena is not None:
            self._arena.release(task.payload.data)
            return self._shipped.pop(task.path, task)
        return task

    def _run(self) -> None:
        try:
            self._dispatch()
        except SaxsdogError as exc:  # the execution backend is gone (SchedulerUnreachable)
            log.error("%s", exc)
            self.error = exc
            self._stopping.set()
            self._idle.set()  # wake wait_until_idle(); the caller checks .error
            self._closed.set()

    def _take_batch_chunk(self) -> None:
        """Take in the next :data:`PUSH_CHUNK` pushes of the batch being taken in."""
        rest = self._batch_rest
        cpu = self.coordinator_cpu
        t0 = time.thread_time() if cpu is not None else 0.0
        chunk = [rest.popleft() for _ in range(min(PUSH_CHUNK, len(rest)))]
        events = [ev for push in chunk if (ev := self._push_event(*push)) is not None]
        if cpu is not None:
            _add_cpu(cpu, "pushes", t0)
        if events:
            self._apply(*events)

    def _drain_inbox(self) -> None:
        """Take in what was posted; a large batch of pushes one chunk per call (in order:
        nothing posted after it is taken in before its last push)."""
        while True:
            if self._batch_rest:
                self._take_batch_chunk()
                if self._batch_rest:
                    return  # the next round goes on with it, after submitting and polling
                continue
            try:
                item = self._inbox.get_nowait()
            except _queue.Empty:
                return
            if isinstance(item, _Control):
                self._apply(item.event)
                continue
            if isinstance(item, _Batch):
                self._batch_rest.extend(item.pushes)
                continue
            cpu = self.coordinator_cpu
            t0 = time.thread_time() if cpu is not None else 0.0
            ev = self._task_event(item) if isinstance(item, ImageTask) else self._push_event(*item)
            if cpu is not None:
                _add_cpu(cpu, "pushes", t0)
            if ev is not None:
                self._apply(ev)

    def _dispatch(self) -> None:
        cpu = self.coordinator_cpu
        if cpu is None:
            self._dispatch_loop()
            return
        t0 = time.thread_time()
        try:
            self._dispatch_loop()
        finally:
            _add_cpu(cpu, "total", t0)

    def _dispatch_loop(self) -> None:
        pool = self._pool
        assert pool is not None
        state = self.state
        cpu = self.coordinator_cpu
        while True:
            self._drain_inbox()
            if state.finished:
                break
            now = time.monotonic()
            self._wakeup_at = None
            self._apply(Tick(now, pool.capacity))
            if self._tracker_sink is not None and not state.sink_broken:
                t0 = time.thread_time() if cpu is not None else 0.0
                try:
                    self._tracker_sink.tick()
                except Exception as exc:
                    self._apply(SinkFailed("ledger", str(exc), time.monotonic()))
                if cpu is not None:
                    _add_cpu(cpu, "ledger tick", t0)
            if not state.busy and self._inbox.empty() and not self._batch_rest:
                self._idle.set()
            timeout = 0.0 if self._batch_rest else 0.05  # more of a batch to take in: no waiting
            wake = state.next_wakeup()
            if wake is not None:
                timeout = max(0.0, min(timeout, wake - time.monotonic()))
            t0 = time.thread_time() if cpu is not None else 0.0
            polled = pool.poll(timeout, wakeup=self._wake_r)
            done, orphaned = polled[0], polled[1]
            stalled = polled[2] if len(polled) > 2 else ()  # a backend that tells stalls apart
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            events: list = []
            for task, results in done:
                task = self._unship(task)
                events.append(TaskDone(task, results, time.monotonic(), time.time(),
                                       file_signature(task.path) if task.payload is None else None))
            for task in orphaned:  # their worker died: nothing is lost
                events.append(WorkerLost(self._unship(task), time.monotonic(), time.time()))
            for task in stalled:  # their worker hung and was replaced
                events.append(WorkerStalled(self._unship(task), time.monotonic(), time.time()))
            if cpu is not None:
                _add_cpu(cpu, "results", t0)
            self._since_trim += len(done)
            if self._since_trim >= TRIM_EVERY:
                self._since_trim = 0
                release_free_memory()
            if events:
                # with a tick: the slots the results freed get new tasks before the results
                # are recorded (submit_first)
                self._apply(*events, Tick(time.monotonic(), pool.capacity), submit_first=True)
