"""The command handler: every leash command, independent of the transport.

Transports (ZeroMQ, HTTP) authenticate a request, then call :meth:`CommandHandler.execute`
with the command name, its argument and any attachments; the handler returns the
response dict (``{"result": ..., "data": {...}}``) and never raises: errors become
``{"result": "Error", "data": {"Error": message}}``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SaxsdogError
from ..io.images import is_image_file
from ..pipeline import QueueOptions
from .ledger import Ledger
from .paths import PathOutsideBase, relative_to_base, resolve_inside
from .session import QueueSession

log = logging.getLogger(__name__)

#: Legacy long command names of the original protocol examples, and their short forms.
ALIASES = {
    "close queue": "close", "abort queue": "abort", "new queue": "new", "send plot": "plot",
    "get plotdata": "plotdata",
}


class CommandError(SaxsdogError):
    """A command cannot be carried out (the message goes back to the client)."""


def error_response(message: str) -> dict[str, Any]:
    return {"result": "Error", "data": {"Error": str(message)}}


class CommandHandler:
    """Carries out leash commands on the server's single queue.

    Parameters
    ----------
    basedir
        Base directory: every path of a request resolves inside it.
    options
        Template of the queue options (outputs, workers, retries) from the command line.
    state_dir
        Ledger and saved-queue folder (default ``basedir/.saxsdog``).
    watch
        Also watch the queue directory for new files.
    rescan_interval
        Seconds between reconciliation scans (0: never).
    pool_factory
        Execution backend for the queues.
    """

    def __init__(self, basedir: str | os.PathLike[str], options: QueueOptions | None = None,
                 state_dir: str | os.PathLike[str] | None = None, watch: bool = False,
                 rescan_interval: float = 30.0, pool_factory: Callable | None = None):
        self.basedir = Path(os.path.realpath(basedir))
        if not self.basedir.is_dir():
            raise SaxsdogError(f"base directory {basedir} does not exist")
        self.options = options or QueueOptions()
        self.state_dir = Path(state_dir) if state_dir else self.basedir / ".saxsdog"
        self.ledger = Ledger(self.state_dir / "ledger.sqlite")
        self.watch = watch
        self.rescan_interval = rescan_interval
        self.pool_factory = pool_factory
        self.session: QueueSession | None = None
        self._lock = threading.RLock()
        self.started = time.time()
        self.listeners: list[Callable[[Any], None]] = []
        self.merge_result: dict[str, Any] | None = None
        self.closing: list[QueueSession] = []  # closed queues still finishing their images

    # -- lifecycle -------------------------------------------------------------------
    def restore(self) -> bool:
        """Resume the queue saved before a restart; returns whether there was one."""
        rec = QueueSession.load_saved(self.state_dir)
        if rec is None:
            return False
        try:
            self._start_session(rec["directory"], rec["calibration"], rec["attachments"], rec["queue_id"],
                                rec.get("attachment_names"))
        except Exception as exc:
            log.error("cannot resume the saved queue: %s", exc)
            return False
        log.info("resumed queue %s on %s", rec["queue_id"], self.session.directory)
        return True

    def shutdown(self) -> None:
        """Stop the queue (kept for resuming) and close the ledger."""
        with self._lock:
            if self.session is not None:
                self.session.stop()
                self.session = None
            for closing in self.closing:
                closing.stop()  # still draining: the rest resumes after a restart
        self.ledger.close()

    def _start_session(self, directory, calibration, attachments, queue_id=None, names=None) -> QueueSession:
        session = QueueSession(self.basedir, self.state_dir, self.ledger, directory, calibration, attachments,
                               self.options, queue_id=queue_id, pool_factory=self.pool_factory,
                               attachment_names=names)
        for fn in self.listeners:
            session.queue.add_callback(fn)
        session.start(watch=self.watch, rescan_interval=self.rescan_interval)
        self.session = session
        return session

    # -- dispatch --------------------------------------------------------------------
    def execute(self, command: str, argument: Any = None, attachments: list[bytes] | None = None) -> dict[str, Any]:
        """Carry out one command; always returns a response dict."""
        name = ALIASES.get(command, command)
        method = getattr(self, "cmd_" + name, None) if isinstance(name, str) and name.isidentifier() else None
        if method is None:
            return error_response(f"unknown command {command!r}")
        try:
            with self._lock:
                return method(argument if argument is not None else {}, attachments or [])
        except SaxsdogError as exc:
            return error_response(str(exc))
        except Exception as exc:  # the server keeps serving whatever happens
            log.exception("command %s failed", name)
            return error_response(f"internal error in {name}: {type(exc).__name__}: {exc}")

    def _require(self) -> QueueSession:
        if self.session is None:
            raise CommandError("no queue is running; send 'new' first")
        return self.session

    # -- statistics ------------------------------------------------------------------
    def stat(self) -> dict[str, Any]:
        """The original's stat keys, plus failures and per-stage timings."""
        now = time.time()
        s = self.session
        # images closed queues still finish in the background
        closing = sum(c.queue.queue_length for c in self.closing if not c.stopped)
        if s is None:
            return {"time interval": now - self.started, "queue length": 0, "frames per sec": 0.0,
                    "images processed": 0, "pics": 0, "images failed": 0, "time": now,
                    "start time": self.started, "mergecount": 0, "closing queue length": closing}
        st = s.queue.stats()
        s.tracker.commit()  # report only what is durable (a full disk: what is, the queue retries)
        counts = self.ledger.counts(s.queue_id)
        return {
            "time interval": now - s.started,
            "queue length": st["queue_length"],
            "frames per sec": st["frames_per_second"],
            "images processed": counts.get("done", 0),
            "pics": st["images_processed"],
            "images failed": counts.get("failed", 0),
            "stage seconds": st["stage_seconds"],
            "worker restarts": st["worker_restarts"],
            "paused": st.get("paused"),
            "sink errors": st.get("sink_errors", 0),
            "last sink error": st.get("last_sink_error"),
            "waiting for space": st.get("waiting_for_space", 0),
            "outputs renamed": st.get("outputs_renamed", 0),
            "closing queue length": closing,
            "error": None if s.queue.error is None else str(s.queue.error),
            "feeder events rejected": s.events_rejected,
            "time": now,
            "start time": s.started,
            "mergecount": 0,
            "directory": relative_to_base(self.basedir, s.directory),
        }

    # -- commands --------------------------------------------------------------------
    def cmd_new(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        if not isinstance(arg, dict) or not isinstance(arg.get("calibration"), dict):
            raise CommandError("'new' needs argument.calibration (the calibration object)")
        directory = arg.get("directory", ["."])
        masks = arg["calibration"].get("Masks", [])
        att = {i: a for i, a in enumerate(attachments)} if attachments else {}
        if len(att) > max(len(masks) if isinstance(masks, list) else 0, 0):
            raise CommandError(f"{len(att)} attachments for {len(masks)} mask(s)")
        filenames = arg.get("filenames") or []
        names = {i: os.path.basename(n) for i, n in enumerate(filenames) if isinstance(n, str) and n and i in att}
        old = self.session
        if old is not None:
            old.stop()
            old.forget()
            self.session = None
        self._start_session(directory, arg["calibration"], att, names=names)
        return {"result": "new queue", "data": {"directory": self.session.directory_arg,
                                                "threads": self.options.workers}}

    def cmd_close(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        stat = self.stat()
        s.close()  # finishes what is queued in the background, then forgets the saved queue
        self.closing = [c for c in self.closing if not c.stopped] + [s]
        self.session = None
        return {"result": "queue closed", "data": {"stat": stat}}

    def cmd_abort(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        stat = self.stat()
        s.stop(abort=True)
        s.forget()
        self.session = None
        return {"result": "queue stopped emptied and closed", "data": {"stat": stat}}

    def cmd_readdir(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        n = s.readdir()
        return {"result": "directory refilled queue", "data": {"stat": self.stat(), "queued": n}}

    def cmd_stat(self, arg, attachments) -> dict[str, Any]:
        return {"result": "stat", "data": {"stat": self.stat()}}

    def cmd_get(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        return {"result": "cal", "data": {"cal": s.calibration_raw, "directory": s.directory_arg,
                                          "threads": self.options.workers}}

    def cmd_plot(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        latest = s.queue.history.latest_curves
        graphs = []
        filename = ""
        params: dict[str, Any] = {}
        if latest is not None:
            filename = relative_to_base(self.basedir, latest.path)
            params = latest.parameters
            graphs = [{**g, "array": [np.asarray(a).tolist() for a in g["array"]]} for g in latest.curves or []]
        return {"result": "plot data", "data": {
            "filename": filename, "stat": self.stat(), "graphs": graphs, "IntegralParameters": params,
            "array": graphs[0]["array"] if graphs else [[], [], []]}}

    def cmd_plotdata(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        since = float(arg.get("since", 0.0)) if isinstance(arg, dict) else 0.0
        rows = self.ledger.history(s.queue_id, since=since)
        history = {"path": [], "frame": [], "time": [], "processed": [], "I0": [], "I1": [], "I2": [],
                   "invariant": [], "correlation_length": [], "error": []}
        for r in rows:
            p = next(iter(r["parameters"].values()), {}) if r["parameters"] else {}
            history["path"].append(relative_to_base(self.basedir, r["path"]))
            history["frame"].append(r["frame"])
            history["time"].append(r["image_time"])
            history["processed"].append(r["processed_at"])
            for k in ("I0", "I1", "I2", "invariant", "correlation_length"):
                history[k].append(p.get(k))
            history["error"].append(r["error"])
        last = rows[-1]["updated"] if rows else since
        return {"result": "plotdata", "data": {"history": history, "stat": self.stat(), "until": last}}

    def cmd_fileslist(self, arg, attachments) -> dict[str, Any]:
        s = self._require()
        rows = self.ledger.history(s.queue_id)
        files = {relative_to_base(self.basedir, r["path"]) + (f"#{r['frame']}" if r["frame"] else ""):
                 {"outputs": [relative_to_base(self.basedir, o) for o in r["outputs"]], "state": r["state"],
                  "error": r["error"]} for r in rows}
        return {"result": "fileslist", "data": {"fileslist": files}}

    def cmd_listdir(self, arg, attachments) -> dict[str, Any]:
        requested = arg.get("directory", ".") if isinstance(arg, dict) else "."
        if requested in ({}, None, ""):
            requested = "."
        path = resolve_inside(self.basedir, requested)
        if not path.is_dir():
            raise CommandError(f"{requested!r} is not a directory")
        entries = []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            isdir = entry.is_dir()
            if isdir:
                try:  # a symlinked folder pointing outside is not shown
                    resolve_inside(self.basedir, entry.path)
                except PathOutsideBase:
                    continue
            entries.append({"isdir": isdir, "path": entry.name,
                            "image": (not isdir) and is_image_file(entry.name)})
        rel = relative_to_base(self.basedir, path)
        return {"result": "dircontent", "data": {
            "dircontent": entries, "directory": [] if rel == "." else rel.split(os.sep)}}

    def cmd_mergedata(self, arg, attachments) -> dict[str, Any]:
        """Merge log tables with the queue's images (seed 001 §3.6.3) and keep the table.

        ``LocalPath`` log files come attached to the request (``argument.filenames`` names
        them, in the order of the attachments); ``RemotePath`` files, the image folder and
        ``OutputFileName`` are on the server, relative to the queue's directory (or the base
        directory without a queue) and never outside the base directory.  The formats set in
        ``OutputFormats`` are written there.
        """
        try:
            from ..merge import merge
        except ImportError as exc:
            raise CommandError(f"data merge is not available: {exc}") from None
        conf = arg.get("mergeconf") if isinstance(arg, dict) else None
        if not isinstance(conf, dict):
            raise CommandError("'mergedata' needs argument.mergeconf")
        names = arg.get("filenames") or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise CommandError("argument.filenames must be a list of the attached files' LocalPath names")
        if len(names) != len(attachments):
            raise CommandError(f"{len(attachments)} attachment(s) for {len(names)} name(s) in argument.filenames")
        s = self.session
        base = s.directory if s is not None else Path(self.basedir)
        with tempfile.TemporaryDirectory(prefix="saxsdog-merge-") as tmp:
            uploads: dict[str, Path] = {}
            for k, (name, data) in enumerate(zip(names, attachments)):
                # only the last component: a client's path never becomes a server path
                path = Path(tmp, str(k), re.split(r"[\\/]", name)[-1] or "log")
                path.parent.mkdir()
                path.write_bytes(data)
                uploads[name] = path
            result = merge(conf, base, confine_to=self.basedir, uploads=uploads)
        df = result.table
        written: dict[str, str] = {}
        if any(result.config["OutputFormats"].values()):
            name = result.config["OutputFileName"]
            try:
                target = resolve_inside(self.basedir, Path(base, name))
            except PathOutsideBase:
                raise PathOutsideBase(f"$.OutputFileName {name!r} is outside the server's base directory") from None
            written = {fmt: relative_to_base(self.basedir, path) for fmt, path in result.write(target).items()}
        if "path" in df.columns:  # clients see paths relative to the base directory, as elsewhere
            df = df.assign(path=[relative_to_base(self.basedir, p) if isinstance(p, str) and p else p
                                 for p in df["path"]])
        self.merge_result = {"columns": list(map(str, df.columns)),
                             "rows": df.astype(object).where(df.notna(), None).values.tolist()}
        return {"result": "mergedata", "data": {"rows": len(df), "columns": self.merge_result["columns"],
                                                "written": written, "shift": result.shift}}

    def cmd_getmergedata(self, arg, attachments) -> dict[str, Any]:
        if self.merge_result is None:
            raise CommandError("no merged data yet; send 'mergedata' first")
        return {"result": "mergedata", "data": {"data": self.merge_result}}


def curve_payload(kind: str, name: str, x: np.ndarray, intensity: np.ndarray, error: np.ndarray,
                  labels: list[str]) -> dict[str, Any]:
    """A graph of the original's response schema."""
    return {"kind": kind, "conf": {"Name": name}, "columnLabels": labels,
            "array": [np.asarray(x).tolist(), np.asarray(intensity).tolist(), np.asarray(error).tolist()]}
