"""One running queue of the server: calibration, image queue, ledger, reconciliation.

The queue's definition (calibration, directory, mask attachments) is saved in the state
directory so a server restarted after a crash resumes it: unfinished ledger rows are
queued again and a reconciliation scan finds images whose feeder events were lost.

Everything a queue reads or writes stays inside the server's base directory, checked when
it is used and not only at ``new`` (symbolic links resolved then): the walks, rescans,
``readdir`` and the watch skip what resolves outside (with a warning), the workers check an
image's real path right before opening it, every output's folder is checked when it is
written and a link at an output's own name is never written through
(:mod:`saxsdog.pipeline.naming`).  The queue directory itself is re-resolved whenever it is
scanned: swapped for a symbolic link after ``new`` it is refused (:attr:`QueueSession.error`,
shown in ``stat``), not processed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ..calibration import Calibration
from ..errors import CalibrationError, LedgerError
from ..io.atomic import remove_stale_partials
from ..io.images import file_signature, inside, is_image_file
from ..pipeline import QueueOptions
from ..pipeline.naming import OutputRefused, check_output_folder, make_output_folder, results_dir, write_output_bytes
from ..pipeline.queue import ImageQueue
from ..pipeline.sources import stream_images, walk_images
from .ledger import Ledger, rebuild_from_outputs
from .paths import PathOutsideBase, resolve_inside

log = logging.getLogger(__name__)
#: Per-image records a queue keeps in memory (the latest; the ledger keeps them all), so the
#: server's memory stays flat over a run of any length.
HISTORY_RECORDS = 10_000

#: A ledger write failed: SQLite's own errors, or the ledger's (which rolled back and names the file).
_LEDGER_ERRORS = (sqlite3.Error, LedgerError)


def _sig_text(sig: tuple[int, int] | None) -> str | None:
    return None if sig is None else f"{sig[0]}:{sig[1]}"


class LedgerUnavailable(Exception):
    """The ledger cannot be written now (a full disk); the tracker keeps the writes for later."""


class LedgerTracker:
    """Connects an :class:`ImageQueue` to the ledger (called in the dispatcher thread).

    Every write since the last successful commit is kept: when a write or a commit fails
    (SQLite's "database or disk is full" rolls the transaction back), the transaction is
    started afresh and :meth:`flush`, which the queue calls with back-off, writes them all
    again.  Nothing is lost while the disk is full, and the ledger works again by itself
    once space is freed.
    """

    def __init__(self, ledger: Ledger, queue_id: str):
        self.ledger = ledger
        self.queue_id = queue_id
        self._lock = threading.Lock()
        self._log: list[tuple[Callable[..., None], tuple]] = []  # writes not committed yet
        self._last_commit = time.monotonic()
        #: Why the ledger cannot be written now, or ``None``.
        self.broken: str | None = None

    def should_accept(self, path: str, signature, force: bool) -> bool:
        if force:
            return True
        row = self.ledger.state(self.queue_id, path)
        if row is None:
            return True
        state, old = row
        # 'preexisting' files are accepted here: an explicit event (feeder, watch) asks for
        # them; only the reconciliation scan leaves them alone (it queues unknown files only).
        if state in ("done", "failed") and old == _sig_text(signature):
            return False  # processed already, file unchanged
        return True  # queued before a crash, or changed since

    def _write(self, fn: Callable[..., None], *args) -> None:
        with self._lock:
            self._log.append((fn, args))
            if self.broken is not None:
                raise LedgerUnavailable(self.broken)
            try:
                fn(*args)
            except _LEDGER_ERRORS as exc:
                self._fail(exc)
                raise

    def _fail(self, exc: BaseException) -> None:
        self.broken = str(exc)
        log.error("cannot write the ledger %s: %s (retrying)", self.ledger.path, exc)
        try:
            self.ledger.reset_transaction()
        except _LEDGER_ERRORS:
            pass

    def queued(self, path: str, signature) -> None:
        self._write(self.ledger.mark_queued, self.queue_id, path, _sig_text(signature))

    def finished(self, path: str, results, signature) -> None:
        for r in results:
            self._write(self.ledger.mark_result, self.queue_id, r, _sig_text(signature))

    def dropped(self, path: str) -> None:
        self._write(self.ledger.mark_dropped, self.queue_id, path)

    def _commit(self) -> None:
        try:
            self.ledger.commit()
        except _LEDGER_ERRORS as exc:
            self._fail(exc)
            raise
        self._log.clear()
        self._last_commit = time.monotonic()

    def tick(self) -> None:
        """Commit at most every ``commit_interval`` seconds."""
        with self._lock:
            if self.broken is not None:
                raise LedgerUnavailable(self.broken)
            if self._log and time.monotonic() - self._last_commit >= self.ledger.commit_interval:
                self._commit()

    def flush(self) -> None:
        """Write again what a failure lost, and commit (raises while the disk is still full)."""
        with self._lock:
            was_broken = self.broken is not None
            if was_broken:
                self.ledger.reset_transaction()
                try:
                    for fn, args in self._log:
                        fn(*args)
                except _LEDGER_ERRORS as exc:
                    self._fail(exc)
                    raise
                self.broken = None
            self._commit()
            if was_broken:
                log.info("the ledger %s is written again", self.ledger.path)

    def commit(self) -> bool:
        """Commit now (``stat``: report only what is durable); ``False`` while the ledger cannot be written."""
        with self._lock:
            if self.broken is not None:
                return False
            try:
                self._commit()
            except _LEDGER_ERRORS:
                return False
            return True


#: How long :meth:`QueueSession.stop` waits for a reconciliation scan under way (it asks the
#: ledger 500 paths at a time, so it ends within a chunk of the stop on any folder).
RESCAN_JOIN_SECONDS = 10.0


class QueueSession:
    """A queue started by ``new``: everything the server needs to run and report on it.

    Parameters
    ----------
    basedir
        The server's base directory (nothing outside it is ever read or listed).
    state_dir
        Where the ledger and the saved queue live.
    ledger
        The server's ledger.
    directory
        The queue's directory, relative to ``basedir`` (list of components or a string).
    calibration
        The calibration dict.
    attachments
        Mask file contents, keyed by mask index.
    options
        Queue options (outputs, workers, ...); the queue's copy is confined to ``basedir``
        (:attr:`QueueOptions.confine_to`).
    queue_id
        Reuse an id (restoring after a restart); ``None`` for a new queue.
    pool_factory
        Execution backend for the image queue (default: local worker processes).

    Raises
    ------
    PathOutsideBase
        The directory is not a folder inside ``basedir``, or the queue's outputs would go
        outside it.  A queue on the base directory itself (directory ``""`` or ``"."``) with
        the default ``-R ../work`` is refused so: its outputs would go to
        ``BASEDIR/../work``.  The message names the fix (a sub-folder as the queue
        directory, or an output folder inside the base directory with ``-o``/``-R``); the
        outputs are not moved elsewhere silently.
    """

    def __init__(self, basedir: Path, state_dir: Path, ledger: Ledger, directory, calibration: dict[str, Any],
                 attachments: dict[int, bytes], options: QueueOptions, queue_id: str | None = None,
                 pool_factory: Callable | None = None, attachment_names: dict[int, str] | None = None,
                 prepared: Calibration | None = None):
        self.state_dir = state_dir
        self.ledger = ledger
        self._check(basedir, directory, calibration, attachments, options)
        self.restored = queue_id is not None
        self.queue_id = queue_id or uuid.uuid4().hex
        self.attachment_names = dict(attachment_names or {})
        # ``prepared``: this calibration, already built by :meth:`checked_calibration`
        self.calibration = prepared if prepared is not None else Calibration(
            calibration, base_dir=self.directory, attachments=attachments, attachment_names=self.attachment_names)
        self.tracker = LedgerTracker(ledger, self.queue_id)
        self.queue = ImageQueue(self.calibration, self.directory, self.options, tracker=self.tracker,
                                pool_factory=pool_factory)
        # the ledger holds every image's record (plots, file lists): memory keeps the latest only
        self.queue.history.max_records = HISTORY_RECORDS
        self.started = time.time()
        self._rescan_stop = threading.Event()
        self._rescan_thread: threading.Thread | None = None
        self._close_thread: threading.Thread | None = None
        self._stop_lock = threading.Lock()
        #: ``close`` was asked: the queue drains and accepts nothing new.
        self.closing = False
        self.stopped = False
        self.events_rejected = 0

    def _check(self, basedir: Path, directory, calibration: dict[str, Any], attachments: dict[int, bytes],
               options: QueueOptions) -> None:
        """Set and check what the queue may touch: its directory, outputs and the calibration's files."""
        self.basedir = Path(os.path.realpath(basedir))
        self.directory_arg = directory
        self.directory = resolve_inside(self.basedir, directory)
        if not self.directory.is_dir():
            raise PathOutsideBase(f"{directory!r} is not a directory inside the base directory")
        self.calibration_raw = calibration
        self.attachments = attachments
        self.options = dataclasses.replace(options, confine_to=self.basedir)
        #: Why the queue directory is refused now (replaced by a link since ``new``), or ``None``.
        self.directory_error: str | None = None
        self._check_output_location()
        self._check_mask_paths()

    @classmethod
    def checked_calibration(cls, basedir: Path, directory, calibration: dict[str, Any],
                            attachments: dict[int, bytes], options: QueueOptions,
                            attachment_names: dict[int, str] | None = None) -> Calibration:
        """The calibration a new queue would have, built after the same checks, without a queue.

        ``new`` calls it while the running queue goes on, so that a refused calibration (a
        dark of the wrong size, a flat with zeros, a file outside the base ...) leaves that
        queue running; the result is handed to the new session as ``prepared``.

        Raises
        ------
        PathOutsideBase, CalibrationError
            As the constructor.
        """
        probe = cls.__new__(cls)
        probe._check(basedir, directory, calibration, attachments, options)
        return Calibration(calibration, base_dir=probe.directory, attachments=attachments,
                           attachment_names=dict(attachment_names or {}))

    def _check_output_location(self) -> None:
        """The outputs of the queue directory's own images (the shallowest) must go inside the base.

        Images in sub-folders write below their own folder's ``-R`` target, which is inside
        that one, so checking the queue directory's covers them all.
        """
        outputs = results_dir(self.directory, self.options).parent
        try:
            check_output_folder(outputs, self.basedir)
        except OutputRefused:
            rel = os.path.relpath(self.directory, self.basedir)
            where = "the base directory itself" if rel == "." else f"{rel!r}"
            how = (f"-o {self.options.out_dir}" if self.options.out_dir is not None
                   else f"-R {self.options.relpath}")
            raise PathOutsideBase(
                f"the outputs of a queue on {where} would go to {os.path.normpath(outputs)} ({how}), outside the "
                f"server's base directory {self.basedir}: choose a sub-folder of the base directory as the "
                f"queue directory, or start the server with an output folder inside the base directory "
                f"(-o, or a -R that stays inside)") from None

    def check_directory(self) -> None:
        """Re-resolve the queue directory now (before each scan): it must still be the folder of ``new``.

        Raises
        ------
        PathOutsideBase
            It (or a folder above it) was replaced by a symbolic link, or it is gone;
            :attr:`directory_error` says why until it is back.
        """
        real = os.path.realpath(self.directory)
        rel = os.path.relpath(self.directory, self.basedir)
        problem = None
        if real != str(self.directory):
            where = "outside the server's base directory" if not inside(real, self.basedir) else "elsewhere"
            problem = (f"the queue directory {rel!r} was replaced by a symbolic link to {real} ({where}) "
                       f"after the queue started: it is not processed (start a new queue on a real folder)")
        elif not os.path.isdir(real):
            problem = f"the queue directory {rel!r} is gone: nothing is processed until it is back"
        if problem != self.directory_error:
            if problem is not None:
                log.error("%s", problem)
            else:
                log.info("the queue directory %r is a folder again", rel)
            self.directory_error = problem
        if problem is not None:
            raise PathOutsideBase(problem)

    @property
    def error(self) -> str | None:
        """What keeps the queue from working (``stat``): the backend is gone, or the directory is refused."""
        if self.queue.error is not None:
            return str(self.queue.error)
        return self.directory_error

    def _walk(self) -> list[str]:
        """The images of the queue directory, confined to the base directory (re-resolved first)."""
        self.check_directory()
        return walk_images(self.directory, self.options.directories, confine_to=self.basedir)[0]

    def _check_mask_paths(self) -> None:
        """Mask files not sent as attachments, and the dark, flat and background files, must lie
        inside the base directory."""
        masks = self.calibration_raw.get("Masks", []) if isinstance(self.calibration_raw, dict) else []
        for i, m in enumerate(masks if isinstance(masks, list) else []):
            name = m.get("MaskFile", "") if isinstance(m, dict) else ""
            if i in self.attachments or not isinstance(name, str) or name == "":
                continue
            p = Path(name) if os.path.isabs(name) else self.directory / name
            try:
                resolve_inside(self.basedir, p)
            except PathOutsideBase:
                raise CalibrationError("mask file outside the server's base directory; send it as an attachment",
                                       f"$.Masks[{i}].MaskFile", name, "a path inside the base directory") from None
        # the files of the version-2 blocks (dark, flat, background) are read by the server too
        raw = self.calibration_raw if isinstance(self.calibration_raw, dict) else {}
        for block, field in (("Corrections", "DarkFile"), ("Corrections", "FlatFile"), ("Background", "File")):
            entry = raw.get(block)
            name = entry.get(field, "") if isinstance(entry, dict) else ""
            if not isinstance(name, str) or name == "":
                continue
            p = Path(name) if os.path.isabs(name) else self.directory / name
            try:
                resolve_inside(self.basedir, p)
            except PathOutsideBase:
                raise CalibrationError("file outside the server's base directory", f"$.{block}.{field}", name,
                                       "a path inside the base directory") from None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, watch: bool = False, rescan_interval: float = 30.0) -> None:
        """Start processing: new files only (a new queue), or resume (a restored one)."""
        if self.restored:  # writers killed with the old server left temporary files
            outputs = results_dir(self.directory, self.options).parent
            for folder in {self.directory, outputs}:
                if folder.is_dir() and inside(folder, self.basedir):
                    remove_stale_partials(folder)
        if self.restored and self.ledger.fresh:  # the ledger was lost or refused: trust the outputs on disk
            from ..pipeline.tasks import ImageTask
            from ..pipeline.worker import ImageProcessor

            outputs_of = ImageProcessor(self.calibration, self.options).outputs_for
            rebuild_from_outputs(self.ledger, self.queue_id, self._walk(),
                                 lambda p: outputs_of(ImageTask(p, str(self.directory)), None),
                                 lambda p: _sig_text(file_signature(p)))
        self.queue.start()
        if self.restored:
            # outputs named before the restart stay theirs (a colliding newcomer is renamed)
            for path, output in self.ledger.done_outputs(self.queue_id):  # streamed, not every row at once
                self.queue.claim_output(path, output)
            for path in self.ledger.unfinished(self.queue_id):
                self.queue.push(path)
            saved = self.load_saved(self.state_dir)
            if saved is not None and saved.get("queue_id") == self.queue_id and saved.get("closing"):
                self.close()  # closed before the restart: finish what was queued, nothing new
                return
            self.reconcile()
        else:
            images = self._walk()
            self.ledger.mark_preexisting(self.queue_id, [(p, _sig_text(file_signature(p))) for p in images])
            self.save()
        if watch:
            self.queue.watch()
        if rescan_interval > 0:
            self._rescan_thread = threading.Thread(target=self._rescan_loop, args=(rescan_interval,),
                                                   name="saxsdog-reconcile", daemon=True)
            self._rescan_thread.start()

    def save(self, closing: bool = False) -> None:
        """Persist the queue definition so a restarted server resumes it (and, ``closing``, closes it)."""
        record = {
            "closing": closing,
            "queue_id": self.queue_id,
            "directory": self.directory_arg,
            "calibration": self.calibration_raw,
            "attachments": {str(k): base64.b64encode(v).decode() for k, v in self.attachments.items()},
            "attachment_names": {str(k): v for k, v in self.attachment_names.items()},
            "started": self.started,
        }
        confine = self._state_confinement()
        make_output_folder(self.state_dir, confine)
        write_output_bytes(self.state_dir / "queue.json", json.dumps(record).encode(), confine)
        self.ledger.set_meta("current_queue", self.queue_id)

    def _state_confinement(self) -> Path | None:
        """The base directory when the state folder is in it (the default ``BASEDIR/.saxsdog``):
        a link swapped in there is not followed out.  A ``--state-dir`` elsewhere is the admin's."""
        in_base = inside(os.path.dirname(os.path.abspath(self.state_dir)), self.basedir)
        return self.basedir if in_base else None

    @staticmethod
    def load_saved(state_dir: Path) -> dict[str, Any] | None:
        p = state_dir / "queue.json"
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
            rec["attachments"] = {int(k): base64.b64decode(v) for k, v in rec.get("attachments", {}).items()}
            rec["attachment_names"] = {int(k): v for k, v in rec.get("attachment_names", {}).items()}
            return rec
        except (OSError, ValueError, KeyError) as exc:
            log.error("ignoring unreadable saved queue %s: %s", p, exc)
            return None

    def forget(self) -> None:
        """The queue was closed on purpose: do not resume it after a restart.

        Only this queue's saved record is removed (a queue started after a ``close`` saved
        its own already).
        """
        p = self.state_dir / "queue.json"
        if self._state_confinement() is not None and not inside(self.state_dir, self.basedir):
            log.error("not removing %s: the state folder resolves outside the base directory", p)
            return
        try:
            if json.loads(p.read_text()).get("queue_id") != self.queue_id:
                return
        except (OSError, ValueError):
            pass
        try:
            p.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """``close``: finish what is queued, ignore new files, then forget the saved queue.

        Returns at once; the queue drains in the background (:meth:`wait_closed`).  The
        saved queue is kept until every image is finished, so a server stopped or killed
        meanwhile resumes the rest (and closes it then).
        """
        if self.closing:
            return
        self.closing = True
        self._rescan_stop.set()
        try:
            self.save(closing=True)
        except (OSError, OutputRefused) as exc:  # a full disk: the old record resumes the queue all the same
            log.error("cannot record that the queue is closing: %s", exc)
        self.queue.close()
        self._close_thread = threading.Thread(target=self._finish_close, name="saxsdog-close", daemon=True)
        self._close_thread.start()

    def _finish_close(self) -> None:
        while not self.queue.wait_closed(0.5):
            if self.stopped:  # the server stopped first: the rest resumes after a restart
                return
        self.stop()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """After :meth:`close`: block until the queue is drained and stopped."""
        if self._close_thread is None:
            return False
        self._close_thread.join(timeout)
        return not self._close_thread.is_alive()

    def stop(self, abort: bool = False) -> None:
        """Stop the queue (the images waiting stay queued in the ledger, unless ``abort`` drops them).

        A closing queue whose images are all finished is forgotten.
        """
        with self._stop_lock:  # a second caller (shutdown during a close) waits for the first
            if self.stopped:
                return
            self.stopped = True
            self._rescan_stop.set()
            scan = self._rescan_thread
            if scan is not None and scan is not threading.current_thread():
                scan.join(RESCAN_JOIN_SECONDS)  # a scan under way ends before the ledger is closed
            self.queue.stop(abort=abort)
            try:
                self.tracker.flush()
            except Exception as exc:  # a full disk: the rows not written are redone after a restart
                log.error("cannot commit the ledger: %s", exc)
            if self.closing and not abort:
                left = self.ledger.unfinished(self.queue_id)
                if left:
                    log.warning("queue closed with %d image(s) unfinished: it resumes after a restart", len(left))
                else:
                    self.forget()

    # -- sources ---------------------------------------------------------------------
    def reconcile(self) -> int:
        """Queue images the ledger has never seen (their events were lost).

        Nothing is queued while the queue directory is refused (:meth:`check_directory`).
        """
        try:
            self.check_directory()
        except PathOutsideBase:
            return 0  # logged, and shown in stat
        # streamed, compared with the ledger in chunks: the folder's listing is never held whole
        images = stream_images(self.directory, self.options.directories, confine_to=self.basedir)
        unknown = sorted(self.ledger.unknown(self.queue_id, images))
        for p in unknown:
            self.queue.push(p)
        n = len(unknown)
        if n:
            log.info("reconciliation found %d image(s) without events", n)
        return n

    def _rescan_loop(self, interval: float) -> None:
        while not self._rescan_stop.wait(interval):
            try:
                self.reconcile()
            except Exception:
                if self._rescan_stop.is_set():  # stopped under the scan: the ledger may be closed
                    log.debug("reconciliation scan ended by the queue's stop", exc_info=True)
                    return
                log.exception("reconciliation scan failed")

    def feeder_event(self, path: str) -> str | None:
        """Handle a 'new file' event; returns why it was rejected, or ``None``."""
        if self.closing:
            self.events_rejected += 1
            return "the queue is closing: new files are ignored"
        try:
            real = resolve_inside(self.basedir, path)
        except PathOutsideBase as exc:
            self.events_rejected += 1
            return str(exc)
        if self.directory != real and self.directory not in real.parents:
            self.events_rejected += 1
            return f"{path!r} is not in the queue's directory"
        if not is_image_file(real):
            self.events_rejected += 1
            return f"{path!r} is not an image file"
        self.queue.push(real)
        return None

    def readdir(self) -> int:
        """Queue every image in the directory again (processes them anew).

        Raises
        ------
        PathOutsideBase
            The queue directory was replaced by a symbolic link since ``new``.
        """
        self.check_directory()
        return self.queue.fill_from_directory(force=True)


def calibration_digest(calibration: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(calibration, sort_keys=True).encode()).hexdigest()[:16]
