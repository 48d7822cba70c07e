"""A pool of forked worker processes fed through one pipe each.

The coordinator knows exactly which tasks each worker holds, so when a worker dies
(killed, crashed) or stalls (stopped, blocked: no result within the task deadline) its
tasks are handed to the others and a replacement is started: nothing is lost.  Workers
are forked after the calibration is built, so they share one read-only copy of the
operator with the parent (copy-on-write pages that are never written).

Workers never outlive the process that forked them:

* ``PR_SET_PDEATHSIG`` (Linux) makes the kernel SIGKILL a worker when its parent dies,
  even a stopped one.  The signal fires when the *thread* that forked the worker ends,
  so every fork happens on one thread of the pool that lives as long as the pool.
* A second, independent check: each worker holds the read end of a pipe whose only write
  end is in the parent; a thread in the worker waits on it and ends the worker at EOF
  (the parent is gone, however it died).
* Right after the fork, the worker replaces every file descriptor it inherited except its
  own pipes by ``/dev/null``: it does not keep the server's listening sockets (ZeroMQ,
  HTTP), other workers' pipe ends, the ledger's SQLite file or ``filelist.txt`` open, so a
  killed server can be restarted on the same ports at once.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import mmap
import os
import pickle
import queue as _queue
import select
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any, Protocol

from .tasks import ImageResult, ImageTask

log = logging.getLogger(__name__)

#: Tasks handed to a worker before it reports back (keeps it busy while results travel).
PREFETCH = 2

#: Bytes the coordinator reads from a worker's pipe at once.
_READ_SIZE = 1 << 16

#: Default per-task deadline (seconds) of :class:`WorkerPool`.
DEFAULT_TASK_TIMEOUT = 60.0

#: An image whose worker stalled or died this often is reported as failed.
MAX_LOSSES = 3

_PR_SET_PDEATHSIG = 1

# In a worker: the page it shares with the pool, holding the time of its last progress.
_HEARTBEAT: mmap.mmap | None = None


def _send(conn: Connection, obj: Any) -> None:
    """Send ``obj`` through a pool pipe, pickled with the plain pickler.

    ``Connection.send`` pickles with multiprocessing's ``ForkingPickler``, which builds a
    pickler with a copied dispatch table for every message (for sockets and connections,
    which tasks and results never hold): a few microseconds per frame, both ways, on the
    cores the workers need.
    """
    conn.send_bytes(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> Any:
    """Receive what :func:`_send` sent (in a worker: blocking)."""
    return pickle.loads(conn.recv_bytes())


def _take_messages(data: bytes) -> tuple[list[Any], bytes]:
    """Unpickle the whole messages at the start of ``data``; returns them and the rest.

    The framing is ``Connection.send_bytes``'s: a 4-byte big-endian length, or ``-1`` and an
    8-byte one.  The rest is a message not complete yet (usually nothing).
    """
    out = []
    view = memoryview(data)
    pos, n = 0, len(data)
    while n - pos >= 4:
        (size,) = struct.unpack_from("!i", data, pos)
        head = 4
        if size == -1:
            if n - pos < 12:
                break
            (size,) = struct.unpack_from("!Q", data, pos + 4)
            head = 12
        end = pos + head + size
        if n < end:
            break
        out.append(pickle.loads(view[pos + head:end]))  # no copy: data is immutable
        pos = end
    return out, data[pos:] if pos < n else b""


def _readable_now(fd: int, poller: Any = None) -> bool:
    """Whether ``fd`` has data (or EOF) to read right now (poll: any descriptor number).

    ``poller``: a ``select.poll`` object with only ``fd`` registered, kept by the caller
    (making one costs more than the check).
    """
    if poller is None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class TaskProcessor(Protocol):
    """What a worker's processor factory makes: one call per task, results in a list."""

    def process(self, task: ImageTask) -> list[ImageResult]: ...


def heartbeat() -> None:
    """Tell the pool this worker is making progress (long tasks call it, e.g. per frame).

    The task deadline counts from the last heartbeat, so a file of thousands of frames is
    not taken for a stalled worker.  Does nothing outside a pool worker.
    """
    if _HEARTBEAT is not None:
        struct.pack_into("d", _HEARTBEAT, 0, time.monotonic())  # CLOCK_MONOTONIC: one clock system-wide


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - unusual libc
        return None


# Resolved once in the parent: the child only calls it.
_PRCTL = _load_prctl()


def _inherited_fds() -> list[int]:
    """Open file descriptors of this process (Linux: /proc; elsewhere a bounded range)."""
    try:
        names = os.listdir("/proc/self/fd")
        return sorted(int(n) for n in names if n.isdigit())
    except OSError:  # pragma: no cover - no /proc
        limit = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024
        return list(range(min(int(limit), 65536)))


def _detach_inherited_fds(keep: set[int]) -> None:
    """Point every inherited descriptor but ``keep`` and 0-2 at /dev/null.

    ``dup2`` instead of ``close``: a stale Python object in the child (a socket or file of
    the parent collected later) may still close its descriptor number; that must never
    close a file the worker opened itself under the same number.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in _inherited_fds():
            if fd <= 2 or fd in keep or fd == null:
                continue
            try:
                os.dup2(null, fd)
            except OSError:
                pass  # the listing's own directory descriptor, already gone
    finally:
        os.close(null)


def _watch_parent(alive_fd: int) -> None:
    """Worker thread: end the worker as soon as the parent's end of the pipe is gone."""
    try:
        while os.read(alive_fd, 1):
            pass
    except OSError:
        pass
    os._exit(70)


class ForkedProcess:
    """A child forked by :class:`WorkerPool` (the subset of ``multiprocessing.Process`` it needs).

    Parameters
    ----------
    target, args
        Run in the child; its return ends the child with exit code 0.
    keep
        Descriptors the child keeps (its end of the task pipe).
    name
        For log messages.
    """

    def __init__(self, target: Callable[..., Any], args: tuple, keep: tuple[int, ...], name: str):
        self.name = name
        self.exitcode: int | None = None
        sentinel_r, sentinel_w = os.pipe()  # EOF for the parent when the child has exited
        alive_r, alive_w = os.pipe()        # EOF for the child when the parent has exited
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child (its coverage is not collected)
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if _PRCTL is not None:
                    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
                if os.getppid() != parent_pid:  # died before the prctl took effect
                    os._exit(70)
                _detach_inherited_fds({*keep, sentinel_w, alive_r})
                threading.Thread(target=_watch_parent, args=(alive_r,), daemon=True,
                                 name="saxsdog-parent-watch").start()
                if hasattr(signal, "pthread_sigmask"):
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
                target(*args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(sentinel_w)
        os.close(alive_r)
        self.pid = pid
        self.sentinel = sentinel_r
        self._alive_w = alive_w

    def _reap(self, block: bool) -> bool:
        if self.exitcode is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            self.exitcode = -1
            return True
        if pid == 0:
            return False
        self.exitcode = os.waitstatus_to_exitcode(status)
        return True

    def is_alive(self) -> bool:
        return not self._reap(block=False)

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the child to exit (and reap it)."""
        if self.exitcode is None and wait([self.sentinel], timeout):
            self._reap(block=True)

    def signal(self, signum: int) -> None:
        if self.exitcode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def release(self) -> None:
        """Close the parent's descriptors (after the child has exited)."""
        for fd in (self.sentinel, self._alive_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.sentinel = self._alive_w = -1


class _Forker:
    """A thread of the pool that does every fork.

    ``PR_SET_PDEATHSIG`` is tied to the forking thread: forking from the dispatcher (or a
    short-lived web request thread) would kill the workers when that thread ends.  This
    thread ends only when the pool is closed.  SIGTERM stays blocked on it, so children
    are born with SIGTERM blocked until they have reset its action (an abort right after
    the start would otherwise run the parent's handler in the child).
    """

    def __init__(self) -> None:
        self._requests: _queue.SimpleQueue = _queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="saxsdog-forker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        while True:
            item = self._requests.get()
            if item is None:
                return
            fn, box, done = item
            try:
                box.append(fn())
            except BaseException as exc:  # handed to the caller
                box.append(exc)
            done.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        box: list[Any] = []
        done = threading.Event()
        self._requests.put((fn, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def stop(self) -> None:
        self._requests.put(None)


def _worker_main(conn: Connection, processor_factory: Callable[[], TaskProcessor], beat: mmap.mmap) -> None:
    global _HEARTBEAT
    _HEARTBEAT = beat
    processor = processor_factory()
    while True:
        try:
            msg = _recv(conn)
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, task = msg
        results = processor.process(task)
        try:
            _send(conn, (task_id, results))
        except (BrokenPipeError, OSError):
            return


@dataclasses.dataclass
class WorkerLoss:
    """A worker that died or was killed because it stalled (see :attr:`WorkerPool.losses`).

    Attributes
    ----------
    number, pid
        Which worker.
    stalled
        ``True``: no result within the task deadline, SIGKILLed by the pool.
    reason
        What happened, for logs and reports.
    current
        The task it was working on (its oldest), if any.
    waiting
        Tasks handed to it that it had not started.
    """

    number: int
    pid: int
    stalled: bool
    reason: str
    current: ImageTask | None
    waiting: list[ImageTask]


class _Worker:
    def __init__(self, forker: _Forker, processor_factory, number: int):
        parent, child = Pipe(duplex=True)
        self.conn = parent
        self.number = number
        #: Shared with the worker (anonymous mapping, no descriptor): its last progress.
        self.beat = mmap.mmap(-1, mmap.PAGESIZE)
        try:
            self.process = forker.call(lambda: ForkedProcess(
                _worker_main, (child, processor_factory, self.beat), keep=(child.fileno(),),
                name=f"saxsdog-worker-{number}"))
        finally:
            child.close()
        #: Polls only this worker's pipe (is another result there already?).
        self.pipe_poller = select.poll()
        self.pipe_poller.register(parent.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        #: Bytes of a result received from the worker, not yet a whole message.
        self.received = b""
        self.inflight: dict[int, ImageTask] = {}
        #: When the worker started its oldest task (monotonic), ``None`` when idle.
        self.busy_since: float | None = None

    def last_progress(self) -> float | None:
        """Start of its current task or its last heartbeat, whichever is later."""
        if self.busy_since is None:
            return None
        return max(self.busy_since, struct.unpack_from("d", self.beat)[0])


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
    task_timeout
        Longest time (s) a worker may spend on one task.  A worker past it (stopped,
        blocked in a read, in an endless loop) is SIGKILLed and replaced, and its tasks are
        re-queued like those of a worker that died.  The time counts from the task's start
        or the worker's last :func:`heartbeat` (sent per frame), whichever is later.
        ``None`` or ``0``: no deadline.
    max_losses
        An image whose worker stalled or died this often is returned as failed (with the
        reason) instead of being re-queued again.
    """

    def __init__(self, processor_factory: Callable[[], TaskProcessor], n_workers: int,
                 task_timeout: float | None = DEFAULT_TASK_TIMEOUT, max_losses: int = MAX_LOSSES):
        self._factory = processor_factory
        self._forker = _Forker()
        self._next_number = 0
        self.workers: list[_Worker] = []
        self._next_id = 0
        self.restarts = 0
        #: Workers killed because they stalled.
        self.stalls = 0
        self.task_timeout = task_timeout if task_timeout and task_timeout > 0 else None
        self.max_losses = max(1, int(max_losses))
        self._lost_count: dict[str, int] = {}
        self._lost_stalled: dict[str, int] = {}
        #: Every worker lost so far (oldest first; a caller may clear it).
        self.losses: list[WorkerLoss] = []
        self._poll_cache: tuple[Any, dict[int, _Worker], dict[int, _Worker], Any] | None = None
        for _ in range(max(1, n_workers)):
            self._spawn()

    def _spawn(self) -> _Worker:
        w = _Worker(self._forker, self._factory, self._next_number)
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
            _send(w.conn, (task_id, task))
        except (BrokenPipeError, OSError):
            return False  # the dead worker is noticed in poll()
        if not w.inflight:
            w.busy_since = time.monotonic()
        w.inflight[task_id] = task
        return True

    def _next_deadline(self) -> float | None:
        if self.task_timeout is None:
            return None
        starts = [t for w in self.workers if w.inflight and (t := w.last_progress()) is not None]
        return min(starts) + self.task_timeout if starts else None

    def poll(self, timeout: float, wakeup: int | None = None
             ) -> tuple[list[tuple[ImageTask, list[ImageResult]]], list[ImageTask]]:
        """Wait up to ``timeout`` for results (or until ``wakeup``, a file descriptor, is readable).

        Returns
        -------
        (done, orphaned)
            Finished tasks with their results, and tasks whose worker died or stalled (to
            requeue).  A task whose worker was lost ``max_losses`` times comes back in
            ``done`` with one failed result saying why.
        """
        done: list[tuple[ImageTask, list[ImageResult]]] = []
        orphaned: list[ImageTask] = []
        deadline = self._next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        conns, sentinels, poller = self._poller(wakeup)
        try:
            ready = [fd for fd, _ in poller.poll(max(0.0, timeout) * 1000.0)]
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old kernels
            ready = []
        dead: set[_Worker] = set()
        for obj in ready:
            if obj == wakeup:
                continue
            if obj in conns:
                w = conns[obj]
                # Read what is there, never more: a worker stopped (SIGSTOP) in the middle of
                # sending a large result (header and body are two writes) must not block the
                # coordinator waiting for the rest; the partial message waits in its buffer
                # (and goes with it, should the worker be replaced).
                chunks = [w.received] if w.received else []
                try:
                    while True:
                        chunk = os.read(obj, _READ_SIZE)  # (a larger read buffer is an mmap: slower)
                        if not chunk:
                            raise EOFError
                        chunks.append(chunk)
                        # more already there? Not if this read took less than it could (a
                        # result is a few kB: one read, no second system call); what comes
                        # later wakes the next poll.  (Connection.poll would build a selector.)
                        if len(chunk) < _READ_SIZE or not _readable_now(obj, w.pipe_poller):
                            break
                except (EOFError, OSError):
                    dead.add(w)
                messages, w.received = _take_messages(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                for task_id, results in messages:
                    task = w.inflight.pop(task_id, None)
                    w.busy_since = time.monotonic() if w.inflight else None
                    if task is not None:
                        done.append((task, results))
            else:
                dead.add(sentinels[obj])
        for w in dead:
            if w.process.is_alive():
                continue
            self._replace(w, f"died with exit code {w.process.exitcode}", False, done, orphaned)
        # a worker can be past the deadline only once the earliest one has passed (progress
        # only moves a worker's deadline later): no per-worker check on most polls
        if self.task_timeout is not None and deadline is not None and time.monotonic() > deadline:
            now = time.monotonic()
            for w in list(self.workers):
                last = w.last_progress() if w.inflight else None
                if last is not None and now - last > self.task_timeout:
                    w.process.kill()  # SIGKILL also ends a stopped process
                    w.process.join(5.0)
                    self.stalls += 1
                    self._replace(w, f"stalled: no result within {self.task_timeout:g} s, killed", True,
                                  done, orphaned)
        return done, orphaned

    def _poller(self, wakeup: int | None) -> tuple[dict[int, _Worker], dict[int, _Worker], Any]:
        """``(workers by pipe descriptor, workers by sentinel, a poll object for both and wakeup)``.

        Kept between calls while the workers and ``wakeup`` stay the same: building a
        selector on every poll (what ``multiprocessing.connection.wait`` does) cost the
        coordinator tens of microseconds per result, on the cores the workers need.
        """
        key = (wakeup, tuple([w.number for w in self.workers]))  # a worker's pipe and sentinel are its own for life
        if self._poll_cache is None or self._poll_cache[0] != key:
            poller = select.poll()
            events = select.POLLIN | select.POLLERR | select.POLLHUP
            conns = {w.conn.fileno(): w for w in self.workers}
            sentinels = {w.process.sentinel: w for w in self.workers}
            for fd in [*conns, *sentinels, *([wakeup] if wakeup is not None else [])]:
                poller.register(fd, events)
            self._poll_cache = (key, conns, sentinels, poller)
        _, conns, sentinels, poller = self._poll_cache
        return conns, sentinels, poller

    def _replace(self, w: _Worker, why: str, stalled: bool,
                 done: list[tuple[ImageTask, list[ImageResult]]], orphaned: list[ImageTask]) -> None:
        """Hand a lost worker's tasks back and start a replacement."""
        tasks = list(w.inflight.values())
        log.warning("worker %d (pid %s) %s; re-queueing %d task(s)", w.number, w.process.pid, why, len(tasks))
        current = tasks[0] if tasks else None
        self.losses.append(WorkerLoss(w.number, w.process.pid, stalled, why, current, tasks[1:]))
        if current is not None:
            # the worker works in order: the oldest task is the one it was busy with
            path = current.path
            n = self._lost_count[path] = self._lost_count.get(path, 0) + 1
            if stalled:
                self._lost_stalled[path] = self._lost_stalled.get(path, 0) + 1
            if n >= self.max_losses:
                tasks = tasks[1:]
                done.append((current, [ImageResult(path, error=self._failure_reason(path, n),
                                                   processed_at=time.time(), worker=w.process.pid)]))
        orphaned.extend(tasks)
        w.inflight.clear()
        w.conn.close()
        w.process.release()
        self.workers.remove(w)
        self._spawn()
        self.restarts += 1

    def _failure_reason(self, path: str, n: int) -> str:
        stalls = self._lost_stalled.get(path, 0)
        if not stalls:
            return f"the worker processing it died {n} times"
        return (f"the worker processing it stalled (no result within {self.task_timeout:g} s) "
                f"or died {n} times ({stalls} stalled); the file may block reading or loop forever")

    def close(self, timeout: float = 5.0) -> None:
        """Stop all workers; they finish their current task first, for up to ``timeout`` s.

        A worker still running after that (or stopped) is SIGKILLed.
        """
        for w in self.workers:
            try:
                _send(w.conn, None)
            except (BrokenPipeError, OSError):
                pass
        end = time.monotonic() + timeout
        for w in self.workers:
            w.process.join(max(0.0, end - time.monotonic()))
        self._finish(self.workers)

    def terminate(self) -> None:
        """Stop all workers now (abort)."""
        for w in self.workers:
            w.process.terminate()
        end = time.monotonic() + 2.0
        for w in self.workers:
            w.process.join(max(0.0, end - time.monotonic()))
        self._finish(self.workers)

    def _finish(self, workers: list[_Worker]) -> None:
        for w in workers:
            if w.process.is_alive():
                w.process.kill()  # a stopped worker ignores SIGTERM until continued
                w.process.join(5.0)
            w.conn.close()
            w.process.release()
        self.workers.clear()
        self._forker.stop()
