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
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

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


class Ledger:
    """SQLite-backed image states.

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
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._dirty = False
        self._last_commit = time.monotonic()
        self.commit_interval = commit_interval
        self._db.execute("BEGIN")

    # -- transactions ----------------------------------------------------------------
    def _changed(self) -> None:
        self._dirty = True
        if time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()

    def commit(self) -> None:
        """Commit pending changes now."""
        with self._lock:
            if self._dirty:
                self._db.execute("COMMIT")
                self._db.execute("BEGIN")
                self._dirty = False
            self._last_commit = time.monotonic()

    def maybe_commit(self) -> None:
        """Commit if changes waited longer than ``commit_interval``."""
        if self._dirty and time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError:
                pass
            self._db.close()

    # -- meta ------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            self._changed()
        self.commit()

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- image states ----------------------------------------------------------------
    def state(self, queue: str, path: str) -> tuple[str, str | None] | None:
        """``(state, signature)`` of the file's first frame row, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT state, signature FROM images WHERE queue=? AND path=? "
                                   "ORDER BY frame LIMIT 1", (queue, path)).fetchone()
        return None if row is None else (row[0], row[1])

    def mark_preexisting(self, queue: str, paths: Iterable[tuple[str, str | None]]) -> None:
        """Record files present when the queue started (not processed unless re-read)."""
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO images (queue, path, frame, signature, state, updated) "
                "VALUES (?, ?, 0, ?, 'preexisting', ?)", ((queue, p, s, now) for p, s in paths))
            self._changed()
        self.commit()

    def mark_queued(self, queue: str, path: str, signature: str | None) -> None:
        """The file is accepted for processing (replaces any earlier state)."""
        with self._lock:
            self._db.execute("DELETE FROM images WHERE queue=? AND path=? AND frame>0", (queue, path))
            self._db.execute(
                "INSERT INTO images (queue, path, frame, signature, state, updated) VALUES (?, ?, 0, ?, 'queued', ?) "
                "ON CONFLICT (queue, path, frame) DO UPDATE SET state='queued', signature=excluded.signature, "
                "error=NULL, attempts=attempts+1, updated=excluded.updated",
                (queue, path, signature, time.time()))
            self._changed()

    def mark_result(self, queue: str, result, signature: str | None) -> None:
        """Record a frame's result (``done`` or ``failed``)."""
        state = "failed" if result.error is not None else "done"
        with self._lock:
            self._db.execute(
                "INSERT INTO images (queue, path, frame, signature, state, outputs, parameters, image_time, "
                "processed_at, timings, error, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (queue, path, frame) DO UPDATE SET state=excluded.state, "
                "signature=excluded.signature, outputs=excluded.outputs, parameters=excluded.parameters, "
                "image_time=excluded.image_time, processed_at=excluded.processed_at, timings=excluded.timings, "
                "error=excluded.error, updated=excluded.updated",
                (queue, result.path, result.frame, signature, state, json.dumps(result.outputs),
                 json.dumps(result.parameters), result.image_time, result.processed_at,
                 json.dumps(result.timings), result.error, time.time()))
            self._changed()

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
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT path FROM images WHERE queue=? AND state='queued'",
                                    (queue,)).fetchall()
        return [r[0] for r in rows]

    def known(self, queue: str) -> dict[str, tuple[str, str | None]]:
        """Every file of the queue with its (state, signature)."""
        with self._lock:
            rows = self._db.execute("SELECT path, state, signature FROM images WHERE queue=? AND frame=0",
                                    (queue,)).fetchall()
        return {p: (s, sig) for p, s, sig in rows}

    def counts(self, queue: str) -> dict[str, int]:
        """Rows per state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM images WHERE queue=? GROUP BY state",
                                    (queue,)).fetchall()
        return {s: n for s, n in rows}

    def history(self, queue: str, since: float = 0.0, limit: int = 100_000) -> list[dict[str, Any]]:
        """Finished rows (done and failed), oldest first, updated after ``since``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT path, frame, state, outputs, parameters, image_time, processed_at, timings, error, updated "
                "FROM images WHERE queue=? AND state IN ('done','failed') AND updated>? "
                "ORDER BY processed_at LIMIT ?", (queue, since, limit)).fetchall()
        out = []
        for path, frame, state, outputs, params, itime, ptime, timings, error, updated in rows:
            out.append({"path": path, "frame": frame, "state": state,
                        "outputs": json.loads(outputs or "[]"), "parameters": json.loads(params or "{}"),
                        "image_time": itime, "processed_at": ptime, "timings": json.loads(timings or "{}"),
                        "error": error, "updated": updated})
        return out
