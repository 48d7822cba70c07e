"""The image queue: de-duplication, retries with back-off, dispatch and sinks.

One dispatcher thread owns all bookkeeping; other threads only push paths through a
thread-safe inbox.  Results go to the history, the live file list and any callbacks.
"""

from __future__ import annotations

import functools
import dataclasses
import heapq
import logging
import mmap
import os
import queue as _queue
import signal
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable

from ..calibration import Calibration
from ..errors import SaxsdogError
from .history import History
from .naming import existing_run_files, frame_name, in_directories, output_root, results_dir, run_file_path
from .options import OUTPUT_FORMATS, QueueOptions
from .pool import PREFETCH, WorkerPool
from .sources import DirectoryWatcher, walk_images
from .tasks import ArenaRef, ImageResult, ImageTask
from .worker import ImageProcessor

log = logging.getLogger(__name__)

ResultCallback = Callable[[ImageResult], None]

#: An image whose worker died this often is reported as failed instead of being re-queued.
MAX_WORKER_DEATHS = 3


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
                      arena: PayloadArena | None = None) -> ImageProcessor:
    """Runs first in a new worker, after it restored SIGTERM's default action."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a pending one kills it now
    return ImageProcessor(calibration, options, arena)


def local_pool(calibration: Calibration, options: QueueOptions,
               arena: PayloadArena | None = None) -> WorkerPool:
    """The default execution backend: forked local worker processes.

    SIGTERM is blocked while the workers are forked: a worker inherits the parent's Python
    signal handlers (the server ignores SIGTERM there to stop gracefully) until it resets
    them, and an abort right after the start would otherwise be lost in that window.  The
    worker unblocks it once its default action is back (:func:`_worker_processor`).
    """
    factory = functools.partial(_worker_processor, calibration, options, arena)
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        return WorkerPool(factory, options.workers, task_timeout=options.task_timeout)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        return WorkerPool(factory, options.workers, task_timeout=options.task_timeout)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_ACTIVE = frozenset(("pending", "inflight", "retry"))


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class LiveFileList:
    """``results/filelist.txt``: one tab-separated line per processed image."""

    HEADER = "file\toutput\tI0\tI1\tI2\timage_time\n"

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "a", buffering=1)
        if new:
            self._fh.write(self.HEADER)

    def add(self, result: ImageResult) -> None:
        if result.error is not None or not result.outputs:
            return
        params = next(iter(result.parameters.values()), {})
        vals = [params.get(k, "") for k in ("I0", "I1", "I2")]
        self._fh.write("\t".join([result.path if result.frame == 0 else f"{result.path}#{result.frame}",
                                  result.outputs[0], *map(str, vals), str(result.image_time or "")]) + "\n")

    def close(self) -> None:
        self._fh.close()


@dataclasses.dataclass(frozen=True)
class _FinishRun:
    """Inbox message: close a run once its frames are done (:meth:`ImageQueue.finish_run`)."""

    run: str


class _Run:
    """The run files of one run name (one NXcanSAS file per I(q) integrator)."""

    def __init__(self, name: str, paths: list[Path]):
        self.name = name
        self.paths = paths
        self.writers: list[Any] = []
        self.appended: set[str] = set()
        self.known: dict[str, set[int]] = {}


class RunSink:
    """Appends every frame's curves to NXcanSAS run files (used by the dispatcher thread only).

    One file per I(q) integrator: ``<folder>/<run name>.h5`` for the first,
    ``<run name>_c<kind><n>.h5`` for further masks and slices (Phi-mode curves are not
    I(q) and stay ``.chi`` files).  Each frame is one NXcanSAS entry titled with its name
    (:attr:`ImageResult.name`); a frame name seen before is not appended again (retried or
    re-queued images).  The files are written under hidden temporary names and renamed into
    place by :meth:`finish` (one run) or :meth:`close` (all).

    Frames go to the queue's run (``run_name()``) unless their task names another one
    (:attr:`ImageTask.run`: each series of a detector stream is a run of its own).

    Existing run files of the same name are replaced only with ``replace=True``; otherwise
    the run goes to the next free ``<run name>_<NNN>.h5``, and with ``skip_known`` the frames
    the existing files hold are skipped (resume).

    Parameters
    ----------
    calibration
        The calibration (q grids, integrator kinds, instrument fields).
    folder
        Where the run files go.
    run_name
        Called once, when the default run's name is first needed: returns it.
    replace, skip_known
        See above.
    """

    def __init__(self, calibration: Calibration, folder: Path, run_name: Callable[[], str],
                 replace: bool = False, skip_known: bool = False):
        self.calibration = calibration
        self.folder = Path(folder)
        self._run_name = run_name
        self.replace = replace
        self.skip_known = skip_known
        suffixes = calibration.output_suffixes()
        self.integrators = [(k, sfx) for k, (it, sfx) in enumerate(zip(calibration.integrators, suffixes))
                            if it.kind != "Phi"]
        self._default: str | None = None
        self._runs: dict[str, _Run] = {}
        self._finished_names: set[str] = set()
        self.frames = 0
        self.closed: list[Path] = []
        self.finished = False

    @property
    def paths(self) -> list[Path]:
        """Where the open runs' files will be (after the closed ones)."""
        return [p for r in self._runs.values() for p in r.paths]

    def _run(self, name: str | None) -> _Run:
        if name is None:
            if self._default is None:
                self._default = self._run_name()
            name = self._default
        run = self._runs.get(name)
        if run is not None:
            return run
        existing = existing_run_files(self.folder, name)
        # files this sink wrote itself are never replaced (a run name that comes back)
        replace = self.replace and name not in self._finished_names
        number = max(existing) + 1 if existing and not replace else 0
        run = _Run(name, [run_file_path(self.folder, name, number, sfx) for _, sfx in self.integrators])
        if existing and not replace and self.skip_known:
            for path in existing.values():
                for title in _entry_titles(path):
                    rel, _, idx = title.rpartition("#")
                    if rel and idx.isdigit():
                        run.known.setdefault(rel, set()).add(int(idx))
                    else:
                        run.known.setdefault(title, set()).add(0)
        self._runs[name] = run
        return run

    def skip_frames(self, image: str, root: str) -> frozenset[int]:
        """Frame indices of ``image`` already in earlier run files of the default run (resume)."""
        run = self._run(None)
        if not run.known:
            return frozenset()
        return frozenset(run.known.get(frame_name(image, root), ()))

    def add(self, result: ImageResult, run_name: str | None = None) -> None:
        """Append one frame's curves (integrated, successful results only) to its run."""
        if result.error is not None or result.skipped or not result.curves or not self.integrators:
            return
        run = self._run(run_name)
        name = result.name or Path(result.path).name
        if name not in run.appended:
            if not run.writers:
                from ..io.nxcansas import NXcanSASRunWriter

                for (k, _), path in zip(self.integrators, run.paths):
                    run.writers.append(NXcanSASRunWriter(path, self.calibration.integrators[k].x,
                                                         self.calibration.raw, title=run.name))
            for (k, _), writer in zip(self.integrators, run.writers):
                graph = result.curves[k]
                x, intensity, error = graph["array"][:3]
                key = f"{self.calibration.integrators[k].kind[0]}{k}"
                writer.append(name, intensity, error, result.metadata, result.parameters.get(key, {}),
                              q=x)
            run.appended.add(name)
            self.frames += 1
        result.outputs = [str(p) for p in run.paths] + [o for o in result.outputs if not o.endswith(".h5")]

    def finish(self, run_name: str) -> list[Path]:
        """Rename one run's files into place (a later frame of that name starts a new file)."""
        run = self._runs.pop(run_name, None)
        if run is None:
            return []
        self._finished_names.add(run_name)
        return self._close_run(run)

    def close(self) -> list[Path]:
        """Rename every run's files into place; returns all closed (none if no frame was appended)."""
        self.finished = True
        for name in list(self._runs):
            self.finish(name)
        return self.closed

    def _close_run(self, run: _Run) -> list[Path]:
        writers, run.writers = run.writers, []
        done = []
        for w in writers:
            try:
                done.append(w.close())
            except Exception:  # a full disk must not hide the other files
                log.exception("cannot close the run file %s", w.path)
        self.closed.extend(done)
        return done


def _entry_titles(path: Path) -> list[str]:
    """The frame names (entry titles) of an NXcanSAS run file."""
    import h5py

    titles: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            for entry in f.values():
                if isinstance(entry, h5py.Group) and "title" in entry:
                    t = entry["title"][()]
                    titles.append(t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t))
    except OSError as exc:
        log.warning("cannot read the earlier run file %s: %s", path, exc)
    return titles


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
        ``factory(calibration, options)`` returning the execution backend: an object with
        ``submit(task) -> bool``, ``poll(timeout) -> (done, orphaned)``, ``capacity``,
        ``inflight``, ``restarts``, ``pids()``, ``close()`` and ``terminate()`` (see
        :class:`~saxsdog.pipeline.pool.WorkerPool`).  Default: :func:`local_pool`.
    tracker
        Optional persistent record (the server's ledger), called from the dispatcher
        thread: ``should_accept(path, signature, force) -> bool``,
        ``queued(path, signature)``, ``finished(path, results, signature)``, ``tick()``.
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
        # A push writes a byte here so the dispatcher wakes at once instead of at the end
        # of its poll timeout (this is what keeps event-to-result latency low).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)
        self._pending: deque[ImageTask] = deque()
        self._retry: list[tuple[float, int, ImageTask]] = []
        self._state: dict[str, str] = {}  # path -> pending | inflight | retry | done | failed
        # Images pending, in flight or retrying, kept up to date by _set_state so other
        # threads (the progress line, the server's status) never iterate _state while the
        # dispatcher adds to it.
        self._active = 0
        self._signature: dict[str, tuple[int, int] | None] = {}
        self._seq = 0
        self._stop = threading.Event()
        self._abort = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._watcher: DirectoryWatcher | None = None
        self._pool: Any = None
        self._pool_factory = pool_factory or local_pool
        #: Why dispatching stopped on its own (e.g. the Dask scheduler became unreachable).
        self.error: SaxsdogError | None = None
        self.tracker = tracker
        self.ignored_files = 0
        self._restarts_before = 0
        self.queued_total = 0
        if self.options.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {self.options.output_format!r} "
                             f"(one of {', '.join(OUTPUT_FORMATS)})")
        self._sink: RunSink | None = None
        if self.options.output_format == "nxcansas-run":
            self._sink = RunSink(calibration, output_root(self.root, self.options), self._run_name,
                                 replace=self.options.replace_run_file and self.options.overwrite
                                 and not self.options.resume,
                                 skip_known=self.options.resume or not self.options.overwrite)
        self._crashes: dict[str, int] = {}
        self._run_open: dict[str, int] = {}  # run -> its tasks queued and not finished
        self._finishing: set[str] = set()  # runs to close once their tasks are done
        self._arena: PayloadArena | None = None
        self._shipped: dict[str, ImageTask] = {}  # path -> original task, while its payload is in the arena
        self.filelist: LiveFileList | None = None
        if self.options.live_filelist:
            self.filelist = LiveFileList(results_dir(self.root, self.options) / "filelist.txt")

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

    def start(self) -> "ImageQueue":
        """Fork the workers and start dispatching."""
        if self._thread is not None:
            return self
        # Compile the kernels in the parent so forked workers inherit them.
        import numpy as np

        self.calibration.curves(np.zeros(self.calibration.shape, dtype=np.int32))
        if self._pool_factory is local_pool:
            self._arena = PayloadArena(max(1, self.options.workers) * PREFETCH + 2)
            self._pool = local_pool(self.calibration, self.options, self._arena)
        else:
            self._pool = self._pool_factory(self.calibration, self.options)
        self._thread = threading.Thread(target=self._run, name="saxsdog-dispatcher", daemon=True)
        self._thread.start()
        return self

    def push(self, path: str | os.PathLike[str], force: bool = False) -> None:
        """Queue an image file (thread-safe; duplicates are merged).

        ``force`` processes it again even if it was processed already (``readdir``).
        """
        self._post((os.path.abspath(path), force))

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
        self._post(_FinishRun(run))

    def _post(self, item: Any) -> None:
        """Hand ``item`` to the dispatcher and wake it (thread-safe).

        The queue stops being idle until the dispatcher has handled it.  Cleared after the
        put: the dispatcher only sets idle when its inbox is empty, so wait_until_idle()
        can never return between this call and the item's handling.
        """
        self._inbox.put(item)
        self._idle.clear()
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the dispatcher is awake anyway) or closed

    @property
    def backlog(self) -> int:
        """Tasks queued but not finished (cheap; for sources that must not run ahead)."""
        pool = self._pool
        return self._inbox.qsize() + len(self._pending) + len(self._retry) + (pool.inflight if pool else 0)

    def fill_from_directory(self, in_threads: bool = False, force: bool = False) -> int:
        """Queue every image already in the directory; returns how many."""
        images, ignored = walk_images(self.root, self.options.directories, in_threads)
        self.ignored_files += ignored
        for p in images:
            self.push(p, force)
        return len(images)

    def watch(self) -> None:
        """Also queue images that appear later (recursively)."""
        if self._watcher is None:
            self._watcher = DirectoryWatcher(self.root, self.push)
            self._watcher.start()

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued, retrying or being processed."""
        return self._idle.wait(timeout)

    def stop(self, abort: bool = False, timeout: float = 30.0) -> None:
        """Stop watching and dispatching; ``abort`` drops queued work and kills workers."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._abort = abort
        self._stop.set()
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._restarts_before += self._pool.restarts
            if abort:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool = None
        if self._sink is not None:
            # also after an abort: the frames processed so far are real results
            self._sink.close()
        if self.filelist is not None:
            self.filelist.close()
            self.filelist = None

    # -- state -----------------------------------------------------------------------
    @property
    def queue_length(self) -> int:
        """Images waiting, retrying or being processed."""
        return self._active

    def _set_state(self, path: str, state: str) -> None:
        """Record an image's state (dispatcher thread only) and keep the active count."""
        before = self._state.get(path)
        self._state[path] = state
        self._active += (state in _ACTIVE) - (before in _ACTIVE)

    def worker_pids(self) -> list[int]:
        return self._pool.pids() if self._pool else []

    @property
    def worker_restarts(self) -> int:
        return self._restarts_before + (self._pool.restarts if self._pool else 0)

    def stats(self) -> dict[str, Any]:
        """Frames/s, queue length, images processed, failures and per-stage timings."""
        h = self.history
        return {
            "frames_per_second": h.frames_per_second(),
            "overall_frames_per_second": h.overall_rate(),
            "queue_length": self.queue_length,
            "images_processed": h.processed,
            "images_skipped": h.skipped,
            "images_failed": len(h.failures),
            "images_queued": self.queued_total,
            "stage_seconds": h.stage_means(),
            "worker_restarts": self.worker_restarts,
        }

    # -- the dispatcher --------------------------------------------------------------
    def _accept(self, path: str, force: bool = False) -> None:
        state = self._state.get(path)
        if state in ("pending", "inflight", "retry"):
            return
        sig = _signature(path)
        if not force and state in ("done", "failed") and sig == self._signature.get(path):
            return  # same content as already handled
        if not in_directories(path, self.root, self.options.directories):
            return
        if self.tracker is not None:
            if not self.tracker.should_accept(path, sig, force):
                return
            self.tracker.queued(path, sig)
        self._set_state(path, "pending")
        self._signature[path] = sig
        skip = self._sink.skip_frames(path, self.root) if self._sink is not None and self._sink.skip_known \
            else frozenset()
        self._pending.append(ImageTask(path, self.root, 0, time.monotonic(), skip_frames=skip))
        self.queued_total += 1

    def _accept_task(self, task: ImageTask) -> None:
        path = task.path
        if path in self._state:
            return  # the same frame again
        if self.tracker is not None:
            if not self.tracker.should_accept(path, None, False):
                return
            self.tracker.queued(path, None)
        self._set_state(path, "pending")
        self._signature[path] = None
        self._pending.append(ImageTask(path, task.root, 0, time.monotonic(), payload=task.payload, run=task.run))
        if task.run is not None:
            self._run_open[task.run] = self._run_open.get(task.run, 0) + 1
        self.queued_total += 1

    def _handle(self, task: ImageTask, results: list[ImageResult]) -> None:
        retry = next((r for r in results if r.error is not None and r.retryable), None)
        again = False
        if retry is not None:
            waited = time.monotonic() - task.first_seen
            if waited < self.options.retry_timeout and not self._stop.is_set():
                again = True
                delay = min(2.0, self.options.retry_initial * (2 ** task.attempt))
                nxt = dataclasses.replace(task, attempt=task.attempt + 1)
                self._seq += 1
                heapq.heappush(self._retry, (time.monotonic() + delay, self._seq, nxt))
                self._set_state(task.path, "retry")
                # frames that did succeed are still recorded
                results = [r for r in results if r.error is None]
            else:
                retry.error = f"still incomplete after {waited:.1f} s: {retry.error}"
                retry.retryable = False
        if self._sink is not None:
            for r in results:
                try:
                    self._sink.add(r, task.run)
                except Exception as exc:  # e.g. a full disk: the frame failed
                    log.exception("cannot append %s to the run file", r.name or r.path)
                    r.error = f"cannot append to the run file: {exc}"
        if again:
            pass
        elif retry is not None:
            self._set_state(task.path, "failed")
            if self.tracker is not None:
                self.tracker.finished(task.path, results, _signature(task.path))
        else:
            failed = any(r.error is not None for r in results)
            self._set_state(task.path, "failed" if failed else "done")
            self._signature[task.path] = _signature(task.path) if task.payload is None else None
            if self.tracker is not None:
                self.tracker.finished(task.path, results, self._signature[task.path])
        if not again and task.run is not None:
            self._task_of_run_done(task.run)
        for r in results:
            self.history.add(r)
            if self.filelist is not None:
                self.filelist.add(r)
            for fn in self._callbacks:
                try:
                    fn(r)
                except Exception:  # a broken sink must not stop processing
                    log.exception("result callback failed")

    def _task_of_run_done(self, run: str, n: int = 1) -> None:
        """Count a finished task of ``run``; close the run when it is due and has none left."""
        left = self._run_open[run] = self._run_open.get(run, 0) - n
        if left <= 0 and run in self._finishing:
            self._finishing.discard(run)
            del self._run_open[run]
            if self._sink is not None:
                try:
                    self._sink.finish(run)
                except Exception:  # the frames stay counted as processed; the log says why
                    log.exception("cannot close the run %s", run)

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
        if task.payload is not None and isinstance(task.payload.data, ArenaRef):
            self._arena.release(task.payload.data)
            return self._shipped.pop(task.path, task)
        return task

    def _run(self) -> None:
        try:
            self._dispatch()
        except SaxsdogError as exc:  # the execution backend is gone (SchedulerUnreachable)
            log.error("%s", exc)
            self.error = exc
            self._stop.set()
            self._idle.set()  # wake wait_until_idle(); the caller checks .error

    def _dispatch(self) -> None:
        pool = self._pool
        assert pool is not None
        while True:
            while True:
                try:
                    item = self._inbox.get_nowait()
                except _queue.Empty:
                    break
                if isinstance(item, ImageTask):
                    self._accept_task(item)
                elif isinstance(item, _FinishRun):
                    self._finishing.add(item.run)
                    self._task_of_run_done(item.run, 0)
                else:
                    self._accept(*item)
            if self._stop.is_set() and (self._abort or True):
                if self._abort or (not self._pending and not self._retry and pool.inflight == 0):
                    break
                if not self._abort:
                    # graceful stop: finish what is in flight, drop the rest
                    for t in self._pending:
                        self._set_state(t.path, "failed")
                    self._pending.clear()
                    self._retry.clear()
            now = time.monotonic()
            while self._retry and self._retry[0][0] <= now:
                _, _, task = heapq.heappop(self._retry)
                self._set_state(task.path, "pending")
                self._pending.append(task)
            while self._pending and pool.capacity > 0:
                task = self._pending[0]
                sent = self._ship(task)
                if not pool.submit(sent):
                    self._unship(sent)
                    break
                self._pending.popleft()
                self._set_state(task.path, "inflight")
            busy = bool(self._pending or self._retry or pool.inflight)
            if self.tracker is not None:
                self.tracker.tick()
            if not busy and self._inbox.empty():
                self._idle.set()
            timeout = 0.05
            if self._retry:
                timeout = max(0.0, min(timeout, self._retry[0][0] - time.monotonic()))
            done, orphaned = pool.poll(timeout, wakeup=self._wake_r)
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            for task, results in done:
                self._handle(self._unship(task), results)
            for task in orphaned:  # their worker died: nothing is lost
                task = self._unship(task)
                crashes = self._crashes[task.path] = self._crashes.get(task.path, 0) + 1
                if crashes >= MAX_WORKER_DEATHS:
                    # an image that kills every worker that touches it must not loop forever
                    self._handle(task, [ImageResult(task.path, error=f"the worker processing it died "
                                                                     f"{crashes} times", processed_at=time.time())])
                    continue
                self._set_state(task.path, "pending")
                self._pending.appendleft(task)
