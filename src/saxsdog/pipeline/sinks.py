"""Where the queue's results go: one :class:`Sink` protocol for history, file list, run files and ledger.

The dispatcher hands every :class:`~saxsdog.pipeline.state.Record` to each sink in turn.
A sink that cannot write (a full disk) raises, but keeps what it could not write and
writes it with :meth:`Sink.flush`, which the queue calls with back-off until it succeeds:
nothing is lost while the disk is full, and the queue resumes by itself once space is freed.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..calibration import Calibration
from .history import History
from .naming import (claim_temporary, existing_run_files, frame_name, make_output_folder, open_output,
                     run_file_path, subtracted_path, write_output_bytes)
from .state import HashedMap, Record
from .tasks import ImageResult

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    """Something that records results (called from the dispatcher thread only).

    ``name`` names it in errors (``ledger``, ``file list``).  ``record`` may raise
    (``OSError``, ``sqlite3.Error``) once it kept what it could not write; ``flush``
    writes that (and commits), raising while it still cannot; ``close`` ends it.
    """

    name: str

    def record(self, rec: Record) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> object: ...


class HistorySink:
    """The in-memory :class:`History` (never fails)."""

    name = "history"

    def __init__(self, history: History):
        self.history = history

    def record(self, rec: Record) -> None:
        if rec.state in ("done", "failed", "partial"):
            for r in rec.results:
                self.history.add(r)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class CallbackSink:
    """The queue's result callbacks (``on_result``, the server's live feeds): a broken one is logged."""

    name = "callbacks"

    def __init__(self, callbacks: list[Callable[[ImageResult], None]]):
        self.callbacks = callbacks

    def record(self, rec: Record) -> None:
        if rec.state not in ("done", "failed", "partial"):
            return
        for r in rec.results:
            for fn in self.callbacks:
                try:
                    fn(r)
                except Exception:  # a broken callback must not stop processing
                    log.exception("result callback failed")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TrackerSink:
    """The persistent record of image states (the server's ledger, via its tracker).

    The tracker has ``queued(path, signature)``, ``finished(path, results, signature)``,
    ``tick()`` and optionally ``dropped(path)`` and ``flush()``; it keeps what it could not
    write itself (see :class:`saxsdog.server.session.LedgerTracker`).
    """

    name = "ledger"

    def __init__(self, tracker: Any):
        self.tracker = tracker

    def record(self, rec: Record) -> None:
        t = self.tracker
        if rec.state == "queued":
            t.queued(rec.path, rec.signature)
        elif rec.state in ("done", "failed"):
            t.finished(rec.path, list(rec.results), rec.signature)
        elif rec.state == "dropped" and hasattr(t, "dropped"):
            t.dropped(rec.path)

    def tick(self) -> None:
        self.tracker.tick()

    def flush(self) -> None:
        flush = getattr(self.tracker, "flush", None)
        if flush is not None:
            flush()
        else:
            self.tracker.tick()

    def close(self) -> None:
        pass


class LiveFileList:
    """``results/filelist.txt``: one tab-separated line per processed image, and only one.

    An image processed again (a rerun, ``-r``, a restart after a crash) keeps its one row:
    a row with the same values is not written again, a skipped image (outputs existed)
    never adds a row when it has one, and changed values replace the image's row (the file
    is rewritten atomically at the next flush).  A line left half-written by a killed
    process is cut off when the file is opened.  Rows that cannot be written (a full disk)
    are kept and written by :meth:`flush`; a failed write is cut back, so the file never
    holds a partial line.

    With ``confine_to`` (the server's base directory) the file's folder must resolve inside
    it, and a symbolic link at the file's name is refused (:class:`~saxsdog.pipeline.naming.OutputRefused`,
    naming the link), not appended through: the queue does not start, and starts once the
    link is removed.  Rewrites replace the name with a regular file.

    ``columns`` are further parameters (the classifiers' keys, ``Guinier.Rg`` ...) written
    after ``image_time``; a file that exists already keeps the columns its header names.
    """

    HEADER = "file\toutput\tI0\tI1\tI2\timage_time\n"
    name = "file list"

    def __init__(self, path: Path, confine_to: Path | None = None, columns: list[str] | tuple[str, ...] = ()):
        self.path = path
        self.confine_to = confine_to
        self.columns = [c for c in columns if "\t" not in c and "\n" not in c]
        self.header = self.HEADER[:-1] + "".join("\t" + c for c in self.columns) + "\n"
        make_output_folder(path.parent, confine_to)
        self._rows = HashedMap()  # key -> hash of its line (16 bytes a row: flat memory over long runs)
        self._waiting: list[str] = []  # lines not written yet (disk full)
        self._replaced: dict[str, str] = {}  # key -> new line, for the next rewrite
        self._fd = open_output(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644, confine_to)
        self._load()

    def _load(self) -> None:
        with open(self._fd, "rb", closefd=False) as fh:
            fh.seek(0)
            data = fh.read()
        good = data.rfind(b"\n") + 1
        if good < len(data):  # a line cut by a kill: drop it (the image is redone anyway)
            os.ftruncate(self._fd, good)
            data = data[:good]
        lines = data.decode("utf-8", "replace").splitlines(keepends=True)
        if not lines:
            try:
                self._write(self.header)
            except OSError as exc:
                if not _no_space(exc):
                    raise
                self._waiting.append(self.header)  # a full disk at start: flush() writes it first
            return
        if lines[0] != self.header:  # an earlier run's file: its rows keep its columns
            names = lines[0].rstrip("\n").split("\t")
            base = self.HEADER.rstrip("\n").split("\t")
            self.columns = names[len(base):] if names[:len(base)] == base else []
            self.header = lines[0]
        for line in lines[1:]:
            key = line.split("\t", 1)[0]
            self._rows[key] = hash(line)

    def _write(self, text: str) -> None:
        data = text.encode()
        n = os.write(self._fd, data)  # a refused write (ENOSPC) wrote nothing: it just raises
        if n != len(data):
            try:  # never leave a partial line: cut off the n bytes this write added
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - n)
            except OSError:
                pass
            raise OSError(28, "short write (no space left on device?)")

    def _line(self, result: ImageResult) -> tuple[str, str]:
        params: dict[str, Any] = next(iter(result.parameters.values()), {})
        vals = [params.get(k, "") for k in ("I0", "I1", "I2")]
        key = result.path if result.frame == 0 else f"{result.path}#{result.frame}"
        extra = ["" if params.get(c) is None else str(params[c]).replace("\t", " ").replace("\n", " ")
                 for c in self.columns]
        return key, "\t".join([key, result.outputs[0], *map(str, vals), str(result.image_time or ""), *extra]) + "\n"

    def add(self, result: ImageResult) -> None:
        """Add (or update) the row of one frame's result."""
        if result.error is not None or not result.outputs:
            return
        key, line = self._line(result)
        old = self._rows.get(key)
        if old is not None and (result.skipped or old == hash(line)):
            return
        self._rows[key] = hash(line)
        if old is not None:
            self._replaced[key] = line
            return
        self._waiting.append(line)
        self.flush()

    def record(self, rec: Record) -> None:
        if rec.state in ("done", "partial"):
            for r in rec.results:
                self.add(r)

    def flush(self) -> None:
        """Write the rows kept back (raises ``OSError`` while the disk is still full)."""
        if self._waiting:
            self._write("".join(self._waiting))
            self._waiting.clear()
        if self._replaced:
            self._rewrite()

    def _rewrite(self) -> None:
        from ..io.chi import atomic_write_bytes

        with open(self._fd, "rb", closefd=False) as fh:
            fh.seek(0)
            lines = fh.read().decode("utf-8", "replace").splitlines(keepends=True)
        out = [lines[0] if lines else self.header]
        for line in lines[1:]:
            key = line.split("\t", 1)[0]
            out.append(self._replaced.get(key, line))
        if self.confine_to is None:
            atomic_write_bytes(self.path, "".join(out).encode())
        else:
            write_output_bytes(self.path, "".join(out).encode(), self.confine_to)
        os.close(self._fd)
        self._fd = open_output(self.path, os.O_RDWR | os.O_APPEND, 0o644, self.confine_to)
        self._replaced.clear()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        except OSError as exc:
            log.error("cannot write %d row(s) of %s: %s", len(self._waiting) + len(self._replaced), self.path, exc)
        os.close(self._fd)
        self._fd = -1


class _Run:
    """The run files of one run name (one NXcanSAS file per I(q) integrator, and one per
    background-subtracted curve)."""

    def __init__(self, name: str, paths: list[Path]):
        self.name = name
        self.paths = paths
        #: What each of ``paths`` holds: ``(integrator index, subtracted)``; set by the run's
        #: first frame (which says whether there are background-subtracted curves).
        self.sources: list[tuple[int, bool]] | None = None
        self.writers: list[Any] = []
        self.appended: set[str] = set()  # frame names given to the writers (or waiting for them)
        self.waiting: list[tuple[str, ImageResult]] = []  # frames not in the writers yet (no file yet)
        self.known: dict[str, set[int]] = {}


def _no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class RunSink:
    """Appends every frame's curves to NXcanSAS run files (used by the dispatcher thread only).

    One file per I(q) integrator: ``<folder>/<run name>.h5`` for the first,
    ``<run name>_c<kind><n>.h5`` for further masks and slices (Phi-mode curves are not
    I(q) and stay ``.chi`` files); with a background, the subtracted curves go to
    ``<run name>_sub.h5``, ``<run name>_c<kind><n>_sub.h5``
    (:func:`~saxsdog.pipeline.naming.subtracted_path`).  Bins without data are left out of
    each frame's entry, and I is written in the curve's unit (the graphs' ``valid`` and
    ``unit``).  Each frame is one NXcanSAS entry titled with its name
    (:attr:`ImageResult.name`); a frame name seen before is not appended again (retried or
    re-queued images).  The files are written under hidden temporary names and renamed into
    place by :meth:`finish` (one run) or :meth:`close` (all).

    On a full disk no frame is lost or appended twice: the writers hold what the disk
    refuses (see :mod:`saxsdog.io.nxcansas`), :meth:`record`, :meth:`finish` and
    :meth:`close` raise ``OSError`` (``ENOSPC``) once the frames are kept, so that the queue
    pauses, and :meth:`flush` (which the queue calls with back-off) writes them through and
    completes and renames the runs whose close had to wait.

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
    confine_to
        The server's base directory: the folder must resolve inside it whenever a run file
        is started there (checked then, not only when the queue starts).
    """

    def __init__(self, calibration: Calibration, folder: Path, run_name: Callable[[], str],
                 replace: bool = False, skip_known: bool = False, confine_to: Path | None = None):
        self.calibration = calibration
        self.folder = Path(folder)
        self.confine_to = confine_to
        self._run_name = run_name
        self.replace = replace
        self.skip_known = skip_known
        from .worker import nxcansas_curve

        suffixes = calibration.output_suffixes()
        self.integrators = [(k, sfx) for k, (it, sfx) in enumerate(zip(calibration.integrators, suffixes))
                            if nxcansas_curve(it)]
        self._default: str | None = None
        self._runs: dict[str, _Run] = {}
        self._finished_names: set[str] = set()
        self._closing: list[_Run] = []  # runs finished whose files wait for disk space
        self.frames = 0
        self.closed: list[Path] = []
        self.finished = False

    def _loaded_config(self) -> dict[str, Any] | None:
        """The calibration as loaded (``Calibration.config``), if it has one."""
        config = getattr(self.calibration, "config", None)
        return config if isinstance(config, dict) else None

    @property
    def paths(self) -> list[Path]:
        """Where the open runs' files will be (after the closed ones)."""
        return [p for r in (*self._runs.values(), *self._closing) for p in r.paths]

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
        # a run of that name still waiting for disk space to be renamed into place keeps its name
        waiting = {p for r in self._closing for p in r.paths}
        while run_file_path(self.folder, name, number) in waiting:
            number += 1
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
        if run.sources is None:  # the run's first frame says whether there are subtracted curves
            with_sub = [(k, p) for (k, _), p in zip(self.integrators, run.paths)
                        if _subtracted_graph(result.curves, k) is not None]
            run.sources = [(k, False) for k, _ in self.integrators] + [(k, True) for k, _ in with_sub]
            run.paths = run.paths + [subtracted_path(p) for _, p in with_sub]
        name = result.name or Path(result.path).name
        result.outputs = [str(p) for p in run.paths] + [o for o in result.outputs if not o.endswith(".h5")]
        if name not in run.appended:
            run.waiting.append((name, result))
            run.appended.add(name)
            try:
                self._feed(run)
            except BaseException as exc:
                if not _no_space(exc):  # not kept: the frame failed (record() says so)
                    kept = [w for w in run.waiting if w[1] is not result]
                    if len(kept) < len(run.waiting):
                        run.waiting = kept
                        run.appended.discard(name)
                raise

    def _feed(self, run: _Run) -> None:
        """Give the run's waiting frames to its writers (creating them first).

        Raises ``OSError`` (``ENOSPC``) when the files cannot be created (the frames keep
        waiting); any other error of a frame is raised after it is dropped.
        """
        if not run.waiting:
            return
        if not run.writers:
            from ..io.nxcansas import NXcanSASRunWriter
            from .worker import nx_q_units

            make_output_folder(self.folder, self.confine_to)
            if self.confine_to is not None:
                for path in run.paths:
                    claim_temporary(path, self.confine_to)  # h5py opens it by name
            writers = []
            sources = run.sources or [(k, False) for k, _ in self.integrators]
            try:
                for (k, _), path in zip(sources, run.paths):
                    it = self.calibration.integrators[k]
                    writers.append(NXcanSASRunWriter(path, it.x, self.calibration.raw, title=run.name,
                                                     q_units=nx_q_units(it) or "1/nm",
                                                     loaded_calibration=self._loaded_config()))
            except BaseException:
                for w in writers:
                    w.abort()
                raise
            run.writers = writers
        while run.waiting:
            name, result = run.waiting.pop(0)
            assert result.curves is not None  # record() queues only frames with curves
            for (k, sub), writer in zip(run.sources or [(k, False) for k, _ in self.integrators], run.writers):
                if sub:
                    found = _subtracted_graph(result.curves, k)
                    if found is None:  # a frame without the run's background (cannot happen today)
                        log.warning("%s has no background-subtracted curve for %s", name, writer.path.name)
                        continue
                    graph = result.curves[found]
                else:
                    graph = result.curves[k]
                x, intensity, error = graph["array"][:3]
                key = f"{self.calibration.integrators[k].kind[0]}{k}"
                params = graph.get("parameters")  # a subtracted curve's own
                writer.append(name, intensity, error, result.metadata,
                              params if params is not None else result.parameters.get(key, {}),
                              q=x, valid=graph.get("valid"), unit=graph.get("unit"))
            self.frames += 1

    def waiting_for_space(self) -> OSError | None:
        """Why frames of the run files wait in memory (the disk is full), or ``None``."""
        for run in (*self._runs.values(), *self._closing):
            for w in run.writers:
                refused = w.waiting_for_space
                if refused is not None:
                    code = refused.errno or errno.ENOSPC
                    return OSError(code, f"{os.strerror(code)}: {w.waiting_bytes} byte(s) of the run file "
                                         f"{w.path} wait in memory for space", str(w.path))
        return None

    name = "run file"

    def record(self, rec: Record) -> None:
        """Append the record's frames; a frame that cannot be appended fails (the log says why).

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT`` after every frame is kept: the disk is full (see :meth:`flush`).
        """
        if rec.state not in ("done", "failed", "partial"):
            return
        full: OSError | None = None
        for r in rec.results:
            try:
                self.add(r, rec.run)
            except OSError as exc:
                if _no_space(exc):
                    full = full or exc  # the frame waits (run.waiting) until there is space
                    continue
                log.exception("cannot append %s to the run file", r.name or r.path)
                r.error = f"cannot append to the run file: {exc}"
            except Exception as exc:  # a frame the writer refuses: that frame failed
                log.exception("cannot append %s to the run file", r.name or r.path)
                r.error = f"cannot append to the run file: {exc}"
        full = full or self.waiting_for_space()
        if full is not None:
            raise full

    def flush(self) -> None:
        """Write what waits for disk space, and close the runs finished meanwhile.

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT`` while the disk is still full (everything is still kept).
        """
        full: OSError | None = None
        for run in list(self._runs.values()):
            try:
                self._feed(run)
                for w in run.writers:
                    if w.waiting_bytes:
                        w.flush()
            except OSError as exc:
                if not _no_space(exc):
                    raise
                full = full or exc
        for run in list(self._closing):
            try:
                self._close_run(run)
            except OSError as exc:
                full = full or exc
        if full is not None:
            raise full

    def finish(self, run_name: str) -> list[Path]:
        """Rename one run's files into place (a later frame of that name starts a new file).

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT``: the disk is full; the run is completed by a later
            :meth:`flush` (or :meth:`close`).
        """
        run = self._runs.pop(run_name, None)
        if run is None:
            return []
        self._finished_names.add(run_name)
        self._closing.append(run)
        return self._close_run(run)

    def close(self) -> list[Path]:
        """Rename every run's files into place; returns all closed (none if no frame was appended).

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT``: some files wait for space; call :meth:`close` again.
        """
        self.finished = True
        full: OSError | None = None
        for name in list(self._runs):
            try:
                self.finish(name)
            except OSError as exc:
                full = full or exc
        for run in list(self._closing):  # finished earlier, still waiting for space
            try:
                self._close_run(run)
            except OSError as exc:
                full = full or exc
        if full is not None:
            raise full
        return self.closed

    def _close_run(self, run: _Run) -> list[Path]:
        """Close the run's writers (a run in ``_closing``); raises ``OSError`` if the disk is full."""
        full: OSError | None = None
        try:
            self._feed(run)
        except OSError as exc:
            if not _no_space(exc):
                raise
            full = exc
        done = []
        kept = []
        for w in run.writers:
            try:
                done.append(w.close())
            except OSError as exc:
                if _no_space(exc):  # kept: closed again by flush() or close()
                    kept.append(w)
                    full = full or exc
                else:  # a full disk must not hide the other files
                    log.exception("cannot close the run file %s", w.path)
            except Exception:
                log.exception("cannot close the run file %s", w.path)
        run.writers = kept
        self.closed.extend(done)
        if full is not None:
            raise full
        self._closing.remove(run)
        return done


def _subtracted_graph(graphs: list[dict[str, Any]], k: int) -> int | None:
    """The index of integrator ``k``'s background-subtracted graph among a frame's graphs."""
    for i, g in enumerate(graphs):
        conf = g.get("conf") or {}
        if conf.get("subtracted") and conf.get("of") == k:
            return i
    return None


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


