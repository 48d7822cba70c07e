"""The command handler: every leash command, independent of the transport.

Transports (ZeroMQ, HTTP) authenticate a request, then call :meth:`CommandHandler.execute`
with the command name, its argument and any attachments; the handler checks the argument
against the command's schema, carries the command out and returns the response dict
(``{"result": ..., "data": {...}}``).  It never raises: errors become
``{"result": "Error", "data": {"Error": message}}``.

What each command is called, answers and accepts comes from the command table,
:mod:`saxsdog.protocol.commands`; command ``X`` is carried out by the method ``cmd_X``,
which returns the answer's ``data`` (the ``result`` is the table's).

Slow work never runs on the thread that answers requests: commands that change the queue
(``new``, ``close``, ``abort``, ``readdir``, ``mergedata``) run one after the other on a
worker thread, slow read-only ones (``listdir``, ``maskpreview``, ``convertponi``, the
page's detector tools) in a small pool, so ``stat`` keeps answering meanwhile.  A transport that can hold a reply
(the ZeroMQ service) calls :meth:`~CommandHandler.start` and sends the final answer when
the returned :class:`Job` is done; :meth:`~CommandHandler.execute` waits for it until it
is done, or at most ``answer_within`` seconds and then answers ``"accepted"`` with
``data.job`` (which the ``job`` command follows).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
import queue
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import SaxsdogError
from ..extras import MissingExtraError, import_optional
from ..io.images import is_image_file
from ..pipeline import QueueOptions
from ..protocol.commands import PENDING_RESULT, Command, describe_commands, find_command
from ..protocol.messages import ProtocolError, error_response, unknown_command, validate_argument
from .ledger import Ledger
from .paths import PathOutsideBase, relative_to_base, resolve_inside
from .session import QueueSession

log = logging.getLogger(__name__)

__all__ = ["CommandHandler", "CommandError", "ToolUnavailable", "Job", "ANSWER_WITHIN", "error_response"]

#: A short wait for in-process callers of :meth:`CommandHandler.execute` that prefer an
#: "accepted" answer to blocking (the ZeroMQ service never answers "accepted": it holds a
#: client's reply until its command is done, and serves the other clients meanwhile).
ANSWER_WITHIN = 0.3
#: How long a ``job`` request through :meth:`CommandHandler.execute` waits for the job before
#: answering "accepted" again (over ZeroMQ, ``job`` waits for the job's own answer).
JOB_POLL_WAIT = 0.1
#: Finished jobs kept for the ``job`` command.
MAX_JOBS = 32
#: Longest error message sent back (longer ones are cut, saying how long they were).
MAX_ERROR_CHARS = 1000

_DEFAULT: Any = object()


#: The plotdata history's columns that every row fills itself.
_PLOT_FIXED = frozenset(("path", "frame", "time", "processed", "I0", "I1", "I2", "invariant", "correlation_length",
                         "dummy_pixels", "rejected_pixels", "error"))
#: The integral parameters of the first integrator's background-subtracted curve, as ``<key>_sub``.
_PLOT_SUBTRACTED = ("I0", "I1", "I2", "invariant", "correlation_length")


class CommandError(SaxsdogError):
    """A command cannot be carried out (the message goes back to the client)."""


class ToolUnavailable(CommandError):
    """A command needs an optional package the server does not have."""


def _cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class _Workers:
    """Daemon threads that run submitted calls in order of submission.

    Unlike ``ThreadPoolExecutor`` (whose threads the interpreter joins at exit), a call
    stuck for good (a close waiting on a frozen worker) never keeps the server from exiting.
    """

    def __init__(self, n: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the command workers are shut down")
            self._queue.put((future, fn, args))
        return future

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits for the future
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel the calls not started yet and let the threads end after the current one."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._queue.put(None)


class _FullResponse(dict):
    """A command method's complete response (``job`` passes on another command's answer)."""


class Job:
    """A command running (or run) on the handler's worker threads.

    Attributes
    ----------
    id
        Random hex id, for the ``job`` command.
    command
        The command's name.
    started, finished
        Server times (``finished`` is ``None`` while it runs).
    future
        Resolves to the command's response.
    """

    def __init__(self, command: str):
        self.id = uuid.uuid4().hex[:16]
        self.command = command
        self.started = time.time()
        self.finished: float | None = None
        self.future: Future = Future()

    def response(self, wait: float | None) -> dict[str, Any] | None:
        """The command's response, waiting up to ``wait`` seconds; ``None`` while it runs."""
        try:
            return self.future.result(timeout=wait)
        except FutureTimeout:
            return None
        except CancelledError:
            return error_response(f"{self.command!r} did not run: the server shut down first")

    def summary(self) -> dict[str, Any]:
        """``{"id", "command", "state", "seconds"}`` (and ``"error"`` when it failed)."""
        out: dict[str, Any] = {"id": self.id, "command": self.command, "state": "running",
                               "seconds": (self.finished or time.time()) - self.started}
        resp = self.response(0) if self.future.done() else None
        if resp is not None:
            failed = resp.get("result") == "Error"
            out["state"] = "failed" if failed else "done"
            if failed:
                out["error"] = resp["data"]["Error"]
        return out


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
    answer_within
        Longest wait of :meth:`execute` for a command running on a worker thread before
        it answers "accepted" (``None``: wait until it is done).  The ZeroMQ service does
        not use it: it calls :meth:`start` and holds the reply.
    """

    def __init__(self, basedir: str | os.PathLike[str], options: QueueOptions | None = None,
                 state_dir: str | os.PathLike[str] | None = None, watch: bool = False,
                 rescan_interval: float = 30.0, pool_factory: Callable | None = None,
                 answer_within: float | None = None):
        self.basedir = Path(os.path.realpath(basedir))
        if not self.basedir.is_dir():
            raise SaxsdogError(f"base directory {basedir} does not exist")
        self.options = options or QueueOptions()
        self.state_dir = Path(state_dir) if state_dir else self.basedir / ".saxsdog"
        self.ledger = Ledger(self.state_dir / "ledger.sqlite")
        self.watch = watch
        self.rescan_interval = rescan_interval
        self.pool_factory = pool_factory
        self.answer_within = answer_within
        self.session: QueueSession | None = None
        self._lock = threading.RLock()  # held while the current session is swapped
        self.started = time.time()
        self.listeners: list[Callable[[Any], None]] = []
        self.merge_result: dict[str, Any] | None = None
        # queue-changing commands one after the other; slow read-only ones beside them
        self._serial = _Workers(1, "saxsdog-command")
        self._parallel = _Workers(2, "saxsdog-tool")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._jobs_lock = threading.Lock()
        self._last_serial: Job | None = None
        self._closing = False
        self.closing: list[QueueSession] = []  # closed queues still finishing their images

    # -- lifecycle -------------------------------------------------------------------
    def restore(self) -> bool:
        """Resume the queue saved before a restart; returns whether there was one."""
        rec = QueueSession.load_saved(self.state_dir)
        if rec is None:
            return False
        try:
            session = self._start_session(rec["directory"], rec["calibration"], rec["attachments"],
                                          rec["queue_id"], rec.get("attachment_names"))
        except Exception as exc:
            log.error("cannot resume the saved queue: %s", exc)
            return False
        log.info("resumed queue %s on %s", rec["queue_id"], session.directory)
        return True

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the queue (kept for resuming) and close the ledger.

        Commands still waiting for a worker thread are dropped; one already running may
        finish within ``timeout`` seconds.  If it does not (a close waiting on a frozen
        worker), the server stops without it: that command owns the queue until then, and
        the ledger resumes what was unfinished at the next start.
        """
        with self._lock:
            self._closing = True
        self._parallel.shutdown()
        self._serial.shutdown()
        running = self._last_serial
        if running is not None and running.response(timeout) is None:
            log.error("%r is still running after %g s; stopping without waiting for it", running.command, timeout)
            try:
                self.ledger.commit()
            except Exception as exc:  # best effort: unfinished rows are queued again on restart
                log.error("cannot commit the ledger: %s", exc)
            return
        with self._lock:
            session, self.session = self.session, None
        if session is not None:
            session.stop()
        for closing in self.closing:
            closing.stop()  # still draining: the rest resumes after a restart
        self.ledger.close()

    def _start_session(self, directory, calibration, attachments, queue_id=None, names=None,
                       prepared=None) -> QueueSession:
        """Build and start a queue (slow: calibration operators, directory walk), then make it current.

        ``prepared``: its calibration, already built (:meth:`QueueSession.checked_calibration`)."""
        if self._closing:
            raise CommandError("the server is shutting down")
        session = QueueSession(self.basedir, self.state_dir, self.ledger, directory, calibration, attachments,
                               self.options, queue_id=queue_id, pool_factory=self.pool_factory,
                               attachment_names=names, prepared=prepared)
        for fn in self.listeners:
            session.queue.add_callback(fn)
        session.start(watch=self.watch, rescan_interval=self.rescan_interval)
        with self._lock:  # shutdown() either sees this session or makes us stop it
            if self._closing:
                session.stop()
                raise CommandError("the server is shutting down")
            self.session = session
        return session

    # -- dispatch --------------------------------------------------------------------
    def _checked(self, command: Any, argument: Any, attachments: list[bytes]) -> tuple[Command, dict]:
        """The command's table entry and its validated argument (``ProtocolError`` if not)."""
        spec = find_command(command)
        if spec is None:  # the same message as the request check of the transports
            raise unknown_command(command, "$.command")
        argument = validate_argument(spec.name, argument)
        if attachments and not spec.attachments:
            raise ProtocolError(f"{spec.name!r} takes no attachments, got {len(attachments)}")
        return spec, argument

    def _run(self, spec: Command, argument: dict, attachments: list[bytes]) -> Any:
        """Carry out a checked command: its ``data`` (or a full response); raises on failure."""
        try:
            return getattr(self, spec.method)(argument, attachments)
        except MemoryError:
            # the failed allocation is released once this frame is left
            hint = ""
            if spec.name == "new":
                from ..config import calibration_field_path

                field = calibration_field_path(argument.get("calibration", {}), "Geometry", "ImageSize")
                hint = f": the calibration's image size ({field.removeprefix('$.')}) is probably far too large"
            raise CommandError(f"not enough memory for {spec.name!r}{hint} (MemoryError)") from None

    def _respond(self, spec: Command, argument: dict, attachments: list[bytes]) -> dict[str, Any]:
        """:meth:`_run` as a response; never raises."""
        try:
            data = self._run(spec, argument, attachments)
        except (SaxsdogError, MissingExtraError) as exc:  # the latter names the extra to install
            return error_response(_cut(str(exc)))
        except Exception as exc:  # the server keeps serving whatever happens
            log.exception("command %s failed", spec.name)
            return error_response(_cut(f"internal error in {spec.name}: {type(exc).__name__}: {exc}"))
        if isinstance(data, _FullResponse):
            return dict(data)
        return {"result": spec.result, "data": data}

    def _submit(self, spec: Command, argument: dict, attachments: list[bytes]) -> Job:
        job = Job(spec.name)
        pool = self._serial if spec.runs == "serial" else self._parallel

        def work() -> dict[str, Any]:
            try:
                return self._respond(spec, argument, attachments)
            finally:
                job.finished = time.time()

        try:
            job.future = pool.submit(work)
        except RuntimeError:  # shut down
            job.future.set_result(error_response("the server is shutting down"))
        with self._jobs_lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS:
                oldest = next((k for k, j in self._jobs.items() if j.future.done()), None)
                if oldest is None:
                    break
                del self._jobs[oldest]
            if spec.runs == "serial":
                self._last_serial = job
        return job

    @staticmethod
    def _answer(job: Job, wait: float | None) -> dict[str, Any]:
        resp = job.response(wait)
        return {"result": PENDING_RESULT, "data": {"job": job.summary()}} if resp is None else resp

    def execute(self, command: str, argument: Any = None, attachments: list[bytes] | None = None,
                wait: float | None = _DEFAULT) -> dict[str, Any]:
        """Carry out one command; always returns a response dict.

        Parameters
        ----------
        command
            A command name or alias of the command table.
        argument
            Its argument (checked against its schema here).
        attachments
            The attachment frames.
        wait
            For a command that runs on a worker thread: seconds to wait for its answer
            before answering "accepted" with ``data.job`` (``None``: until done; default
            ``answer_within``).
        """
        attachments = list(attachments or [])
        try:
            spec, argument = self._checked(command, argument, attachments)
        except ProtocolError as exc:
            return error_response(str(exc))
        if spec.runs == "inline":
            return self._respond(spec, argument, attachments)
        return self._answer(self._submit(spec, argument, attachments),
                            self.answer_within if wait is _DEFAULT else wait)

    def start(self, command: str, argument: Any = None,
              attachments: list[bytes] | None = None) -> dict[str, Any] | Job:
        """Begin one command without waiting for it: its response, or the :class:`Job` that
        will resolve to it.

        Inline commands (``stat``, ``get``, ...) are answered at once.  A command that runs
        on a worker thread returns its job; ``job`` returns the job it names, so a
        transport that holds the reply sends that command's final answer too.  Never
        raises for a bad request (that is an error response).
        """
        attachments = list(attachments or [])
        try:
            spec, argument = self._checked(command, argument, attachments)
        except ProtocolError as exc:
            return error_response(str(exc))
        if spec.name == "job":
            with self._jobs_lock:
                job = self._jobs.get(argument["id"])
            if job is not None:
                return job
        if spec.runs == "inline":
            return self._respond(spec, argument, attachments)
        return self._submit(spec, argument, attachments)

    def call(self, command: str, argument: Any = None, attachments: list[bytes] | None = None) -> Any:
        """Carry out one command in the calling thread and return its ``data``.

        For transports that map errors themselves (the web leash's tool routes): raises
        :class:`~saxsdog.protocol.messages.ProtocolError` for a bad argument and the
        command's own errors (``SaxsdogError``, ``PathOutsideBase``, ...).  Commands that
        change the queue still run on the command worker thread, after those before them.
        """
        attachments = list(attachments or [])
        spec, argument = self._checked(command, argument, attachments)
        if spec.runs == "serial":
            try:
                future = self._serial.submit(self._run, spec, argument, attachments)
            except RuntimeError:
                raise CommandError("the server is shutting down") from None
            try:
                return future.result()
            except CancelledError:
                raise CommandError("the server is shutting down") from None
        return self._run(spec, argument, attachments)

    def _require(self) -> QueueSession:
        s = self.session
        if s is None:
            raise CommandError("no queue is running; send 'new' first")
        return s


    # -- statistics ------------------------------------------------------------------
    def stat(self) -> dict[str, Any]:
        """The original's stat keys, plus failures, per-stage timings and the latest queue-changing
        command (``job``: running, done or failed)."""
        now = time.time()
        s = self.session
        last = self._last_serial  # the latest queue-changing command (running or finished)
        job = None if last is None else last.summary()
        # images closed queues still finish in the background
        closing = sum(c.queue.queue_length for c in self.closing if not c.stopped)
        if s is None:
            return {"time interval": now - self.started, "queue length": 0, "frames per sec": 0.0,
                    "images processed": 0, "pics": 0, "images failed": 0, "time": now,
                    "start time": self.started, "mergecount": 0, "job": job,
                    "closing queue length": closing, "alarms": 0}
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
            "error": s.error,  # the backend is gone, or the queue directory is refused
            "feeder events rejected": s.events_rejected,
            "alarms": st.get("alarms", 0),  # frames whose classifiers left their Alarm range
            "latest alarm": st.get("latest_alarm"),
            "averages": st.get("averages", {}),
            "time": now,
            "start time": s.started,
            "mergecount": 0,
            "directory": relative_to_base(self.basedir, s.directory),
            "job": job,
        }

    # -- commands: the queue ---------------------------------------------------------
    def cmd_new(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        directory = arg.get("directory", ["."])
        masks = arg["calibration"].get("Masks", [])
        att = {i: a for i, a in enumerate(attachments)} if attachments else {}
        if len(att) > max(len(masks) if isinstance(masks, list) else 0, 0):
            raise CommandError(f"{len(att)} attachments for {len(masks)} mask(s)")
        filenames = arg.get("filenames") or []
        names = {i: os.path.basename(n) for i, n in enumerate(filenames) if isinstance(n, str) and n and i in att}
        old = self.session
        prepared = None
        if old is not None:  # stopped before the new one starts: one queue at a time
            # but a calibration the new queue refuses (bad dark, flat, background, path ...)
            # must not end the running one: built and checked first
            prepared = QueueSession.checked_calibration(self.basedir, directory, arg["calibration"], att,
                                                        self.options, names)
            old.stop()
            old.forget()
            with self._lock:
                if self.session is old:
                    self.session = None
        session = self._start_session(directory, arg["calibration"], att, names=names, prepared=prepared)
        return {"directory": session.directory_arg, "threads": self.options.workers}

    def _end_session(self, abort: bool) -> dict[str, Any]:
        s = self._require()
        stat = self.stat()
        if abort:
            s.stop(abort=True)  # the waiting images are dropped (and recorded so)
            s.forget()
        else:
            s.close()  # finishes what is queued in the background, then forgets the saved queue
            with self._lock:
                self.closing = [c for c in self.closing if not c.stopped] + [s]
        with self._lock:
            if self.session is s:
                self.session = None
        return {"stat": stat}

    def cmd_close(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        return self._end_session(abort=False)

    def cmd_abort(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        return self._end_session(abort=True)

    def cmd_readdir(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        n = self._require().readdir()
        return {"stat": self.stat(), "queued": n}

    def cmd_stat(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        return {"stat": self.stat()}

    def cmd_get(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        s = self._require()
        return {"cal": s.calibration_raw, "directory": s.directory_arg, "threads": self.options.workers}

    def cmd_plot(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        s = self._require()
        latest = s.queue.history.latest_curves
        graphs = []
        filename = ""
        params: dict[str, Any] = {}
        if latest is not None:
            filename = relative_to_base(self.basedir, latest.path)
            params = latest.parameters
            graphs = [{**g, "array": [np.asarray(a).tolist() for a in g["array"]]} for g in latest.curves or []]
        return {"filename": filename, "stat": self.stat(), "graphs": graphs, "IntegralParameters": params,
                "array": graphs[0]["array"] if graphs else [[], [], []]}

    def cmd_plotdata(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        s = self._require()
        since = float(arg.get("since", 0.0))
        rows = self.ledger.history(s.queue_id, since=since)
        history: dict[str, list] = {"path": [], "frame": [], "time": [], "processed": [], "I0": [], "I1": [],
                                    "I2": [], "invariant": [], "correlation_length": [], "dummy_pixels": [],
                                    "rejected_pixels": [], "error": []}
        for r in rows:
            p: dict[str, Any] = next(iter(r["parameters"].values()), {}) if r["parameters"] else {}
            first = next(iter(r["parameters"]), None) if r["parameters"] else None
            subtracted = r["parameters"].get(f"{first}_sub") if first is not None else None
            if isinstance(subtracted, dict):  # with a Background: the subtracted curve's, in <key>_sub columns
                for k in _PLOT_SUBTRACTED:
                    history.setdefault(f"{k}_sub", [None] * (len(history["path"])))
                    history[f"{k}_sub"].append(subtracted.get(k))
            history["path"].append(relative_to_base(self.basedir, r["path"]))
            history["frame"].append(r["frame"])
            history["time"].append(r["image_time"])
            history["processed"].append(r["processed_at"])
            for k in ("I0", "I1", "I2", "invariant", "correlation_length", "dummy_pixels", "rejected_pixels"):
                history[k].append(p.get(k))
            history["error"].append(r["error"])
            # the classifiers' values ("Guinier.Rg", "CorMap.P", "alarms" ...), one column each
            for k, v in p.items():
                if k not in history:
                    history[k] = [None] * (len(history["path"]) - 1)
                if k not in _PLOT_FIXED:
                    history[k].append(v)
            for k in history:
                if len(history[k]) < len(history["path"]):
                    history[k].append(None)
        last = rows[-1]["updated"] if rows else since
        return {"history": history, "stat": self.stat(), "until": last}

    def cmd_fileslist(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        s = self._require()
        rows = self.ledger.history(s.queue_id)
        files = {relative_to_base(self.basedir, r["path"]) + (f"#{r['frame']}" if r["frame"] else ""):
                 {"outputs": [relative_to_base(self.basedir, o) for o in r["outputs"]], "state": r["state"],
                  "error": r["error"]} for r in rows}
        return {"fileslist": files}

    def cmd_listdir(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        requested = arg.get("directory", ".")
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
        return {"dircontent": entries, "directory": [] if rel == "." else rel.split(os.sep)}

    def cmd_mergedata(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """Merge log tables with the queue's images (the original manual's data merge) and keep the table.

        ``LocalPath`` log files come attached to the request (``argument.filenames`` names
        them, in the order of the attachments); ``RemotePath`` files, the image folder and
        ``OutputFileName`` are on the server, relative to the queue's directory (or the base
        directory without a queue) and never outside the base directory.  The formats set in
        ``OutputFormats`` are written there.
        """
        try:
            from ..merge import merge

            import_optional("pandas", "merge", "the server")  # merge imports it only once it runs
        except ImportError as exc:
            raise ToolUnavailable(f"data merge is not available: {exc}") from None
        conf = arg["mergeconf"]
        names = arg.get("filenames") or []
        if not all(isinstance(n, str) and n for n in names):
            raise CommandError("argument.filenames must be a list of the attached files' LocalPath names")
        if len(names) != len(attachments):
            raise CommandError(f"{len(attachments)} attachment(s) for {len(names)} name(s) in argument.filenames")
        s = self.session
        base = s.directory if s is not None else Path(self.basedir)
        images_conf = conf.get("Images") or {}
        queue_list = getattr(s.queue, "filelist", None) if s is not None else None
        if queue_list is not None and not images_conf.get("FileList") and not images_conf.get("ChiDirectory"):
            # By default the queue's own integral parameters (I0, I1, I2), wherever -o/-R put them.
            try:
                resolve_inside(self.basedir, queue_list.path)
                conf = {**conf, "Images": {"Directory": ".", **images_conf, "FileList": str(queue_list.path)}}
            except PathOutsideBase:
                pass
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
        return {"rows": len(df), "columns": self.merge_result["columns"], "written": written,
                "shift": result.shift}

    def cmd_getmergedata(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        if self.merge_result is None:
            raise CommandError("no merged data yet; send 'mergedata' first")
        return {"data": self.merge_result}

    # -- commands: calibration tools -------------------------------------------------
    def cmd_validate(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """Every problem of a calibration: ``{"problems": [{"path", "message", ...}]}`` (empty: valid)."""
        return {"problems": _calibration_problems()(arg["calibration"])}

    def cmd_convertfit2d(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """A calibration from FIT2D geometry text, completing ``template``."""
        from ..io.fit2d import fit2d_to_calibration

        return {"calibration": fit2d_to_calibration(arg["text"], arg.get("template") or None)}

    def cmd_convertponi(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """A calibration from a PONI file's text, completing ``template`` (needs pyFAI)."""
        try:
            from ..io.poni import poni_to_calibration
            import pyFAI  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise ToolUnavailable("PONI import needs pyFAI on the server: pip install 'saxsdog[pyfai]'") from None
        with tempfile.TemporaryDirectory(prefix="saxsdog-poni-") as tmp:
            p = Path(tmp) / "upload.poni"
            p.write_text(arg["text"], encoding="utf-8")
            return {"calibration": poni_to_calibration(p, arg.get("template") or None)}

    def cmd_maskpreview(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """A PNG (base64 in ``data.png``) of an image with the mask overlaid.

        The mask comes as the attachment (named by ``filenames[0]``), or is the
        calibration's ``Masks[index].MaskFile`` in the base directory.
        """
        names = arg.get("filenames") or []
        if len(attachments) > 1:
            raise CommandError(f"'maskpreview' takes at most one mask attachment, got {len(attachments)}")
        mask = (os.path.basename(names[0] if names else "mask") or "mask", attachments[0]) if attachments else None
        png = _render_mask_preview()(self.basedir, arg["calibration"], mask, arg.get("image") or None,
                                     int(arg.get("index", 0)))
        return {"png": base64.b64encode(png).decode("ascii"), "media_type": "image/png"}

    def cmd_absolute(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """The absolute-scale factor from a standard's curve on the server (``saxsdog absolute``)."""
        from ..reduction import absolute as ab

        name = arg["curve"]
        path = resolve_inside(self.basedir, name)
        try:
            curve = ab.read_curve(path, int(arg.get("frame", 0)))
            q_range = tuple(arg["q_range"]) if arg.get("q_range") else None
            if arg.get("standard", "water") == "water":
                fit = ab.fit_water(curve, float(arg.get("temperature", 20.0)), q_range)
            else:
                if not arg.get("reference"):
                    raise CommandError("argument.reference: the reference table's text is needed for "
                                       "standard 'reference'")
                table = ab.parse_reference_table(arg["reference"], "the reference table", arg.get("q_unit", "auto"))
                fit = ab.fit_scale(curve, table, q_range)
        except ab.AbsoluteScaleError as exc:  # name the file as the client did, not the server's path
            raise CommandError(str(exc).replace(str(path), name)) from None
        fit.source = name
        applied, _ = ab.applied_normalization(curve.calibration)
        return {"fit": fit.as_dict(), "applied": applied, "absolute_scale": fit.factor * applied,
                "report": fit.report()}
    # -- commands: the page's detector tools ------------------------------------------
    def cmd_detectorframe(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """The pixels of ``image`` (default: the latest image the queue processed), see
        :func:`saxsdog.server.detector.frame_pixels`."""
        from .detector import frame_pixels

        image, frame = arg.get("image"), int(arg.get("frame", 0))
        if not image:
            s = self.session
            latest = s.queue.history.latest if s is not None else None
            if latest is None:
                raise CommandError("no image processed yet: start a queue, or name an image")
            image, frame = latest.path, int(latest.frame or 0)
        return frame_pixels(self.basedir, image, frame, int(arg.get("maxside", 2048)))

    def cmd_calibrants(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """The calibrant names (pyFAI's), and ``d_spacings`` (Å) of ``name`` if given."""
        try:
            from ..calibrate import CalibrantError, calibrant_names
            from .detector import calibrant_rings

            out: dict[str, Any] = {"calibrants": calibrant_names()}
        except (ImportError, MissingExtraError) as exc:
            raise ToolUnavailable(f"calibrants need pyFAI on the server: {exc}") from None
        if arg.get("name"):
            try:
                out.update(calibrant_rings(arg["name"]))
            except CalibrantError as exc:
                raise CommandError(str(exc)) from None
        return out

    def cmd_maskencode(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """A mask file (``data`` base64, ``name``) of the attached one-byte-per-pixel mask."""
        from .detector import encode_mask, mask_from_bytes

        if len(attachments) != 1:
            raise CommandError(f"'maskencode' takes the mask as its one attachment, got {len(attachments)}")
        masked = mask_from_bytes(attachments[0], arg["shape"])
        fmt = arg["format"].replace("tiff", "tif")
        return {"name": "mask." + fmt, "data": base64.b64encode(encode_mask(masked, fmt)).decode("ascii"),
                "shape": list(masked.shape), "masked": int(masked.sum())}

    def cmd_maskdecode(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """The attached mask file as one byte per pixel (base64 ``mask``, 1 = masked), image orientation."""
        from .detector import decode_mask

        names = arg["filenames"]
        if len(attachments) != 1 or len(names) != 1:
            raise CommandError("'maskdecode' takes one mask file as attachment, named by argument.filenames[0]")
        shape = tuple(arg["shape"]) if arg.get("shape") else None
        masked = decode_mask(attachments[0], names[0], shape)
        return {"shape": list(masked.shape), "mask": base64.b64encode(masked.tobytes()).decode("ascii"),
                "masked": int(masked.sum()), "name": os.path.basename(names[0])}

    def cmd_calibrateimage(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """The fit of ``saxsdog calibrate`` on a server image or an upload, see
        :func:`saxsdog.server.detector.calibrate`."""
        from ..io.images import read_image
        from .detector import calibrate, mask_from_bytes

        try:
            from .. import calibrate as fit_module
        except ImportError as exc:  # pragma: no cover - the package ships with saxsdog
            raise ToolUnavailable(f"calibration needs the calibrate package: {exc}") from None
        try:  # a wrong calibrant name is the first thing to hear about
            fit_module.d_spacings(arg["calibrant"])
        except fit_module.CalibrantError as exc:
            raise CommandError(str(exc)) from None
        names = arg.get("filenames") or []
        attachments = list(attachments)
        mask_raw = attachments.pop() if arg.get("mask") else None
        if arg.get("mask") and mask_raw is None:
            raise CommandError("argument.mask is true but no mask is attached")
        with tempfile.TemporaryDirectory(prefix="saxsdog-calibrate-") as tmp:
            if names:
                if len(attachments) != 1:
                    raise CommandError(f"an uploaded image is one attachment named by filenames[0], got "
                                       f"{len(attachments)}")
                name = re.split(r"[\\/]", names[0])[-1] or "image.tif"
                path = Path(tmp, name)
                path.write_bytes(attachments[0])
            elif arg.get("image"):
                if attachments:
                    raise CommandError("an image on the server takes no image attachment")
                name = arg["image"]
                path = resolve_inside(self.basedir, name)
                if not path.is_file():
                    raise CommandError(f"{name!r} is not a file in the base directory")
            else:
                raise CommandError("name an image on the server (argument.image) or upload one (filenames)")
            frame = read_image(path, int(arg.get("frame", 0)))
        image = np.asarray(frame.data)
        template = arg.get("template") or None
        geometry = (template or {}).get("Geometry") if isinstance(template, dict) else None
        wavelength = arg.get("wavelength") or frame.metadata.get("wavelength") or (template or {}).get("Wavelength")
        if not wavelength:
            raise CommandError("the wavelength is unknown (not in the image header): give it")
        pixel = arg.get("pixel") or (geometry or {}).get("PixelSizeMicroM")
        if not pixel:  # as saxsdog calibrate: from the detector the header names
            from ..calibrate.calibrants import DETECTOR_PIXELS_UM

            detector = str(frame.metadata.get("detector", "")).upper()
            pixel = next(([size] for family, size in DETECTOR_PIXELS_UM.items() if family in detector), None)
        if not pixel:
            raise CommandError("the pixel size is unknown (the image header names no known detector): give it (µm)")
        mask = mask_from_bytes(mask_raw, image.shape) if mask_raw is not None else None
        try:
            return calibrate(image, calibrant=arg["calibrant"], wavelength_A=float(wavelength),
                             pixel_size_um=(float(pixel[0]), float(pixel[-1])), template=template, mask=mask,
                             distance_guess_mm=arg.get("distance") or None,
                             refine_wavelength=bool(arg.get("refine_wavelength", False)),
                             max_rms_px=float(arg.get("max_rms", 1.0)), image_name=os.path.basename(name),
                             header_wavelength_A=frame.metadata.get("wavelength"))
        except (fit_module.CalibrationFitError, fit_module.CalibrantError) as exc:
            raise CommandError(str(exc)) from None

    # -- commands: about the server --------------------------------------------------
    def cmd_commands(self, arg: dict, attachments: list[bytes]) -> dict[str, Any]:
        """The command table: names, aliases, results and argument schemas (for the page)."""
        return {"commands": describe_commands()}

    def cmd_job(self, arg: dict, attachments: list[bytes]) -> _FullResponse:
        """The answer of a command that was still running: its own response once done,
        else "accepted" again (after waiting up to :data:`JOB_POLL_WAIT`)."""
        with self._jobs_lock:
            job = self._jobs.get(arg["id"])
        if job is None:
            raise CommandError(f"no job {arg['id']!r} (the server keeps the last {MAX_JOBS} jobs)")
        wait = JOB_POLL_WAIT if self.answer_within is None else min(self.answer_within, JOB_POLL_WAIT)
        return _FullResponse(self._answer(job, wait))


# The calibration tools' implementations, loaded on first use (matplotlib for the preview).
def _calibration_problems() -> Callable[[Any], list[dict[str, Any]]]:
    from ..config import calibration_problems

    return calibration_problems


def _render_mask_preview() -> Callable[..., bytes]:
    from .preview import render_mask_preview

    return render_mask_preview
