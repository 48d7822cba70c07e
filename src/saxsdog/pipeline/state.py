"""The image queue's rules as a pure state machine.

:class:`QueueState` holds every image's state and decides what happens next; it does no
I/O, starts no threads and never reads a clock.  Time, file signatures and the ledger's
opinion arrive inside the events; what to do comes back as instructions, which the
threaded shell (:class:`~saxsdog.pipeline.queue.ImageQueue`) carries out::

    instructions = state.handle(Push(path, now=t, ...), Tick(now=t, capacity=4))
    # -> [Record(path, "queued"), Submit(task)]

This is the design of dask/distributed's ``WorkerState.handle_stimulus``: the rules (de-
duplication, retries with back-off, close and abort, worker crashes and stalls, full
disks, output collisions) can be tested with plain function calls.

Image states: ``pending`` (waiting for a worker), ``inflight``, ``retry`` (incomplete file,
waiting for its back-off), ``space`` (its output could not be written because the disk is
full; retried once space is back), ``done``, ``failed``, ``dropped`` (abort) and
``stopped`` (the queue stopped before it ran; it stays queued in the ledger and resumes).

Memory stays flat over a run of any length: the state keeps the images that are not
finished, and of the finished ones only the latest :data:`FINISHED_REMEMBERED` (enough for
the duplicate events a watcher or feeder sends for a file just written).  An older image
asks again like a new one, and the persistent record decides (the server's ledger: the
push's ``accepted``).  Who wrote which output must be known for as long as the queue runs
(a later image with the same output name is renamed, never allowed to replace it): for
forgotten images that is kept as two 64-bit hashes (:class:`HashedMap`, 16 bytes an
image instead of some 500).  Nothing is forgotten while a sink is failing (the ledger may
not have the record yet).
"""

from __future__ import annotations

import dataclasses
import heapq
import mmap
import sys
from collections import deque
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .tasks import FramePayload, ImageResult, ImageTask

#: An image whose worker died (or stalled) this often is reported as failed instead of re-queued.
MAX_WORKER_DEATHS = 3
#: Longest retry back-off of an incomplete file (seconds).
MAX_RETRY_DELAY = 2.0
#: First and longest back-off while the disk is full or a sink fails (seconds).
SPACE_RETRY_INITIAL = 0.5
SPACE_RETRY_MAX = 10.0

ACTIVE = frozenset(("pending", "inflight", "retry", "space"))
FINISHED = frozenset(("done", "failed"))
#: Finished images remembered in full (de-duplication without asking the ledger); older ones are forgotten.
FINISHED_REMEMBERED = 10_000

_DISK_FULL_MARKS = ("no space left on device", "[errno 28]", "errno = 28", "disk quota exceeded",
                    "[errno 122]", "database or disk is full")


def is_disk_full(error: str | None) -> bool:
    """Whether an error message says the disk (or the quota) is full: ENOSPC, EDQUOT, SQLITE_FULL."""
    if not error:
        return False
    e = error.lower()
    return any(m in e for m in _DISK_FULL_MARKS)


# -- events --------------------------------------------------------------------------
@dataclass(frozen=True)
class Push:
    """An image file (or, with ``payload``, an in-memory frame) asks to be processed.

    Attributes
    ----------
    path, root
        The image and the queue's directory.
    now
        Monotonic time of the push (starts its retry clock).
    signature
        ``(size, mtime_ns)`` of the file, ``None`` for frames or a missing file.
    force
        Process it again even if it was processed already (``readdir``).
    in_scope
        It lies in one of the calibration's ``Directory`` entries.
    accepted
        The persistent record (the ledger) does not know it as finished and unchanged.
    output_key
        Its output path without suffix and extension (what collisions are checked on).
    skip_frames, payload, run
        Passed to the task (see :class:`ImageTask`).
    """

    path: str
    root: str
    now: float = 0.0
    signature: tuple[int, int] | None = None
    force: bool = False
    in_scope: bool = True
    accepted: bool = True
    output_key: str | None = None
    skip_frames: frozenset[int] = frozenset()
    payload: FramePayload | None = None
    run: str | None = None


@dataclass(frozen=True)
class Claim:
    """``path`` wrote the output ``output_key`` before (the ledger, after a restart): no other image may."""

    path: str
    output_key: str


@dataclass(frozen=True)
class FinishRun:
    """Close the run ``run`` once its queued frames are done."""

    run: str


@dataclass(frozen=True)
class Tick:
    """Time passed: due retries become pending, and up to ``capacity`` tasks are submitted."""

    now: float
    capacity: int = 0


@dataclass(frozen=True)
class SubmitRefused:
    """The backend did not take a :class:`Submit`'s task (full or its worker died): it waits again."""

    task: ImageTask


@dataclass(frozen=True)
class TaskDone:
    """A task's results are back.

    ``wall`` is the wall-clock time and ``signature`` the file's ``(size, mtime_ns)`` now
    (to tell a file that is still being written from one that is truncated for good).
    """

    task: ImageTask
    results: list[ImageResult]
    now: float = 0.0
    wall: float = 0.0
    signature: tuple[int, int] | None = None


@dataclass(frozen=True)
class TaskFailed:
    """The backend could not run a task at all (``error`` says why)."""

    task: ImageTask
    error: str
    now: float = 0.0
    wall: float = 0.0


@dataclass(frozen=True)
class WorkerLost:
    """The worker holding ``task`` died (killed, crashed): the task is re-queued."""

    task: ImageTask
    now: float = 0.0
    wall: float = 0.0


@dataclass(frozen=True)
class WorkerStalled:
    """The worker holding ``task`` stopped answering and was replaced: the task is re-queued."""

    task: ImageTask
    now: float = 0.0
    wall: float = 0.0


@dataclass(frozen=True)
class SinkFailed:
    """Writing to a sink (ledger, file list, run file) failed; the sinks keep what they could not write."""

    sink: str
    error: str
    now: float = 0.0


@dataclass(frozen=True)
class SinkRecovered:
    """A :class:`Flush` succeeded: every sink is written through again."""

    now: float = 0.0


@dataclass(frozen=True)
class Close:
    """Finish what is queued, but accept nothing new (the server's ``close``)."""


@dataclass(frozen=True)
class Stop:
    """Finish what is in flight; what waits stays unfinished (it resumes after a restart)."""


@dataclass(frozen=True)
class Abort:
    """Drop everything at once; the images not finished are recorded as dropped."""

    wall: float = 0.0


Event = (Push | Claim | FinishRun | Tick | SubmitRefused | TaskDone | TaskFailed | WorkerLost | WorkerStalled
         | SinkFailed | SinkRecovered | Close | Stop | Abort)


# -- instructions --------------------------------------------------------------------
@dataclass(frozen=True)
class Submit:
    """Hand ``task`` to the backend (answer :class:`SubmitRefused` if it does not take it)."""

    task: ImageTask


@dataclass(frozen=True)
class RetryAt:
    """Send a :class:`Tick` no later than monotonic time ``when``."""

    when: float


@dataclass(frozen=True)
class Record:
    """Write an image's state to the sinks.

    ``state`` is ``queued`` (accepted), ``done`` or ``failed`` (with its frame results,
    which also go to the history, file list and run file), ``partial`` (the frames of a
    file that did succeed while the rest is retried: history, file list and run file
    only) or ``dropped`` (abort).
    """

    path: str
    state: str
    results: tuple[ImageResult, ...] = ()
    signature: tuple[int, int] | None = None
    run: str | None = None


@dataclass(frozen=True)
class Flush:
    """Write through what the sinks hold; answer :class:`SinkRecovered` or :class:`SinkFailed`."""


@dataclass(frozen=True)
class Report:
    """Something to log: ``level`` is ``info``, ``warning`` or ``error``."""

    level: str
    message: str


@dataclass(frozen=True)
class CloseRun:
    """Rename the run files of ``run`` into place (its frames are all done)."""

    run: str


@dataclass(frozen=True)
class Closed:
    """Everything queued before :class:`Close` is finished."""


Instruction = Submit | RetryAt | Record | Flush | Report | CloseRun | Closed


@dataclass(slots=True)
class _Image:
    state: str
    signature: tuple[int, int] | None = None
    crashes: int = 0
    output_key: str | None = None


#: Tables at least this large get their own anonymous mapping (:func:`_zeros`).
_MAPPED_BYTES = 64 * 1024


def _zeros(n: int, dtype: type) -> np.ndarray:
    """A zero-filled array; a large one in its own private anonymous mapping.

    A :class:`HashedMap` doubles its arrays now and then over a run.  From ``malloc`` they
    land in the allocator's heap once its mmap threshold has risen (it does after the first
    large block is freed), and the old arrays, freed, leave holes there that the
    coordinator's small per-frame allocations fragment: measured, the server's heap grew by
    about as much again as the tables themselves.  A mapping of its own is handed back to
    the system whole when the array is freed, and its pages are only resident once written.
    """
    nbytes = n * np.dtype(dtype).itemsize
    if nbytes < _MAPPED_BYTES:
        return np.zeros(n, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype)  # writable; the mapping lives as long as the array


class HashedMap:
    """A map from strings to Python ints (hashes) that stores neither: 16 bytes an entry.

    For per-image records that must last as long as a run but only ever answer "is it this
    one?": who owns an output name (:class:`QueueState`), the hash of an image's line in a
    file list.  The key is kept as its 64-bit ``hash()``.  Two keys share a hash with a
    probability of about n^2 / 2^65 (1e-10 for 100,000 images); such a pair would look like
    one key.

    The hashes are a sorted array (with their values beside them, 16 bytes an entry and no
    slack), looked up by bisection; new entries wait in a small dict of at most
    ``capacity`` entries, then are merged in (a pass over the arrays, a fraction of a
    millisecond at 10^5 entries).  Memory grows by 16 bytes an entry, smoothly: an
    open-addressing table that doubles held up to four times that just after it grew (its
    memory jumped by 4 MiB at 65,536 images, by 8 at 131,072).

    Values must fit in 64 signed bits (``hash()`` of anything does).
    """

    def __init__(self, capacity: int = 2048):
        self._capacity = max(1, int(capacity))
        self._keys = np.zeros(0, dtype=np.int64)  # hash() of the keys, sorted
        self._values = np.zeros(0, dtype=np.int64)
        self._recent: dict[int, int] = {}  # hash -> value, not merged yet

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    @property
    def nbytes(self) -> int:
        """Bytes the arrays and the dict of recent entries hold."""
        return self._keys.nbytes + self._values.nbytes + sys.getsizeof(self._recent)

    def _index(self, k: int) -> int:
        """Where ``k`` is in the sorted array, or -1."""
        keys = self._keys
        i = int(keys.searchsorted(k))  # a Python int against int64: NumPy's fast path
        return i if i < len(keys) and int(keys[i]) == k else -1

    def get(self, key: str, default: int | None = None) -> int | None:
        """The value of ``key``, or ``default``."""
        k = hash(key)
        v = self._recent.get(k)
        if v is not None:
            return v
        i = self._index(k) if len(self._keys) else -1
        return default if i < 0 else int(self._values[i])

    def __setitem__(self, key: str, value: int) -> None:
        k = hash(key)
        if k not in self._recent:
            i = self._index(k) if len(self._keys) else -1
            if i >= 0:
                self._values[i] = value
                return
        self._recent[k] = value
        if len(self._recent) >= self._capacity:
            self._merge()

    def _merge(self) -> None:
        """Merge the recent entries into the sorted arrays (new arrays of the exact size)."""
        new_keys = np.fromiter(self._recent.keys(), dtype=np.int64, count=len(self._recent))
        new_values = np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent))
        order = np.argsort(new_keys)
        new_keys, new_values = new_keys[order], new_values[order]
        # where each new key lands: its place among the old ones, shifted by the new ones before it
        at = self._keys.searchsorted(new_keys) + np.arange(len(new_keys))
        total = len(self._keys) + len(new_keys)
        keys, values = _zeros(total, np.int64), _zeros(total, np.int64)
        old = np.ones(total, dtype=bool)
        old[at] = False
        keys[at], values[at] = new_keys, new_values
        keys[old], values[old] = self._keys, self._values
        self._keys, self._values = keys, values
        self._recent = {}


@dataclass
class QueueState:
    """Every image's state and the queue's rules (see the module docstring).

    Parameters
    ----------
    retry_timeout
        Seconds to keep retrying an incomplete file (from when it was first queued, or
        since it last changed: a file unchanged that long is final at once).
    retry_initial
        First back-off delay (doubles each retry, at most :data:`MAX_RETRY_DELAY`).
    """

    retry_timeout: float = 10.0
    retry_initial: float = 0.05
    #: Finished images remembered in full (see the module docstring).
    finished_remembered: int = FINISHED_REMEMBERED
    images: dict[str, _Image] = field(default_factory=dict)
    pending: deque[ImageTask] = field(default_factory=deque)
    retry: list[tuple[float, int, ImageTask]] = field(default_factory=list)
    inflight: dict[str, ImageTask] = field(default_factory=dict)
    space: list[ImageTask] = field(default_factory=list)  # waiting for disk space
    owners: dict[str, str] = field(default_factory=dict)  # output key -> image path (images remembered)
    #: Output keys of the images forgotten (and claimed before a restart): who owns them.
    owner_archive: HashedMap = field(default_factory=HashedMap)  # output key -> hash(path)
    #: Finished images in the order they finished (the oldest is forgotten first).
    _finished: OrderedDict[str, None] = field(default_factory=OrderedDict)
    run_open: dict[str, int] = field(default_factory=dict)
    finishing: set[str] = field(default_factory=set)
    closing: bool = False
    closed: bool = False
    stopping: bool = False
    aborted: bool = False
    #: Why nothing is submitted now (disk full, a sink failing), or ``None``.
    paused: str | None = None
    sink_errors: int = 0
    last_sink_error: str | None = None
    queued_total: int = 0
    ignored_after_close: int = 0
    renamed_outputs: int = 0
    active: int = 0
    _seq: int = 0
    _space_delay: float = SPACE_RETRY_INITIAL
    _space_due: float | None = None  # when to probe the disk again
    _sink_broken: bool = False
    _sink_delay: float = SPACE_RETRY_INITIAL
    _sink_due: float | None = None

    # -- queries -------------------------------------------------------------------
    def is_known(self, path: str, signature: tuple[int, int] | None, force: bool) -> bool:
        """Whether a push of ``path`` would be dropped without looking further (a cheap pre-check)."""
        img = self.images.get(path)
        if img is None:
            return self.closing or self.stopping
        if img.state in ACTIVE or self.closing or self.stopping:
            return True
        return not force and img.state in ("done", "failed") and img.signature == signature

    @property
    def busy(self) -> bool:
        """Anything waiting, retrying, in flight or held for disk space."""
        return bool(self.pending or self.retry or self.inflight or self.space or self._sink_broken)

    @property
    def finished(self) -> bool:
        """The dispatcher may end: aborted, or stopping with nothing in flight."""
        return self.aborted or (self.stopping and not self.inflight)

    def next_wakeup(self) -> float | None:
        """Monotonic time of the next retry, disk probe or sink flush."""
        times = [t for t in (self.retry[0][0] if self.retry else None, self._space_due, self._sink_due)
                 if t is not None]
        return min(times) if times else None

    # -- the entry point -------------------------------------------------------------
    def handle(self, *events: Event) -> list[Instruction]:
        """Apply ``events`` in order; returns what the shell must do."""
        out: list[Instruction] = []
        for ev in events:
            method = getattr(self, "_on_" + type(ev).__name__)
            method(ev, out)
        if self.closing and not self.closed and not self.busy:
            self.closed = True
            out.append(Closed())
        return out

    # -- helpers ---------------------------------------------------------------------
    def _set(self, path: str, state: str) -> _Image:
        img = self.images.get(path)
        if img is None:
            img = self.images[path] = _Image(state)
            before = None
        else:
            before, img.state = img.state, state
        self.active += (state in ACTIVE) - (before in ACTIVE)
        if state in FINISHED:
            self._finished[path] = None
            self._finished.move_to_end(path)
        elif before in FINISHED:
            self._finished.pop(path, None)
        return img

    def _owner(self, key: str) -> str | int | None:
        """Who owns the output ``key``: a path, the hash of a forgotten one's path, or ``None``."""
        owner = self.owners.get(key)
        return owner if owner is not None else self.owner_archive.get(key)

    @staticmethod
    def _owned_by(owner: str | int | None, path: str) -> bool:
        return owner == path if isinstance(owner, str) else owner == hash(path)

    def _forget_finished(self) -> None:
        """Forget the oldest finished images beyond :attr:`finished_remembered` (not while a sink fails)."""
        if self._sink_broken:
            return
        while len(self._finished) > self.finished_remembered:
            path, _ = self._finished.popitem(last=False)
            img = self.images.pop(path)
            key = img.output_key
            if key is not None and self.owners.get(key) == path:
                del self.owners[key]
                self.owner_archive[key] = hash(path)

    def _claim_output(self, path: str, key: str | None, out: list[Instruction]) -> str | None:
        """Own the output ``key`` for ``path``; returns a unique stem when another image has it."""
        if key is None:
            return None
        img = self.images.get(path)
        if img is not None and img.output_key is not None:  # seen before: keep its name
            return None if img.output_key == key else img.output_key.rsplit("/", 1)[-1]
        owner = self._owner(key)
        if owner is None or self._owned_by(owner, path):
            if owner is None:
                self.owners[key] = path
            return None
        n = 2
        while (o := self._owner(f"{key}~{n}")) is not None and not self._owned_by(o, path):
            n += 1
        alt = f"{key}~{n}"
        if o is None:  # not named so before (a forgotten image's, or a Claim)
            self.owners[alt] = path
            self.renamed_outputs += 1
            who = owner if isinstance(owner, str) else "an image processed before"
            out.append(Report("warning", f"{path} would write the same output as {who} ({key}.*): "
                                         f"its outputs are named {alt.rsplit('/', 1)[-1]}.* instead"))
        return alt.rsplit("/", 1)[-1]

    def _run_task_done(self, run: str | None, out: list[Instruction], n: int = 1) -> None:
        if run is None:
            return
        left = self.run_open[run] = self.run_open.get(run, 0) - n
        if left <= 0 and run in self.finishing:
            self.finishing.discard(run)
            del self.run_open[run]
            out.append(CloseRun(run))

    def _final(self, task: ImageTask, results: list[ImageResult], signature, out: list[Instruction]) -> None:
        failed = any(r.error is not None for r in results)
        state = "failed" if failed else "done"
        img = self._set(task.path, state)
        img.signature = signature if task.payload is None else None
        out.append(Record(task.path, state, tuple(results), img.signature, task.run))
        self._run_task_done(task.run, out)
        self._forget_finished()

    def _requeue(self, task: ImageTask, front: bool = True) -> None:
        self._set(task.path, "pending")
        if front:
            self.pending.appendleft(task)
        else:
            self.pending.append(task)

    def _pause(self, reason: str, out: list[Instruction]) -> None:
        if self.paused is None:
            out.append(Report("error", f"queue paused: {reason}"))
        self.paused = reason

    def _maybe_resume(self, out: list[Instruction]) -> None:
        if self.paused is not None and not self.space and not self._sink_broken:
            out.append(Report("info", f"queue resumed (was paused: {self.paused})"))
            self.paused = None

    # -- event handlers --------------------------------------------------------------
    def _on_Push(self, ev: Push, out: list[Instruction]) -> None:
        if self.closing or self.stopping or self.aborted:
            self.ignored_after_close += 1
            return
        img = self.images.get(ev.path)
        if img is not None:
            if img.state in ACTIVE or ev.payload is not None:
                return  # already queued; a frame seen before is dropped
            if not ev.force and img.state in ("done", "failed") and img.signature == ev.signature:
                return  # same content as already handled
        if not ev.in_scope or not ev.accepted:
            return
        stem = self._claim_output(ev.path, ev.output_key, out)
        img = self._set(ev.path, "pending")
        img.signature = ev.signature
        if ev.output_key is not None and img.output_key is None:
            img.output_key = ev.output_key if stem is None else ev.output_key.rsplit("/", 1)[0] + "/" + stem
        out.append(Record(ev.path, "queued", signature=ev.signature))
        self.pending.append(ImageTask(ev.path, ev.root, 0, ev.now, payload=ev.payload,
                                      skip_frames=ev.skip_frames, run=ev.run, output_stem=stem))
        if ev.run is not None:
            self.run_open[ev.run] = self.run_open.get(ev.run, 0) + 1
        self.queued_total += 1

    def _on_Claim(self, ev: Claim, out: list[Instruction]) -> None:
        # compact: a restart claims every output of the ledger's images
        if self._owner(ev.output_key) is None:
            self.owner_archive[ev.output_key] = hash(ev.path)

    def _on_FinishRun(self, ev: FinishRun, out: list[Instruction]) -> None:
        self.finishing.add(ev.run)
        self._run_task_done(ev.run, out, 0)

    def _on_Tick(self, ev: Tick, out: list[Instruction]) -> None:
        now = ev.now
        while self.retry and self.retry[0][0] <= now:
            _, _, task = heapq.heappop(self.retry)
            self._requeue(task, front=False)
        if self._sink_due is not None and now >= self._sink_due:
            self._sink_due = None
            out.append(Flush())
        if self._space_due is not None and now >= self._space_due and self.space and ev.capacity > 0:
            # probe: one image tries again; it succeeding means there is space again
            self._space_due = None
            self._requeue(self.space.pop(0))
            self._submit(1, out)
            return
        if self.paused is None:
            self._submit(ev.capacity, out)
        when = self.next_wakeup()
        if when is not None:
            out.append(RetryAt(when))

    def _submit(self, capacity: int, out: list[Instruction]) -> None:
        while self.pending and capacity > 0:
            task = self.pending.popleft()
            self._set(task.path, "inflight")
            self.inflight[task.path] = task
            out.append(Submit(task))
            capacity -= 1

    def _on_SubmitRefused(self, ev: SubmitRefused, out: list[Instruction]) -> None:
        if self.inflight.pop(ev.task.path, None) is not None:
            self._requeue(ev.task)

    def _on_TaskDone(self, ev: TaskDone, out: list[Instruction]) -> None:
        task = ev.task
        if self.inflight.pop(task.path, None) is None:
            return  # dropped (abort) or a duplicate answer
        results = list(ev.results)
        full = next((r for r in results if r.error is not None and is_disk_full(r.error)), None)
        if full is not None:
            # not the image's fault: it waits until there is space again
            self._set(task.path, "space")
            self.space.append(task)
            if self._space_due is None:
                self._space_due = ev.now + self._space_delay
                self._space_delay = min(SPACE_RETRY_MAX, self._space_delay * 2)
            self._pause(f"the disk is full: cannot write the outputs of {task.path} ({full.error}); "
                        f"retrying with back-off", out)
            out.append(RetryAt(self._space_due))
            return
        if self.space or (self.paused is not None and not self._sink_broken):
            # an image got through: there is space again
            for t in self.space:
                self._requeue(t, front=False)
            self.space.clear()
            self._space_due = None
            self._space_delay = SPACE_RETRY_INITIAL
            self._maybe_resume(out)
        retry = next((r for r in results if r.error is not None and r.retryable), None)
        if retry is not None:
            waited = ev.now - task.first_seen
            age = None if ev.signature is None else ev.wall - ev.signature[1] / 1e9
            unchanged = age is not None and age >= self.retry_timeout
            if self.stopping and waited < self.retry_timeout and not unchanged:
                self._set(task.path, "stopped")  # stays queued in the ledger: resumes after a restart
                return
            if waited < self.retry_timeout and not unchanged:
                delay = min(MAX_RETRY_DELAY, self.retry_initial * (2 ** task.attempt))
                self._seq += 1
                heapq.heappush(self.retry, (ev.now + delay, self._seq,
                                            dataclasses.replace(task, attempt=task.attempt + 1)))
                self._set(task.path, "retry")
                out.append(RetryAt(self.retry[0][0]))
                ok = [r for r in results if r.error is None]
                if ok:  # frames that did succeed are recorded already
                    out.append(Record(task.path, "partial", tuple(ok), ev.signature, task.run))
                return
            i = results.index(retry)
            if unchanged and waited < self.retry_timeout:
                why = (f"still incomplete and unchanged for {age:.1f} s, longer than the retry timeout "
                       f"({self.retry_timeout:g} s)")
            else:
                why = f"still incomplete after {waited:.1f} s"
            results[i] = dataclasses.replace(retry, error=f"{why}: {retry.error}", retryable=False)
        self._final(task, results, ev.signature, out)

    def _on_TaskFailed(self, ev: TaskFailed, out: list[Instruction]) -> None:
        task = ev.task
        if self.inflight.pop(task.path, None) is None:
            return
        self._final(task, [ImageResult(task.path, error=ev.error, processed_at=ev.wall)], None, out)

    def _lost(self, task: ImageTask, wall: float, how: str, out: list[Instruction]) -> None:
        if self.inflight.pop(task.path, None) is None:
            return
        img = self.images[task.path]
        img.crashes += 1
        if img.crashes >= MAX_WORKER_DEATHS:
            # an image that kills (or hangs) every worker that touches it must not loop forever
            self._final(task, [ImageResult(task.path, error=f"the worker processing it {how} {img.crashes} times",
                                           processed_at=wall)], None, out)
            return
        if self.stopping:
            self._set(task.path, "stopped")
            return
        self._requeue(task)

    def _on_WorkerLost(self, ev: WorkerLost, out: list[Instruction]) -> None:
        self._lost(ev.task, ev.wall, "died", out)

    def _on_WorkerStalled(self, ev: WorkerStalled, out: list[Instruction]) -> None:
        self._lost(ev.task, ev.wall, "stalled", out)

    @property
    def sink_broken(self) -> bool:
        """A sink failed and has not been flushed through since."""
        return self._sink_broken

    def _on_SinkFailed(self, ev: SinkFailed, out: list[Instruction]) -> None:
        self.sink_errors += 1
        self.last_sink_error = f"{ev.sink}: {ev.error}"
        if ev.sink != "ledger" and not is_disk_full(ev.error):
            # not a full disk (e.g. a file list made read-only): waiting would not help; the
            # sink keeps its rows and tries again with the next one
            return
        if self._sink_broken and self._sink_due is not None:
            return  # a flush is due already; later records wait in the sinks
        self._sink_broken = True
        self._pause(f"cannot write the {ev.sink} ({ev.error}); retrying", out)
        self._sink_due = ev.now + self._sink_delay
        self._sink_delay = min(SPACE_RETRY_MAX, self._sink_delay * 2)
        out.append(RetryAt(self._sink_due))

    def _on_SinkRecovered(self, ev: SinkRecovered, out: list[Instruction]) -> None:
        if self._sink_broken:
            self._sink_broken = False
            self._sink_due = None
            self._sink_delay = SPACE_RETRY_INITIAL
            self._maybe_resume(out)
            self._forget_finished()

    def _on_Close(self, ev: Close, out: list[Instruction]) -> None:
        self.closing = True

    def _on_Stop(self, ev: Stop, out: list[Instruction]) -> None:
        self.stopping = True
        waiting = list(self.pending) + [t for _, _, t in self.retry] + self.space
        for t in waiting:
            self._set(t.path, "stopped")
        self.pending.clear()
        self.retry.clear()
        self.space.clear()
        self._space_due = None

    def _on_Abort(self, ev: Abort, out: list[Instruction]) -> None:
        self.aborted = self.stopping = True
        waiting = list(self.pending) + [t for _, _, t in self.retry] + self.space + list(self.inflight.values())
        for t in waiting:
            self._set(t.path, "dropped")
            out.append(Record(t.path, "dropped"))
        self.pending.clear()
        self.retry.clear()
        self.space.clear()
        self.inflight.clear()
        self._space_due = None


__all__ = [
    "FINISHED_REMEMBERED",
    "MAX_WORKER_DEATHS",
    "Abort",
    "Close",
    "CloseRun",
    "Closed",
    "Event",
    "FinishRun",
    "Flush",
    "Instruction",
    "HashedMap",
    "Push",
    "QueueState",
    "Record",
    "Report",
    "RetryAt",
    "SinkFailed",
    "SinkRecovered",
    "Stop",
    "Submit",
    "SubmitRefused",
    "TaskDone",
    "TaskFailed",
    "Tick",
    "WorkerLost",
    "WorkerStalled",
    "is_disk_full",
]
