"""The ledger: a persistent record of every image's state (SQLite, WAL).

Feeder events are hints; the ledger is the truth.  One row per (queue, image path):

``preexisting``  the file was there when the queue started (only ``readdir`` processes it)
``queued``       accepted, not finished
``done``         outputs written (atomically) — never processed again unless the file changes
``failed``       reported with its reason
``dropped``      an ``abort`` dropped it before it finished

After a crash (server or worker killed), every ``queued`` row is queued again; the
outputs are written atomically, so redoing an image whose outputs were already written
replaces them with identical files: every image ends with exactly one whole output and
exactly one ``done`` row.

Writes come from one thread (the dispatcher) and are committed in small batches (at
most every ``commit_interval`` seconds) to keep up with hundreds of images per second.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import LedgerError
from ..io.atomic import set_aside

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    queue       TEXT NOT NULL,
    path        TEXT NOT NULL,
    frame       INTEGER NOT NULL DEFAULT 0,
    signature   TEXT,
    state       TEXT NOT NULL,
    outputs     TEXT,
    parameters  TEXT,
    image_time  REAL,
    processed_at REAL,
    timings     TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated     REAL NOT NULL,
    PRIMARY KEY (queue, path, frame)
);
CREATE INDEX IF NOT EXISTS images_state ON images (queue, state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_COLUMNS = {"queue", "path", "frame", "signature", "state", "outputs", "parameters", "image_time",
            "processed_at", "timings", "error", "attempts", "updated"}


class Ledger:
    """SQLite-backed image states.

    A file that is not a readable ledger (not SQLite, damaged pages, another schema) is
    refused with a clear log message, moved aside to ``<name>.corrupt-<time>`` and a fresh
    ledger is started (:attr:`recovered_from`, :attr:`fresh`): the server then rebuilds
    the state from the outputs on disk (:func:`rebuild_from_outputs`).

    Every write is robust: when SQLite fails (``database or disk is full``, an I/O error)
    the transaction is rolled back so the connection stays usable, the change is kept in
    memory and written again with the next commit, and :class:`~saxsdog.errors.LedgerError`
    names the file and the reason.  Retrying the failed call is harmless (every write
    is idempotent).

    Parameters
    ----------
    path
        Database file (created with its folder).
    commit_interval
        Longest time (s) a change waits before being committed.
    """

    def __init__(self, path: str | Path, commit_interval: float = 0.05):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        #: Where a refused (corrupt) ledger file was moved, or ``None``.
        self.recovered_from: Path | None = None
        #: ``True`` when this ledger starts empty though the server may have run before
        #: (the file was missing or refused).
        self.fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._lock = threading.RLock()
        self._dirty = False
        self._last_commit = time.monotonic()
        self.commit_interval = commit_interval
        # Writes since the last commit, replayed after a rolled-back transaction.
        self._ops: list[tuple[str, Any, bool]] = []
        self._replay_needed = False
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            self.recovered_from = self._move_aside(exc)
            self.fresh = True
            try:
                self._db = self._open()
            except sqlite3.Error as again:
                raise LedgerError(str(self.path), f"cannot create a fresh ledger: {again}") from again
        except sqlite3.Error as exc:  # pragma: no cover - e.g. unwritable folder
            raise LedgerError(str(self.path), str(exc)) from exc
        self._db.execute("BEGIN")

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("integrity check failed: " + "; ".join(map(str, problems)))
            db.executescript(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(images)").fetchall()}
            missing = _COLUMNS - columns
            if missing:
                raise sqlite3.DatabaseError(f"not a saxsdog ledger (no column {', '.join(sorted(missing))})")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> Path:
        try:
            aside = set_aside(self.path)
        except OSError as err:
            raise LedgerError(str(self.path), f"it is not a readable ledger ({exc}) and cannot be moved "
                                              f"aside: {err}") from err
        log.error("the ledger %s is not a readable SQLite ledger (%s): moved it to %s and started a fresh "
                  "one; the state is rebuilt from the outputs on disk", self.path, exc, aside)
        return aside

    # -- transactions ----------------------------------------------------------------
    def _error(self, exc: Exception) -> LedgerError:
        return LedgerError(str(self.path), str(exc))

    def _run(self, sql: str, params: Any, many: bool) -> None:
        if many:
            self._db.executemany(sql, params)
        else:
            self._db.execute(sql, params)

    def _rollback(self) -> None:
        """After a failure: end the broken transaction, start a clean one (writes are kept)."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error:
            pass
        self._replay_needed = True

    def _replay(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        for sql, params, many in self._ops:
            self._run(sql, params, many)
        self._replay_needed = False

    def _write(self, sql: str, params: Any = (), many: bool = False) -> None:
        """One change in the open transaction; on failure roll back and raise :class:`LedgerError`."""
        self._write_all([(sql, list(params) if many else params, many)])

    def _write_all(self, ops: list[tuple[str, Any, bool]]) -> None:
        """Changes that belong together; all are kept (and replayed later) when one fails."""
        with self._lock:
            self._ops.extend(ops)
            try:
                if self._replay_needed:
                    self._replay()  # the earlier writes of the transaction, then these
                else:
                    for sql, params, many in ops:
                        self._run(sql, params, many)
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error(exc) from exc
            self._changed()

    def _read(self, sql: str, params: Any = ()) -> list[tuple]:
        with self._lock:
            if self._replay_needed:  # show the kept writes if the disk allows it now
                try:
                    self._replay()
                except sqlite3.Error:
                    self._rollback()
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(str(self.path), f"cannot read: {exc}") from exc

    def _changed(self) -> None:
        self._dirty = True
        if time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()

    @property
    def pending_writes(self) -> int:
        """Changes not committed yet (kept in memory while the disk is full)."""
        return len(self._ops)

    def commit(self) -> None:
        """Commit pending changes now.

        Raises
        ------
        LedgerError
            When SQLite cannot commit (e.g. the disk is full); the changes are kept and
            committed by the next successful call.
        """
        with self._lock:
            if self._dirty:
                try:
                    if self._replay_needed:
                        self._replay()
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise self._error(exc) from exc
                self._ops.clear()
                self._dirty = False
                try:
                    self._db.execute("BEGIN")
                except sqlite3.Error as exc:  # pragma: no cover - BEGIN writes nothing
                    self._replay_needed = True
                    raise self._error(exc) from exc
            self._last_commit = time.monotonic()

    def maybe_commit(self) -> None:
        """Commit if changes waited longer than ``commit_interval``."""
        if self._dirty and time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()

    def close(self) -> None:
        with self._lock:
            try:
                self.commit()
            except LedgerError as exc:
                log.error("%s; %d change(s) are lost", exc, len(self._ops))
            try:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")
            except sqlite3.Error:
                pass
            self._db.close()

    # -- meta ------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        self.commit()

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        row = rows[0] if rows else None
        return default if row is None else json.loads(row[0])

    # -- image states ----------------------------------------------------------------
    def state(self, queue: str, path: str) -> tuple[str, str | None] | None:
        """``(state, signature)`` of the file's first frame row, or ``None``."""
        rows = self._read("SELECT state, signature FROM images WHERE queue=? AND path=? "
                          "ORDER BY frame LIMIT 1", (queue, path))
        row = rows[0] if rows else None
        return None if row is None else (row[0], row[1])

    def mark_preexisting(self, queue: str, paths: Iterable[tuple[str, str | None]]) -> None:
        """Record files present when the queue started (not processed unless re-read)."""
        now = time.time()
        self._write("INSERT OR IGNORE INTO images (queue, path, frame, signature, state, updated) "
                    "VALUES (?, ?, 0, ?, 'preexisting', ?)", ((queue, p, s, now) for p, s in paths), many=True)
        self.commit()

    def mark_queued(self, queue: str, path: str, signature: str | None) -> None:
        """The file is accepted for processing (replaces any earlier state)."""
        self._write_all([
            ("DELETE FROM images WHERE queue=? AND path=? AND frame>0", (queue, path), False),
            (("INSERT INTO images (queue, path, frame, signature, state, updated) VALUES (?, ?, 0, ?, 'queued', ?) "
              "ON CONFLICT (queue, path, frame) DO UPDATE SET state='queued', signature=excluded.signature, "
              "error=NULL, attempts=attempts+1, updated=excluded.updated"),
             (queue, path, signature, time.time()), False)])

    def mark_result(self, queue: str, result, signature: str | None) -> None:
        """Record a frame's result (``done`` or ``failed``)."""
        state = "failed" if result.error is not None else "done"
        self._write(
            "INSERT INTO images (queue, path, frame, signature, state, outputs, parameters, image_time, "
            "processed_at, timings, error, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (queue, path, frame) DO UPDATE SET state=excluded.state, "
            "signature=excluded.signature, outputs=excluded.outputs, parameters=excluded.parameters, "
            "image_time=excluded.image_time, processed_at=excluded.processed_at, timings=excluded.timings, "
            "error=excluded.error, updated=excluded.updated",
            (queue, result.path, result.frame, signature, state, json.dumps(result.outputs),
             json.dumps(result.parameters), result.image_time, result.processed_at,
             json.dumps(result.timings), result.error, time.time()))

    def mark_dropped(self, queue: str, path: str) -> None:
        """An abort dropped the file before it finished (it is not resumed)."""
        with self._lock:
            self._db.execute("UPDATE images SET state='dropped', updated=? WHERE queue=? AND path=? "
                             "AND state='queued'", (time.time(), queue, path))
            self._changed()

    def reset_transaction(self) -> None:
        """After a failed write or commit (a full disk): drop what is uncommitted and begin afresh."""
        with self._lock:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._db.execute("BEGIN")
            self._dirty = False

    def unfinished(self, queue: str) -> list[str]:
        """Files accepted but not finished (to queue again after a restart)."""
        rows = self._read("SELECT DISTINCT path FROM images WHERE queue=? AND state='queued'",
                          (queue,))
        return [r[0] for r in rows]

    def known(self, queue: str) -> dict[str, tuple[str, str | None]]:
        """Every file of the queue with its (state, signature)."""
        rows = self._read("SELECT path, state, signature FROM images WHERE queue=? AND frame=0",
                          (queue,))
        return {p: (s, sig) for p, s, sig in rows}

    def unknown(self, queue: str, paths: Iterable[str], chunk: int = 500) -> Iterator[str]:
        """The paths of *paths* the queue has no row for, in their order.

        Asked ``chunk`` paths at a time through the primary key, so that the reconciliation
        scan of a folder of 10⁵ images never holds the queue's whole table in memory (its
        peak would stay in the server's RSS: :meth:`known` builds a dict of every row).
        """
        batch: list[str] = []
        for path in paths:
            batch.append(path)
            if len(batch) >= chunk:
                yield from self._unknown_of(queue, batch)
                batch = []
        if batch:
            yield from self._unknown_of(queue, batch)

    def _unknown_of(self, queue: str, batch: list[str]) -> list[str]:
        # Padded to a power of two (the last path repeated): a handful of statements, each
        # compiled once.  A last chunk of another length every scan was another statement of up
        # to 500 parameters in the connection's statement cache (128 kept), growing with the run.
        size = 1 << (len(batch) - 1).bit_length()
        marks = ",".join("?" * size)
        padded = batch + [batch[-1]] * (size - len(batch))
        rows = self._read(f"SELECT path FROM images WHERE queue=? AND frame=0 AND path IN ({marks})",
                          (queue, *padded))
        seen = {row[0] for row in rows}
        return [p for p in batch if p not in seen]

    def done_outputs(self, queue: str, chunk: int = 2000) -> Iterator[tuple[str, str]]:
        """``(path, first output)`` of every image done (frame 0), streamed ``chunk`` rows at a time.

        What a restarted queue needs to keep the names its images wrote (a colliding newcomer
        is renamed): it read every finished row whole before, parameters and timings parsed,
        a peak of some 100 MB for 10⁵ images that stayed in the server's RSS.  Rows come in
        the order they were first recorded (``rowid``), a page per query, so the ledger's lock
        is held for one page at a time.
        """
        last = 0
        while True:
            rows = self._read("SELECT rowid, path, outputs FROM images WHERE queue=? AND state='done' AND frame=0 "
                              "AND rowid>? ORDER BY rowid LIMIT ?", (queue, last, chunk))
            for rowid, path, outputs in rows:
                last = rowid
                first = json.loads(outputs or "[]")[:1]
                if first and isinstance(first[0], str):
                    yield path, first[0]
            if len(rows) < chunk:
                return

    def counts(self, queue: str) -> dict[str, int]:
        """Rows per state."""
        rows = self._read("SELECT state, COUNT(*) FROM images WHERE queue=? GROUP BY state",
                          (queue,))
        return {s: n for s, n in rows}

    def history(self, queue: str, since: float = 0.0, limit: int = 100_000) -> list[dict[str, Any]]:
        """Finished rows (done and failed), oldest first, updated after ``since``."""
        rows = self._read(
            "SELECT path, frame, state, outputs, parameters, image_time, processed_at, timings, error, updated "
            "FROM images WHERE queue=? AND state IN ('done','failed') AND updated>? "
            "ORDER BY processed_at LIMIT ?", (queue, since, limit))
        out = []
        for path, frame, state, outputs, params, itime, ptime, timings, error, updated in rows:
            out.append({"path": path, "frame": frame, "state": state,
                        "outputs": json.loads(outputs or "[]"), "parameters": json.loads(params or "{}"),
                        "image_time": itime, "processed_at": ptime, "timings": json.loads(timings or "{}"),
                        "error": error, "updated": updated})
        return out

    def mark_rebuilt(self, queue: str, path: str, signature: str | None, outputs: list[str]) -> None:
        """Record an image found done on disk (its outputs exist) while rebuilding a lost ledger."""
        now = time.time()
        self._write(
            "INSERT OR IGNORE INTO images (queue, path, frame, signature, state, outputs, processed_at, updated) "
            "VALUES (?, ?, 0, ?, 'done', ?, ?, ?)", (queue, path, signature, json.dumps(outputs), now, now))


def rebuild_from_outputs(ledger: Ledger, queue: str, images: Iterable[str],
                         outputs_of: Callable[[str], list], signature_of: Callable[[str], str | None]) -> int:
    """Mark every image whose outputs all exist as ``done`` (after a lost or refused ledger).

    Images without (all) their outputs are left unknown: the reconciliation scan queues them.

    Parameters
    ----------
    ledger, queue
        The (fresh) ledger and the queue id.
    images
        The image files of the queue's directory.
    outputs_of
        An image's output files (empty: cannot tell, e.g. multi-frame files or run files).
    signature_of
        An image's signature text as the ledger stores it.

    Returns
    -------
    int
        How many images were marked done.
    """
    n = 0
    for image in images:
        outputs = [str(o) for o in outputs_of(image)]
        if outputs and all(os.path.isfile(o) for o in outputs):
            ledger.mark_rebuilt(queue, image, signature_of(image), outputs)
            n += 1
    ledger.commit()
    if n:
        log.warning("rebuilt the ledger of queue %s from the outputs on disk: %d image(s) done", queue, n)
    return n
