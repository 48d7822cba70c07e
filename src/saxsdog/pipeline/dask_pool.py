"""Scale-out execution backend: the queue's image tasks on a ``dask.distributed`` cluster.

:class:`DaskPool` offers the same interface as the local
:class:`~saxsdog.pipeline.pool.WorkerPool` (``submit``, ``poll``, ``capacity``,
``inflight``, ``restarts``, ``pids``, ``close``, ``terminate``), so an
:class:`~saxsdog.pipeline.queue.ImageQueue` runs unchanged on a cluster::

    ImageQueue(cal, root, options, pool_factory=dask_pool_factory("tcp://host:8786"))

Design
------
* The calibration (its built operators are several MB of numpy arrays) travels to each
  worker **once**, inside a :class:`distributed.WorkerPlugin`; the scheduler also hands it
  to workers that join (or are restarted) later.  Tasks carry only a token and file paths,
  pickled into one byte string for :func:`saxsdog.pipeline.dask_task.run_batch`: the
  scheduler unpickles every task, and so handles bytes and a standard-library module
  instead of importing the integration stack and re-pickling every batch.
* Image tasks are grouped into batches (one dask task for up to ``batch_size`` images): each
  task costs a few ms of CPU in the scheduler, the worker's event loop and this process
  together (measured on 2 cores: 3-10 ms a task, i.e. ~0.45 ms per image at 16 images a
  task), taken from the integration on a machine whose cores run both.  Two batches per
  worker thread are in flight so the ~10 ms round trip is hidden.  The pool keeps a backlog
  of its own (up to a full batch per worker thread beyond those in flight) and sizes each
  batch from it, *guided*: the backlog's share per worker thread, between
  ``min_batch_size`` and ``batch_size``.  A run in full flow gets large batches; as the
  backlog drains at the end of a run the batches shrink, so both workers finish together
  instead of one idling while the other works through a large last batch.  Batches are sent from ``poll`` (the dispatcher calls it after
  each round of submissions, so the size is chosen from the whole round) and as soon as a
  batch finishes; at low image rates nothing waits for a batch to fill.
* Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes every
  image buffer page-fault afresh (reads 4x slower, half the throughput); the plugin
  restores glibc's usual thresholds in each worker (``tune_malloc``).
* Each worker's diagnostics are quieted while a pool's plugin is installed and restored when
  the last one leaves (``quiet_workers``, :func:`_quiet_worker`): the statistical profiler (a
  stack walk of every thread every 10 ms) is stopped, the event-loop check and the system
  monitor run every 0.2 s and 2 s instead of 20 ms and 0.5 s.  Two idle workers took 70 ms of
  CPU a second before, 17 ms after; the cores are the integration's.
* Results come back through futures' done callbacks; ``poll`` gathers every finished batch
  in one request and returns the very :class:`ImageResult` objects the workers made.
  Outputs are written by the workers (shared storage), atomically.
* A worker dying mid-batch: the scheduler re-runs the batch elsewhere (up to its
  ``allowed-failures``); if it gives up (``KilledWorker``) the batch's images are returned
  as orphaned so the queue re-queues them, and after ``max_losses`` such losses an image is
  reported as failed instead (a file that kills every worker must not loop forever).  A
  redo rewrites identical outputs atomically, so nothing is corrupted or duplicated.
* Losing the scheduler: ``poll`` raises :class:`SchedulerUnreachable` naming the address;
  the work done so far is on disk and ``saxsdog -r`` completes the run.  A scheduler that
  keeps its connection open but stops answering (hung, stopped, swapping) is lost too once
  it has not answered for ``unresponsive_timeout`` seconds: an open TCP connection alone
  would otherwise leave the queue waiting forever for batches nobody reports.

Workers of a remote cluster must have the same saxsdog version installed (tasks refer to
functions of this module) and see the image and output paths under the same names.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import platform
import queue as _queue
import select
import subprocess  # noqa: F401 - loaded for _prepare_connection's thread
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

try:
    from distributed import Client, Future, LocalCluster, WorkerPlugin
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ..extras import MissingExtraError, missing_extra_message

    raise MissingExtraError(missing_extra_message("distributed", "dask", "the Dask backend (--scheduler)")) from exc

from ..calibration import Calibration
from ..errors import SaxsdogError
from .dask_task import INSTALL_LOCK, PROCESSORS, processor, run_batch
from .options import QueueOptions
from .tasks import ImageResult, ImageTask
from .worker import ImageProcessor

log = logging.getLogger(__name__)

#: Most images per dask task by default (~0.3 s of work).  Each task costs CPU in the
#: scheduler, the worker's event loop and the client (measured on 2 cores, per image:
#: scheduler 0.31 ms at 8 images a task, 0.27 at 16, 0.23 at 32, 0.125 at 64; the worker's
#: event loop 0.29, 0.29, 0.25, 0.15; the client's 0.34, 0.19 at 32, 0.05 at 96), all of it
#: taken from the integration; larger batches make a killed worker's redo coarser (the end
#: of a run is not: see ``MIN_BATCH_SIZE``).  1000 images are 13 tasks (63 at 16 a task).
DEFAULT_BATCH_SIZE = 128
#: Fewest images per dask task while the backlog has that many: the batches at the end of
#: a run (guided sizing, see :meth:`DaskPool._batch_size_now`).
MIN_BATCH_SIZE = 4
#: Batches per worker thread kept in flight (one running, one ready to start).
PREFETCH = 2
#: Full batches per worker thread the pool's own backlog holds beyond those in flight: in a
#: steady run its share per thread (which guides the batch size) is a full batch.  Images in
#: the backlog count as in flight, so a graceful stop finishes them too: the more, the
#: longer a stop takes (one batch per thread: ~0.5 s at 250 frames/s a core).
BACKLOG_BATCHES = 1
#: Images with an in-memory frame (a stream's) held per worker thread at most: their frames
#: travel inside the batch, megabytes each.
PAYLOAD_IMAGES_PER_THREAD = 16
#: How often ``poll`` asks the scheduler for the worker list (restarts, capacity).
WORKER_REFRESH_S = 0.5
#: Seconds without any answer from the scheduler before it counts as lost (by default).
UNRESPONSIVE_TIMEOUT_S = 30.0


class DaskSetupError(SaxsdogError):
    """The pool's calibration could not be installed on the cluster's workers.

    Parameters
    ----------
    address
        The scheduler address.
    cause
        What the workers (or the scheduler) raised.
    """

    def __init__(self, address: str, cause: BaseException):
        self.address = address
        super().__init__(f"could not install the calibration on the workers of the Dask cluster at {address}: "
                         f"{type(cause).__name__}: {cause} (the same saxsdog version must be installed there)")


class SchedulerUnreachable(SaxsdogError):
    """The Dask scheduler cannot be reached (never could, or the connection was lost).

    Parameters
    ----------
    address
        The scheduler address.
    reason
        What happened.
    mid_run
        The connection was lost while processing: say how to complete the run.
    """

    def __init__(self, address: str, reason: str, mid_run: bool = False):
        self.address = address
        self.reason = reason
        text = f"Dask scheduler {address} unreachable: {reason}"
        if mid_run:
            text += "; the outputs written so far are complete: run again with -r to process the rest"
        super().__init__(text)


# -- worker side ---------------------------------------------------------------------------
#: The processors installed on this worker process, by pool token (shared with the task's module).
_PROCESSORS: dict[str, ImageProcessor] = PROCESSORS
#: How many times this process unpickled each pool's calibration (diagnostics and tests:
#: it must stay 1 per worker process, whatever the number of tasks).
_CALIBRATION_LOADS: dict[str, int] = {}
_INSTALL_LOCK = INSTALL_LOCK
#: Whether :func:`_tune_malloc` took effect in this process.
_MALLOC_TUNED = [False]
#: Worker callbacks quieted while a saxsdog pool is installed (diagnostics only, see
#: :func:`_quiet_worker`): ``None`` stops one, a number raises its interval to at least that (ms).
QUIETED_CALLBACKS: dict[str, float | None] = {"profile": None, "profile-cycle": None, "tick": 200.0,
                                              "monitor": 2000.0}
#: Pool tokens holding this worker quiet, and what they changed: (callback, its interval, or
#: ``None`` when it was stopped).
_QUIETED_BY: set[str] = set()
_QUIETED: list[tuple[Any, float | None]] = []


class _Payload:
    """The calibration and options of one pool, counting its own unpickling."""

    def __init__(self, token: str, calibration: Calibration, options: QueueOptions, tune_malloc: bool = True):
        self.token = token
        self.calibration = calibration
        self.options = options
        self.tune_malloc = tune_malloc

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _CALIBRATION_LOADS[self.token] = _CALIBRATION_LOADS.get(self.token, 0) + 1


class SaxsdogPlugin(WorkerPlugin):
    """Installs one pool's :class:`ImageProcessor` on every worker, once.

    Parameters
    ----------
    token
        Identifies the pool (several pools may share a cluster).
    calibration, options
        What the processor needs.
    tune_malloc
        Restore glibc's usual malloc thresholds in the worker (see :func:`_tune_malloc`).
    """

    def __init__(self, token: str, calibration: Calibration, options: QueueOptions, tune_malloc: bool = True,
                 quiet_workers: bool = True):
        self.token = token
        self.name = f"saxsdog-{token}"
        self.payload = _Payload(token, calibration, options, tune_malloc)
        self.quiet_workers = quiet_workers

    def setup(self, worker: Any = None) -> None:
        _install(self.token, self.payload)
        if self.quiet_workers and worker is not None:
            _quiet_worker(worker, self.token)

    def teardown(self, worker: Any = None) -> None:
        # frees the operator when the pool closes, on a cluster that lives on
        _PROCESSORS.pop(self.token, None)
        if worker is not None:
            _restore_worker(worker, self.token)


def _quiet_worker(worker: Any, token: str) -> None:
    """Quiet the worker's diagnostics while pool ``token`` is installed (runs on its event loop).

    Dask samples every thread's stack every 10 ms for its dashboard's profile page, checks
    its event loop every 20 ms (``tick``: a warning once it was blocked for seconds) and reads
    the system's CPU, memory and network counters every 0.5 s (``monitor``, the dashboard's
    plots).  Measured on two idle workers: 70 ms of CPU a second; 17 ms with the profiler
    stopped and the other two at 0.2 s and 2 s; a busy worker's stack sampling costs more and
    takes the GIL from the integrating thread.  Heartbeats and the memory limits stay as they
    are.  Several pools may share a worker: the first quiets it, the last to leave restores it.
    """
    if not _QUIETED_BY:
        callbacks = getattr(worker, "periodic_callbacks", {}) or {}
        for name, slower in QUIETED_CALLBACKS.items():
            pc = callbacks.get(name)
            if pc is None:
                continue
            if slower is None:
                if pc.is_running():
                    pc.stop()
                    _QUIETED.append((pc, None))
            elif pc.callback_time < slower:
                _QUIETED.append((pc, pc.callback_time))
                pc.callback_time = slower  # the next run is scheduled with it
    _QUIETED_BY.add(token)


def _restore_worker(worker: Any, token: str) -> None:
    """Undo :func:`_quiet_worker` once no saxsdog pool is installed on the worker any more."""
    if token not in _QUIETED_BY:
        return
    _QUIETED_BY.discard(token)
    if not _QUIETED_BY:
        while _QUIETED:
            pc, interval = _QUIETED.pop()
            if interval is None:
                pc.start()
            else:
                pc.callback_time = interval


def _tune_malloc() -> bool:
    """Undo the Dask nanny's ``MALLOC_TRIM_THRESHOLD_=65536`` for this worker process.

    With it glibc hands every freed multi-MB image buffer back to the OS, so each new
    frame is read into fresh pages and page-faults: reading a Pilatus 1M TIFF took 2-4 ms
    instead of 0.5 ms, and Dask ran at half the local pool's rate.  These are the values
    glibc's own adaptive thresholds reach in a forked local worker (mmap threshold at its
    32 MB maximum, trim threshold twice that).  Linux/glibc only; a no-op elsewhere.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 64 << 20))


def _install(token: str, payload: _Payload) -> ImageProcessor:
    with _INSTALL_LOCK:
        proc = _PROCESSORS.get(token)
        if proc is None:
            import numpy as np

            if payload.tune_malloc:
                _MALLOC_TUNED[0] = _tune_malloc()
            # mapping files as the local pool's workers do: a worker a truncated file kills
            # (SIGBUS) is restarted by its nanny, and its batch is submitted again
            proc = ImageProcessor(payload.calibration, payload.options, map_images=True)
            # load/compile the kernels and the .chi formatter now rather than in the first batch
            curves = payload.calibration.curves(np.zeros(payload.calibration.shape, dtype=np.int32))
            payload.calibration.chi_bytes(curves)
            _PROCESSORS[token] = proc
        return proc


def _processor(token: str) -> ImageProcessor:
    proc: ImageProcessor = processor(token)
    return proc


def process_batch(token: str, tasks: list[ImageTask]) -> list[list[ImageResult]]:
    """The dask task: process each image of a batch with the worker's installed processor."""
    proc = _processor(token)
    return [proc.process(t) for t in tasks]


def _worker_state(token: str) -> dict[str, Any]:
    """Diagnostics run on a worker: its pid, how often it received the calibration, whether
    the processor is installed and the malloc thresholds were tuned."""
    return {"pid": os.getpid(), "calibration_loads": _CALIBRATION_LOADS.get(token, 0),
            "installed": token in _PROCESSORS, "malloc_tuned": _MALLOC_TUNED[0],
            "maps_images": token in _PROCESSORS and _PROCESSORS[token]._buffer.map_files,
            "quieted": token in _QUIETED_BY}


def _diagnostics(dask_worker: Any = None) -> dict[str, Any]:
    """The worker's quieted callbacks: running or not, and their intervals (tests; via ``client.run``)."""
    callbacks = getattr(dask_worker, "periodic_callbacks", {}) or {}
    return {name: (callbacks[name].is_running(), callbacks[name].callback_time)
            for name in QUIETED_CALLBACKS if name in callbacks}


# -- client side ---------------------------------------------------------------------------
class DaskPool:
    """Runs :class:`ImageTask` batches on a Dask cluster; a drop-in for ``WorkerPool``.

    Parameters
    ----------
    calibration
        The built calibration; sent to each worker once.
    options
        Queue options (``workers`` sizes the cluster started for ``address="local"``).
    address
        Scheduler address such as ``"tcp://10.0.0.5:8786"``, or ``"local"`` to start a
        ``LocalCluster`` of ``options.workers`` single-threaded processes owned (and closed)
        by the pool.
    batch_size
        Most images per dask task.
    min_batch_size
        Fewest images per dask task while the pool holds that many (smaller batches at the
        end of a run keep the workers busy to the end).
    retries
        Dask retries of a batch whose task raised (the processor itself never raises).
    max_losses
        A batch lost with its worker this many times fails its images instead of
        re-queueing them again.
    connect_timeout
        Seconds to wait for the scheduler before raising :class:`SchedulerUnreachable`.
    tune_malloc
        Set glibc's malloc thresholds in each worker process to what a forked local worker
        has (Dask's nanny lowers the trim threshold, which makes every image read
        page-fault: half the throughput).  The setting stays for the worker's lifetime.
    unresponsive_timeout
        Seconds the scheduler may go without answering the pool's periodic worker-list
        request before ``poll`` raises :class:`SchedulerUnreachable` (a hung scheduler
        keeps its connection open, so it is never "disconnected").
    background_install
        Install the calibration on the workers (the plugin: pickled, sent through the
        scheduler, unpickled and warmed up on each worker, ~35 ms) in a thread, while the
        queue takes in its first images; batches are sent once it is installed and an error
        installing it is raised by ``poll`` (:class:`DaskSetupError`).  ``False``: in the
        constructor, which raises it (what :func:`dask_pool_factory` does not ask for).
    quiet_workers
        Quiet each worker's diagnostics while the pool is installed (the dashboard's profile
        page stays empty, its system plots are coarser; see :func:`_quiet_worker`); restored
        when the pool closes.

    Raises
    ------
    SchedulerUnreachable
        When no scheduler answers at ``address``.
    """

    def __init__(self, calibration: Calibration, options: QueueOptions, address: str, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, min_batch_size: int = MIN_BATCH_SIZE,
                 retries: int = 1, max_losses: int = 3,
                 connect_timeout: float = 5.0, tune_malloc: bool = True,
                 unresponsive_timeout: float = UNRESPONSIVE_TIMEOUT_S, quiet_workers: bool = True,
                 background_install: bool = False):
        self.address = address
        self.unresponsive_timeout = float(unresponsive_timeout)
        self._answered = time.monotonic()  # when the scheduler last answered
        self._unresponsive = False
        self.batch_size = max(1, int(batch_size))
        self.min_batch_size = max(1, min(int(min_batch_size), self.batch_size))
        self.retries = retries
        self.max_losses = max_losses
        self.restarts = 0
        #: Interface parity with the local pool: stalls are the scheduler's to detect here
        #: (a stopped Dask worker misses its heartbeats and is removed), so none are counted.
        self.stalls = 0
        self.losses: list[Any] = []
        self.token = uuid.uuid4().hex[:12]
        self._cluster: LocalCluster | None = None
        #: Submitted images not yet sent to the cluster, oldest first (the pool's backlog).
        self._pending: collections.deque[ImageTask] = collections.deque()
        self._futures: dict[str, tuple[Future, list[ImageTask]]] = {}  # key -> (future, tasks)
        self._sent = 0  # images in self._futures
        self._payloads = 0  # of the pending and sent images, those carrying an in-memory frame
        #: Sizes of the batches sent (diagnostics and tests; the last few hundred).
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=512)
        self._finished: _queue.SimpleQueue[str] = _queue.SimpleQueue()
        self._losses: dict[str, int] = {}
        self._n = 0
        self._workers: set[str] = set()
        self._threads = 1
        self._refreshed = 0.0
        self._closed = False
        self._installer: threading.Thread | None = None
        self._install_error: BaseException | None = None
        if address == "local":
            # single-threaded processes: the kernels are single-threaded and hold the GIL
            # while reading/writing; any free port for the scheduler's HTTP server (a second
            # cluster on the machine must not clash with the default 8787)
            self._cluster = LocalCluster(n_workers=max(1, options.workers), threads_per_worker=1,
                                         processes=True, dashboard_address=":0")
            address = self._cluster.scheduler_address
        try:
            self.client = Client(address, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self._close_cluster()
            raise SchedulerUnreachable(self.address, f"no answer within {connect_timeout:g} s ({exc})") from exc
        # finished batches wake poll through this pipe (with the queue's own wake-up fd)
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        os.set_blocking(self._done_w, False)
        try:
            self._plugin = SaxsdogPlugin(self.token, calibration, options, tune_malloc, quiet_workers)
            self._refresh_workers(force=True)
            if background_install:
                self._installer = threading.Thread(target=self._install_plugin, name="saxsdog-dask-install",
                                                   daemon=True)
                self._installer.start()
            else:
                self.client.register_plugin(self._plugin)
        except BaseException:
            self.terminate()
            raise

    def _install_plugin(self) -> None:
        """The background installation of the plugin (``background_install``); wakes ``poll`` when done."""
        try:
            self.client.register_plugin(self._plugin)
        except BaseException as exc:  # raised by poll, in the dispatcher
            self._install_error = exc
        finally:
            self._batch_done(None)

    def _installed(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Whether the calibration is installed on the workers (batches may be sent).

        Raises
        ------
        SchedulerUnreachable, DaskSetupError
            What went wrong installing it in the background.
        """
        installer = self._installer
        if installer is None:
            return True
        if wait:
            installer.join(timeout)
        if installer.is_alive():
            return False
        self._installer = None
        exc = self._install_error
        if exc is not None:
            self._check_connected(exc)
            raise DaskSetupError(self.address, exc) from exc
        return True

    # -- capacity --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """How many more images can be handed out now (to the cluster or the pool's backlog)."""
        return self._threads * self.batch_size * (PREFETCH + BACKLOG_BATCHES) - self.inflight

    @property
    def inflight(self) -> int:
        """Images submitted and not yet reported (those in the pool's backlog too)."""
        return len(self._pending) + self._sent

    def _refresh_workers(self, force: bool = False) -> None:
        """Follow the scheduler's worker list: lost workers count as restarts."""
        now = time.monotonic()
        if not force and now - self._refreshed < WORKER_REFRESH_S:
            return
        self._refreshed = now
        try:
            nthreads = self.client.nthreads(callback_timeout=min(5.0, self.unresponsive_timeout))
        except Exception as exc:
            self._check_connected(exc)
            silent = time.monotonic() - self._answered
            if silent >= self.unresponsive_timeout:
                self._unresponsive = True
                raise SchedulerUnreachable(
                    self.address, f"no answer for {silent:.0f} s (connected, but hung or stopped?)",
                    mid_run=True) from exc
            return  # transient: try again next time
        self._answered = time.monotonic()
        current = set(nthreads)
        lost = self._workers - current
        if lost:
            log.warning("%d Dask worker(s) lost (%s); their batches are redone elsewhere",
                        len(lost), ", ".join(sorted(lost)))
            self.restarts += len(lost)
        self._workers = current
        # never zero: batches may wait on the scheduler for workers that are starting
        self._threads = max(1, sum(nthreads.values()))

    def _check_connected(self, exc: BaseException | None = None) -> None:
        if self.client.status not in ("running", "newly-created"):
            reason = f"connection lost (client {self.client.status})"
            if exc is not None:
                reason += f": {exc}"
            raise SchedulerUnreachable(self.address, reason, mid_run=True)

    # -- work --------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Process ids of the workers (as seen on their hosts)."""
        try:
            return sorted(self.client.run(os.getpid, on_error="ignore").values())
        except Exception:
            return []

    def worker_state(self) -> dict[str, dict[str, Any]]:
        """Per worker: pid, how often it received the calibration, whether it is installed."""
        self._installed(wait=True)
        return self.client.run(_worker_state, self.token, on_error="ignore")

    def submit(self, task: ImageTask) -> bool:
        """Add an image to the pool's backlog (sent from ``poll``); ``False`` when saturated."""
        if self.capacity <= 0:
            return False
        if task.payload is not None:
            if self._payloads >= self._threads * PAYLOAD_IMAGES_PER_THREAD:
                return False
            self._payloads += 1
        self._pending.append(task)
        return True

    def _batch_size_now(self) -> int:
        """The size of the next batch: the backlog's share per worker thread (guided
        self-scheduling), at least ``min_batch_size`` (or the whole backlog, if smaller) and
        at most ``batch_size``.  In a steady run the backlog holds two full batches per thread;
        as it drains the batches shrink, so the last ones are small and end together (a
        model of the end of a run, with a task's cost: tests/pipeline/test_dask_batches.py)."""
        backlog = len(self._pending)
        share = -(-backlog // self._threads)  # ceil
        return min(backlog, max(self.min_batch_size, min(self.batch_size, share)))

    def _dispatch(self) -> None:
        """Send batches from the backlog while fewer than ``PREFETCH`` per worker thread are in flight."""
        if not self._pending or not self._installed():
            return
        while self._pending and len(self._futures) < self._threads * PREFETCH:
            n = self._batch_size_now()
            self._send([self._pending.popleft() for _ in range(n)])

    def _send(self, tasks: list[ImageTask]) -> None:
        self._n += 1
        self._sent += len(tasks)
        self.batch_sizes.append(len(tasks))
        key = f"saxsdog-batch-{self.token}-{self._n}"
        # the batch as bytes through a light module: the scheduler neither imports saxsdog
        # nor unpickles the image tasks (see saxsdog.pipeline.dask_task)
        blob = pickle.dumps(tasks, protocol=pickle.HIGHEST_PROTOCOL)
        fut = self.client.submit(run_batch, self.token, blob, key=key, pure=False, retries=self.retries)
        self._futures[key] = (fut, tasks)
        # runs in dask's callback thread: only hand the key over (and wake poll)
        fut.add_done_callback(lambda f, key=key: self._batch_done(key))

    def _batch_done(self, key: str | None) -> None:
        if key is not None:
            self._finished.put(key)
        try:
            os.write(self._done_w, b"\0")
        except (BlockingIOError, OSError, TypeError):  # the pipe is full (poll is awake anyway) or closed
            pass

    def _forget(self, tasks: list[ImageTask]) -> None:
        """A batch's images are reported (done or orphaned): no longer in flight."""
        self._sent -= len(tasks)
        if self._payloads:
            self._payloads -= sum(1 for t in tasks if t.payload is not None)

    def poll(self, timeout: float, wakeup: int | None = None
             ) -> tuple[list[tuple[ImageTask, list[ImageResult]]], list[ImageTask]]:
        """Send batches from the backlog, then wait up to ``timeout`` for finished batches.

        Returns
        -------
        (done, orphaned)
            Finished images with their results, and images whose batch was lost (to
            re-queue).

        Raises
        ------
        SchedulerUnreachable
            When the connection to the scheduler is lost.
        """
        self._check_connected()
        self._dispatch()
        keys: list[str] = []
        if self._finished.empty() and timeout > 0:
            # a batch finishing ends the wait; with nothing in flight the queue's wake-up (new
            # images, stop) too, instead of a polling sleep before the first image is sent.
            # With batches in flight new images wait for one to finish (or the timeout) and
            # fill the next batch meanwhile, as before.
            fds = [self._done_r] + ([wakeup] if wakeup is not None and not self._futures else [])
            try:
                select.select(fds, [], [], timeout)
            except (OSError, ValueError):  # a closed wake-up fd: just wait on our own
                select.select([self._done_r], [], [], timeout)
        try:
            while os.read(self._done_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                keys.append(self._finished.get_nowait())
            except _queue.Empty:
                break
        self._refresh_workers()
        done: list[tuple[ImageTask, list[ImageResult]]] = []
        orphaned: list[ImageTask] = []
        finished: list[tuple[Future, list[ImageTask]]] = []
        for key in keys:
            entry = self._futures.pop(key, None)
            if entry is None:
                continue
            fut, tasks = entry
            self._forget(tasks)
            if fut.status == "finished":
                finished.append(entry)
            elif fut.status == "cancelled":
                self._check_connected()  # the client cancels everything when it loses the scheduler
                log.warning("batch %s was cancelled; re-queueing %d image(s)", key, len(tasks))
                orphaned.extend(tasks)
            else:
                self._lost(key, fut, tasks, done, orphaned)
        if keys:
            self._dispatch()  # the freed slots get their next batches before the results are fetched
        if finished:
            try:
                values = self.client.gather([f for f, _ in finished])
            except Exception as exc:
                self._check_connected(exc)
                # e.g. the worker holding a result died before it was fetched
                log.warning("could not fetch %d batch result(s) (%s); re-queueing them", len(finished), exc)
                for fut, tasks in finished:
                    fut.release()
                    orphaned.extend(tasks)
            else:
                for (fut, tasks), batch in zip(finished, values):
                    done.extend(zip(tasks, batch))
                    fut.release()  # the worker may forget the result now
        return done, orphaned

    def _lost(self, key: str, fut: Future, tasks: list[ImageTask],
              done: list[tuple[ImageTask, list[ImageResult]]], orphaned: list[ImageTask]) -> None:
        """A batch that erred: re-queue its images (bounded), or report them failed."""
        try:
            exc: BaseException | None = fut.exception(timeout=5)
        except Exception as e:  # pragma: no cover - defensive
            exc = e
        fut.release()
        name = type(exc).__name__
        if isinstance(exc, KilledWorker):
            log.warning("batch %s lost with its worker(s); re-queueing %d image(s)", key, len(tasks))
            for t in tasks:
                n = self._losses[t.path] = self._losses.get(t.path, 0) + 1
                if n < self.max_losses:
                    orphaned.append(t)
                else:
                    done.append((t, [ImageResult(t.path, error=f"lost with its Dask worker {n} times; "
                                                               f"giving up", processed_at=time.time())]))
        else:
            # the task itself raised (after its retries): report, never loop
            for t in tasks:
                done.append((t, [ImageResult(t.path, error=f"Dask task failed: {name}: {exc}",
                                             processed_at=time.time())]))

    # -- shutdown --------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Free the calibration on the workers and disconnect (stops an owned cluster).

        The queue calls this once nothing is in flight; batches still running are left to
        finish on their own (their outputs are atomic).
        """
        if self._closed:
            return
        self._closed = True
        try:
            # a scheduler that stopped answering would make each request wait for it
            if self.client.status == "running" and not self._unresponsive:
                self._installed(wait=True, timeout=timeout)  # unregister what was registered
                self._refresh_workers(force=True)
                self.client.unregister_worker_plugin(self._plugin.name)
        except Exception as exc:
            log.debug("while unregistering the saxsdog plugin: %s", exc)
        self._shutdown(timeout)

    def terminate(self) -> None:
        """Drop everything in flight and disconnect now (abort)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.client.status == "running" and self._futures and not self._unresponsive:
                self.client.cancel([f for f, _ in self._futures.values()], force=True)
        except Exception:
            pass
        self._shutdown(2.0)

    def _shutdown(self, timeout: float) -> None:
        self._futures.clear()
        self._pending.clear()
        self._sent = self._payloads = 0
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close(timeout=timeout)
            except Exception as exc:
                log.debug("while closing the Dask client: %s", exc)
        self._close_cluster()
        for name in ("_done_r", "_done_w"):  # after the client: its callbacks may still write
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            try:
                self._cluster.close()
            except Exception as exc:
                log.debug("while closing the local Dask cluster: %s", exc)
            self._cluster = None


_PREPARED: list[threading.Thread] = []


def _prepare_connection() -> None:
    """What a first ``Client`` waits for while connecting, done now: the host's processor
    name it reports to the scheduler (``platform.uname().processor``: a ``uname -p``
    subprocess, 20-40 ms of waiting; cached for the process's lifetime).  It imports nothing
    (an import in a thread may contend with the main thread's for the import locks); the
    package versions it also reports (~12 ms of CPU, holding the GIL) gain nothing here."""
    try:
        platform.uname().processor  # noqa: B018 - computed and cached
    except Exception as exc:  # pragma: no cover - the client computes it again
        log.debug("while preparing the Dask connection: %s", exc)


def dask_pool_factory(address: str, **kwargs: Any) -> Callable[[Calibration, QueueOptions], DaskPool]:
    """A ``pool_factory`` for :class:`~saxsdog.pipeline.queue.ImageQueue`.

    Making the factory starts, in a thread, what the client's first connection would wait
    for (:func:`_prepare_connection`), while the caller goes on (scanning the folder, say).

    Parameters
    ----------
    address
        Scheduler address, or ``"local"`` for a ``LocalCluster`` owned by the pool.
    **kwargs
        Passed to :class:`DaskPool` (``batch_size``, ``connect_timeout``, ...); ``background_install``
        is ``True`` unless given.
    """

    # the queue takes in its first images while the calibration travels to the workers
    kwargs.setdefault("background_install", True)
    if not _PREPARED:
        _PREPARED.append(threading.Thread(target=_prepare_connection, name="saxsdog-dask-prepare", daemon=True))
        _PREPARED[0].start()

    def factory(calibration: Calibration, options: QueueOptions) -> DaskPool:
        return DaskPool(calibration, options, address, **kwargs)

    # The workers are not forked from the queue's process: it need not load the kernels
    # before starting them (each worker does in its plugin's setup, in parallel).
    factory.forks_workers = False  # type: ignore[attr-defined]
    return factory
